#!/bin/bash
# The store is an OCI image layout that skopeo and umoci read: an image built with umoci
# from busybox-static is imported through the store API, then read back by both tools
# under its canonical names and under the alias of a name that cannot be a ref.name.
. "$(dirname "$0")/lib.sh"
require_cmd umoci skopeo jq
[ -x /bin/busybox ] || fail "busybox-static not installed (run make deps)"

importer=$IMGFS_TOP/$BUILD/tests/test_store
if [ ! -x "$importer" ]; then
	make -C "$IMGFS_TOP" BUILD="$BUILD" "$BUILD/tests/test_store" >/dev/null ||
		fail "cannot build $importer"
fi

log "build a busybox image with umoci"
src=$TESTDIR/src
umoci init --layout "$src"
umoci new --image "$src:bb"
umoci unpack --rootless --image "$src:bb" "$TESTDIR/bundle" >/dev/null
mkdir -p "$TESTDIR/bundle/rootfs/bin"
cp /bin/busybox "$TESTDIR/bundle/rootfs/bin/busybox"
ln -s busybox "$TESTDIR/bundle/rootfs/bin/sh"
umoci repack --image "$src:bb" "$TESTDIR/bundle" >/dev/null
umoci config --image "$src:bb" --config.cmd /bin/sh >/dev/null
rm -rf "$TESTDIR/bundle"

store=$TESTDIR/store
tarball_name=/srv/images/busybox-rootfs.tar.gz
refs="docker.io/library/busybox:latest 127.0.0.1:5000/test/busybox:latest $tarball_name"

log "import through the store API"
STORE_IMPORT_SRC="$src:bb" STORE_IMPORT_DST="$store" STORE_IMPORT_REFS="$refs" "$importer" ||
	fail "import into the store failed"
assert_eq "$(cat "$store/oci-layout")" '{"imageLayoutVersion":"1.0.0"}' "oci-layout"
assert_eq "$(jq -r '.mediaType' "$store/index.json")" "application/vnd.oci.image.index.v1+json" \
	"index.json mediaType"
assert_eq "$(jq '.manifests | length' "$store/index.json")" 3 "entries in index.json"
want=$(oci_digest "$src" bb)

# check_ref NAME: skopeo and umoci both find NAME and the busybox binary is in the rootfs.
check_ref() {
	local name=$1 out
	out=$(skopeo inspect "oci:$store:$name") || fail "skopeo inspect oci:STORE:$name failed"
	assert_eq "$(jq -r .Digest <<<"$out")" "$want" "skopeo digest of $name"
	assert_eq "$(skopeo inspect --config "oci:$store:$name" | jq -r '.config.Cmd[0]')" /bin/sh \
		"skopeo config of $name"
	rm -rf "$TESTDIR/unpack"
	umoci unpack --rootless --image "$store:$name" "$TESTDIR/unpack" >/dev/null ||
		fail "umoci unpack --image STORE:$name failed"
	cmp -s "$TESTDIR/unpack/rootfs/bin/busybox" /bin/busybox || fail "$name: bin/busybox differs"
	assert_eq "$("$TESTDIR/unpack/rootfs/bin/busybox" echo ok)" ok "busybox from $name runs"
}

for name in docker.io/library/busybox:latest 127.0.0.1:5000/test/busybox:latest; do
	log "read $name"
	assert_eq "$(oci_digest "$store" "$name")" "$want" "ref.name of $name"
	check_ref "$name"
done

log "a name outside the ref.name grammar is read through its alias"
alias=$(jq -r --arg n "$tarball_name" \
	'.manifests[] | select(.annotations["io.imgfs.ref.name"] == $n) |
	 .annotations["org.opencontainers.image.ref.name"]' "$store/index.json")
[[ $alias =~ ^srv-images-busybox-rootfs-tar-gz-[0-9a-f]{16}$ ]] || fail "alias: '$alias'"
check_ref "$alias"
assert_fails_with "no descriptor found" skopeo inspect "oci:$store:nosuchref"

log "umoci ls and a skopeo copy out of the store"
refs_listed=$(umoci ls --layout "$store" | sort | tr '\n' ' ')
assert_eq "$refs_listed" "$(printf '%s\n' 127.0.0.1:5000/test/busybox:latest "$alias" \
	docker.io/library/busybox:latest | sort | tr '\n' ' ')" "umoci ls"
skopeo copy -q "oci:$store:docker.io/library/busybox:latest" "oci:$TESTDIR/copy:x" ||
	fail "skopeo copy from the store failed"
assert_eq "$(oci_digest "$TESTDIR/copy" x)" "$want" "digest after skopeo copy"

log "another tool's ref in the store survives our rewrite and our gc"
skopeo copy -q "oci:$TESTDIR/copy:x" "oci:$store:skopeo-tag" || fail "skopeo copy into the store failed"
STORE_IMPORT_SRC="$src:bb" STORE_IMPORT_DST="$store" STORE_IMPORT_REFS="docker.io/library/busybox:1" \
	"$importer" >/dev/null || fail "second import failed"
assert_eq "$(oci_digest "$store" skopeo-tag)" "$want" "skopeo's entry"
check_ref skopeo-tag
assert_eq "$(jq -r --arg n "$tarball_name" \
	'[.manifests[] | select(.annotations["io.imgfs.ref.name"] == $n)] | length' \
	"$store/index.json")" 1 "our annotation after skopeo rewrote index.json"
assert_eq "$(jq '.manifests | length' "$store/index.json")" 5 "entries in index.json"
