# Helpers for bench/run.sh (bash, sourced): logging, timing, samples and n/a reasons,
# the loopback registry, the bench images and their cache, mounts and cleanup.
#
# Samples: $DATA/KEY.txt holds one value per line (seconds for timings, bytes for sizes);
# $DATA/KEY.na holds the reason why KEY could not be measured. bench/report.py turns
# them and the row table ($OUT/rows.tsv) into RESULTS.md and the chart.

BENCH_TOP=${BENCH_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-python3}
IMGFS=${IMGFS:-$BENCH_TOP/$BUILD/imgfs}
RUNNER=${RUNNER:-$BENCH_TOP/$BUILD/runner}
CACHE=${BENCH_CACHE:-$BENCH_TOP/build/bench-cache}
LAYOUT=$CACHE/images # one OCI layout, one tag per bench image

_bench_pids=()
. "$BENCH_TOP/tests/integration/linkproxy.sh"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

die() {
	printf 'bench: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------------------------------
# Samples

# now_us: the wall clock in microseconds, without a fork.
now_us() {
	local t=${EPOCHREALTIME/[.,]/}
	echo "${t#0}"
}

# add_sample KEY VALUE: appends VALUE to KEY's samples.
add_sample() {
	echo "$2" >>"$DATA/$1.txt"
}

# add_time KEY START_US END_US: appends END-START as seconds.
add_time() {
	local d=$(($3 - $2))
	add_sample "$1" "$(printf '%d.%06d' $((d / 1000000)) $((d % 1000000)))"
}

# timed KEY CMD...: runs CMD (output to the measurement's log) and records its duration.
# Returns CMD's status, recording nothing when it fails.
timed() {
	local key=$1 t0 t1 rc=0
	shift
	t0=$(now_us)
	"$@" >>"$MLOG" 2>&1 || rc=$?
	t1=$(now_us)
	[ "$rc" -eq 0 ] || {
		echo "timed: '$*' exited $rc" >>"$MLOG"
		return "$rc"
	}
	add_time "$key" "$t0" "$t1"
}

# na KEY REASON: KEY cannot be measured, for REASON (one line, shown in RESULTS.md).
na() {
	rm -f "$DATA/$1.txt"
	printf '%s\n' "$2" >"$DATA/$1.na"
}

has_samples() { [ -s "$DATA/$1.txt" ]; }

# hyperfine_samples JSON KEY...: the run times of the i-th command of a hyperfine export
# become the samples of the i-th KEY.
hyperfine_samples() {
	local json=$1 i=0 key
	shift
	for key in "$@"; do
		jq -r --argjson i "$i" '.results[$i].times[]' "$json" >"$DATA/$key.txt"
		i=$((i + 1))
	done
}

# bench_hyperfine NAME RUNS KEY=CMD...: hyperfine with one warmup, export in $OUT/hyperfine.
bench_hyperfine() {
	local name=$1 runs=$2 keys=() cmds=() kc
	shift 2
	for kc in "$@"; do
		keys+=("${kc%%=*}")
		cmds+=("${kc#*=}")
	done
	mkdir -p "$OUT/hyperfine"
	hyperfine --style basic --warmup 1 --runs "$runs" --shell bash \
		--export-json "$OUT/hyperfine/$name.json" "${cmds[@]}" >>"$MLOG" 2>&1 || return 1
	hyperfine_samples "$OUT/hyperfine/$name.json" "${keys[@]}"
}

# is_imgfs_key KEY: KEY measures imgfs (its failure is an n/a, not a broken harness).
is_imgfs_key() {
	case $1 in *imgfs* | runner_* | run_*) return 0 ;; esac
	return 1
}

# bench_sides NAME RUNS KEY=CMD...: bench_hyperfine; when it fails, each imgfs command is
# tried alone, the failing ones become n/a (side_failed) and the rest is measured again.
bench_sides() {
	local name=$1 runs=$2 kc rest=()
	shift 2
	bench_hyperfine "$name" "$runs" "$@" && return 0
	for kc in "$@"; do
		if is_imgfs_key "${kc%%=*}"; then
			if bash -c "${kc#*=}" >>"$MLOG" 2>&1; then
				rest+=("$kc")
			else
				side_failed "${kc%%=*}"
			fi
		else
			rest+=("$kc")
		fi
	done
	[ "${#rest[@]}" -lt "$#" ] || return 1
	bench_hyperfine "$name" "$runs" "${rest[@]}"
}

