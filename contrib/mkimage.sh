#!/bin/sh
# Builds small OCI images from busybox-static with umoci, offline, into an OCI image layout.
#
#   mkimage.sh busybox    DIR:TAG              one layer: busybox, its applet links, /etc files
#   mkimage.sh multilayer DIR:TAG              busybox + 3 layers: added files, a deleted file
#                                              (whiteout), a directory replaced by a file, an
#                                              opaque directory, a hardlink, symlinks
#   mkimage.sh big        DIR:TAG SIZE_MB [N]  busybox + N layers (default 1) holding SIZE_MB
#                                              of incompressible data in total
#   mkimage.sh index      DIR:TAG              an OCI index with linux/amd64 and linux/arm64/v8
#                                              entries (both run amd64 busybox; the configs and
#                                              /etc/platform say which platform each one is)
#
# Output is deterministic (fixed timestamps, no history, seeded data): building twice gives
# the same digests. An existing TAG in DIR is replaced; other tags are kept.
# Needs umoci, busybox-static, python3; root keeps file ownership (else umoci --rootless).
set -eu

BUSYBOX=${BUSYBOX:-/bin/busybox}
EPOCH=946684800 # 2000-01-01T00:00:00Z: every mtime and the config's "created"
CREATED=2000-01-01T00:00:00Z
PYTHON=${PYTHON:-python3}

