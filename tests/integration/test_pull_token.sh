#!/bin/bash
# A registry behind a token server (Bearer token flow with Basic credentials) whose tokens
# live 2 s, and a throttled multi-layer download that takes several token lifetimes, with
# one connection dropped halfway: the pull refreshes its token and succeeds.
. "$(dirname "$0")/lib.sh"
require_imgfs

start_tokenserver --expires-in 2 --user alice --password s3cret
start_registry --token "$TOKEN_REALM" "$TOKEN_ISSUER" "$TOKEN_CERT"
build_image big big 12 6 # 6 layers of 2 MiB, incompressible
push_image "$TESTDIR/images:big" test/big:latest --creds alice:s3cret
start_faultproxy "$REGISTRY_URL"
ref=$PROXY/test/big:latest
digest=$(oci_digest "$TESTDIR/images" big)
manifest=$TESTDIR/images/blobs/sha256/${digest#sha256:}
last_layer=$(jq -r '.layers[-1].digest' "$manifest")

log "anonymous: the token server refuses"
assert_fails_one_line 'unauthori[sz]ed|authentication required|401' imgfs pull -q "$ref"

log "login, then a slow pull across token expiries"
assert_ok imgfs login -u alice --password-stdin "$PROXY" <<<"s3cret"
: >"$TOKEN_LOG"
# 1 MB/s per connection: each 2 MiB layer takes ~2 s, and with at most a few layers at a
# time the pull lasts well beyond one token lifetime. The last layer's first attempt is
# cut halfway, so its resume needs a fresh token too.
proxy_rules "[{\"match\": \"GET /v2/test/big/blobs/$last_layer\", \"action\": \"cut\", \"after\": 1000000, \"times\": 1},
	{\"match\": \"GET /v2/test/big/blobs/\", \"action\": \"throttle\", \"rate\": 1000000}]"
start=$(date +%s)
assert_ok imgfs pull -q "$ref"
elapsed=$(($(date +%s) - start))
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
check_store_consistent

log "the pull outlived its tokens and got new ones"
[ "$elapsed" -ge 4 ] || fail "pull took ${elapsed}s: too quick to outlive a 2 s token"
issued=$(grep -c ' 200 user=alice' "$TOKEN_LOG" || true)
[ "$issued" -ge 2 ] || fail "only $issued token(s) issued during a ${elapsed}s pull"
grep -q "blobs/$last_layer range=bytes=" "$PROXY_LOG" ||
	fail "the cut layer was not resumed with a Range request"
# Every request that reached the registry with a token was finally answered; no request
# ended in 401 without being retried (the last request for each blob succeeded).
for l in $(jq -r '.layers[].digest' "$manifest"); do
	status=$(grep "blobs/$l " "$PROXY_LOG" | tail -n 1 | sed 's/.*status=\([0-9]*\).*/\1/')
	case $status in 200 | 206) ;; *) fail "last request for $l ended with $status" ;; esac
done
