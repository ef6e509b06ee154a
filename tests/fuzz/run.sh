#!/bin/sh
# `make fuzz`: builds each tests/fuzz/fuzz_NAME.c with clang's libFuzzer and ASan/UBSan,
# linked with common/ and the sources its tests/fuzz/fuzz_NAME.mk lists (fuzz_NAME_SRC, the
# same list the gcc corpus replay links), and runs it for FUZZ_SECONDS (default 30) on
# BUILD/fuzz/corpus-NAME, seeded from tests/fuzz/corpus/NAME and kept between runs.
# Targets may be named as arguments (`run.sh lireader tree`). A crashing input is left as
# BUILD/fuzz/crash-NAME-*; copy it into tests/fuzz/corpus/NAME/ once the bug is fixed.
# Exits non-zero when a target failed to build or crashed.
set -u
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
SECS=${FUZZ_SECONDS:-30}
CLANG=${CLANG:-clang}
out=$BUILD/fuzz
mkdir -p "$out" || exit 1

pkgs="libarchive libcurl jansson libcrypto zlib libisal libzstd"
cflags="-std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I. -g -O1 -fno-omit-frame-pointer
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
	$(pkg-config --cflags $pkgs)"
libs="$(pkg-config --libs $pkgs) -pthread"

# The value of fuzz_NAME_SRC in tests/fuzz/fuzz_NAME.mk (one `:=` line).
srcs_of() {
	sed -n "s/^fuzz_$1_SRC[[:space:]]*:=[[:space:]]*//p" "tests/fuzz/fuzz_$1.mk"
}

targets="$*"
[ -n "$targets" ] || targets=$(ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||')
failed=""
for t in $targets; do
	if [ ! -f "tests/fuzz/fuzz_$t.c" ] || [ ! -f "tests/fuzz/fuzz_$t.mk" ]; then
		echo "== $t: no tests/fuzz/fuzz_$t.c or fuzz_$t.mk" >&2
		failed="$failed $t"
		continue
	fi
	echo "== fuzz_$t ($SECS s)"
	# shellcheck disable=SC2046,SC2086
	if ! $CLANG $cflags -o "$out/fuzz_$t" "tests/fuzz/fuzz_$t.c" $(srcs_of "$t") \
		common/*.c $libs; then
		failed="$failed $t"
		continue
	fi
	mkdir -p "$out/corpus-$t"
	cp -n tests/fuzz/corpus/"$t"/* "$out/corpus-$t/" 2>/dev/null
	# -max_total_time bounds the run; timeout(1) bounds a target that hangs in one input.
	(cd "$out" && timeout -k 10 $((SECS + 120)) "./fuzz_$t" -max_total_time="$SECS" \
		-timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="crash-$t-" "corpus-$t") >"$out/fuzz_$t.log" 2>&1
	rc=$?
	grep -E '^(Done|stat::number_of_executed_units)' "$out/fuzz_$t.log" | tail -n 1
	if [ $rc -ne 0 ]; then
		failed="$failed $t"
		echo "fuzz_$t failed (exit $rc); end of $out/fuzz_$t.log:"
		tail -n 30 "$out/fuzz_$t.log" | sed 's/^/    /'
	fi
done
if [ -n "$failed" ]; then
	echo "fuzz: failed:$failed"
	exit 1
fi
echo "fuzz: all targets ran for $SECS s without a crash"
