/* The span cache: references, eviction, the adaptive size and buffer reuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>
#include "fsd/index/spancache.h"

#define MiB (1u << 20)

static const struct span *insert(uint64_t owner, uint64_t unit, size_t len)
{
	uint8_t *data = spancache_alloc(len);

	assert_non_null(data);
	memset(data, (int)(unit & 0xff), len);
	return spancache_insert(owner, unit, data, len);
}

static void test_get_insert_put(void **state)
{
	uint64_t o = spancache_new_owner();
	const struct span *s, *t;

	(void)state;
	spancache_set_size(SPANCACHE_DEFAULT_SIZE);
	assert_null(spancache_get(o, 1));
	s = insert(o, 1, 4096);
	assert_int_equal(s->len, 4096);
	t = spancache_get(o, 1);
	assert_ptr_equal(s, t);
	assert_int_equal(t->data[4095], 1);
	spancache_put(t);
	/* A second insert of the same key returns the first span. */
	t = insert(o, 1, 4096);
	assert_ptr_equal(s, t);
	spancache_put(t);
	/* Dropped while referenced: the bytes stay valid until the last put. */
	spancache_drop_owner(o);
	assert_null(spancache_get(o, 1));
	assert_int_equal(s->data[0], 1);
	spancache_put(s);
	assert_int_equal(spancache_bytes(), 0);
}

/* One reader going forward: the cache stays at its minimum size. */
static void test_sequential_stays_small(void **state)
{
	uint64_t o = spancache_new_owner();

	(void)state;
	spancache_set_size(SPANCACHE_DEFAULT_SIZE);
	assert_int_equal(spancache_target(), SPANCACHE_MIN_SIZE);
	for (uint64_t u = 0; u < 64; u++)
		spancache_put(insert(o, u, MiB));
	assert_int_equal(spancache_target(), SPANCACHE_MIN_SIZE);
	assert_true(spancache_bytes() <= SPANCACHE_MIN_SIZE);
	/* The newest spans are the ones kept. */
	const struct span *s = spancache_get(o, 63);
	assert_non_null(s);
	spancache_put(s);
	assert_null(spancache_get(o, 0));
	spancache_drop_owner(o);
}

/* Readers that come back to spans evicted too early grow the cache (at most to its
 * limit); once they are gone it shrinks back to the minimum. */
static void test_adapts_to_parallel_readers(void **state)
{
	uint64_t o = spancache_new_owner();
	const size_t limit = 24 * MiB;

	(void)state;
	spancache_set_size(limit);
	/* 16 readers, each on its own span, taking turns. */
	for (int round = 0; round < 8; round++)
		for (uint64_t r = 0; r < 16; r++) {
			const struct span *s = spancache_get(o, r);

			spancache_put(s ? s : insert(o, r, MiB));
		}
	/* It grew to what the readers use, not to the limit. */
	assert_int_equal(spancache_target(), 16 * MiB);
	assert_int_equal(spancache_bytes(), 16 * MiB);
	/* Everything the readers use fits now: no more misses. */
	for (uint64_t r = 0; r < 16; r++) {
		const struct span *s = spancache_get(o, r);

		assert_non_null(s);
		spancache_put(s);
	}
	/* A single reader going forward shrinks it back. */
	for (uint64_t u = 100; u < 100 + 16 * 24; u++)
		spancache_put(insert(o, u, MiB));
	assert_int_equal(spancache_target(), SPANCACHE_MIN_SIZE);
	assert_true(spancache_bytes() <= SPANCACHE_MIN_SIZE);
	spancache_drop_owner(o);
}

static void test_disabled_and_buffers(void **state)
{
	uint64_t o = spancache_new_owner();
	const struct span *s;
	uint8_t *a, *b;

	(void)state;
	spancache_set_size(0);
	s = insert(o, 1, 4096);
	assert_non_null(s);
	assert_null(spancache_get(o, 1)); /* not cached */
	spancache_put(s);
	assert_int_equal(spancache_bytes(), 0);

	/* A freed buffer is reused for a span it can hold. */
	a = spancache_alloc(MiB);
	assert_non_null(a);
	a[MiB - 1] = 7;
	spancache_free(a);
	b = spancache_alloc(MiB / 2);
	assert_ptr_equal(a, b);
	spancache_free(b);
	spancache_free(NULL);
	spancache_set_size(SPANCACHE_DEFAULT_SIZE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_get_insert_put),
	    cmocka_unit_test(test_sequential_stays_small),
	    cmocka_unit_test(test_adapts_to_parallel_readers),
	    cmocka_unit_test(test_disabled_and_buffers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
