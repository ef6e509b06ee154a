#!/bin/bash
# runner: the container's root may create device nodes (CAP_MKNOD, as Docker) but open only
# Docker's default devices and those given with --device; the device cgroup enforces it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/runner_lib.sh"
require_root

ROOT="$TESTDIR/rootfs"
make_rootfs "$ROOT"
# A real disk of this host: the first block device in /proc/partitions that is not a loop
# or ram device.
disk=$(awk 'NR > 2 && $4 !~ /^(loop|ram|zram)/ { print $1, $2; exit }' /proc/partitions)

log "a block device node can be created but not opened"
assert_ok "$RUNNER" "$ROOT" /probe devnode b 7 0
assert_eq "$(probe_get mknod)" ok "mknod b 7 0 (CAP_MKNOD, as Docker)"
assert_eq "$(probe_get open)" "Operation not permitted" "open of loop0"
if [ -n "$disk" ]; then
	# shellcheck disable=SC2086
	assert_ok "$RUNNER" "$ROOT" /probe devnode b $disk
	assert_eq "$(probe_get open)" "Operation not permitted" "open of the host's disk $disk"
fi
run_rc "$RUNNER" "$ROOT" /bin/sh -c 'mknod /dev/d b 7 0 && cat /dev/d'
assert_eq "$RC" 1 "status of cat of a block device node"
assert_contains "$ERR" "can't open '/dev/d': Operation not permitted"
assert_ok "$RUNNER" "$ROOT" /probe devnode c 1 1
assert_eq "$(probe_get open)" "Operation not permitted" "open of /dev/mem (c 1:1)"
assert_ok "$RUNNER" "$ROOT" /probe devnode c 10 200
assert_eq "$(probe_get open)" "Operation not permitted" "open of /dev/net/tun (not a default)"

log "the default devices still work"
assert_ok "$RUNNER" "$ROOT" /bin/sh -c 'echo x >/dev/null && head -c 4 /dev/zero | wc -c &&
	head -c 4 /dev/urandom | wc -c && head -c 4 /dev/random | wc -c && ! echo x >/dev/full'
assert_eq "$(printf '%s\n' "$OUT" | tr -d ' ' | tr '\n' ,)" "4,4,4," "reads of zero, urandom, random"
for d in "c 1 3" "c 1 5" "c 1 7" "c 1 8" "c 1 9" "c 5 0" "c 5 2" "c 136 0"; do
	# shellcheck disable=SC2086
	assert_ok "$RUNNER" "$ROOT" /probe devnode $d
	case "$d" in
	"c 5 0" | "c 136 0") # no controlling terminal / no such pty: not the cgroup's EPERM
		assert_ne "$(probe_get open)" "Operation not permitted" "open of $d" ;;
	*) assert_eq "$(probe_get open)" ok "open of $d" ;;
	esac
done
if command -v script >/dev/null; then
	out=$(script -qec "$RUNNER $ROOT /bin/sh -c 'tty && echo x >/dev/tty'" /dev/null </dev/null | tr -d '\r')
	assert_contains "$out" "/dev/pts/0" "a terminal still works"
fi

log "--device: the node is created and allowed with its permissions"
assert_ok "$RUNNER" --device /dev/loop-control "$ROOT" /probe open /dev/loop-control
assert_eq "$(probe_get open)" ok "open of --device /dev/loop-control"
assert_ok "$RUNNER" --device /dev/loop-control:/dev/lc:r "$ROOT" /bin/sh -c \
	'ls -l /dev/lc; /probe open /dev/lc r; /probe open /dev/lc w'
assert_contains "$OUT" "10, 237" "node numbers of /dev/lc"
assert_eq "$(printf '%s\n' "$OUT" | grep '^open:' | tr '\n' ,)" "open: ok,open: Operation not permitted," \
	"--device PERMS r: read allowed, write denied"
assert_ok "$RUNNER" --device /dev/loop-control:w "$ROOT" /probe open /dev/loop-control r
assert_eq "$(probe_get open)" "Operation not permitted" "--device PERMS w: read denied"

log "--device errors: one line, status 125"
run_rc "$RUNNER" --device /etc/passwd "$ROOT" /bin/true
assert_eq "$RC" 125 "--device of a regular file"
assert_contains "$ERR" "not a character or block device"
assert_eq "$(printf '%s\n' "$ERR" | wc -l)" 1 "one line of error"
run_rc "$RUNNER" --device /dev/nonexistent "$ROOT" /bin/true
assert_eq "$RC" 125 "--device of a missing path"
run_rc "$RUNNER" --device dev/null:x:y:z "$ROOT" /bin/true
assert_eq "$RC" 125 "invalid --device"
assert_contains "$ERR" "invalid --device"

log "without a device cgroup the runner refuses to run"
run_rc unshare -m sh -c 'mount --make-rprivate / &&
	mount -t tmpfs none /sys/fs/cgroup/devices &&
	{ ! mountpoint -q /sys/fs/cgroup/unified || mount -t tmpfs none /sys/fs/cgroup/unified; } &&
	{ [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] || mount -t tmpfs none /sys/fs/cgroup; } &&
	exec "$0" "$1" /bin/true' "$RUNNER" "$ROOT"
assert_eq "$RC" 125 "status without a device cgroup"
assert_contains "$ERR" "no device cgroup"
assert_eq "$(printf '%s\n' "$ERR" | wc -l)" 1 "one line of error"

log "nothing left behind: no mount, no cgroup"
assert_not_contains "$(host_mounts)" "$ROOT"
"$RUNNER" "$ROOT" /bin/sh -c 'ls /sys/fs/cgroup/devices >/dev/null' &
rpid=$!
wait "$rpid" || fail "runner failed"
for cg in /sys/fs/cgroup/devices /sys/fs/cgroup/unified /sys/fs/cgroup; do
	assert_no_file "$cg/imgfs/$rpid"
done

log "an empty cgroup left by a killed runner with the same pid does not get in the way"
base=/sys/fs/cgroup
[ "$(stat -fc %T /sys/fs/cgroup/devices 2>/dev/null)" = cgroupfs ] && base=/sys/fs/cgroup/devices
mkdir -p "$base/imgfs"
# shellcheck disable=SC2016
run_rc sh -c 'mkdir "$1/imgfs/$$" && exec "$2" "$3" /bin/true' sh "$base" "$RUNNER" "$ROOT"
assert_eq "$RC" 0 "status with a stale cgroup of the same pid"
log "ok"
