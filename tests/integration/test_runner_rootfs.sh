#!/bin/bash
# runner: the rootfs is never modified by the runner itself. Missing mount points (/proc,
# /dev, /sys, /etc/hosts, the working directory, a whole /etc) are made on a tmpfs shadow
# of their parent directory in the container's mount namespace, so a read-only rootfs runs
# and a writable one (a plain directory, an imgfs mount's --upper) gains nothing.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/runner_lib.sh"
require_root
require_imgfs

# snapshot DIR: every entry with its type, mode, owner, size, mtime and link target.
snapshot() {
	(cd "$1" && find . -printf '%p %y %m %U %G %s %T@ %l\n' | LC_ALL=C sort)
}
before_mounts=$(host_mounts)

log "a rootfs without /proc, /dev, /sys and the /etc files is unchanged by a run"
ROOT="$TESTDIR/rootfs"
make_rootfs "$ROOT"
before=$(snapshot "$ROOT")
assert_ok "$RUNNER" --net none --hostname rfs -w /new/wd "$ROOT" /bin/sh -c \
	'cat /etc/hostname; grep -c "^127.0.0.1" /etc/hosts; test -s /etc/resolv.conf && echo resolv
	pwd; test -e /proc/self/status && test -c /dev/null && test -d /sys/fs/cgroup && echo mounts'
assert_eq "$OUT" "rfs
1
resolv
/new/wd
mounts" "what the container sees"
assert_eq "$(snapshot "$ROOT")" "$before" "rootfs listing after the run"
assert_no_file "$ROOT/proc"
assert_no_file "$ROOT/etc/hosts"
assert_no_file "$ROOT/new"

log "the command's writes reach the rootfs, except new entries in a shadowed directory"
cp "$ROOT/etc/group" "$TESTDIR/group"
assert_ok "$RUNNER" "$ROOT" /bin/sh -c \
	'echo kept >/tmp/kept; echo x >>/etc/group; echo y >/etc/new; mkdir /newtop && echo made'
assert_eq "$(cat "$ROOT/tmp/kept")" kept "a file written in /tmp"
assert_eq "$(tail -n 1 "$ROOT/etc/group")" x "a write to an existing file of /etc"
# / and /etc lack mount points here, so they are shadows: new entries are the container's.
assert_no_file "$ROOT/etc/new"
assert_no_file "$ROOT/newtop"
rm "$ROOT/tmp/kept"
cp "$TESTDIR/group" "$ROOT/etc/group"

log "an existing /etc/hosts keeps its contents"
printf 'image hosts\n' >"$ROOT/etc/hosts"
before=$(snapshot "$ROOT")
assert_ok "$RUNNER" "$ROOT" /bin/cat /etc/hosts
assert_contains "$OUT" "localhost" "generated /etc/hosts"
assert_eq "$(cat "$ROOT/etc/hosts")" "image hosts" "the image's /etc/hosts"
assert_eq "$(snapshot "$ROOT")" "$before" "rootfs listing after the run"
rm "$ROOT/etc/hosts"

log "a rootfs without /etc"
ROOT2="$TESTDIR/noetc"
make_rootfs "$ROOT2"
rm -rf "$ROOT2/etc"
before=$(snapshot "$ROOT2")
assert_ok "$RUNNER" --hostname noetc "$ROOT2" /bin/sh -c 'cat /etc/hostname; ls /etc'
assert_eq "$OUT" "noetc
hostname
hosts
resolv.conf" "the generated /etc"
assert_eq "$(snapshot "$ROOT2")" "$before" "rootfs listing after the run"

log "a read-only bind mount of a rootfs without /etc/hosts"
RO="$TESTDIR/ro"
mkdir "$RO"
mount --bind -o ro "$ROOT" "$RO"
defer umount "$RO"
before=$(snapshot "$ROOT")
assert_ok "$RUNNER" --net none --hostname ro "$RO" /bin/sh -c 'cat /etc/hostname; grep -c "^127.0.0.1" /etc/hosts
	for f in /bin/x /etc/x /x; do touch $f 2>/dev/null && echo "$f written"; done; true'
assert_eq "$OUT" "ro
1" "generated files, and no write succeeds"
assert_eq "$(snapshot "$ROOT")" "$before" "rootfs listing after the run"
assert_ok "$RUNNER" "$RO" /bin/sh -c 'grep -E " / | /etc " /proc/self/mountinfo'
assert_not_contains "$(printf '%s\n' "$OUT" | grep -E ' (/|/etc) rw,' || true)" "/" "read-only / and /etc"
umount "$RO"

log "imgfs mount --ro of an image without /etc/hosts"
build_image busybox bb
mnt="$TESTDIR/mnt"
mkdir "$mnt"
assert_ok imgfs mount --ro "oci:$TESTDIR/images:bb" "$mnt"
assert_no_file "$mnt/etc/hosts"
assert_ok "$RUNNER" --net none --hostname imgro "$mnt" /bin/sh -c 'cat /etc/hostname; grep -c "^127.0.0.1" /etc/hosts'
assert_eq "$OUT" "imgro
1" "generated files on a read-only image"
assert_no_file "$mnt/etc/hosts"
assert_ok imgfs umount "$mnt"

log "imgfs mount --upper: the upper gains nothing from a run"
upper="$TESTDIR/upper"
mkdir "$upper"
assert_ok imgfs mount --upper "$upper" "oci:$TESTDIR/images:bb" "$mnt"
before=$(snapshot "$upper")
assert_ok "$RUNNER" -w /work "$mnt" /bin/sh -c 'cat /etc/hosts >/dev/null && pwd'
assert_eq "$OUT" /work "working directory"
assert_eq "$(snapshot "$upper")" "$before" "upper listing after the run"
assert_no_file "$upper/etc"
assert_ok "$RUNNER" "$mnt" /bin/sh -c 'echo data >/root/data'
assert_eq "$(cat "$upper/root/data")" data "a write of the command lands in the upper"
assert_ok imgfs umount "$mnt"

assert_eq "$(host_mounts)" "$before_mounts" "host mount table"
log "ok"
