#!/bin/bash
# imgfs layer-store with the real podman (containers/storage 1.43): an Additional Layer
# Store at $STORE, podman with its own --root/--runroot in $TESTDIR and
# --storage-opt overlay.additionallayerstore=$STORE:ref, the tests' docker-registry.
# - pull + run of a multi-layer image: every layer came from the store (podman's overlay
#   dir for it holds an `additionallayer` file), the layers are counted as used, `info`
#   and `blob` are what podman reads, `podman push` of it gives the same layers;
# - an image of edge cases (whiteouts, opaque dirs, xattrs, hardlinks, special files, long
#   names): `podman image mount` equals `umoci unpack`, and a container writes, deletes
#   and renames over the layers (podman's own upper) while the store's layers stay as
#   they were;
# - the store restarts: podman runs the image again through the paths it kept;
# - an image served lazily (indexes published): its blob, and gc keeps what podman holds;
# - `podman rmi`, then `imgfs umount`: references back to zero, nothing left mounted;
# - an unknown reference or a digest that is not a layer: ENOENT at once, one log line;
#   a registry that refuses or stalls imgfs (fault proxy): podman falls back and
#   completes, within the client's timeouts.
. "$(dirname "$0")/lib.sh"
require_root
require_imgfs
require_cmd podman umoci skopeo jq fusermount3
[ -c /dev/fuse ] || skip "no /dev/fuse"

# podman reads the Docker config the tests isolate; an empty one is what a fresh user has.
echo '{"auths": {}}' >"$DOCKER_CONFIG/config.json"
STORE=$TESTDIR/als
PR=$TESTDIR/podman
. "$(dirname "$0")/als_lib.sh"
# Whatever podman left mounted goes before $TESTDIR is removed (podman's own mounts
# first, then the store).
defer imgfs umount "$STORE"
defer podman_leave "$PR"

