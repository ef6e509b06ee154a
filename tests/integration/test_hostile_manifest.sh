#!/bin/bash
# Hostile manifests and configs given as oci: layouts: thousands of layers, deeply nested
# or gigantic JSON, absurd sizes. Each must end in one clear line on stderr, within bounded
# time and memory, with no ref stored and nothing written outside the store.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_cmd /usr/bin/time

layout="$TESTDIR/hostile"
"$PYTHON" - "$layout" "$HELPERS" <<'PY'
import json, os, sys
sys.path.insert(0, sys.argv[2])
import mklayers as m

layout = sys.argv[1]
m.init_layout(layout)
layer = m.gz(m.Tar().file("hello", b"hi\n").bytes())
layer_desc = {"mediaType": m.MT_GZIP, "digest": m.put_blob(layout, layer), "size": len(layer)}
diff_id = m.diff_id(layer, m.MT_GZIP)


def tag(name, manifest_bytes):
    """Points tag NAME of the layout at a manifest blob given as raw bytes."""
    d = m.put_blob(layout, manifest_bytes)
    path = os.path.join(layout, "index.json")
    with open(path) as f:
        index = json.load(f)
    index["manifests"].append({"mediaType": m.MT_MANIFEST, "digest": d,
                               "size": len(manifest_bytes),
                               "annotations": {"org.opencontainers.image.ref.name": name}})
    with open(path, "w") as f:
        json.dump(index, f)


def manifest(layers, config_bytes=None, config_size=None):
    if config_bytes is None:
        config_bytes = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": [diff_id] * len(layers)}}).encode()
    cd = m.put_blob(layout, config_bytes)
    return json.dumps({"schemaVersion": 2, "mediaType": m.MT_MANIFEST,
                       "config": {"mediaType": m.MT_CONFIG, "digest": cd,
                                  "size": config_size or len(config_bytes)},
                       "layers": layers}).encode()


# A sane image first, to show that the layout itself is fine.
tag("sane", manifest([layer_desc]))
# 5,000 layers (all the same small blob).
tag("thousands", manifest([layer_desc] * 5000))
# Deeply nested JSON: 200,000 levels of arrays inside the manifest.
tag("deep", b'{"schemaVersion":2,"mediaType":"%s","x":%s%s}'
    % (m.MT_MANIFEST.encode(), b"[" * 200000, b"]" * 200000))
# A gigantic manifest: 6 MiB of annotations.
tag("giant", json.dumps({"schemaVersion": 2, "mediaType": m.MT_MANIFEST,
                         "annotations": {"pad": "x" * (6 << 20)}}).encode())
# A gigantic config: 9 MiB.
tag("giantconfig", manifest([layer_desc], json.dumps({
    "architecture": "amd64", "os": "linux", "config": {"Env": ["X=" + "y" * (9 << 20)]},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()))
# A config with 100,000 environment variables.
tag("envflood", manifest([layer_desc], json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["V%d=1" % i for i in range(100000)]},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()))
# Absurd sizes: a layer said to be 2^62 bytes, a config said to be 10^18 bytes.
tag("hugelayer", manifest([dict(layer_desc, size=1 << 62)]))
tag("hugeconfig", manifest([layer_desc], config_size=10 ** 18))
# A negative size and a size that is not a number.
tag("negsize", manifest([dict(layer_desc, size=-1)]))
tag("strsize", manifest([dict(layer_desc, size="12")]))
PY

sentinel="$TESTDIR/sentinel"
touch "$sentinel"
log "a sane image in the same layout pulls"
assert_ok imgfs pull -q "oci:$layout:sane"

for t in thousands deep giant giantconfig envflood hugelayer hugeconfig negsize strsize; do
	log "hostile: $t"
	use_store "store-$t"
	rc=0
	timeout 60 /usr/bin/time -f %M -o "$TESTDIR/$t.rss" "$IMGFS_BIN" pull -q "oci:$layout:$t" \
		>"$TESTDIR/$t.out" 2>"$TESTDIR/$t.err" || rc=$?
	err=$(cat "$TESTDIR/$t.err")
	echo "exit $rc: $err"
	[ "$rc" -ne 124 ] || fail "$t: the pull did not end within 60 s"
	[ "$rc" -ne 0 ] || fail "$t: the pull succeeded"
	[ "$rc" -lt 128 ] || fail "$t: the pull was killed by signal $((rc - 128))"
	assert_eq "$(grep -c . <<<"$err")" 1 "$t: lines on stderr"
	rss=$(tail -n 1 "$TESTDIR/$t.rss")
	echo "peak RSS ${rss} kB"
	[ "$rss" -lt 262144 ] || fail "$t: peak RSS ${rss} kB"
	[ ! -f "$IMGFS_ROOT/index.json" ] || assert_eq "$(store_nrefs)" 0 "$t: refs stored"
	[ ! -d "$IMGFS_ROOT/tmp" ] || assert_eq "$(ls -A "$IMGFS_ROOT/tmp")" "" "$t: files left in tmp/"
done

log "nothing written outside the stores"
changed=$(find "$TESTDIR" -newer "$sentinel" -not -path "$TESTDIR/store*" -not -name '*.out' \
	-not -name '*.err' -not -name '*.rss' -not -path "$TESTDIR" -not -name '.out' -not -name '.err' | head)
assert_eq "$changed" "" "files changed outside the stores"
