#!/bin/sh
# make bench: imgfs against skopeo + umoci + runc, archivemount, bwrap, fuse-overlayfs and
# the local disk, side by side in one run. Writes bench/RESULTS.md and bench/cold-start.svg.
#
#   sh bench/run.sh            full run (about 10 minutes; the first run also builds the
#                              Debian images with debootstrap, cached in build/bench-cache)
#   sh bench/run.sh --quick    small images only, few repetitions, no debootstrap (under
#                              2 minutes); writes $BUILD/bench-quick/RESULTS.md instead
#   BENCH_QUICK=1              same as --quick
#
# Environment: BUILD (build dir holding imgfs and runner, default build), IMGFS, RUNNER
# (binaries), BENCH_REPS (repetitions), BENCH_CACHE (image cache), BENCH_OUT (where
# RESULTS.md and the chart go), BENCH_ONLY (the groups to measure, e.g. "lazy"; the
# report still lists every row), BENCH_LINK_RATE and BENCH_LINK_LATENCY (the emulated
# link of the lazy group: 100mbit and 1 ms).
#
# Needs root (mounts, namespaces, dropping the page cache). Every measurement is
# independent: what cannot run is reported as n/a with the reason. Timings are reported,
# never judged: the exit status is non-zero only when the harness itself is broken (an
# alternative tool fails, images cannot be built, the report cannot be written).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail

QUICK=${BENCH_QUICK:-0}
case ${1:-} in
--quick) QUICK=1 ;;
"") ;;
-h | --help)
	sed -n '2,20s/^# \{0,1\}//p' "$0"
	exit 0
	;;
*)
	echo "usage: bench/run.sh [--quick]" >&2
	exit 2
	;;
esac

. "$(dirname "$0")/lib.sh"
cd "$BENCH_TOP"

if [ "$QUICK" = 1 ]; then
	RAW=$BENCH_TOP/$BUILD/bench-quick
	REPORT_DIR=${BENCH_OUT:-$RAW}
	REPS=${BENCH_REPS:-2}
	HF_RUNS=3
else
	RAW=$BENCH_TOP/$BUILD/bench
	REPORT_DIR=${BENCH_OUT:-$BENCH_TOP/bench}
	REPS=${BENCH_REPS:-5}
	HF_RUNS=$((REPS * 2))
fi
DATA=$RAW/data
LOGS=$RAW/logs
WORK=$RAW/work
OUT=$RAW
MLOG=/dev/null
FAILED_GROUPS=()

[ "$(id -u)" -eq 0 ] || die "needs root (FUSE mounts, namespaces, dropping the page cache)"
for c in skopeo umoci runc bwrap archivemount fuse-overlayfs hyperfine jq gnuplot \
	docker-registry curl fusermount3 openssl; do
	command -v "$c" >/dev/null || die "$c not installed (make deps)"
done

cleanup() {
	set +e
	# A measurement runs in a background subshell, which ignores SIGINT: stop it first.
	if [ -n "${MEASURE_PID:-}" ]; then
		kill "$MEASURE_PID" 2>/dev/null
		wait "$MEASURE_PID" 2>/dev/null
	fi
	unmount_under "$WORK"
	stop_bg
	rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

unmount_under "$WORK" 2>/dev/null || true
rm -rf --one-file-system "$DATA" "$LOGS" "$WORK" "$RAW/hyperfine"
mkdir -p "$DATA" "$LOGS" "$WORK" "$REPORT_DIR"
chmod 755 "$WORK"
: >"$RAW/rows.tsv"
START_US=$(now_us)

# ---------------------------------------------------------------------------------------
# The result table: row GROUP LABEL IMGFS_KEY ALT_LABEL ALT_KEY UNIT [GOAL]
# UNIT: time (seconds), tput:BYTES (seconds to move BYTES), bytes.

row() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "${7:-}" >>"$RAW/rows.tsv"
}

# measure GROUP: runs m_GROUP in a subshell with its own directory $WORK/GROUP and log
# $LOGS/GROUP.log. A failure (an alternative or the harness broke: imgfs failures are
# caught inside and become n/a) is recorded and makes the bench exit non-zero at the end.
measure() {
	local g=$1 t0 rc=0
	log "measuring $g"
	t0=$(now_us)
	mkdir -p "$WORK/$g"
	# In the background, not in an `||` list: set -e must stay in force inside.
	(
		MLOG=$LOGS/$g.log
		W=$WORK/$g
		cd "$W"
		"m_$g"
	) >>"$LOGS/$g.log" 2>&1 &
	MEASURE_PID=$!
	wait "$MEASURE_PID" || rc=$?
	MEASURE_PID=""
	unmount_under "$WORK/$g"
	rm -rf --one-file-system "$WORK/$g"
	if [ "$rc" -ne 0 ]; then
		tail -n 1 "$LOGS/$g.log" >"$DATA/_failed_$g"
		FAILED_GROUPS+=("$g")
		log "  $g FAILED (exit $rc): $(cat "$DATA/_failed_$g")"
	fi
	log "  $g took $((($(now_us) - t0) / 1000000)) s"
}

# ---------------------------------------------------------------------------------------
# What of imgfs works today: probed once on the busybox image.

HAVE_PULL="" HAVE_MOUNT="" HAVE_RW="" HAVE_RUNNER="" HAVE_RUN=""

