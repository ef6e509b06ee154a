/* The span table of a layer blob; see spans.h. */
#include <stdio.h>
#include "common/fileio.h"
#include "fsd/image/spans.h"

#define SPANS_MAGIC "IMGFSSPN"
#define SPANS_VERSION 1u
#define HEADER_LEN (8 + 4 + 4 + 8 + 72 + 8)

void spans_free(struct spans *sp)
{
	if (!sp)
		return;
	free(sp->digest);
	free(sp);
}

static bool span_size_ok(uint32_t n)
{
	return n >= SPANS_MIN_SIZE && n <= SPANS_MAX_SIZE && (n & (n - 1)) == 0;
}

static uint64_t count_spans(uint64_t size, uint32_t span_size)
{
	return size / span_size + (size % span_size != 0);
}

static int spans_new(const char *layer, uint64_t size, uint32_t span_size, struct spans **ret)
{
	_cleanup_(spans_freep) struct spans *sp = NULL;

	if (!digest_valid(layer) || !span_size_ok(span_size))
		return -EINVAL;
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	memcpy(sp->layer, layer, DIGEST_STR_LEN + 1);
	sp->blob_size = size;
	sp->span_size = span_size;
	sp->n_spans = count_spans(size, span_size);
	sp->digest = calloc(sp->n_spans ? sp->n_spans : 1, sizeof(*sp->digest));
	if (!sp->digest)
		return -ENOMEM;
	*ret = TAKE_PTR(sp);
	return 0;
}

void spans_range(const struct spans *sp, uint64_t i, uint64_t *ret_off, uint64_t *ret_len)
{
	uint64_t off = i * sp->span_size;

	*ret_off = off;
	*ret_len = MIN((uint64_t)sp->span_size, sp->blob_size - off);
}

bool spans_check(const struct spans *sp, uint64_t i, const void *buf, size_t len)
{
	uint64_t off, want;
	uint8_t md[32];

	if (i >= sp->n_spans)
		return false;
	spans_range(sp, i, &off, &want);
	if (len != want)
		return false;
	sha256_raw(buf, len, md);
	return memcmp(md, sp->digest[i], 32) == 0;
}

int spans_compute(int fd, const char *layer, uint64_t size, uint32_t span_size, struct spans **ret)
{
	_cleanup_(spans_freep) struct spans *sp = NULL;
	_cleanup_free_ uint8_t *buf = NULL;
	int r;

	r = spans_new(layer, size, span_size, &sp);
	if (r < 0)
		return r;
	buf = malloc(span_size);
	if (!buf)
		return -ENOMEM;
	for (uint64_t i = 0; i < sp->n_spans; i++) {
		uint64_t off, len;
		ssize_t n;

		spans_range(sp, i, &off, &len);
		n = pread_full(fd, buf, len, (off_t)off);
		if (n < 0)
			return (int)n;
		if ((uint64_t)n != len)
			return -EIO;
		sha256_raw(buf, len, sp->digest[i]);
	}
	*ret = TAKE_PTR(sp);
	return 0;
}

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int bytes)
{
	uint64_t v = 0;

	for (int i = bytes - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int spans_encode(const struct spans *sp, void **ret_buf, size_t *ret_len)
{
	size_t len = HEADER_LEN + (size_t)sp->n_spans * 32;
	uint8_t *b = calloc(1, len), *p = b;

	if (!b)
		return -ENOMEM;
	memcpy(p, SPANS_MAGIC, 8);
	put_le(p + 8, SPANS_VERSION, 4);
	put_le(p + 12, sp->span_size, 4);
	put_le(p + 16, sp->blob_size, 8);
	memcpy(p + 24, sp->layer, strlen(sp->layer));
	put_le(p + 96, sp->n_spans, 8);
	memcpy(p + HEADER_LEN, sp->digest, (size_t)sp->n_spans * 32);
	*ret_buf = b;
	*ret_len = len;
	return 0;
}

int spans_parse(const void *buf, size_t len, const char *expected_layer, uint64_t expected_size,
                struct spans **ret, struct error *err)
{
	_cleanup_(spans_freep) struct spans *sp = NULL;
	const uint8_t *p = buf;
	char layer[73];
	uint64_t size, n;
	uint32_t span_size;
	int r;

	if (len < HEADER_LEN || memcmp(p, SPANS_MAGIC, 8) != 0)
		return error_set(err, -EBADMSG, "not a span table");
	if (get_le(p + 8, 4) != SPANS_VERSION)
		return error_set(err, -EBADMSG, "span table version %u is not supported",
		                 (unsigned)get_le(p + 8, 4));
	span_size = (uint32_t)get_le(p + 12, 4);
	size = get_le(p + 16, 8);
	memcpy(layer, p + 24, 72);
	layer[72] = '\0';
	n = get_le(p + 96, 8);
	if (!span_size_ok(span_size))
		return error_set(err, -EBADMSG, "span table: bad span size %u", span_size);
	if (!digest_valid(layer))
		return error_set(err, -EBADMSG, "span table: bad layer digest");
	for (size_t i = strlen(layer); i < 72; i++)
		if (p[24 + i])
			return error_set(err, -EBADMSG, "span table: bad layer digest");
	if (expected_layer && !streq(layer, expected_layer))
		return error_set(err, -EBADMSG, "span table is for %s, not %s", layer,
		                 expected_layer);
	if (expected_size != UINT64_MAX && size != expected_size)
		return error_set(err, -EBADMSG, "span table is for %llu bytes, the layer has %llu",
		                 (unsigned long long)size, (unsigned long long)expected_size);
	if (n != count_spans(size, span_size) || n > (len - HEADER_LEN) / 32 ||
	    len != HEADER_LEN + n * 32)
		return error_set(err, -EBADMSG, "span table: %llu spans do not fit %zu bytes",
		                 (unsigned long long)n, len);
	r = spans_new(layer, size, span_size, &sp);
	if (r < 0)
		return error_set(err, r, "span table: out of memory");
	memcpy(sp->digest, p + HEADER_LEN, (size_t)n * 32);
	*ret = TAKE_PTR(sp);
	return 0;
}
