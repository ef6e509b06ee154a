#!/usr/bin/env python3
"""Writes OCI images whose layers have exactly the tar headers a test needs.

    mklayers.py wrap LAYOUT TAG [--base LAYOUT:TAG] [--plain] LAYER.tar...
        an image of the given tar files (gzip-compressed unless --plain; a file that is
        already zstd-compressed is kept as it is), on top of the layers of the --base image
    mklayers.py case LAYOUT NAME [--base LAYOUT:TAG]
        the generated image NAME (tag NAME); `mklayers.py list` names them
    mklayers.py bomb-tar GIB
        writes to stdout a tar holding one file of GIB GiB of zeros (for a zstd bomb)
    mklayers.py docker-save OUT.tar LAYOUT TAG REPOTAG
        a `docker save` archive (legacy layout: ID/layer.tar, ID/json, ID/VERSION,
        CONFIG.json, manifest.json, repositories) of the image LAYOUT:TAG with its layers
        uncompressed, plus one small layer added twice; the second copy is stored as a
        symlink to the first, as docker did before 25.0

Layouts are created when missing; an existing tag is replaced, other tags are kept.
Output is deterministic: fixed mtimes, gzip without a timestamp, seeded data.
Python standard library only.
"""
import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile
import zlib

EPOCH = 946684800
CREATED = "2000-01-01T00:00:00Z"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(layout, data):
    d = sha256(data)
    path = os.path.join(layout, "blobs", "sha256", d[7:])
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)
    return d


def get_blob(layout, digest):
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":")[1]), "rb") as f:
        return f.read()


