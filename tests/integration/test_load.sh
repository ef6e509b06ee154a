#!/bin/sh
# Load: on one writable mount of a multi-layer image, 64 readers checksum the image's files
# (their page cache dropped before each read, so the daemon serves every pass) while 8
# writers create, append, fsync, rename, truncate, delete and copy up files, each in its own
# directory, verifying every step; then 8 mounts of the same image at once, each read fully,
# verified and unmounted. Checksums are compared with `umoci unpack` of the same image.
# The daemons' peak memory (VmHWM) is printed; only an absurd value fails.
# LOAD_SECONDS (default 20) is the length of the first phase.
set -u
. "$(dirname "$0")/mount_lib.sh"

SECS=${LOAD_SECONDS:-20}
READERS=64
WRITERS=8
MOUNTS_AT_ONCE=8
# A sanitized daemon carries ASan's shadow memory and quarantine (256 MiB by default).
if grep -q AddressSanitizer "$IMGFS"; then
	MAX_HWM_KB=$((2048 * 1024))
	# ASan/LSan reports of daemons that exit after umount (their log is removed with them).
	ASAN_OPTIONS=${ASAN_OPTIONS:-log_path=$WORK/asan}
	export ASAN_OPTIONS
else
	MAX_HWM_KB=$((512 * 1024))
fi

# The image: the mount fixture plus a layer of files for the readers (load/r, 4 KiB to
# 3 MiB, sizes that are not multiples of a page) and one file per writer to copy up.
layout=$WORK/layout
build_fixture "$layout" load
umoci unpack --image "$layout:load" "$WORK/bundle" >/dev/null || fail "umoci unpack failed"
python3 - "$WORK/bundle/rootfs" "$WRITERS" <<'EOF' || fail "cannot write the load layer"
import os, sys
root, writers = sys.argv[1], int(sys.argv[2])
os.makedirs(root + "/load/r/deep/er")
os.makedirs(root + "/load/w")
sizes = [4096, 4097, 65535, 131072 + 7, 1 << 20, 3 << 20, 777777, 12345, 2 << 20, 300001]
for i in range(24):
    d = root + ("/load/r/" if i % 3 else "/load/r/deep/er/")
    with open("%sf%02d" % (d, i), "wb") as f:
        f.write(os.urandom(sizes[i % len(sizes)] + i))
for w in range(writers):
    with open("%s/load/w/w%d.dat" % (root, w), "wb") as f:
        f.write(os.urandom(100000 + w))
EOF
umoci repack --image "$layout:load" "$WORK/bundle" >/dev/null || fail "umoci repack failed"
rm -rf "$WORK/bundle"
umoci unpack --image "$layout:load" "$WORK/ref" >/dev/null || fail "umoci unpack failed"
ref=$WORK/ref/rootfs

cat >"$WORK/load.py" <<'EOF'
import errno, hashlib, json, os, random, sys, threading, time

def sha(path, chunk=1 << 17, drop=False):
    fd = os.open(path, os.O_RDONLY)
    try:
        if drop:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        h = hashlib.sha256()
        while True:
            b = os.read(fd, chunk)
            if not b:
                return h.hexdigest()
            h.update(b)
    finally:
        os.close(fd)

