/* eStargz: the footer, the TOC, and what a lazy mount makes of them: a described layer index
 * whose files read back as written (from the whole blob, and through a fetch hook that sees
 * which bytes a read needs) and whose entries are those the tar stream's own index has, and
 * a chunked span table whose spans check, refuse a flipped byte, and survive encoding. And
 * hostile footers, TOCs and span tables, refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <sys/mman.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "fsd/image/estargz.h"
#include "fsd/index/layerindex.h"
#include "tests/unit/fixture_estargz.h"
#include "tests/unit/fixture_lazy.h"

#define LAYER "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define CHUNK 5000u

static uint8_t big[23456], mid[7000];

static const struct esgz_file files[] = {
    {"etc", '5', NULL, 0},
    {"etc/hostname", '0', "lazy\n", 5},
    {"etc/empty", '0', "", 0},
    {"data", '5', NULL, 0},
    {"data/big", '0', big, sizeof(big)},
    {"data/link", '2', "big", 3},
    {"data/mid", '0', mid, sizeof(mid)},
};

struct fixture {
	struct esgz e;
	void *index;
	size_t index_len;
	struct spans *sp;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct error err = {""};
	int r;

	srand(1);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)rand();
	for (size_t i = 0; i < sizeof(mid); i++)
		mid[i] = (uint8_t)rand();
	assert_non_null(f);
	assert_int_equal(esgz_build(files, sizeof(files) / sizeof(files[0]), CHUNK, &f->e), 0);
	r = estargz_build(LAYER, f->e.len, f->e.toc_off, f->e.blob + f->e.toc_off,
	                  f->e.len - f->e.toc_off - ESTARGZ_FOOTER_SIZE, f->e.toc_digest, &f->index,
	                  &f->index_len, &f->sp, &err);
	if (r < 0)
		fail_msg("estargz_build: %s", err.msg);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	esgz_free(&f->e);
	free(f->index);
	spans_free(f->sp);
	free(f);
	return 0;
}

static void test_footer(void **state)
{
	struct fixture *f = *state;
	const uint8_t *footer = f->e.blob + f->e.len - ESTARGZ_FOOTER_SIZE;
	uint8_t bad[ESTARGZ_FOOTER_SIZE];
	struct error err = {""};
	uint64_t off = 0;

	assert_int_equal(estargz_footer_parse(footer, ESTARGZ_FOOTER_SIZE, f->e.len, &off, &err),
	                 0);
	assert_int_equal(off, f->e.toc_off);
	/* Too short, a flipped magic, a non-hex digit, an offset past the blob. */
	assert_int_equal(estargz_footer_parse(footer, 50, f->e.len, &off, &err), -EBADMSG);
	assert_true(err.msg[0]);
	for (size_t i = 0; i < ESTARGZ_FOOTER_SIZE; i++) {
		if (i >= 4 && i < 10)
			continue; /* MTIME, XFL, OS: anything */
		memcpy(bad, footer, sizeof(bad));
		bad[i] ^= 0x40;
		err.msg[0] = 0;
		if (estargz_footer_parse(bad, sizeof(bad), f->e.len, &off, &err) == 0)
			assert_true(i >= 16 && i < 32 && off < f->e.len - ESTARGZ_FOOTER_SIZE);
		else
			assert_true(err.msg[0]);
	}
	assert_int_equal(
	    estargz_footer_parse(footer, ESTARGZ_FOOTER_SIZE, f->e.toc_off + 10, &off, &err),
	    -EBADMSG);
}

/* The described index reads every file as written, and has the entries the tar stream's
 * own index has (same order, types, modes, sizes, targets). */
static void test_index_reads(void **state)
{
	struct fixture *f = *state;
	int ifd = lazyfix_memfd(f->index, f->index_len), dfd = lazyfix_memfd(f->e.blob, f->e.len);
	struct li_index *idx = NULL, *ref = lazyfix_stream_index(f->e.blob, f->e.len, LAYER, dfd);

	assert_int_equal(li_open_flags(ifd, dfd, LI_OPEN_VERIFY, &idx), 0);
	assert_int_equal(li_entry_count(idx), li_entry_count(ref));
	for (size_t i = 0; i < li_entry_count(idx); i++) {
		struct li_entry a, e;
		uint8_t got[sizeof(big)], want[sizeof(big)];

		lazyfix_entry_pair(idx, ref, i, &a, &e);
		assert_int_equal(a.mtime_sec, e.mtime_sec);
		if (e.link)
			assert_string_equal(a.link, e.link);
		if (a.type != LI_REG)
			continue;
		assert_int_equal(li_read(idx, i, got, a.size, 0), (ssize_t)a.size);
		assert_int_equal(li_read(ref, i, want, e.size, 0), (ssize_t)e.size);
		assert_memory_equal(got, want, a.size);
		/* Reads across chunk boundaries, from odd offsets. */
		if (a.size > CHUNK + 10) {
			assert_int_equal(li_read(idx, i, got, 20, CHUNK - 10), 20);
			assert_memory_equal(got, want + CHUNK - 10, 20);
		}
	}
	li_close(idx);
	li_close(ref);
	close(ifd);
	close(dfd);
}