usage() {
	sed -n '2,16s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

die() {
	echo "mkimage: $*" >&2
	exit 1
}

[ $# -ge 2 ] || usage
kind=$1
target=$2
case $target in
*:*) dir=${target%:*} tag=${target##*:} ;;
*) die "'$target': expected DIR:TAG" ;;
esac
[ -n "$dir" ] && [ -n "$tag" ] || die "'$target': expected DIR:TAG"
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found (install busybox-static)"
command -v umoci >/dev/null || die "umoci not found"

rootless=""
[ "$(id -u)" -eq 0 ] || rootless="--rootless"

work=$(mktemp -d "${TMPDIR:-/tmp}/mkimage.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# Sets every mtime under $1 to EPOCH so that layers do not depend on the build time.
settime() {
	find "$1" -exec touch -h -d "@$EPOCH" {} +
}

# Starts a new empty image DIR:TAG (replacing the tag when it exists).
new_image() {
	[ -f "$1/oci-layout" ] || umoci init --layout "$1"
	if umoci ls --layout "$1" | grep -qxF "$2"; then
		umoci rm --image "$1:$2"
	fi
	umoci new --image "$1:$2"
}

# unpack_image IMAGE BUNDLE / repack_image IMAGE BUNDLE: one umoci cycle, one new layer.
unpack_image() {
	rm -rf "$2"
	umoci unpack $rootless --image "$1" "$2" >/dev/null
}
repack_image() {
	settime "$2/rootfs"
	umoci repack --image "$1" --history.created "$CREATED" \
		--history.created_by "mkimage.sh $kind" "$2"
	rm -rf "$2"
}

# Fills rootfs $1 with busybox, its applet links and a minimal /etc.
populate_busybox() {
	r=$1
	mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin" "$r/etc" "$r/root" "$r/home" \
		"$r/tmp" "$r/var/tmp" "$r/proc" "$r/sys" "$r/dev" "$r/run"
	chmod 1777 "$r/tmp" "$r/var/tmp"
	chmod 700 "$r/root"
	cp "$BUSYBOX" "$r/bin/busybox"
	chmod 755 "$r/bin/busybox"
	for applet in $("$BUSYBOX" --list); do
		case $applet in busybox | */*) continue ;; esac
		ln -sf busybox "$r/bin/$applet"
	done
	cat >"$r/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/bin/sh
		daemon:x:1:1:daemon:/usr/sbin:/bin/false
		nobody:x:65534:65534:nobody:/nonexistent:/bin/false
	EOF
	cat >"$r/etc/group" <<-'EOF'
		root:x:0:
		daemon:x:1:
		nogroup:x:65534:
	EOF
	cat >"$r/etc/os-release" <<-'EOF'
		NAME="imgfs test image"
		ID=imgfs-test
		PRETTY_NAME="imgfs busybox test image"
		VERSION_ID=1
	EOF
	settime "$r"
}

# Sets the config fields every test image carries; $@ are extra umoci config options.
set_config() {
	img=$1
	shift
	umoci config --no-history --image "$img" --created "$CREATED" \
		--config.cmd /bin/sh \
		--config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		--config.env IMGFS_TEST=1 \
		--config.workingdir / "$@"
}

build_busybox() {
	new_image "$1" "$2"
	unpack_image "$1:$2" "$work/bundle"
	populate_busybox "$work/bundle/rootfs"
	repack_image "$1:$2" "$work/bundle"
}

# A layer tarball in which the directory /replaced of a lower layer becomes a regular file
# (no whiteout: the new entry replaces it) and /opaque is marked opaque (.wh..wh..opq) and
# holds only z.txt. umoci repack writes neither form, so this layer is written by hand.
opaque_layer_tar() {
	"$PYTHON" - "$1" "$EPOCH" <<-'EOF'
		import io, sys, tarfile
		out, epoch = sys.argv[1], int(sys.argv[2])
		with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
		    def add(name, kind, data=b"", mode=0o644):
		        i = tarfile.TarInfo(name)
		        i.type, i.mode, i.mtime, i.size = kind, mode, epoch, len(data)
		        t.addfile(i, io.BytesIO(data) if data else None)
		    add("replaced", tarfile.REGTYPE, b"now a regular file\n")
		    add("opaque", tarfile.DIRTYPE, mode=0o755)
		    add("opaque/.wh..wh..opq", tarfile.REGTYPE)
		    add("opaque/z.txt", tarfile.REGTYPE, b"z: only survivor of the opaque dir\n")
	EOF
}

build_multilayer() {
	img="$1:$2"
	build_busybox "$1" "$2"

	# Layer 2: new files, a directory to be replaced, a directory to be made opaque,
	# a hardlink and symlinks.
	unpack_image "$img" "$work/bundle"
	r=$work/bundle/rootfs
	mkdir -p "$r/data/sub" "$r/replaced" "$r/opaque/nested"
	echo "alpha" >"$r/data/a.txt"
	echo "bravo, deleted in layer 3" >"$r/data/b.txt"
	echo "charlie" >"$r/data/sub/c.txt"
	echo "inside a directory replaced by a file in layer 3" >"$r/replaced/inner.txt"
	echo "x" >"$r/opaque/x.txt"
	echo "y" >"$r/opaque/nested/y.txt"
	ln "$r/data/a.txt" "$r/data/hardlink-to-a"
	ln -s a.txt "$r/data/symlink-to-a"
	ln -s /etc/os-release "$r/data/abs-symlink"
	chmod 600 "$r/data/sub/c.txt"
	chown 1:1 "$r/data/sub/c.txt" 2>/dev/null || true
	repack_image "$img" "$work/bundle"

	# Layer 3: a deletion (whiteout), a modified file, a new file.
	unpack_image "$img" "$work/bundle"
	r=$work/bundle/rootfs
	rm "$r/data/b.txt"
	echo "charlie, modified in layer 3" >"$r/data/sub/c.txt"
	echo "delta" >"$r/data/d.txt"
	repack_image "$img" "$work/bundle"

	# Layer 4: /replaced becomes a file, /opaque an opaque directory.
	opaque_layer_tar "$work/layer4.tar"
	umoci raw add-layer --image "$img" --history.created "$CREATED" \
		--history.created_by "mkimage.sh $kind (hand-written layer)" "$work/layer4.tar"

	set_config "$img"
}

build_big() {
	img="$1:$2"
	size_mb=$3
	layers=${4:-1}
	case $size_mb$layers in *[!0-9]*) die "SIZE_MB and N must be numbers" ;; esac
	[ "$layers" -ge 1 ] || die "N must be at least 1"
	build_busybox "$1" "$2"
	total=$((size_mb * 1024 * 1024))
	i=1
	while [ "$i" -le "$layers" ]; do
		unpack_image "$img" "$work/bundle"
		mkdir -p "$work/bundle/rootfs/big"
		# AES-CTR of zeros with a fixed key: incompressible and reproducible.
		bytes=$((total / layers))
		[ "$i" -eq "$layers" ] && bytes=$((total - (layers - 1) * (total / layers)))
		head -c "$bytes" /dev/zero |
			openssl enc -aes-128-ctr -nosalt -K "$(printf %032x "$i")" -iv "$(printf %032x 0)" \
				>"$work/bundle/rootfs/big/random-$i.bin"
		repack_image "$img" "$work/bundle"
		i=$((i + 1))
	done
	set_config "$img"
}

# Writes blob $2 (a file) into layout $1 and prints its digest.
put_blob() {
	hex=$(sha256sum "$2" | cut -d' ' -f1)
	mkdir -p "$1/blobs/sha256"
	cp "$2" "$1/blobs/sha256/$hex"
	echo "sha256:$hex"
}

build_index() {
	build_busybox "$1" "$2-amd64"
	unpack_image "$1:$2-amd64" "$work/bundle"
	echo linux/amd64 >"$work/bundle/rootfs/etc/platform"
	repack_image "$1:$2-amd64" "$work/bundle"
	set_config "$1:$2-amd64" --os linux --architecture amd64

	build_busybox "$1" "$2-arm64"
	unpack_image "$1:$2-arm64" "$work/bundle"
	echo linux/arm64/v8 >"$work/bundle/rootfs/etc/platform"
	repack_image "$1:$2-arm64" "$work/bundle"
	set_config "$1:$2-arm64" --os linux --architecture arm64

	# umoci writes no variant; add it to the arm64 config as Docker's images have it.
	"$PYTHON" - "$1" "$2" <<-'EOF'
		import hashlib, json, os, sys
		layout, tag = sys.argv[1], sys.argv[2]
		def blob(d):
		    return os.path.join(layout, "blobs", *d.split(":"))
		def put(obj):
		    data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
		    d = "sha256:" + hashlib.sha256(data).hexdigest()
		    with open(blob(d), "wb") as f:
		        f.write(data)
		    return d, len(data)
		with open(os.path.join(layout, "index.json")) as f:
		    index = json.load(f)
		REF = "org.opencontainers.image.ref.name"
		byref = {m.get("annotations", {}).get(REF): m for m in index["manifests"]}
		entries = []
		for suffix, plat in (("amd64", {"os": "linux", "architecture": "amd64"}),
		                     ("arm64", {"os": "linux", "architecture": "arm64", "variant": "v8"})):
		    desc = byref[tag + "-" + suffix]
		    with open(blob(desc["digest"])) as f:
		        manifest = json.load(f)
		    if "variant" in plat:
		        with open(blob(manifest["config"]["digest"])) as f:
		            config = json.load(f)
		        config["variant"] = plat["variant"]
		        manifest["config"]["digest"], manifest["config"]["size"] = put(config)
		        desc = dict(desc)
		        desc["digest"], desc["size"] = put(manifest)
		    entries.append({"mediaType": desc["mediaType"], "digest": desc["digest"],
		                    "size": desc["size"], "platform": plat})
		d, n = put({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		            "manifests": entries})
		index["manifests"] = [m for m in index["manifests"]
		                      if m.get("annotations", {}).get(REF) not in
		                      (tag, tag + "-amd64", tag + "-arm64")]
		index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
		                           "digest": d, "size": n, "annotations": {REF: tag}})
		tmp = os.path.join(layout, "index.json.tmp")
		with open(tmp, "w") as f:
		    json.dump(index, f, separators=(",", ":"))
		os.rename(tmp, os.path.join(layout, "index.json"))
	EOF
}

case $kind in
busybox)
	build_busybox "$dir" "$tag"
	set_config "$dir:$tag"
	;;
multilayer) build_multilayer "$dir" "$tag" ;;
big)
	[ $# -ge 3 ] || usage
	build_big "$dir" "$tag" "$3" "${4:-1}"
	;;
index) build_index "$dir" "$tag" ;;
*) usage ;;
esac
umoci gc --layout "$dir"
