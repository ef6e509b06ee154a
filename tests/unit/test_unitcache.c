/* The decoded-data cache on disk: hits and misses, eviction by size (least recently used
 * first), what a killed writer leaves, and damaged entries (never served). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "common/fileio.h"
#include "tests/unit/fixture_tmpdir.h"
#include "common/macros.h"
#include "fsd/index/unitcache.h"

#define HEX_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HEX_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define UNIT (64u << 10)

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
}

static size_t count_files(struct tmpdir *f, const char *hex)
{
	_cleanup_close_ int fd = openat(f->dfd, hex, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	size_t n = 0;

	if (fd < 0 || opendir_fd(fd, &d) < 0)
		return 0;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.' || strncmp(de->d_name, ".tmp-", 5) == 0;
	closedir(d);
	return n;
}

static void test_get_put(void **state)
{
	struct tmpdir *f = *state;
	_cleanup_(unitcache_freep) struct unitcache *c = NULL;
	static uint8_t in[UNIT], out[UNIT];
	struct unitcache_stats st;

	fill(in, sizeof(in), 1);
	assert_int_equal(unitcache_open(f->dfd, 1u << 30, &c), 0);
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), -ENOENT);
	unitcache_put(c, HEX_A, 0, in, UNIT, 0);
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), 0);
	assert_memory_equal(in, out, UNIT);
	/* A range is its start and its length: another length or layer is another unit. */
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT / 2), -ENOENT);
	assert_int_equal(unitcache_get(c, HEX_A, 1, out, UNIT), -ENOENT);
	assert_int_equal(unitcache_get(c, HEX_B, 0, out, UNIT), -ENOENT);
	/* Not a digest: never a path. */
	unitcache_put(c, "../x", 0, in, UNIT, 0);
	assert_int_equal(unitcache_get(c, "../x", 0, out, UNIT), -ENOENT);
	unitcache_get_stats(c, &st);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.stored, 1);
	assert_int_equal(count_files(f, HEX_A), 1);
}

/* A bound of 4 units: the fifth evicts down to three quarters of it, least recently used
 * first, then goes in. */
static void test_eviction(void **state)
{
	struct tmpdir *f = *state;
	_cleanup_(unitcache_freep) struct unitcache *c = NULL;
	static uint8_t in[UNIT], out[UNIT];
	struct unitcache_stats st;
	struct timespec t = {0, 20 * 1000 * 1000};

	fill(in, sizeof(in), 2);
	assert_int_equal(unitcache_open(f->dfd, 4 * (UNIT + 4096) + 4096, &c), 0);
	for (unsigned i = 0; i < 4; i++) {
		unitcache_put(c, HEX_A, (uint64_t)i * UNIT, in, UNIT, 0);
		nanosleep(&t, NULL);
	}
	assert_int_equal(count_files(f, HEX_A), 4);
	/* Entries used a while ago, in order (a hit refreshes an entry once a second). */
	for (unsigned i = 0; i < 4; i++) {
		char path[256];
		struct timespec ts[2] = {{time(NULL) - 100 + i, 0}, {time(NULL) - 100 + i, 0}};

		snprintf(path, sizeof(path), "%s/%x-%x", HEX_A, i * UNIT, UNIT);
		assert_int_equal(utimensat(f->dfd, path, ts, 0), 0);
	}
	/* Unit 0 used again: the least recently used is now unit 1. */
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), 0);
	nanosleep(&t, NULL);
	unitcache_put(c, HEX_B, 0, in, UNIT, 0);
	unitcache_get_stats(c, &st);
	assert_true(st.evicted >= 1);
	assert_true(count_files(f, HEX_A) + count_files(f, HEX_B) <= 4);
	assert_int_equal(unitcache_get(c, HEX_A, UNIT, out, UNIT), -ENOENT);
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), 0);
	assert_int_equal(unitcache_get(c, HEX_B, 0, out, UNIT), 0);
	/* A bound of 0 stores nothing. */
	unitcache_free(TAKE_PTR(c));
	assert_int_equal(unitcache_open(f->dfd, 0, &c), 0);
	unitcache_put(c, HEX_B, UNIT, in, UNIT, 0);
	assert_int_equal(unitcache_get(c, HEX_B, UNIT, out, UNIT), -ENOENT);
}