/* A read of the last chunk of data/big asks for its member's bytes, not the layer's. */
static void test_index_fetches_little(void **state)
{
	struct fixture *f = *state;
	int ifd = lazyfix_memfd(f->index, f->index_len), dfd = lazyfix_memfd(f->e.blob, f->e.len);
	struct li_index *idx = NULL;
	struct lazyfix_range h = {UINT64_MAX, 0};
	uint8_t got[100];

	assert_int_equal(li_open_flags(ifd, dfd, LI_OPEN_VERIFY, &idx), 0);
	li_set_fetch(idx, lazyfix_record, &h);
	for (size_t i = 0; i < li_entry_count(idx); i++) {
		struct li_entry e;

		assert_int_equal(li_entry_get(idx, i, &e), 0);
		if (strcmp(e.path, "data/big") != 0)
			continue;
		assert_int_equal(li_read(idx, i, got, sizeof(got), e.size - sizeof(got)),
		                 (ssize_t)sizeof(got));
		assert_memory_equal(got, big + sizeof(big) - sizeof(got), sizeof(got));
	}
	assert_true(h.hi > h.lo);
	assert_true(h.hi - h.lo < 2 * CHUNK);
	assert_true(h.lo > 4 * CHUNK / 2); /* the fourth chunk's member, not the start */
	li_close(idx);
	close(ifd);
	close(dfd);
}

/* Every span of the table checks against the blob (but those of headers only, which
 * cannot); a flipped byte in a chunk fails its span; encoding round-trips. */
static void test_spans(void **state)
{
	struct fixture *f = *state;
	struct error err = {""};
	struct spans *back = NULL;
	void *enc = NULL;
	size_t enc_len = 0;
	uint64_t checked = 0;

	assert_non_null(f->sp->off);
	for (uint64_t i = 0; i < f->sp->n_spans; i++) {
		uint64_t off, len;
		uint8_t *copy;

		spans_range(f->sp, i, &off, &len);
		assert_int_equal(spans_find(f->sp, off), i);
		assert_int_equal(spans_find(f->sp, off + len - 1), i);
		if (!spans_checkable(f->sp, i)) {
			assert_false(spans_check(f->sp, i, f->e.blob + off, len));
			continue;
		}
		checked++;
		assert_true(spans_check(f->sp, i, f->e.blob + off, len));
		copy = malloc(len);
		assert_non_null(copy);
		memcpy(copy, f->e.blob + off, len);
		copy[12] ^= 1; /* the chunk's first deflate bytes */
		assert_false(spans_check(f->sp, i, copy, len));
		assert_false(spans_check(f->sp, i, f->e.blob + off, len - 1));
		free(copy);
	}
	/* data/big's 5 chunks, data/mid's 2, hostname's 1, and the TOC. */
	assert_int_equal(checked, 9);
	assert_int_equal(spans_encode(f->sp, &enc, &enc_len), 0);
	assert_int_equal(spans_parse(enc, enc_len, LAYER, f->e.len, &back, &err), 0);
	assert_int_equal(back->n_spans, f->sp->n_spans);
	assert_int_equal(back->n_chunks, f->sp->n_chunks);
	assert_memory_equal(back->off, f->sp->off, f->sp->n_spans * sizeof(uint64_t));
	assert_memory_equal(back->chunks, f->sp->chunks, f->sp->n_chunks * sizeof(*back->chunks));
	spans_free(back);
	/* Every truncation is refused; so is a wrong layer or size. */
	for (size_t n = 0; n < enc_len; n += 7)
		assert_int_equal(spans_parse(enc, n, NULL, UINT64_MAX, &back, &err), -EBADMSG);
	assert_int_equal(spans_parse(enc, enc_len, LAYER, f->e.len + 1, &back, &err), -EBADMSG);
	/* Spans out of order. */
	memset((uint8_t *)enc + 112 + 16, 0, 8);
	err.msg[0] = 0;
	assert_int_equal(spans_parse(enc, enc_len, NULL, UINT64_MAX, &back, &err), -EBADMSG);
	assert_true(err.msg[0]);
	free(enc);
}

