/* SOCI: a zTOC (flatbuffer, zran checkpoints found with Z_BLOCK, so that some start inside
 * a byte) becomes a layer index whose files read back as written, whose entries are the
 * tar stream's own index's, and a span table of compressed digests that check, refuse a
 * flipped byte and survive encoding; v1 zTOCs (no first checkpoint) too. Truncated and
 * garbled zTOCs are refused with a reason or read within bounds; the index manifest's
 * parser takes v1 and v2 and refuses another image's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <sys/mman.h>
#include <zlib.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "fsd/image/soci.h"
#include "fsd/index/layerindex.h"
#include "tests/unit/fixture_estargz.h"
#include "tests/unit/fixture_lazy.h"
#include "tests/unit/fixture_soci.h"

#define LAYER "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define SPAN (64u << 10)

static uint8_t text[300000], noise[200000];

struct fixture {
	uint8_t *blob;
	size_t len;
	struct soci_file files[4];
	uint8_t *ztoc;
	size_t ztoc_len;
	void *index;
	size_t index_len;
	struct spans *sp;
};

static int build(struct fixture *f, int v1)
{
	static const struct {
		const char *name;
		char type;
		const uint8_t *data;
		size_t size;
	} in[] = {
	    {"d/", '5', NULL, 0},
	    {"d/text", '0', text, sizeof(text)},
	    {"d/noise", '0', noise, sizeof(noise)},
	    {"d/tail", '0', text + 1000, 777},
	};
	size_t cap = sizeof(text) + sizeof(noise) + 16 * 512, at = 0;
	uint8_t *tar = calloc(1, cap);
	uLongf zlen;
	z_stream z = {0};
	struct error err = {""};
	int r;

	assert_non_null(tar);
	for (size_t i = 0; i < 4; i++) {
		esgz_tar_header(tar + at, in[i].name, in[i].type, in[i].size,
		                in[i].type == '5' ? 0755 : 0644, NULL);
		at += 512;
		f->files[i] = (struct soci_file){.name = in[i].name,
		                                 .type = in[i].type == '5' ? "dir" : "reg",
		                                 .offset = at,
		                                 .size = in[i].size,
		                                 .mode = in[i].type == '5' ? 0755 : 0644,
		                                 .mtime = "2020-01-01T00:00:00Z"};
		if (in[i].size)
			memcpy(tar + at, in[i].data, in[i].size);
		at += (in[i].size + 511) / 512 * 512;
	}
	at += 1024;
	zlen = compressBound(at) + 64;
	f->blob = malloc(zlen);
	assert_non_null(f->blob);
	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = tar;
	z.avail_in = (uInt)at;
	z.next_out = f->blob;
	z.avail_out = (uInt)zlen;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	f->len = zlen - z.avail_out;
	deflateEnd(&z);
	free(tar);
	assert_int_equal(
	    soci_ztoc_build(f->blob, f->len, f->files, 4, SPAN, v1, &f->ztoc, &f->ztoc_len), 0);
	r = soci_build(LAYER, f->len, f->ztoc, f->ztoc_len, &f->index, &f->index_len, &f->sp, &err);
	if (r < 0)
		fail_msg("soci_build: %s", err.msg);
	return 0;
}

static int setup_v(void **state, int v1)
{
	struct fixture *f = calloc(1, sizeof(*f));

	srand(2);
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (uint8_t)("the quick brown fox jumps over the lazy dog "[i % 44] ^
		                    (rand() % 16 == 0));
	for (size_t i = 0; i < sizeof(noise); i++)
		noise[i] = (uint8_t)rand();
	assert_non_null(f);
	build(f, v1);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_v(state, 0);
}

static int setup_v1(void **state)
{
	return setup_v(state, 1);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	free(f->blob);
	free(f->ztoc);
	free(f->index);
	spans_free(f->sp);
	free(f);
	return 0;
}

static void test_reads(void **state)
{
	struct fixture *f = *state;
	int ifd = lazyfix_memfd(f->index, f->index_len), dfd = lazyfix_memfd(f->blob, f->len);
	struct li_index *idx = NULL, *ref = lazyfix_stream_index(f->blob, f->len, LAYER, dfd);
	static uint8_t got[sizeof(text)], want[sizeof(text)];

	assert_int_equal(li_open_flags(ifd, dfd, LI_OPEN_VERIFY, &idx), 0);
	assert_int_equal(li_entry_count(idx), li_entry_count(ref));
	for (size_t i = 0; i < li_entry_count(idx); i++) {
		struct li_entry a, e;

		lazyfix_entry_pair(idx, ref, i, &a, &e);
		if (a.type != LI_REG)
			continue;
		assert_int_equal(a.data_off, e.data_off);
		assert_int_equal(li_read(ref, i, want, e.size, 0), (ssize_t)e.size);
		assert_int_equal(li_read(idx, i, got, a.size, 0), (ssize_t)a.size);
		assert_memory_equal(got, want, a.size);
		/* From every checkpoint's neighbourhood. */
		for (uint64_t off = 0; off + 100 < a.size; off += SPAN / 3) {
			assert_int_equal(li_read(idx, i, got, 100, off), 100);
			assert_memory_equal(got, want + off, 100);
		}
	}
	li_close(ref);
	li_close(idx);
	/* A lazy read of the last file asks for bytes from a checkpoint near it. */
	{
		struct lazyfix_range h = {UINT64_MAX, 0};

		assert_int_equal(li_open_flags(ifd, dfd, LI_OPEN_VERIFY, &idx), 0);
		li_set_fetch(idx, lazyfix_record, &h);
		assert_int_equal(li_read(idx, 3, got, 777, 0), 777);
		assert_memory_equal(got, text + 1000, 777);
		assert_true(h.lo > f->len / 2);
		li_close(idx);
	}
	close(ifd);
	close(dfd);
}

