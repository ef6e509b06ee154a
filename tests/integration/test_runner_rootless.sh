#!/bin/bash
# runner started by a non-root user: a user namespace, devices bound from the host.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/runner_lib.sh"
require_root
require_cmd setpriv

ROOT="$TESTDIR/rootfs"
make_rootfs "$ROOT"
chmod 755 "$TESTDIR"
chown -R 65534:65534 "$ROOT"
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
if ! as_nobody unshare --user true 2>/dev/null; then
	skip "unprivileged user namespaces are disabled"
fi

log "rootless run of the probe"
assert_ok as_nobody "$RUNNER" --hostname rl "$ROOT" /probe
assert_ne "$(probe_get ns.user)" "$(readlink /proc/self/ns/user)" "user namespace"
for ns in ipc mnt pid uts cgroup; do
	assert_ne "$(probe_get ns.$ns)" "$(readlink /proc/self/ns/$ns)" "$ns namespace"
done
assert_eq "$(probe_get ids)" "uid=0 gid=0 euid=0 egid=0" "root inside"
assert_eq "$(probe_get hostname)" rl hostname
assert_eq "$(probe_get status.CapBnd)" 00000000a80425fb "bounding caps"
assert_eq "$(probe_get status.Seccomp)" 2 seccomp
assert_eq "$(probe_get fds)" "0 1 2" fds
assert_not_contains "$OUT" "VISIBLE"
assert_not_contains "$OUT" "READABLE"
assert_contains "$OUT" "mount: /sys "

log "devices work, files created belong to the caller"
assert_ok as_nobody "$RUNNER" "$ROOT" /bin/sh -c 'echo x >/dev/null && head -c 4 /dev/zero | wc -c && echo hi >/tmp/f'
assert_contains "$OUT" "4"
assert_eq "$(stat -c %u "$ROOT/tmp/f")" 65534 "owner of a file written inside"

log "no device cgroup, and none needed: the user namespace refuses device nodes"
assert_ok as_nobody "$RUNNER" "$ROOT" /probe devnode b 7 0
assert_eq "$(probe_get mknod)" "Operation not permitted" "mknod b 7 0 in a user namespace"
assert_ok as_nobody "$RUNNER" "$ROOT" /probe devnode c 1 3
assert_eq "$(probe_get mknod)" "Operation not permitted" "mknod c 1 3 in a user namespace"

log "--net none and exit statuses"
assert_ok as_nobody "$RUNNER" --net none "$ROOT" /bin/sh -c 'ip -o link'
assert_contains "$OUT" "lo: <LOOPBACK,UP"
run_rc as_nobody "$RUNNER" "$ROOT" /bin/sh -c 'exit 7'; assert_eq "$RC" 7 "exit status"
run_rc as_nobody "$RUNNER" "$ROOT" nosuch; assert_eq "$RC" 127 "not found"

log "other users cannot exist in a single-id user namespace: clear error"
run_rc as_nobody "$RUNNER" -u 1000 "$ROOT" /bin/true
assert_eq "$RC" 125 "exit status"
assert_contains "$ERR" "rootless"
log "ok"
