#!/bin/sh
# Builds each tests/fuzz/fuzz_*.c with clang's libFuzzer (+ASan/UBSan) and runs it for
# FUZZ_SECONDS on a copy of its corpus; new crashing inputs are left in build/fuzz/.
set -eu
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
SECS=${FUZZ_SECONDS:-30}
out=$BUILD/fuzz
mkdir -p "$out"
cflags="-std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I. -g -O1 -fsanitize=fuzzer,address,undefined $(pkg-config --cflags libarchive libcurl jansson libcrypto zlib libisal libzstd)"
libs="$(pkg-config --libs libarchive libcurl jansson libcrypto zlib libisal libzstd) -pthread"
srcs="$(ls common/*.c fsd/image/*.c fsd/core/*.c)"
for f in tests/fuzz/fuzz_*.c; do
	name=$(basename "$f" .c)
	target=${name#fuzz_}
	echo "== $name ($SECS s)"
	# shellcheck disable=SC2086
	clang $cflags -o "$out/$name" "$f" $srcs $libs
	mkdir -p "$out/corpus-$target"
	cp -n tests/fuzz/corpus/"$target"/* "$out/corpus-$target/" 2>/dev/null || true
	(cd "$out" && "./$name" -max_total_time="$SECS" -artifact_prefix="crash-$target-" \
		"corpus-$target")
done