/* What a writer killed before its rename leaves is never read, and goes once old. */
static void test_crash_leftovers(void **state)
{
	struct tmpdir *f = *state;
	_cleanup_(unitcache_freep) struct unitcache *c = NULL;
	static uint8_t in[UNIT], out[UNIT];
	char path[256];
	struct timespec old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
	int fd;

	fill(in, sizeof(in), 3);
	assert_int_equal(mkdirat(f->dfd, HEX_A, 0755), 0);
	/* A half-written entry under its temporary name, and one just started. */
	snprintf(path, sizeof(path), "%s/.tmp-1-0000000000000001", HEX_A);
	fd = openat(f->dfd, path, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, in, 100), 100);
	close(fd);
	assert_int_equal(utimensat(f->dfd, path, old, 0), 0);
	snprintf(path, sizeof(path), "%s/.tmp-1-0000000000000002", HEX_A);
	fd = openat(f->dfd, path, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(unitcache_open(f->dfd, 1u << 30, &c), 0);
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), -ENOENT);
	assert_int_equal(count_files(f, HEX_A), 2);
	/* The first insert counts the cache: the old leftover goes, the recent one stays
	 * (its writer may be alive). */
	unitcache_put(c, HEX_A, 0, in, UNIT, 0);
	assert_int_equal(count_files(f, HEX_A), 2);
	assert_int_equal(faccessat(f->dfd, HEX_A "/.tmp-1-0000000000000001", F_OK, 0), -1);
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), 0);
	assert_memory_equal(in, out, UNIT);
}

/* Damaged entries (torn, flipped, truncated, another unit's) are removed, not served. */
static void test_corruption(void **state)
{
	struct tmpdir *f = *state;
	_cleanup_(unitcache_freep) struct unitcache *c = NULL;
	static uint8_t in[UNIT], out[UNIT];
	struct unitcache_stats st;
	char path[256], other[256];
	uint8_t b;
	int fd;

	fill(in, sizeof(in), 4);
	assert_int_equal(unitcache_open(f->dfd, 1u << 30, &c), 0);
	snprintf(path, sizeof(path), "%s/0-%x", HEX_A, UNIT);

	/* One data byte flipped. */
	unitcache_put(c, HEX_A, 0, in, UNIT, 0);
	fd = openat(f->dfd, path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, 32 + 1000), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, 32 + 1000), 1);
	close(fd);
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), -ENOENT);
	assert_int_equal(faccessat(f->dfd, path, F_OK, 0), -1);

	/* Truncated (a power loss after the rename). */
	unitcache_put(c, HEX_A, 0, in, UNIT, 0);
	{
		char full[320];

		snprintf(full, sizeof(full), "%s/%s", f->path, path);
		assert_int_equal(truncate(full, 32 + UNIT / 2), 0);
	}
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), -ENOENT);

	/* Another unit's entry under this unit's name. */
	unitcache_put(c, HEX_A, UNIT, in, UNIT, 0);
	snprintf(other, sizeof(other), "%s/%x-%x", HEX_A, UNIT, UNIT);
	assert_int_equal(renameat(f->dfd, other, f->dfd, path), 0);
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), -ENOENT);

	/* A whole entry rewritten with zeros. */
	unitcache_put(c, HEX_A, 0, in, UNIT, 0);
	fd = openat(f->dfd, path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	memset(out, 0, sizeof(out));
	assert_int_equal(write(fd, out, 32), 32);
	assert_int_equal(write(fd, out, UNIT), (ssize_t)UNIT);
	close(fd);
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), -ENOENT);

	unitcache_get_stats(c, &st);
	assert_int_equal(st.corrupt, 4);
	assert_int_equal(st.hits, 0);
	/* Stored again, it is served again. */
	unitcache_put(c, HEX_A, 0, in, UNIT, 0);
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), 0);
	assert_memory_equal(in, out, UNIT);
	assert_true(unitcache_dir_bytes(f->dfd) >= UNIT);
}

