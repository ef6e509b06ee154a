/* Fixture layers for the fuzz targets; see layerfixture.h. */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <zlib.h>
#include <zstd.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "tests/fuzz/layerfixture.h"

#define BLOCK 512u
#define MTIME 1700000000u

void fx_buf_free(struct fx_buf *b)
{
	free(b->data);
	*b = (struct fx_buf){0};
}

int fx_buf_append(struct fx_buf *b, const void *data, size_t len)
{
	if (b->len + len > b->cap) {
		size_t cap = MAX(b->cap * 2, b->len + len + 4096);
		uint8_t *p = realloc(b->data, cap);

		if (!p)
			return -ENOMEM;
		b->data = p;
		b->cap = cap;
	}
	if (data && len)
		memcpy(b->data + b->len, data, len);
	else if (len)
		memset(b->data + b->len, 0, len);
	b->len += len;
	return 0;
}

static uint8_t gen(uint32_t seed, uint64_t off)
{
	uint32_t x = (uint32_t)(off >> 2) * 2654435761u ^ seed * 40503u;

	return (uint8_t)('a' + (x >> 27) % 26);
}

void fx_content(uint32_t seed, uint8_t *out, size_t len)
{
	for (size_t i = 0; i < len; i++)
		out[i] = gen(seed, i);
}

static const struct fx_file files_lower[] = {
    {"etc/passwd", 1, 300, false},
    {"d/a", 2, 20000, false},
    {"h", 2, 20000, false},
    {"d/big", 3, 70000, false},
    {"d/sparse", 8, FX_SPARSE_SIZE, true},
    {"gone", 4, 100, false},
    {"op/x", 5, 10, false},
};

static const struct fx_file files_upper[] = {
    {"op/y", 6, 50, false},
    {"etc/passwd", 7, 200, false},
};

static const struct fx_file files_merged[] = {
    {"etc/passwd", 7, 200, false}, {"d/a", 2, 20000, false}, {"h", 2, 20000, false},
    {"d/big", 3, 70000, false},    {"h2", 3, 70000, false},  {"d/sparse", 8, FX_SPARSE_SIZE, true},
    {"op/y", 6, 50, false},
};

const struct fx_file *fx_expect(int variant, const char *path)
{
	const struct fx_file *f = variant == 0   ? files_lower
	                          : variant == 1 ? files_upper
	                                         : files_merged;
	size_t n = variant == 0   ? ARRAY_SIZE(files_lower)
	           : variant == 1 ? ARRAY_SIZE(files_upper)
	                          : ARRAY_SIZE(files_merged);

	for (size_t i = 0; i < n; i++)
		if (streq(f[i].path, path))
			return &f[i];
	return NULL;
}

uint8_t fx_byte_at(const struct fx_file *f, uint64_t off)
{
	if (f->sparse && !(off >= FX_SPARSE_A && off < FX_SPARSE_A + FX_SPARSE_LEN) &&
	    !(off >= FX_SPARSE_B && off < FX_SPARSE_B + FX_SPARSE_LEN))
		return 0;
	return gen(f->seed, off);
}

static int pad(struct fx_buf *b)
{
	static const uint8_t zeros[BLOCK];

	return fx_buf_append(b, zeros, (BLOCK - b->len % BLOCK) % BLOCK);
}

static int header(struct fx_buf *b, const char *name, char type, unsigned mode, uint64_t size,
                  const char *link)
{
	char h[BLOCK] = {0};
	unsigned sum = 0;

	if (strlen(name) > 99 || (link && strlen(link) > 99))
		return -ENAMETOOLONG;
	memcpy(h, name, strlen(name));
	snprintf(h + 100, 8, "%07o", mode & 07777);
	snprintf(h + 108, 8, "%07o", 0u);
	snprintf(h + 116, 8, "%07o", 0u);
	snprintf(h + 124, 12, "%011llo", (unsigned long long)size & 077777777777ull);
	snprintf(h + 136, 12, "%011o", MTIME);
	memset(h + 148, ' ', 8);
	h[156] = type;
	if (link)
		memcpy(h + 157, link, strlen(link));
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	for (size_t i = 0; i < BLOCK; i++)
		sum += (uint8_t)h[i];
	snprintf(h + 148, 8, "%06o", sum & 0777777u);
	h[155] = ' ';
	return fx_buf_append(b, h, BLOCK);
}