/* The TOC member of json, fed to estargz_build() for a layer that ends after it. */
static int build_json(const char *json, const char *digest, struct error *err)
{
	uint8_t *member = NULL;
	size_t len = 0;
	void *index = NULL;
	size_t index_len = 0;
	struct spans *sp = NULL;
	uint64_t toc_off = 100000;
	int r;

	assert_int_equal(esgz_toc_member(json, strlen(json), &member, &len), 0);
	r = estargz_build(LAYER, toc_off + len + ESTARGZ_FOOTER_SIZE, toc_off, member, len, digest,
	                  &index, &index_len, &sp, err);
	free(member);
	free(index);
	spans_free(sp);
	return r;
}

#define D1 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define REG(name, size, off, extra)                                                                \
	"{\"name\":\"" name "\",\"type\":\"reg\",\"size\":" #size ",\"offset\":" #off              \
	",\"chunkDigest\":\"" D1 "\"" extra "}"

static void test_toc_hostile(void **state)
{
	static const char *const bad[] = {
	    "",
	    "[]",
	    "{\"entries\":{}}",
	    "{\"entries\":[{\"name\":\"a\"}]}",
	    "{\"entries\":[{\"name\":\"a\",\"type\":\"socket\"}]}",
	    /* a chunk with no file before it, or of another file */
	    "{\"entries\":[{\"name\":\"a\",\"type\":\"chunk\",\"offset\":1,\"chunkDigest\":\"" D1
	    "\"}]}",
	    "{\"entries\":[" REG("a", 10, 50,
	                         ",\"chunkSize\":5") ",{\"name\":\"b\",\"type\":"
	                                             "\"chunk\",\"offset\":60,\"chunkOffset\":5,"
	                                             "\"chunkDigest\":\"" D1 "\"}]}",
	    /* chunks that do not cover the file, or go past it */
	    "{\"entries\":[" REG("a", 10, 50, ",\"chunkSize\":5") "]}",
	    "{\"entries\":[" REG("a", 10, 50, ",\"chunkSize\":50") "]}",
	    /* no digest, a bad one, a negative offset */
	    "{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":3,\"offset\":5}]}",
	    "{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":3,\"offset\":5,"
	    "\"chunkDigest\":\"md5:00\"}]}",
	    "{\"entries\":[" REG("a", 3, -5, "") "]}",
	    /* members out of order, overlapping, past the TOC */
	    "{\"entries\":[" REG("a", 3, 500, "") "," REG("b", 3, 400, "") "]}",
	    "{\"entries\":[" REG("a", 30, 500, "") "," REG("b", 3, 500, ",\"innerOffset\":10") "]}",
	    "{\"entries\":[" REG("a", 3, 200000, "") "]}",
	    /* a huge inner offset */
	    "{\"entries\":[" REG("a", 3, 500, ",\"innerOffset\":99999999999") "]}",
	    /* bad modes, times, xattrs */
	    "{\"entries\":[{\"name\":\"d\",\"type\":\"dir\",\"modtime\":\"yesterday\"}]}",
	    "{\"entries\":[{\"name\":\"d\",\"type\":\"dir\",\"uid\":-1}]}",
	    "{\"entries\":[{\"name\":\"d\",\"type\":\"dir\",\"xattrs\":{\"user.a\":\"!!\"}}]}",
	};
	struct error err = {""};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err.msg[0] = 0;
		if (build_json(bad[i], NULL, &err) != -EBADMSG)
			fail_msg("TOC %zu accepted: %s", i, bad[i]);
		assert_true(err.msg[0]);
	}
	/* Sound ones, with a wrong digest, and with the right one. */
	assert_int_equal(build_json("{\"entries\":[" REG("a", 3, 500, "") "]}", NULL, &err), 0);
	assert_int_equal(
	    build_json("{\"entries\":[{\"name\":\"d\",\"type\":\"dir\",\"modtime\":"
	               "\"2020-01-01T01:00:00+01:00\",\"xattrs\":{\"user.a\":\"eHl6\"}}]}",
	               NULL, &err),
	    0);
	err.msg[0] = 0;
	assert_int_equal(build_json("{\"entries\":[]}", D1, &err), -EBADMSG);
	if (!strstr(err.msg, "digest"))
		fail_msg("not a digest mismatch: %s", err.msg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_footer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_index_reads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_index_fetches_little, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spans, setup, teardown),
	    cmocka_unit_test(test_toc_hostile),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
