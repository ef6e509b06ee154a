#!/bin/bash
# runner: --memory, --pids-limit and --cpus through cgroups; the cgroup is removed after.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/runner_lib.sh"
require_root

ROOT="$TESTDIR/rootfs"
make_rootfs "$ROOT"
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
	V2=1
else
	V2=0
	for c in memory cpu pids; do
		[ -d "/sys/fs/cgroup/$c" ] || skip "no cgroup v1 $c controller and no cgroup v2"
	done
fi

cg_path() { # CONTROLLER RUNNER_PID
	if [ "$V2" = 1 ]; then echo "/sys/fs/cgroup/imgfs/$2"; else echo "/sys/fs/cgroup/$1/imgfs/$2"; fi
}

log "--memory 32m: a memory hog is killed (137)"
run_rc "$RUNNER" --memory 32m "$ROOT" /probe hog
assert_eq "$RC" 137 "memory hog exit status"
run_rc "$RUNNER" --no-init --memory 32m "$ROOT" /probe hog
assert_eq "$RC" 137 "memory hog as PID 1"

log "--pids-limit 20 stops a fork loop"
assert_ok "$RUNNER" --pids-limit 20 "$ROOT" /probe forks 100
n=$(probe_get forked)
[ "$n" -lt 20 ] || fail "forked $n processes under --pids-limit 20"
[ "$n" -gt 5 ] || fail "forked only $n processes"
assert_ok "$RUNNER" "$ROOT" /probe forks 100
assert_eq "$(probe_get forked)" 100 "forks without a limit"

log "limits are set in a per-container cgroup, removed afterwards"
"$RUNNER" --memory 64m --cpus 0.5 --pids-limit 50 "$ROOT" /bin/sleep 3 &
rpid=$!
sleep 1
if [ "$V2" = 1 ]; then
	assert_eq "$(cat "$(cg_path memory $rpid)/memory.max")" 67108864 memory.max
	assert_eq "$(cat "$(cg_path cpu $rpid)/cpu.max")" "50000 100000" cpu.max
	assert_eq "$(cat "$(cg_path pids $rpid)/pids.max")" 50 pids.max
else
	assert_eq "$(cat "$(cg_path memory $rpid)/memory.limit_in_bytes")" 67108864 memory.limit
	if [ -e "$(cg_path memory $rpid)/memory.memsw.limit_in_bytes" ]; then
		assert_eq "$(cat "$(cg_path memory $rpid)/memory.memsw.limit_in_bytes")" 67108864 memsw
	fi
	assert_eq "$(cat "$(cg_path cpu $rpid)/cpu.cfs_quota_us")" 50000 cfs_quota
	assert_eq "$(cat "$(cg_path pids $rpid)/pids.max")" 50 pids.max
	# The container's processes are in it.
	[ "$(wc -l <"$(cg_path pids $rpid)/cgroup.procs")" -ge 2 ] || fail "no process in the pids cgroup"
fi
wait "$rpid"
for c in memory cpu pids; do
	[ ! -e "$(cg_path $c $rpid)" ] || fail "cgroup $(cg_path $c $rpid) left behind"
done

log "bad values are usage errors"
run_rc "$RUNNER" --memory 1k "$ROOT" /bin/true; assert_eq "$RC" 125 "tiny memory"
run_rc "$RUNNER" --cpus 0 "$ROOT" /bin/true; assert_eq "$RC" 125 "zero cpus"
run_rc "$RUNNER" --cpus 999 "$ROOT" /bin/true; assert_eq "$RC" 125 "too many cpus"
assert_contains "$ERR" "the range is 0.01 to"
run_rc "$RUNNER" --pids-limit -1 "$ROOT" /bin/true; assert_eq "$RC" 125 "negative pids"
log "ok"
