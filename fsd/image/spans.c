/* The span table of a layer blob; see spans.h. */
#include <stdio.h>
#include <zlib.h>
#include "common/fileio.h"
#include "fsd/image/spans.h"

#define SPANS_MAGIC "IMGFSSPN"
#define SPANS_VERSION 1u
#define SPANS_VERSION_CHUNKED 2u
#define HEADER_LEN (8 + 4 + 4 + 8 + 72 + 8)
#define HEADER_LEN_CHUNKED (HEADER_LEN + 8)
#define SPAN_REC 16u
#define CHUNK_REC 48u

void spans_free(struct spans *sp)
{
	if (!sp)
		return;
	free(sp->digest);
	free(sp->off);
	free(sp->first);
	free(sp->count);
	free(sp->chunks);
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
	sp->max_len = MIN((uint64_t)span_size, size);
	*ret = TAKE_PTR(sp);
	return 0;
}

int spans_new_chunked(const char *layer, uint64_t size, uint64_t n_spans, uint64_t n_chunks,
                      struct spans **ret)
{
	_cleanup_(spans_freep) struct spans *sp = NULL;

	if (!digest_valid(layer) || n_spans == 0 || n_spans > size || n_spans > UINT32_MAX ||
	    n_chunks >= UINT32_MAX)
		return -EINVAL;
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	memcpy(sp->layer, layer, DIGEST_STR_LEN + 1);
	sp->blob_size = size;
	sp->n_spans = n_spans;
	sp->n_chunks = n_chunks;
	sp->off = calloc(n_spans, sizeof(*sp->off));
	sp->first = calloc(n_spans, sizeof(*sp->first));
	sp->count = calloc(n_spans, sizeof(*sp->count));
	sp->chunks = calloc(n_chunks ? n_chunks : 1, sizeof(*sp->chunks));
	if (!sp->off || !sp->first || !sp->count || !sp->chunks)
		return -ENOMEM;
	*ret = TAKE_PTR(sp);
	return 0;
}

int spans_chunked_check(struct spans *sp, struct error *err)
{
	uint64_t next_chunk = 0;

	sp->max_len = 0;
	for (uint64_t i = 0; i < sp->n_spans; i++) {
		uint64_t end = i + 1 < sp->n_spans ? sp->off[i + 1] : sp->blob_size, at = 0;

		if (i == 0 ? sp->off[0] != 0 : sp->off[i] <= sp->off[i - 1])
			return error_set(err, -EBADMSG, "span table: span %llu is out of order",
			                 (unsigned long long)i);
		if (end <= sp->off[i] || end - sp->off[i] > SPANS_MAX_CHUNKED_SPAN)
			return error_set(err, -EBADMSG,
			                 "span table: span %llu is too long or empty",
			                 (unsigned long long)i);
		sp->max_len = MAX(sp->max_len, end - sp->off[i] + 1);
		if (sp->first[i] != next_chunk || sp->count[i] > sp->n_chunks - next_chunk)
			return error_set(err, -EBADMSG, "span table: the chunks of span %llu",
			                 (unsigned long long)i);
		if (sp->check == SPANS_COMPRESSED) {
			const struct spans_chunk *c = &sp->chunks[sp->first[i]];

			/* The digest covers the span, or the span and the next one's first byte. */
			if (sp->count[i] > 1 ||
			    (sp->count[i] == 1 &&
			     (c->inner != 0 || c->size < end - sp->off[i] ||
			      c->size > end - sp->off[i] + (i + 1 < sp->n_spans))))
				return error_set(err, -EBADMSG,
				                 "span table: the digest of span %llu",
				                 (unsigned long long)i);
			next_chunk += sp->count[i];
			continue;
		}
		if (sp->check != SPANS_INFLATED)
			return error_set(err, -EBADMSG, "span table: unknown check %u", sp->check);
		for (uint32_t k = 0; k < sp->count[i]; k++) {
			const struct spans_chunk *c = &sp->chunks[sp->first[i] + k];

			if (c->size == 0 || c->inner < at || c->inner > SPANS_MAX_OUT ||
			    c->size > SPANS_MAX_OUT - c->inner)
				return error_set(err, -EBADMSG,
				                 "span table: chunk %llu of span %llu",
				                 (unsigned long long)k, (unsigned long long)i);
			at = c->inner + c->size;
		}
		next_chunk += sp->count[i];
	}
	if (next_chunk != sp->n_chunks)
		return error_set(err, -EBADMSG, "span table: chunks belong to no span");
	return 0;
}

