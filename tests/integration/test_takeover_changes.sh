#!/bin/bash
# A change of the namespace that a daemon made and then died before answering is answered
# as done by the daemon that takes over: the process that asked sees success, not the
# EEXIST or ENOENT that making the change a second time would give. For each kind of
# change (mkdir, mknod, symlink, link, unlink, rmdir, rename, create with O_EXCL),
# $IMGFS_TEST_KILL_AFTER makes the mount's first daemon kill itself right after it made
# that change and before it answers; the kernel sends the request again to the next
# daemon. Then the change is there, once, and the mount goes on serving. Also: the same
# name asked again later (a real second mkdir) still fails with EEXIST.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_root
[ -c /dev/fuse ] || skip "no /dev/fuse"
require_cmd umoci

build_image busybox img
ref="oci:$TESTDIR/images:img"
mnt=$TESTDIR/mnt
mkdir -p "$mnt"

# change KIND CMD...: mounts with the first daemon set to die after a change of KIND, runs
# CMD (which must succeed), and checks that exactly one daemon took over.
change() {
	local kind=$1 out rc=0
	shift
	IMGFS_TEST_KILL_AFTER=$kind assert_ok imgfs mount "$ref" "$mnt"
	out=$("$@" 2>&1) || rc=$?
	[ "$rc" -eq 0 ] || fail "$kind across a takeover: '$*' exited $rc: $out"
	[ "$(status_field "$mnt" restarts)" = 1 ] ||
		fail "$kind: the daemon did not die after the change (restarts: $(status_field "$mnt" restarts))"
}

finish() {
	grep -q "a change sent again was made by the daemon before" \
		"$(status_field "$mnt" state-dir)/log" ||
		fail "$1: the new daemon did not see the change as sent again"
	assert_ok imgfs umount "$mnt"
}

log "mkdir"
change mkdir mkdir "$mnt/newdir"
[ -d "$mnt/newdir" ] || fail "mkdir: no directory"
out=$(mkdir "$mnt/newdir" 2>&1) && fail "a second mkdir of the same name succeeded"
echo "$out" | grep -q "File exists" || fail "a second mkdir said: $out"
finish mkdir

log "mknod (a FIFO)"
change mknod mkfifo "$mnt/fifo"
[ -p "$mnt/fifo" ] || fail "mknod: no FIFO"
finish mknod

log "symlink"
change symlink ln -s target "$mnt/link"
[ "$(readlink "$mnt/link")" = target ] || fail "symlink: $(readlink "$mnt/link")"
finish symlink

log "link"
change link ln "$mnt/bin/busybox" "$mnt/bb"
[ "$(stat -c %i "$mnt/bb")" = "$(stat -c %i "$mnt/bin/busybox")" ] ||
	fail "link: not the same inode"
[ "$(stat -c %h "$mnt/bb")" -ge 2 ] || fail "link: st_nlink $(stat -c %h "$mnt/bb")"
finish link

log "unlink"
change unlink rm "$mnt/etc/os-release"
[ -e "$mnt/etc/os-release" ] && fail "unlink: still there"
finish unlink

log "rmdir"
change rmdir rmdir "$mnt/home"
[ -e "$mnt/home" ] && fail "rmdir: still there"
finish rmdir

log "rename"
change rename mv "$mnt/etc/passwd" "$mnt/etc/passwd.moved"
[ -e "$mnt/etc/passwd" ] && fail "rename: the old name is still there"
[ -s "$mnt/etc/passwd.moved" ] || fail "rename: no new name"
finish rename

log "create with O_EXCL"
change create "$PYTHON" -c 'import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
os.write(fd, b"written after the takeover\n")
os.close(fd)' "$mnt/created"
[ "$(cat "$mnt/created")" = "written after the takeover" ] || fail "create: $(cat "$mnt/created")"
finish create
