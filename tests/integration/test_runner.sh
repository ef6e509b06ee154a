#!/bin/bash
# runner: the container as seen from inside (probe), exit statuses, signals, init, users.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/runner_lib.sh"
require_root

ROOT="$TESTDIR/rootfs"
make_rootfs "$ROOT"

log "namespaces, identity and privileges"
assert_ok "$RUNNER" --hostname box1 "$ROOT" /probe
for ns in cgroup ipc mnt pid uts; do
	assert_ne "$(probe_get ns.$ns)" "$(readlink /proc/self/ns/$ns)" "$ns namespace"
done
assert_eq "$(probe_get ns.net)" "$(readlink /proc/self/ns/net)" "net namespace (--net host)"
assert_eq "$(probe_get ns.user)" "$(readlink /proc/self/ns/user)" "user namespace (root)"
assert_eq "$(probe_get pid)" 2 "pid under the built-in init"
assert_eq "$(probe_get hostname)" box1 hostname
assert_eq "$(probe_get status.CapEff)" 00000000a80425fb "effective caps (Docker's default set)"
assert_eq "$(probe_get status.CapPrm)" 00000000a80425fb "permitted caps"
assert_eq "$(probe_get status.CapBnd)" 00000000a80425fb "bounding caps"
assert_eq "$(probe_get status.CapInh)" 0000000000000000 "inheritable caps"
assert_eq "$(probe_get status.CapAmb)" 0000000000000000 "ambient caps"
assert_eq "$(probe_get status.NoNewPrivs)" 1 no_new_privs
assert_eq "$(probe_get status.Seccomp)" 2 "seccomp filter mode"
assert_eq "$(probe_get seccomp.keyctl)" "Operation not permitted" "keyctl (not in the allowlist)"
assert_eq "$(probe_get seccomp.clone3)" "Function not implemented" "clone3 (ENOSYS, as Docker)"
for c in io_uring_setup io_uring_enter io_uring_register; do
	assert_eq "$(probe_get seccomp.$c)" "Operation not permitted" "$c (denied since moby 25)"
done
assert_eq "$(probe_get status.Uid)" "0 0 0 0" uid
assert_eq "$(probe_get status.Groups)" "10" "supplementary groups of root (wheel)"
assert_eq "$(probe_get fds)" "0 1 2" "open fds"
assert_eq "$(probe_get cwd)" / cwd
assert_contains "$OUT" "env: PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
assert_contains "$OUT" "env: HOSTNAME=box1"
assert_contains "$OUT" "env: HOME=/root"
assert_not_contains "$OUT" "VISIBLE" "masked paths"
assert_not_contains "$OUT" "READABLE" "masked paths"
assert_not_contains "$OUT" ": NO" "read-only paths"
assert_contains "$OUT" "masked /proc/keys: empty"
assert_contains "$OUT" "masked /proc/interrupts: empty"
assert_contains "$OUT" "readonly /proc/sys: yes"
assert_contains "$OUT" "mount: /proc proc rw,nosuid,nodev,noexec"
assert_contains "$OUT" "mount: /dev tmpfs rw,nosuid,mode=755"
assert_contains "$OUT" "mount: /dev/pts devpts rw,nosuid,noexec,relatime,gid=5,mode=620,ptmxmode=666"
assert_contains "$OUT" "mount: /dev/shm tmpfs rw,nosuid,nodev,noexec"
assert_contains "$OUT" "mount: /sys sysfs ro,nosuid,nodev,noexec"
assert_contains "$OUT" "mount: /sys/fs/cgroup "
assert_contains "$OUT" "mount: /etc/hosts "
# Mounts must not be visible on the host, nor mount points created outside the rootfs.
assert_not_contains "$(host_mounts)" "$ROOT"

log "--no-init: the command is PID 1"
assert_ok "$RUNNER" --no-init "$ROOT" /probe
assert_eq "$(probe_get pid)" 1 "pid with --no-init"

log "--net none: a new network namespace with loopback up"
assert_ok "$RUNNER" --net none "$ROOT" /bin/sh -c 'readlink /proc/self/ns/net; ip -o link; cat /etc/resolv.conf'
assert_ne "$(printf '%s\n' "$OUT" | head -n 1)" "$(readlink /proc/self/ns/net)" "net namespace"
assert_contains "$OUT" "lo: <LOOPBACK,UP"
assert_not_contains "$(printf '%s\n' "$OUT" | grep -v ' lo:' | grep -c 'link/' || true)" "1"
assert_not_contains "$OUT" "nameserver 127." "resolv.conf"