uint64_t spans_find(const struct spans *sp, uint64_t off)
{
	uint64_t lo = 0, hi = sp->n_spans;

	if (!sp->off)
		return off / sp->span_size;
	while (hi - lo > 1) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (sp->off[mid] <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

bool spans_checkable(const struct spans *sp, uint64_t i)
{
	return !sp->off || (i < sp->n_spans && sp->count[i] > 0);
}

uint64_t spans_owned(const struct spans *sp, uint64_t i)
{
	uint64_t off, len;

	if (sp->off && i < sp->n_spans)
		return (i + 1 < sp->n_spans ? sp->off[i + 1] : sp->blob_size) - sp->off[i];
	spans_range(sp, i, &off, &len);
	return len;
}

void spans_range(const struct spans *sp, uint64_t i, uint64_t *ret_off, uint64_t *ret_len)
{
	uint64_t off;

	if (sp->off) {
		off = i < sp->n_spans ? sp->off[i] : sp->blob_size;
		*ret_off = off;
		*ret_len = (i + 1 < sp->n_spans ? sp->off[i + 1] : sp->blob_size) - off;
		if (sp->check == SPANS_COMPRESSED && i < sp->n_spans && sp->count[i] == 1)
			*ret_len = sp->chunks[sp->first[i]].size;
		return;
	}
	off = i * sp->span_size;
	*ret_off = off;
	*ret_len = MIN((uint64_t)sp->span_size, sp->blob_size - off);
}

/* Inflates buf (gzip members, one after another) and checks chunks[0 .. n) against it. */
static bool check_chunks(const struct spans_chunk *chunks, uint32_t n, const void *buf, size_t len)
{
	_cleanup_free_ uint8_t *out = malloc(64u << 10);
	_cleanup_(sha256_freep) struct sha256 *h = NULL;
	char want[DIGEST_STR_LEN + 1], got[DIGEST_STR_LEN + 1];
	uint64_t pos = 0, need = chunks[n - 1].inner + chunks[n - 1].size;
	uint32_t k = 0;
	z_stream z = {0};
	bool ok = false;

	if (!out || inflateInit2(&z, 15 + 16) != Z_OK)
		return false;
	z.next_in = (Bytef *)buf;
	z.avail_in = (uInt)MIN(len, (size_t)UINT_MAX);
	while (pos < need) {
		uint64_t o, e;
		int zr;

		z.next_out = out;
		z.avail_out = (uInt)MIN((uint64_t)(64u << 10), need - pos);
		zr = inflate(&z, Z_NO_FLUSH);
		if (zr != Z_OK && zr != Z_STREAM_END)
			break;
		o = pos;
		e = pos + (uint64_t)(z.next_out - out);
		pos = e;
		/* The output [o, e) against the chunks it overlaps. */
		while (k < n && o < e) {
			const struct spans_chunk *c = &chunks[k];
			uint64_t a = MAX(o, c->inner), b = MIN(e, c->inner + c->size);

			if (a < b) {
				if (!h && !(h = sha256_new()))
					goto out;
				sha256_update(h, out + (a - o), (size_t)(b - a));
			}
			if (e < c->inner + c->size)
				break;
			if (!h)
				goto out; /* cannot happen: size > 0 */
			sha256_final(h, got);
			sha256_free(h);
			h = NULL;
			strcpy(want, "sha256:");
			for (int i = 0; i < 32; i++)
				snprintf(want + 7 + 2 * i, 3, "%02x", c->digest[i]);
			if (!streq(want, got))
				goto out;
			k++;
		}
		if (zr == Z_STREAM_END) {
			if (z.avail_in == 0 || inflateReset(&z) != Z_OK)
				break;
		} else if (z.next_out == out && z.avail_in == 0) {
			break; /* the span ends before its chunks do */
		}
	}
	ok = k == n;
out:
	inflateEnd(&z);
	return ok;
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
	if (sp->off && sp->check == SPANS_COMPRESSED) {
		if (sp->count[i] != 1)
			return false;
		sha256_raw(buf, len, md);
		return memcmp(md, sp->chunks[sp->first[i]].digest, 32) == 0;
	}
	if (sp->off)
		return sp->count[i] > 0 &&
		       check_chunks(sp->chunks + sp->first[i], sp->count[i], buf, len);
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

static int encode_chunked(const struct spans *sp, void **ret_buf, size_t *ret_len)
{
	size_t len =
	    HEADER_LEN_CHUNKED + (size_t)sp->n_spans * SPAN_REC + (size_t)sp->n_chunks * CHUNK_REC;
	uint8_t *b = calloc(1, len), *p;

	if (!b)
		return -ENOMEM;
	memcpy(b, SPANS_MAGIC, 8);
	put_le(b + 8, SPANS_VERSION_CHUNKED, 4);
	put_le(b + 12, sp->check, 4);
	put_le(b + 16, sp->blob_size, 8);
	memcpy(b + 24, sp->layer, strlen(sp->layer));
	put_le(b + 96, sp->n_spans, 8);
	put_le(b + 104, sp->n_chunks, 8);
	p = b + HEADER_LEN_CHUNKED;
	for (uint64_t i = 0; i < sp->n_spans; i++, p += SPAN_REC) {
		put_le(p, sp->off[i], 8);
		put_le(p + 8, sp->first[i], 4);
		put_le(p + 12, sp->count[i], 4);
	}
	for (uint64_t k = 0; k < sp->n_chunks; k++, p += CHUNK_REC) {
		put_le(p, sp->chunks[k].inner, 8);
		put_le(p + 8, sp->chunks[k].size, 8);
		memcpy(p + 16, sp->chunks[k].digest, 32);
	}
	*ret_buf = b;
	*ret_len = len;
	return 0;
}

int spans_encode(const struct spans *sp, void **ret_buf, size_t *ret_len)
{
	size_t len = HEADER_LEN + (size_t)sp->n_spans * 32;
	uint8_t *b, *p;

	if (sp->off)
		return encode_chunked(sp, ret_buf, ret_len);
	b = calloc(1, len);
	p = b;
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

/* The layer digest of a table's header, checked, into layer. */
static int parse_layer(const uint8_t *p, const char *expected_layer, char layer[73],
                       struct error *err)
{
	memcpy(layer, p + 24, 72);
	layer[72] = '\0';
	if (!digest_valid(layer))
		return error_set(err, -EBADMSG, "span table: bad layer digest");
	for (size_t i = strlen(layer); i < 72; i++)
		if (p[24 + i])
			return error_set(err, -EBADMSG, "span table: bad layer digest");
	if (expected_layer && !streq(layer, expected_layer))
		return error_set(err, -EBADMSG, "span table is for %s, not %s", layer,
		                 expected_layer);
	return 0;
}

static int parse_chunked(const uint8_t *p, size_t len, const char *expected_layer,
                         uint64_t expected_size, struct spans **ret, struct error *err)
{
	_cleanup_(spans_freep) struct spans *sp = NULL;
	char layer[73];
	uint64_t size, n, nc;
	const uint8_t *q;
	int r;

	if (len < HEADER_LEN_CHUNKED || get_le(p + 12, 4) > SPANS_COMPRESSED)
		return error_set(err, -EBADMSG, "span table: bad header");
	r = parse_layer(p, expected_layer, layer, err);
	if (r < 0)
		return r;
	size = get_le(p + 16, 8);
	n = get_le(p + 96, 8);
	nc = get_le(p + 104, 8);
	if (expected_size != UINT64_MAX && size != expected_size)
		return error_set(err, -EBADMSG, "span table is for %llu bytes, the layer has %llu",
		                 (unsigned long long)size, (unsigned long long)expected_size);
	if (n > (len - HEADER_LEN_CHUNKED) / SPAN_REC ||
	    nc > (len - HEADER_LEN_CHUNKED - n * SPAN_REC) / CHUNK_REC ||
	    len != HEADER_LEN_CHUNKED + n * SPAN_REC + nc * CHUNK_REC)
		return error_set(err, -EBADMSG, "span table: %llu spans do not fit %zu bytes",
		                 (unsigned long long)n, len);
	r = spans_new_chunked(layer, size, n, nc, &sp);
	if (r == -ENOMEM)
		return error_set(err, r, "span table: out of memory");
	if (r < 0)
		return error_set(err, -EBADMSG, "span table: %llu spans for %llu bytes",
		                 (unsigned long long)n, (unsigned long long)size);
	sp->check = (uint32_t)get_le(p + 12, 4);
	q = p + HEADER_LEN_CHUNKED;
	for (uint64_t i = 0; i < n; i++, q += SPAN_REC) {
		sp->off[i] = get_le(q, 8);
		sp->first[i] = (uint32_t)get_le(q + 8, 4);
		sp->count[i] = (uint32_t)get_le(q + 12, 4);
	}
	for (uint64_t k = 0; k < nc; k++, q += CHUNK_REC) {
		sp->chunks[k].inner = get_le(q, 8);
		sp->chunks[k].size = get_le(q + 8, 8);
		memcpy(sp->chunks[k].digest, q + 16, 32);
	}
	r = spans_chunked_check(sp, err);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(sp);
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
	if (get_le(p + 8, 4) == SPANS_VERSION_CHUNKED)
		return parse_chunked(buf, len, expected_layer, expected_size, ret, err);
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
