#!/bin/bash
# The layer store survives its daemon. Podman (its own --root/--runroot, the store as its
# additional layer store) runs a container on layers served by the store; the container
# hashes the image's files in a loop, and so does a reader outside it through the
# container's root (/proc/PID/root, the same overlay), which drops the files' pages after
# each pass so that every pass reads from the store's daemon. A blob file of a layer and a
# file and a directory of the container's root are open across the kills. The store's
# daemon-pid is SIGKILLed five times, then replaced with `imgfs restart`: zero errors, every
# hash right, the open files read on right, `imgfs status` counts the restarts under the
# same supervisor, the use counts podman took before the kills are still there. Then a new
# `podman run` of the image works, and `podman rmi` + `imgfs umount` leave the counts at
# zero and nothing mounted. Then the same for an image served lazily (its indexes
# published, fetched over a slow link while the container reads): a new daemon fetches the
# rest from the registry. Prints the longest pause a reader saw (not a pass/fail timing).
. "$(dirname "$0")/lib.sh"
require_root
require_imgfs
require_cmd podman umoci skopeo jq fusermount3
[ -c /dev/fuse ] || skip "no /dev/fuse"

echo '{"auths": {}}' >"$DOCKER_CONFIG/config.json"
STORE=$TESTDIR/als
# podman refuses a runroot path longer than 50 characters.
PR=$(mktemp -d /tmp/als-pm.XXXXXX)
LOAD="$HELPERS/takeover_load.py"
. "$(dirname "$0")/als_lib.sh"
# What podman left goes before the store, then podman's directory.
defer rm -rf "$PR"
defer umount -R "$PR"
defer imgfs umount "$STORE"
defer podman_leave "$PR"

