# Shared by test_writable_diff.sh and test_writable_job.sh (sourced): locating the binaries,
# fail and skip, the overlayfs features the writable mount is compared with, and
# writable_workdir, which makes WORK and IMGFS_ROOT and a cleanup trap that unmounts.
# WRITABLE_DIFF_SELFTEST=1 (SELFTEST) puts the kernel's overlayfs on the mount side, so
# the tests check themselves without imgfs.

TOP=${IMGFS_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${BUILD:-build}
IMGFS=$TOP/$BUILD/imgfs
FSOPS=$TOP/tests/integration/fsops.py
SELFTEST=${WRITABLE_DIFF_SELFTEST:-0}
OVERLAY_FEATURES="redirect_dir=on,index=off,metacopy=off"

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

skip() {
	echo "$*"
	exit 77
}

is_mounted() {
	awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

cleanup() {
	for m in $MOUNTS; do
		is_mounted "$m" || continue
		if [ "$SELFTEST" != 1 ] && [ -x "$IMGFS" ]; then
			"$IMGFS" umount "$m" >/dev/null 2>&1
		fi
		is_mounted "$m" && umount -l "$m" 2>/dev/null
	done
	# Never delete through a mount that survived.
	[ "${IMGFS_TEST_KEEP:-0}" = 1 ] || rm -rf --one-file-system "$WORK"
}

# writable_require [overlayfs]: skips unless the machine can run the test: root, umoci, and
# the side under test (the kernel's overlayfs in the selftest, FUSE and a built imgfs
# otherwise); "overlayfs" when the test needs the kernel's overlayfs in any case.
writable_require() {
	[ "$(id -u)" -eq 0 ] || skip "needs root"
	command -v umoci >/dev/null || skip "no umoci"
	if [ "$SELFTEST" = 1 ] || [ "${1:-}" = overlayfs ]; then
		grep -qw overlay /proc/filesystems || skip "the kernel has no overlayfs"
	fi
	if [ "$SELFTEST" != 1 ]; then
		[ -c /dev/fuse ] || skip "no /dev/fuse"
		[ -x "$IMGFS" ] || fail "$IMGFS not built"
	fi
}

# writable_workdir NAME: WORK (/tmp/imgfs-NAME.*), the store IMGFS_ROOT in it, an empty
# MOUNTS (mountpoints the cleanup unmounts) and the traps.
writable_workdir() {
	WORK=$(mktemp -d "/tmp/imgfs-$1.XXXXXX")
	chmod 755 "$WORK"
	IMGFS_ROOT=$WORK/store
	export IMGFS_ROOT
	MOUNTS=""
	trap cleanup EXIT
	trap 'exit 1' INT TERM
}

# imgfs_mount_upper UPPER REF MNT: the writable mount under test.
imgfs_mount_upper() {
	out=$("$IMGFS" mount --upper "$1" "$2" "$3" 2>&1) ||
		fail "imgfs mount --upper (writable) failed, the writable layer is missing or broken:" \
			"$out (WRITABLE_DIFF_SELFTEST=1 checks the test itself on kernel overlayfs)"
}

# writable_side MNT UPPER LOWER REF: the side under test at MNT over UPPER (created or
# reused): imgfs with REF, or in the selftest the kernel's overlayfs over LOWER.
writable_side() {
	mkdir -p "$1" "$2"
	case " $MOUNTS " in *" $1 "*) ;; *) MOUNTS="$1 $MOUNTS" ;; esac
	if [ "$SELFTEST" = 1 ]; then
		mkdir -p "$WORK/work"
		mount -t overlay overlay -o "lowerdir=$3,upperdir=$2,workdir=$WORK/work,$OVERLAY_FEATURES" \
			"$1" || fail "mount -t overlay failed"
		return
	fi
	imgfs_mount_upper "$2" "$4" "$1"
}

# writable_umount MNT: unmounts the mount side (imgfs, or overlayfs in the selftest).
writable_umount() {
	if [ "$SELFTEST" = 1 ]; then
		umount "$1" || fail "umount $1 failed"
	else
		"$IMGFS" umount "$1" || fail "imgfs umount $1 failed"
	fi
}
