#!/bin/sh
# imgfs mount --ro: the mounted image equals `umoci unpack` of the same image, attribute for
# attribute and byte for byte; concurrent readers get the right bytes; binaries run from
# the mount (setuid/dev honoured as root); changes are refused; other users see the image's
# permissions.
set -u
. "$(dirname "$0")/mount_lib.sh"

layout=$WORK/layout
build_fixture "$layout" fixture
umoci unpack --image "$layout:fixture" "$WORK/ref" >/dev/null || fail "umoci unpack failed"
ref=$WORK/ref/rootfs
mnt=$WORK/mnt

start=$(date +%s%N)
mount_ro "oci:$layout:fixture" "$mnt"
echo "first mount (import + index + mount): $((($(date +%s%N) - start) / 1000000)) ms"
"$IMGFS" umount "$mnt" || fail "umount failed"
start=$(date +%s%N)
mount_ro "oci:$layout:fixture" "$mnt"
echo "mount of a present image: $((($(date +%s%N) - start) / 1000000)) ms"

# The mount as a filesystem: type, options, the fsname naming the image.
[ "$(mount_field "$mnt" source)" = "imgfs:oci:$layout:fixture" ] ||
	fail "fsname does not name the image: $(mount_field "$mnt" source)"
opts=$(mount_field "$mnt" options)
case ",$opts," in *,ro,*) ;; *) fail "not mounted ro: $opts" ;; esac
case ",$opts," in *,nosuid,* | *,nodev,*) fail "root mount without suid,dev: $opts" ;; esac

# Attribute-for-attribute comparison with umoci's unpack.
python3 "$TREECMP" "$ref" "$mnt" || fail "mounted tree differs from umoci unpack"

# Hardlinks: one inode, its link count.
[ "$(stat -c %i "$mnt/special/h1")" = "$(stat -c %i "$mnt/special/sgid-dir/h3")" ] ||
	fail "hardlink group split"
[ "$(stat -c %h "$mnt/special/h1")" = 3 ] || fail "nlink of a 3-name hardlink group is not 3"

# 16 concurrent readers checksum the whole tree, with a cold cache.
(cd "$ref" && find . -type f -exec sha256sum {} + | sort -k2) >"$WORK/sums.ref"
echo 3 >/proc/sys/vm/drop_caches
i=1
while [ $i -le 16 ]; do
	(cd "$mnt" && find . -type f -exec sha256sum {} + | sort -k2) >"$WORK/sums.$i" &
	i=$((i + 1))
done
wait
i=1
while [ $i -le 16 ]; do
	cmp -s "$WORK/sums.ref" "$WORK/sums.$i" || fail "reader $i got different bytes"
	i=$((i + 1))
done

# Executables run from the mount, device nodes work (suid,dev).
[ "$(chroot "$mnt" /bin/busybox echo hi)" = hi ] || fail "chroot $mnt /bin/busybox echo hi"
[ "$(chroot "$mnt" /bin/sh -c 'echo x >/special/null && echo ok')" = ok ] ||
	fail "writing the image's /dev/null-like device failed"
getfattr -n security.capability "$mnt/special/ping" >/dev/null 2>&1 ||
	fail "security.capability not visible"

# Changes are refused with EROFS; ioctls with ENOTTY; SEEK_DATA/SEEK_HOLE answer.
python3 - "$mnt" <<'EOF' || fail "errno checks failed"
import errno, fcntl, os, sys
m = sys.argv[1]
def expect(err, fn, *a):
    try:
        fn(*a)
    except OSError as e:
        if e.errno != err:
            sys.exit("%s%r: %s, expected %s" % (fn.__name__, a, e, errno.errorcode[err]))
        return
    sys.exit("%s%r succeeded" % (fn.__name__, a))
