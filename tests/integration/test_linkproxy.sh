#!/bin/bash
# tests/integration/linkproxy.py, the emulated link of the bench and of lazy-pull tests,
# checked as its users rely on it: the bytes it counts are the bytes the client received,
# its stats file and request log name each request (Range, keep-alive), one transfer and
# two at once are held to the link's rate together, imgfs pulls through it, and it
# survives a client that hangs up and an upstream that refuses.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_cmd curl jq

RATE_MBIT=40
RATE=$((RATE_MBIT * 1000 * 1000 / 8)) # bytes per second

start_registry
build_image big big 6 2 # busybox + two layers of 3 MiB of random data
push_image "$TESTDIR/images:big" test/big:latest
start_linkproxy "$REGISTRY" --rate "${RATE_MBIT}mbit" --latency 1
digest=$(oci_digest "$TESTDIR/images" big)
manifest=$TESTDIR/images/blobs/sha256/${digest#sha256:}
l1=$(jq -r '.layers[-2].digest' "$manifest")
l2=$(jq -r '.layers[-1].digest' "$manifest")
s1=$(jq -r '.layers[-2].size' "$manifest")
s2=$(jq -r '.layers[-1].size' "$manifest")
blob_url() { echo "http://$LINK/v2/test/big/blobs/$1"; }

# fetch OUTFILE URL...: curl (one connection, keep-alive) into OUTFILE.1, OUTFILE.2...;
# prints the bytes received, headers included.
fetch() {
	local out=$1 i=0 args=()
	shift
	for u in "$@"; do
		i=$((i + 1))
		args+=(-o "$out.$i" "$u")
	done
	curl -sf -w '%{size_download} %{size_header}\n' "${args[@]}" |
		awk '{ n += $1 + $2 } END { print n }'
}

# at_least_link_time SECONDS BYTES WHAT: SECONDS is at least 0.8 x BYTES / RATE.
at_least_link_time() {
	awk -v t="$1" -v b="$2" -v r="$RATE" 'BEGIN { exit !(t >= 0.8 * b / r) }' ||
		fail "$3: $2 bytes in $1 s, faster than the ${RATE_MBIT} Mbit/s link allows"
	log "$3: $2 bytes in $1 s (link time $(awk -v b="$2" -v r="$RATE" 'BEGIN { printf "%.2f", b / r }') s)"
}

# counted_close WIRE BEFORE WHAT: the proxy's bytes_down grew by WIRE since BEFORE, give
# or take 64 bytes (after link_settle).
counted_close() {
	local now
	now=$(link_stat .bytes_down)
	awk -v d=$((now - $2)) -v w="$1" 'BEGIN { exit !(d - w <= 64 && w - d <= 64) }' ||
		fail "$3: the proxy counted $((now - $2)) bytes, curl received $1"
}

# request_body PATH [RANGE]: body_bytes of the last complete request for PATH (and RANGE).
request_body() {
	link_stat "[.request_list[] | select(.path == \"$1\" and .complete
		and (.range // \"\") == \"${2:-}\")] | last | .body_bytes"
}

log "idle: the proxy uses no CPU"
a=$(awk '{ print $14 + $15 }' "/proc/$LINK_PID/stat")
sleep 1
b=$(awk '{ print $14 + $15 }' "/proc/$LINK_PID/stat")
[ $((b - a)) -le 5 ] || fail "linkproxy used $((b - a)) ticks of CPU in 1 s of idling"

log "one blob alone"
link_settle
before=$(link_stat .bytes_down)
t0=$EPOCHREALTIME
wire=$(fetch "$TESTDIR/one" "$(blob_url "$l1")") || fail "curl through the link failed"
t1=$EPOCHREALTIME
link_settle
assert_eq "sha256:$(sha256sum <"$TESTDIR/one.1" | cut -d' ' -f1)" "$l1" "blob fetched through the link"
at_least_link_time "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$s1" "one blob"
counted_close "$wire" "$before" "one blob"
assert_eq "$(request_body "/v2/test/big/blobs/$l1")" "$s1" "body bytes attributed to the request"
grep -q "GET /v2/test/big/blobs/$l1 range=- status=200 bytes=$s1 .*done=yes" "$LINK_LOG" ||
	fail "no log line for the blob: $(cat "$LINK_LOG")"

log "a Range request and a keep-alive connection (two requests)"
before=$(link_stat .bytes_down)
conns=$(link_stat .connections)
wire=$(curl -sf -w '%{size_download} %{size_header}\n' -r 1000-100999 -o "$TESTDIR/part" \
	"$(blob_url "$l1")" --next -sf -w '%{size_download} %{size_header}\n' -o "$TESTDIR/whole" \
	"$(blob_url "$l2")" |
	awk '{ n += $1 + $2 } END { print n }') || fail "curl of two URLs failed"
link_settle
assert_eq "$(stat -c %s "$TESTDIR/part")" 100000 "bytes of the range"
counted_close "$wire" "$before" "range + blob"
assert_eq "$(link_stat .connections)" $((conns + 1)) "connections for two requests of one curl"
assert_eq "$(request_body "/v2/test/big/blobs/$l1" "bytes=1000-100999")" 100000 "range request body"
assert_eq "$(link_stat "[.request_list[] | select(.range == \"bytes=1000-100999\")] | last | .status")" \
	206 "status of the range request"
assert_eq "$(request_body "/v2/test/big/blobs/$l2")" "$s2" "second request on the connection"

log "two blobs at once share the link"
before=$(link_stat .bytes_down)
t0=$EPOCHREALTIME
fetch "$TESTDIR/a" "$(blob_url "$l1")" >"$TESTDIR/wire-a" &
pa=$!
fetch "$TESTDIR/b" "$(blob_url "$l2")" >"$TESTDIR/wire-b" &
pb=$!
wait "$pa" || fail "first concurrent curl failed"
wait "$pb" || fail "second concurrent curl failed"
t1=$EPOCHREALTIME
link_settle
cmp -s "$TESTDIR/a.1" "$TESTDIR/one.1" || fail "first concurrent blob differs"
assert_eq "sha256:$(sha256sum <"$TESTDIR/b.1" | cut -d' ' -f1)" "$l2" "second concurrent blob"
at_least_link_time "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" $((s1 + s2)) "two blobs"
counted_close $(($(cat "$TESTDIR/wire-a") + $(cat "$TESTDIR/wire-b"))) "$before" "two blobs"

log "a client that hangs up mid-blob does not disturb the next"
curl -s -o /dev/null --max-time 0.2 "$(blob_url "$l2")" && fail "curl of 3 MiB at 40 Mbit/s took under 0.2 s"
link_settle
assert_eq "$(link_stat .active_connections)" 0 "connections left open after the hang-up"
grep -q "blobs/$l2 .*done=no" "$LINK_LOG" || fail "the cut request is not logged as unfinished"

log "imgfs pull through the link"
use_store store-link
before=$(link_stat .bytes_down)
assert_ok imgfs pull -q "$LINK/test/big:latest"
link_settle
assert_eq "$(store_ref_digest "$LINK/test/big:latest")" "$digest" "stored ref"
check_store_consistent
blobs=$(jq '[.layers[].size, .config.size] | add' "$manifest")
got=$(($(link_stat .bytes_down) - before))
[ "$got" -ge "$blobs" ] || fail "the proxy counted $got bytes for a pull of $blobs bytes of blobs"
for l in $(jq -r '.layers[].digest' "$manifest"); do
	[ "$(request_body "/v2/test/big/blobs/$l")" -gt 0 ] || fail "no request for layer $l"
done

log "the upstream refuses: the client sees the connection close, the proxy carries on"
stop_pid "$REGISTRY_PID"
curl -s -o /dev/null --max-time 5 "http://$LINK/v2/" && fail "curl succeeded without a registry"
link_settle
[ "$(link_stat .upstream_errors)" -ge 1 ] || fail "upstream error not counted"
kill -0 "$LINK_PID" || fail "linkproxy exited after an upstream refusal"

log "at exit the stats are written once more, as valid JSON"
stop_pid "$LINK_PID"
jq -e '.requests >= 6 and (.request_list | length) == .requests and .bytes_up > 0' \
	"$LINK_STATS" >/dev/null || fail "final stats: $(head -c 400 "$LINK_STATS")"
log "ok"