# first_err FILE: the last non-empty line of FILE (an error message), or "no message".
first_err() {
	local l
	l=$(grep -v '^\s*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-160 || true)
	echo "${l:-no message}"
}

probe() {
	local p=$WORK/probe mnt
	mkdir -p "$p/mnt"
	mnt=$p/mnt
	export IMGFS_ROOT=$p/store
	if [ ! -x "$IMGFS" ]; then
		NA_PULL="imgfs not built ($BUILD/imgfs)"
	elif ! "$IMGFS" pull -q "$(ref busybox)" >"$p/err" 2>&1; then
		NA_PULL="imgfs pull failed: $(first_err "$p/err")"
	else
		HAVE_PULL=1
	fi
	NA_MOUNT=${NA_PULL:-}
	if [ -n "$HAVE_PULL" ]; then
		if "$IMGFS" mount --ro "$(ref busybox)" "$mnt" >"$p/err" 2>&1 &&
			[ -x "$mnt/bin/busybox" ]; then
			HAVE_MOUNT=1
		else
			NA_MOUNT="imgfs mount --ro failed: $(first_err "$p/err")"
		fi
		unmount_under "$mnt"
	fi
	private_tree busybox "$p/rootfs"
	if [ ! -x "$RUNNER" ]; then
		NA_RUNNER="runner not built ($BUILD/runner)"
	elif "$RUNNER" "$p/rootfs" /bin/true >"$p/err" 2>&1; then
		HAVE_RUNNER=1
	else
		NA_RUNNER="runner failed: $(first_err "$p/err")"
	fi
	NA_RUN=${NA_PULL:-}
	if [ -n "$HAVE_PULL" ]; then
		if "$IMGFS" run "$(ref busybox)" /bin/true </dev/null >"$p/err" 2>&1; then
			HAVE_RUN=1
		else
			NA_RUN="imgfs run failed: $(first_err "$p/err")"
		fi
	fi
	NA_RW=${NA_PULL:-}
	if [ -n "$HAVE_PULL" ]; then
		if "$IMGFS" mount "$(ref busybox)" "$mnt" >"$p/err" 2>&1 &&
			echo probe >"$mnt/tmp/bench-probe" 2>>"$p/err" &&
			[ "$(cat "$mnt/tmp/bench-probe")" = probe ]; then
			HAVE_RW=1
		else
			NA_RW="writable layer not available: $(first_err "$p/err")"
		fi
		unmount_under "$mnt"
	fi
	unset IMGFS_ROOT
	rm -rf --one-file-system "$p"
	log "imgfs: pull ${HAVE_PULL:-no} mount ${HAVE_MOUNT:-no} writable ${HAVE_RW:-no}" \
		"runner ${HAVE_RUNNER:-no} run ${HAVE_RUN:-no}"
	for v in NA_PULL NA_MOUNT NA_RUNNER NA_RUN NA_RW; do
		[ -z "${!v:-}" ] || log "  $v: ${!v}"
	done
}

# ---------------------------------------------------------------------------------------
# Images of this run

if [ "$QUICK" = 1 ]; then
	COLD_IMG=busybox-rt COLD_CMD=(sh -c 'echo 1') COLD_DESC="\`sh -c 'echo 1'\` (busybox-rt)"
	SMALL_IMG=small5 LARGE_IMG=big64 PULL_IMGS=(big64) WALK_IMG=busybox-rt RSS_IMG=big64
	RSS_AM_IMG=busybox
	STORE_IMGS=(busybox small5 big64) WRITE_MB=64 NFILES=1000 NFILES_DESC=1,000
else
	COLD_IMG=debian COLD_CMD=(python3 -c 'print(1)') COLD_DESC="\`python3 -c 'print(1)'\` (debian)"
	SMALL_IMG=small5 LARGE_IMG=big300 PULL_IMGS=(big300 debian debian-multi) WALK_IMG=debian
	RSS_IMG=big300 RSS_AM_IMG=debian
	STORE_IMGS=(busybox small5 big64 debian debian-multi big300) WRITE_MB=256 NFILES=10000 NFILES_DESC=10,000
fi
READ_IMG=big64 READ_FILE=big/random-1.bin READ_BYTES=$((64 * 1024 * 1024))
# The emulated link of the lazy group (tests/integration/linkproxy.py rates and ms).
LINK_RATE=${BENCH_LINK_RATE:-100mbit} LINK_LATENCY=${BENCH_LINK_LATENCY:-1}
LINK_DESC="a $LINK_RATE link ($LINK_LATENCY ms each way)"

# imgfs_store NAME TAG...: a store $WORK/NAME-store (exported as IMGFS_ROOT) holding the
# given images, pulled untimed. Fails (with the reason on stderr) when imgfs cannot pull.
imgfs_store() {
	local t
	export IMGFS_ROOT=$W/$1-store
	shift
	for t in "$@"; do
		"$IMGFS" pull -q "$(ref "$t")" || return 1
	done
}

# side_failed KEY... : marks imgfs KEYs n/a with the last error in the log.
side_failed() {
	local reason k
	reason="imgfs failed: $({ grep -v '^timed: ' "$MLOG" || true; } | first_err /dev/stdin)"
	for k in "$@"; do na "$k" "$reason"; done
}

# ---------------------------------------------------------------------------------------
# Cold start: empty store (or empty directories), page cache dropped, to the command's exit.

cold_check() {
	[ "$(tr -d '\n' <"$W/out")" = 1 ] || {
		echo "unexpected output: $(head -c 200 "$W/out")"
		return 1
	}
}

# run_phases PREFIX CMD1 -- CMD2 -- CMD3: times three phases; CMD3's stdout goes to $W/out.
# cold_imgfs_once [KEY [LAZY]]: empty store -> imgfs pull + mount + runner, timed as KEY
# (default ${COLD_KEY}_imgfs) with phases KEY_p1..p3; with LAZY=1 the mount starts on its
# own (lazy pull), without the pull first.
cold_imgfs_once() {
	local key=${1:-${COLD_KEY}_imgfs} lazy=${2:-0} m=$W/mnt t0 t1 t2 t3
	unmount_under "$m"
	rm -rf --one-file-system "$W/cold-store"
	mkdir -p "$m"
	export IMGFS_ROOT=$W/cold-store
	drop_caches
	t0=$(now_us)
	if [ "$lazy" = 0 ]; then
		"$IMGFS" pull -q "$(ref "$COLD_IMG")" >>"$MLOG" 2>&1 || return 1
	fi
	t1=$(now_us)
	"$IMGFS" mount $COLD_MOUNT_OPT "$(ref "$COLD_IMG")" "$m" >>"$MLOG" 2>&1 || return 1
	t2=$(now_us)
	"$RUNNER" "$m" "${COLD_CMD[@]}" >"$W/out" 2>>"$MLOG" || return 1
	t3=$(now_us)
	cold_check >>"$MLOG" || return 1
	add_time "$key" "$t0" "$t3"
	add_time "${key}_p1" "$t0" "$t1"
	add_time "${key}_p2" "$t1" "$t2"
	add_time "${key}_p3" "$t2" "$t3"
	"$IMGFS" umount "$m" >>"$MLOG" 2>&1
}

# cold_imgfs_run_once [KEY [OPTION]]: empty store -> imgfs run, timed as KEY (default
# ${COLD_KEY}_imgfs_run); OPTION defaults to --no-lazy, today's path (the whole image
# first), which the lazy rows compare against.
cold_imgfs_run_once() {
	local key=${1:-${COLD_KEY}_imgfs_run} opt=${2:---no-lazy} t0 t1
	rm -rf --one-file-system "$W/run-store"
	export IMGFS_ROOT=$W/run-store
	drop_caches
	t0=$(now_us)
	"$IMGFS" run $opt "$(ref "$COLD_IMG")" "${COLD_CMD[@]}" </dev/null >"$W/out" \
		2>>"$MLOG" || return 1
	t1=$(now_us)
	cold_check >>"$MLOG" || return 1
	add_time "$key" "$t0" "$t1"
}

cold_runc_once() {
	local i=$1 t0 t1 t2 t3
	rm -rf "$W/oci" "$W/bundle"
	drop_caches
	t0=$(now_us)
	skopeo copy -q --src-tls-verify=false "docker://$(ref "$COLD_IMG")" "oci:$W/oci:img" \
		>>"$MLOG" || return 1
	t1=$(now_us)
	umoci unpack --image "$W/oci:img" "$W/bundle" >>"$MLOG" || return 1
	cp "$W/config.json" "$W/bundle/config.json" || return 1
	t2=$(now_us)
	runc run --bundle "$W/bundle" "imgfs-bench-$$-$i" </dev/null >"$W/out" 2>>"$MLOG" || return 1
	t3=$(now_us)
	cold_check || return 1
	add_time "${COLD_KEY}_runc" "$t0" "$t3"
	add_time "${COLD_KEY}_runc_p1" "$t0" "$t1"
	add_time "${COLD_KEY}_runc_p2" "$t1" "$t2"
	add_time "${COLD_KEY}_runc_p3" "$t2" "$t3"
}

cold_am_once() {
	local m=$W/am t0 t1 t2 t3 blob
	unmount_under "$m"
	rm -rf "$W/oci-am"
	mkdir -p "$m"
	drop_caches
	t0=$(now_us)
	skopeo copy -q --src-tls-verify=false "docker://$(ref "$COLD_IMG")" "oci:$W/oci-am:img" >>"$MLOG"
	t1=$(now_us)
	blob=$W/oci-am/blobs/sha256/$(jq -r '.layers[0].digest | ltrimstr("sha256:")' \
		"$W/oci-am/blobs/sha256/$(jq -r '.manifests[0].digest | ltrimstr("sha256:")' "$W/oci-am/index.json")")
	archivemount -o ro,readonly "$blob" "$m" >>"$MLOG" 2>&1
	t2=$(now_us)
	# shellcheck disable=SC2046
	bwrap $(bwrap_args "$m") "${COLD_CMD[@]}" </dev/null >"$W/out" 2>>"$MLOG"
	t3=$(now_us)
	cold_check
	add_time cold_am "$t0" "$t3"
	add_time cold_am_p1 "$t0" "$t1"
	add_time cold_am_p2 "$t1" "$t2"
	add_time cold_am_p3 "$t2" "$t3"
	fusermount -u "$m" 2>/dev/null || umount "$m"
}

# The keys of the cold_*_once functions start with $COLD_KEY (cold, or lazy for the start
# over a throttled link). With COLD_BYTES=1, cold_side also records the bytes the link
# carried for each approach. COLD_AM=0 leaves archivemount out.
COLD_KEY=cold COLD_BYTES=0 COLD_AM=1

# cold_side KEY CMD...: runs CMD (a cold_*_once function); with COLD_BYTES=1 the bytes the
# link carried from the registry meanwhile become a sample of KEY_bytes.
cold_side() {
	local key=$1 b0
	shift
	[ "$COLD_BYTES" = 1 ] || {
		"$@"
		return
	}
	b0=$(link_bytes)
	"$@" || return
	add_sample "${key}_bytes" $(($(link_bytes) - b0))
}

# cold_reps: REPS repetitions of each approach, interleaved. An imgfs failure makes its
# keys n/a; a failure of an alternative breaks the group.
cold_reps() {
	local i ok_imgfs=1 ok_run=1 k=$COLD_KEY
	echo "imgfs mounts with: ${COLD_MOUNT_OPT:-(writable)}"
	runc_config rootfs "${COLD_CMD[@]}" >"$W/config.json"
	[ -n "$HAVE_PULL" ] && [ -n "$HAVE_MOUNT" ] && [ -n "$HAVE_RUNNER" ] || {
		ok_imgfs=0
		na "${k}_imgfs" "${NA_MOUNT:-${NA_RUNNER:-}}"
		na "${k}_imgfs_bytes" "${NA_MOUNT:-${NA_RUNNER:-}}"
	}
	[ -n "$HAVE_RUN" ] || {
		ok_run=0
		na "${k}_imgfs_run" "$NA_RUN"
		na "${k}_imgfs_run_bytes" "$NA_RUN"
	}
	for i in $(seq "$REPS"); do
		if [ "$ok_imgfs" = 1 ] && ! cold_side "${k}_imgfs" cold_imgfs_once; then
			ok_imgfs=0
			side_failed "${k}_imgfs" "${k}_imgfs_bytes"
		fi
		if [ "$ok_run" = 1 ] && ! cold_side "${k}_imgfs_run" cold_imgfs_run_once; then
			ok_run=0
			side_failed "${k}_imgfs_run" "${k}_imgfs_run_bytes"
		fi
		cold_side "${k}_runc" cold_runc_once "$i"
		[ "$COLD_AM" = 0 ] || cold_am_once
	done
}

m_cold() {
	cold_reps
}

# ---------------------------------------------------------------------------------------
# Start over a throttled link: the cold start again (without archivemount), the registry
# reached through tests/integration/linkproxy.py, which emulates one link ($LINK_DESC)
# shared by all connections and counts the bytes that cross it. imgfs pulls the whole
# image before it mounts today; these rows are the baseline of the lazy mount (DESIGN.md,
# "Lazy pull") measured in the same run.

m_lazy() {
	local direct=$REGISTRY
	local REGISTRY=$LINK COLD_KEY=lazy COLD_BYTES=1 COLD_AM=0 i ok=1 ok_run=1
	echo "through the link proxy at $LINK: $LINK_DESC"
	# The image's layer indexes are published straight to the registry (not over the
	# link): every side below starts from an empty store.
	IMGFS_ROOT=$W/push-store "$IMGFS" index push -q "$direct/bench/$COLD_IMG" >>"$MLOG" 2>&1 || {
		ok=0 ok_run=0
		na lazy_imgfs_lazy "imgfs index push failed"
		na lazy_imgfs_lazy_bytes "imgfs index push failed"
		na lazy_imgfs_lazy_run "imgfs index push failed"
		na lazy_imgfs_lazy_run_bytes "imgfs index push failed"
		na lazy_loop_lazy "imgfs index push failed"
		na lazy_loop_full "imgfs index push failed"
	}
	IMGFS_ROOT=$W/push-store "$IMGFS" index push -q "$direct/bench/$READ_IMG" >>"$MLOG" 2>&1 || {
		na lazy_read_imgfs "imgfs index push of $READ_IMG failed"
		na lazy_read_imgfs_ro "imgfs index push of $READ_IMG failed"
	}
	rm -rf --one-file-system "$W/push-store"
	# A cold read of a 64 MiB file through a lazy mount, against the link's own time for
	# the bytes that read fetched.
	if [ ! -e "$DATA/lazy_read_imgfs.na" ]; then
		for i in $(seq "$REPS"); do
			lazy_read_once && lazy_read_once --ro || {
				side_failed lazy_read_imgfs lazy_read_link lazy_read_imgfs_ro
				unmount_under "$W/mnt"
				break
			}
		done
	fi
	# On the loopback registry (no link): the lazy start against today's full start
	# (pull, then mount), interleaved; both find the published indexes, only one uses them.
	if [ "$ok" = 1 ]; then
		for i in $(seq "$REPS"); do
			REGISTRY=$direct COLD_BYTES=0 cold_side lazy_loop_lazy \
				cold_imgfs_once lazy_loop_lazy 1 || {
				side_failed lazy_loop_lazy
				break
			}
			REGISTRY=$direct COLD_BYTES=0 cold_side lazy_loop_full \
				cold_imgfs_once lazy_loop_full 0 || {
				side_failed lazy_loop_full
				break
			}
		done
	fi
	# Today's path (--no-lazy), the lazy start, and the alternative, interleaved.
	for i in $(seq "$REPS"); do
		if [ "$ok" = 1 ] && ! cold_side lazy_imgfs_lazy lazy_imgfs_once; then
			ok=0
			side_failed lazy_imgfs_lazy lazy_imgfs_lazy_bytes
		fi
		if [ "$ok_run" = 1 ] && ! cold_side lazy_imgfs_lazy_run lazy_imgfs_run_once; then
			ok_run=0
			side_failed lazy_imgfs_lazy_run lazy_imgfs_lazy_run_bytes
		fi
	done
	cold_reps
}

# The lazy start: imgfs mount (which finds the published indexes and mounts before any
# layer byte is here) + runner, and imgfs run, from an empty store; the mount's background
# fill goes on until the umount, and its bytes count.
lazy_imgfs_once() { cold_imgfs_once lazy_imgfs_lazy 1; }
lazy_imgfs_run_once() { cold_imgfs_run_once lazy_imgfs_lazy_run --; }

# lazy_read_once [--ro]: an empty store, a lazy mount of $READ_IMG over the link (the
# default writable mount, or --ro; no fill: the read alone), $READ_FILE read cold (timed:
# lazy_read_imgfs, lazy_read_imgfs_ro); after the writable one, the same number of bytes
# of the layer blob in one Range request over the same link (lazy_read_link).
lazy_read_once() {
	local m=$W/mnt t0 t1 b0 b1 digest key=lazy_read_imgfs${1:+_ro}
	unmount_under "$m"
	rm -rf --one-file-system "$W/lazyread-store"
	mkdir -p "$m"
	IMGFS_ROOT=$W/lazyread-store IMGFS_LAZY_FILL_DELAY_MS=3600000 \
		"$IMGFS" mount ${1:-} "$(ref "$READ_IMG")" "$m" >>"$MLOG" 2>&1 || return 1
	drop_caches
	b0=$(link_bytes)
	t0=$(now_us)
	read_file "$m/$READ_FILE" || return 1
	t1=$(now_us)
	b1=$(link_bytes)
	IMGFS_ROOT=$W/lazyread-store "$IMGFS" umount "$m" >>"$MLOG" 2>&1
	add_time "$key" "$t0" "$t1"
	add_sample "${key}_bytes" $((b1 - b0))
	[ -z "${1:-}" ] || return 0
	digest=$(layer_digests "$READ_IMG" | tail -n 1)
	t0=$(now_us)
	curl -sf -r "0-$((b1 - b0 - 1))" -o /dev/null "http://$(ref "$READ_IMG" | cut -d/ -f1)/v2/bench/$READ_IMG/blobs/$digest" \
		>>"$MLOG" 2>&1 || return 1
	t1=$(now_us)
	add_time lazy_read_link "$t0" "$t1"
}

# ---------------------------------------------------------------------------------------
# The additional layer store (imgfs layer-store) under podman: `podman pull` + `podman run
# python3 -c 'print(1)'` of the Debian image, podman with the store against plain podman,
# each from empty storage (its own --root) and an empty imgfs store: over the throttled
# link with the image's indexes published (lazy), and on the loopback registry for a copy
# of the image without indexes (one-pass pull into imgfs's store). Then the disk both
# sides use after the pull (podman's storage + imgfs's store) against the compressed
# layers.

ALS_RUN_OPTS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)