static void test_spans(void **state)
{
	struct fixture *f = *state;
	struct spans *back = NULL;
	struct error err = {""};
	void *enc = NULL;
	size_t enc_len = 0;
	uint64_t checked = 0, overlapping = 0;

	assert_int_equal(f->sp->check, SPANS_COMPRESSED);
	for (uint64_t i = 0; i < f->sp->n_spans; i++) {
		uint64_t off, len;
		uint8_t *copy;

		spans_range(f->sp, i, &off, &len);
		assert_int_equal(spans_find(f->sp, off), i);
		overlapping += len > spans_owned(f->sp, i);
		if (!spans_checkable(f->sp, i))
			continue;
		checked++;
		assert_true(spans_check(f->sp, i, f->blob + off, len));
		copy = malloc(len);
		assert_non_null(copy);
		memcpy(copy, f->blob + off, len);
		copy[len - 1] ^= 0x10;
		assert_false(spans_check(f->sp, i, copy, len));
		free(copy);
	}
	assert_true(checked >= 5);
	assert_true(overlapping > 0); /* some checkpoint starts inside a byte */
	assert_int_equal(spans_encode(f->sp, &enc, &enc_len), 0);
	assert_int_equal(spans_parse(enc, enc_len, LAYER, f->len, &back, &err), 0);
	assert_int_equal(back->check, SPANS_COMPRESSED);
	assert_memory_equal(back->chunks, f->sp->chunks, f->sp->n_chunks * sizeof(*back->chunks));
	spans_free(back);
	/* A digest that covers more than its span and the next one's first byte. */
	((uint8_t *)enc)[112 + f->sp->n_spans * 16 + 8] += 2;
	assert_int_equal(spans_parse(enc, enc_len, LAYER, f->len, &back, &err), -EBADMSG);
	free(enc);
}

static void test_hostile(void **state)
{
	struct fixture *f = *state;
	struct error err = {""};
	void *index = NULL;
	size_t index_len = 0;
	struct spans *sp = NULL;
	uint8_t *copy = malloc(f->ztoc_len);

	assert_non_null(copy);
	/* Every truncation is refused, with a reason. */
	for (size_t n = 0; n < f->ztoc_len; n += 97) {
		err.msg[0] = 0;
		assert_int_equal(
		    soci_build(LAYER, f->len, f->ztoc, n, &index, &index_len, &sp, &err), -EBADMSG);
		assert_true(err.msg[0]);
	}
	/* The wrong layer size. */
	assert_int_equal(
	    soci_build(LAYER, f->len + 1, f->ztoc, f->ztoc_len, &index, &index_len, &sp, &err),
	    -EBADMSG);
	/* Flipped bytes: refused, or an index that opens. */
	for (size_t i = 0; i < f->ztoc_len; i += 13) {
		int r;

		memcpy(copy, f->ztoc, f->ztoc_len);
		copy[i] ^= (uint8_t)(1u << (i % 8));
		err.msg[0] = 0;
		r = soci_build(LAYER, f->len, copy, f->ztoc_len, &index, &index_len, &sp, &err);
		if (r < 0) {
			assert_true(err.msg[0]);
			continue;
		}
		{
			int fd = lazyfix_memfd(index, index_len);
			struct li_index *idx = NULL;

			assert_int_equal(
			    li_open_flags(fd, -1, LI_OPEN_VERIFY | LI_OPEN_NO_DATA, &idx), 0);
			li_close(idx);
			close(fd);
		}
		free(index);
		spans_free(sp);
	}
	free(copy);
}

static void test_index_manifest(void **state)
{
	static const char v1[] =
	    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
	    "\"config\":{\"mediaType\":\"application/vnd.amazon.soci.index.v1+json\",\"digest\":"
	    "\"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\",\"size\":"
	    "2},"
	    "\"layers\":[{\"mediaType\":\"application/octet-stream\",\"digest\":\"" LAYER
	    "\",\"size\":1234,\"annotations\":{\"com.amazon.soci.image-layer-digest\":\"sha256:"
	    "4444444444444444444444444444444444444444444444444444444444444444\"}},"
	    "{\"mediaType\":\"application/vnd.amazon.soci.prefetch.v1+json\",\"digest\":\"" LAYER
	    "\",\"size\":10}],"
	    "\"subject\":{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":"
	    "\"sha256:5555555555555555555555555555555555555555555555555555555555555555\",\"size\":"
	    "9}}";
	struct soci_ztoc *z = NULL;
	struct error err = {""};
	size_t n = 0;
	const char *subject =
	    "sha256:5555555555555555555555555555555555555555555555555555555555555555";

	(void)state;
	assert_int_equal(soci_index_parse(v1, strlen(v1), subject, &z, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(z[0].digest, LAYER);
	assert_int_equal(z[0].size, 1234);
	free(z);
	assert_int_equal(soci_index_parse(v1, strlen(v1), LAYER, &z, &n, &err), -EBADMSG);
	assert_int_equal(soci_index_parse("{}", 2, NULL, &z, &n, &err), -EBADMSG);
	assert_int_equal(soci_index_parse(v1, 40, NULL, &z, &n, &err), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_reads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reads, setup_v1, teardown),
	    cmocka_unit_test_setup_teardown(test_spans, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hostile, setup, teardown),
	    cmocka_unit_test(test_index_manifest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
