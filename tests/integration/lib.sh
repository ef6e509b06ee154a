# Shared helpers for the integration tests (bash). A test starts with
#
#   . "$(dirname "$0")/lib.sh"
#
# and gets: a private temp dir $TESTDIR, an empty store $IMGFS_ROOT in it, isolated
# credential files, `imgfs` (the binary under test), local registries, a token server, a
# fault-injecting proxy, a link-emulating proxy, fixture images, assertions, and one EXIT
# trap that stops every process the test started, unmounts everything under $TESTDIR, runs
# the cleanups queued with `defer` (last first) and removes $TESTDIR (kept when
# IMGFS_TEST_KEEP=1).
#
# Conventions: helpers exit the test through `fail` on error; a test exits 0 on success,
# 77 (`skip`) only when the machine lacks a feature the test needs.

set -euo pipefail

IMGFS_TOP=${IMGFS_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
HELPERS="$IMGFS_TOP/tests/integration"
TEST_NAME=$(basename "$0" .sh)

TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/imgfs-$TEST_NAME.XXXXXX")
export IMGFS_ROOT="$TESTDIR/store"
# Credentials only from files the test writes.
unset REGISTRY_AUTH_FILE
export XDG_RUNTIME_DIR="$TESTDIR/run"
export DOCKER_CONFIG="$TESTDIR/docker"
mkdir -p "$XDG_RUNTIME_DIR" "$DOCKER_CONFIG"

REGISTRY_SERVICE=imgfs-test-registry
. "$HELPERS/linkproxy.sh"
_pids=()
_cleanups=()

# ---------------------------------------------------------------------------------------
# Reporting and assertions

log() { printf '== %s\n' "$*"; }

fail() {
	printf 'FAIL: %s\n' "$*" >&2
	exit 1
}

skip() {
	printf 'SKIP: %s\n' "$*"
	exit 77
}

# assert_eq ACTUAL EXPECTED [WHAT]
assert_eq() {
	[ "$1" = "$2" ] || fail "${3:-value}: expected '$2', got '$1'"
}

# assert_ne ACTUAL UNEXPECTED [WHAT]
assert_ne() {
	[ "$1" != "$2" ] || fail "${3:-value}: did not expect '$2'"
}

# assert_contains HAYSTACK NEEDLE [WHAT]: NEEDLE is a fixed string.
assert_contains() {
	case $1 in
	*"$2"*) ;;
	*) fail "${3:-output} does not contain '$2': $1" ;;
	esac
}

# assert_not_contains HAYSTACK NEEDLE [WHAT]
assert_not_contains() {
	case $1 in
	*"$2"*) fail "${3:-output} contains '$2': $1" ;;
	esac
}

# assert_file FILE / assert_no_file FILE
assert_file() { [ -e "$1" ] || fail "missing: $1"; }
assert_no_file() {
	if [ -e "$1" ] || [ -L "$1" ]; then
		fail "should not exist: $1"
	fi
}

# assert_ok CMD...: runs CMD; fails the test with its stderr when it fails.
# Its stdout is in $OUT, its stderr in $ERR.
assert_ok() {
	local rc=0
	_capture "$@" || rc=$?
	[ "$rc" -eq 0 ] || fail "'$*' exited $rc: $ERR"
}

# assert_fails_with PATTERN CMD...: CMD must exit non-zero (and not be killed by a signal)
# with a stderr matching the extended regex PATTERN (case-insensitive). $OUT/$ERR as above.
assert_fails_with() {
	local pattern=$1 rc=0
	shift
	_capture "$@" || rc=$?
	[ "$rc" -ne 0 ] || fail "'$*' succeeded but should have failed (stdout: $OUT)"
	[ "$rc" -lt 128 ] || fail "'$*' was killed by signal $((rc - 128)): $ERR"
	grep -Eqi -- "$pattern" <<<"$ERR" ||
		fail "'$*' failed (exit $rc) but stderr does not match /$pattern/: $ERR"
}

# assert_fails_one_line PATTERN CMD...: as assert_fails_with, and stderr is exactly one
# non-empty line (the contract for failures; use `pull -q` so that no progress is printed).
assert_fails_one_line() {
	assert_fails_with "$@"
	local n
	n=$(grep -c . <<<"$ERR" || true)
	[ "$n" -eq 1 ] || fail "'${*:2}': expected one line on stderr, got $n: $ERR"
}

