#!/bin/bash
# Mounts outlive their daemon. A writable mount under readers (hashing image files in a
# loop) and writers (appending records with fsync): SIGKILL of the daemon-pid ten times,
# and the processes using the mount see no error, every hash is right and every fsynced
# record is there, also after `imgfs umount` and a new mount of the same --upper. A file
# open for reading and one open for writing before the kills are usable after them, a
# directory stream continues, a file unlinked while open keeps its data. The same during a
# lazy fill (which then completes), and an upgrade in place (`imgfs restart` after a new
# binary was installed over the old one) under load. A daemon that cannot be started again
# (its binary removed) leaves a dead mount, one log line why, that `imgfs umount` cleans
# up. Prints the longest pause a reader or writer saw (not a pass/fail timing).
. "$(dirname "$0")/lib.sh"
require_imgfs
require_root
require_cmd umoci jq
[ -c /dev/fuse ] || skip "no /dev/fuse"

LOAD="$HELPERS/takeover_load.py"

build_image big big 16 2 # busybox + two layers of 8 MiB of random files
umoci unpack --image "$TESTDIR/images:big" "$TESTDIR/bundle" >/dev/null || fail "umoci unpack failed"
# The image's regular files and their sha256, relative to the rootfs.
(cd "$TESTDIR/bundle/rootfs" && find . -type f -size +0 | sed 's|^\./||' | sort |
	while read -r f; do printf '%s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"; done) |
	jq -R -s 'split("\n") | map(select(length > 0) | split(" ")) | map({(.[1]): .[0]}) | add' \
		>"$TESTDIR/expected.json"
[ "$(jq length "$TESTDIR/expected.json")" -gt 2 ] || fail "no files to read in the image"

# start_load MOUNT WORK [ARGS...]: the load, in the background (LOAD_PID), once ready.
start_load() {
	local mnt=$1 work=$2 i=0
	shift 2
	mkdir -p "$work"
	"$PYTHON" "$LOAD" "$mnt" "$TESTDIR/expected.json" "$work" "$@" >"$work/result" 2>"$work/err" &
	LOAD_PID=$!
	_pids+=("$LOAD_PID") # stopped by the EXIT trap before it unmounts, also on a failure
	while [ ! -e "$work/ready" ]; do
		kill -0 $LOAD_PID 2>/dev/null || fail "the load did not start: $(cat "$work/err")"
		i=$((i + 1))
		[ $i -lt 600 ] || fail "the load did not start within 60 s"
		sleep 0.1
	done
}

# stop_load WORK: stops the load, fails on any error it saw; sets RESULT.
stop_load() {
	touch "$1/stop"
	wait $LOAD_PID || fail "the load failed: $(cat "$1/err")"
	RESULT=$(cat "$1/result")
	[ "$(jq '.errors | length' <<<"$RESULT")" -eq 0 ] ||
		fail "the processes using the mount saw errors: $(jq -c .errors <<<"$RESULT")"
	[ "$(jq .reads <<<"$RESULT")" -gt 0 ] || fail "the readers read nothing"
}

# check_records MOUNT WORK: every fsynced record of every writer is in its file, in order.
check_records() {
	local w last n
	for w in $(jq -r '.records | keys[]' <<<"$RESULT"); do
		last=$(jq ".records.$w" <<<"$RESULT")
		[ "$last" -ge 0 ] || fail "writer $w fsynced nothing"
		n=$(grep -c "^$w record " "$1/takeover/$w") || fail "no records of $w in $1/takeover/$w"
		[ "$n" -gt "$last" ] || fail "$w: $n records in the file, $((last + 1)) were fsynced"
		for i in 0 $((last / 2)) "$last"; do
			grep -q "^$w record $(printf %08d "$i") x*$" "$1/takeover/$w" ||
				fail "$w: fsynced record $i missing"
		done
		[ "$(grep -c "^$w record " "$1/takeover/$w")" -eq "$(sort -u "$1/takeover/$w" | grep -c "^$w record ")" ] ||
			fail "$w: a record is in the file twice"
	done
}

log "a writable mount under load, its daemon killed ten times"
mnt=$TESTDIR/mnt
upper=$TESTDIR/upper
mkdir -p "$mnt"
assert_ok imgfs mount --upper "$upper" "oci:$TESTDIR/images:big" "$mnt"
defer "imgfs umount '$mnt' 2>/dev/null"
mkdir "$mnt/takeover"
sup=$(status_field "$mnt" supervisor-pid)
[ -n "$sup" ] && [ "$sup" != - ] || fail "no supervisor-pid in the status"
start_load "$mnt" "$TESTDIR/load1"
worst=0
for i in $(seq 10); do
	sleep 0.4
	pid=$(status_field "$mnt" daemon-pid)
	kill -KILL "$pid" || fail "cannot kill the daemon $pid"
	wait_new_daemon "$mnt" "$pid"
	[ "$TOOK_MS" -le "$worst" ] || worst=$TOOK_MS
done
sleep 0.4
stop_load "$TESTDIR/load1"
assert_eq "$(status_field "$mnt" restarts)" 10 "restarts after ten kills"
assert_eq "$(status_field "$mnt" supervisor-pid)" "$sup" "the supervisor after ten kills"
check_records "$mnt" "$TESTDIR/load1"
log "ten kills: $(jq .reads <<<"$RESULT") reads, longest pause $(jq .max_pause_ms <<<"$RESULT") ms, new daemon serving within $worst ms of a kill"
assert_ok imgfs umount "$mnt"
assert_ok imgfs mount --upper "$upper" "oci:$TESTDIR/images:big" "$mnt"
check_records "$mnt" "$TESTDIR/load1"
assert_eq "$(cat "$mnt/takeover/open-for-writing")" "$(printf 'before\nafter')" \
	"the file written across the kills, after a new mount"
[ ! -e "$mnt/takeover/deleted-but-open" ] || fail "the file unlinked while open came back"
[ -z "$(ls -A "$TESTDIR/.upper.imgfs-work")" ] ||
	fail "the work directory kept $(ls -A "$TESTDIR/.upper.imgfs-work")"

log "an upgrade in place under load"
mkdir -p "$TESTDIR/bin"
cp "$IMGFS_BIN" "$TESTDIR/bin/imgfs"
assert_ok imgfs umount "$mnt"
assert_ok "$TESTDIR/bin/imgfs" mount --upper "$upper" "oci:$TESTDIR/images:big" "$mnt"
rm -rf "$mnt/takeover"
mkdir "$mnt/takeover"
start_load "$mnt" "$TESTDIR/load2"
old=$(status_field "$mnt" daemon-pid)
sleep 0.5
# Installed as package managers do: a new file renamed over the old one.
cp "$IMGFS_BIN" "$TESTDIR/bin/imgfs.new"
mv "$TESTDIR/bin/imgfs.new" "$TESTDIR/bin/imgfs"
assert_ok imgfs restart "$mnt"
new=$(status_field "$mnt" daemon-pid)
[ "$new" != "$old" ] || fail "imgfs restart left the daemon $old"
assert_eq "$(stat -L -c %i "/proc/$new/exe")" "$(stat -c %i "$TESTDIR/bin/imgfs")" \
	"the new daemon's binary is the one installed"
assert_eq "$(status_field "$mnt" restarts)" 1 "restarts after an upgrade"
sleep 0.5
stop_load "$TESTDIR/load2"
check_records "$mnt" "$TESTDIR/load2"
log "upgrade: longest pause $(jq .max_pause_ms <<<"$RESULT") ms"

log "a daemon that cannot be started again leaves a dead mount"
rm "$TESTDIR/bin/imgfs"
pid=$(status_field "$mnt" daemon-pid)
kill -KILL "$pid"
for _ in $(seq 100); do
	[ "$(status_field "$mnt" state || true)" = dead ] && break
	sleep 0.05
done
assert_eq "$(status_field "$mnt" state || true)" dead "the state of a mount whose daemon cannot start"
dir=$(ls -d "$IMGFS_ROOT"/mounts/*)
[ "$(grep -c "is dead" "$dir/log")" -eq 1 ] || fail "no one line saying why in $dir/log"
grep "is dead" "$dir/log" | grep -q "cannot execute" || fail "the log line does not say why: $(grep 'is dead' "$dir/log")"
assert_ok imgfs umount "$mnt"
[ -z "$(ls -A "$IMGFS_ROOT/mounts")" ] || fail "umount left $(ls "$IMGFS_ROOT/mounts")"

log "a lazy mount: its daemon killed during the fill, which goes on"
require_cmd docker-registry skopeo
start_registry
push_image "$TESTDIR/images:big" test/big:1
use_store pusher
assert_ok imgfs index push "$REGISTRY/test/big:1"
use_store lazy
start_linkproxy "$REGISTRY" --rate 40mbit --latency 1
export IMGFS_LAZY_FILL_DELAY_MS=0
lmnt=$TESTDIR/lazy-mnt
mkdir -p "$lmnt"
assert_ok imgfs mount --ro "$LINK/test/big:1" "$lmnt"
defer "imgfs umount '$lmnt' 2>/dev/null"
assert_eq "$(status_field "$lmnt" lazy)" yes "the mount is lazy"
start_load "$lmnt" "$TESTDIR/load3" --no-write --readers 2
# fetched_sum: the bytes the mount's daemons fetched so far, by status.
fetched_sum() {
	echo $(($(status_field "$lmnt" fetched-on-demand) + $(status_field "$lmnt" fetched-in-background)))
}
for i in $(seq 5); do
	sleep 0.3
	pid=$(status_field "$lmnt" daemon-pid)
	before=$(fetched_sum)
	kill -KILL "$pid" || fail "cannot kill the lazy daemon $pid"
	wait_new_daemon "$lmnt" "$pid"
	# The new daemon counts on from the figures of the dead one.
	after=$(fetched_sum)
	[ "$after" -ge "$before" ] ||
		fail "the fetched bytes went back from $before to $after after a takeover"
done
sleep 0.3
stop_load "$TESTDIR/load3"
log "lazy: longest pause $(jq .max_pause_ms <<<"$RESULT") ms"
for _ in $(seq 300); do
	present=$(status_field "$lmnt" lazy-bytes-present)
	total=$(status_field "$lmnt" lazy-bytes-total)
	[ "$present" = "$total" ] && break
	sleep 0.1
done
assert_eq "$present" "$total" "the lazy bytes present once the fill went on"
assert_ok imgfs umount "$lmnt"
