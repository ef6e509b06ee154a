#!/usr/bin/env python3
"""Writes an OCI image layout whose layers are eStargz, as stargz-snapshotter's estargz
package writes them, from directories.

    mkestargz.py OUT_DIR TAG DIR [DIR...] [--chunk-size N] [--small N]

Each DIR becomes one layer (bottom first): a tar.gz where
  - the tar headers of entries go into the gzip member that is open, together with the
    padding of the file before them;
  - a regular file's data starts a new gzip member, and every chunk of --chunk-size bytes
    of it too (TOC entry "reg" for the first chunk, "chunk" for the others: offset of the
    member, chunkOffset, chunkSize (absent for the last chunk), chunkDigest), except that
    files of at most --small bytes stay in the open member after their header (their
    innerOffset is where their data starts in that member's output);
  - then the TOC, stargz.index.json (JSON, version 1), as a tar entry in a member of its
    own, with the end-of-archive blocks;
  - then the 51-byte footer: an empty gzip member whose extra field "SG" holds the TOC's
    offset as 16 hex digits and "STARGZ".
The manifest annotates each layer with containerd.io/snapshot/stargz/toc.digest (sha256
of the TOC's JSON). Prints nothing; the layout's index.json names the manifest by TAG.
"""

import argparse
import datetime
import hashlib
import io
import json
import os
import struct
import tarfile
import zlib


def gzip_member(data):
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    return z.compress(data) + z.flush()


def footer(toc_off):
    sub = b"%016xSTARGZ" % toc_off
    extra = b"SG" + struct.pack("<H", len(sub)) + sub
    head = bytes([0x1F, 0x8B, 8, 4, 0, 0, 0, 0, 0, 255]) + struct.pack("<H", len(extra))
    out = head + extra + bytes([1, 0, 0, 0xFF, 0xFF]) + bytes(8)
    assert len(out) == 51
    return out


def modtime(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


class Layer:
    def __init__(self, chunk_size, small):
        self.blob = bytearray()
        self.open = None  # (offset of the member, its uncompressed bytes so far)
        self.tar = bytearray()  # the uncompressed stream, for the diff ID
        self.entries = []
        self.chunk_size = chunk_size
        self.small = small

    def write(self, data):
        if self.open is None:
            self.open = (len(self.blob), bytearray())
        self.open[1].extend(data)
        self.tar.extend(data)

    def close(self):
        if self.open is not None:
            self.blob.extend(gzip_member(bytes(self.open[1])))
            self.open = None

    def add(self, root, path):
        full = os.path.join(root, path)
        st = os.lstat(full)
        ti = tarfile.TarInfo(path)
        ti.mode = st.st_mode & 0o7777
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname = ti.gname = ""
        ti.mtime = int(st.st_mtime)
        ent = {"name": path, "mode": ti.mode, "uid": ti.uid, "gid": ti.gid,
               "modtime": modtime(st.st_mtime)}
        data = b""
        if os.path.islink(full):
            ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(full)
            ent.update(type="symlink", linkName=ti.linkname)
        elif os.path.isdir(full):
            ti.type = tarfile.DIRTYPE
            ent["type"] = "dir"
        elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in self.links:
            ti.type, ti.linkname = tarfile.LNKTYPE, self.links[(st.st_dev, st.st_ino)]
            ent.update(type="hardlink", linkName=ti.linkname)
        else:
            if st.st_nlink > 1:
                self.links[(st.st_dev, st.st_ino)] = path
            with open(full, "rb") as f:
                data = f.read()
            ti.size = len(data)
            ent.update(type="reg", size=len(data))
        self.write(ti.tobuf(format=tarfile.GNU_FORMAT))
        if not data:
            self.entries.append(ent)
            return
        ent["digest"] = "sha256:" + hashlib.sha256(data).hexdigest()
        done = 0
        while done < len(data):
            n = min(self.chunk_size, len(data) - done)
            chunk = data[done:done + n]
            if done > 0 or len(data) > self.small or self.open is None:
                self.close()
                self.write(b"")
            member, out = self.open
            e = ent if done == 0 else {"name": path, "type": "chunk"}
            e["offset"] = member
            if len(out) > 0:
                e["innerOffset"] = len(out)
            e["chunkOffset"] = done
            if done + n < len(data):
                e["chunkSize"] = n
            e["chunkDigest"] = "sha256:" + hashlib.sha256(chunk).hexdigest()
            self.entries.append(e)
            self.write(chunk)
            done += n
        pad = -len(data) % 512
        self.write(bytes(pad))

    def finish(self):
        self.close()
        toc = json.dumps({"version": 1, "entries": self.entries}, indent="\t").encode()
        ti = tarfile.TarInfo("stargz.index.json")
        ti.size = len(toc)
        ti.mtime = 0
        ti.uname = ti.gname = ""
        toc_tar = ti.tobuf(format=tarfile.USTAR_FORMAT) + toc + bytes(-len(toc) % 512)
        toc_tar += bytes(1024)
        self.tar.extend(toc_tar)
        toc_off = len(self.blob)
        self.blob.extend(gzip_member(toc_tar))
        self.blob.extend(footer(toc_off))
        return bytes(self.blob), "sha256:" + hashlib.sha256(toc).hexdigest()


def make_layer(root, chunk_size, small):
    layer = Layer(chunk_size, small)
    layer.links = {}
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            paths.append(rel)
        for name in sorted(filenames) + [d for d in dirnames
                                         if os.path.islink(os.path.join(dirpath, d))]:
            paths.append(os.path.normpath(os.path.join(rel, name)))
    for p in paths:
        layer.add(root, p)
    blob, toc_digest = layer.finish()
    return blob, toc_digest, "sha256:" + hashlib.sha256(bytes(layer.tar)).hexdigest()


def put_blob(out, data):
    d = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(out, "blobs", "sha256", d), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("tag")
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--chunk-size", type=int, default=4 << 20)
    ap.add_argument("--small", type=int, default=0)
    a = ap.parse_args()
    layers, diff_ids = [], []
    for d in a.dirs:
        blob, toc_digest, diff_id = make_layer(d, a.chunk_size, a.small)
        desc = put_blob(a.out, blob)
        desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        desc["annotations"] = {"containerd.io/snapshot/stargz/toc.digest": toc_digest}
        layers.append(desc)
        diff_ids.append(diff_id)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PATH=/bin:/usr/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cdesc = put_blob(a.out, config)
    cdesc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": cdesc, "layers": layers}).encode()
    mdesc = put_blob(a.out, manifest)
    mdesc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    mdesc["annotations"] = {"org.opencontainers.image.ref.name": a.tag}
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [mdesc]}, f)


if __name__ == "__main__":
    main()