/* Part of a unit: only the blocks it covers are read and checked. */
static void test_partial_read(void **state)
{
	struct tmpdir *f = *state;
	_cleanup_(unitcache_freep) struct unitcache *c = NULL;
	static uint8_t in[200000], out[200000];
	char path[256];
	size_t table = 4 * 4; /* four 64 KiB blocks */
	uint8_t b;
	int fd;

	fill(in, sizeof(in), 5);
	assert_int_equal(unitcache_open(f->dfd, 1u << 30, &c), 0);
	unitcache_put(c, HEX_A, 4096, in, sizeof(in), 0);
	assert_int_equal(unitcache_read(c, HEX_A, 4096, sizeof(in), 70000, out, 100000), 0);
	assert_memory_equal(out, in + 70000, 100000);
	assert_int_equal(unitcache_read(c, HEX_A, 4096, sizeof(in), 65536, out, 65536), 0);
	assert_memory_equal(out, in + 65536, 65536);
	assert_int_equal(unitcache_read(c, HEX_A, 4096, sizeof(in), 199999, out, 1), 0);
	assert_int_equal(out[0], in[199999]);
	/* Past the end: refused. */
	assert_int_equal(unitcache_read(c, HEX_A, 4096, sizeof(in), 199999, out, 2), -ENOENT);
	/* A byte of the last block flipped: the first block still reads right, the last
	 * never does, and the entry goes. */
	snprintf(path, sizeof(path), "%s/1000-%zx", HEX_A, sizeof(in));
	fd = openat(f->dfd, path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, 40 + table + 199000), 1);
	b ^= 1;
	assert_int_equal(pwrite(fd, &b, 1, 40 + table + 199000), 1);
	close(fd);
	assert_int_equal(unitcache_read(c, HEX_A, 4096, sizeof(in), 10, out, 1000), 0);
	assert_memory_equal(out, in + 10, 1000);
	assert_int_equal(unitcache_read(c, HEX_A, 4096, sizeof(in), 198000, out, 2000), -ENOENT);
	assert_int_equal(faccessat(f->dfd, path, F_OK, 0), -1);
}

/* Entries of one layer never hold more data than the layer's uncompressed size, even when
 * ranges of different indexes overlap. */
static void test_layer_bound(void **state)
{
	struct tmpdir *f = *state;
	_cleanup_(unitcache_freep) struct unitcache *c = NULL;
	static uint8_t in[UNIT], out[UNIT];
	char path[256];

	fill(in, sizeof(in), 6);
	assert_int_equal(unitcache_open(f->dfd, 1u << 30, &c), 0);
	for (unsigned i = 0; i < 3; i++) {
		struct timespec ts[2] = {{time(NULL) - 100 + i, 0}, {time(NULL) - 100 + i, 0}};

		unitcache_put(c, HEX_A, (uint64_t)i * UNIT, in, UNIT, 3 * UNIT);
		snprintf(path, sizeof(path), "%s/%x-%x", HEX_A, i * UNIT, UNIT);
		assert_int_equal(utimensat(f->dfd, path, ts, 0), 0);
	}
	assert_int_equal(count_files(f, HEX_A), 3);
	/* The same bytes cut differently (another index's unit): the oldest entry goes. */
	unitcache_put(c, HEX_A, UNIT / 2, in, UNIT, 3 * UNIT);
	assert_int_equal(count_files(f, HEX_A), 3);
	assert_int_equal(unitcache_get(c, HEX_A, 0, out, UNIT), -ENOENT);
	assert_int_equal(unitcache_get(c, HEX_A, UNIT / 2, out, UNIT), 0);
	assert_int_equal(unitcache_get(c, HEX_A, 2 * UNIT, out, UNIT), 0);
	/* A unit larger than its layer is not stored. */
	unitcache_put(c, HEX_B, 0, in, UNIT, UNIT / 2);
	assert_int_equal(unitcache_get(c, HEX_B, 0, out, UNIT), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_get_put, tmpdir_setup, tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_eviction, tmpdir_setup, tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_crash_leftovers, tmpdir_setup, tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_corruption, tmpdir_setup, tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_partial_read, tmpdir_setup, tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_layer_bound, tmpdir_setup, tmpdir_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
