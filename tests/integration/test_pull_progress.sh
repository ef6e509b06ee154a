#!/bin/bash
# Progress output of a pull: bars redrawn in place on a terminal, one plain line per layer
# otherwise, nothing with -q; the digest alone on standard output in every case.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_cmd script

start_registry
build_image multilayer ml
push_image "$TESTDIR/images:ml" test/ml:1
ref=$REGISTRY/test/ml:1
digest=$(oci_digest "$TESTDIR/images" ml)
nlayers=$(jq '.layers | length' "$TESTDIR/images/blobs/sha256/${digest#sha256:}")

log "not a terminal: one plain line per layer on stderr, the digest on stdout"
assert_ok imgfs pull "$ref"
assert_eq "$OUT" "$digest" "stdout of pull"
assert_eq "$(grep -c ': done ' <<<"$ERR")" "$nlayers" "plain 'done' lines on stderr"
assert_not_contains "$ERR" $'\033[' "escape sequences without a terminal"

log "-q: nothing on stderr"
use_store quiet
assert_ok imgfs pull -q "$ref"
assert_eq "$ERR" "" "stderr of pull -q"
assert_eq "$OUT" "$digest" "stdout of pull -q"

log "a terminal: bars drawn and redrawn in place"
use_store tty
script -qec "$IMGFS_BIN pull $ref" "$TESTDIR/typescript" >/dev/null </dev/null ||
	fail "pull on a pseudo-terminal failed: $(cat "$TESTDIR/typescript")"
tty=$(cat "$TESTDIR/typescript")
assert_contains "$tty" $'\033[' "cursor movement on a terminal"
assert_contains "$tty" "done" "finished bars"
assert_contains "$tty" "$digest" "digest printed on the terminal"
