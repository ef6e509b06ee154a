#!/usr/bin/env python3
"""Indexes an image of an OCI image layout as soci-snapshotter does, for tests.

    mksoci.py LAYOUT TAG [--min-size N] [--span N]

Each gzip layer of at least --min-size compressed bytes is written again as one gzip
member flushed (Z_SYNC_FLUSH) every --span bytes of tar stream, and gets a zTOC: the
flatbuffer of soci-snapshotter's ztoc/fbs/ztoc.fbs with the tar's file metadata (offsets
in the tar stream), zran checkpoints at the flush points (compressed offset, uncompressed
offset, bits 0, the 32 KiB window before them; the first after the 10-byte gzip header)
and the sha256 of each span's compressed bytes. Smaller layers stay as they are, without a
zTOC, as soci-snapshotter leaves them.

Writes into LAYOUT: the rewritten layers; the image manifest as TAG-soci (ref name
annotation); a SOCI index v1 manifest whose subject is that image manifest; the same image
manifest annotated with com.amazon.soci.index-digest of a SOCI index v2 manifest, as
TAG-soci-v2. Prints JSON: the digests of "image", "image_v2", "soci_v1", "soci_v2" (with
"soci_v1_size"), "ztocs" (every zTOC), and "empty" (the config blob of the indexes).
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import struct
import tarfile
import zlib

WIN = 32768
SOCI_V1 = "application/vnd.amazon.soci.index.v1+json"
SOCI_V2 = "application/vnd.amazon.soci.index.v2+json"
EMPTY = b"{}"


class FB:
    """A flatbuffer written front to back: every reference points forward."""

    def __init__(self):
        self.b = bytearray(4)

    def align(self):
        while len(self.b) % 4:
            self.b.append(0)

    def table(self, present):
        """A table whose field k (present[k]) is an 8-byte slot; returns its position."""
        self.align()
        n = len(present)
        v = len(self.b)
        vt = [4 + 2 * n, 4 + 8 * n] + [4 + 8 * k if present[k] else 0 for k in range(n)]
        self.b += struct.pack("<%dH" % len(vt), *vt)
        self.align()
        t = len(self.b)
        self.b += struct.pack("<i", t - v) + bytes(8 * n)
        return t

    def field(self, t, k):
        return t + 4 + 8 * k

    def set(self, at, fmt, v):
        struct.pack_into(fmt, self.b, at, v)

    def link(self, at, target):
        struct.pack_into("<I", self.b, at, target - at)

    def string(self, s):
        self.align()
        at = len(self.b)
        self.b += struct.pack("<I", len(s)) + s + b"\0"
        return at

    def offsets(self, n):
        self.align()
        at = len(self.b)
        self.b += struct.pack("<I", n) + bytes(4 * n)
        return at


def rfc3339(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


TYPES = {tarfile.REGTYPE: "reg", tarfile.AREGTYPE: "reg", tarfile.DIRTYPE: "dir",
         tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char",
         tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}


def ztoc(tar, blob, checkpoints):
    files = []
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        for ti in tf:
            files.append(ti)
    fb = FB()
    root = fb.table([True] * 6)
    fb.link(0, root)
    fb.link(fb.field(root, 0), fb.string(b"0.9"))
    fb.link(fb.field(root, 1), fb.string(b"imgfs tests"))
    fb.set(fb.field(root, 2), "<q", len(blob))
    fb.set(fb.field(root, 3), "<q", len(tar))
    toc = fb.table([True])
    fb.link(fb.field(root, 4), toc)
    vec = fb.offsets(len(files))
    fb.link(fb.field(toc, 0), vec)
    for i, ti in enumerate(files):
        xattrs = {k: v for k, v in ti.pax_headers.items() if k.startswith("SCHILY.xattr.")}
        present = [True] * 14
        present[4] = bool(ti.linkname)
        present[8] = present[9] = False
        present[13] = bool(xattrs)
        fm = fb.table(present)
        fb.link(vec + 4 + 4 * i, fm)
        fb.link(fb.field(fm, 0), fb.string(ti.name.encode()))
        fb.link(fb.field(fm, 1), fb.string(TYPES[ti.type].encode()))
        fb.set(fb.field(fm, 2), "<q", ti.offset_data)
        fb.set(fb.field(fm, 3), "<q", ti.size if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0)
        if ti.linkname:
            fb.link(fb.field(fm, 4), fb.string(ti.linkname.encode()))
        fb.set(fb.field(fm, 5), "<q", ti.mode)
        fb.set(fb.field(fm, 6), "<I", ti.uid)
        fb.set(fb.field(fm, 7), "<I", ti.gid)
        fb.link(fb.field(fm, 10), fb.string(rfc3339(ti.mtime).encode()))
        fb.set(fb.field(fm, 11), "<q", ti.devmajor)
        fb.set(fb.field(fm, 12), "<q", ti.devminor)
        if xattrs:
            xv = fb.offsets(len(xattrs))
            fb.link(fb.field(fm, 13), xv)
            for j, (k, v) in enumerate(sorted(xattrs.items())):
                x = fb.table([True, True])
                fb.link(xv + 4 + 4 * j, x)
                fb.link(fb.field(x, 0), fb.string(k.encode()))
                raw = v.encode("utf-8", "surrogateescape")
                fb.link(fb.field(x, 1), fb.string(raw))
    ci = fb.table([True] * 4)
    fb.link(fb.field(root, 5), ci)
    fb.set(fb.field(ci, 0), "<b", 1)
    fb.set(fb.field(ci, 1), "<i", len(checkpoints) - 1)
    dv = fb.offsets(len(checkpoints))
    fb.link(fb.field(ci, 2), dv)
    for i, (cin, cout) in enumerate(checkpoints):
        end = checkpoints[i + 1][0] if i + 1 < len(checkpoints) else len(blob)
        d = "sha256:" + hashlib.sha256(blob[cin:end]).hexdigest()
        fb.link(dv + 4 + 4 * i, fb.string(d.encode()))
    info = bytearray(struct.pack("<Iq", len(checkpoints), 0))
    for cin, cout in checkpoints:
        w = tar[max(0, cout - WIN):cout]
        info += struct.pack("<qqB", cin, cout, 0) + bytes(WIN - len(w)) + w
    fb.align()
    at = len(fb.b)
    fb.b += struct.pack("<I", len(info)) + info
    fb.link(fb.field(ci, 3), at)
    return bytes(fb.b)


def recompress(tar, span):
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    blob = bytearray()
    checkpoints = []
    for off in range(0, len(tar), span):
        blob += z.compress(tar[off:off + span])
        if off + span < len(tar):
            blob += z.flush(zlib.Z_SYNC_FLUSH)
            checkpoints.append((len(blob), off + span))
    blob += z.flush()
    return bytes(blob), [(10, 0)] + checkpoints


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("layout")
    ap.add_argument("tag")
    ap.add_argument("--min-size", type=int, default=1 << 20)
    ap.add_argument("--span", type=int, default=256 << 10)
    a = ap.parse_args()
    blobs = os.path.join(a.layout, "blobs", "sha256")

    def read(d):
        with open(os.path.join(blobs, d.split(":")[1]), "rb") as f:
            return f.read()

    def put(data):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, d), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + d, "size": len(data)}

    with open(os.path.join(a.layout, "index.json")) as f:
        index = json.load(f)
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == a.tag)
    manifest = json.loads(read(desc["digest"]))
    ztocs = []
    for layer in manifest["layers"]:
        if layer["size"] < a.min_size or not layer["mediaType"].endswith("gzip"):
            continue
        tar = gzip.decompress(read(layer["digest"]))
        blob, cps = recompress(tar, a.span)
        d = put(blob)
        layer["digest"], layer["size"] = d["digest"], d["size"]
        z = put(ztoc(tar, blob, cps))
        ztocs.append({"mediaType": "application/octet-stream", **z,
                      "annotations": {"com.amazon.soci.image-layer-digest": d["digest"],
                                      "com.amazon.soci.image-layer-mediaType": layer["mediaType"]}})
    empty = put(EMPTY)
    image = json.dumps(manifest).encode()
    image_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(image)}
    v1 = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "artifactType": SOCI_V1,
                     "config": {"mediaType": SOCI_V1, **empty}, "layers": ztocs,
                     "subject": image_desc}).encode()
    v1_desc = put(v1)
    v2 = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "artifactType": SOCI_V2,
                     "config": {"mediaType": SOCI_V2, **empty}, "layers": ztocs,
                     "annotations": {"com.amazon.soci.image-manifest-digest":
                                     image_desc["digest"]}}).encode()
    v2_desc = put(v2)
    manifest["annotations"] = {"com.amazon.soci.index-digest": v2_desc["digest"]}
    image_v2_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                     **put(json.dumps(manifest).encode())}
    for d, tag in ((image_desc, a.tag + "-soci"), (image_v2_desc, a.tag + "-soci-v2")):
        index["manifests"].append({**d, "annotations": {"org.opencontainers.image.ref.name": tag}})
    with open(os.path.join(a.layout, "index.json"), "w") as f:
        json.dump(index, f)
    print(json.dumps({"image": image_desc["digest"], "image_v2": image_v2_desc["digest"],
                      "soci_v1": v1_desc["digest"], "soci_v1_size": v1_desc["size"],
                      "soci_v2": v2_desc["digest"], "ztocs": [z["digest"] for z in ztocs],
                      "empty": empty["digest"]}))


if __name__ == "__main__":
    main()
