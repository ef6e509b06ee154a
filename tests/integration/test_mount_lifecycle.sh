#!/bin/sh
# imgfs mount/umount life cycle: the daemon is live when mount returns and gone when umount
# returns, its state is cleaned up; a second mount of the same mountpoint, a busy umount,
# --upper with --ro and a missing image fail clearly; a writable mount without --upper keeps
# its layer in the store until umount, which removes it; a daemon killed with
# SIGKILL leaves a dead mount that umount removes and that mounts again.
set -u
. "$(dirname "$0")/mount_lib.sh"

layout=$WORK/layout
sh "$TOP/contrib/mkimage.sh" busybox "$layout:bb" >/dev/null || fail "mkimage.sh failed"
ref="oci:$layout:bb"
mnt=$WORK/mnt

# expect_fail PATTERN CMD...: CMD exits 1 and its one-line error matches PATTERN.
expect_fail() {
	pattern=$1
	shift
	out=$("$@" 2>&1)
	rc=$?
	[ $rc -eq 1 ] || fail "'$*' exited $rc, expected 1 ($out)"
	echo "$out" | grep -q -- "$pattern" || fail "'$*' said '$out', expected '$pattern'"
}

# The pid in the state: the supervisor, which holds the mount.
daemon_pid() {
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' \
		"$(ls "$IMGFS_ROOT"/mounts/*/state)"
}

mount_ro "$ref" "$mnt"
pid=$(daemon_pid)
pid_alive "$pid" || fail "daemon $pid not running after mount returned"
# imgfs status: key: value lines a script can read, found without --root.
st=$(env -u IMGFS_ROOT "$IMGFS" status "$mnt") || fail "status of a live mount failed: $st"
# The state names the supervisor; daemon-pid is the process that mounted and serves, whose
# child the supervisor is (forked off the mount's critical path).
echo "$st" | grep -qx "supervisor-pid: $pid" || fail "status supervisor-pid is not $pid: $st"
worker=$(echo "$st" | sed -n 's/^daemon-pid: //p')
[ -n "$worker" ] && [ "$worker" != "$pid" ] && pid_alive "$worker" ||
	fail "status daemon-pid '$worker' is not a live process apart from the supervisor: $st"
[ "$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null)" = "$worker" ] ||
	fail "the supervisor $pid is not a child of the daemon $worker: $st"
echo "$st" | grep -qx "state: live" || fail "status does not say live: $st"
echo "$st" | grep -qx "image: $ref" || fail "status image is not $ref: $st"
echo "$st" | grep -qx "read-only: yes" || fail "status read-only is not yes: $st"
echo "$st" | grep -q "^digest: sha256:[0-9a-f]\{64\}$" || fail "status has no digest: $st"
[ -s "$(ls -d "$IMGFS_ROOT"/mounts/*)/log" ] || fail "daemon log is empty"
[ "$(cat "$mnt/etc/os-release" | head -n 1)" = 'NAME="imgfs test image"' ] ||
	fail "cannot read through the mount"

expect_fail "already mounted" "$IMGFS" mount --ro "$ref" "$mnt"
expect_fail "nosuchimage" "$IMGFS" mount --ro "oci:$layout:nosuchimage" "$WORK"
expect_fail "not mounted" "$IMGFS" umount "$WORK"

# Busy: a process has its cwd in the mount.
(cd "$mnt" && sleep 30) &
busy=$!
sleep 0.3
expect_fail "busy" "$IMGFS" umount "$mnt"
kill $busy
wait $busy 2>/dev/null

"$IMGFS" umount "$mnt" || fail "umount failed"
pid_alive "$pid" && fail "daemon $pid still running after umount returned"
is_imgfs_mount "$mnt" && fail "still mounted after umount"
[ -z "$(ls "$IMGFS_ROOT/mounts")" ] || fail "umount left $(ls "$IMGFS_ROOT/mounts")"

# A writable mount with a throwaway layer: changes land in ROOT/mounts/NAME/upper, umount
# removes it.
out=$("$IMGFS" mount --ro --upper "$WORK/up" "$ref" "$mnt" 2>&1) &&
	fail "--upper with --ro was accepted"