_capture() {
	local out err rc=0
	out="$TESTDIR/.out" err="$TESTDIR/.err"
	"$@" >"$out" 2>"$err" || rc=$?
	OUT=$(cat "$out")
	ERR=$(cat "$err")
	printf '$ %s  (exit %d)\n' "$*" "$rc"
	[ -z "$OUT" ] || printf '%s\n' "$OUT" | head -n 20 | sed 's/^/  out: /'
	[ -z "$ERR" ] || printf '%s\n' "$ERR" | head -n 20 | sed 's/^/  err: /'
	return "$rc"
}

# ---------------------------------------------------------------------------------------
# Processes and cleanup

# defer CMD...: runs CMD (ignoring failure) when the test exits, last deferred first.
defer() {
	local q
	printf -v q '%q ' "$@"
	_cleanups+=("$q")
}

# spawn LOGNAME CMD...: starts CMD in the background, logging to $TESTDIR/LOGNAME.log;
# sets $SPAWNED_PID. The process is killed when the test exits.
spawn() {
	local name=$1
	shift
	"$@" >"$TESTDIR/$name.log" 2>&1 &
	SPAWNED_PID=$!
	_pids+=("$SPAWNED_PID")
}

# "${WITH_DEFAULT_SIGNALS[@]}" CMD...: runs CMD with SIGINT and SIGQUIT at their default
# disposition. bash starts background commands of a script with both ignored; a test that
# sends SIGINT to one (as Ctrl-C would) starts it through this. It is an array, not a
# function, so that `... &` makes $! the command's own pid (a function would run in a
# subshell that swallows the signal).
WITH_DEFAULT_SIGNALS=("$PYTHON" -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGQUIT, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])')