# ---------------------------------------------------------------------------------------
# System

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

can_drop_caches() { [ -w /proc/sys/vm/drop_caches ]; }

# du_bytes PATH...: apparent size in bytes (what is stored, not block rounding).
du_bytes() {
	du -sb "$@" | awk '{ s += $1 } END { print s + 0 }'
}

# is_mounted DIR: DIR is a mount point (per /proc/self/mountinfo).
is_mounted() {
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# unmount_under DIR: unmounts everything at or below DIR, deepest first.
unmount_under() {
	local mp
	awk -v d="$1" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
		while read -r mp; do
			if [ -x "$IMGFS" ] && grep -q " $mp fuse.imgfs " /proc/self/mounts 2>/dev/null; then
				"$IMGFS" umount "$mp" >/dev/null 2>&1 && continue
			fi
			fusermount3 -u "$mp" 2>/dev/null || fusermount -u "$mp" 2>/dev/null ||
				umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null ||
				echo "bench: cannot unmount $mp" >&2
		done
}

# spawn_bg LOG CMD...: a background process stopped when the bench exits.
spawn_bg() {
	local logf=$1
	shift
	"$@" >"$logf" 2>&1 &
	_bench_pids+=("$!")
	SPAWNED_PID=$!
}

stop_bg() {
	local pid
	for pid in "${_bench_pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${_bench_pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	_bench_pids=()
}

free_port() {
	"$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------
# Registry: docker-registry on a free loopback port, storage cached across runs

start_registry() {
	local port dir=$CACHE/registry i
	command -v docker-registry >/dev/null || die "docker-registry not installed (make deps)"
	mkdir -p "$dir"
	port=$(free_port)
	cat >"$WORK/registry.yml" <<-EOF
		version: 0.1
		log: {level: warn, accesslog: {disabled: true}}
		storage:
		  filesystem: {rootdirectory: $dir}
		  delete: {enabled: true}
		http:
		  addr: 127.0.0.1:$port
		  secret: imgfs-bench
	EOF
	spawn_bg "$WORK/registry.log" docker-registry serve "$WORK/registry.yml"
	REGISTRY=127.0.0.1:$port
	for i in $(seq 100); do
		curl -s -o /dev/null --max-time 2 "http://$REGISTRY/v2/" && return 0
		sleep 0.1
	done
	die "docker-registry does not answer at $REGISTRY: $(tail -n 3 "$WORK/registry.log")"
}

# start_link: tests/integration/linkproxy.py in front of $REGISTRY, emulating one link of
# $LINK_RATE with $LINK_LATENCY ms each way; sets LINK=127.0.0.1:PORT and LINK_STATS
# (bytes and requests that crossed it, see linkproxy.py); its request log is
# $RAW/link-requests.log.
start_link() {
	linkproxy_start "$RAW" "$REGISTRY" --rate "$LINK_RATE" --latency "$LINK_LATENCY" ||
		die "cannot start the link proxy"
	_bench_pids+=("$LINK_PID")
}

# link_bytes: the bytes the link has carried from the registry so far, read once the
# connections through it have ended.
link_bytes() {
	linkproxy_settle
	jq -r .bytes_down "$LINK_STATS"
}

# push TAG: the bench image TAG to $REGISTRY/bench/TAG (skopeo skips blobs already there).
push() {
	skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:$1" "docker://$REGISTRY/bench/$1" \
		>/dev/null || die "cannot push $1 to the bench registry"
}

# ref TAG: the registry reference of a bench image.
ref() { echo "$REGISTRY/bench/$1"; }

# ---------------------------------------------------------------------------------------
# Images, built once into $LAYOUT and reused

# (grep reads all of umoci's output: with -q it could stop early, umoci would die of
# SIGPIPE and pipefail would turn a present tag into a missing one, rebuilding the image.)
have_tag() {
	[ -f "$LAYOUT/index.json" ] && umoci ls --layout "$LAYOUT" 2>/dev/null | grep -xF "$1" >/dev/null
}

# layer_digests TAG: the layer digests of TAG's manifest, one per line, lowest first.
layer_digests() {
	local m
	m=$(jq -er --arg t "$1" \
		'.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
		"$LAYOUT/index.json") || return 1
	jq -r '.layers[].digest' "$LAYOUT/blobs/sha256/${m#sha256:}"
}

# layer_blob DIGEST: the path of a blob in $LAYOUT.
layer_blob() { echo "$LAYOUT/blobs/sha256/${1#sha256:}"; }

# compressed_bytes TAG: the sum of TAG's layer sizes (what a registry serves).
compressed_bytes() {
	local d s=0
	for d in $(layer_digests "$1"); do
		s=$((s + $(stat -c %s "$(layer_blob "$d")")))
	done
	echo "$s"
}

mkimage() {
	sh "$BENCH_TOP/contrib/mkimage.sh" "$@" >/dev/null || die "contrib/mkimage.sh $* failed"
}

# debian_mirror: the Debian archive this machine's apt uses (deb822 or one-line sources).
debian_mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '/^[Tt]ypes:/ { deb = / deb( |$)/ } /^URIs:/ { u = $2 }
		     /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm" && deb) { print u; exit } }
		     /^$/ { u = ""; deb = 0 }' "$f"
	done | head -n 1 | grep . && return 0
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { if ($(i + 1) == "bookworm") print $i; break } }' |
		head -n 1 | grep .
}