def sums(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out[os.path.relpath(p, root)] = sha(p)
    return out

def verify(root, ref, what):
    got = sums(root)
    bad = sorted(k for k in ref if got.get(k) != ref[k])
    extra = sorted(set(got) - set(ref))
    if bad or extra:
        sys.exit("%s: %d files differ (%s), %d unexpected (%s)" %
                 (what, len(bad), bad[:5], len(extra), extra[:5]))
    return len(got)

errors = []
lock = threading.Lock()
stats = {"reads": 0, "read_bytes": 0, "writer_steps": 0}

def error(msg):
    with lock:
        if len(errors) < 50:
            errors.append(msg)

def reader(n, mnt, files, ref, deadline):
    chunk = [4096, 65536, 131072, 1 << 20, 12345][n % 5]
    rnd = random.Random(n)
    reads = nbytes = 0
    while time.monotonic() < deadline and not errors:
        f = rnd.choice(files)
        try:
            got = sha(os.path.join(mnt, f), chunk, drop=True)
        except OSError as e:
            error("reader %d: %s: %s" % (n, f, e))
            return
        if got != ref[f]:
            error("reader %d: %s: checksum %s, expected %s" % (n, f, got, ref[f]))
            return
        reads += 1
        nbytes += os.stat(os.path.join(mnt, f)).st_size
    with lock:
        stats["reads"] += reads
        stats["read_bytes"] += nbytes

def check(cond, msg):
    if not cond:
        raise AssertionError(msg)

def content(path):
    with open(path, "rb") as f:
        return f.read()

def writer(n, mnt, ref, deadline):
    d = os.path.join(mnt, "load/w/d%d" % n)
    lower = os.path.join(mnt, "load/w/w%d.dat" % n)
    rnd = random.Random(1000 + n)
    model = {}
    steps = 0
    try:
        os.mkdir(d)
        low = content(lower)
        check(hashlib.sha256(low).hexdigest() == ref["load/w/w%d.dat" % n], "lower file before copy-up")
        i = 0
        while time.monotonic() < deadline and not errors:
            i += 1
            name = "f%d" % (i % 16)
            p = os.path.join(d, name)
            data = rnd.randbytes(rnd.randrange(0, 200000))
            with open(p, "wb") as f:
                f.write(data[: len(data) // 2])
                f.write(data[len(data) // 2 :])
            more = rnd.randbytes(rnd.randrange(1, 5000))
            fd = os.open(p, os.O_WRONLY | os.O_APPEND)
            os.write(fd, more)
            os.fsync(fd)
            os.close(fd)
            data += more
            check(content(p) == data, "%s: content after append" % p)
            model[name] = data
            new = "g%d" % (i % 16)
            os.rename(p, os.path.join(d, new))
            model[new] = model.pop(name)
            check(not os.path.exists(p), "%s still exists after rename" % p)
            check(content(os.path.join(d, new)) == data, "%s: content after rename" % new)
            if i % 3 == 0:
                victim = rnd.choice(sorted(model))
                os.unlink(os.path.join(d, victim))
                del model[victim]
                try:
                    os.stat(os.path.join(d, victim))
                    raise AssertionError("%s exists after unlink" % victim)
                except FileNotFoundError:
                    pass
            if i % 5 == 0 and model:
                k = rnd.choice(sorted(model))
                os.truncate(os.path.join(d, k), len(model[k]) // 2)
                model[k] = model[k][: len(model[k]) // 2]
            if i % 7 == 0:
                check(set(os.listdir(d)) == set(model), "listing of %s: %s, expected %s" %
                      (d, sorted(os.listdir(d)), sorted(model)))
                dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                os.fsync(dfd)
                os.close(dfd)
            if i % 11 == 0:
                extra = rnd.randbytes(777)
                with open(lower, "ab") as f:
                    f.write(extra)
                low += extra
                check(content(lower) == low, "%s: content after copy-up append" % lower)
            steps += 1
        for k, v in model.items():
            check(content(os.path.join(d, k)) == v, "%s: final content" % k)
        check(set(os.listdir(d)) == set(model), "final listing of %s" % d)
        check(content(lower) == low, "final content of %s" % lower)
    except (OSError, AssertionError) as e:
        error("writer %d (step %d): %s" % (n, steps, e))
    with lock:
        stats["writer_steps"] += steps

def main():
    cmd = sys.argv[1]
    if cmd == "sums":
        json.dump(sums(sys.argv[2]), sys.stdout)
    elif cmd == "verify":
        ref = json.load(open(sys.argv[3]))
        print("%s: %d files verified" % (sys.argv[2], verify(sys.argv[2], ref, sys.argv[2])))
    elif cmd == "load":
        mnt, ref = sys.argv[2], json.load(open(sys.argv[3]))
        secs, nr, nw = float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        files = sorted(k for k in ref if not k.startswith("load/w/"))
        deadline = time.monotonic() + secs
        ts = [threading.Thread(target=reader, args=(i, mnt, files, ref, deadline)) for i in range(nr)]
        ts += [threading.Thread(target=writer, args=(i, mnt, ref, deadline)) for i in range(nw)]
        start = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        el = time.monotonic() - start
        print("load: %d readers, %d writers, %.1f s: %d files read (%.1f MiB, %.1f MiB/s), "
              "%d writer steps" % (nr, nw, el, stats["reads"], stats["read_bytes"] / 2**20,
                                   stats["read_bytes"] / 2**20 / el, stats["writer_steps"]))
        if errors:
            sys.exit("load errors:\n  " + "\n  ".join(errors))
        # Everything the readers saw, and the writers' files, once more after the load.
        verify_files = {k: v for k, v in ref.items() if not k.startswith("load/w/")}
        got = {k: sha(os.path.join(mnt, k)) for k in verify_files}
        bad = [k for k in verify_files if got[k] != verify_files[k]]
        if bad:
            sys.exit("after the load: %d files differ: %s" % (len(bad), bad[:5]))

main()
EOF

python3 "$WORK/load.py" sums "$ref" >"$WORK/sums.json" || fail "cannot checksum the reference"
echo "reference: $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' \
	"$WORK/sums.json") files"

# daemon_pid MOUNTPOINT: the process serving the mount at MOUNTPOINT (its worker; the
# state file names the supervisor).
daemon_pid() {
	"$IMGFS" status "$1" 2>/dev/null | sed -n 's/^daemon-pid: \([0-9]*\)$/\1/p'
}

# hwm_kb PID: the peak resident set of PID in KiB.
hwm_kb() {
	awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

# check_log MOUNTPOINT: the daemon's log (which gets its stderr) has no sanitizer report.
check_log() {
	for _s in "$IMGFS_ROOT"/mounts/*/state; do
		[ "$(jq -r .mountpoint "$_s" 2>/dev/null)" = "$1" ] || continue
		_l=$(dirname "$_s")/log
		if grep -Eq 'runtime error|Sanitizer' "$_l"; then
			cat "$_l" >&2
			fail "the daemon of $1 logged errors"
		fi
	done
}

# Phase 1: readers and writers on one writable mount.
mnt=$WORK/mnt
mkdir -p "$mnt"
track_mount "$mnt"
"$IMGFS" mount "oci:$layout:load" "$mnt" || fail "imgfs mount failed"
pid=$(daemon_pid "$mnt")
[ -n "$pid" ] && pid_alive "$pid" || fail "no daemon pid for $mnt"
echo "rss after mount: $(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status") KiB"
python3 "$WORK/load.py" load "$mnt" "$WORK/sums.json" "$SECS" "$READERS" "$WRITERS" ||
	fail "load on one mount"
pid_alive "$pid" || fail "the daemon died under load"
hwm=$(hwm_kb "$pid")
echo "daemon peak memory (VmHWM), one mount, $READERS readers + $WRITERS writers: $hwm KiB"
[ "$hwm" -lt "$MAX_HWM_KB" ] || fail "daemon VmHWM $hwm KiB is absurd (limit $MAX_HWM_KB KiB)"
check_log "$mnt"
"$IMGFS" umount "$mnt" || fail "imgfs umount failed after the load"
pid_alive "$pid" && fail "the daemon $pid survived umount"

# Phase 2: the same image mounted 8 times at once, half of them read-only.
pids=""
for i in $(seq "$MOUNTS_AT_ONCE"); do
	(
		m=$WORK/m$i
		mkdir -p "$m"
		opt=""
		[ $((i % 2)) -eq 0 ] && opt=--ro
		# shellcheck disable=SC2086
		"$IMGFS" mount $opt "oci:$layout:load" "$m" >"$WORK/m$i.out" 2>&1 ||
			{ echo "mount $i failed: $(cat "$WORK/m$i.out")"; exit 1; }
		p=$(daemon_pid "$m")
		python3 "$WORK/load.py" verify "$m" "$WORK/sums.json" || exit 1
		hwm_kb "$p" >"$WORK/m$i.hwm"
		check_log "$m"
		"$IMGFS" umount "$m" || { echo "umount $i failed"; exit 1; }
	) &
	pids="$pids $!"
	track_mount "$WORK/m$i"
done
failed=0
for p in $pids; do
	wait "$p" || failed=$((failed + 1))
done
[ "$failed" -eq 0 ] || fail "$failed of $MOUNTS_AT_ONCE simultaneous mounts failed"
peak=$(sort -n "$WORK"/m*.hwm | tail -n 1)
echo "daemon peak memory (VmHWM), $MOUNTS_AT_ONCE mounts at once, each read fully: max $peak KiB"
[ "$peak" -lt "$MAX_HWM_KB" ] || fail "daemon VmHWM $peak KiB is absurd"
[ -z "$(ls "$IMGFS_ROOT/mounts")" ] || fail "umount left $(ls "$IMGFS_ROOT/mounts")"
if ls "$WORK"/asan.* >/dev/null 2>&1; then
	cat "$WORK"/asan.* >&2
	fail "sanitizer reports from the daemons"
fi
echo "ok"
