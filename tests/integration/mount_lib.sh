# Shared by the test_mount*.sh tests (sourced): locating the binaries, skipping when the
# machine lacks FUSE, building the fixture image, and a cleanup trap that unmounts.
# Sets TOP, IMGFS, WORK, and IMGFS_ROOT (the store of this test).

TOP=${IMGFS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${BUILD:-build}
IMGFS=$TOP/$BUILD/imgfs
TREECMP=$TOP/tests/integration/treecmp.py

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

skip() {
	echo "$*"
	exit 77
}

[ "$(id -u)" -eq 0 ] || skip "needs root"
[ -c /dev/fuse ] || skip "no /dev/fuse"
command -v fusermount3 >/dev/null || skip "no fusermount3"
command -v umoci >/dev/null || skip "no umoci"
[ -x "$IMGFS" ] || fail "$IMGFS not built"

WORK=$(mktemp -d /tmp/imgfs-mount.XXXXXX)
chmod 755 "$WORK" # other users reach the mount
IMGFS_ROOT=$WORK/store
export IMGFS_ROOT
MOUNTS=""

# mount_field MOUNTPOINT FIELD: fstype, source or options (per-mount and superblock ones)
# of the topmost mount at MOUNTPOINT, from /proc/self/mountinfo; empty when not mounted.
mount_field() {
	awk -v m="$1" -v f="$2" '$5 == m {
		for (i = 7; i <= NF && $i != "-"; i++) ;
		if (f == "fstype") r = $(i + 1)
		else if (f == "source") r = $(i + 2)
		else r = $6 "," $(i + 3)
	} END { if (r != "") print r }' /proc/self/mountinfo
}

is_imgfs_mount() {
	[ "$(mount_field "$1" fstype)" = fuse.imgfs ]
}

cleanup() {
	for m in $MOUNTS; do
		if [ -n "$(mount_field "$m" fstype)" ]; then
			"$IMGFS" umount "$m" >/dev/null 2>&1 || umount -l "$m" 2>/dev/null
		fi
	done
	# Never delete through a mount that survived.
	rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# pid_alive PID: running, not a zombie (a daemon's parent exits; whoever adopts it reaps).
pid_alive() {
	[ -r "/proc/$1/stat" ] || return 1
	_p_state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
	[ -n "$_p_state" ] && [ "$_p_state" != Z ] && [ "$_p_state" != X ]
}

# Remembers a mountpoint for the cleanup trap.
track_mount() {
	MOUNTS="$MOUNTS $1"
}

# build_fixture LAYOUT TAG: contrib/mkimage.sh's multilayer image (whiteouts, opaque and
# replaced directories, hardlinks, symlinks) plus a layer of special files: setuid, setgid,
# sticky, devices, a fifo, owners, xattrs (user.* and security.capability), a hardlink
# group of three, a big file, a sparse file, a long name, a nanosecond mtime.
build_fixture() {
	_f_layout=$1
	_f_tag=$2
	sh "$TOP/contrib/mkimage.sh" multilayer "$_f_layout:$_f_tag" >/dev/null ||
		fail "mkimage.sh multilayer failed"
	_f_b=$WORK/fixture-bundle
	umoci unpack --image "$_f_layout:$_f_tag" "$_f_b" >/dev/null || fail "umoci unpack failed"
	_f_r=$_f_b/rootfs
	mkdir -p "$_f_r/special/sgid-dir" "$_f_r/special/sticky"
	cp /bin/busybox "$_f_r/special/suid"
	chmod 4755 "$_f_r/special/suid"
	cp /bin/busybox "$_f_r/special/sgid"
	chmod 2711 "$_f_r/special/sgid"
	chmod 2775 "$_f_r/special/sgid-dir"
	chmod 1777 "$_f_r/special/sticky"
	mknod "$_f_r/special/null" c 1 3
	chmod 666 "$_f_r/special/null"
	mknod "$_f_r/special/sda" b 8 0
	mkfifo "$_f_r/special/fifo"
	echo "owned" >"$_f_r/special/owned"
	chown 1234:5678 "$_f_r/special/owned"
	setfattr -n user.note -v "hello world" "$_f_r/special/owned"
	cp /bin/busybox "$_f_r/special/ping"
	# cap_net_raw=ep, as setcap writes it (VFS_CAP_REVISION_2)
	setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= "$_f_r/special/ping"
	echo "three names" >"$_f_r/special/h1"
	ln "$_f_r/special/h1" "$_f_r/special/h2"
	ln "$_f_r/special/h1" "$_f_r/special/sgid-dir/h3"
	head -c 5000000 /dev/urandom >"$_f_r/special/big"
	truncate -s 8M "$_f_r/special/sparse"
	echo "after the hole" >>"$_f_r/special/sparse"
	_f_long=$(printf 'n%.0s' $(seq 200))
	echo "long" >"$_f_r/special/$_f_long"
	ln -s "$_f_long" "$_f_r/special/long-link"
	touch -d '2001-02-03 04:05:06.123456789' "$_f_r/special/owned"
	umoci repack --image "$_f_layout:$_f_tag" "$_f_b" >/dev/null || fail "umoci repack failed"
	rm -rf "$_f_b"
}

# mount_ro REF MOUNTPOINT [OPTIONS...]: mounts read-only and registers the cleanup.
mount_ro() {
	_m_ref=$1
	_m_mnt=$2
	shift 2
	mkdir -p "$_m_mnt"
	track_mount "$_m_mnt"
	"$IMGFS" mount --ro "$@" "$_m_ref" "$_m_mnt" || fail "imgfs mount --ro $_m_ref $_m_mnt failed"
	is_imgfs_mount "$_m_mnt" || fail "$_m_mnt is not mounted"
}

# fails_one_line PATTERN CMD...: CMD exits 1 (not killed, not timed out) with exactly one
# line on stderr matching the extended regex PATTERN. Sets ERR to that line.
fails_one_line() {
	_o_pattern=$1
	shift
	_o_rc=0
	"$@" >"$WORK/.out" 2>"$WORK/.err" || _o_rc=$?
	ERR=$(cat "$WORK/.err")
	[ "$_o_rc" -eq 1 ] || fail "'$*' exited $_o_rc, expected 1: $ERR"
	[ "$(grep -c . "$WORK/.err")" -eq 1 ] || fail "'$*': expected one line on stderr: $ERR"
	echo "$ERR" | grep -Eq -- "$_o_pattern" || fail "'$*' said '$ERR', expected /$_o_pattern/"
}