echo "$out" | grep -q "needs a writable mount" || fail "--upper --ro said '$out'"
"$IMGFS" mount "$ref" "$mnt" || fail "writable mount failed"
echo changed >"$mnt/etc/os-release" || fail "cannot write through the writable mount"
[ "$(cat "$(ls -d "$IMGFS_ROOT"/mounts/*)/upper/etc/os-release")" = changed ] ||
	fail "the change is not in ROOT/mounts/NAME/upper"
"$IMGFS" umount "$mnt" || fail "umount of the writable mount failed"
[ -z "$(ls "$IMGFS_ROOT/mounts")" ] || fail "umount left $(ls "$IMGFS_ROOT/mounts")"
mount_ro "$ref" "$mnt"
[ "$(head -n 1 "$mnt/etc/os-release")" = 'NAME="imgfs test image"' ] ||
	fail "a throwaway change survived umount"
"$IMGFS" umount "$mnt" || fail "umount failed"

# A daemon killed with SIGKILL, with a process still inside the dead mount.
mount_ro "$ref" "$mnt"
pid=$(daemon_pid)
(cd "$mnt" && sleep 30) &
busy=$!
sleep 0.3
kill -KILL "$pid"
sleep 0.2
ls "$mnt" >/dev/null 2>&1 && fail "mount still answers after its daemon was killed"
st=$("$IMGFS" status "$mnt") && fail "status of a dead mount exited 0"
echo "$st" | grep -qx "state: dead" || fail "status of a dead mount: $st"
echo "$st" | grep -qx "daemon-pid: -" || fail "status of a dead mount names a daemon: $st"
expect_fail "imgfs umount" "$IMGFS" mount --ro "$ref" "$mnt"
"$IMGFS" umount "$mnt" || fail "umount of a dead mount failed"
expect_fail "not an imgfs mount" "$IMGFS" status "$mnt"
is_imgfs_mount "$mnt" && fail "dead mount still there"
[ -z "$(ls "$IMGFS_ROOT/mounts")" ] || fail "umount left $(ls "$IMGFS_ROOT/mounts")"
kill $busy
wait $busy 2>/dev/null
mount_ro "$ref" "$mnt"
[ -x "$mnt/bin/busybox" ] || fail "remount after SIGKILL does not work"

# SIGTERM to the daemon unmounts cleanly, as umount does.
pid=$(daemon_pid)
kill -TERM "$pid"
i=0
while pid_alive "$pid" && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
pid_alive "$pid" && fail "daemon ignored SIGTERM"
is_imgfs_mount "$mnt" && fail "SIGTERM left the mount"
[ -z "$(ls "$IMGFS_ROOT/mounts")" ] || fail "SIGTERM left $(ls "$IMGFS_ROOT/mounts")"

# A mount made with --root is unmounted without it (and without $IMGFS_ROOT): the mount
# knows its store. Also after its daemon died.
other=$WORK/other-store
for kill_first in no yes; do
	"$IMGFS" --root "$other" mount --ro "$ref" "$mnt" || fail "mount --root failed"
	if [ $kill_first = yes ]; then
		kill -KILL "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' \
			"$(ls "$other"/mounts/*/state)")"
		sleep 0.2
	fi
	out=$(env -u IMGFS_ROOT "$IMGFS" umount "$mnt" 2>&1) ||
		fail "umount of a --root mount failed (daemon killed: $kill_first): $out"
	[ -z "$out" ] || fail "umount of a --root mount said '$out'"
	is_imgfs_mount "$mnt" && fail "--root mount still there (daemon killed: $kill_first)"
	[ -z "$(ls "$other/mounts")" ] || fail "umount left $(ls "$other/mounts") in --root"
done

# gc removes what a killed daemon left once its mount is gone, never a live mount's.
mount_ro "$ref" "$mnt"
pid=$(daemon_pid)
kill -KILL "$pid"
sleep 0.2
umount -l "$mnt"
"$IMGFS" gc >/dev/null || fail "gc failed"
[ -z "$(ls "$IMGFS_ROOT/mounts")" ] || fail "gc left the dead mount's $(ls "$IMGFS_ROOT/mounts")"

# Foreground mode serves until unmounted.
"$IMGFS" mount -f --ro "$ref" "$mnt" 2>"$WORK/fg.log" &
fg=$!
i=0
until is_imgfs_mount "$mnt" || [ $i -ge 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
[ -x "$mnt/bin/busybox" ] || fail "foreground mount not serving"
"$IMGFS" umount "$mnt" || fail "umount of a foreground mount failed"
wait $fg || fail "foreground daemon exited $?"
echo "ok"
