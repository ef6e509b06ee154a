# Helpers for the runner tests (sourced after lib.sh).

RUNNER="$IMGFS_TOP/$BUILD/runner"
PROBE="$IMGFS_TOP/$BUILD/tests/probe/probe"
[ -x "$RUNNER" ] || fail "runner not built: $RUNNER"
[ -x "$PROBE" ] || fail "probe not built: $PROBE"
require_cmd busybox

# make_rootfs DIR: a busybox rootfs with /probe, root and nobody users, a wheel group.
make_rootfs() {
	local d=$1 a
	mkdir -p "$d/bin" "$d/etc" "$d/tmp" "$d/root"
	cp "$(command -v busybox)" "$d/bin/busybox"
	for a in $(busybox --list); do
		[ -e "$d/bin/$a" ] || ln -s busybox "$d/bin/$a"
	done
	cp "$PROBE" "$d/probe"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n' >"$d/etc/passwd"
	printf 'root:x:0:\nwheel:x:10:root,alice\nalice:x:1000:\nnogroup:x:65534:\n' >"$d/etc/group"
}

# probe_get KEY: the value of "KEY: value" in $OUT.
probe_get() {
	printf '%s\n' "$OUT" | sed -n "s|^$1: ||p" | head -n 1
}

# host_mounts: the host's mount points, sorted (to check nothing leaked onto the host);
# without those of other tests that may run at the same time (their own temp dirs and
# imgfs run's /run/imgfs), but with all of ours.
host_mounts() {
	awk -v mine="$TESTDIR" -v other="${TMPDIR:-/tmp}/imgfs-" '
		index($5, mine) == 1 || (index($5, other) != 1 && index($5, "/run/imgfs/") != 1) {
			print $5
		}' /proc/self/mountinfo | sort
}

# run_rc CMD...: runs CMD, sets RC to its exit status and $OUT/$ERR, never fails.
run_rc() {
	RC=0
	_capture "$@" || RC=$?
}