# als_podman ROOT STORE ARGS...: podman with its storage under ROOT (its run root in
# $ALS_RUNROOT: podman refuses one longer than 50 characters), with the layer store at
# STORE (none when STORE is empty).
als_podman() {
	local root=$1 store=$2
	shift 2
	podman --root "$root/root" --runroot "$ALS_RUNROOT" --storage-driver overlay \
		${store:+--storage-opt "overlay.additionallayerstore=$store:ref"} "$@"
}

# als_once KEY REF WITH_STORE: empty podman storage (and imgfs store) -> podman pull +
# podman run, timed as KEY (the pull as KEY_p1, the run as KEY_p2); the disk used
# afterwards becomes a sample of KEY_disk.
als_once() {
	local key=$1 image=$2 with=$3 root=$W/podman store="" t0 tp t1 rc=0 disk
	als_clean
	mkdir -p "$root"
	if [ "$with" = 1 ]; then
		store=$W/als
		export IMGFS_ROOT=$W/als-store
		"$IMGFS" layer-store "$store" >>"$MLOG" 2>&1 || return 1
	fi
	drop_caches
	t0=$(now_us)
	als_podman "$root" "$store" pull -q --tls-verify=false "$image" >>"$MLOG" 2>&1 || rc=1
	tp=$(now_us)
	[ "$rc" = 1 ] || als_podman "$root" "$store" run --rm "${ALS_RUN_OPTS[@]}" "$image" \
		"${COLD_CMD[@]}" </dev/null >"$W/out" 2>>"$MLOG" || rc=1
	t1=$(now_us)
	[ "$rc" = 0 ] && cold_check >>"$MLOG" || rc=1
	if [ "$rc" = 0 ]; then
		add_time "$key" "$t0" "$t1"
		add_time "${key}_p1" "$t0" "$tp"
		add_time "${key}_p2" "$tp" "$t1"
		disk=$(du_bytes "$root")
		[ "$with" = 0 ] || disk=$((disk + $(du_bytes "$W/als-store")))
		add_sample "${key}_disk" "$disk"
		if [ "$with" = 1 ]; then
			# Every layer came from the store: its overlay dir says so.
			echo "layers from the store: $(find "$root/root/overlay" -maxdepth 2 \
				-name additionallayer | wc -l)"
		fi
	fi
	als_clean
	return "$rc"
}

