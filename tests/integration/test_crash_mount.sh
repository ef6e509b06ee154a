#!/bin/bash
# SIGKILL of the mount daemon under load. Under parallel readers: every read returns the
# image's bytes or fails (ENOTCONN once the daemon is gone), never other bytes, and no
# reader hangs. Under a writer that appends and fsyncs: every record whose fsync returned
# is in the upper layer, intact, and visible again after `imgfs umount` and a mount with the
# same --upper. In both cases `imgfs umount` cleans up the dead mount and the image mounts
# again.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_root
[ -c /dev/fuse ] || skip "no /dev/fuse"
require_cmd umoci fusermount3

LOAD="$HELPERS/crashload.py"
build_image big img 8 2
ref="oci:$TESTDIR/images:img"
mnt=$TESTDIR/mnt
mkdir -p "$mnt"

# The expected bytes, from umoci's unpacking of the same image.
umoci unpack --image "$TESTDIR/images:img" "$TESTDIR/bundle" >/dev/null ||
	fail "umoci unpack failed"
(cd "$TESTDIR/bundle/rootfs" && find . -type f -printf '%s %P\n' |
	while read -r size path; do
		printf '%s %s %s\n' "$(sha256sum <"$path" | cut -d' ' -f1)" "$size" "$path"
	done) >"$TESTDIR/files"
nfiles=$(wc -l <"$TESTDIR/files")
[ "$nfiles" -ge 5 ] || fail "only $nfiles files in the image"

daemon_pid() {
	jq -er .pid "$IMGFS_ROOT"/mounts/*/state
}
# dead_mount: the mountpoint is still a mount, and it answers ENOTCONN.
dead_mount() {
	awk -v m="$mnt" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo ||
		fail "the kernel dropped the mount by itself"
	if stat "$mnt/" >/dev/null 2>"$TESTDIR/stat.err"; then
		fail "the mount still answers after its daemon was killed"
	fi
	assert_contains "$(cat "$TESTDIR/stat.err")" "not connected" "stat of the dead mount"
}
# clean_umount: imgfs umount removes the dead mount and its state.
clean_umount() {
	assert_ok timeout 20 "$IMGFS_BIN" umount "$mnt"
	if awk -v m="$mnt" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; then
		fail "still mounted after umount"
	fi
	[ -z "$(ls "$IMGFS_ROOT/mounts/"*/state 2>/dev/null)" ] ||
		fail "umount left a state file: $(ls "$IMGFS_ROOT/mounts/"*/state)"
}
# stop_load PID...: ends the load generators; they must end within 10 s.
stop_load() {
	local p i
	touch "$TESTDIR/stop"
	for p in "$@"; do
		for i in $(seq 100); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$p" 2>/dev/null && fail "load process $p hangs on the dead mount"
		wait "$p" || true
	done
	rm -f "$TESTDIR/stop"
}

log "kill -9 under 4 parallel readers"
assert_ok imgfs mount --ro "$ref" "$mnt"
pid=$(daemon_pid)
readers=()
for i in 1 2 3 4; do
	timeout -k 5 40 "$PYTHON" "$LOAD" read "$TESTDIR/files" "$mnt" "$TESTDIR/stop" \
		"$TESTDIR/reads.$i" &
	readers+=($!)
done
sleep 1.5
kill -KILL "$pid"
sleep 1
stop_load "${readers[@]}"
cat "$TESTDIR"/reads.* >"$TESTDIR/reads"
ok=$(grep -c '^ok ' "$TESTDIR/reads" || true)
errs=$(grep -c '^err ' "$TESTDIR/reads" || true)
wrong=$(grep -c '^wrong ' "$TESTDIR/reads" || true)
log "reads: $ok correct, $errs failed, $wrong wrong"
[ "$wrong" -eq 0 ] || fail "readers got wrong bytes: $(grep '^wrong ' "$TESTDIR/reads" | head -n 5)"
[ "$ok" -ge "$nfiles" ] || fail "only $ok correct reads before the kill"
[ "$errs" -ge 1 ] || fail "no read failed after the daemon was killed"
other=$(grep '^err ' "$TESTDIR/reads" | grep -Ev '^err (ENOTCONN|ECONNABORTED) ' | head -n 5 || true)
[ -z "$other" ] || fail "reads failed with something else than ENOTCONN: $other"
dead_mount
clean_umount

log "mount again, read everything back"
assert_ok imgfs mount --ro "$ref" "$mnt"
(cd "$mnt" && sha256sum --quiet -c <(awk '{ print $1 "  " $3 }' "$TESTDIR/files")) ||
	fail "the remounted image reads differently"
assert_ok imgfs umount "$mnt"

log "kill -9 under a writer that appends and fsyncs (upper on disk)"
upper=$TESTDIR/upper
assert_ok imgfs mount --upper "$upper" "$ref" "$mnt"
pid=$(daemon_pid)
"$PYTHON" "$LOAD" write "$mnt/data.log" "$TESTDIR/durable" "$TESTDIR/stop" \
	>"$TESTDIR/writer.out" 2>&1 &
writer=$!
for _ in $(seq 50); do # until some fsyncs returned
	[ "$(cat "$TESTDIR/durable" 2>/dev/null || echo 0)" -ge 20 ] && break
	sleep 0.1
done
sleep 0.5
kill -KILL "$pid"
sleep 0.5
stop_load "$writer"
durable=$(cat "$TESTDIR/durable" 2>/dev/null || echo 0)
log "writer: $(cat "$TESTDIR/writer.out"); $durable records fsynced"
[ "$durable" -ge 20 ] || fail "only $durable fsyncs returned before the kill"
# ECONNABORTED for the request the kill interrupted, ENOTCONN for those after it.
grep -Eq 'Errno (107|103)\]' "$TESTDIR/writer.out" ||
	fail "the writer failed with something else than ENOTCONN/ECONNABORTED: $(cat "$TESTDIR/writer.out")"
dead_mount
clean_umount
assert_ok "$PYTHON" "$LOAD" check "$upper/data.log" "$durable"
log "upper holds $OUT records"

log "mount the same --upper again: the records are there, the file takes more"
assert_ok imgfs mount --upper "$upper" "$ref" "$mnt"
assert_ok "$PYTHON" "$LOAD" check "$mnt/data.log" "$durable"
n=$OUT
cmp -s "$mnt/data.log" "$upper/data.log" || fail "the mount and the upper layer differ"
# Complete a torn last record so that appending continues the sequence.
truncate -s $((n * 4096)) "$mnt/data.log"
HELPERS=$HELPERS "$PYTHON" - "$mnt/data.log" "$n" <<-'EOF' || fail "cannot append after the remount"
	import os, sys
	sys.path.insert(0, os.environ["HELPERS"])
	from crashload import record
	fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
	os.write(fd, record(int(sys.argv[2])))
	os.fsync(fd)
EOF
assert_ok "$PYTHON" "$LOAD" check "$mnt/data.log" $((n + 1))
cmp -s "$mnt/bin/busybox" "$TESTDIR/bundle/rootfs/bin/busybox" || fail "/bin/busybox differs"
assert_ok imgfs umount "$mnt"