def init_layout(layout):
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    if not os.path.exists(os.path.join(layout, "oci-layout")):
        with open(os.path.join(layout, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
    if not os.path.exists(os.path.join(layout, "index.json")):
        with open(os.path.join(layout, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": []}, f)


def read_image(layout, tag):
    """Returns (manifest, config) of LAYOUT:TAG."""
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            manifest = json.loads(get_blob(layout, m["digest"]))
            return manifest, json.loads(get_blob(layout, manifest["config"]["digest"]))
    sys.exit("mklayers: %s has no tag %s" % (layout, tag))


def diff_id(blob, media_type):
    if media_type.endswith("gzip"):
        try:
            return sha256(gzip.decompress(blob))
        except (OSError, EOFError, zlib.error):
            return sha256(blob)  # a deliberately broken layer: any diff_id will do
    return sha256(blob)


def write_image(layout, tag, layers, base=None):
    """layers: list of (blob bytes, media type[, diff_id]). base: (layout, tag) whose layers
    go first."""
    init_layout(layout)
    descs, diff_ids = [], []
    if base:
        bm, bc = read_image(*base)
        for d, did in zip(bm["layers"], bc["rootfs"]["diff_ids"]):
            if base[0] != layout:
                put_blob(layout, get_blob(base[0], d["digest"]))
            descs.append({"mediaType": d["mediaType"], "digest": d["digest"],
                          "size": d["size"]})
            diff_ids.append(did)
    for layer in layers:
        blob, mt = layer[0], layer[1]
        descs.append({"mediaType": mt, "digest": put_blob(layout, blob), "size": len(blob)})
        diff_ids.append(layer[2] if len(layer) > 2 else diff_id(blob, mt))
    config = json.dumps({
        "created": CREATED, "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": put_blob(layout, config),
                   "size": len(config)},
        "layers": descs,
    }, sort_keys=True).encode()
    md = put_blob(layout, manifest)
    path = os.path.join(layout, "index.json")
    with open(path) as f:
        index = json.load(f)
    key = "org.opencontainers.image.ref.name"
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get(key) != tag]
    index["manifests"].append({"mediaType": MT_MANIFEST, "digest": md, "size": len(manifest),
                               "annotations": {key: tag}})
    with open(path + ".tmp", "w") as f:
        json.dump(index, f)
    os.rename(path + ".tmp", path)


def zstd_diff_id(path):
    """The digest of a zstd file's content, through the zstd command (not in the stdlib)."""
    import subprocess
    h = hashlib.sha256()
    with subprocess.Popen(["zstd", "-dcq", path], stdout=subprocess.PIPE) as p:
        while chunk := p.stdout.read(1 << 20):
            h.update(chunk)
    if p.returncode:
        sys.exit("mklayers: zstd -d %s failed" % path)
    return "sha256:" + h.hexdigest()


def gz(data):
    return gzip.compress(data, compresslevel=6, mtime=0)


# ---------------------------------------------------------------------------------------
# Tar writing


class Tar:
    """A tar stream built entry by entry, in memory."""

    def __init__(self, fmt=tarfile.PAX_FORMAT):
        self.buf = io.BytesIO()
        self.t = tarfile.open(fileobj=self.buf, mode="w", format=fmt)
        self.offsets = []  # offset of each entry's (first) header

    def add(self, name, kind=tarfile.REGTYPE, data=b"", mode=None, link="", uid=0, gid=0):
        i = tarfile.TarInfo(name)
        i.type, i.mtime, i.uid, i.gid, i.linkname = kind, EPOCH, uid, gid, link
        i.mode = mode if mode is not None else (0o755 if kind == tarfile.DIRTYPE else 0o644)
        i.size = len(data) if kind == tarfile.REGTYPE else 0
        self.offsets.append(self.buf.tell())
        self.t.addfile(i, io.BytesIO(data) if i.size else None)
        return self

    def file(self, name, data, mode=0o644):
        return self.add(name, data=data if isinstance(data, bytes) else data.encode(),
                        mode=mode)

    def dir(self, name, mode=0o755):
        return self.add(name, tarfile.DIRTYPE, mode=mode)

    def symlink(self, name, target):
        return self.add(name, tarfile.SYMTYPE, mode=0o777, link=target)

    def hardlink(self, name, target):
        return self.add(name, tarfile.LNKTYPE, link=target)

    def bytes(self):
        self.t.close()
        return self.buf.getvalue()


def raw_header(name, size, kind=b"0", link=b""):
    """One ustar header block with a correct checksum, names as given (no checks)."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % EPOCH
    h[156:157] = kind
    h[157:157 + len(link)] = link
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"        "
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


# ---------------------------------------------------------------------------------------
# Generated images. Each returns a list of (blob, media type).


def case_longnames():
    name255 = "n" * 251 + ".txt"
    deep = "/".join("level%02d-%s" % (i, "d" * 16) for i in range(48))  # 1,200+ bytes
    pax = (Tar(tarfile.PAX_FORMAT)
           .dir("long").file("long/" + name255, "pax name of 255 bytes\n")
           .dir("deep"))
    path = "deep"
    for comp in deep.split("/"):
        path += "/" + comp
        pax.dir(path)
    pax.file(path + "/" + name255, "at the bottom of a path longer than 1024 bytes\n")
    pax.symlink("long/link-to-deep", path + "/" + name255)
    pax.hardlink("long/hardlink-to-deep", path + "/" + name255)
    gnu = (Tar(tarfile.GNU_FORMAT)
           .dir("gnu").file("gnu/" + "g" * 255, "GNU long name of 255 bytes\n")
           .symlink("gnu/" + "s" * 255, "../" + "x" * 1000))
    return [(gz(pax.bytes()), MT_GZIP), (gz(gnu.bytes()), MT_GZIP)]


def case_manylayers(n=120):
    """n layers: layer i adds many/fI and many/dirI/x, removes many/f(I-1) when i is odd,
    and every tenth layer makes many/opq opaque and refills it."""
    layers = []
    for i in range(n):
        t = Tar()
        t.dir("many")
        t.file("many/f%03d" % i, "layer %d\n" % i)
        t.dir("many/dir%03d" % i).file("many/dir%03d/x" % i, "x%d\n" % i)
        if i % 2 == 1:
            t.file("many/.wh.f%03d" % (i - 1), b"")
        if i % 10 == 0:
            t.dir("many/opq")
            if i > 0:
                t.file("many/opq/.wh..wh..opq", b"")
            t.file("many/opq/from%03d" % i, "opaque refill %d\n" % i)
        else:
            t.dir("many/opq").file("many/opq/add%03d" % i, "add %d\n" % i)
        if i == n - 1:
            t.file("many/.wh.dir%03d" % (i - 1), b"")
        layers.append((gz(t.bytes()), MT_GZIP))
    return layers


def case_dotdot():
    t = (Tar()
         .file("../imgfs-escape-dotdot", "escaped?\n")
         .file("../../../../../../tmp/imgfs-escape-dotdot2", "escaped?\n")
         .dir("inside")
         .file("inside/../../imgfs-escape-dotdot3", "escaped?\n")
         .file("/tmp/imgfs-escape-abs", "absolute path, kept inside the image\n")
         .file("/etc/imgfs-abs-etc", "absolute path, kept inside the image\n")
         .file("./kept", "kept\n")
         .hardlink("hl-dotdot", "../../../../etc/hostname"))
    return [(gz(t.bytes()), MT_GZIP)]


def case_symlinks():
    l1 = (Tar()
          .dir("etc").file("etc/shadow", "image shadow\n")
          .symlink("etc/passwd", "../../../../etc/shadow")
          .symlink("a", "/tmp")
          .symlink("up", "../../../../../tmp")
          .symlink("etcdir", "/etc"))
    l2 = (Tar()
          .file("a/imgfs-escape-evil", "written through a symlink?\n")
          .file("up/imgfs-escape-evil2", "written through a symlink?\n")
          .file("etcdir/imgfs-escape-evil3", "written through a symlink?\n"))
    return [(gz(l1.bytes()), MT_GZIP), (gz(l2.bytes()), MT_GZIP)]


def case_hardlinks():
    t = (Tar()
         .dir("etc").file("etc/shadow", "image shadow\n")
         .hardlink("hl-abs", "/etc/shadow")
         .hardlink("hl-out", "../../../../../etc/shadow")
         .hardlink("hl-missing", "nonexistent")
         .hardlink("hl-forward", "later")
         .file("later", "defined after its hardlink\n")
         .dir("d")
         .hardlink("hl-dir", "d")
         .symlink("sl", "/etc")
         .hardlink("hl-through-symlink", "sl/shadow"))
    return [(gz(t.bytes()), MT_GZIP)]


def case_whiteouts():
    lower = (Tar()
             .dir("etc").file("etc/keep", "lower file, must survive\n")
             .file("x", "lower x\n"))
    upper = (Tar()
             .file(".wh..", b"")
             .file("../.wh.x", b"")
             .file("etc/.wh..", b"")
             .file("etc/.wh...", b"")
             .file("./.wh..wh..opq/../x", b"")
             .file("/.wh.imgfs-nothing", b""))
    return [(gz(lower.bytes()), MT_GZIP), (gz(upper.bytes()), MT_GZIP)]


def case_duplicates():
    t = (Tar()
         .file("dup", "first\n")
         .file("dup", "second\n")
         .file("dup", "third: the last one wins\n")
         .file("file-then-dir", "a file first\n")
         .dir("file-then-dir")
         .file("file-then-dir/inner", "inner\n")
         .dir("dir-then-file")
         .file("dir-then-file/inner", "lost with its directory\n")
         .file("dir-then-file", "a file last\n")
         .symlink("link-then-file", "dup")
         .file("link-then-file", "a file replaces the symlink\n"))
    return [(gz(t.bytes()), MT_GZIP)]


def case_badchecksum():
    t = Tar(tarfile.USTAR_FORMAT).file("first", "first\n").file("second", "second\n")
    data = bytearray(t.bytes())
    off = t.offsets[1] + 148
    data[off:off + 8] = b"0000001\0"  # the sum of a header is never 1
    return [(gz(bytes(data)), MT_GZIP)]


def _bulky_tar():
    rnd = random.Random(4)
    t = Tar()
    for i in range(8):
        t.file("f%d" % i, bytes(rnd.getrandbits(8) for _ in range(64 << 10)))
    return t.bytes()


def case_truncatedgzip():
    blob = gz(_bulky_tar())
    return [(blob[:len(blob) // 2], MT_GZIP)]


def case_corruptgzip():
    blob = bytearray(gz(_bulky_tar()))
    mid = len(blob) // 2
    for k in range(mid, mid + 64):
        blob[k] ^= 0x5A
    return [(bytes(blob), MT_GZIP)]


def case_badcrc():
    blob = bytearray(gz(_bulky_tar()))
    blob[-8] ^= 0xFF  # the member's CRC32: the deflate data itself is intact
    return [(bytes(blob), MT_GZIP)]


def case_notatar():
    rnd = random.Random(5)
    return [(gz(bytes(rnd.getrandbits(8) for _ in range(100000))), MT_GZIP)]


def case_longpath():
    name = "/".join(["p" * 200] * 25)  # 5,024 bytes: more than PATH_MAX
    return [(gz(Tar().file(name, "too deep\n").bytes()), MT_GZIP)]


def case_bigsparse():
    """A pax 1.0 sparse file whose header claims 2^50 bytes (1 PiB) with one 4 KiB
    segment at the start: written by hand, tarfile cannot write sparse entries."""
    real = 1 << 50
    seg = b"s" * 4096
    sparse_map = b"1\n0\n4096\n"
    sparse_map += b"\0" * (-len(sparse_map) % 512)
    payload = sparse_map + seg
    recs = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
            "GNU.sparse.name": "huge-sparse", "GNU.sparse.realsize": str(real)}
    body = b""
    for k, v in recs.items():
        rec = " %s=%s\n" % (k, v)
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n = len(str(n)) + len(rec)
        body += ("%d%s" % (n, rec)).encode()
    out = raw_header(b"./PaxHeaders/huge-sparse", len(body), b"x")
    out += body + b"\0" * (-len(body) % 512)
    out += raw_header(b"./GNUSparseFile.0/huge-sparse", len(payload))
    out += payload + b"\0" * (-len(payload) % 512)
    out += b"\0" * 1024
    return [(gz(out), MT_GZIP)]


def case_selinux():
    """One file with an SELinux label (pax SCHILY.xattr.security.selinux), one without."""
    t = Tar().dir("labels").file("labels/plain", "no label\n")
    i = tarfile.TarInfo("labels/labelled")
    data = b"labelled\n"
    i.size, i.mtime, i.mode = len(data), EPOCH, 0o644
    i.pax_headers = {"SCHILY.xattr.security.selinux": "system_u:object_r:bin_t:s0"}
    t.offsets.append(t.buf.tell())
    t.t.addfile(i, io.BytesIO(data))
    return [(gz(t.bytes()), MT_GZIP)]


def case_bomb(gib=4):
    """One tar entry of GIB GiB of zeros in about GIB MiB of gzip: the same 64 MiB-of-zeros
    gzip member repeated (concatenated members are one gzip stream)."""
    size = gib << 30
    info = tarfile.TarInfo("zeros")
    info.size, info.mtime, info.mode = size, EPOCH, 0o644
    hdr = info.tobuf(format=tarfile.GNU_FORMAT)
    chunk = 64 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = c.compress(b"\0" * chunk) + c.flush()
    blob = gz(hdr) + member * (size // chunk) + gz(b"\0" * 1024)
    h, zeros = hashlib.sha256(hdr), bytes(chunk)
    for _ in range(size // chunk):
        h.update(zeros)
    h.update(zeros[:1024])
    return [(blob, MT_GZIP, "sha256:" + h.hexdigest())]


CASES = {
    "longnames": case_longnames, "manylayers": case_manylayers, "dotdot": case_dotdot,
    "symlinks": case_symlinks, "hardlinks": case_hardlinks, "whiteouts": case_whiteouts,
    "duplicates": case_duplicates, "badchecksum": case_badchecksum,
    "truncatedgzip": case_truncatedgzip, "corruptgzip": case_corruptgzip,
    "badcrc": case_badcrc, "notatar": case_notatar, "longpath": case_longpath,
    "bigsparse": case_bigsparse, "bomb": case_bomb, "selinux": case_selinux,
}


# ---------------------------------------------------------------------------------------
# docker save


def docker_save(out, layout, tag, repotag):
    manifest, config = read_image(layout, tag)
    tars = []
    for d in manifest["layers"]:
        blob = get_blob(layout, d["digest"])
        tars.append(gzip.decompress(blob) if d["mediaType"].endswith("gzip") else blob)
    extra = Tar().dir("etc").file("etc/added-twice", "a layer stored twice\n").bytes()
    tars += [extra, extra]
    config = dict(config)
    config["rootfs"] = {"type": "layers", "diff_ids": [sha256(t) for t in tars]}
    config["history"] = [{"created": CREATED, "created_by": "layer %d" % i}
                         for i in range(len(tars))]
    cfg = json.dumps(config, sort_keys=True).encode()
    cfg_name = sha256(cfg)[7:] + ".json"

    def add(t, name, data=None, link=None, kind=tarfile.REGTYPE):
        i = tarfile.TarInfo(name)
        i.mtime, i.mode = EPOCH, 0o644
        if kind == tarfile.DIRTYPE:
            i.type, i.mode = kind, 0o755
        elif link is not None:
            i.type, i.linkname, i.mode = tarfile.SYMTYPE, link, 0o777
        else:
            i.size = len(data)
        t.addfile(i, io.BytesIO(data) if data else None)

    names, ids, parent = [], [], ""
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as t:
        for n, data in enumerate(tars):
            # legacy v1 layer IDs: a chain over the diff_ids
            lid = hashlib.sha256((parent + " " + sha256(data)).encode()).hexdigest()
            ids.append(lid)
            add(t, lid, kind=tarfile.DIRTYPE)
            add(t, lid + "/VERSION", b"1.0")
            v1 = {"id": lid, "created": CREATED}
            if parent:
                v1["parent"] = parent
            add(t, lid + "/json", json.dumps(v1).encode())
            first = next(k for k in range(n + 1) if tars[k] == data)
            if first < n:
                add(t, lid + "/layer.tar", link="../%s/layer.tar" % ids[first])
            else:
                add(t, lid + "/layer.tar", data)
            names.append(lid + "/layer.tar")
            parent = lid
        add(t, cfg_name, cfg)
        repo, _, rtag = repotag.rpartition(":")
        add(t, "manifest.json", json.dumps(
            [{"Config": cfg_name, "RepoTags": [repotag], "Layers": names}]).encode())
        add(t, "repositories", json.dumps({repo: {rtag: ids[-1]}}).encode())


def main(argv):
    if len(argv) >= 2 and argv[1] == "list":
        print("\n".join(sorted(CASES)))
        return 0
    if len(argv) >= 4 and argv[1] in ("wrap", "case"):
        layout, what, rest = argv[2], argv[3], argv[4:]
        base, plain = None, False
        while rest and rest[0].startswith("--"):
            if rest[0] == "--base" and len(rest) > 1:
                base = tuple(rest[1].rsplit(":", 1))
                rest = rest[2:]
            elif rest[0] == "--plain":
                plain, rest = True, rest[1:]
            else:
                sys.exit("mklayers: unknown option %s" % rest[0])
        if argv[1] == "case":
            if what not in CASES or rest:
                sys.exit("mklayers: unknown case %s (see mklayers.py list)" % what)
            layers = CASES[what]()
        else:
            layers = []
            for path in rest:
                with open(path, "rb") as f:
                    data = f.read()
                if data[:4] == b"\x28\xb5\x2f\xfd":  # already zstd: kept as it is
                    layers.append((data, MT_ZSTD, zstd_diff_id(path)))
                else:
                    layers.append((data, MT_TAR) if plain else (gz(data), MT_GZIP))
        write_image(layout, what, layers, base)
        return 0
    if len(argv) == 3 and argv[1] == "bomb-tar":
        info = tarfile.TarInfo("zeros")
        info.size, info.mtime, info.mode = int(argv[2]) << 30, EPOCH, 0o644
        out, zeros = sys.stdout.buffer, bytes(64 << 20)
        out.write(info.tobuf(format=tarfile.GNU_FORMAT))
        for _ in range(info.size // len(zeros)):
            out.write(zeros)
        out.write(zeros[:1024])
        return 0
    if len(argv) == 6 and argv[1] == "docker-save":
        docker_save(argv[2], argv[3], argv[4], argv[5])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
