/* Lazily fetched blobs against an in-memory "registry": reads fetch only the spans they
 * need, adjacent ones in one request; a corrupt answer is fetched again, then refused;
 * the fill completes the blob into blobs/; a restarted daemon and a second process keep
 * what was fetched. And the span table's encoding, against hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "fsd/image/lazyblob.h"
#include "fsd/image/store.h"

#define SPAN (64u << 10)
#define BLOB_SIZE (SPAN * 20 + 1234)

struct remote {
	uint8_t *blob;
	uint64_t requests, bytes;
	int corrupt; /* answers to corrupt (flip one byte) from now on; -1: all */
	bool fail;
};

struct fixture {
	char dir[64];
	struct store *s;
	struct remote remote;
	char digest[DIGEST_STR_LEN + 1];
	void *table;
	size_t table_len;
};

static int remote_fetch(void *ctx, uint64_t off, uint64_t len, void *buf, struct error *err)
{
	struct remote *r = ctx;

	if (r->fail)
		return error_set(err, -EIO, "registry down");
	assert_true(off + len <= BLOB_SIZE);
	r->requests++;
	r->bytes += len;
	memcpy(buf, r->blob + off, len);
	if (r->corrupt != 0) {
		((uint8_t *)buf)[len / 2] ^= 0x55;
		if (r->corrupt > 0)
			r->corrupt--;
	}
	return 0;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	_cleanup_(spans_freep) struct spans *sp = NULL;
	int fd;

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/test_lazyblob.XXXXXX");
	if (!mkdtemp(f->dir) || store_open(f->dir, &f->s) < 0)
		return -1;
	f->remote.blob = malloc(BLOB_SIZE);
	for (uint64_t i = 0; i < BLOB_SIZE; i++)
		f->remote.blob[i] = (uint8_t)(i * 2654435761u >> 13);
	sha256_buf(f->remote.blob, BLOB_SIZE, f->digest);
	fd = memfd_create("blob", MFD_CLOEXEC);
	assert_int_equal(write_full(fd, f->remote.blob, BLOB_SIZE), 0);
	assert_int_equal(spans_compute(fd, f->digest, BLOB_SIZE, SPAN, &sp), 0);
	close(fd);
	assert_int_equal(spans_encode(sp, &f->table, &f->table_len), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	store_free(f->s);
	rm_rf_at(AT_FDCWD, f->dir);
	free(f->remote.blob);
	free(f->table);
	free(f);
	return 0;
}

static struct lazyblob *open_blob(struct fixture *f, unsigned fill_delay_ms)
{
	struct spans *sp = NULL;
	struct lazyblob *b = NULL;

	assert_int_equal(spans_parse(f->table, f->table_len, f->digest, BLOB_SIZE, &sp, NULL), 0);
	assert_int_equal(lazyblob_open(f->s, sp,
	                               &(struct lazyblob_opts){.fetch = remote_fetch,
	                                                       .ctx = &f->remote,
	                                                       .fill_delay_ms = fill_delay_ms,
	                                                       .max_request = 4 * SPAN},
	                               &b),
	                 0);
	return b;
}

static struct lazyblob *open_blob_ahead(struct fixture *f, uint64_t ahead_after)
{
	struct spans *sp = NULL;
	struct lazyblob *b = NULL;

	assert_int_equal(spans_parse(f->table, f->table_len, f->digest, BLOB_SIZE, &sp, NULL), 0);
	assert_int_equal(lazyblob_open(f->s, sp,
	                               &(struct lazyblob_opts){.fetch = remote_fetch,
	                                                       .ctx = &f->remote,
	                                                       .max_request = 4 * SPAN,
	                                                       .ahead_after = ahead_after},
	                               &b),
	                 0);
	return b;
}

static void expect_bytes(struct lazyblob *b, struct fixture *f, uint64_t off, size_t len)
{
	_cleanup_free_ uint8_t *got = malloc(len);

	assert_int_equal(pread_full(lazyblob_fd(b), got, len, (off_t)off), (ssize_t)len);
	assert_memory_equal(got, f->remote.blob + off, len);
}

static void test_reads_fetch_what_they_need(void **state)
{
	struct fixture *f = *state;
	_cleanup_(lazyblob_freep) struct lazyblob *b = open_blob(f, 0);
	struct lazyblob_stats st;

	/* 100 bytes across the border of spans 2 and 3: those two, in one request. */
	assert_int_equal(lazyblob_ensure(b, 3 * SPAN - 50, 100), 0);
	assert_int_equal(f->remote.requests, 1);
	assert_int_equal(f->remote.bytes, 2 * SPAN);
	expect_bytes(b, f, 3 * SPAN - 50, 100);
	/* Again: nothing. */
	assert_int_equal(lazyblob_ensure(b, 2 * SPAN, 2 * SPAN), 0);
	assert_int_equal(f->remote.requests, 1);
	/* Spans 1..12: 1 and 4..12 missing; runs of at most 4 spans per request. */
	assert_int_equal(lazyblob_ensure(b, SPAN + 1, 12 * SPAN - 2), 0);
	assert_int_equal(f->remote.bytes, 2 * SPAN + 10 * SPAN);
	assert_int_equal(f->remote.requests, 1 + 1 + 3);
	expect_bytes(b, f, SPAN, 12 * SPAN);
	/* The short last span. */
	assert_int_equal(lazyblob_ensure(b, BLOB_SIZE - 1, 1), 0);
	expect_bytes(b, f, 20 * SPAN, 1234);
	lazyblob_get_stats(b, &st);
	assert_int_equal(st.demand_bytes, f->remote.bytes);
	assert_int_equal(st.fill_bytes, 0);
	assert_int_equal(st.present, 12 * SPAN + 1234);
	assert_false(st.committed);
	assert_false(store_has_blob(f->s, f->digest));
}

/* A read that goes on sequentially past 1 MiB fetches ahead: fewer requests than spans,
 * and every byte right; a jump elsewhere starts again without read-ahead. */
static void test_sequential_reads_fetch_ahead(void **state)
{
	struct fixture *f = *state;
	_cleanup_(lazyblob_freep) struct lazyblob *b = open_blob_ahead(f, 1u << 20);
	uint64_t before;

	for (uint64_t off = 0; off < BLOB_SIZE; off += SPAN / 2)
		assert_int_equal(lazyblob_ensure(b, off, MIN((uint64_t)SPAN / 2, BLOB_SIZE - off)),
		                 0);
	/* 16 spans one by one, then the other 5 ahead, at most 4 a request. */
	assert_int_equal(f->remote.requests, 16 + 2);
	assert_int_equal(f->remote.bytes, BLOB_SIZE);
	expect_bytes(b, f, 0, BLOB_SIZE);
	/* A jump back: a span alone again. */
	lazyblob_free(b);
	b = NULL;
	rm_rf_at(AT_FDCWD, f->dir);
	assert_int_equal(mkdir(f->dir, 0700), 0);
	store_free(f->s);
	assert_int_equal(store_open(f->dir, &f->s), 0);
	b = open_blob_ahead(f, 1u << 20);
	before = f->remote.requests;
	assert_int_equal(lazyblob_ensure(b, 10 * SPAN, 100), 0);
	assert_int_equal(lazyblob_ensure(b, 2 * SPAN, 100), 0);
	assert_int_equal(f->remote.requests, before + 2);
	assert_int_equal(f->remote.bytes, BLOB_SIZE + 2 * SPAN);
}

static void test_corrupt_answers(void **state)
{
	struct fixture *f = *state;
	_cleanup_(lazyblob_freep) struct lazyblob *b = open_blob(f, 0);
	uint8_t zero[SPAN] = {0}, got[SPAN];

	/* Once: fetched again, right. */
	f->remote.corrupt = 1;
	assert_int_equal(lazyblob_ensure(b, 0, 10), 0);
	assert_int_equal(f->remote.requests, 2);
	expect_bytes(b, f, 0, SPAN);
	/* Always: -EIO, and the wrong bytes never reach the file. */
	f->remote.corrupt = -1;
	assert_int_equal(lazyblob_ensure(b, 5 * SPAN, 10), -EIO);
	assert_int_equal(pread_full(lazyblob_fd(b), got, SPAN, 5 * SPAN), SPAN);
	assert_memory_equal(got, zero, SPAN);
	/* The registry down: -EIO; up again: fine. */
	f->remote.corrupt = 0;
	f->remote.fail = true;
	assert_int_equal(lazyblob_ensure(b, 5 * SPAN, 10), -EIO);
	f->remote.fail = false;
	assert_int_equal(lazyblob_ensure(b, 5 * SPAN, 10), 0);
	expect_bytes(b, f, 5 * SPAN, SPAN);
}

static void test_fill_completes(void **state)
{
	struct fixture *f = *state;
	_cleanup_(lazyblob_freep) struct lazyblob *b = open_blob(f, 0);
	struct lazyblob_stats st;
	_cleanup_close_ int fd = -1;
	int r, steps = 0;

	assert_int_equal(lazyblob_ensure(b, 7 * SPAN, 1), 0);
	while ((r = lazyblob_fill(b)) > 0)
		steps++;
	assert_int_equal(r, 0);
	/* 1 MiB fill requests at most (16 spans, here 4 by max_request). */
	assert_true(steps >= 5);
	lazyblob_get_stats(b, &st);
	assert_true(st.committed);
	assert_int_equal(st.present, BLOB_SIZE);
	assert_int_equal(st.demand_bytes + st.fill_bytes, BLOB_SIZE);
	assert_int_equal(f->remote.bytes, BLOB_SIZE);
	assert_true(store_has_blob(f->s, f->digest));
	assert_int_equal(store_open_blob(f->s, f->digest, &fd), 0);
	/* Reads go on through the same descriptor; a new open finds the blob complete. */
	expect_bytes(b, f, 0, BLOB_SIZE);
	assert_int_equal(lazyblob_fill(b), 0);
	{
		struct spans *sp = NULL;
		struct lazyblob *again = NULL;

		assert_int_equal(spans_parse(f->table, f->table_len, NULL, UINT64_MAX, &sp, NULL),
		                 0);
		assert_int_equal(
		    lazyblob_open(f->s, sp,
		                  &(struct lazyblob_opts){.fetch = remote_fetch, .ctx = &f->remote},
		                  &again),
		    -EEXIST);
	}
}

/* A daemon killed half-way, and a second process on the same blob: what was fetched and
 * verified is kept; a span torn by the kill is fetched again. */
static void test_restart_and_sharing(void **state)
{
	struct fixture *f = *state;
	struct lazyblob *b = open_blob(f, 0), *other;
	uint64_t bytes;

	assert_int_equal(lazyblob_ensure(b, 0, 3 * SPAN), 0);
	assert_int_equal(lazyblob_ensure(b, 10 * SPAN, 1), 0);
	lazyblob_free(b);
	/* Torn: half of span 10 lost. */
	{
		char path[128];
		_cleanup_close_ int fd = -1;

		snprintf(path, sizeof(path), "%s/tmp/%s.lazy", f->dir, digest_hex(f->digest));
		fd = open(path, O_RDWR | O_CLOEXEC);
		assert_true(fd >= 0);
		assert_int_equal(
		    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 10 * SPAN, SPAN / 2),
		    0);
	}
	bytes = f->remote.bytes;
	b = open_blob(f, 0);
	other = open_blob(f, 0);
	assert_int_equal(lazyblob_ensure(b, 0, 3 * SPAN), 0);
	assert_int_equal(f->remote.bytes, bytes);
	assert_int_equal(lazyblob_ensure(other, 10 * SPAN, 1), 0);
	assert_int_equal(f->remote.bytes, bytes + SPAN);
	/* Fetched by one, found by the other. */
	assert_int_equal(lazyblob_ensure(other, 15 * SPAN, 1), 0);
	assert_int_equal(lazyblob_ensure(b, 15 * SPAN, 1), 0);
	assert_int_equal(f->remote.bytes, bytes + 2 * SPAN);
	expect_bytes(b, f, 15 * SPAN, SPAN);
	lazyblob_free(other);
	lazyblob_free(b);
}

