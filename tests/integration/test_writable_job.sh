#!/bin/sh
# A realistic job in the writable mount: unpack a tarball of 3,000 files, move directories
# around (the image's too), delete half of the files and some of the image's, append, sed -i,
# chmod -R, chown -R, remove the empty directories. The same job on a plain copy of the
# image's tree must give the same tree (treecmp.py; mtimes set during the job compare as
# "set during the job": the two jobs run at different times, every other mtime, the
# directories' included, must be equal). Then persistence: umount, mount again with the
# same --upper, the tree is unchanged. Then durability: a file written and fsynced survives
# a SIGKILLed daemon, `imgfs umount` and a new mount.
#
# WRITABLE_DIFF_SELFTEST=1 runs the mount side on the kernel's overlayfs instead of imgfs
# (no daemon to kill there: durability is then only an umount and a mount).
set -u

. "$(dirname "$0")/writable_lib.sh"

writable_require

writable_workdir wjob

layout=$WORK/layout
sh "$TOP/contrib/mkimage.sh" multilayer "$layout:job" >/dev/null || fail "mkimage.sh failed"
umoci unpack --image "$layout:job" "$WORK/lowerbundle" >/dev/null || fail "umoci unpack failed"
lower=$WORK/lowerbundle/rootfs
mnt=$WORK/mnt
upper=$WORK/upper

# writable_mount: the mount under test, over $upper (created or reused).
writable_mount() {
	writable_side "$mnt" "$upper" "$lower" "oci:$layout:job"
}

# The tarball: 3,000 files of 0 to 64 KiB in 120 directories, symlinks, hardlinks, a few
# modes and owners, fixed mtimes.
tarball=$WORK/job.tar
python3 - "$tarball" <<'EOF' || fail "cannot make the tarball"
import io, random, sys, tarfile
rng = random.Random(42)
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    def add(name, kind, data=b"", mode=0o644, owner=0, **kw):
        i = tarfile.TarInfo(name)
        i.type, i.mode, i.size = kind, mode, len(data)
        i.uid = i.gid = owner
        i.mtime = 1104537600 + rng.randrange(10**8)
        for k, v in kw.items():
            setattr(i, k, v)
        t.addfile(i, io.BytesIO(data) if data else None)
    add("src", tarfile.DIRTYPE, mode=0o755)
    files = []
    for d in range(30):
        add("src/d%02d" % d, tarfile.DIRTYPE, mode=0o755)
        for s in range(4):
            sub = "src/d%02d/s%d" % (d, s)
            add(sub, tarfile.DIRTYPE, mode=rng.choice([0o755, 0o750, 0o700]))
            for f in range(25):
                size = int(2 ** rng.uniform(0, 16)) - 1
                name = "%s/f%03d" % (sub, f)
                add(name, tarfile.REGTYPE, rng.randbytes(size),
                    mode=rng.choice([0o644, 0o644, 0o600, 0o755]), owner=rng.choice([0, 0, 1000]))
                files.append(name)
    for i in range(40):
        add("src/d%02d/link%02d" % (i % 30, i), tarfile.SYMTYPE, mode=0o777,
            linkname="s0/f%03d" % (i % 25))
    for i in range(20):
        add("src/d%02d/s3/hard%02d" % (i, i), tarfile.LNKTYPE, linkname=files[i * 97])
EOF
[ "$(tar -tf "$tarball" | wc -l)" -gt 3000 ] || fail "tarball too small"

# job ROOT: the job, identical for both trees; fails on the first failing command.
job() {
	r=$1
	mkdir "$r/job" &&
		tar -xf "$tarball" -C "$r/job" &&
		mv "$r/job/src/d00" "$r/job/src/d00-renamed" &&
		mv "$r/job/src/d01" "$r/job/moved-d01" &&
		mv "$r/job/src/d02/s1" "$r/job/src/d03/s1-from-d02" &&
		mv "$r/job/src/d04" "$r/job/src/d05/d04-inside" &&
		mv "$r/data" "$r/job/data-from-image" &&
		mv "$r/etc" "$r/etc.orig" && mkdir "$r/etc" && cp -a "$r/etc.orig/." "$r/etc/" &&
		find "$r/job" -type f -name '*[02468]' -exec rm -f {} + &&
		find "$r/bin" -type l -name '[a-m]*' -exec rm -f {} + &&
		rm -rf "$r/opaque" "$r/job/src/d06" &&
		find "$r/job" -type f -name '*5' -exec sh -c 'for f; do echo appended >>"$f"; done' \
			sh {} + &&
		sed -i 's/root/ROOT/' "$r/etc/passwd" &&
		chmod -R go-rwx "$r/job/src/d07" &&
		chown -R 1000:1000 "$r/job/src/d08" "$r/job/data-from-image/sub" &&
		find "$r/job" -depth -mindepth 1 -type d -empty -exec rmdir {} + &&
		mv "$r/job/src" "$r/job/src2" &&
		mv "$r/etc.orig" "$r/job/src2/etc-from-image" &&
		sync -f "$r"
}

# run_job ROOT SINCEFILE: runs the job, records its start time minus a second.
run_job() {
	sleep 1.2 # the image's mtimes must be older than the start minus a second
	echo $(($(date +%s%N) - 1000000000)) >"$2"
	start=$(date +%s%N)
	job "$1" || fail "the job failed in $1"
	echo "job in $1: $((($(date +%s%N) - start) / 1000000)) ms," \
		"$(find "$1/job" | wc -l) entries under job/"
}

# compare LABEL: the mount against the plain directory.
compare() {
	python3 "$FSOPS" treecmp --since-a "$(cat "$WORK/since.local")" \
		--since-b "$(cat "$WORK/since.mnt")" "$local" "$mnt" ||
		fail "$1: the mount differs from the same job on a plain directory" \
			"(expected = plain directory, got = mount)"
}

local=$WORK/local
cp -a "$lower" "$local" || fail "cannot copy the image's tree"
run_job "$local" "$WORK/since.local"

writable_mount
run_job "$mnt" "$WORK/since.mnt"
compare "after the job"
echo "job: identical to the plain directory"

# Persistence: the same --upper mounted again shows the same tree.
writable_umount "$mnt"
writable_mount
compare "after umount and mount with the same --upper"
echo "persistence: identical after a remount"

# Durability: fsynced data survives a killed daemon.
python3 - "$mnt/job/durable" <<'EOF' || fail "cannot write and fsync through the mount"
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"fsynced before the crash\n" * 1000)
os.fsync(fd)
os.close(fd)
EOF
if [ "$SELFTEST" = 1 ]; then
	writable_umount "$mnt"
else
	state=$(ls "$IMGFS_ROOT"/mounts/*/state 2>/dev/null | head -n 1)
	[ -n "$state" ] || fail "no state file under $IMGFS_ROOT/mounts"
	pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$state") ||
		fail "no pid in $state"
	kill -KILL "$pid" || fail "cannot kill the daemon $pid"
	"$IMGFS" umount "$mnt" || fail "imgfs umount after SIGKILL failed"
fi
writable_mount
[ "$(python3 -c 'import sys; print(open(sys.argv[1]).read() == "fsynced before the crash\n" * 1000)' \
	"$mnt/job/durable")" = True ] || fail "fsynced data lost across a killed daemon and a remount"
rm "$mnt/job/durable" || fail "cannot remove the durable file"
compare "after the crash and a new mount"
writable_umount "$mnt"
echo "durability: fsynced data kept"
echo "ok"