# debian_rootfs: $CACHE/debian-rootfs, Debian bookworm minbase with python3 (debootstrap),
# without apt's package cache and lists (as Docker's debian images).
debian_rootfs() {
	local r=$CACHE/debian-rootfs mirror
	[ -d "$r/usr" ] && return 0
	command -v debootstrap >/dev/null || die "debootstrap not installed (make deps)"
	mirror=$(debian_mirror) || die "no Debian bookworm mirror in /etc/apt/sources.list*"
	log "debootstrap bookworm minbase + python3 from $mirror (once; cached)"
	rm -rf "$r.tmp"
	debootstrap --variant=minbase --include=python3 bookworm "$r.tmp" "$mirror" \
		>"$WORK/debootstrap.log" 2>&1 ||
		die "debootstrap failed: $(tail -n 3 "$WORK/debootstrap.log")"
	rm -rf "$r.tmp"/var/cache/apt/archives/*.deb "$r.tmp"/var/lib/apt/lists/* \
		"$r.tmp"/var/cache/apt/*.bin "$r.tmp"/var/log/*.log "$r.tmp"/var/log/apt/*
	mv "$r.tmp" "$r"
}

# debian_etc ROOTFS: the files a container runtime binds over exist, empty (debootstrap
# copies the build host's hostname and resolv.conf and writes no hosts file), so that a
# read-only view of the image can host a container without an init layer.
debian_etc() {
	local f
	for f in hostname hosts resolv.conf; do
		rm -f "$1/etc/$f"
		: >"$1/etc/$f"
		chmod 644 "$1/etc/$f"
	done
}

# set_image_config TAG CMD...: entrypoint-less config with CMD and Debian's PATH.
set_image_config() {
	local tag=$1 a args=()
	shift
	for a in "$@"; do args+=(--config.cmd "$a"); done
	umoci config --image "$LAYOUT:$tag" --no-history "${args[@]}" \
		--config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--config.workingdir / >/dev/null
}

# new_tag TAG: an empty image TAG in $LAYOUT.
new_tag() {
	[ -f "$LAYOUT/oci-layout" ] || umoci init --layout "$LAYOUT"
	! have_tag "$1" || umoci rm --image "$LAYOUT:$1"
	umoci new --image "$LAYOUT:$1"
}

# build_debian: one layer holding the whole Debian tree.
build_debian() {
	local b=$WORK/bundle-debian
	have_tag debian && return 0
	debian_rootfs
	log "building image debian (one layer)"
	new_tag debian.tmp
	rm -rf "$b"
	umoci unpack --image "$LAYOUT:debian.tmp" "$b" >/dev/null
	cp -a "$CACHE/debian-rootfs/." "$b/rootfs/"
	debian_etc "$b/rootfs"
	umoci repack --image "$LAYOUT:debian.tmp" "$b" >/dev/null
	rm -rf "$b"
	set_image_config debian.tmp /bin/bash
	umoci tag --image "$LAYOUT:debian.tmp" debian
	umoci rm --image "$LAYOUT:debian.tmp"
}

# add_layer TAG DIR PATH...: a new layer on TAG holding PATHs (relative to DIR, with all
# below them). umoci insert is not used: umoci 0.4.7 writes truncated layers with it.
add_layer() {
	local tag=$1 dir=$2
	shift 2
	tar --numeric-owner --xattrs --xattrs-include='*' -C "$dir" -cf "$WORK/layer.tar" "$@" &&
		umoci raw add-layer --image "$LAYOUT:$tag" "$WORK/layer.tar" >/dev/null || return 1
	rm -f "$WORK/layer.tar"
}

# check_layers TAG: every layer of TAG inflates to a complete tar archive.
check_layers() {
	local d
	for d in $(layer_digests "$1"); do
		gzip -dc "$(layer_blob "$d")" | tar -tf - >/dev/null ||
			die "image $1: layer $d is not a complete tar.gz"
	done
}

# build_debian_multi: the same tree in four layers: the base system without /usr/lib,
# /usr/share and /var, then each of those three directories as its own layer.
build_debian_multi() {
	local b=$WORK/bundle-debian-multi r=$CACHE/debian-rootfs d
	have_tag debian-multi && return 0
	debian_rootfs
	log "building image debian-multi (four layers)"
	new_tag debian-multi.tmp
	rm -rf "$b"
	umoci unpack --image "$LAYOUT:debian-multi.tmp" "$b" >/dev/null
	(cd "$r" && tar --exclude=./usr/lib/* --exclude=./usr/share/* --exclude=./var/* \
		-cf - .) | (cd "$b/rootfs" && tar -xpf -)
	debian_etc "$b/rootfs"
	umoci repack --image "$LAYOUT:debian-multi.tmp" "$b" >/dev/null
	rm -rf "$b"
	for d in usr/lib usr/share var; do
		add_layer debian-multi.tmp "$r" "$d" || die "cannot add layer $d to debian-multi"
	done
	set_image_config debian-multi.tmp /bin/bash
	umoci tag --image "$LAYOUT:debian-multi.tmp" debian-multi
	umoci rm --image "$LAYOUT:debian-multi.tmp"
}

# build_big300: debian plus a layer of incompressible data up to about 300 MB compressed.
build_big300() {
	local d=$WORK/bench-data base fill
	have_tag big300 && return 0
	build_debian
	log "building image big300 (debian + random data)"
	base=$(compressed_bytes debian)
	fill=$((300 * 1000 * 1000 - base))
	[ "$fill" -gt 0 ] || fill=$((64 * 1024 * 1024))
	rm -rf "$d"
	mkdir -p "$d"
	head -c "$fill" /dev/zero |
		openssl enc -aes-128-ctr -nosalt -K 0000000000000000000000000000b300 \
			-iv 00000000000000000000000000000000 >"$d/random.bin"
	! have_tag big300.tmp || umoci rm --image "$LAYOUT:big300.tmp"
	umoci tag --image "$LAYOUT:debian" big300.tmp
	add_layer big300.tmp "$WORK" bench-data || die "cannot add the data layer to big300"
	rm -rf "$d"
	umoci tag --image "$LAYOUT:big300.tmp" big300
	umoci rm --image "$LAYOUT:big300.tmp"
}

# build_busybox_rt: busybox plus the empty /etc files a runtime binds over (as debian_etc),
# the container image of quick mode.
build_busybox_rt() {
	local d=$WORK/busybox-rt
	have_tag busybox-rt && return 0
	log "building image busybox-rt"
	mkdir -p "$d/etc"
	debian_etc "$d"
	! have_tag busybox-rt.tmp || umoci rm --image "$LAYOUT:busybox-rt.tmp"
	umoci tag --image "$LAYOUT:busybox" busybox-rt.tmp
	add_layer busybox-rt.tmp "$d" etc/hostname etc/hosts etc/resolv.conf ||
		die "cannot build busybox-rt"
	rm -rf "$d"
	umoci tag --image "$LAYOUT:busybox-rt.tmp" busybox-rt
	umoci rm --image "$LAYOUT:busybox-rt.tmp"
}

# build_images QUICK: the images the bench needs (QUICK=1: the small ones only).
build_images() {
	mkdir -p "$CACHE"
	have_tag busybox || { log "building image busybox"; mkimage busybox "$LAYOUT:busybox"; }
	build_busybox_rt
	have_tag small5 || { log "building image small5"; mkimage big "$LAYOUT:small5" 4; }
	have_tag big64 || { log "building image big64"; mkimage big "$LAYOUT:big64" 64; }
	if [ "$1" != 1 ]; then
		build_debian
		build_debian_multi
		build_big300
	fi
	umoci gc --layout "$LAYOUT"
}

# check_images QUICK: check_layers of every image of the run (once per image: a stamp
# file records the manifest digests already checked).
check_images() {
	local t m stamp=$CACHE/checked
	touch "$stamp"
	for t in busybox busybox-rt small5 big64 $([ "$1" = 1 ] || echo debian debian-multi big300); do
		m=$(jq -r --arg t "$t" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$LAYOUT/index.json")
		grep -qxF "$m" "$stamp" && continue
		check_layers "$t"
		echo "$m" >>"$stamp"
	done
}

# unpack_tree TAG DIR: umoci unpack of a bench image (the "extracted tree" of the
# alternatives); DIR/rootfs is the tree. Cached under $CACHE/trees/TAG.
unpack_tree() {
	local t=$CACHE/trees/$1
	if [ ! -d "$t/rootfs" ]; then
		rm -rf "$t"
		mkdir -p "$CACHE/trees"
		umoci unpack --image "$LAYOUT:$1" "$t" >/dev/null || die "umoci unpack $1 failed"
	fi
	echo "$t"
}

# private_tree TAG DIR: a copy of the extracted tree of TAG at DIR (runtimes create their
# mount points in a rootfs; the cached tree must stay as umoci unpack left it).
private_tree() {
	local t
	t=$(unpack_tree "$1") || return 1
	rm -rf "$2"
	cp -a "$t/rootfs" "$2"
}

# runc_config ROOTFS_DIR ARGS...: prints a runc config.json (from `runc spec`) running ARGS
# without a terminal on a read-only root at ROOTFS_DIR.
runc_config() {
	local root=$1 tmp args a
	shift
	tmp=$(mktemp -d "$WORK/spec.XXXX")
	(cd "$tmp" && runc spec) || return 1
	# Each argument through jq -R (not --args: jq would take "-c" as its own option).
	args=$(for a in "$@"; do printf '%s' "$a" | jq -Rs .; done | jq -sc .)
	jq --arg root "$root" --argjson args "$args" '.process.terminal = false
		| .process.args = $args | .root = {path: $root, readonly: true}
		| .hostname = "bench"' <"$tmp/config.json"
	rm -rf "$tmp"
}

# bwrap_args ROOT: bwrap options with the runner's namespaces and mounts, root read-only.
bwrap_args() {
	echo --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup --die-with-parent \
		--new-session --cap-drop ALL --ro-bind "$1" / --proc /proc --dev /dev \
		--ro-bind /sys /sys --tmpfs /tmp --hostname bench
}

# mount_pid MOUNTPOINT: the pid of the imgfs process serving MOUNTPOINT: the worker of a
# supervised mount (ROOT/mounts/NAME/worker once a later worker took over, else the state's
# "worker"), else the pid in its state (an unsupervised daemon). Not the supervisor's pid.
mount_pid() {
	local s
	for s in "$IMGFS_ROOT"/mounts/*/state; do
		[ -f "$s" ] || continue
		jq -e --arg m "$1" 'select(.mountpoint == $m)' "$s" >/dev/null 2>&1 || continue
		jq -er .pid "$(dirname "$s")/worker" 2>/dev/null && return 0
		jq -er .worker "$s" 2>/dev/null && return 0
		jq -er .pid "$s" 2>/dev/null && return 0
	done
	return 1
}