als_clean() {
	local root=$W/podman
	[ -d "$root/root" ] && als_podman "$root" "" rmi -a -f >>"$MLOG" 2>&1
	unmount_under "$root"
	unmount_under "$ALS_RUNROOT"
	rm -rf --one-file-system "$ALS_RUNROOT"
	[ -d "$W/als" ] && is_mounted "$W/als" && "$IMGFS" umount "$W/als" >>"$MLOG" 2>&1
	unmount_under "$W/als"
	rm -rf --one-file-system "$root" "$W/als-store"
	return 0
}

# als_sides KEY_PREFIX REF: REPS repetitions of podman with the store and plain podman,
# interleaved; with COLD_BYTES=1 the bytes over the link count too.
als_sides() {
	local k=$1 image=$2 i ok=1
	for i in $(seq "$REPS"); do
		if [ "$ok" = 1 ] && ! cold_side "${k}_imgfs" als_once "${k}_imgfs" "$image" 1; then
			ok=0
			side_failed "${k}_imgfs" "${k}_imgfs_bytes" "${k}_imgfs_disk"
		fi
		cold_side "${k}_podman" als_once "${k}_podman" "$image" 0
	done
}

m_als() {
	local direct=$REGISTRY noidx
	command -v podman >/dev/null || {
		for k in als_link_imgfs als_link_imgfs_bytes als_loop_imgfs als_loop_imgfs_disk; do
			na "$k" "podman not installed"
		done
		return 0
	}
	ALS_RUNROOT=/tmp/imgfs-bench-als-$$
	echo '{"auths": {}}' >"$W/auth.json"
	export REGISTRY_AUTH_FILE=$W/auth.json
	# A copy of the image in a repository without published indexes.
	noidx="$direct/bench-noidx/$COLD_IMG"
	skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
		"docker://$(ref "$COLD_IMG")" "docker://$noidx" >>"$MLOG" 2>&1
	IMGFS_ROOT=$W/push-store "$IMGFS" index push -q "$(ref "$COLD_IMG")" >>"$MLOG" 2>&1 ||
		echo "imgfs index push failed: the link rows measure a one-pass pull"
	rm -rf --one-file-system "$W/push-store"
	echo "over the link proxy at $LINK: $LINK_DESC"
	COLD_BYTES=1 als_sides als_link "$LINK/bench/$COLD_IMG"
	echo "loopback, no index: $noidx"
	COLD_BYTES=0 als_sides als_loop "$noidx"
	add_sample als_compressed "$(compressed_bytes "$COLD_IMG")"
}

# ---------------------------------------------------------------------------------------
# Warm start: image present (pulled / extracted), page cache warm: mount + the cold-start
# command + umount, on the default (writable) mount as `imgfs run` does, and on --ro; the
# first start of a pulled image (its decoded-data cache emptied first) and the second
# (hyperfine's warmup run filled the cache); against runc on an extracted bundle and bwrap
# on an extracted tree.

m_warm() {
	local tree=$W/rootfs cmds=() cmd rm_cache
	private_tree "$WALK_IMG" "$tree"
	mkdir -p "$W/bundle" "$W/mnt"
	runc_config "$tree" "${COLD_CMD[@]}" >"$W/bundle/config.json"
	cmd=$(printf '%q ' "${COLD_CMD[@]}")
	if [ -n "$HAVE_MOUNT" ] && [ -n "$HAVE_RUNNER" ] && imgfs_store warm "$WALK_IMG"; then
		rm_cache="rm -rf $IMGFS_ROOT/cache"
		if [ -n "$HAVE_RW" ]; then
			cmds+=("warm_imgfs=$IMGFS mount $(ref "$WALK_IMG") $W/mnt && { $RUNNER $W/mnt $cmd >/dev/null; r=\$?; $IMGFS umount $W/mnt; exit \$r; }")
			cmds+=("warm_imgfs_first=$rm_cache; $IMGFS mount $(ref "$WALK_IMG") $W/mnt && { $RUNNER $W/mnt $cmd >/dev/null; r=\$?; $IMGFS umount $W/mnt; exit \$r; }")
		else
			na warm_imgfs "$NA_RW"
			na warm_imgfs_first "$NA_RW"
		fi
		cmds+=("warm_imgfs_ro=$IMGFS mount --ro $(ref "$WALK_IMG") $W/mnt && { $RUNNER $W/mnt $cmd >/dev/null; r=\$?; $IMGFS umount $W/mnt; exit \$r; }")
	elif [ -z "$HAVE_MOUNT" ] || [ -z "$HAVE_RUNNER" ]; then
		for k in warm_imgfs warm_imgfs_first warm_imgfs_ro; do
			na $k "${NA_MOUNT:-${NA_RUNNER:-}}"
		done
	else
		side_failed warm_imgfs warm_imgfs_first warm_imgfs_ro
	fi
	cmds+=("warm_runc=runc run --bundle $W/bundle imgfs-bench-warm-$$ </dev/null >/dev/null")
	cmds+=("warm_bwrap=bwrap $(bwrap_args "$tree") $cmd >/dev/null")
	bench_sides warm "$HF_RUNS" "${cmds[@]}"
}

# ---------------------------------------------------------------------------------------
# Mount time: command start to mount usable (a file under it stat'ed), page cache warm;
# against umoci unpack of the same image from a local OCI layout.

m_mount() {
	local i tag size mode k ok=1 m=$W/mnt reps
	mkdir -p "$m"
	if [ -z "$HAVE_MOUNT" ]; then
		ok=0
		for k in mount_small mount_large mount_small_ro mount_large_ro; do
			na $k "$NA_MOUNT"
		done
	elif ! imgfs_store mount "$SMALL_IMG" "$LARGE_IMG"; then
		ok=0
		side_failed mount_small mount_large mount_small_ro mount_large_ro
	fi
	for size in small large; do
		[ $size = small ] && tag=$SMALL_IMG || tag=$LARGE_IMG
		reps=$REPS
		[ $size = small ] || [ "$QUICK" = 1 ] || reps=3
		for i in $(seq "$reps"); do
			# The default (writable) mount, then --ro: key mount_SIZE, mount_SIZE_ro.
			for mode in "" _ro; do
				[ "$ok" = 1 ] || break
				if [ -z "$mode" ] && [ -z "$HAVE_RW" ]; then
					na "mount_$size" "$NA_RW"
					continue
				fi
				if timed "mount_$size$mode" sh -c "\"\$1\" mount \$4 \"\$2\" \"\$3\" && stat \"\$3/bin/sh\" >/dev/null" \
					sh "$IMGFS" "$(ref "$tag")" "$m" "${mode:+--ro}"; then
					"$IMGFS" umount "$m" >>"$MLOG" 2>&1
				else
					ok=0
					side_failed "mount_$size" "mount_${size}_ro"
					unmount_under "$m"
				fi
			done
			rm -rf "$W/unpack"
			timed "unpack_$size" umoci unpack --image "$LAYOUT:$tag" "$W/unpack"
			rm -rf "$W/unpack"
		done
	done
}