store_log() { cat "$IMGFS_ROOT"/mounts/*/log; }

# additional_layers IMAGE: how many of IMAGE's layers podman took from the store, then
# how many it has.
additional_layers() {
	local top id n=0 all=0
	top=$(jq -er --arg n "$1" '.[] | select(.names | index($n)) | .layer' \
		"$PR/root/overlay-images/images.json") || fail "no image $1 in podman"
	id=$top
	while [ -n "$id" ]; do
		all=$((all + 1))
		[ -f "$PR/root/overlay/$id/additionallayer" ] && n=$((n + 1))
		id=$(jq -r --arg id "$id" '.[] | select(.id == $id) | .parent // ""' \
			"$PR/root/overlay-layers/layers.json")
	done
	echo "$n $all"
}

start_registry
build_image multilayer ml
push_image "$TESTDIR/images:ml" ml:1

log "the store serves at $STORE"
imgfs layer-store "$STORE" || fail "imgfs layer-store failed"
[ "$(awk -v m="$STORE" '$5 == m' /proc/self/mountinfo | wc -l)" = 1 ] || fail "$STORE is not mounted"
imgfs layer-store "$STORE" 2>"$TESTDIR/second.err" && fail "a second store at $STORE started"

log "podman pull + run of a multi-layer image, every layer from the store"
pm pull -q --tls-verify=false "$REGISTRY/ml:1" >/dev/null || fail "podman pull failed"
read -r n all < <(additional_layers "$REGISTRY/ml:1")
[ "$all" -ge 4 ] || fail "podman has $all layers of ml:1, expected 4"
assert_eq "$n" "$all" "layers podman took from the store"
[ -d "$STORE/$(b64 "$REGISTRY/ml:1")" ] || fail "no directory for $REGISTRY/ml:1 in $STORE"
used=$(layers_file | awk -v r="$REGISTRY/ml:1" '$1 == r && $3 > 0' | wc -l)
assert_eq "$used" "$all" "layers counted as used"
out=$(pm run --rm "${RUN_LIMITS[@]}" "$REGISTRY/ml:1" /bin/sh -c 'cat /data/layer2.txt 2>/dev/null; ls /' 2>&1) ||
	fail "podman run failed: $out"
assert_contains "$out" "bin"
# A layer's own files (info, blob) answer what podman reads.
top=$(skopeo inspect --tls-verify=false --raw "docker://$REGISTRY/ml:1" | jq -r '.layers[-1].digest')
ldir=$STORE/$(b64 "$REGISTRY/ml:1")/$top
jq -e --arg d "$top" '."compressed-diff-digest" == $d and (."diff-digest" | startswith("sha256:"))
	and .compression == 2 and ."diff-size" > 0' "$ldir/info" >/dev/null ||
	fail "bad info: $(cat "$ldir/info")"
assert_eq "$(sha256sum <"$ldir/blob" | cut -d' ' -f1)" "${top#sha256:}" "sha256 of the blob file"
# podman pushes such layers from their blob files: the copy has the very same layers.
pm push -q --tls-verify=false "$REGISTRY/ml:1" "$REGISTRY/copy:1" >/dev/null 2>&1 ||
	fail "podman push of an image from the store failed"
assert_eq "$(skopeo inspect --tls-verify=false "docker://$REGISTRY/copy:1" | jq -c .Layers)" \
	"$(skopeo inspect --tls-verify=false "docker://$REGISTRY/ml:1" | jq -c .Layers)" \
	"layers of the image podman pushed"

log "the store restarts: the paths podman keeps into it resolve again"
imgfs umount "$STORE" || fail "imgfs umount of the idle store failed"
imgfs layer-store "$STORE" || fail "imgfs layer-store did not start again"
out=$(pm run --rm "${RUN_LIMITS[@]}" "$REGISTRY/ml:1" /bin/sh -c 'ls /' 2>&1) ||
	fail "podman run after the restart failed: $out"
assert_contains "$out" "bin"

log "an image of edge cases: podman image mount equals umoci unpack"
python3 - "$TESTDIR" <<'PY' || fail "cannot write the edge-case layers"
import io, sys, tarfile
EPOCH = 946684800
def tar(path, entries):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            name, kind = e[0], e[1]
            i = tarfile.TarInfo(name)
            i.mtime, i.uid, i.gid = EPOCH, e[3].get("uid", 0) if len(e) > 3 else 0, 0
            i.type = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE,
                      "h": tarfile.LNKTYPE, "c": tarfile.CHRTYPE, "b": tarfile.BLKTYPE,
                      "p": tarfile.FIFOTYPE}[kind]
            opts = e[3] if len(e) > 3 else {}
            i.mode = opts.get("mode", 0o755 if kind == "d" else 0o644)
            data = b""
            if kind == "f":
                data = e[2].encode()
            elif kind in "lh":
                i.linkname = e[2]
            elif kind in "cb":
                i.devmajor, i.devminor = e[2]
            if "xattr" in opts:
                i.pax_headers = {"SCHILY.xattr." + k: v for k, v in opts["xattr"].items()}
            i.size = len(data)
            t.addfile(i, io.BytesIO(data) if data else None)
long = "n" * 251 + ".txt"
tar(sys.argv[1] + "/e1.tar", [
    ("a", "d", None), ("a/x", "f", "x\n"), ("a/y", "f", "y\n"),
    ("o", "d", None), ("o/old", "f", "old\n"), ("o/sub", "d", None), ("o/sub/old2", "f", "2\n"),
    ("gone", "d", None), ("gone/f", "f", "f\n"),
    ("keep", "f", "keep\n", {"mode": 0o4755, "uid": 1000}),
    ("xa", "f", "xattrs\n", {"xattr": {"user.imgfs": "value"}}),
    ("dev", "d", None), ("dev/null2", "c", (1, 3)), ("dev/loop9", "b", (7, 9)),
    ("dev/fifo", "p", None),
    ("h", "d", None), ("h/one", "f", "linked\n"), ("h/two", "h", "h/one"),
    ("long", "d", None), ("long/" + long, "f", "255 bytes of name\n"),
    ("ln", "l", "a/y"),
])
tar(sys.argv[1] + "/e2.tar", [
    ("a", "d", None), ("a/.wh.x", "f", ""),
    ("o", "d", None, {"mode": 0o750}), ("o/.wh..wh..opq", "f", ""), ("o/new", "f", "new\n"),
    (".wh.gone", "f", ""),
    ("h", "d", None), ("h/three", "f", "three\n"), ("h/four", "h", "h/three"),
    ("long/" + "m" * 255, "l", "../" + "x" * 300),
])
tar(sys.argv[1] + "/e3.tar", [
    (".wh.ln", "f", ""), ("ln", "d", None), ("ln/inside", "f", "a dir where a symlink was\n"),
    ("gone", "d", None, {"mode": 0o700}), ("gone/again", "f", "recreated\n"),
])
PY
python3 "$HELPERS/mklayers.py" wrap "$TESTDIR/images" edge --base "$TESTDIR/images:ml" \
	"$TESTDIR/e1.tar" "$TESTDIR/e2.tar" "$TESTDIR/e3.tar" || fail "mklayers.py wrap failed"
push_image "$TESTDIR/images:edge" edge:1
umoci unpack --image "$TESTDIR/images:edge" "$TESTDIR/ref-edge" >/dev/null || fail "umoci unpack failed"
# Its layer indexes are published: the store serves it lazily.
IMGFS_ROOT=$TESTDIR/push-store imgfs pull -q "$REGISTRY/edge:1" >/dev/null || fail "imgfs pull failed"
IMGFS_ROOT=$TESTDIR/push-store imgfs index push -q "$REGISTRY/edge:1" >/dev/null ||
	fail "imgfs index push failed"
pm pull -q --tls-verify=false "$REGISTRY/edge:1" >/dev/null || fail "podman pull of edge:1 failed"
store_log | grep -q "$REGISTRY/edge:1: .*fetched as they are read" ||
	fail "edge:1 was not served lazily: $(store_log | grep edge | tail -n 2)"
read -r n all < <(additional_layers "$REGISTRY/edge:1")
assert_eq "$n" "$all" "layers of edge:1 podman took from the store"
# The blob of a lazily served layer is fetched as it is read, and is the layer's.
top=$(skopeo inspect --tls-verify=false --raw "docker://$REGISTRY/edge:1" | jq -r '.layers[-1].digest')
assert_eq "$(sha256sum <"$STORE/$(b64 "$REGISTRY/edge:1")/$top/blob" | cut -d' ' -f1)" \
	"${top#sha256:}" "sha256 of a lazily served blob"
# What podman holds is kept from gc (the lazy image is no ref of the store yet).
imgfs gc >/dev/null || fail "imgfs gc failed"
edge_manifest=$(skopeo inspect --tls-verify=false --raw "docker://$REGISTRY/edge:1" | sha256sum | cut -d' ' -f1)
[ -f "$IMGFS_ROOT/blobs/sha256/$edge_manifest" ] || fail "gc removed the manifest of edge:1"
grep -qx "sha256:$edge_manifest" "$IMGFS_ROOT"/mounts/*/held || fail "edge:1 is not held"
mnt=$(pm image mount "$REGISTRY/edge:1") || fail "podman image mount failed"
python3 "$HELPERS/treecmp.py" --no-root "$TESTDIR/ref-edge/rootfs" "$mnt" ||
	fail "podman's view of edge:1 differs from umoci unpack"
pm image unmount "$REGISTRY/edge:1" >/dev/null || fail "podman image unmount failed"

log "a container writes, deletes and renames over the store's layers"
out=$(pm run --rm "${RUN_LIMITS[@]}" "$REGISTRY/edge:1" /bin/sh -c '
	set -e
	echo changed >>/keep; rm /a/y; mv /o/new /o/renamed; mkdir /made; echo w >/made/f
	rm -r /h; echo later >/long/'"$(printf 'n%.0s' $(seq 251))"'.txt
	cat /keep; echo "a:$(ls /a) o:$(ls /o) made:$(ls /made)"
	[ ! -e /h ] && echo h-gone; cat /long/n*.txt' 2>&1) ||
	fail "the container could not change its rootfs: $out"
assert_eq "$out" "$(printf 'keep\nchanged\na: o:renamed made:f\nh-gone\nlater')" "the container's view"
# The layers themselves did not change: a new container sees the image again.
mnt=$(pm image mount "$REGISTRY/edge:1") || fail "podman image mount failed"
python3 "$HELPERS/treecmp.py" --no-root "$TESTDIR/ref-edge/rootfs" "$mnt" ||
	fail "edge:1 changed after a container wrote over it"
pm image unmount "$REGISTRY/edge:1" >/dev/null

log "unknown references and digests: ENOENT at once, one log line each"
bogus=$(b64 "$REGISTRY/nothing:here")
start=$(date +%s%N)
stat "$STORE/$bogus/sha256:$(printf '0%.0s' $(seq 64))/diff" >/dev/null 2>&1 &&
	fail "an unknown reference was served"
ms=$((($(date +%s%N) - start) / 1000000))
[ "$ms" -lt 15000 ] || fail "the lookup of an unknown reference took $ms ms"
assert_eq "$(store_log | grep -c "$REGISTRY/nothing:here: not served")" 1 "log lines for it"
stat "$STORE/$(b64 "$REGISTRY/ml:1")/sha256:$(printf '1%.0s' $(seq 64))/diff" >/dev/null 2>&1 &&
	fail "a digest that is not a layer was served"
stat "$STORE/not-base64!/x" >/dev/null 2>&1 && fail "a name that is not base64 was served"
# Only the store's owner may make it pull: another user cannot look names up.
setpriv --reuid=65534 --regid=65534 --clear-groups stat "$STORE/$(b64 "$REGISTRY/other:2")" \
	>/dev/null 2>&1 && fail "another user looked a reference up"
store_log | grep -q "other:2" && fail "another user's lookup started a resolution"

log "a registry refusing imgfs: podman falls back to its own download"
start_faultproxy "$REGISTRY_URL"
# podman's storage of its own, without the layers it already took from the store.
PR_MAIN=$PR
PR=$TESTDIR/podman2
defer podman_leave "$PR"
# podman GETs the manifest once, then imgfs resolves the reference: refuse imgfs.
proxy_rules '[{"match": "GET /v2/ml/manifests/", "skip": 1, "action": "status", "status": 503}]'
pm pull -q --tls-verify=false "$PROXY/ml:1" >/dev/null || fail "podman did not fall back"
read -r n all < <(additional_layers "$PROXY/ml:1")
assert_eq "$n" 0 "layers of $PROXY/ml:1 from the store"
[ "$all" -ge 4 ] || fail "podman has $all layers of $PROXY/ml:1"
assert_eq "$(store_log | grep -c "$PROXY/ml:1: not served")" 1 "log lines for the refused image"
out=$(pm run --rm "${RUN_LIMITS[@]}" "$PROXY/ml:1" /bin/echo fallback-ok 2>&1) ||
	fail "podman run after the fallback failed: $out"
assert_eq "$out" fallback-ok "run after the fallback"
pm rmi -a -f >/dev/null || fail "podman rmi failed"
# A registry that stalls imgfs's requests: bounded by the client's low-speed timeout.
skopeo copy -q --dest-tls-verify=false "oci:$TESTDIR/images:edge" "docker://$REGISTRY/stall:1" ||
	fail "cannot push stall:1"
proxy_rules '[{"match": "GET /v2/stall/manifests/", "skip": 1, "action": "stall", "after": 0, "seconds": 600}]'
start=$(date +%s)
pm pull -q --tls-verify=false "$PROXY/stall:1" >/dev/null || fail "podman did not fall back from a stall"
secs=$(($(date +%s) - start))
echo "podman pull with imgfs stalled: $secs s"
[ "$secs" -lt 60 ] || fail "a stalled registry held podman's pull for $secs s"
store_log | grep -q "$PROXY/stall:1: not served" || fail "no log line for the stalled image"
pm rmi -a -f >/dev/null || fail "podman rmi failed"
PR=$PR_MAIN

log "podman rmi, then imgfs umount: references back to zero, nothing mounted"
pm rm -a -f >/dev/null 2>&1
pm rmi -a -f >/dev/null || fail "podman rmi failed"
held=$(layers_file | awk '$3 != 0' | wc -l)
assert_eq "$held" 0 "layers still held after podman rmi"
umount -R "$PR/root/overlay" 2>/dev/null || true
imgfs umount "$STORE" || fail "imgfs umount failed"
left=$(awk -v d="$STORE" 'index($5, d) == 1' /proc/self/mountinfo | wc -l)
assert_eq "$left" 0 "mounts left under $STORE"
[ -z "$(ls "$IMGFS_ROOT/mounts")" ] || fail "state left in $IMGFS_ROOT/mounts"
log "ok"
