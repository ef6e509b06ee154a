/* SOCI zTOCs for tests; see fixture_soci.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "common/digest.h"
#include "tests/unit/fixture_soci.h"

#define WIN 32768u

struct fbw {
	uint8_t *p;
	size_t len, cap;
	bool oom;
};

static size_t put(struct fbw *w, const void *data, size_t n)
{
	size_t pad = (4 - w->len % 4) % 4, at;

	if (w->len + pad + n > w->cap) {
		size_t cap = (w->len + pad + n) * 2 + 64;
		uint8_t *p = realloc(w->p, cap);

		if (!p) {
			w->oom = true;
			return 0;
		}
		memset(p + w->cap, 0, cap - w->cap);
		w->p = p;
		w->cap = cap;
	}
	at = w->len + pad;
	if (data)
		memcpy(w->p + at, data, n);
	w->len = at + n;
	return at;
}

/* A table of n fields of 8 bytes each, all present; returns its position. */
static size_t table(struct fbw *w, unsigned n)
{
	uint16_t vt[2 + 32];
	size_t v, t;
	int32_t so;

	vt[0] = (uint16_t)(4 + 2 * n);
	vt[1] = (uint16_t)(4 + 8 * n);
	for (unsigned k = 0; k < n; k++)
		vt[2 + k] = (uint16_t)(4 + 8 * k);
	v = put(w, vt, 4 + 2 * n);
	t = put(w, NULL, 4 + 8 * n);
	if (w->oom)
		return 0;
	so = (int32_t)(t - v);
	memcpy(w->p + t, &so, 4);
	return t;
}

static size_t field(size_t t, unsigned k)
{
	return t + 4 + 8 * k;
}

static void set(struct fbw *w, size_t at, const void *v, size_t n)
{
	if (!w->oom)
		memcpy(w->p + at, v, n);
}

/* Points the uoffset at `at` to target. */
static void link_to(struct fbw *w, size_t at, size_t target)
{
	uint32_t off = (uint32_t)(target - at);

	set(w, at, &off, 4);
}

static size_t string(struct fbw *w, const void *s, size_t n)
{
	uint32_t len = (uint32_t)n;
	size_t at = put(w, &len, 4);

	put(w, NULL, n + 1);
	if (!w->oom) {
		memcpy(w->p + at + 4, s, n);
		w->p[at + 4 + n] = 0;
	}
	return at;
}

/* Marks field k of table t absent (its vtable entry 0). */
static void absent(struct fbw *w, size_t t, unsigned k)
{
	int32_t so;
	uint16_t zero = 0;

	if (w->oom)
		return;
	memcpy(&so, w->p + t, 4);
	set(w, (size_t)((int64_t)t - so) + 4 + 2 * k, &zero, 2);
}

static void string_field(struct fbw *w, size_t t, unsigned k, const char *s)
{
	if (s)
		link_to(w, field(t, k), string(w, s, strlen(s)));
	else
		absent(w, t, k);
}

struct cp {
	uint64_t in, out;
	uint8_t bits;
	uint8_t window[WIN];
};

/* zran: checkpoints at deflate block ends every span bytes of output. */
static int find_checkpoints(const uint8_t *blob, size_t len, uint64_t span, struct cp **ret,
                            size_t *ret_n)
{
	z_stream z = {0};
	uint8_t *out = NULL;
	size_t cap = 1 << 20, n = 0, ncap = 0;
	uint64_t totin = 0, totout = 0, last = 0;
	struct cp *c = NULL;
	int zr = Z_OK;

	out = malloc(cap);
	if (!out || inflateInit2(&z, 47) != Z_OK) {
		free(out);
		return -ENOMEM;
	}
	z.next_in = (Bytef *)blob;
	z.avail_in = (uInt)len;
	while (z.avail_in > 0) {
		if (totout == cap) {
			uint8_t *p = realloc(out, cap * 2);

			if (!p)
				break;
			out = p;
			cap *= 2;
		}
		z.next_out = out + totout;
		z.avail_out = (uInt)(cap - totout);
		totin += z.avail_in;
		totout += z.avail_out;
		zr = inflate(&z, Z_BLOCK);
		totin -= z.avail_in;
		totout -= z.avail_out;
		if (zr == Z_STREAM_END) {
			if (z.avail_in == 0 || inflateReset2(&z, 47) != Z_OK)
				break;
			continue;
		}
		if (zr != Z_OK && zr != Z_BUF_ERROR)
			break;
		if ((z.data_type & 128) && !(z.data_type & 64) &&
		    (totout == 0 || totout - last > span)) {
			size_t w = totout < WIN ? (size_t)totout : WIN;

			if (n == ncap) {
				struct cp *p = realloc(c, (ncap = ncap * 2 + 8) * sizeof(*c));

				if (!p)
					break;
				c = p;
			}
			c[n] = (struct cp){
			    .in = totin, .out = totout, .bits = (uint8_t)(z.data_type & 7)};
			memset(c[n].window, 0, WIN);
			memcpy(c[n].window + (WIN - w), out + totout - w, w);
			n++;
			last = totout;
		}
	}
	inflateEnd(&z);
	free(out);
	*ret = c;
	*ret_n = n;
	return n ? 0 : -EIO;
}

