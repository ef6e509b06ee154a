#!/bin/sh
# The writable mount behaves as the kernel's overlayfs (redirect_dir=on, index=off,
# metacopy=off) over the same image, and its upper directory is in overlayfs' format.
#
# fsops.py runs the same script of a thousand operations (copy-up, hardlinked image files,
# whiteouts, opaque and renamed image directories, RENAME_NOREPLACE/EXCHANGE, xattrs,
# devices, locks, permissions, misuse with its errno, a seeded random walk) on
#   MNT1: mount -t overlay, lowerdir = `umoci unpack` of the image, upperdir UPPER1
#   MNT2: imgfs mount --upper UPPER2 of the same image
# and the test asserts: the two logs are identical (every result and errno, every
# observed size, mode, owner, link count, content hash, listing); the two trees are
# identical attribute by attribute (treecmp.py; mtimes set during a run compare as "set
# during the run", atime and ctime are not compared); and the crossover: a copy of UPPER2
# mounted by the kernel's overlayfs over the same lower shows the tree of MNT1.
# Also: the same script on a plain copy of the lower tree must differ (the script sees
# overlay semantics, not only POSIX ones).
#
# WRITABLE_DIFF_SELFTEST=1 makes MNT2 a second kernel overlayfs: it checks the script is
# deterministic and the comparisons work, without imgfs.
set -u

. "$(dirname "$0")/writable_lib.sh"

writable_require overlayfs

writable_workdir wdiff

# overlay_mount LOWER UPPER WORKDIR MNT
overlay_mount() {
	mkdir -p "$2" "$3" "$4"
	MOUNTS="$4 $MOUNTS"
	mount -t overlay overlay \
		-o "lowerdir=$1,upperdir=$2,workdir=$3,$OVERLAY_FEATURES" "$4" ||
		fail "mount -t overlay on $4 failed"
}

# writable_mount MNT UPPER: the side under test.
writable_mount() {
	if [ "$SELFTEST" = 1 ]; then
		overlay_mount "$lower" "$2" "$WORK/work-$(basename "$1")" "$1"
		return
	fi
	mkdir -p "$1" "$2"
	MOUNTS="$1 $MOUNTS"
	# Copy-ups stay pending (their work name linked) for a while, as under load: the
	# link counts the script observes must not show it.
	IMGFS_TEST_SYNC_DELAY_MS=1500
	export IMGFS_TEST_SYNC_DELAY_MS
	imgfs_mount_upper "$2" "oci:$layout:fsops" "$1"
	unset IMGFS_TEST_SYNC_DELAY_MS
}

# run_fsops MNT LOG: runs the script, records its start time (ns) in LOG.since.
run_fsops() {
	# The lower tree's own mtimes must be older than the run's start minus a second.
	sleep 1.2
	echo $(($(date +%s%N) - 1000000000)) >"$2.since"
	start=$(date +%s%N)
	python3 "$FSOPS" run --stats "$1" >"$2" 2>"$2.stats" || {
		cat "$2.stats" >&2
		fail "fsops.py on $1 crashed"
	}
	echo "fsops on $1: $(wc -l <"$2") log lines, $((($(date +%s%N) - start) / 1000000)) ms"
}

# compare_trees A A_SINCE B B_SINCE WHAT
compare_trees() {
	python3 "$FSOPS" treecmp --since-a "$(cat "$2")" --since-b "$(cat "$4")" "$1" "$3" ||
		fail "$5: the trees differ (lines above: expected = $1, got = $3)"
}

# The image: contrib/mkimage.sh's multilayer image plus a layer with the tree fsops.py
# works on (/w: hardlink groups, renameable directories, modes, owners, xattrs, devices).
layout=$WORK/layout
sh "$TOP/contrib/mkimage.sh" multilayer "$layout:fsops" >/dev/null || fail "mkimage.sh failed"
umoci unpack --image "$layout:fsops" "$WORK/bundle" >/dev/null || fail "umoci unpack failed"
python3 "$FSOPS" populate "$WORK/bundle/rootfs" || fail "fsops.py populate failed"
umoci repack --image "$layout:fsops" "$WORK/bundle" >/dev/null || fail "umoci repack failed"
rm -rf "$WORK/bundle"
umoci unpack --image "$layout:fsops" "$WORK/lowerbundle" >/dev/null || fail "umoci unpack failed"
lower=$WORK/lowerbundle/rootfs
[ "$(stat -c %h "$lower/w/hl/a")" = 4 ] || fail "the image lost the hardlink group of /w/hl/a"

# Reference: the kernel's overlayfs.
mnt1=$WORK/mnt1
overlay_mount "$lower" "$WORK/upper1" "$WORK/work1" "$mnt1"
run_fsops "$mnt1" "$WORK/log1"
cat "$WORK/log1.stats"

# The side under test.
mnt2=$WORK/mnt2
upper2=$WORK/upper2
writable_mount "$mnt2" "$upper2"
run_fsops "$mnt2" "$WORK/log2"
if ! cmp -s "$WORK/log1" "$WORK/log2"; then
	diff -u "$WORK/log1" "$WORK/log2" | head -n 150
	fail "the operation logs differ (- kernel overlayfs, + writable mount)"
fi
echo "logs identical"
compare_trees "$mnt1" "$WORK/log1.since" "$mnt2" "$WORK/log2.since" "kernel overlayfs vs writable mount"

# Crossover: the kernel's overlayfs reads the upper directory the writable mount wrote.
writable_umount "$mnt2"
cp -a "$upper2" "$WORK/upper3" || fail "cannot copy $upper2"
mnt3=$WORK/mnt3
overlay_mount "$lower" "$WORK/upper3" "$WORK/work3" "$mnt3"
compare_trees "$mnt1" "$WORK/log1.since" "$mnt3" "$WORK/log2.since" \
	"kernel overlayfs vs kernel overlayfs over the writable mount's upper"
umount "$mnt3" || fail "umount $mnt3 failed"
echo "crossover identical"

# The script must see overlay semantics: on a plain copy of the lower tree it differs.
plain=$WORK/plain
cp -a "$lower" "$plain" || fail "cannot copy the lower tree"
run_fsops "$plain" "$WORK/log-plain"
ndiff=$(diff "$WORK/log1" "$WORK/log-plain" | grep -c '^<')
[ "$ndiff" -gt 0 ] || fail "fsops.py cannot tell a plain directory from an overlay"
python3 "$FSOPS" treecmp --since-a "$(cat "$WORK/log1.since")" \
	--since-b "$(cat "$WORK/log-plain.since")" "$mnt1" "$plain" >"$WORK/plain.treecmp" 2>&1 &&
	fail "treecmp finds no difference between the overlay and a plain directory"
echo "plain directory: $ndiff log lines and $(grep -c : "$WORK/plain.treecmp") tree" \
	"differences, e.g.:"
diff "$WORK/log1" "$WORK/log-plain" | grep '^[<>]' | head -n 6
echo "ok"
