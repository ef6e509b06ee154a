#!/bin/bash
# runner: a hostile rootfs cannot make a mount land outside it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/runner_lib.sh"
require_root

before=$(host_mounts)
HOSTFILE="$TESTDIR/HOSTFILE"
HOSTDIR="$TESTDIR/HOSTDIR"
echo original >"$HOSTFILE"
mkdir "$HOSTDIR"

log "/etc/hosts, /proc and /dev as symlinks to host paths"
ROOT="$TESTDIR/evil"
make_rootfs "$ROOT"
ln -s "$HOSTFILE" "$ROOT/etc/hosts"
ln -s "$HOSTDIR/proc" "$ROOT/proc"
ln -s "$HOSTDIR/dev" "$ROOT/dev"
ln -s ../../../../../../.."$TESTDIR/ESCAPED" "$ROOT/etc/resolv.conf"
assert_ok "$RUNNER" "$ROOT" /bin/sh -c 'cat /etc/hosts; ls /proc/self/status; ls /dev/null'
assert_contains "$OUT" "localhost" "generated /etc/hosts"
assert_not_contains "$OUT" "original" "generated /etc/hosts"
assert_eq "$(cat "$HOSTFILE")" original "host file behind /etc/hosts"
assert_eq "$(ls -A "$HOSTDIR")" "" "host directory behind /dev and /proc"
assert_no_file "$TESTDIR/ESCAPED"
# The symlinks were resolved inside the rootfs, and their missing targets were created on
# shadows in the container, not in the rootfs.
assert_no_file "$ROOT/$HOSTFILE"
assert_no_file "$ROOT/$HOSTDIR/proc"
assert_no_file "$ROOT/$HOSTDIR/dev"
assert_no_file "$ROOT/$TESTDIR/ESCAPED"
assert_eq "$(ls -A "$ROOT/tmp")" "" "the rootfs's /tmp"
assert_eq "$(host_mounts)" "$before" "host mount table"

log "a rootfs that is itself a symlink"
ln -s "$TESTDIR/evil" "$TESTDIR/link"
assert_ok "$RUNNER" "$TESTDIR/link" /probe
assert_contains "$OUT" "mount: / "
assert_eq "$(host_mounts)" "$before" "host mount table"

log "/proc pointing at the root itself is refused"
ROOT2="$TESTDIR/selfref"
make_rootfs "$ROOT2"
ln -s / "$ROOT2/proc"
run_rc "$RUNNER" "$ROOT2" /bin/true
assert_eq "$RC" 125 "exit status"
assert_contains "$ERR" "'/proc': it resolves to the rootfs itself"

log "/etc/hostname pointing into /proc is refused"
ROOT3="$TESTDIR/procfile"
make_rootfs "$ROOT3"
ln -s /proc/sys/kernel/core_pattern "$ROOT3/etc/hostname"
core=$(cat /proc/sys/kernel/core_pattern)
run_rc "$RUNNER" "$ROOT3" /bin/true
assert_eq "$RC" 125 "exit status"
assert_contains "$ERR" "/etc/hostname"
assert_eq "$(cat /proc/sys/kernel/core_pattern)" "$core" "host core_pattern"

log "a read-only rootfs without mount points runs, its symlinks still resolved inside"
ROOT4="$TESTDIR/ro"
make_rootfs "$ROOT4"
ln -s "$HOSTFILE" "$ROOT4/etc/hosts"
mount --bind "$ROOT4" "$ROOT4"
defer umount "$ROOT4"
mount -o remount,bind,ro "$ROOT4"
assert_ok "$RUNNER" --net none "$ROOT4" /bin/sh -c 'cat /etc/hosts; ls /proc/self/status'
assert_contains "$OUT" "localhost" "generated /etc/hosts"
assert_eq "$(cat "$HOSTFILE")" original "host file behind /etc/hosts"
umount "$ROOT4"
assert_eq "$(host_mounts)" "$before" "host mount table"
log "ok"