/* Appends one pax record "LEN key=value\n", whose LEN counts itself. */
static int pax_record(struct fx_buf *b, const char *key, const char *value)
{
	size_t body = strlen(key) + strlen(value) + 3, len = body + 1;
	char num[24];

	while ((size_t)snprintf(num, sizeof(num), "%zu", len) + body != len)
		len = (size_t)snprintf(num, sizeof(num), "%zu", len) + body;
	return fx_buf_append(b, num, strlen(num)) ?: fx_buf_append(b, " ", 1)
	           ?: fx_buf_append(b, key, strlen(key)) ?: fx_buf_append(b, "=", 1)
	           ?: fx_buf_append(b, value, strlen(value)) ?: fx_buf_append(b, "\n", 1);
}

static int entry(struct fx_buf *b, const char *name, char type, unsigned mode, const char *link,
                 const void *data, size_t size, const struct fx_buf *pax)
{
	int r;

	if (pax) {
		r = header(b, "PaxHeaders/x", 'x', 0644, pax->len, NULL);
		if (r < 0 || (r = fx_buf_append(b, pax->data, pax->len)) < 0 || (r = pad(b)) < 0)
			return r;
	}
	r = header(b, name, type, mode, size, link);
	if (r < 0 || (r = fx_buf_append(b, data, size)) < 0)
		return r;
	return pad(b);
}

static int file(struct fx_buf *b, const struct fx_file *f, const struct fx_buf *pax)
{
	_cleanup_free_ uint8_t *data = malloc(f->size);

	if (!data)
		return -ENOMEM;
	fx_content(f->seed, data, f->size);
	return entry(b, f->path, '0', 0644, NULL, data, f->size, pax);
}

/* A pax 1.0 sparse file: the real name and size in pax records, then a data area that
 * starts with the segment map (one block) followed by the segments' bytes. */
static int sparse_file(struct fx_buf *b, const struct fx_file *f)
{
	struct fx_buf pax = {0}, data = {0};
	char map[BLOCK] = {0}, size[24];
	uint8_t seg[FX_SPARSE_LEN];
	int r;

	snprintf(map, sizeof(map), "2\n%u\n%u\n%u\n%u\n", FX_SPARSE_A, FX_SPARSE_LEN, FX_SPARSE_B,
	         FX_SPARSE_LEN);
	snprintf(size, sizeof(size), "%zu", f->size);
	r = pax_record(&pax, "GNU.sparse.major", "1");
	if (r == 0)
		r = pax_record(&pax, "GNU.sparse.minor", "0");
	if (r == 0)
		r = pax_record(&pax, "GNU.sparse.name", f->path);
	if (r == 0)
		r = pax_record(&pax, "GNU.sparse.realsize", size);
	if (r == 0)
		r = fx_buf_append(&data, map, sizeof(map));
	for (uint64_t k = 0; r == 0 && k < FX_SPARSE_LEN; k++)
		seg[k] = fx_byte_at(f, FX_SPARSE_A + k);
	if (r == 0)
		r = fx_buf_append(&data, seg, sizeof(seg));
	for (uint64_t k = 0; r == 0 && k < FX_SPARSE_LEN; k++)
		seg[k] = fx_byte_at(f, FX_SPARSE_B + k);
	if (r == 0)
		r = fx_buf_append(&data, seg, sizeof(seg));
	if (r == 0)
		r = entry(b, "d/GNUSparseFile.0/sparse", '0', 0644, NULL, data.data, data.len,
		          &pax);
	fx_buf_free(&pax);
	fx_buf_free(&data);
	return r;
}

static int layer_lower(struct fx_buf *b)
{
	struct fx_buf xattr = {0};
	int r;

	r = pax_record(&xattr, "SCHILY.xattr.user.fuzz", "yes");
	if (r == 0)
		r = entry(b, "etc/", '5', 0755, NULL, NULL, 0, NULL);
	if (r == 0)
		r = file(b, fx_expect(0, "etc/passwd"), NULL);
	if (r == 0)
		r = entry(b, "d/", '5', 0755, NULL, NULL, 0, NULL);
	if (r == 0)
		r = file(b, fx_expect(0, "d/a"), &xattr);
	if (r == 0)
		r = file(b, fx_expect(0, "d/big"), NULL);
	if (r == 0)
		r = sparse_file(b, fx_expect(0, "d/sparse"));
	if (r == 0)
		r = entry(b, "l", '2', 0777, "d/a", NULL, 0, NULL);
	if (r == 0)
		r = entry(b, "h", '1', 0644, "d/a", NULL, 0, NULL);
	if (r == 0)
		r = file(b, fx_expect(0, "gone"), NULL);
	if (r == 0)
		r = entry(b, "op/", '5', 0755, NULL, NULL, 0, NULL);
	if (r == 0)
		r = file(b, fx_expect(0, "op/x"), NULL);
	fx_buf_free(&xattr);
	return r;
}