int soci_ztoc_build(const uint8_t *blob, size_t len, const struct soci_file *files, size_t n,
                    uint64_t span, int v1, uint8_t **ret, size_t *ret_len)
{
	struct fbw w = {0};
	struct cp *c = NULL;
	size_t nc = 0, root, toc, ci, vec, cps;
	uint64_t total_out = 0;
	int64_t v;
	int32_t max_span;
	uint32_t count;
	uint8_t algo = 1;
	int r;

	r = find_checkpoints(blob, len, span, &c, &nc);
	if (r < 0)
		return r;
	{
		/* The uncompressed size: inflate it all. */
		z_stream z = {0};
		uint8_t buf[65536];

		inflateInit2(&z, 47);
		z.next_in = (Bytef *)blob;
		z.avail_in = (uInt)len;
		while (z.avail_in > 0) {
			int zr;

			z.next_out = buf;
			z.avail_out = sizeof(buf);
			zr = inflate(&z, Z_NO_FLUSH);
			total_out += sizeof(buf) - z.avail_out;
			if (zr == Z_STREAM_END && z.avail_in > 0)
				inflateReset(&z);
			else if (zr != Z_OK)
				break;
		}
		inflateEnd(&z);
	}
	put(&w, NULL, 4);
	root = table(&w, 6);
	link_to(&w, 0, root);
	string_field(&w, root, 0, "0.9");
	string_field(&w, root, 1, "imgfs tests");
	v = (int64_t)len;
	set(&w, field(root, 2), &v, 8);
	v = (int64_t)total_out;
	set(&w, field(root, 3), &v, 8);
	/* TOC */
	toc = table(&w, 1);
	link_to(&w, field(root, 4), toc);
	count = (uint32_t)n;
	vec = put(&w, &count, 4);
	put(&w, NULL, 4 * n);
	link_to(&w, field(toc, 0), vec);
	for (size_t i = 0; i < n; i++) {
		size_t fm = table(&w, 14);
		uint32_t zero = 0;

		link_to(&w, vec + 4 + 4 * i, fm);
		string_field(&w, fm, 0, files[i].name);
		string_field(&w, fm, 1, files[i].type);
		v = (int64_t)files[i].offset;
		set(&w, field(fm, 2), &v, 8);
		v = (int64_t)files[i].size;
		set(&w, field(fm, 3), &v, 8);
		string_field(&w, fm, 4, files[i].link);
		set(&w, field(fm, 5), &files[i].mode, 8);
		set(&w, field(fm, 6), &zero, 4);
		set(&w, field(fm, 7), &zero, 4);
		string_field(&w, fm, 10, files[i].mtime);
		absent(&w, fm, 8);
		absent(&w, fm, 9);
		absent(&w, fm, 13);
	}
	/* compression info */
	ci = table(&w, 4);
	link_to(&w, field(root, 5), ci);
	set(&w, field(ci, 0), &algo, 1);
	max_span = (int32_t)nc - 1;
	set(&w, field(ci, 1), &max_span, 4);
	count = (uint32_t)nc;
	vec = put(&w, &count, 4);
	put(&w, NULL, 4 * nc);
	link_to(&w, field(ci, 2), vec);
	for (size_t i = 0; i < nc; i++) {
		uint64_t start = c[i].in - (c[i].bits ? 1 : 0);
		uint64_t end = i + 1 < nc ? c[i + 1].in : len;
		char d[DIGEST_STR_LEN + 1];

		sha256_buf(blob + start, end - start, d);
		link_to(&w, vec + 4 + 4 * i, string(&w, d, strlen(d)));
	}
	{
		size_t first = v1 ? 1 : 0;
		uint32_t have = (uint32_t)nc, blen = (uint32_t)(12 + (nc - first) * (17 + WIN));
		uint64_t span_size = span;

		cps = put(&w, &blen, 4);
		put(&w, NULL, blen);
		link_to(&w, field(ci, 3), cps);
		set(&w, cps + 4, &have, 4);
		set(&w, cps + 8, &span_size, 8);
		for (size_t i = first; i < nc; i++) {
			size_t at = cps + 16 + (i - first) * (17 + WIN);

			set(&w, at, &c[i].in, 8);
			set(&w, at + 8, &c[i].out, 8);
			set(&w, at + 16, &c[i].bits, 1);
			set(&w, at + 17, c[i].window, WIN);
		}
	}
	free(c);
	if (w.oom) {
		free(w.p);
		return -ENOMEM;
	}
	*ret = w.p;
	*ret_len = w.len;
	return 0;
}