# The image's regular files and their sha256 (EXPECTED.json for the load, and a list for
# sha256sum -c in the container).
expected_of() { # OCI-LAYOUT:TAG DIR
	umoci unpack --image "$1" "$2/bundle" >/dev/null || fail "umoci unpack of $1 failed"
	(cd "$2/bundle/rootfs" && find ./big ./bin -type f -size +0 | sed 's|^\./||' | sort |
		while read -r f; do printf '%s  /%s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"; done) \
		>"$2/sums"
	[ "$(wc -l <"$2/sums")" -gt 2 ] || fail "no files to read in $1"
	sed 's|  /| |' "$2/sums" | jq -R -s 'split("\n") | map(select(length > 0) | split(" "))
		| map({(.[1]): .[0]}) | add' >"$2/expected.json"
}

# under_kills IMAGE WORK KILLS: a container of IMAGE hashing its files in a loop, a reader
# through its root, KILLS kills of the daemon and one `imgfs restart`; checks what they saw.
under_kills() {
	local image=$1 work=$2 kills=$3 cname cpid sup before pid i top ldir lpid n
	cname=reader-$(basename "$work")
	pm run -d --name "$cname" "${RUN_LIMITS[@]}" -v "$work:/work" "$image" /bin/sh -c '
		n=0
		while [ ! -e /work/stop ]; do
			sha256sum -c -s /work/sums 2>>/work/errors || echo "pass $n failed" >>/work/errors
			n=$((n + 1)); echo $n >/work/passes
		done' >/dev/null || fail "podman run -d of $image failed"
	cpid=$(pm inspect -f '{{.State.Pid}}' "$cname") || fail "no pid for the container"
	[ "$cpid" -gt 0 ] || fail "the container is not running"
	# A blob file of the store open (half read) across the kills.
	top=$(skopeo inspect --tls-verify=false --raw "docker://$image" | jq -r '.layers[-1].digest')
	ldir=$STORE/$(b64 "$image")/$top
	exec 7<"$ldir/blob" || fail "cannot open $ldir/blob"
	dd bs=4096 count=1 <&7 >"$work/blob" 2>/dev/null || fail "cannot read $ldir/blob"
	mkdir -p "$work/load"
	"$PYTHON" "$LOAD" "/proc/$cpid/root" "$work/expected.json" "$work/load" --no-write \
		--readers 2 --drop-cache >"$work/load/result" 2>"$work/load/err" &
	lpid=$!
	_pids+=("$lpid")
	i=0
	while [ ! -e "$work/load/ready" ]; do
		kill -0 $lpid 2>/dev/null || fail "the load did not start: $(cat "$work/load/err")"
		i=$((i + 1))
		[ $i -lt 600 ] || fail "the load did not start within 60 s"
		sleep 0.1
	done
	sup=$(status_field "$STORE" supervisor-pid)
	before=$(status_field "$STORE" restarts)
	for i in $(seq "$kills"); do
		sleep 0.5
		pid=$(status_field "$STORE" daemon-pid)
		kill -KILL "$pid" || fail "cannot kill the store's daemon $pid"
		wait_new_daemon "$STORE" "$pid"
	done
	sleep 0.5
	pid=$(status_field "$STORE" daemon-pid)
	assert_ok imgfs restart "$STORE"
	[ "$(status_field "$STORE" daemon-pid)" != "$pid" ] || fail "imgfs restart left the daemon $pid"
	sleep 0.5
	# The reader outside stops first, the container after it: the reader opens its files
	# through the container's root, which is gone (ENOENT) once the container's shell
	# exits, and it notices its own stop file only when it next looks.
	touch "$work/load/stop"
	wait $lpid || fail "the load failed: $(cat "$work/load/err")"
	assert_eq "$(pm inspect -f '{{.State.Running}}' "$cname")" true \
		"the container, once the reader through its root stopped"
	touch "$work/stop"
	RESULT=$(cat "$work/load/result")
	[ "$(jq '.errors | length' <<<"$RESULT")" -eq 0 ] ||
		fail "the reader through the container saw errors: $(jq -c .errors <<<"$RESULT")"
	[ "$(jq .reads <<<"$RESULT")" -gt 0 ] || fail "the reader read nothing"
	cat <&7 >>"$work/blob" || fail "the blob open across the kills cannot be read"
	exec 7<&-
	assert_eq "sha256:$(sha256sum <"$work/blob" | cut -d' ' -f1)" "$top" \
		"sha256 of the blob read across the kills"
	assert_eq "$(pm wait "$cname")" 0 "the container's exit status"
	[ ! -s "$work/errors" ] || fail "the container saw errors: $(head -n 5 "$work/errors")"
	n=$(cat "$work/passes")
	[ "$n" -gt 0 ] || fail "the container hashed nothing"
	assert_eq "$(status_field "$STORE" restarts)" $((before + kills + 1)) "restarts"
	assert_eq "$(status_field "$STORE" supervisor-pid)" "$sup" "the supervisor after the kills"
	pm rm "$cname" >/dev/null || fail "podman rm failed"
	log "$image: $kills kills and a restart: $n passes in the container, $(jq .reads <<<"$RESULT") reads outside, longest pause $(jq .max_pause_ms <<<"$RESULT") ms"
}

start_registry
build_image big big 16 2 # busybox + two layers of 8 MiB of random files
push_image "$TESTDIR/images:big" big:1
mkdir -p "$TESTDIR/w1"
expected_of "$TESTDIR/images:big" "$TESTDIR/w1"

log "the store is supervised like a mount"
imgfs layer-store "$STORE" || fail "imgfs layer-store failed"
sup=$(status_field "$STORE" supervisor-pid)
[ -n "$sup" ] && [ "$sup" != - ] || fail "no supervisor-pid in the status of the store"
[ "$(status_field "$STORE" daemon-pid)" != "$sup" ] || fail "the supervisor serves the store itself"
assert_eq "$(status_field "$STORE" restarts)" 0 "restarts of a new store"
assert_eq "$(status_field "$STORE" state)" live "the store's state"

log "a container on the store's layers, its daemon killed five times and restarted"
pm pull -q --tls-verify=false "$REGISTRY/big:1" >/dev/null || fail "podman pull failed"
under_kills "$REGISTRY/big:1" "$TESTDIR/w1" 5
used=$(layers_file | awk -v r="$REGISTRY/big:1" '$1 == r && $3 > 0' | wc -l)
[ "$used" -ge 3 ] || fail "the use counts did not survive the kills: $(layers_file)"

log "podman run again, then podman rmi and imgfs umount: counts at zero, nothing mounted"
out=$(pm run --rm -i "${RUN_LIMITS[@]}" "$REGISTRY/big:1" /bin/sh -c 'sha256sum -c -s /dev/stdin && echo ok' \
	<"$TESTDIR/w1/sums" 2>&1) || fail "podman run after the kills failed: $out"
assert_eq "$out" ok "podman run after the kills"

log "an image served lazily, its daemon killed while the container reads"
build_image big lazy 12 3 # other layers over the same busybox
push_image "$TESTDIR/images:lazy" lazy:1
mkdir -p "$TESTDIR/w2"
expected_of "$TESTDIR/images:lazy" "$TESTDIR/w2"
IMGFS_ROOT=$TESTDIR/push-store imgfs pull -q "$REGISTRY/lazy:1" >/dev/null || fail "imgfs pull failed"
IMGFS_ROOT=$TESTDIR/push-store imgfs index push -q "$REGISTRY/lazy:1" >/dev/null ||
	fail "imgfs index push failed"
start_linkproxy "$REGISTRY" --rate 20mbit --latency 1
pm pull -q --tls-verify=false "$LINK/lazy:1" >/dev/null || fail "podman pull of lazy:1 failed"
grep -q "$LINK/lazy:1: .*fetched as they are read" "$IMGFS_ROOT"/mounts/*/log ||
	fail "lazy:1 was not served lazily"
under_kills "$LINK/lazy:1" "$TESTDIR/w2" 3
grep -q "$LINK/lazy:1: .*served before" "$IMGFS_ROOT"/mounts/*/log ||
	fail "no new daemon served lazy:1 again"

# Every daemon that ended was killed, none failed or crashed (a sanitizer's report included).
slog=$(cat "$IMGFS_ROOT"/mounts/*/log)
[ "$(grep -c "starting a new one" <<<"$slog")" -eq 8 ] ||
	fail "not eight kills in the store's log: $(grep "starting a new one" <<<"$slog")"
# The first daemon is the supervisor's parent, not its child: its end is logged without a
# cause ("(pid N) ended").
others=$(grep "starting a new one" <<<"$slog" | grep -v "killed by signal 9" |
	grep -v ") ended; starting a new one" || true)
[ -z "$others" ] || fail "a daemon of the store ended otherwise: $others"
grep -E "AddressSanitizer|runtime error:|is dead|cannot" <<<"$slog" &&
	fail "the store's log has errors"

pm rm -a -f >/dev/null 2>&1
pm rmi -a -f >/dev/null || fail "podman rmi failed"
held=$(layers_file | awk '$3 != 0' | wc -l)
assert_eq "$held" 0 "layers still held after podman rmi"
umount -R "$PR/root/overlay" 2>/dev/null || true
assert_ok imgfs umount "$STORE"
left=$(awk -v d="$STORE" 'index($5, d) == 1' /proc/self/mountinfo | wc -l)
assert_eq "$left" 0 "mounts left under $STORE"
[ -z "$(ls "$IMGFS_ROOT/mounts")" ] || fail "state left in $IMGFS_ROOT/mounts"
log "ok"