# ---------------------------------------------------------------------------------------
# Pull: registry → store, against skopeo copy docker:// → oci: (page cache warm).

m_pull() {
	local i tag key ok
	for tag in "${PULL_IMGS[@]}"; do
		key=${tag//-/_}
		ok=1
		[ -n "$HAVE_PULL" ] || {
			ok=0
			na "pull_$key" "$NA_PULL"
		}
		for i in $(seq "$REPS"); do
			if [ "$ok" = 1 ]; then
				rm -rf --one-file-system "$W/store"
				export IMGFS_ROOT=$W/store
				timed "pull_$key" "$IMGFS" pull -q "$(ref "$tag")" || {
					ok=0
					side_failed "pull_$key"
				}
			fi
			rm -rf "$W/oci"
			timed "skopeo_$key" skopeo copy -q --src-tls-verify=false \
				"docker://$(ref "$tag")" "oci:$W/oci:img"
		done
		rm -rf --one-file-system "$W/store" "$W/oci"
	done
}

# ---------------------------------------------------------------------------------------
# Read throughput of a 64 MiB file: cold (page cache dropped, fresh mount) and warm
# (read again), imgfs against the extracted file on local disk and archivemount.

read_file() {
	dd if="$1" of=/dev/null bs=1M 2>>"$MLOG"
}

m_read() {
	local i mode ok=1 tree blob m=$W/mnt a=$W/am
	tree=$(unpack_tree "$READ_IMG")
	blob=$(layer_blob "$(layer_digests "$READ_IMG" | tail -n 1)")
	mkdir -p "$m" "$a"
	if [ -z "$HAVE_MOUNT" ]; then
		ok=0
		for k in read_cold_imgfs read_warm_imgfs read_cold_imgfs_ro read_warm_imgfs_ro; do
			na $k "$NA_MOUNT"
		done
	elif ! imgfs_store read "$READ_IMG"; then
		ok=0
		side_failed read_cold_imgfs read_warm_imgfs read_cold_imgfs_ro read_warm_imgfs_ro
	fi
	for i in $(seq "$REPS"); do
		# The default (writable) mount, then --ro: keys read_*_imgfs, read_*_imgfs_ro.
		for mode in "" _ro; do
			[ "$ok" = 1 ] || break
			if [ -z "$mode" ] && [ -z "$HAVE_RW" ]; then
				na read_cold_imgfs "$NA_RW"
				na read_warm_imgfs "$NA_RW"
				continue
			fi
			unmount_under "$m"
			rm -rf "$IMGFS_ROOT/cache" # a fresh mount of a pulled image: nothing decoded
			drop_caches
			if "$IMGFS" mount ${mode:+--ro} "$(ref "$READ_IMG")" "$m" >>"$MLOG" 2>&1 &&
				timed "read_cold_imgfs$mode" read_file "$m/$READ_FILE" &&
				timed "read_warm_imgfs$mode" read_file "$m/$READ_FILE"; then
				"$IMGFS" umount "$m" >>"$MLOG" 2>&1
			else
				ok=0
				side_failed read_cold_imgfs read_warm_imgfs read_cold_imgfs_ro read_warm_imgfs_ro
				unmount_under "$m"
			fi
		done
		drop_caches
		timed read_cold_local read_file "$tree/rootfs/$READ_FILE"
		timed read_warm_local read_file "$tree/rootfs/$READ_FILE"
		drop_caches
		archivemount -o ro,readonly "$blob" "$a" >>"$MLOG" 2>&1
		timed read_cold_am read_file "$a/$READ_FILE"
		timed read_warm_am read_file "$a/$READ_FILE"
		fusermount -u "$a" 2>/dev/null || umount "$a"
	done
}

# ---------------------------------------------------------------------------------------
# Metadata walk over the whole image, warm: find and ls -lR on the default (writable)
# mount and on --ro, against local disk and fuse-overlayfs (lower = extracted tree).

m_walk() {
	local tree m=$W/mnt r=$W/mnt-ro o=$W/fov k cmds=()
	tree=$(unpack_tree "$WALK_IMG")
	mkdir -p "$m" "$r" "$o" "$W/fov-upper" "$W/fov-work"
	if [ -z "$HAVE_MOUNT" ]; then
		for k in walk_find_imgfs walk_ls_imgfs walk_find_imgfs_ro walk_ls_imgfs_ro; do
			na $k "$NA_MOUNT"
		done
	elif imgfs_store walk "$WALK_IMG"; then
		if [ -z "$HAVE_RW" ]; then
			na walk_find_imgfs "$NA_RW"
			na walk_ls_imgfs "$NA_RW"
		elif "$IMGFS" mount "$(ref "$WALK_IMG")" "$m"; then
			cmds+=("walk_find_imgfs=find $m >/dev/null" "walk_ls_imgfs=ls -lR $m >/dev/null")
		else
			side_failed walk_find_imgfs walk_ls_imgfs
		fi
		if "$IMGFS" mount --ro "$(ref "$WALK_IMG")" "$r"; then
			cmds+=("walk_find_imgfs_ro=find $r >/dev/null" "walk_ls_imgfs_ro=ls -lR $r >/dev/null")
		else
			side_failed walk_find_imgfs_ro walk_ls_imgfs_ro
		fi
	else
		side_failed walk_find_imgfs walk_ls_imgfs walk_find_imgfs_ro walk_ls_imgfs_ro
	fi
	fuse-overlayfs -o "lowerdir=$tree/rootfs,upperdir=$W/fov-upper,workdir=$W/fov-work" "$o"
	cmds+=("walk_find_local=find $tree/rootfs >/dev/null"
		"walk_ls_local=ls -lR $tree/rootfs >/dev/null"
		"walk_find_fov=find $o >/dev/null"
		"walk_ls_fov=ls -lR $o >/dev/null")
	bench_sides walk "$HF_RUNS" "${cmds[@]}"
	unmount_under "$m"
	unmount_under "$r"
	fusermount3 -u "$o" 2>/dev/null || umount "$o"
}

# ---------------------------------------------------------------------------------------
# Writable layer: copy-up of a 64 MiB lower file, sequential write, creating and deleting
# 10,000 small files (1,000 in quick mode); imgfs against local disk and fuse-overlayfs (lower = extracted tree).

# rw_ops SIDE DIR FILE: the four operations in DIR (a writable root), FILE a 64 MiB file in
# it that is not yet copied up (for local disk: the source of a cp).
rw_copyup() {
	case $1 in
	local) timed copyup_local cp "$3" "$2/copy.bin" ;;
	*) timed "copyup_$1" dd if=/dev/zero of="$3" bs=1 count=1 conv=notrunc ;;
	esac
}

rw_rest() {
	local side=$1 d=$2
	timed "write_$side" dd if=/dev/zero of="$d/seq.bin" bs=1M count="$WRITE_MB" conv=fsync || return 1
	mkdir -p "$d/many" || return 1
	timed "create_$side" "$PYTHON" -c 'import sys
d = sys.argv[1]
for i in range(int(sys.argv[2])):
    with open("%s/f%05d" % (d, i), "w") as f:
        f.write("x")' "$d/many" "$NFILES" || return 1
	timed "delete_$side" rm -rf "$d/many"
}

