#!/bin/bash
# SIGINT during a (throttled) pull leaves a consistent store and a rerun completes, resuming
# the partial download; two pulls of the same image at once both succeed.
. "$(dirname "$0")/lib.sh"
require_imgfs

start_registry
build_image big big 16 4
push_image "$TESTDIR/images:big" test/big:latest
start_faultproxy "$REGISTRY_URL"
ref=$PROXY/test/big:latest
digest=$(oci_digest "$TESTDIR/images" big)

log "SIGINT while downloading"
proxy_rules '[{"match": "GET /v2/test/big/blobs/", "action": "throttle", "rate": 1000000}]'
"${WITH_DEFAULT_SIGNALS[@]}" "$IMGFS_BIN" pull -q "$ref" >"$TESTDIR/interrupted.out" 2>"$TESTDIR/interrupted.err" &
pid=$!
for _ in $(seq 100); do # until some layer bytes are on disk
	[ -n "$(find "$IMGFS_ROOT/tmp" -type f -size +200k 2>/dev/null)" ] && break
	sleep 0.1
done
[ -n "$(find "$IMGFS_ROOT/tmp" -type f -size +200k 2>/dev/null)" ] ||
	fail "no partial download appeared in $IMGFS_ROOT/tmp within 10 s"
kill -INT "$pid"
for _ in $(seq 100); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "imgfs pull still running 10 s after SIGINT"
rc=0
wait "$pid" || rc=$?
echo "interrupted pull exited $rc: $(cat "$TESTDIR/interrupted.err")"
[ "$rc" -ne 0 ] || fail "imgfs pull ignored SIGINT and completed"
[ ! -f "$IMGFS_ROOT/index.json" ] || assert_eq "$(store_nrefs)" 0 "refs after the interrupted pull"
[ ! -f "$IMGFS_ROOT/index.json" ] || check_store_consistent

log "rerun: completes, resuming the partial download"
: >"$PROXY_LOG"
proxy_rules '[]'
assert_ok imgfs pull -q "$ref"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
check_store_consistent
grep -q 'blobs/.* range=bytes=[1-9]' "$PROXY_LOG" ||
	fail "the rerun downloaded every blob from the start: $(cat "$PROXY_LOG")"

log "two pulls of the same image at once"
use_store store-concurrent
proxy_rules '[{"match": "GET /v2/test/big/blobs/", "action": "throttle", "rate": 4000000}]'
imgfs pull -q "$ref" >"$TESTDIR/a.out" 2>"$TESTDIR/a.err" &
a=$!
imgfs pull -q "$ref" >"$TESTDIR/b.out" 2>"$TESTDIR/b.err" &
b=$!
rca=0 rcb=0
wait "$a" || rca=$?
wait "$b" || rcb=$?
[ "$rca" -eq 0 ] || fail "first concurrent pull exited $rca: $(cat "$TESTDIR/a.err")"
[ "$rcb" -eq 0 ] || fail "second concurrent pull exited $rcb: $(cat "$TESTDIR/b.err")"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
assert_eq "$(store_nrefs)" 1 "refs after two concurrent pulls"
check_store_consistent