expect(errno.EROFS, os.open, m + "/new", os.O_CREAT | os.O_WRONLY, 0o644)
expect(errno.EROFS, os.open, m + "/etc/passwd", os.O_WRONLY)
expect(errno.EROFS, os.unlink, m + "/etc/passwd")
expect(errno.EROFS, os.mkdir, m + "/d")
expect(errno.EROFS, os.rename, m + "/etc/passwd", m + "/etc/p2")
expect(errno.EROFS, os.chmod, m + "/etc/passwd", 0o600)
expect(errno.EROFS, os.symlink, "x", m + "/l")
expect(errno.EROFS, os.setxattr, m + "/etc/passwd", "user.x", b"1")
fd = os.open(m + "/special/big", os.O_RDONLY)
expect(errno.ENOTTY, fcntl.ioctl, fd, 0x80086601, bytearray(8))  # FS_IOC_GETFLAGS
size = os.fstat(fd).st_size
if os.lseek(fd, 0, os.SEEK_DATA) != 0:
    sys.exit("SEEK_DATA 0")
hole = os.lseek(fd, 0, os.SEEK_HOLE)
if not 0 < hole <= size:
    sys.exit("SEEK_HOLE %d of %d" % (hole, size))
expect(errno.ENXIO, os.lseek, fd, size + 1, os.SEEK_DATA)
os.close(fd)
st = os.statvfs(m)
if not st.f_flag & os.ST_RDONLY or st.f_files < 100 or st.f_blocks == 0:
    sys.exit("statvfs: %r" % (st,))
EOF

# SELinux labels: an image without any says "not supported" (so that ls -l, cp -a and tar
# stop asking for every file); one with a label gives it, and ENODATA for unlabelled files.
out=$(getfattr -n security.selinux "$mnt/etc/passwd" 2>&1) &&
	fail "security.selinux of an image without labels: $out"
case $out in *"Operation not supported"*) ;; *) fail "security.selinux without labels: $out" ;; esac
python3 "$TOP/tests/integration/mklayers.py" case "$layout" selinux --base "$layout:fixture" ||
	fail "mklayers.py case selinux failed"
mount_ro "oci:$layout:selinux" "$WORK/mnt-selinux"
[ "$(getfattr --only-values -n security.selinux "$WORK/mnt-selinux/labels/labelled")" = \
	"system_u:object_r:bin_t:s0" ] || fail "the SELinux label of labels/labelled is lost"
out=$(getfattr -n security.selinux "$WORK/mnt-selinux/labels/plain" 2>&1) &&
	fail "an unlabelled file has a label: $out"
case $out in *"No such attribute"*) ;; *) fail "unlabelled file in a labelled image: $out" ;; esac
"$IMGFS" umount "$WORK/mnt-selinux" || fail "umount failed"

# Another user sees the image's permissions (allow_other + default_permissions).
command -v setpriv >/dev/null || fail "setpriv missing"
setpriv --reuid 65534 --regid 65534 --clear-groups cat "$mnt/etc/passwd" >/dev/null ||
	fail "nobody cannot read /etc/passwd"
if setpriv --reuid 65534 --regid 65534 --clear-groups cat "$mnt/data/sub/c.txt" \
	>/dev/null 2>&1; then
	fail "nobody can read a 0600 file of uid 1"
fi

# Mount options from -o reach the mount; the state file names the image.
"$IMGFS" umount "$mnt" || fail "umount failed"
mount_ro "oci:$layout:fixture" "$mnt" -o noatime
case ",$(mount_field "$mnt" options)," in *,noatime,*) ;; *) fail "-o noatime lost" ;; esac
state=$(ls "$IMGFS_ROOT"/mounts/*/state)
python3 - "$state" "$mnt" <<'EOF' || fail "state file"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["mountpoint"] == sys.argv[2], s
assert s["manifest"].startswith("sha256:") and s["ro"] is True, s
assert s["ref"].startswith("oci:"), s
EOF
"$IMGFS" umount "$mnt" || fail "umount failed"
[ -z "$(ls "$IMGFS_ROOT/mounts")" ] || fail "umount left $(ls "$IMGFS_ROOT/mounts")"
echo "ok"