m_rw() {
	local i tree ok=1 m=$W/mnt o=$W/fov k
	tree=$(unpack_tree "$READ_IMG")
	mkdir -p "$m" "$o"
	if [ -z "$HAVE_RW" ]; then
		ok=0
		for k in copyup write create delete; do na "${k}_imgfs" "$NA_RW"; done
	elif ! imgfs_store rw "$READ_IMG"; then
		ok=0
		side_failed copyup_imgfs write_imgfs create_imgfs delete_imgfs
	fi
	for i in $(seq "$REPS"); do
		if [ "$ok" = 1 ]; then
			unmount_under "$m"
			if ! { "$IMGFS" mount "$(ref "$READ_IMG")" "$m" >>"$MLOG" 2>&1 &&
				rw_copyup imgfs "$m/tmp" "$m/$READ_FILE" && rw_rest imgfs "$m/tmp"; }; then
				ok=0
				side_failed copyup_imgfs write_imgfs create_imgfs delete_imgfs
			fi
			unmount_under "$m"
		fi
		rm -rf "$W/local"
		mkdir -p "$W/local"
		rw_copyup local "$W/local" "$tree/rootfs/$READ_FILE"
		rw_rest local "$W/local"
		rm -rf "$W/local" "$W/upper" "$W/work"
		mkdir -p "$W/upper" "$W/work"
		fuse-overlayfs -o "lowerdir=$tree/rootfs,upperdir=$W/upper,workdir=$W/work" "$o"
		rw_copyup fov "$o/tmp" "$o/$READ_FILE"
		rw_rest fov "$o/tmp"
		fusermount3 -u "$o"
	done
}

# ---------------------------------------------------------------------------------------
# Runner alone on an extracted tree, against bwrap and runc; imgfs run of a pulled image.

m_runner() {
	local tree=$W/rootfs cmds=()
	private_tree "$WALK_IMG" "$tree"
	mkdir -p "$W/bundle"
	runc_config "$tree" /bin/true >"$W/bundle/config.json"
	if [ -n "$HAVE_RUNNER" ]; then
		cmds+=("runner_true=$RUNNER $tree /bin/true")
	else
		na runner_true "$NA_RUNNER"
	fi
	if [ -z "$HAVE_RUN" ]; then
		na run_true "$NA_RUN"
	elif imgfs_store run "$WALK_IMG"; then
		cmds+=("run_true=$IMGFS run $(ref "$WALK_IMG") /bin/true </dev/null")
	else
		side_failed run_true
	fi
	cmds+=("bwrap_true=bwrap $(bwrap_args "$tree") /bin/true")
	cmds+=("runc_true=runc run --bundle $W/bundle imgfs-bench-true-$$ </dev/null")
	bench_sides runner "$HF_RUNS" "${cmds[@]}"
}

# ---------------------------------------------------------------------------------------
# Daemon memory (VmHWM, the pid from the mount's state file): after reading every file of
# the large image once; and after a metadata walk (find -ls) of the one-layer image, against
# archivemount, which keeps its whole index in memory. (Reading every file through
# archivemount takes minutes: it inflates each file's layer from the start.)

read_all() {
	find "$1" -type f -exec cat {} + >/dev/null
}

vmhwm_bytes() {
	echo $(($(awk '/^VmHWM:/ { print $2 }' "/proc/$1/status") * 1024))
}

# rss_imgfs KEY TAG WALK [--ro]: mounts TAG (the default writable mount, or --ro), runs
# WALK on it, records the serving process's VmHWM. The decoded-data cache is emptied first:
# each mount decodes what it reads, or the second would only copy what the first decoded.
rss_imgfs() {
	local m=$W/mnt pid
	if imgfs_store "rss-$2" "$2" && rm -rf "$IMGFS_ROOT/cache" &&
		"$IMGFS" mount ${4:-} "$(ref "$2")" "$m" >>"$MLOG" 2>&1 &&
		pid=$(mount_pid "$m") && "$3" "$m" 2>>"$MLOG"; then
		add_sample "$1" "$(vmhwm_bytes "$pid")"
	else
		side_failed "$1"
	fi
	unmount_under "$m"
}

walk_meta() {
	find "$1" -ls >/dev/null
}

m_rss() {
	local a=$W/am pid blob
	mkdir -p "$W/mnt" "$a"
	if [ -z "$HAVE_MOUNT" ]; then
		for k in rss_imgfs rss_imgfs_meta rss_imgfs_ro rss_imgfs_meta_ro; do
			na $k "$NA_MOUNT"
		done
	else
		# The default (writable) mount, then --ro.
		if [ -n "$HAVE_RW" ]; then
			rss_imgfs rss_imgfs "$RSS_IMG" read_all
			rss_imgfs rss_imgfs_meta "$RSS_AM_IMG" walk_meta
		else
			na rss_imgfs "$NA_RW"
			na rss_imgfs_meta "$NA_RW"
		fi
		rss_imgfs rss_imgfs_ro "$RSS_IMG" read_all --ro
		rss_imgfs rss_imgfs_meta_ro "$RSS_AM_IMG" walk_meta --ro
	fi
	blob=$(layer_blob "$(layer_digests "$RSS_AM_IMG" | head -n 1)")
	archivemount -o ro,readonly "$blob" "$a"
	pid=$(pgrep -n -x archivemount)
	walk_meta "$a"
	add_sample rss_am_meta "$(vmhwm_bytes "$pid")"
	fusermount -u "$a" 2>/dev/null || umount "$a"
}

# ---------------------------------------------------------------------------------------
# Store size per image: imgfs store (blobs + indexes + tree) against the compressed layers
# and the extracted tree (du).

# The image whose small files are read cold (one of STORE_IMGS).
COLDREAD_IMG=debian
[ "$QUICK" != 1 ] || COLDREAD_IMG=small5

# index_sizes TAG KEY: the layer indexes (idx/sha256/HEX) of TAG's gzip layers in
# $IMGFS_ROOT against those layers' compressed size. zstd layers (whose seekable copy is
# another matter) and plain tar layers are left out.
index_sizes() {
	local d blob idx=0 gz=0
	for d in $(layer_digests "$1"); do
		blob=$(layer_blob "$d")
		[ "$(head -c 2 "$blob" | od -An -tx1 | tr -d ' ')" = 1f8b ] || continue
		idx=$((idx + $(stat -c %s "$IMGFS_ROOT/idx/sha256/${d#sha256:}")))
		gz=$((gz + $(stat -c %s "$blob")))
	done
	if [ "$gz" -eq 0 ]; then
		na "index_$2" "no gzip layer"
		return
	fi
	add_sample "index_$2" "$idx"
	add_sample "gzlayers_$2" "$gz"
}

# cold_reads TAG TREE: open + read + close of small files (1 B to 16 KiB) of TAG, each
# from a fresh mount so that its span is not in the daemon's cache; the blob is in the
# page cache (just pulled), the lookups are done before the clock starts. Each file on
# the default (writable) mount (key coldread), then on --ro (coldread_ro); the
# decoded-data cache is emptied before each mount, or the second would read the first's.
cold_reads() {
	local m=$W/cold-mnt f n mode key
	mkdir -p "$m"
	n=$(find "$2/rootfs" -type f -size +0 -size -16k | wc -l)
	[ "$n" -gt 0 ] || {
		na coldread "no small file in $1"
		return
	}
	find "$2/rootfs" -type f -size +0 -size -16k -printf '%P\n' | sort |
		awk -v n="$n" -v k=$((2 * REPS + 1)) 'NR % int(n / k + 1) == 0' >"$W/cold-files"
	if [ -z "$HAVE_RW" ]; then
		na coldread "$NA_RW"
	fi
	while read -r f; do
		for mode in "" --ro; do
			[ -n "$mode" ] || [ -n "$HAVE_RW" ] || continue
			key=coldread${mode:+_ro}
			rm -rf "$IMGFS_ROOT/cache"
			if ! "$IMGFS" mount $mode "$(ref "$1")" "$m" >>"$MLOG" 2>&1; then
				side_failed coldread coldread_ro
				return
			fi
			python3 -c '
import os, sys, time
p = sys.argv[1]
os.stat(p)
t = time.perf_counter()
fd = os.open(p, os.O_RDONLY)
while os.read(fd, 1 << 16):
    pass
os.close(fd)
print("%.6f" % (time.perf_counter() - t))' "$m/$f" >>"$DATA/$key.txt" 2>>"$MLOG" ||
				side_failed "$key"
			"$IMGFS" umount "$m" >>"$MLOG" 2>&1 || unmount_under "$m"
		done
	done <"$W/cold-files"
}

