#!/bin/bash
# SIGKILL of `imgfs pull` at random points (throttled downloads, then the index, tree and
# ref writes): after every kill the store is consistent (every blob matches its digest,
# index.json parses, refs name complete images), the next pull completes, and the final
# store holds the same refs, blobs, layer indexes and trees as a clean pull.
. "$(dirname "$0")/lib.sh"
require_imgfs

ITERATIONS=${CRASH_ITERATIONS:-10}
start_registry
build_image big big 4 3
push_image "$TESTDIR/images:big" test/big:latest
start_faultproxy "$REGISTRY_URL"
ref=$PROXY/test/big:latest
digest=$(oci_digest "$TESTDIR/images" big)

log "clean pull, for reference"
use_store store-clean
assert_ok imgfs pull -q "$ref"
check_store_consistent
clean=$IMGFS_ROOT

# store_content: what a finished pull leaves (names of blobs, indexes and trees; refs).
# Temporary files of a killed writer (".NAME.tmp-…", never read) are for gc to remove.
store_content() {
	(cd "$IMGFS_ROOT" && find blobs idx trees -type f ! -name '.*' | sort)
	jq -c '[.manifests[] | {digest, size, mediaType, annotations}] | sort_by(.digest)' \
		"$IMGFS_ROOT/index.json"
}

use_store store-crash
# About 2 s per full download, so that the kills land all over it.
proxy_rules '[{"match": "GET /v2/test/big/blobs/", "action": "throttle", "rate": 500000}]'
killed=0 completed=0
for i in $(seq "$ITERATIONS"); do
	delay=$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.05 + (r % 196) / 100 }')
	"$IMGFS_BIN" pull -q "$ref" >"$TESTDIR/crash.out" 2>"$TESTDIR/crash.err" &
	pid=$!
	sleep "$delay"
	if kill -KILL "$pid" 2>/dev/null; then
		killed=$((killed + 1))
		what="killed after $delay s"
	else
		completed=$((completed + 1))
		what="completed before the kill at $delay s"
	fi
	rc=0
	wait "$pid" || rc=$?
	log "iteration $i: $what (exit $rc), $(find "$IMGFS_ROOT" -type f 2>/dev/null | wc -l) files"
	case $what in
	completed*) [ "$rc" -eq 0 ] || fail "pull failed on its own: $(cat "$TESTDIR/crash.err")" ;;
	*) [ "$rc" -eq 137 ] || fail "pull exited $rc before the kill: $(cat "$TESTDIR/crash.err")" ;;
	esac
	n=0
	if [ -f "$IMGFS_ROOT/index.json" ]; then
		check_store_consistent
		n=$(store_nrefs)
		[ "$n" -eq 0 ] || assert_eq "$(store_ref_digest "$ref")" "$digest" "ref after a kill"
	fi
	if [ "$n" -ne 0 ]; then
		# Done: start again from an empty store so that later kills hit a download.
		rm -rf "$IMGFS_ROOT"
	fi
done
log "$killed pulls killed, $completed completed first"
[ "$killed" -ge $((ITERATIONS / 2)) ] || fail "only $killed of $ITERATIONS pulls were killed mid-way"

log "kills without throttling (index, tree and ref writes)"
proxy_rules '[]'
for delay in 0.05 0.1 0.15 0.2 0.3; do
	"$IMGFS_BIN" pull -q "$ref" >/dev/null 2>&1 &
	pid=$!
	sleep "$delay"
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" || true
	[ ! -f "$IMGFS_ROOT/index.json" ] || check_store_consistent
done

log "a pull after the crashes completes"
assert_ok timeout 60 "$IMGFS_BIN" pull -q "$ref"
assert_eq "$OUT" "$digest" "printed digest"
check_store_consistent
crashed_content=$(store_content)
crashed_root=$IMGFS_ROOT
IMGFS_ROOT=$clean
clean_content=$(store_content)
IMGFS_ROOT=$crashed_root
[ "$crashed_content" = "$clean_content" ] ||
	fail "store after crashes differs from a clean pull: $(diff <(echo "$clean_content") <(echo "$crashed_content"))"
for f in $(cd "$clean" && find idx trees -type f); do
	cmp -s "$clean/$f" "$IMGFS_ROOT/$f" || fail "$f differs from a clean pull's"
done

log "the image mounts and reads back"
mkdir -p "$TESTDIR/mnt"
assert_ok imgfs mount --ro "$ref" "$TESTDIR/mnt"
defer imgfs umount "$TESTDIR/mnt"
[ -x "$TESTDIR/mnt/bin/busybox" ] || fail "no /bin/busybox in the mounted image"
cmp -s "$TESTDIR/mnt/bin/busybox" /bin/busybox || fail "/bin/busybox differs from the host's"
assert_ok imgfs umount "$TESTDIR/mnt"

log "gc leaves only the image: no leftovers of the killed pulls"
log "temporary files before gc: $(find "$IMGFS_ROOT" -type f \( -path "$IMGFS_ROOT/tmp/*" -o -name '.*' \) -printf '%P ')"
# A writer of index.json or oci-layout killed between its write and its rename leaves
# these (the window is narrow, so they are made here rather than waited for).
echo '{}' >"$IMGFS_ROOT/.index.json.tmp-99999-1"
echo '{}' >"$IMGFS_ROOT/.oci-layout.tmp-99999-2"
assert_ok imgfs gc
left=$(find "$IMGFS_ROOT" -path "$IMGFS_ROOT/mounts" -prune -o \
	-type f \( -path "$IMGFS_ROOT/tmp/*" -o -name '.*' \) -print)
[ -z "$left" ] || fail "gc left temporary files: $left"
[ "$(store_content)" = "$clean_content" ] || fail "gc changed the image's files"
