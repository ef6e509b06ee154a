/* A small eStargz writer for tests; see fixture_estargz.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "tests/unit/fixture_estargz.h"

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static int buf_put(struct buf *b, const void *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		uint8_t *p = realloc(b->p, cap);

		if (!p)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	if (n && data)
		memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = 0;
	return 0;
}

static int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -EINVAL;
	return buf_put(b, tmp, (size_t)n);
}

static int gzip_append(struct buf *out, const void *data, size_t len)
{
	z_stream z = {0};
	uLong cap = compressBound((uLong)len) + 64;
	int r;

	if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	r = buf_put(out, NULL, cap);
	if (r < 0) {
		deflateEnd(&z);
		return r;
	}
	out->len -= cap;
	z.next_in = (Bytef *)data;
	z.avail_in = (uInt)len;
	z.next_out = out->p + out->len;
	z.avail_out = (uInt)cap;
	r = deflate(&z, Z_FINISH) == Z_STREAM_END ? 0 : -EIO;
	out->len += cap - z.avail_out;
	deflateEnd(&z);
	return r;
}

void esgz_tar_header(uint8_t h[512], const char *name, char type, uint64_t size, unsigned mode,
                     const char *link)
{
	unsigned sum = 0;

	memset(h, 0, 512);
	snprintf((char *)h, 100, "%s", name);
	snprintf((char *)h + 100, 8, "%07o", mode);
	snprintf((char *)h + 108, 8, "%07o", 0);
	snprintf((char *)h + 116, 8, "%07o", 0);
	snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
	snprintf((char *)h + 136, 12, "%011o", 1577836800u);
	h[156] = (uint8_t)type;
	if (link)
		snprintf((char *)h + 157, 100, "%s", link);
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
}

int esgz_toc_member(const char *json, size_t json_len, uint8_t **ret, size_t *ret_len)
{
	struct buf tar = {0}, out = {0};
	uint8_t h[512], zero[2048] = {0};
	int r;

	esgz_tar_header(h, "stargz.index.json", '0', json_len, 0644, NULL);
	r = buf_put(&tar, h, sizeof(h));
	if (r >= 0)
		r = buf_put(&tar, json, json_len);
	if (r >= 0)
		r = buf_put(&tar, zero, (512 - json_len % 512) % 512 + 1024);
	if (r >= 0)
		r = gzip_append(&out, tar.p, tar.len);
	free(tar.p);
	if (r < 0) {
		free(out.p);
		return r;
	}
	*ret = out.p;
	*ret_len = out.len;
	return 0;
}

int esgz_build(const struct esgz_file *files, size_t n, size_t chunk_size, struct esgz *ret)
{
	struct buf blob = {0}, open = {0}, toc = {0};
	uint8_t *member = NULL;
	size_t member_len = 0;
	uint64_t open_at = 0;
	bool is_open = false;
	uint8_t h[512], zero[512] = {0};
	int r = 0;

	*ret = (struct esgz){0};
	r = buf_printf(&toc, "{\"version\":1,\"entries\":[");
	for (size_t i = 0; r >= 0 && i < n; i++) {
		const struct esgz_file *f = &files[i];
		size_t done = 0;

		esgz_tar_header(h, f->name, f->type, f->type == '0' ? f->size : 0,
		                f->type == '5' ? 0755 : 0644, f->type == '2' ? f->data : NULL);
		if (!is_open) {
			open_at = blob.len;
			is_open = true;
		}
		r = buf_put(&open, h, sizeof(h));
		if (r >= 0 && f->type != '0')
			r = buf_printf(&toc,
			               "%s{\"name\":\"%s\",\"type\":\"%s\",\"mode\":%u,"
			               "\"modtime\":\"2020-01-01T00:00:00Z\"%s%s%s}",
			               i ? "," : "", f->name, f->type == '5' ? "dir" : "symlink",
			               f->type == '5' ? 0755u : 0644u,
			               f->type == '2' ? ",\"linkName\":\"" : "",
			               f->type == '2' ? (const char *)f->data : "",
			               f->type == '2' ? "\"" : "");
		if (r >= 0 && f->type == '0' && f->size == 0)
			r = buf_printf(
			    &toc,
			    "%s{\"name\":\"%s\",\"type\":\"reg\",\"size\":0,\"mode\":420,"
			    "\"modtime\":\"2020-01-01T00:00:00Z\"}",
			    i ? "," : "", f->name);
		while (r >= 0 && f->type == '0' && done < f->size) {
			size_t c = f->size - done < chunk_size ? f->size - done : chunk_size;
			char digest[DIGEST_STR_LEN + 1];

			/* The open member ends; the chunk starts one. */
			r = gzip_append(&blob, open.p, open.len);
			open.len = 0;
			open_at = blob.len;
			sha256_buf((const uint8_t *)f->data + done, c, digest);
			if (r >= 0 && done == 0)
				r = buf_printf(
				    &toc,
				    "%s{\"name\":\"%s\",\"type\":\"reg\",\"size\":%zu,\"mode\":420,"
				    "\"modtime\":\"2020-01-01T00:00:00Z\",\"offset\":%llu,",
				    i ? "," : "", f->name, f->size, (unsigned long long)open_at);
			else if (r >= 0)
				r = buf_printf(
				    &toc, ",{\"name\":\"%s\",\"type\":\"chunk\",\"offset\":%llu,",
				    f->name, (unsigned long long)open_at);
			if (r >= 0)
				r = buf_printf(&toc, "\"chunkOffset\":%zu,", done);
			if (r >= 0 && done + c < f->size)
				r = buf_printf(&toc, "\"chunkSize\":%zu,", c);
			if (r >= 0)
				r = buf_printf(&toc, "\"chunkDigest\":\"%s\"}", digest);
			if (r >= 0)
				r = buf_put(&open, (const uint8_t *)f->data + done, c);
			done += c;
		}
		if (r >= 0 && f->type == '0' && f->size % 512)
			r = buf_put(&open, zero, 512 - f->size % 512);
	}
	if (r >= 0 && open.len)
		r = gzip_append(&blob, open.p, open.len);
	if (r >= 0)
		r = buf_printf(&toc, "]}");
	if (r >= 0)
		r = esgz_toc_member((const char *)toc.p, toc.len, &member, &member_len);
	if (r >= 0) {
		char sub[23];
		uint8_t footer[51] = {0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255, 26, 0, 'S', 'G', 22, 0};

		ret->toc_off = blob.len;
		snprintf(sub, sizeof(sub), "%016llxSTARGZ", (unsigned long long)blob.len);
		memcpy(footer + 16, sub, 22);
		footer[38] = 1;
		footer[41] = 0xff;
		footer[42] = 0xff;
		r = buf_put(&blob, member, member_len);
		if (r >= 0)
			r = buf_put(&blob, footer, sizeof(footer));
	}
	free(member);
	free(open.p);
	if (r < 0) {
		free(blob.p);
		free(toc.p);
		return r;
	}
	ret->blob = blob.p;
	ret->len = blob.len;
	ret->toc_json = (char *)toc.p;
	sha256_buf(toc.p, toc.len, ret->toc_digest);
	return 0;
}

void esgz_free(struct esgz *e)
{
	free(e->blob);
	free(e->toc_json);
	*e = (struct esgz){0};
}
