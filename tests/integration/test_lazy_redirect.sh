#!/bin/bash
# A lazy mount whose blob requests the registry redirects to "blob storage" (a second
# proxy) under a signed URL that expires while the mount lives: once storage refuses the
# old signature (403), the rest of a file half read before asks the registry again,
# follows the fresh redirect and reads the right bytes; the expired URL is not used again.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_cmd skopeo umoci jq curl

start_registry
build_image big big 8 1 # busybox + one layer of 8 MiB of random files
push_image "$TESTDIR/images:big" test/big:1
umoci unpack --image "$TESTDIR/images:big" "$TESTDIR/bundle" >/dev/null || fail "umoci unpack failed"
use_store pusher
assert_ok imgfs index push "$REGISTRY/test/big:1"

# The registry's face (A) redirects every blob GET to storage (B, another address, in front
# of the same registry), signed with ?sig=1.
start_faultproxy "$REGISTRY_URL"
port_b=$(free_port)
STORAGE=127.0.0.2:$port_b
spawn storage "$PYTHON" "$HELPERS/faultproxy.py" --listen "$STORAGE" --upstream "$REGISTRY_URL" \
	--rules "$TESTDIR/storage-rules.json" --log "$TESTDIR/storage-requests.log"
echo '[]' >"$TESTDIR/storage-rules.json"
wait_http "http://$STORAGE/v2/"
: >"$TESTDIR/storage-requests.log"
redirect_to() {
	proxy_rules "[{\"match\": \"GET /v2/test/big/blobs/\", \"action\": \"redirect\", \"location\": \"http://$STORAGE{path}?sig=$1\"}]"
}
redirect_to 1

log "a lazy mount reads through the redirect"
use_store lazy
export IMGFS_LAZY_FILL_DELAY_MS=600000
mnt=$TESTDIR/mnt
mkdir -p "$mnt"
assert_ok imgfs mount --ro "$PROXY/test/big:1" "$mnt"
defer "imgfs umount '$mnt' 2>/dev/null"
assert_not_contains "$ERR" "pulling it whole" "the mount"
f=big/random-1.bin
cmp -n 100 "$mnt/$f" "$TESTDIR/bundle/rootfs/$f" || fail "$f differs through the redirect"
grep -q 'blobs/.*sig=1 .*status=20' "$TESTDIR/storage-requests.log" ||
	fail "storage served nothing under ?sig=1: $(cat "$TESTDIR/storage-requests.log")"

log "the signature expires: a refused read asks the registry again and reads right"
printf '[{"match": "GET /v2/test/big/blobs/.*sig=1", "action": "status", "status": 403}]\n' \
	>"$TESTDIR/storage-rules.json.tmp"
mv "$TESTDIR/storage-rules.json.tmp" "$TESTDIR/storage-rules.json"
# The registry still hands out the expired URL once (it was signed before the expiry, say
# from its cache), then fresh ones.
proxy_rules "[{\"match\": \"GET /v2/test/big/blobs/\", \"action\": \"redirect\", \"times\": 1, \"location\": \"http://$STORAGE{path}?sig=1\"},
	{\"match\": \"GET /v2/test/big/blobs/\", \"action\": \"redirect\", \"location\": \"http://$STORAGE{path}?sig=2\"}]"
cmp "$mnt/$f" "$TESTDIR/bundle/rootfs/$f" || fail "$f differs after the URL expired"
grep -q 'blobs/.*sig=2 .*status=20' "$TESTDIR/storage-requests.log" ||
	fail "no request under the fresh signature: $(cat "$TESTDIR/storage-requests.log")"
n_old=$(grep -c 'blobs/.*sig=1 .*status=403' "$TESTDIR/storage-requests.log" || true)
assert_eq "$n_old" 1 "requests refused under the expired signature"
assert_ok imgfs umount "$mnt"
