#!/bin/bash
# Platform selection from a multi-platform index: the host's platform by default,
# --platform picks another, an absent platform is a clear error that stores nothing.
. "$(dirname "$0")/lib.sh"
require_imgfs

case $(uname -m) in
x86_64) host=amd64 other=arm64 ;;
aarch64) host=arm64 other=amd64 ;;
*) skip "the fixture index has amd64 and arm64 entries only; host is $(uname -m)" ;;
esac

start_registry
build_image index multi
push_image "$TESTDIR/images:multi" test/multi:latest
ref=$REGISTRY/test/multi:latest
index_blob=$TESTDIR/images/blobs/sha256/$(oci_digest "$TESTDIR/images" multi | cut -d: -f2)
manifest_for() {
	jq -er --arg a "$1" '.manifests[] | select(.platform.architecture == $a) | .digest' "$index_blob"
}
# config_field FIELD: FIELD of the config of the image stored for $ref.
config_field() {
	local m
	m=$IMGFS_ROOT/blobs/sha256/$(store_ref_digest "$ref" | cut -d: -f2)
	jq -r ".$1" "$IMGFS_ROOT/blobs/sha256/$(jq -r .config.digest "$m" | cut -d: -f2)"
}

log "default: the host platform (linux/$host)"
assert_ok imgfs pull -q "$ref"
assert_eq "$(store_ref_digest "$ref")" "$(manifest_for "$host")" "manifest chosen by default"
assert_eq "$(config_field architecture)" "$host" "architecture of the pulled config"
check_store_consistent

log "--platform linux/$other"
use_store store-other
assert_ok imgfs pull -q --platform "linux/$other" "$ref"
assert_eq "$(store_ref_digest "$ref")" "$(manifest_for "$other")" "manifest chosen for linux/$other"
assert_eq "$(config_field architecture)" "$other" "architecture of the pulled config"
check_store_consistent

log "--platform linux/arm64/v8 (with variant)"
use_store store-variant
assert_ok imgfs pull -q --platform linux/arm64/v8 "$ref"
assert_eq "$(store_ref_digest "$ref")" "$(manifest_for arm64)" "manifest chosen for linux/arm64/v8"

log "absent platform"
use_store store-absent
assert_fails_one_line "s390x" imgfs pull -q --platform linux/s390x "$ref"
[ ! -f "$IMGFS_ROOT/index.json" ] || assert_eq "$(store_nrefs)" 0 "refs after a failed pull"

log "malformed --platform"
assert_fails_one_line "platform" imgfs pull -q --platform "linux/" "$ref"