# stop_pid PID: SIGTERM, then SIGKILL after 5 s; reaps it.
stop_pid() {
	local i
	kill "$1" 2>/dev/null || return 0
	for i in $(seq 50); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# wait_http URL [SECONDS]: waits until URL answers at all (any HTTP status).
wait_http() {
	local i tries=$((${2:-10} * 10))
	for i in $(seq "$tries"); do
		if curl -sk -o /dev/null --max-time 2 "$1"; then
			return 0
		fi
		sleep 0.1
	done
	fail "nothing answers at $1"
}

_unmount_all() {
	local mp
	# Deepest first.
	awk -v d="$TESTDIR" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
		while read -r mp; do
			fusermount3 -u "$mp" 2>/dev/null || umount "$mp" 2>/dev/null ||
				umount -l "$mp" 2>/dev/null || echo "cleanup: cannot unmount $mp" >&2
		done
}

_cleanup() {
	local rc=$? i pid
	set +e
	trap - EXIT INT TERM
	for ((i = ${#_pids[@]} - 1; i >= 0; i--)); do
		pid=${_pids[i]}
		kill "$pid" 2>/dev/null
	done
	for pid in "${_pids[@]}"; do
		stop_pid "$pid"
	done
	_unmount_all
	for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do
		eval "${_cleanups[i]}" >/dev/null 2>&1
	done
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		for f in "$TESTDIR"/*.log; do
			[ -s "$f" ] || continue
			echo "--- last lines of $(basename "$f")"
			tail -n 15 "$f"
		done
	fi
	if [ "${IMGFS_TEST_KEEP:-0}" = 1 ]; then
		echo "kept $TESTDIR"
	else
		rm -rf "$TESTDIR"
	fi
	exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------
# The binary under test

IMGFS_BIN="$IMGFS_TOP/$BUILD/imgfs"

imgfs() {
	"$IMGFS_BIN" "$@"
}

require_imgfs() {
	[ -x "$IMGFS_BIN" ] || fail "imgfs is not built: $IMGFS_BIN (run make)"
}

require_root() {
	[ "$(id -u)" -eq 0 ] || skip "needs root"
}

# require_cmd CMD...: every CMD is an installed dependency (contrib/install-deps.sh), so a
# missing one is a broken machine, not a reason to skip.
require_cmd() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null || fail "$c not installed (run make deps)"
	done
}

# ---------------------------------------------------------------------------------------
# Fixture images (contrib/mkimage.sh), cached per test run in $TESTDIR/images

# build_image KIND TAG [ARGS...]: builds image KIND into $TESTDIR/images:TAG.
build_image() {
	local kind=$1 tag=$2
	shift 2
	sh "$IMGFS_TOP/contrib/mkimage.sh" "$kind" "$TESTDIR/images:$tag" "$@" >/dev/null ||
		fail "mkimage.sh $kind failed"
}

# oci_digest LAYOUT TAG: the digest of TAG's descriptor in LAYOUT/index.json.
oci_digest() {
	jq -er --arg t "$2" \
		'.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
		"$1/index.json"
}

# ---------------------------------------------------------------------------------------
# Network helpers

free_port() {
	"$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_registry [--addr IP] [--htpasswd FILE] [--token REALM ISSUER CERT] [--tls CERT KEY]
# Starts docker-registry on a free port (filesystem storage in $TESTDIR, deletes enabled),
# waits until /v2/ answers and sets REGISTRY=HOST:PORT and REGISTRY_URL.
# The token mode uses service $REGISTRY_SERVICE.
start_registry() {
	local addr=127.0.0.1 htpasswd="" realm="" issuer="" bundle="" cert="" key="" port dir
	while [ $# -gt 0 ]; do
		case $1 in
		--addr) addr=$2; shift 2 ;;
		--htpasswd) htpasswd=$2; shift 2 ;;
		--token) realm=$2 issuer=$3 bundle=$4; shift 4 ;;
		--tls) cert=$2 key=$3; shift 3 ;;
		*) fail "start_registry: unknown option $1" ;;
		esac
	done
	require_cmd docker-registry curl
	port=$(free_port)
	dir=$(mktemp -d "$TESTDIR/registry.XXXX")
	{
		echo "version: 0.1"
		echo "log: {level: info, accesslog: {disabled: false}}"
		echo "storage:"
		echo "  filesystem: {rootdirectory: $dir/data}"
		echo "  delete: {enabled: true}"
		echo "http:"
		echo "  addr: $addr:$port"
		echo "  secret: imgfs-test-secret"
		[ -z "$cert" ] || echo "  tls: {certificate: $cert, key: $key}"
		if [ -n "$htpasswd" ]; then
			echo "auth:"
			echo "  htpasswd: {realm: imgfs-test, path: $htpasswd}"
		elif [ -n "$realm" ]; then
			echo "auth:"
			echo "  token: {realm: '$realm', service: $REGISTRY_SERVICE, issuer: $issuer, rootcertbundle: $bundle}"
		fi
	} >"$dir/config.yml"
	spawn "$(basename "$dir")" docker-registry serve "$dir/config.yml"
	REGISTRY_PID=$SPAWNED_PID
	REGISTRY="$addr:$port"
	if [ -n "$cert" ]; then
		REGISTRY_URL="https://$REGISTRY"
	else
		REGISTRY_URL="http://$REGISTRY"
	fi
	wait_http "$REGISTRY_URL/v2/"
	log "registry at $REGISTRY_URL (config $dir/config.yml)"
}

# push_image OCI_DIR:TAG NAME:TAG [--registry HOST:PORT] [--creds USER:PASS]
# Copies a local OCI image (an index with all its platforms) to the registry.
push_image() {
	local src=$1 dst=$2 reg=${REGISTRY:-} creds=()
	shift 2
	while [ $# -gt 0 ]; do
		case $1 in
		--registry) reg=$2; shift 2 ;;
		--creds) creds=(--dest-creds "$2"); shift 2 ;;
		*) fail "push_image: unknown option $1" ;;
		esac
	done
	[ -n "$reg" ] || fail "push_image: no registry started"
	skopeo copy -q --all --dest-tls-verify=false "${creds[@]}" \
		"oci:$src" "docker://$reg/$dst" >/dev/null ||
		fail "cannot push $src to $reg/$dst"
}

# registry_put_blob REPO DIGEST BODY: uploads a blob into REPO of the registry
# ($REGISTRY_URL) in one monolithic PUT; BODY as curl's --data-binary takes it ("@FILE", or
# the bytes themselves).
registry_put_blob() {
	local loc
	loc=$(curl -sf -D - -o /dev/null -X POST "$REGISTRY_URL/v2/$1/blobs/uploads/" |
		tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
	case $loc in /*) loc=$REGISTRY_URL$loc ;; esac
	curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "$3" \
		"$loc&digest=$2" >/dev/null || fail "cannot upload blob $2 to $1"
}

# registry_put_manifest REPO TAG|DIGEST MEDIA_TYPE BODY: puts a manifest or index into REPO
# of the registry ($REGISTRY_URL); BODY as for registry_put_blob.
registry_put_manifest() {
	curl -sf -X PUT -H "Content-Type: $3" --data-binary "$4" \
		"$REGISTRY_URL/v2/$1/manifests/$2" >/dev/null || fail "cannot put manifest $2 to $1"
}

# make_htpasswd FILE USER PASS: a bcrypt htpasswd file as docker-registry wants it.
make_htpasswd() {
	require_cmd htpasswd
	htpasswd -Bbn "$2" "$3" >"$1" || fail "htpasswd failed"
}

# make_ca DIR: a test CA in DIR/ca.{key,crt}.
make_ca() {
	mkdir -p "$1"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=imgfs test CA" \
		-keyout "$1/ca.key" -out "$1/ca.crt" \
		-addext basicConstraints=critical,CA:TRUE \
		-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null || fail "cannot make CA"
}

# make_server_cert DIR IP: DIR/server.{key,crt} for IP, signed by DIR/ca.
make_server_cert() {
	local d=$1 ip=$2
	openssl req -newkey rsa:2048 -nodes -subj "/CN=$ip" -keyout "$d/server.key" \
		-out "$d/server.csr" 2>/dev/null || fail "cannot make CSR"
	printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
		"$ip" >"$d/server.ext"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
		-CAcreateserial -days 2 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null ||
		fail "cannot sign server cert"
}

# start_tokenserver [tokenserver.py options]: starts tests/integration/tokenserver.py on a
# free port with a fresh signing key; sets TOKEN_REALM, TOKEN_ISSUER, TOKEN_CERT (the
# bundle to give the registry) and TOKEN_LOG (one line per token issued or refused).
start_tokenserver() {
	local port dir
	dir="$TESTDIR/token"
	mkdir -p "$dir"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=imgfs test token signer" \
		-keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null || fail "cannot make token key"
	port=$(free_port)
	TOKEN_ISSUER=imgfs-test-issuer
	TOKEN_REALM="http://127.0.0.1:$port/token"
	TOKEN_CERT="$dir/cert.pem"
	TOKEN_LOG="$dir/requests.log"
	spawn tokenserver "$PYTHON" "$HELPERS/tokenserver.py" --listen "127.0.0.1:$port" \
		--key "$dir/key.pem" --cert "$dir/cert.pem" --issuer "$TOKEN_ISSUER" \
		--service "$REGISTRY_SERVICE" --log "$TOKEN_LOG" "$@"
	wait_http "http://127.0.0.1:$port/health"
}

# start_faultproxy UPSTREAM_URL: starts tests/integration/faultproxy.py in front of
# UPSTREAM_URL on a free loopback port; sets PROXY=127.0.0.1:PORT, PROXY_RULES (the rules
# file, see faultproxy.py; empty = pass through) and PROXY_LOG (one line per request).
start_faultproxy() {
	local port
	port=$(free_port)
	PROXY="127.0.0.1:$port"
	PROXY_RULES="$TESTDIR/proxy-rules.json"
	PROXY_LOG="$TESTDIR/proxy-requests.log"
	echo '[]' >"$PROXY_RULES"
	: >"$PROXY_LOG"
	spawn faultproxy "$PYTHON" "$HELPERS/faultproxy.py" --listen "$PROXY" \
		--upstream "$1" --rules "$PROXY_RULES" --log "$PROXY_LOG"
	wait_http "http://$PROXY/v2/"
}

# start_linkproxy UPSTREAM_HOST:PORT [linkproxy.py options, e.g. --rate 40mbit]: starts
# tests/integration/linkproxy.py (one emulated link that counts bytes and requests) in
# front of UPSTREAM on an ephemeral loopback port; sets LINK=127.0.0.1:PORT, LINK_PID,
# LINK_STATS (its JSON stats file) and LINK_LOG (one line per request).
start_linkproxy() {
	linkproxy_start "$TESTDIR" "$@" || fail "cannot start linkproxy.py"
	_pids+=("$LINK_PID")
}

# link_settle: once every connection through the link proxy has ended and its stats file
# has caught up, keeps a copy of the stats for link_stat.
link_settle() {
	linkproxy_settle
	cp "$LINK_STATS" "$TESTDIR/link-stats.settled.json"
}

# link_stat JQ_EXPR: JQ_EXPR on the stats kept by the last link_settle.
link_stat() {
	jq -er "$1" "$TESTDIR/link-stats.settled.json" ||
		fail "link stats: no '$1' in $(head -c 300 "$TESTDIR/link-stats.settled.json")"
}

# proxy_rules JSON: replaces the fault proxy's rules (hit counters start again at 0).
proxy_rules() {
	printf '%s\n' "$1" >"$PROXY_RULES.tmp" && mv "$PROXY_RULES.tmp" "$PROXY_RULES"
}

# ---------------------------------------------------------------------------------------
# Lazy pull checks (the test_lazy_*.sh tests): what a user checks of a mount that fetches
# its layers as they are read, the registry behind the link proxy (start_linkproxy).

# lazy_mount REF MNT [KIND]: mounts REF read-only at MNT (unmounted at exit) with the
# background fill held back, so that the link counts what the mount itself fetches; the
# mount must not say it pulls the image whole, and its line names KIND (e.g. "eStargz")
# when given.
lazy_mount() {
	export IMGFS_LAZY_FILL_DELAY_MS=600000
	assert_ok imgfs mount --ro "$1" "$2"
	defer "imgfs umount '$2' 2>/dev/null"
	assert_not_contains "$ERR" "pulling it whole" "the lazy mount of $1"
	[ -z "${3:-}" ] || assert_contains "$ERR" "$3" "the mount's line"
}

# lazy_fetched_below MNT TOTAL DIVISOR WHAT: the link carried fewer than TOTAL / DIVISOR
# bytes (TOTAL: the layers' size) for WHAT was done since it started, and the status of
# MNT says it is lazy.
lazy_fetched_below() {
	local fetched
	link_settle
	fetched=$(link_stat '.bytes_down')
	[ "$fetched" -lt $(($2 / $3)) ] ||
		fail "the lazy mount fetched $fetched bytes of $2 to $4"
	log "fetched $fetched of $2 bytes to $4"
	assert_ok imgfs status "$1"
	assert_contains "$OUT" "lazy: yes" "status of a lazy mount"
}

# lazy_fill_checks REF MNT MANIFEST: mounts REF at MNT with the fill started at once; the
# fill records REF as MANIFEST, the daemon counts every byte present, the store is
# consistent, and the mount's log holds neither a complaint about the indexes built again
# from the complete layers nor a sanitizer report. Then, unmounted, a pull of REF
# requests no blob.
lazy_fill_checks() {
	local ref=$1 mnt=$2 st logf before i
	export IMGFS_LAZY_FILL_DELAY_MS=0
	assert_ok imgfs mount --ro "$ref" "$mnt"
	for i in $(seq 600); do
		[ -n "$(store_ref_digest "$ref")" ] && break
		sleep 0.1
	done
	# The daemon writes its figures every 250 ms: the last of them may follow the record.
	for i in $(seq 50); do
		st=$(imgfs status "$mnt")
		[ "$(sed -n 's/^lazy-bytes-present: //p' <<<"$st")" = \
			"$(sed -n 's/^lazy-bytes-total: //p' <<<"$st")" ] && break
		sleep 0.1
	done
	assert_eq "$(sed -n 's/^lazy-bytes-present: //p' <<<"$st")" \
		"$(sed -n 's/^lazy-bytes-total: //p' <<<"$st")" "lazy bytes present once complete"
	assert_eq "$(store_ref_digest "$ref")" "$3" "the ref recorded after the fill"
	check_store_consistent
	# The indexes built again describe the layers as the published ones did.
	logf=$(sed -n 's/^state-dir: //p' <<<"$st")/log
	assert_file "$logf"
	if grep -E 'do not describe|Sanitizer|runtime error' "$logf"; then
		fail "the mount's log after the fill: $(tail -n 5 "$logf")"
	fi
	assert_ok imgfs umount "$mnt"
	link_settle
	before=$(link_stat '[.request_list[] | select(.path | test("/blobs/"))] | length')
	assert_ok imgfs pull -q "$ref"
	link_settle
	assert_eq "$(link_stat '[.request_list[] | select(.path | test("/blobs/"))] | length')" \
		"$before" "blob requests of a pull after the fill"
}

# lazy_corrupt_checks NAME:TAG MNT FILE EXPECTED: in a new store, mounts NAME:TAG through a
# new fault proxy ($PROXY) at MNT with no fill; while the proxy flips a byte of every blob
# of NAME, reading FILE (relative to MNT) fails with EIO; once it stops, FILE equals the
# file EXPECTED. MNT stays mounted.
lazy_corrupt_checks() {
	local out
	use_store corrupt
	start_faultproxy "$REGISTRY_URL"
	export IMGFS_LAZY_FILL_DELAY_MS=600000
	assert_ok imgfs mount --ro "$PROXY/$1" "$2"
	proxy_rules '[{"match": "GET /v2/'"${1%:*}"'/blobs/", "action": "corrupt", "offset": 1000}]'
	if out=$(cat "$2/$3" 2>&1 >/dev/null); then
		fail "a read of corrupt data ($3) succeeded"
	fi
	assert_contains "$out" "Input/output error" "the read of corrupt data"
	proxy_rules '[]'
	cmp "$2/$3" "$4" || fail "$3 differs once the registry is sound"
}

# lazy_run_checks REF COMMAND OUTPUT: in a new store, `imgfs run` of REF starts lazily (it
# does not say it pulls the image whole) and /bin/sh -c COMMAND prints OUTPUT.
lazy_run_checks() {
	use_store lazyrun
	unset IMGFS_LAZY_FILL_DELAY_MS
	assert_ok imgfs run -q "$1" /bin/sh -c "$2"
	assert_eq "$OUT" "$3" "output of imgfs run"
	assert_not_contains "$ERR" "pulling it whole" "imgfs run of $1"
}

# ---------------------------------------------------------------------------------------
# Store checks

# use_store NAME: switches $IMGFS_ROOT to a new empty store $TESTDIR/NAME.
use_store() {
	export IMGFS_ROOT="$TESTDIR/$1"
	[ ! -e "$IMGFS_ROOT" ] || fail "store $1 already used"
}

# store_ref_digest REF: the manifest digest stored for REF in $IMGFS_ROOT/index.json. A ref
# that is not a valid OCI ref name (oci:/dir:tag) is found by its io.imgfs.ref.name.
store_ref_digest() {
	jq -er --arg r "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r
		or .annotations["io.imgfs.ref.name"] == $r) | .digest' "$IMGFS_ROOT/index.json"
}

# store_nrefs: the number of refs in the store's index.json (0 when there is none).
store_nrefs() {
	if [ -f "$IMGFS_ROOT/index.json" ]; then
		jq -e '.manifests | length' "$IMGFS_ROOT/index.json"
	else
		echo 0
	fi
}

# store_view REF: prints the path of an OCI layout that shares the store's blobs and has
# REF as its only tag "view", for skopeo/umoci when REF is not a valid OCI ref name.
store_view() {
	local d digest view
	digest=$(store_ref_digest "$1") || fail "no ref '$1' in the store"
	view=$(mktemp -d "$TESTDIR/view.XXXX")
	ln -s "$IMGFS_ROOT/blobs" "$view/blobs"
	cp "$IMGFS_ROOT/oci-layout" "$view/oci-layout"
	jq -c --arg d "$digest" '.manifests |= (map(select(.digest == $d)) | .[:1]) |
		.manifests[0].annotations = {"org.opencontainers.image.ref.name": "view"}' \
		"$IMGFS_ROOT/index.json" >"$view/index.json"
	echo "$view"
}

# check_store_consistent: every blob matches its name, index.json parses, every ref's
# manifest and everything it names (config, layers; index children) is present and
# verified, and no temporary file sits in blobs/.
check_store_consistent() {
	local root=$IMGFS_ROOT f hex
	[ -f "$root/oci-layout" ] || fail "store has no oci-layout"
	jq -e '.schemaVersion == 2 and (.manifests | type == "array")' "$root/index.json" \
		>/dev/null || fail "store index.json is not a valid OCI index"
	for f in "$root"/blobs/sha256/*; do
		[ -e "$f" ] || continue
		hex=$(basename "$f")
		[[ $hex =~ ^[0-9a-f]{64}$ ]] || fail "unexpected file in blobs/sha256: $hex"
		[ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$hex" ] || fail "blob $hex does not match its digest"
	done
	"$PYTHON" - "$root" <<-'EOF' || fail "store refs are incomplete"
		import json, os, sys
		root = sys.argv[1]
		def blob(d):
		    return os.path.join(root, "blobs", *d.split(":"))
		def walk(desc):
		    p = blob(desc["digest"])
		    if not os.path.exists(p):
		        sys.exit("missing blob %s" % desc["digest"])
		    if os.path.getsize(p) != desc["size"]:
		        sys.exit("blob %s has the wrong size" % desc["digest"])
		    if desc["mediaType"].endswith(("manifest.v1+json", "manifest.v2+json")):
		        m = json.load(open(p))
		        for d in [m["config"]] + m["layers"]:
		            walk(d)
		    elif desc["mediaType"].endswith(("index.v1+json", "list.v2+json")):
		        for d in json.load(open(p))["manifests"]:
		            if os.path.exists(blob(d["digest"])):
		                walk(d)
		for d in json.load(open(os.path.join(root, "index.json")))["manifests"]:
		    walk(d)
	EOF
}

# blob_count: the number of blobs in the store.
blob_count() {
	find "$IMGFS_ROOT/blobs" -type f 2>/dev/null | wc -l
}

# ---------------------------------------------------------------------------------------
# TLS

# add_test_address: adds a non-loopback address 10.213.X.Y/32 to the lo interface and sets
# TEST_IP. A registry listening there is reachable only from this host, yet is not on
# loopback for imgfs, which therefore speaks HTTPS to it. Removed when the test exits.
add_test_address() {
	local i
	require_cmd ip
	for i in $(seq 20); do
		TEST_IP=10.213.$((RANDOM % 254 + 1)).$((RANDOM % 254 + 1))
		ip -4 -o addr show | grep -qF " $TEST_IP/" && continue
		ip addr add "$TEST_IP/32" dev lo || skip "cannot add an address to lo (needs CAP_NET_ADMIN)"
		defer ip addr del "$TEST_IP/32" dev lo
		return 0
	done
	fail "no free address in 10.213.0.0/16"
}

# install_ca HOST:PORT CA_FILE [BASE]: trusts CA_FILE for HOST:PORT the way podman and
# imgfs look for it (BASE/HOST:PORT/ca.crt, BASE /etc/containers/certs.d by default, or
# /etc/docker/certs.d), until the test exits (or uninstall_ca).
install_ca() {
	local d=${3:-/etc/containers/certs.d}/$1 top
	[ ! -e "$d" ] || fail "$d already exists"
	top=$d # the outermost directory created here, removed at exit
	while [ ! -e "$(dirname "$top")" ]; do top=$(dirname "$top"); done
	mkdir -p "$d"
	defer rm -rf "$top"
	cp "$2" "$d/ca.crt"
}

# uninstall_ca HOST:PORT [BASE]
uninstall_ca() {
	rm -rf "${2:-/etc/containers/certs.d}/$1"
}

# ---------------------------------------------------------------------------------------
# Takeovers (supervised mounts and the layer store)

# status_field MOUNT KEY
status_field() {
	imgfs status "$1" | sed -n "s/^$2: //p"
}

# wait_new_daemon MOUNT OLD_PID: waits (up to 10 s) until another daemon serves MOUNT;
# sets NEW_PID and TOOK_MS (from the call to the new daemon in the status).
wait_new_daemon() {
	local t0 i=0
	t0=$(date +%s%N)
	while :; do
		NEW_PID=$(status_field "$1" daemon-pid || true)
		[ -n "$NEW_PID" ] && [ "$NEW_PID" != - ] && [ "$NEW_PID" != "$2" ] && break
		i=$((i + 1))
		[ $i -lt 1000 ] || fail "no new daemon for $1 within 10 s after $2 was killed"
		sleep 0.01
	done
	TOOK_MS=$((($(date +%s%N) - t0) / 1000000))
}