static int layer_upper(struct fx_buf *b)
{
	int r;

	r = entry(b, ".wh.gone", '0', 0644, NULL, NULL, 0, NULL);
	if (r == 0)
		r = entry(b, "op/", '5', 0755, NULL, NULL, 0, NULL);
	if (r == 0)
		r = entry(b, "op/.wh..wh..opq", '0', 0644, NULL, NULL, 0, NULL);
	if (r == 0)
		r = file(b, fx_expect(1, "op/y"), NULL);
	if (r == 0)
		r = file(b, fx_expect(1, "etc/passwd"), NULL);
	if (r == 0)
		r = entry(b, "h2", '1', 0644, "d/big", NULL, 0, NULL);
	return r;
}

int fx_layer_tar(int variant, struct fx_buf *ret)
{
	static const uint8_t end[2 * BLOCK];
	struct fx_buf b = {0};
	int r = variant == 0 ? layer_lower(&b) : layer_upper(&b);

	if (r == 0)
		r = fx_buf_append(&b, end, sizeof(end));
	if (r < 0) {
		fx_buf_free(&b);
		return r;
	}
	*ret = b;
	return 0;
}

static int gzip_member(const uint8_t *in, size_t len, size_t flush_every, struct fx_buf *out)
{
	z_stream z = {0};
	uint8_t buf[16384];
	int r = 0, zr;

	if (deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	for (size_t off = 0;;) {
		size_t n = MIN(flush_every ? flush_every : len, len - off);
		int flush = off + n == len ? Z_FINISH : Z_SYNC_FLUSH;

		z.next_in = (uint8_t *)in + off;
		z.avail_in = (uInt)n;
		off += n;
		do {
			z.next_out = buf;
			z.avail_out = sizeof(buf);
			zr = deflate(&z, flush);
			if (zr == Z_STREAM_ERROR) {
				r = -EIO;
				break;
			}
			r = fx_buf_append(out, buf, sizeof(buf) - z.avail_out);
		} while (r == 0 && (z.avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END)));
		if (r < 0 || flush == Z_FINISH)
			break;
	}
	deflateEnd(&z);
	return r;
}

int fx_compress(enum li_compression comp, const struct fx_buf *tar, struct fx_buf *ret)
{
	struct fx_buf out = {0};
	int r = 0;

	if (comp == LI_GZIP) {
		size_t half = tar->len / 2;

		r = gzip_member(tar->data, half, 3072, &out);
		if (r == 0)
			r = gzip_member(tar->data + half, tar->len - half, 0, &out);
	} else if (comp == LI_ZSTD) {
		size_t cap = ZSTD_compressBound(tar->len), n;

		out.data = malloc(cap);
		if (!out.data)
			return -ENOMEM;
		out.cap = cap;
		n = ZSTD_compress(out.data, cap, tar->data, tar->len, 3);
		if (ZSTD_isError(n))
			r = -EIO;
		else
			out.len = n;
	} else {
		r = fx_buf_append(&out, tar->data, tar->len);
	}
	if (r < 0) {
		fx_buf_free(&out);
		return r;
	}
	*ret = out;
	return 0;
}

int fx_memfd(const char *name, const void *data, size_t len)
{
	int fd = memfd_create(name, MFD_CLOEXEC), r;

	if (fd < 0)
		return -errno;
	r = write_full(fd, data, len);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

int fx_index(enum li_compression comp, const struct fx_buf *layer, uint32_t span,
             struct fx_buf *ret_index, struct fx_buf *ret_data)
{
	_cleanup_(li_builder_freep) struct li_builder *b = NULL;
	_cleanup_close_ int zfd = memfd_create("zst", MFD_CLOEXEC);
	struct fx_buf data = {0};
	char digest[DIGEST_STR_LEN + 1];
	void *idx = NULL;
	size_t idx_len = 0;
	struct stat st;
	int r;

	if (zfd < 0)
		return -errno;
	r = li_builder_new(comp, span, zfd, &b);
	if (r < 0)
		return r;
	r = li_builder_feed(b, layer->data, layer->len);
	if (r < 0)
		return r;
	sha256_buf(layer->data, layer->len, digest);
	r = li_builder_finish(b, digest, &idx, &idx_len);
	if (r < 0)
		return r;
	if (comp == LI_ZSTD) {
		if (fstat(zfd, &st) < 0)
			r = -errno;
		else if ((r = fx_buf_append(&data, NULL, (size_t)st.st_size)) == 0 &&
		         pread_full(zfd, data.data, data.len, 0) != (ssize_t)data.len)
			r = -EIO;
	} else {
		r = fx_buf_append(&data, layer->data, layer->len);
	}
	if (r < 0) {
		free(idx);
		fx_buf_free(&data);
		return r;
	}
	*ret_index = (struct fx_buf){.data = idx, .len = idx_len, .cap = idx_len};
	*ret_data = data;
	return 0;
}