static void test_spans_parse_hostile(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ uint8_t *bad = malloc(f->table_len + 64);
	struct spans *sp = NULL;
	struct error err = {""};
	char other[DIGEST_STR_LEN + 1];

	memcpy(bad, f->table, f->table_len);
	for (size_t cut = 0; cut < f->table_len; cut += 7)
		assert_int_equal(spans_parse(bad, cut, NULL, UINT64_MAX, &sp, NULL), -EBADMSG);
	assert_int_equal(spans_parse(bad, f->table_len + 1, NULL, UINT64_MAX, &sp, NULL), -EBADMSG);
	sha256_buf("x", 1, other);
	assert_int_equal(spans_parse(bad, f->table_len, other, UINT64_MAX, &sp, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "is for"));
	assert_int_equal(spans_parse(bad, f->table_len, NULL, BLOB_SIZE + 1, &sp, NULL), -EBADMSG);
	bad[12] = 3; /* span size not a power of two */
	assert_int_equal(spans_parse(bad, f->table_len, NULL, UINT64_MAX, &sp, NULL), -EBADMSG);
	memcpy(bad, f->table, f->table_len);
	bad[96] ^= 1; /* span count */
	assert_int_equal(spans_parse(bad, f->table_len, NULL, UINT64_MAX, &sp, NULL), -EBADMSG);
	memcpy(bad, f->table, f->table_len);
	bad[30] = 'G'; /* layer digest */
	assert_int_equal(spans_parse(bad, f->table_len, NULL, UINT64_MAX, &sp, NULL), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_reads_fetch_what_they_need, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sequential_reads_fetch_ahead, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_answers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fill_completes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restart_and_sharing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spans_parse_hostile, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