log "users, environment, working directory"
assert_ok "$RUNNER" -u nobody -e FOO=bar -e HOME=/h -w /wd/dir "$ROOT" /probe
assert_eq "$(probe_get ids)" "uid=65534 gid=65534 euid=65534 egid=65534" "ids of nobody"
assert_eq "$(probe_get status.CapEff)" 0000000000000000 "effective caps of a non-root user"
assert_eq "$(probe_get status.CapPrm)" 0000000000000000 "permitted caps of a non-root user"
assert_eq "$(probe_get status.CapBnd)" 00000000a80425fb "bounding caps of a non-root user"
assert_eq "$(probe_get cwd)" /wd/dir cwd
assert_contains "$OUT" "env: FOO=bar"
assert_contains "$OUT" "env: HOME=/h"
# Created in the container, not in the rootfs (see test_runner_rootfs).
[ ! -e "$ROOT/wd" ] || fail "-w created the working directory in the rootfs"
assert_ok "$RUNNER" -u alice "$ROOT" /probe
assert_eq "$(probe_get status.Groups)" "10" "alice's supplementary groups"
assert_contains "$OUT" "env: HOME=/home/alice"
assert_ok "$RUNNER" -u 1234:wheel "$ROOT" /probe
assert_eq "$(probe_get ids)" "uid=1234 gid=10 euid=1234 egid=10" "numeric user, named group"
assert_fails_with "unable to find user 'mallory'" "$RUNNER" -u mallory "$ROOT" /bin/true
assert_fails_with "group" "$RUNNER" -u root:nosuchgroup "$ROOT" /bin/true

log "exit statuses"
run_rc "$RUNNER" "$ROOT" /bin/true; assert_eq "$RC" 0 "true"
run_rc "$RUNNER" "$ROOT" /bin/sh -c 'exit 3'; assert_eq "$RC" 3 "exit 3"
run_rc "$RUNNER" "$ROOT" /etc/passwd; assert_eq "$RC" 126 "not executable"
assert_contains "$ERR" "cannot execute '/etc/passwd'"
run_rc "$RUNNER" "$ROOT" nosuchcommand; assert_eq "$RC" 127 "not found"
assert_contains "$ERR" "cannot execute 'nosuchcommand': No such file"
run_rc "$RUNNER" "$ROOT" /bin/sh -c 'kill -KILL $$'; assert_eq "$RC" 137 "SIGKILL"
run_rc "$RUNNER" "$ROOT" /bin/sh -c 'kill -TERM $$'; assert_eq "$RC" 143 "SIGTERM"

log "usage errors exit 125 with one line"
run_rc "$RUNNER"; assert_eq "$RC" 125 "no arguments"
run_rc "$RUNNER" --memory lots "$ROOT" /bin/true; assert_eq "$RC" 125 "bad size"
assert_eq "$(printf '%s\n' "$ERR" | wc -l)" 1 "one line of error"
assert_contains "$ERR" "invalid memory size 'lots'"
run_rc "$RUNNER" --net bridge "$ROOT" /bin/true; assert_eq "$RC" 125 "bad net mode"
run_rc "$RUNNER" "$TESTDIR/nonexistent" /bin/true; assert_eq "$RC" 125 "missing rootfs"
assert_contains "$ERR" "cannot open rootfs"
assert_ok "$RUNNER" --help
assert_contains "$OUT" "Exit status:"

log "signals are forwarded by init (SIGTERM -> 143)"
"$RUNNER" "$ROOT" /bin/sleep 30 &
rpid=$!
sleep 0.5
kill -TERM "$rpid"
rc=0; wait "$rpid" || rc=$?
assert_eq "$rc" 143 "SIGTERM forwarded to the command"

log "init reaps orphans: no zombies"
assert_ok "$RUNNER" "$ROOT" /bin/sh -c '/bin/sh -c "/bin/sleep 0.2 & exit 0"; /bin/sleep 1; /probe zombies'
assert_eq "$(probe_get zombies)" 0 zombies

log "SIGKILL of the runner kills the whole container"
"$RUNNER" "$ROOT" /bin/sh -c '/bin/sleep 313 & /bin/sleep 314' &
rpid=$!
for _ in $(seq 50); do pgrep -f 'sleep 314' >/dev/null && break; sleep 0.1; done
pgrep -f 'sleep 313' >/dev/null || fail "container did not start"
kill -KILL "$rpid"
wait "$rpid" 2>/dev/null || true
for _ in $(seq 50); do pgrep -f 'sleep 31[34]' >/dev/null || break; sleep 0.1; done
if pgrep -f 'sleep 31[34]' >/dev/null; then fail "container processes survived the runner"; fi

log "terminal: a pty from the container's devpts"
if command -v script >/dev/null; then
	out=$(script -qec "$RUNNER $ROOT /bin/sh -c 'tty; stty size'" /dev/null </dev/null | tr -d '\r')
	assert_contains "$out" "/dev/pts/0" "tty inside"
fi
log "ok"
