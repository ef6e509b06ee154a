#!/bin/bash
# imgfs run: pull + mount (throwaway writable layer + init layer) + runner + umount, with
# the image config's Entrypoint/Cmd/Env/WorkingDir/User and docker-run-style overrides.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_root

start_registry
build_image busybox run
# A distinctive config: Cmd prints what the container sees; WorkingDir and User are set.
umoci config --no-history --image "$TESTDIR/images:run" \
	--config.cmd /bin/sh --config.cmd -c \
	--config.cmd 'echo "cmd:$IMGFS_TEST:$(pwd):$(id -u):$(hostname)"' \
	--config.workingdir /tmp --config.user daemon >/dev/null
push_image "$TESTDIR/images:run" test/run:latest
ref=$REGISTRY/test/run:latest
run_mounts() { awk '$5 ~ "^/run/imgfs/" { print $5 }' /proc/self/mountinfo | sort; }
run_dirs_before=$(ls -A /run/imgfs 2>/dev/null || true)
run_mounts_before=$(run_mounts)

log "the image's own Cmd, Env, WorkingDir and User; pulled on first use"
assert_ok imgfs run -q --hostname box "$ref"
assert_eq "$OUT" "cmd:1:/tmp:1:box" "output of the image's Cmd"
assert_eq "$(store_nrefs)" 1 "refs after run pulled the image"

log "overrides: CMD, -e, -w, -u"
assert_ok imgfs run -q -e IMGFS_TEST=2 -e EXTRA=x -w / -u nobody "$ref" \
	/bin/sh -c 'echo "$IMGFS_TEST $EXTRA $(pwd) $(id -u) $PATH"'
assert_eq "$OUT" "2 x / 65534 /usr/sbin:/usr/bin:/sbin:/bin" "overridden run"

log "--entrypoint replaces the Entrypoint, the rest are its arguments"
assert_ok imgfs run -q --entrypoint /bin/echo "$ref" a b
assert_eq "$OUT" "a b" "entrypoint output"

log "the init layer supplies the mountpoints the image lacks"
assert_ok imgfs run -q --hostname initlayer "$ref" /bin/sh -c \
	'cat /etc/hostname; grep -c "^127.0.0.1[[:space:]]*localhost" /etc/hosts; test -e /etc/resolv.conf && echo resolv'
assert_eq "$OUT" "initlayer
1
resolv" "generated /etc files"

log "devices: a node can be created, only the defaults and --device opened"
rc=0; imgfs run -q -u root "$ref" /bin/sh -c 'mknod /dev/d b 7 0 && cat /dev/d' 2>"$TESTDIR/err" || rc=$?
assert_eq "$rc" 1 "status of cat of a block device node"
assert_contains "$(cat "$TESTDIR/err")" "can't open '/dev/d': Operation not permitted"
assert_ok imgfs run -q -u root --device /dev/loop-control:/dev/lc:r "$ref" /bin/sh -c \
	'head -c 0 /dev/lc && echo read-ok; echo x >/dev/null; { echo x >/dev/lc; } 2>&1 || true'
assert_contains "$OUT" "read-ok" "--device read allowed"
assert_contains "$OUT" "Operation not permitted" "--device write not allowed"
rc=0; imgfs run -q --device /etc/passwd "$ref" /bin/true 2>"$TESTDIR/err" || rc=$?
assert_eq "$rc" 125 "--device of a regular file"
assert_eq "$(grep -c . "$TESTDIR/err")" 1 "lines on stderr for a bad --device"

log "exit statuses: the command's own, 127 not found, 126 not executable, 128+N"
rc=0; imgfs run -q "$ref" /bin/sh -c 'exit 3' || rc=$?
assert_eq "$rc" 3 "exit status of 'exit 3'"
rc=0; imgfs run -q "$ref" /no/such/command 2>/dev/null || rc=$?
assert_eq "$rc" 127 "exit status of a missing command"
rc=0; imgfs run -q "$ref" /etc/passwd 2>/dev/null || rc=$?
assert_eq "$rc" 126 "exit status of a non-executable file"
rc=0; imgfs run -q "$ref" /bin/sh -c 'kill -TERM $$' || rc=$?
assert_eq "$rc" 143 "exit status of a command killed by SIGTERM"

log "writes go to a throwaway layer: gone afterwards, the image unchanged"
assert_ok imgfs run -q -u root "$ref" /bin/sh -c 'echo x > /etc/os-release; rm /bin/ls; echo y > /new'
assert_ok imgfs run -q "$ref" /bin/sh -c 'head -n1 /etc/os-release; ls /bin/ls; ls /new 2>&1 || true'
assert_contains "$OUT" 'NAME="imgfs test image"' "image file after a throwaway write"
assert_contains "$OUT" "/bin/ls" "deleted file back in the next run"
assert_contains "$OUT" "No such file" "new file gone in the next run"

log "--upper keeps the layer, in overlayfs format"
upper="$TESTDIR/upper"
assert_ok imgfs run -q -u root --upper "$upper" "$ref" /bin/sh -c 'echo kept > /kept; rm /bin/ls'
assert_eq "$(cat "$upper/kept")" kept "file in the kept upper"
[ -c "$upper/bin/ls" ] || fail "no whiteout for /bin/ls in $upper/bin"
assert_eq "$(cd "$upper" && find . | LC_ALL=C sort)" ".
./bin
./bin/ls
./kept" "a kept upper holds what the container did, and nothing else"
assert_ok imgfs run -q --upper "$upper" "$ref" /bin/sh -c 'cat /kept; test -e /bin/ls || echo gone'
assert_eq "$OUT" "kept
gone" "second run on the same upper"

log "the runner adds nothing to a kept upper: -w /made/here is created in the container"
before=$(cd "$upper" && find . | LC_ALL=C sort)
assert_ok imgfs run -q --upper "$upper" -w /made/here "$ref" /bin/sh -c 'pwd; cat /etc/hostname >/dev/null'
assert_eq "$OUT" /made/here "working directory"
assert_eq "$(cd "$upper" && find . | LC_ALL=C sort)" "$before" "entries of the upper after the run"

log "nothing left behind: no mount, no run directory, no mount state"
assert_eq "$(run_mounts)" "$run_mounts_before" "mounts under /run/imgfs"
[ -z "$(ls -A "$IMGFS_ROOT/mounts" 2>/dev/null)" ] || fail "left in mounts/: $(ls "$IMGFS_ROOT/mounts")"
assert_eq "$(ls -A /run/imgfs 2>/dev/null || true)" "$run_dirs_before" "run directories in /run/imgfs"

log "errors: a missing image is one clear line and status 125"
rc=0; imgfs run -q "$REGISTRY/test/missing:latest" /bin/true 2>"$TESTDIR/err" || rc=$?
assert_eq "$rc" 125 "exit status for a missing image"
assert_eq "$(grep -c . "$TESTDIR/err")" 1 "lines on stderr for a missing image"
