#!/bin/bash
# A registry on a non-loopback address: HTTPS with a certificate from a test CA. Without
# the CA the pull fails clearly; --insecure accepts it; the CA in
# /etc/containers/certs.d/HOST:PORT (or /etc/docker/certs.d) makes it verify. A plain-HTTP
# registry there needs --insecure.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_root

add_test_address
make_ca "$TESTDIR/pki"
make_server_cert "$TESTDIR/pki" "$TEST_IP"
start_registry --addr "$TEST_IP" --tls "$TESTDIR/pki/server.crt" "$TESTDIR/pki/server.key"
build_image busybox bb
push_image "$TESTDIR/images:bb" test/bb:latest
ref=$REGISTRY/test/bb:latest
digest=$(oci_digest "$TESTDIR/images" bb)

log "unknown CA: refused"
assert_fails_one_line 'certificate|tls|ssl|verif' imgfs pull -q "$ref"

log "--insecure: accepted without verification"
use_store store-insecure
assert_ok imgfs pull -q --insecure "$ref"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"

log "CA in /etc/containers/certs.d/$REGISTRY"
use_store store-containers-ca
install_ca "$REGISTRY" "$TESTDIR/pki/ca.crt"
assert_ok imgfs pull -q "$ref"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
check_store_consistent
uninstall_ca "$REGISTRY"

log "CA in /etc/docker/certs.d/$REGISTRY"
use_store store-docker-ca
install_ca "$REGISTRY" "$TESTDIR/pki/ca.crt" /etc/docker/certs.d
assert_ok imgfs pull -q "$ref"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
uninstall_ca "$REGISTRY" /etc/docker/certs.d

log "a CA for another port does not apply"
install_ca "$TEST_IP:1" "$TESTDIR/pki/ca.crt"
use_store store-other-port
assert_fails_one_line 'certificate|tls|ssl|verif' imgfs pull -q "$ref"

log "plain HTTP on a non-loopback address needs --insecure"
start_registry --addr "$TEST_IP"
push_image "$TESTDIR/images:bb" test/bb:latest
ref=$REGISTRY/test/bb:latest
use_store store-http
assert_fails_one_line "$TEST_IP" imgfs pull -q "$ref"
assert_ok imgfs pull -q --insecure "$ref"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
