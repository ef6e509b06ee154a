#!/bin/bash
# A registry with htpasswd (Basic) auth: anonymous and wrong credentials fail with a clear
# "unauthorized" line; `imgfs login` checks and stores credentials in the Docker config
# format; podman's auth file and $REGISTRY_AUTH_FILE are honoured, in podman's order.
. "$(dirname "$0")/lib.sh"
require_imgfs

make_htpasswd "$TESTDIR/htpasswd" alice 's3cret pass'
start_registry --htpasswd "$TESTDIR/htpasswd"
build_image busybox bb
push_image "$TESTDIR/images:bb" private/bb:latest --creds 'alice:s3cret pass'
ref=$REGISTRY/private/bb:latest
digest=$(oci_digest "$TESTDIR/images" bb)
unauthorized='unauthori[sz]ed|authentication required|401'
# auth_json USER PASS: an auth file with "auths" value for the registry.
auth_json() {
	jq -n --arg r "$REGISTRY" --arg a "$(printf '%s:%s' "$1" "$2" | base64 -w0)" \
		'{auths: {($r): {auth: $a}}}'
}

log "no credentials"
assert_fails_one_line "$unauthorized" imgfs pull -q "$ref"
assert_eq "$(store_nrefs)" 0 "refs after a refused pull"

log "login with a wrong password"
assert_fails_one_line "$unauthorized" imgfs login -u alice --password-stdin "$REGISTRY" <<<"wrong"
if [ -f "$DOCKER_CONFIG/config.json" ]; then
	jq -e --arg r "$REGISTRY" '.auths[$r] == null' "$DOCKER_CONFIG/config.json" >/dev/null ||
		fail "a failed login stored credentials"
fi

log "login"
assert_ok imgfs login -u alice --password-stdin "$REGISTRY" <<<"s3cret pass"
assert_file "$DOCKER_CONFIG/config.json"
assert_eq "$(jq -r --arg r "$REGISTRY" '.auths[$r].auth' "$DOCKER_CONFIG/config.json" | base64 -d)" \
	"alice:s3cret pass" "stored credentials"
assert_eq "$(stat -c %a "$DOCKER_CONFIG/config.json")" 600 "mode of config.json"

log "pull with the stored credentials"
assert_ok imgfs pull -q "$ref"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
check_store_consistent

log "\$REGISTRY_AUTH_FILE comes first: wrong credentials there"
use_store store-authfile
auth_json alice wrong >"$TESTDIR/auth-file.json"
export REGISTRY_AUTH_FILE=$TESTDIR/auth-file.json
assert_fails_one_line "$unauthorized" imgfs pull -q "$ref"
unset REGISTRY_AUTH_FILE

log "podman's \$XDG_RUNTIME_DIR/containers/auth.json alone"
use_store store-podman
rm -f "$DOCKER_CONFIG/config.json"
mkdir -p "$XDG_RUNTIME_DIR/containers"
auth_json alice 's3cret pass' >"$XDG_RUNTIME_DIR/containers/auth.json"
assert_ok imgfs pull -q "$ref"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