m_store() {
	local tag key tree
	for tag in "${STORE_IMGS[@]}"; do
		key=${tag//-/_}
		add_sample "compressed_$key" "$(compressed_bytes "$tag")"
		tree=$(unpack_tree "$tag")
		add_sample "extracted_$key" "$(du -s --block-size=1 "$tree/rootfs" | cut -f1)"
		if [ -z "$HAVE_PULL" ]; then
			na "store_$key" "$NA_PULL"
			na "index_$key" "$NA_PULL"
		elif imgfs_store "store-$key" "$tag"; then
			add_sample "store_$key" "$(du -s --block-size=1 --exclude=tmp --exclude=mounts \
				"$IMGFS_ROOT" | cut -f1)"
			index_sizes "$tag" "$key"
			if [ "$tag" = "$COLDREAD_IMG" ]; then
				if [ -n "$HAVE_MOUNT" ]; then
					cold_reads "$tag" "$tree"
				else
					na coldread "$NA_MOUNT"
					na coldread_ro "$NA_MOUNT"
				fi
			fi
			rm -rf --one-file-system "$IMGFS_ROOT"
		else
			side_failed "store_$key" "index_$key"
		fi
	done
}

# ---------------------------------------------------------------------------------------
# The table

desc_size() {
	awk -v b="$(compressed_bytes "$1")" 'BEGIN { printf "%.0f MB", b / 1e6 }'
}

declare_rows() {
	local alt_c="skopeo copy + umoci unpack + runc run" alt_a="skopeo copy + archivemount + bwrap"
	local big="$LARGE_IMG, $(desc_size "$LARGE_IMG") compressed"
	local t n
	local how="pull + mount${COLD_MOUNT_OPT:+ $COLD_MOUNT_OPT} + runner"
	# The goal is for the realistic image; quick mode's busybox is all fixed costs.
	row cold "Cold start → $COLD_DESC: $how" cold_imgfs "$alt_c" cold_runc time \
		"$([ "$QUICK" = 1 ] || echo "≤ 0.5×")"
	row cold "Cold start → $COLD_DESC: $how" cold_imgfs "$alt_a" cold_am time
	row cold "Cold start → $COLD_DESC: imgfs run" cold_imgfs_run "$alt_c" cold_runc time
	row lazy "Start over $LINK_DESC → $COLD_DESC: $how (pulls first)" lazy_imgfs \
		"$alt_c, same link" lazy_runc time
	row lazy "Start over $LINK_DESC → $COLD_DESC: imgfs run (pulls first)" lazy_imgfs_run \
		"$alt_c, same link" lazy_runc time
	row lazy "Bytes fetched from the registry for that start: $how" lazy_imgfs_bytes \
		"$alt_c" lazy_runc_bytes bytes
	row lazy "Bytes fetched from the registry for that start: imgfs run" lazy_imgfs_run_bytes \
		"$alt_c" lazy_runc_bytes bytes
	local lz="$([ "$QUICK" = 1 ] || echo y)"
	row lazy "Start over $LINK_DESC → $COLD_DESC: lazy mount + runner" lazy_imgfs_lazy \
		"$how over the same link (pulls first)" lazy_imgfs time "${lz:+≤ 0.3×}"
	row lazy "Start over $LINK_DESC → $COLD_DESC: lazy mount + runner" lazy_imgfs_lazy \
		"$alt_c, same link" lazy_runc time
	row lazy "Start over $LINK_DESC → $COLD_DESC: imgfs run, lazy" lazy_imgfs_lazy_run \
		"imgfs run --no-lazy, same link" lazy_imgfs_run time "${lz:+≤ 0.3×}"
	row lazy "Bytes fetched for that start (fill included): lazy mount + runner" \
		lazy_imgfs_lazy_bytes "$how (the whole image)" lazy_imgfs_bytes bytes "${lz:+≤ 0.15×}"
	row lazy "Bytes fetched for that start (fill included): imgfs run, lazy" \
		lazy_imgfs_lazy_run_bytes "imgfs run --no-lazy" lazy_imgfs_run_bytes bytes \
		"${lz:+≤ 0.15×}"
	row lazy "Start on the loopback registry (no link) → $COLD_DESC: lazy mount + runner" \
		lazy_loop_lazy "$how, the same registry (pulls first)" lazy_loop_full time \
		"${lz:+≤ 1.0×}"
	row lazy "Read 64 MiB file cold through a lazy mount over $LINK_DESC" lazy_read_imgfs \
		"the link alone, the same bytes in one Range request" lazy_read_link time "≤ 1.3×"
	row lazy "Read 64 MiB file cold through a lazy mount over $LINK_DESC" lazy_read_imgfs \
		"mount --ro" lazy_read_imgfs_ro time
	local wcmd="\`${COLD_CMD[*]}\`"
	row warm "Warm start ($WALK_IMG, pulled): mount + runner $wcmd + umount" warm_imgfs \
		"runc run, extracted bundle" warm_runc time "≤ 1.0×"
	row warm "Warm start ($WALK_IMG, pulled): mount + runner $wcmd + umount" warm_imgfs \
		"bwrap, extracted tree" warm_bwrap time "$([ "$QUICK" = 1 ] || echo "≤ 1.5×")"
	row warm "Warm start ($WALK_IMG, pulled): mount + runner $wcmd + umount" warm_imgfs \
		"the same on mount --ro" warm_imgfs_ro time
	row warm "Second start: the warm start, with what an earlier mount decoded in the decoded-data cache" \
		warm_imgfs "first start of the pulled image (cache empty)" warm_imgfs_first time
	row warm "First start of a pulled image (decoded-data cache empty): mount + runner $wcmd + umount" \
		warm_imgfs_first "runc run, extracted bundle" warm_runc time
	row mount "Mount time, $SMALL_IMG ($(desc_size "$SMALL_IMG") compressed), to first stat" \
		mount_small "umoci unpack" unpack_small time "< 20 ms"
	row mount "Mount time, $SMALL_IMG ($(desc_size "$SMALL_IMG") compressed), to first stat" \
		mount_small "mount --ro" mount_small_ro time
	row mount "Mount time, $big, to first stat" mount_large "umoci unpack" unpack_large time "< 20 ms"
	row mount "Mount time, $big, to first stat" mount_large "mount --ro" mount_large_ro time
	for t in "${PULL_IMGS[@]}"; do
		n=$(layer_digests "$t" | wc -l)
		row pull "Pull $t ($(desc_size "$t") compressed, $n layer$([ "$n" -eq 1 ] || echo s))" \
			"pull_${t//-/_}" "skopeo copy docker:// → oci:" "skopeo_${t//-/_}" time "≤ 1.0×"
	done
	row read "Read 64 MiB file, cold (caches dropped, fresh mount)" read_cold_imgfs \
		"local disk (extracted)" read_cold_local "tput:$READ_BYTES"
	row read "Read 64 MiB file, cold (caches dropped, fresh mount)" read_cold_imgfs \
		"archivemount" read_cold_am "tput:$READ_BYTES" "≥ 10×"
	row read "Read 64 MiB file, warm" read_warm_imgfs "local disk (extracted)" read_warm_local \
		"tput:$READ_BYTES" "≥ 0.9×"
	row read "Read 64 MiB file, warm" read_warm_imgfs "archivemount" read_warm_am "tput:$READ_BYTES"
	row read "Read 64 MiB file, cold (caches dropped, fresh mount)" read_cold_imgfs "mount --ro" \
		read_cold_imgfs_ro "tput:$READ_BYTES"
	row read "Read 64 MiB file, warm" read_warm_imgfs "mount --ro" read_warm_imgfs_ro "tput:$READ_BYTES"
	row walk "\`find\` over $WALK_IMG, warm" walk_find_imgfs "mount --ro" walk_find_imgfs_ro time "≤ 1.2×"
	row walk "\`find\` over $WALK_IMG, warm" walk_find_imgfs "fuse-overlayfs (lower: extracted tree)" \
		walk_find_fov time "≤ 1.0×"
	row walk "\`find\` over $WALK_IMG, warm" walk_find_imgfs "local disk (extracted)" walk_find_local time "≤ 1.0×"
	row walk "\`ls -lR\` over $WALK_IMG, warm" walk_ls_imgfs "mount --ro" walk_ls_imgfs_ro time "≤ 1.2×"
	row walk "\`ls -lR\` over $WALK_IMG, warm" walk_ls_imgfs "fuse-overlayfs (lower: extracted tree)" \
		walk_ls_fov time "≤ 1.0×"
	row walk "\`ls -lR\` over $WALK_IMG, warm" walk_ls_imgfs "local disk (extracted)" walk_ls_local time "≤ 1.0×"
	row walk "\`find\` over $WALK_IMG, warm, mount --ro" walk_find_imgfs_ro "local disk (extracted)" walk_find_local time
	row walk "\`ls -lR\` over $WALK_IMG, warm, mount --ro" walk_ls_imgfs_ro "local disk (extracted)" walk_ls_local time
	row rw "Copy-up of a 64 MiB lower file (1-byte write)" copyup_imgfs "cp on local disk" copyup_local time "≤ 1.5×"
	row rw "Copy-up of a 64 MiB lower file (1-byte write)" copyup_imgfs "fuse-overlayfs" copyup_fov time
	row rw "Sequential write $WRITE_MB MiB + fsync into the upper" write_imgfs "local disk" write_local \
		"tput:$((WRITE_MB * 1024 * 1024))" "≥ 0.7×"
	row rw "Sequential write $WRITE_MB MiB + fsync into the upper" write_imgfs "fuse-overlayfs" write_fov \
		"tput:$((WRITE_MB * 1024 * 1024))"
	row rw "Create $NFILES_DESC small files" create_imgfs "local disk" create_local time
	row rw "Create $NFILES_DESC small files" create_imgfs "fuse-overlayfs" create_fov time "≤ 1.0×"
	row rw "Delete $NFILES_DESC small files" delete_imgfs "local disk" delete_local time
	row rw "Delete $NFILES_DESC small files" delete_imgfs "fuse-overlayfs" delete_fov time "≤ 1.0×"
	row runner "runner ROOTFS /bin/true ($WALK_IMG tree)" runner_true "bwrap" bwrap_true time
	row runner "runner ROOTFS /bin/true ($WALK_IMG tree)" runner_true "runc run" runc_true time
	row runner "imgfs run REF /bin/true (image pulled)" run_true "runc run, extracted tree" runc_true time "< 50 ms"
	row rss "Daemon VmHWM after reading all of $big" rss_imgfs "" "" bytes "< 32 MB"
	row rss "Daemon VmHWM after reading all of $big" rss_imgfs "mount --ro" rss_imgfs_ro bytes
	row rss "Daemon VmHWM after \`find -ls\` over $RSS_AM_IMG (one layer)" rss_imgfs_meta \
		"archivemount of the layer" rss_am_meta bytes
	row rss "Daemon VmHWM after \`find -ls\` over $RSS_AM_IMG (one layer)" rss_imgfs_meta \
		"mount --ro" rss_imgfs_meta_ro bytes
	for t in "${STORE_IMGS[@]}"; do
		row store "Store size, $t" "store_${t//-/_}" "compressed layers" "compressed_${t//-/_}" bytes
		row store "Store size, $t" "store_${t//-/_}" "extracted tree (du)" "extracted_${t//-/_}" bytes
		# The goal is for layers worth indexing: SOCI, the reference, by default leaves
		# layers under 10 MiB unindexed (they are fetched whole); in those the entry table
		# (88 bytes a name) is the index.
		row store "Index size, $t (gzip layers)" "index_${t//-/_}" "compressed gzip layers" \
			"gzlayers_${t//-/_}" bytes \
			"$(awk -v b="$(compressed_bytes "$t")" 'BEGIN { print (b >= 10485760 ? "≤ 2 %" : "") }')"
	done
	row store "Cold read of a small file (≤ 16 KiB, fresh mount), $COLDREAD_IMG" coldread "" "" \
		time "< 5 ms"
	row store "Cold read of a small file (≤ 16 KiB, fresh mount), $COLDREAD_IMG" coldread \
		"mount --ro" coldread_ro time
	local pr="podman pull + podman run → $COLD_DESC" full
	# The goals are for the realistic image; quick mode's busybox is all fixed costs.
	full="$([ "$QUICK" = 1 ] || echo y)"
	row als "$pr, with imgfs layer-store (indexes published), over $LINK_DESC" als_link_imgfs \
		"plain podman, same link" als_link_podman time "${full:+≤ 0.3×}"
	row als "Bytes fetched for that start: podman with imgfs layer-store" als_link_imgfs_bytes \
		"plain podman" als_link_podman_bytes bytes
	row als "$pr, with imgfs layer-store, loopback registry, no index" als_loop_imgfs \
		"plain podman" als_loop_podman time "${full:+≤ 1.0×}"
	row als "Disk after that pull: podman + imgfs layer-store" als_loop_imgfs_disk \
		"compressed layers" als_compressed bytes "${full:+≤ 1.05×}"
	row als "Disk after that pull: podman + imgfs layer-store" als_loop_imgfs_disk \
		"plain podman" als_loop_podman_disk bytes
}

# ---------------------------------------------------------------------------------------

log "bench: $([ "$QUICK" = 1 ] && echo quick || echo full) run, $REPS repetitions, raw data in $RAW"
build_images "$QUICK"
check_images "$QUICK"
start_registry
log "registry at $REGISTRY; pushing the bench images"
for t in busybox "$SMALL_IMG" "$LARGE_IMG" "$READ_IMG" "$WALK_IMG" "$COLD_IMG" "${PULL_IMGS[@]}" \
	"${STORE_IMGS[@]}"; do
	echo "$t"
done | sort -u | while read -r t; do push "$t"; done
start_link
log "link proxy at $LINK in front of the registry: $LINK_DESC"
probe
# imgfs run mounts with a writable layer; the cold start does the same when there is one.
COLD_MOUNT_OPT=--ro
[ -z "$HAVE_RW" ] || COLD_MOUNT_OPT=""
declare_rows

for g in ${BENCH_ONLY:-cold lazy warm mount pull read walk rw runner rss store als}; do
	measure "$g"
done

cat >"$RAW/machine.env" <<-EOF
	cores=$(nproc)
	memory=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
	cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	kernel=$(uname -r)
	os=$(. /etc/os-release && echo "$PRETTY_NAME")
	date=$(date -u +%Y-%m-%d)
	mode=$([ "$QUICK" = 1 ] && echo quick || echo full)
	reps=$REPS
	hyperfine_runs=$HF_RUNS
	duration_s=$((($(now_us) - START_US) / 1000000))
	imgfs=$(git -C "$BENCH_TOP" describe --always --dirty 2>/dev/null || echo unknown)
	versions=$(printf '%s; ' "skopeo $(skopeo --version | awk '{ print $3 }')" \
		"umoci $(umoci --version | awk '{ print $3 }')" "runc $(runc --version | awk 'NR == 1 { print $3 }')" \
		"bwrap $(bwrap --version | awk '{ print $2 }')" \
		"archivemount $(archivemount --version 2>&1 | awk 'NR == 1 { print $3 }')" \
		"fuse-overlayfs $(fuse-overlayfs --version 2>&1 | awk '/^fuse-overlayfs: version/ { print $3 }')")
EOF
"$PYTHON" "$BENCH_TOP/bench/report.py" --raw "$RAW" --top "$BENCH_TOP" \
	--out "$REPORT_DIR/RESULTS.md" --chart-data "$RAW/cold-start.dat" || die "report.py failed"
CHART_TITLE="Cold start, empty store to $(echo "$COLD_DESC" | tr -d "\`'") finished (median of $REPS)"
gnuplot -e "datafile='$RAW/cold-start.dat'; outfile='$REPORT_DIR/cold-start.svg'; chart_title='$CHART_TITLE'" \
	"$BENCH_TOP/bench/cold-start.gp" || die "gnuplot failed"
log "wrote $REPORT_DIR/RESULTS.md and $REPORT_DIR/cold-start.svg"
if [ "${#FAILED_GROUPS[@]}" -gt 0 ]; then
	log "harness failures in: ${FAILED_GROUPS[*]} (see $LOGS)"
	exit 1
fi
