/* The layer index: fixtures are written here with libarchive (ustar, pax, GNU), by hand
 * where libarchive cannot write the format (GNU and pax 0.1 sparse files), compressed with
 * zlib or libzstd, indexed in random chunk sizes, and read back: every recorded data
 * offset is checked against the bytes of the stream, every file against its content at
 * random ranges, and hostile or broken inputs against their error codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <zlib.h>
#include <zstd.h>
#include "common/fileio.h"
#include "fsd/index/layerindex.h"
#include "fsd/index/layerindex_format.h"
#include "fsd/index/spancache.h"
#include "tests/unit/fixture_buf.h"

/* Fixture tables name only the fields that matter for each entry. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define DIGEST "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SMALL_SPAN 16384u

/* ---- buffers and generators ---- */

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Content mixing text runs (compressible: long deflate blocks) and random bytes (stored
 * or short blocks), so that a stream has checkpoints of both kinds. */
static uint8_t *make_content(size_t n, uint32_t seed)
{
	static const char *words[] = {"layer ", "index ", "gzip ", "span ", "tar ", "window "};
	uint8_t *p = malloc(n ? n : 1);
	uint64_t s = seed * 2654435761u + 1;

	assert_non_null(p);
	for (size_t i = 0; i < n;) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		if ((s >> 60) < 10) {
			const char *w = words[(s >> 33) % 6];

			for (size_t k = 0; w[k] && i < n; k++)
				p[i++] = (uint8_t)w[k];
		} else {
			for (int k = 0; k < 8 && i < n; k++)
				p[i++] = (uint8_t)(s >> (8 * k));
		}
	}
	return p;
}

static int memfd_with(const void *data, size_t len)
{
	int fd = memfd_create("fixture", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, data, len), 0);
	return fd;
}

/* ---- fixture archives ---- */

struct xattr_spec {
	const char *name;
	const void *value;
	size_t len;
};

struct seg_spec {
	uint64_t off, len;
};

struct file_spec {
	const char *tar_path; /* as written into the archive */
	const char *path;     /* as expected in the index; NULL: the entry is dropped */
	enum li_type type;
	uint32_t mode;
	uint32_t uid, gid;
	int64_t mtime;
	uint32_t mtime_nsec;
	uint64_t size;
	uint32_t seed;    /* content of regular files */
	const char *link; /* symlink or hardlink target as written */
	const char *expect_link;
	uint32_t major, minor;
	struct xattr_spec xattrs[2];
	struct seg_spec segs[3]; /* sparse map; {0,0}-terminated */
};

static bool in_segments(const struct file_spec *f, uint64_t off)
{
	for (int k = 0; k < 3 && f->segs[k].len; k++)
		if (off >= f->segs[k].off && off < f->segs[k].off + f->segs[k].len)
			return true;
	return f->segs[0].len == 0;
}

/* The logical content of a regular file: sparse files have zeros outside their segments. */
static uint8_t *file_content(const struct file_spec *f)
{
	uint8_t *p = make_content(f->size, f->seed);

	for (uint64_t i = 0; i < f->size; i++)
		if (!in_segments(f, i))
			p[i] = 0;
	return p;
}

static void write_archive(int format, const struct file_spec *files, size_t n, struct buf *out)
{
	struct archive *a = archive_write_new();

	assert_non_null(a);
	assert_int_equal(archive_write_set_format(a, format), ARCHIVE_OK);
	assert_int_equal(archive_write_open(a, out, NULL, buf_write_cb, NULL), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		const struct file_spec *f = &files[i];
		struct archive_entry *e = archive_entry_new();

		archive_entry_copy_pathname(e, f->tar_path);
		archive_entry_set_perm(e, f->mode);
		archive_entry_set_uid(e, f->uid);
		archive_entry_set_gid(e, f->gid);
		archive_entry_set_mtime(e, f->mtime, f->mtime_nsec);
		switch (f->type) {
		case LI_REG:
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_size(e, (la_int64_t)f->size);
			for (int k = 0; k < 3 && f->segs[k].len; k++)
				archive_entry_sparse_add_entry(e, (la_int64_t)f->segs[k].off,
				                               (la_int64_t)f->segs[k].len);
			break;
		case LI_DIR:
			archive_entry_set_filetype(e, AE_IFDIR);
			break;
		case LI_SYMLINK:
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_copy_symlink(e, f->link);
			break;
		case LI_HARDLINK:
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_copy_hardlink(e, f->link);
			break;
		case LI_CHR:
		case LI_BLK:
			archive_entry_set_filetype(e, f->type == LI_CHR ? AE_IFCHR : AE_IFBLK);
			archive_entry_set_rdevmajor(e, f->major);
			archive_entry_set_rdevminor(e, f->minor);
			break;
		case LI_FIFO:
			archive_entry_set_filetype(e, AE_IFIFO);
			break;
		}
		for (int k = 0; k < 2 && f->xattrs[k].name; k++)
			archive_entry_xattr_add_entry(e, f->xattrs[k].name, f->xattrs[k].value,
			                              f->xattrs[k].len);
		assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
		if (f->type == LI_REG && f->size) {
			_cleanup_free_ uint8_t *c = file_content(f);

			assert_int_equal(archive_write_data(a, c, f->size), (la_ssize_t)f->size);
		}
		archive_entry_free(e);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

/* Raw 512-byte tar headers, for the formats libarchive does not write. */
static void octal(char *field, size_t width, uint64_t v)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%0*llo", (int)width - 1, (unsigned long long)v);
	memcpy(field, tmp, width - 1);
}

static void raw_header(uint8_t h[512], const char *name, char type, uint64_t size, bool gnu)
{
	unsigned sum = 0;

	memset(h, 0, 512);
	strncpy((char *)h, name, 100);
	octal((char *)h + 100, 8, 0644);
	octal((char *)h + 108, 8, 0);
	octal((char *)h + 116, 8, 0);
	octal((char *)h + 124, 12, size);
	octal((char *)h + 136, 12, 1600000000);
	h[156] = (uint8_t)type;
	memcpy(h + 257, gnu ? "ustar  " : "ustar\00000", 8);
	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
}

static void raw_checksum(uint8_t h[512])
{
	unsigned sum = 0;

	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
}

static void put_padded(struct buf *b, const void *data, size_t n)
{
	static const uint8_t zero[512];

	buf_put(b, data, n);
	buf_put(b, zero, (512 - n % 512) % 512);
}

static void put_stored(struct buf *b, const struct file_spec *f)
{
	_cleanup_free_ uint8_t *c = file_content(f);
	size_t stored = 0;

	for (int k = 0; k < 3 && f->segs[k].len; k++) {
		buf_put(b, c + f->segs[k].off, f->segs[k].len);
		stored += f->segs[k].len;
	}
	{
		static const uint8_t zero[512];

		buf_put(b, zero, (512 - stored % 512) % 512);
	}
}

/* GNU tar's old sparse format: type 'S', the map in the header. */
static void put_gnu_sparse(struct buf *b, const struct file_spec *f)
{
	uint8_t h[512];
	uint64_t stored = 0;

	for (int k = 0; k < 3 && f->segs[k].len; k++)
		stored += f->segs[k].len;
	raw_header(h, f->tar_path, 'S', stored, true);
	for (int k = 0; k < 3 && f->segs[k].len; k++) {
		octal((char *)h + 386 + 24 * k, 12, f->segs[k].off);
		octal((char *)h + 386 + 24 * k + 12, 12, f->segs[k].len);
	}
	octal((char *)h + 483, 12, f->size);
	raw_checksum(h);
	buf_put(b, h, 512);
	put_stored(b, f);
}

/* pax format with GNU sparse 0.1 records: the map in GNU.sparse.map. */
static void put_pax01_sparse(struct buf *b, const struct file_spec *f)
{
	char rec[512], map[256] = "", line[300];
	uint8_t h[512];
	uint64_t stored = 0;
	size_t len = 0;
	int nseg = 0;

	for (int k = 0; k < 3 && f->segs[k].len; k++, nseg++) {
		snprintf(map + strlen(map), sizeof(map) - strlen(map), "%s%llu,%llu", k ? "," : "",
		         (unsigned long long)f->segs[k].off, (unsigned long long)f->segs[k].len);
		stored += f->segs[k].len;
	}
	rec[0] = 0;
#define PAX_RECORD(fmt, ...)                                                                       \
	do {                                                                                       \
		int body = snprintf(line, sizeof(line), " " fmt "\n", __VA_ARGS__);                \
		int digits = body + 2 >= 100 ? 3 : 2;                                              \
		len +=                                                                             \
		    (size_t)snprintf(rec + len, sizeof(rec) - len, "%d%s", body + digits, line);   \
	} while (0)
	PAX_RECORD("GNU.sparse.size=%llu", (unsigned long long)f->size);
	PAX_RECORD("GNU.sparse.numblocks=%d", nseg);
	PAX_RECORD("GNU.sparse.name=%s", f->tar_path);
	PAX_RECORD("GNU.sparse.map=%s", map);
#undef PAX_RECORD
	raw_header(h, "PaxHeaders/sparse", 'x', len, false);
	buf_put(b, h, 512);
	put_padded(b, rec, len);
	raw_header(h, "GNUSparseFile.0/sparse", '0', stored, false);
	buf_put(b, h, 512);
	put_stored(b, f);
}

static void put_end(struct buf *b)
{
	static const uint8_t zero[1024];

	buf_put(b, zero, sizeof(zero));
}

/* ---- compression ---- */

/* gzip with zlib; members > 1 splits the input into that many gzip members. */
static void gzip_buf(const struct buf *in, int level, int members, struct buf *out)
{
	size_t per = in->len / (size_t)members + 1;

	for (int m = 0; m < members; m++) {
		size_t from = MIN(in->len, per * (size_t)m), to = MIN(in->len, from + per);
		z_stream z = {0};
		uint8_t chunk[65536];
		int zr;

		assert_int_equal(deflateInit2(&z, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY),
		                 Z_OK);
		z.next_in = in->p + from;
		z.avail_in = (uInt)(to - from);
		do {
			z.next_out = chunk;
			z.avail_out = sizeof(chunk);
			zr = deflate(&z, Z_FINISH);
			buf_put(out, chunk, sizeof(chunk) - z.avail_out);
		} while (zr == Z_OK);
		assert_int_equal(zr, Z_STREAM_END);
		deflateEnd(&z);
	}
}

static void zstd_buf(const struct buf *in, struct buf *out)
{
	size_t cap = ZSTD_compressBound(in->len);
	size_t n;

	buf_put(out, NULL, cap);
	out->len -= cap;
	ZSTD_CCtx *c = ZSTD_createCCtx();

	assert_non_null(c);
	/* with a content checksum, as the zstd tool writes by default */
	assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1)));
	n = ZSTD_compress2(c, out->p + out->len, cap, in->p, in->len);
	assert_false(ZSTD_isError(n));
	ZSTD_freeCCtx(c);
	out->len += n;
}

/* ---- building and opening ---- */

/* What the last successful build() was made of. */
static struct li_build_stats last_stats;

struct built {
	void *idx;
	size_t idx_len;
	int blob_fd; /* the layer as given, or the seekable zstd copy */
	struct li_index *li;
};

/* Feeds data in chunks of 1..max_chunk bytes (random with seed; max_chunk 0: all at once). */
static int build(const struct buf *data, enum li_compression comp, uint32_t span,
                 const struct li_limits *lim, size_t max_chunk, uint64_t seed, struct built *ret)
{
	_cleanup_(li_builder_freep) struct li_builder *b = NULL;
	int zfd = memfd_create("zst", MFD_CLOEXEC);
	uint64_t saved = rng_state;
	int r = 0;

	assert_true(zfd >= 0);
	*ret = (struct built){.blob_fd = -1};
	assert_int_equal(li_builder_new(comp, span, zfd, &b), 0);
	if (lim)
		assert_int_equal(li_builder_set_limits(b, lim), 0);
	rng_state = seed | 1;
	for (size_t off = 0; off < data->len && r == 0;) {
		size_t n = max_chunk ? 1 + rnd() % max_chunk : data->len;

		n = MIN(n, data->len - off);
		r = li_builder_feed(b, data->p + off, n);
		off += n;
	}
	rng_state = saved;
	if (r == 0)
		r = li_builder_finish(b, DIGEST, &ret->idx, &ret->idx_len);
	if (r == 0)
		assert_int_equal(li_builder_stats(b, &last_stats), 0);
	if (r < 0) {
		close(zfd);
		return r;
	}
	if (comp == LI_ZSTD || (comp == LI_AUTO && data->len >= 4 && data->p[0] == 0x28)) {
		ret->blob_fd = zfd;
	} else {
		close(zfd);
		ret->blob_fd = memfd_with(data->p, data->len);
	}
	{
		_cleanup_close_ int ifd = memfd_with(ret->idx, ret->idx_len);

		assert_int_equal(li_open(ifd, ret->blob_fd, &ret->li), 0);
	}
	return 0;
}

static void built_free(struct built *b)
{
	li_close(b->li);
	free(b->idx);
	if (b->blob_fd >= 0)
		close(b->blob_fd);
	*b = (struct built){.blob_fd = -1};
}

/* ---- checks ---- */

static ssize_t find_entry(struct li_index *li, const char *path, size_t nth)
{
	struct li_entry e;

	for (size_t i = 0; i < li_entry_count(li); i++) {
		assert_int_equal(li_entry_get(li, i, &e), 0);
		if (streq(e.path, path) && nth-- == 0)
			return (ssize_t)i;
	}
	return -1;
}

static void check_file_data(struct li_index *li, size_t i, const struct file_spec *f)
{
	_cleanup_free_ uint8_t *want = file_content(f), *got = malloc(f->size + 1);
	struct li_entry e;

	assert_non_null(got);
	assert_int_equal(li_entry_get(li, i, &e), 0);
	/* the whole file, then random ranges */
	assert_int_equal(li_read(li, i, got, f->size + 1, 0), (ssize_t)f->size);
	assert_memory_equal(got, want, f->size);
	for (int k = 0; k < 40 && f->size > 0; k++) {
		uint64_t off = rnd() % f->size;
		size_t len = 1 + rnd() % MIN(f->size - off + 16, (uint64_t)(3 * SMALL_SPAN));
		ssize_t n = li_read(li, i, got, len, off);

		assert_int_equal(n, (ssize_t)MIN(len, f->size - off));
		assert_memory_equal(got, want + off, (size_t)n);
	}
	assert_int_equal(li_read(li, i, got, 10, f->size), 0);
	/* The recorded offset is where the stored bytes are in the stream. */
	if (e.n_segments == 0 && f->size > 0) {
		assert_int_equal(li_read_stream(li, got, f->size, e.data_off), (ssize_t)f->size);
		assert_memory_equal(got, want, f->size);
	} else if (e.n_segments > 0) {
		uint64_t stored = 0;

		for (int k = 0; k < 3 && f->segs[k].len; k++) {
			assert_int_equal(
			    li_read_stream(li, got, f->segs[k].len, e.data_off + stored),
			    (ssize_t)f->segs[k].len);
			assert_memory_equal(got, want + f->segs[k].off, f->segs[k].len);
			stored += f->segs[k].len;
		}
	}
}

static void check_entry(struct li_index *li, const struct file_spec *f, size_t nth)
{
	ssize_t i = find_entry(li, f->path, nth);
	struct li_entry e;

	if (i < 0)
		fail_msg("no entry '%s'", f->path);
	assert_int_equal(li_entry_get(li, (size_t)i, &e), 0);
	assert_int_equal(e.type, f->type);
	assert_int_equal(e.mode, f->mode);
	assert_int_equal(e.uid, f->uid);
	assert_int_equal(e.gid, f->gid);
	assert_int_equal(e.mtime_sec, f->mtime);
	assert_int_equal(e.mtime_nsec, f->mtime_nsec);
	if (f->type == LI_SYMLINK || f->type == LI_HARDLINK)
		assert_string_equal(e.link, f->expect_link ? f->expect_link : f->link);
	else
		assert_null(e.link);
	if (f->type == LI_CHR || f->type == LI_BLK) {
		assert_int_equal(e.rdev_major, f->major);
		assert_int_equal(e.rdev_minor, f->minor);
	}
	for (uint32_t k = 0; k < 2 && f->xattrs[k].name; k++) {
		const char *name;
		const void *value;
		size_t len;
		bool found = false;

		for (uint32_t j = 0; j < e.n_xattrs; j++) {
			assert_int_equal(li_xattr_get(li, (size_t)i, j, &name, &value, &len), 0);
			if (!streq(name, f->xattrs[k].name))
				continue;
			assert_int_equal(len, f->xattrs[k].len);
			assert_memory_equal(value, f->xattrs[k].value, len);
			found = true;
		}
		assert_true(found);
	}
	assert_int_equal(e.n_xattrs, f->xattrs[1].name ? 2 : f->xattrs[0].name ? 1 : 0);
	if (f->type == LI_REG) {
		assert_int_equal(e.size, f->size);
		check_file_data(li, (size_t)i, f);
	}
}

static void check_all(struct li_index *li, const struct file_spec *files, size_t n)
{
	size_t expected = 0;

	for (size_t i = 0; i < n; i++) {
		size_t nth = 0;

		if (!files[i].path)
			continue;
		for (size_t j = 0; j < i; j++)
			if (files[j].path && streq(files[j].path, files[i].path))
				nth++;
		check_entry(li, &files[i], nth);
		expected++;
	}
	assert_int_equal(li_entry_count(li), expected);
}

/* ---- fixtures ---- */

static const uint8_t cap_value[20] = {0x01, 0x00, 0x00, 0x02, 0x00, 0x04};

static char long_dir[220], long_target[320];

static const struct file_spec *pax_fixture(size_t *ret_n)
{
	static struct file_spec f[32];
	size_t n = 0;

	memset(long_dir, 'd', 150);
	memcpy(long_dir + 150, "/long-file-name-beyond-one-hundred-bytes", 41);
	memset(long_target, 't', 300);
	f[n++] = (struct file_spec){"./", "", LI_DIR, 0755, 0, 0, 1600000000, 0};
	f[n++] = (struct file_spec){"etc/", "etc", LI_DIR, 0750, 0, 0, 1600000001, 0};
	f[n++] = (struct file_spec){
	    "etc/passwd", "etc/passwd", LI_REG, 0644, 0, 0, 1600000002, 0, 100, 1};
	f[n++] =
	    (struct file_spec){"/big.bin",
	                       "big.bin",
	                       LI_REG,
	                       04755,
	                       1000,
	                       1001,
	                       1234567890,
	                       500000000,
	                       300000,
	                       2,
	                       .xattrs = {{"security.capability", cap_value, sizeof(cap_value)},
	                                  {"user.comment", "hello", 5}}};
	f[n++] = (struct file_spec){long_dir, long_dir, LI_REG, 01777, 7, 8, 1, 0, 5000, 3};
	f[n++] =
	    (struct file_spec){"lnk", "lnk", LI_SYMLINK, 0777, 0, 0, 5, 0, 0, 0, "/etc/passwd"};
	f[n++] = (struct file_spec){"longlnk", "longlnk", LI_SYMLINK, 0777, 0,          0,
	                            5,         0,         0,          0,    long_target};
	f[n++] =
	    (struct file_spec){"./hard", "hard", LI_HARDLINK,    0644,        0, 0, 1600000002, 0,
	                       0,        0,      "./etc/passwd", "etc/passwd"};
	f[n++] = (struct file_spec){"dev/null", "dev/null", LI_CHR, 0666,       0,
	                            0,          9,          0,      .major = 1, .minor = 3};
	f[n++] = (struct file_spec){"dev/sda", "dev/sda", LI_BLK, 0660,       0,
	                            6,         9,         0,      .major = 8, .minor = 0};
	f[n++] = (struct file_spec){"fifo", "fifo", LI_FIFO, 0600, 0, 0, 9, 0};
	f[n++] = (struct file_spec){"../escape", NULL, LI_REG, 0644, 0, 0, 9, 0, 10, 4};
	f[n++] = (struct file_spec){"a/../../b", NULL, LI_REG, 0644, 0, 0, 9, 0, 10, 5};
	f[n++] = (struct file_spec){"bad-hard", NULL, LI_HARDLINK,       0644, 0, 0, 9, 0,
	                            0,          0,    "../../etc/shadow"};
	f[n++] = (struct file_spec){".//x/./y//", "x/y", LI_DIR, 0700, 0, 0, 9, 0};
	f[n++] = (struct file_spec){"empty", "empty", LI_REG, 0400, 0, 0, 9, 0, 0, 6};
	f[n++] = (struct file_spec){"sparse.img",
	                            "sparse.img",
	                            LI_REG,
	                            0644,
	                            0,
	                            0,
	                            9,
	                            0,
	                            1 << 20,
	                            7,
	                            .segs = {{0, 4096}, {512 << 10, 10000}, {600 << 10, 70000}}};
	f[n++] = (struct file_spec){
	    "etc/passwd", "etc/passwd", LI_REG, 0600, 0, 0, 1600000003, 0, 200, 8};
	f[n++] = (struct file_spec){
	    "utf8-\xc3\xa9t\xc3\xa9", "utf8-\xc3\xa9t\xc3\xa9", LI_REG, 0644, 0, 0, 9, 0, 3, 9};
	*ret_n = n;
	return f;
}

static void pax_stream(struct buf *tar, const struct file_spec **ret_files, size_t *ret_n)
{
	*ret_files = pax_fixture(ret_n);
	write_archive(ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, *ret_files, *ret_n, tar);
}

/* ---- tests ---- */

static void test_pax_all_compressions(void **state)
{
	const struct file_spec *files;
	struct buf tar = {0}, gz = {0}, zs = {0};
	struct built b;
	size_t n;

	(void)state;
	pax_stream(&tar, &files, &n);
	gzip_buf(&tar, 6, 1, &gz);
	zstd_buf(&tar, &zs);

	assert_int_equal(build(&tar, LI_AUTO, SMALL_SPAN, NULL, 65536, 1, &b), 0);
	check_all(b.li, files, n);
	{
		struct li_info info;

		li_get_info(b.li, &info);
		assert_int_equal(info.compression, LI_TAR);
		assert_int_equal(info.dropped, 3);
		assert_int_equal(info.total_out, tar.len);
		assert_int_equal(info.n_points, 0);
		assert_string_equal(info.digest, DIGEST);
	}
	built_free(&b);

	assert_int_equal(build(&gz, LI_AUTO, SMALL_SPAN, NULL, 65536, 2, &b), 0);
	check_all(b.li, files, n);
	{
		struct li_info info;

		li_get_info(b.li, &info);
		assert_int_equal(info.compression, LI_GZIP);
		assert_int_equal(info.total_in, gz.len);
		assert_int_equal(info.total_out, tar.len);
		assert_true(info.n_points > 10); /* the small span gave many checkpoints */
	}
	built_free(&b);

	assert_int_equal(build(&zs, LI_ZSTD, SMALL_SPAN, NULL, 65536, 3, &b), 0);
	check_all(b.li, files, n);
	{
		struct li_info info;

		li_get_info(b.li, &info);
		assert_int_equal(info.compression, LI_ZSTD);
		assert_int_equal(info.n_points, (tar.len + SMALL_SPAN - 1) / SMALL_SPAN);
	}
	built_free(&b);
	free(tar.p);
	free(gz.p);
	free(zs.p);
}

static void test_gnu_and_ustar(void **state)
{
	static struct file_spec f[8];
	struct buf tar = {0}, gz = {0};
	struct built b;
	size_t n = 0;

	(void)state;
	memset(long_dir, 'g', 150);
	memcpy(long_dir + 150, "/gnu-long-name-file-beyond-one-hundred-bytes", 45);
	memset(long_target, 'k', 200);
	long_target[200] = 0;
	f[n++] = (struct file_spec){long_dir, long_dir, LI_REG, 0644, 1, 2, 3, 0, 70000, 11};
	f[n++] = (struct file_spec){"hl", "hl", LI_HARDLINK, 0644, 1, 2, 3, 0, 0, 0, long_dir};
	f[n++] = (struct file_spec){"sl", "sl", LI_SYMLINK, 0777, 1, 2, 3, 0, 0, 0, long_target};
	f[n++] = (struct file_spec){"dev/tty", "dev/tty", LI_CHR, 0620,       0,
	                            5,         3,         0,      .major = 5, .minor = 0};
	write_archive(ARCHIVE_FORMAT_TAR_GNUTAR, f, n, &tar);
	gzip_buf(&tar, 9, 1, &gz);
	assert_int_equal(build(&gz, LI_GZIP, SMALL_SPAN, NULL, 4096, 4, &b), 0);
	check_all(b.li, f, n);
	built_free(&b);
	free(tar.p);
	free(gz.p);

	/* ustar: short names only */
	tar = (struct buf){0};
	f[0].tar_path = f[0].path = "dir/file";
	f[1].link = "dir/file";
	f[2].link = "../up/there";
	write_archive(ARCHIVE_FORMAT_TAR_USTAR, f, n, &tar);
	assert_int_equal(build(&tar, LI_TAR, 0, NULL, 1000, 5, &b), 0);
	check_all(b.li, f, n);
	built_free(&b);
	free(tar.p);
}

static const struct file_spec sparse_gnu = {
    "gnu-sparse",
    "gnu-sparse",
    LI_REG,
    0644,
    0,
    0,
    1600000000,
    0,
    300000,
    21,
    .segs = {{8192, 5000}, {100000, 40000}, {299000, 1000}}};
static const struct file_spec sparse_pax01 = {"pax01-sparse",
                                              "pax01-sparse",
                                              LI_REG,
                                              0644,
                                              0,
                                              0,
                                              1600000000,
                                              0,
                                              200000,
                                              22,
                                              .segs = {{0, 1}, {65536, 65536}}};

static void test_sparse_formats(void **state)
{
	struct buf tar = {0}, gz = {0};
	const struct file_spec *pf;
	struct built b;
	size_t n;
	ssize_t i;

	(void)state;
	put_gnu_sparse(&tar, &sparse_gnu);
	put_pax01_sparse(&tar, &sparse_pax01);
	put_end(&tar);
	gzip_buf(&tar, 1, 1, &gz);
	assert_int_equal(build(&gz, LI_AUTO, SMALL_SPAN, NULL, 777, 6, &b), 0);
	assert_int_equal(li_entry_count(b.li), 2);
	check_entry(b.li, &sparse_gnu, 0);
	check_entry(b.li, &sparse_pax01, 0);

	/* SEEK_DATA / SEEK_HOLE follow the map */
	i = find_entry(b.li, "gnu-sparse", 0);
	assert_int_equal(li_seek(b.li, (size_t)i, 0, SEEK_DATA), 8192);
	assert_int_equal(li_seek(b.li, (size_t)i, 0, SEEK_HOLE), 0);
	assert_int_equal(li_seek(b.li, (size_t)i, 9000, SEEK_HOLE), 13192);
	assert_int_equal(li_seek(b.li, (size_t)i, 13192, SEEK_DATA), 100000);
	assert_int_equal(li_seek(b.li, (size_t)i, 299500, SEEK_DATA), 299500);
	assert_int_equal(li_seek(b.li, (size_t)i, 299500, SEEK_HOLE), 300000);
	assert_int_equal(li_seek(b.li, (size_t)i, 300000, SEEK_DATA), -ENXIO);
	built_free(&b);
	free(tar.p);
	free(gz.p);

	/* pax 1.0 (the map at the start of the data), written by libarchive; the file ends
	 * in a hole */
	tar = (struct buf){0};
	pf = pax_fixture(&n);
	for (size_t k = 0; k < n; k++)
		if (pf[k].path && streq(pf[k].path, "sparse.img"))
			write_archive(ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, &pf[k], 1, &tar);
	assert_int_equal(build(&tar, LI_TAR, 0, NULL, 0, 7, &b), 0);
	i = find_entry(b.li, "sparse.img", 0);
	assert_true(i >= 0);
	{
		struct li_entry e;

		assert_int_equal(li_entry_get(b.li, (size_t)i, &e), 0);
		assert_int_equal(e.n_segments, 3);
		assert_true(e.data_off % 512 == 0 && e.data_off >= 1024); /* after the map */
	}
	assert_int_equal(li_seek(b.li, (size_t)i, 700 << 10, SEEK_DATA), -ENXIO);
	assert_int_equal(li_seek(b.li, (size_t)i, 5000, SEEK_HOLE), 5000);
	assert_int_equal(li_seek(b.li, (size_t)i, 100, SEEK_HOLE), 4096);
	built_free(&b);
	free(tar.p);
}

/* The index depends on the bytes only, never on how they were chunked. */
static void test_chunking_invariance(void **state)
{
	const struct file_spec *files;
	struct buf tar = {0}, gz = {0}, zs = {0};
	const struct buf *inputs[] = {&gz, &zs, &tar};
	size_t n;

	(void)state;
	pax_stream(&tar, &files, &n);
	gzip_buf(&tar, 6, 1, &gz);
	zstd_buf(&tar, &zs);
	for (size_t k = 0; k < ARRAY_SIZE(inputs); k++) {
		struct built ref, other;
		enum li_compression comp = k == 1 ? LI_ZSTD : LI_AUTO;

		assert_int_equal(build(inputs[k], comp, SMALL_SPAN, NULL, 0, 1, &ref), 0);
		for (int round = 0; round < 4; round++) {
			size_t max_chunk = round == 0   ? 1
			                   : round == 1 ? 7
			                   : round == 2 ? 4096
			                                : 65536;

			if (max_chunk == 1 && inputs[k]->len > 200000)
				max_chunk = 3;
			assert_int_equal(build(inputs[k], comp, SMALL_SPAN, NULL, max_chunk,
			                       100 + (uint64_t)round, &other),
			                 0);
			assert_int_equal(other.idx_len, ref.idx_len);
			assert_memory_equal(other.idx, ref.idx, ref.idx_len);
			built_free(&other);
		}
		built_free(&ref);
	}
	free(tar.p);
	free(gz.p);
	free(zs.p);
}

/* Reads of every size at every kind of place, with the cache on, tiny and off. */
static void test_random_ranges_across_spans(void **state)
{
	struct file_spec f = {"big", "big", LI_REG, 0644, 0, 0, 1, 0, 3u << 20, 31};
	struct buf tar = {0}, gz = {0};
	_cleanup_free_ uint8_t *want = NULL, *got = malloc(1u << 20);
	size_t sizes[] = {32u << 20, 100000, 0};
	struct built b;

	(void)state;
	want = file_content(&f);
	write_archive(ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, &f, 1, &tar);
	gzip_buf(&tar, 6, 3, &gz); /* three gzip members: reads cross member boundaries */
	assert_int_equal(build(&gz, LI_GZIP, 65536, NULL, 65536, 9, &b), 0);
	for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
		li_cache_set_size(sizes[s]);
		for (int k = 0; k < 150; k++) {
			uint64_t off = rnd() % f.size;
			size_t len = 1 + rnd() % (k % 3 == 0 ? (1u << 20) : 70000);
			ssize_t n = li_read(b.li, 0, got, len, off);

			assert_int_equal(n, (ssize_t)MIN(len, f.size - off));
			assert_memory_equal(got, want + off, (size_t)n);
		}
		assert_true(spancache_bytes() <= sizes[s]);
	}
	li_cache_set_size(SPANCACHE_DEFAULT_SIZE);
	built_free(&b);
	free(tar.p);
	free(gz.p);
}

/* A lazily fetched layer: the data file starts empty (a hole of the blob's size) and the
 * fetch hook copies in the ranges asked for. */
struct lazy_data {
	const struct buf *blob;
	int fd;
	uint64_t fetched, calls;
	bool fail;
};

static int lazy_fetch(void *ctx, uint64_t off, uint64_t len)
{
	struct lazy_data *d = ctx;

	assert_true(off + len <= d->blob->len);
	if (d->fail)
		return -EIO;
	d->calls++;
	d->fetched += len;
	assert_int_equal(pwrite_full(d->fd, d->blob->p + off, len, (off_t)off), 0);
	return 0;
}

/* Reads through the fetch hook: the right bytes, and only a small part of the layer is
 * fetched for a small file; a failing fetch fails the read, never with wrong bytes. */
static void check_lazy_reads(const struct buf *blob, enum li_compression comp)
{
	struct file_spec files[12];
	const struct buf *layer = blob;
	struct lazy_data d = {.blob = layer};
	struct built b;
	_cleanup_free_ uint8_t *got = malloc(1u << 20);
	uint8_t *want;
	_cleanup_close_ int ifd = -1;
	struct li_index *lazy = NULL;
	char names[12][16];
	ssize_t i;

	for (int k = 0; k < 12; k++) {
		snprintf(names[k], sizeof(names[k]), "f%02d", k);
		files[k] = (struct file_spec){
		    names[k],         names[k], LI_REG, 0644, 0, 0, 1, 0, k == 6 ? 4000 : 700000,
		    100 + (uint32_t)k};
	}
	assert_int_equal(build(layer, comp, 65536, NULL, 65536, 9, &b), 0);
	d.fd = memfd_create("lazy", MFD_CLOEXEC);
	assert_true(d.fd >= 0);
	assert_int_equal(ftruncate(d.fd, (off_t)layer->len), 0);
	ifd = memfd_with(b.idx, b.idx_len);
	assert_int_equal(li_open(ifd, d.fd, &lazy), 0);
	li_set_fetch(lazy, lazy_fetch, &d);

	i = find_entry(lazy, "f06", 0);
	assert_true(i >= 0);
	want = file_content(&files[6]);
	assert_int_equal(li_read(lazy, (size_t)i, got, 4000, 0), 4000);
	assert_memory_equal(got, want, 4000);
	assert_true(d.calls > 0);
	/* One 4000-byte file of an 8 MB layer: a span or two, not the layer. */
	assert_true(d.fetched < layer->len / 8);
	free(want);

	i = find_entry(lazy, "f09", 0);
	want = file_content(&files[9]);
	d.fail = true;
	li_cache_set_size(0);
	assert_int_equal(li_read(lazy, (size_t)i, got, 1000, 300000), -EIO);
	d.fail = false;
	assert_int_equal(li_read(lazy, (size_t)i, got, 100000, 300000), 100000);
	assert_memory_equal(got, want + 300000, 100000);
	li_cache_set_size(SPANCACHE_DEFAULT_SIZE);
	li_close(lazy);
	close(d.fd);
	built_free(&b);
	free(want);
}

static void test_lazy_fetch_hook(void **state)
{
	struct file_spec files[12];
	char names[12][16];
	struct buf tar = {0}, gz = {0};

	(void)state;
	for (int k = 0; k < 12; k++) {
		snprintf(names[k], sizeof(names[k]), "f%02d", k);
		files[k] = (struct file_spec){
		    names[k],         names[k], LI_REG, 0644, 0, 0, 1, 0, k == 6 ? 4000 : 700000,
		    100 + (uint32_t)k};
	}
	write_archive(ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, files, 12, &tar);
	gzip_buf(&tar, 6, 1, &gz);
	check_lazy_reads(&gz, LI_GZIP);
	check_lazy_reads(&tar, LI_TAR);
	free(tar.p);
	free(gz.p);
}

struct reader_arg {
	struct li_index *li;
	const uint8_t *want;
	uint64_t size;
	uint64_t seed;
	int bad;
};

static void *reader_thread(void *userdata)
{
	struct reader_arg *a = userdata;
	uint8_t *got = malloc(200000);
	uint64_t s = a->seed;

	for (int k = 0; k < 200 && got; k++) {
		uint64_t off, len;
		ssize_t n;

		s = s * 6364136223846793005ull + 1;
		off = (s >> 20) % a->size;
		len = 1 + (s >> 5) % 200000;
		n = li_read(a->li, 0, got, len, off);
		if (n != (ssize_t)MIN(len, a->size - off) || memcmp(got, a->want + off, (size_t)n))
			a->bad++;
	}
	free(got);
	return NULL;
}

static void test_concurrent_reads(void **state)
{
	struct file_spec f = {"f", "f", LI_REG, 0644, 0, 0, 1, 0, 2u << 20, 41};
	struct buf tar = {0}, gz = {0};
	_cleanup_free_ uint8_t *want = file_content(&f);
	struct reader_arg args[4];
	pthread_t th[4];
	struct built b;

	(void)state;
	write_archive(ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, &f, 1, &tar);
	gzip_buf(&tar, 6, 1, &gz);
	assert_int_equal(build(&gz, LI_GZIP, 65536, NULL, 0, 1, &b), 0);
	li_cache_set_size(400000); /* constant eviction while others copy */
	for (int t = 0; t < 4; t++) {
		args[t] = (struct reader_arg){b.li, want, f.size, (uint64_t)t + 1, 0};
		assert_int_equal(pthread_create(&th[t], NULL, reader_thread, &args[t]), 0);
	}
	for (int t = 0; t < 4; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(args[t].bad, 0);
	}
	li_cache_set_size(SPANCACHE_DEFAULT_SIZE);
	built_free(&b);
	free(tar.p);
	free(gz.p);
}

static void expect_build_error_at(const struct buf *data, enum li_compression comp,
                                  const struct li_limits *lim, int err, int line)
{
	struct built b;

	for (uint64_t seed = 1; seed <= 3; seed++) {
		int r = build(data, comp, SMALL_SPAN, lim, seed == 1 ? 0 : 5000, seed, &b);

		if (r == 0)
			built_free(&b);
		if (r != err)
			fail_msg("line %d: got %d (%s), expected %d", line, r, strerror(-r), err);
	}
}
#define expect_build_error(data, comp, lim, err)                                                   \
	expect_build_error_at(data, comp, lim, err, __LINE__)

static void test_corrupt_and_truncated(void **state)
{
	const struct file_spec *files;
	struct buf tar = {0}, gz = {0}, zs = {0}, bad = {0};
	size_t n;

	(void)state;
	pax_stream(&tar, &files, &n);
	gzip_buf(&tar, 6, 1, &gz);
	zstd_buf(&tar, &zs);

	/* truncated anywhere */
	for (int k = 0; k < 6; k++) {
		size_t cut = 1 + rnd() % (gz.len - 1);

		bad.len = 0;
		buf_put(&bad, gz.p, cut);
		expect_build_error(&bad, LI_GZIP, NULL, -EBADMSG);
		bad.len = 0;
		buf_put(&bad, zs.p, 1 + rnd() % (zs.len - 1));
		expect_build_error(&bad, LI_ZSTD, NULL, -EBADMSG);
	}
	/* the tar stream itself cut in the middle of a file */
	bad.len = 0;
	buf_put(&bad, tar.p, 2048 + 100);
	expect_build_error(&bad, LI_TAR, NULL, -EBADMSG);
	/* flipped bits in the deflate data and in the gzip trailer (crc) */
	bad.len = 0;
	buf_put(&bad, gz.p, gz.len);
	bad.p[gz.len / 2] ^= 0x55;
	expect_build_error(&bad, LI_GZIP, NULL, -EBADMSG);
	bad.p[gz.len / 2] ^= 0x55;
	bad.p[gz.len - 6] ^= 0x01;
	expect_build_error(&bad, LI_GZIP, NULL, -EBADMSG);
	/* garbage after the last gzip member */
	bad.p[gz.len - 6] ^= 0x01;
	buf_put(&bad, "garbage!", 8);
	expect_build_error(&bad, LI_GZIP, NULL, -EBADMSG);
	/* a corrupt tar header checksum */
	bad.len = 0;
	buf_put(&bad, tar.p, tar.len);
	bad.p[10] ^= 0x20; /* the first header */
	expect_build_error(&bad, LI_TAR, NULL, -EBADMSG);
	bad.p[10] ^= 0x20;
	for (size_t off = 512; off < bad.len; off += 512)
		if (memcmp(bad.p + off, "etc/passwd", 11) == 0) {
			bad.p[off + 3] ^= 0x20; /* a header in the middle */
			break;
		}
	expect_build_error(&bad, LI_TAR, NULL, -EBADMSG);
	/* not a tar at all */
	bad.len = 0;
	for (int k = 0; k < 3000; k++) {
		uint8_t c = (uint8_t)rnd();

		buf_put(&bad, &c, 1);
	}
	bad.p[0] = 'x';
	expect_build_error(&bad, LI_TAR, NULL, -EBADMSG);
	/* corrupt zstd frame */
	bad.len = 0;
	buf_put(&bad, zs.p, zs.len);
	bad.p[zs.len / 2] ^= 0xff;
	expect_build_error(&bad, LI_ZSTD, NULL, -EBADMSG);
	free(tar.p);
	free(gz.p);
	free(zs.p);
	free(bad.p);
}

static void test_limits(void **state)
{
	const struct file_spec *files;
	struct buf tar = {0}, gz = {0}, zeros = {0}, bomb = {0};
	struct li_limits lim;
	size_t n;

	(void)state;
	pax_stream(&tar, &files, &n);
	gzip_buf(&tar, 6, 1, &gz);

	li_limits_default(&lim);
	lim.max_out = tar.len - 1;
	expect_build_error(&gz, LI_GZIP, &lim, -EFBIG);
	li_limits_default(&lim);
	lim.max_entries = 5;
	expect_build_error(&gz, LI_GZIP, &lim, -EFBIG);
	li_limits_default(&lim);
	lim.max_path = 100; /* the fixture has a 190-byte path */
	expect_build_error(&gz, LI_GZIP, &lim, -EFBIG);
	li_limits_default(&lim);
	lim.max_meta = 1000;
	expect_build_error(&gz, LI_GZIP, &lim, -EFBIG);

	/* A bomb: 64 MiB of zeros in 64 KiB of gzip stops at the limit, without a hang. */
	buf_put(&zeros, NULL, 64u << 20);
	memset(zeros.p, 0, zeros.len);
	memcpy(zeros.p, tar.p, 512); /* a header, so the stream is a tar */
	gzip_buf(&zeros, 9, 1, &bomb);
	assert_true(bomb.len < (200u << 10));
	li_limits_default(&lim);
	lim.max_out = 16u << 20;
	expect_build_error(&bomb, LI_AUTO, &lim, -EFBIG);
	free(tar.p);
	free(gz.p);
	free(zeros.p);
	free(bomb.p);
}

static void test_empty_layers(void **state)
{
	struct buf empty = {0}, zeros = {0}, gz = {0};
	struct built b;

	(void)state;
	/* An empty tar stream, and the 1024 zero bytes of an empty tar, gzipped. */
	assert_int_equal(build(&empty, LI_TAR, 0, NULL, 0, 1, &b), 0);
	assert_int_equal(li_entry_count(b.li), 0);
	built_free(&b);
	put_end(&zeros);
	gzip_buf(&zeros, 6, 1, &gz);
	assert_int_equal(build(&gz, LI_AUTO, 0, NULL, 0, 1, &b), 0);
	assert_int_equal(li_entry_count(b.li), 0);
	built_free(&b);
	/* but an empty gzip stream is not a gzip stream */
	expect_build_error(&empty, LI_GZIP, NULL, -EBADMSG);
	free(zeros.p);
	free(gz.p);
}

static void test_corrupt_index(void **state)
{
	const struct file_spec *files;
	struct buf tar = {0}, gz = {0};
	struct built b;
	size_t n;

	(void)state;
	pax_stream(&tar, &files, &n);
	gzip_buf(&tar, 6, 1, &gz);
	assert_int_equal(build(&gz, LI_GZIP, SMALL_SPAN, NULL, 0, 1, &b), 0);
	for (int k = 0; k < 50; k++) {
		_cleanup_free_ uint8_t *copy = malloc(b.idx_len);
		_cleanup_close_ int fd = -1;
		struct li_index *li = NULL;
		size_t at = rnd() % b.idx_len;

		memcpy(copy, b.idx, b.idx_len);
		copy[at] ^= (uint8_t)(1 + rnd() % 255);
		fd = memfd_with(copy, b.idx_len);
		assert_int_equal(li_open(fd, b.blob_fd, &li), -EBADMSG);
	}
	{
		_cleanup_close_ int fd = memfd_with(b.idx, b.idx_len / 2);
		struct li_index *li = NULL;

		assert_int_equal(li_open(fd, b.blob_fd, &li), -EBADMSG);
	}
	built_free(&b);
	free(tar.p);
	free(gz.p);
}

static void test_builder_misuse(void **state)
{
	_cleanup_(li_builder_freep) struct li_builder *b = NULL;
	struct li_limits lim;
	void *buf;
	size_t len;

	(void)state;
	assert_int_equal(li_builder_new(LI_ZSTD, 0, -1, &b), -EINVAL);
	assert_int_equal(li_builder_new(LI_GZIP, 100, -1, &b), -EINVAL);
	assert_int_equal(li_builder_new(LI_TAR, 0, -1, &b), 0);
	assert_int_equal(li_builder_feed(b, "x", 1), 0);
	li_limits_default(&lim);
	assert_int_equal(li_builder_set_limits(b, &lim), -EINVAL);
	assert_int_equal(li_builder_finish(b, DIGEST, &buf, &len), -EBADMSG);
	assert_int_equal(li_builder_finish(b, DIGEST, &buf, &len), -EINVAL);
	assert_int_equal(li_builder_feed(b, "x", 1), -EINVAL);
	li_builder_free(TAKE_PTR(b));
	/* freed with the worker waiting for input */
	assert_int_equal(li_builder_new(LI_GZIP, 0, -1, &b), 0);
	assert_int_equal(li_builder_feed(b, "\x1f\x8b", 2), 0);
}

/* ---- sparse windows ---- */

/* A gzip stream with explicit deflate blocks: each piece of content compressed at its level
 * (0: stored blocks) and ended with a full flush, so that blocks of every kind follow one
 * another and matches reach back across the flushes. */
static void gzip_levels(const struct buf *in, const int *levels, size_t n_levels, size_t piece,
                        struct buf *out)
{
	z_stream z = {0};
	uint8_t chunk[65536];
	size_t k = 0;
	int zr;

	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
	for (size_t off = 0; off < in->len; off += piece, k++) {
		size_t n = MIN(piece, in->len - off);
		int flush = off + n == in->len ? Z_FINISH : Z_FULL_FLUSH;

		assert_int_equal(deflateParams(&z, levels[k % n_levels], Z_DEFAULT_STRATEGY), Z_OK);
		z.next_in = in->p + off;
		z.avail_in = (uInt)n;
		do {
			z.next_out = chunk;
			z.avail_out = sizeof(chunk);
			zr = deflate(&z, flush);
			buf_put(out, chunk, sizeof(chunk) - z.avail_out);
		} while (z.avail_out == 0 || (flush == Z_FINISH && zr == Z_OK));
	}
	assert_int_equal(zr, Z_STREAM_END);
	deflateEnd(&z);
}

/* gzip with zlib at memLevel mem (1: a deflate block every 128 symbols), in members. */
static void gzip_mem(const struct buf *in, int level, int mem, int members, struct buf *out)
{
	size_t per = in->len / (size_t)members + 1;

	for (int m = 0; m < members; m++) {
		size_t from = MIN(in->len, per * (size_t)m), to = MIN(in->len, from + per);
		uLong cap = 2 * (uLong)(to - from) + 4096; /* tiny blocks exceed compressBound */
		z_stream z = {0};

		assert_int_equal(deflateInit2(&z, level, Z_DEFLATED, 31, mem, Z_DEFAULT_STRATEGY),
		                 Z_OK);
		buf_put(out, NULL, cap);
		z.next_in = in->p + from;
		z.avail_in = (uInt)(to - from);
		z.next_out = out->p + out->len - cap;
		z.avail_out = (uInt)cap;
		assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
		out->len -= z.avail_out;
		deflateEnd(&z);
	}
}

/* A tar of one file with the given content. */
static void tar_of(const uint8_t *content, size_t n, struct buf *tar)
{
	uint8_t h[512];

	raw_header(h, "content", '0', n, false);
	buf_put(tar, h, sizeof(h));
	put_padded(tar, content, n);
	put_end(tar);
}

/* Every stored window equals the stream before its point, except for bytes set to zero;
 * returns how many were zeroed and how many window bytes there are. Then every point is
 * read from with the cache off, so that each read starts at its point with its window. */
static void check_sparse_windows(struct built *bt, const struct buf *tar, size_t *ret_zeroed,
                                 size_t *ret_total)
{
	const struct lix_header *h = bt->idx;
	const struct lix_point *pts = (const void *)((const uint8_t *)bt->idx + h->points_off);
	const uint8_t *windows = (const uint8_t *)bt->idx + h->windows_off;
	_cleanup_free_ uint8_t *win = malloc(32768), *got = malloc(70000);
	size_t zeroed = 0, total = 0;

	assert_non_null(win);
	assert_non_null(got);
	assert_int_equal(h->total_out, tar->len);
	li_cache_set_size(0);
	for (uint32_t k = 0; k < h->n_points; k++) {
		const struct lix_point *p = &pts[k];
		uLongf wlen = 32768;
		size_t n = (size_t)MIN((uint64_t)70000, tar->len - p->out_off);

		if (p->window_len > 0) {
			assert_int_equal(
			    uncompress(win, &wlen, windows + p->window_off, p->window_len), Z_OK);
			assert_true(wlen <= p->out_off);
			for (size_t i = 0; i < wlen; i++) {
				uint8_t real = tar->p[p->out_off - wlen + i];

				if (win[i] != real) {
					assert_int_equal(win[i], 0);
					zeroed++;
				}
			}
			total += wlen;
		}
		assert_int_equal(li_read_stream(bt->li, got, n, p->out_off), (ssize_t)n);
		assert_memory_equal(got, tar->p + p->out_off, n);
	}
	for (int k = 0; k < 100; k++) {
		uint64_t off = rnd() % tar->len, want = 1 + rnd() % 70000;
		size_t n = (size_t)MIN(want, tar->len - off);

		assert_int_equal(li_read_stream(bt->li, got, n, off), (ssize_t)n);
		assert_memory_equal(got, tar->p + off, n);
	}
	li_cache_set_size(SPANCACHE_DEFAULT_SIZE);
	*ret_zeroed = zeroed;
	*ret_total = total;
}

/* Windows keep only the bytes the data after their point copies, and reads from every
 * point still give the stream: long matches across the point, matches overlapping
 * themselves, copies of copies, stored blocks, points followed by less than 32 KiB of their
 * member, gzip -1 and -9, concatenated members, random data, spans down to the minimum
 * (up to nine points waiting for their data at once). The index stays the same for any
 * chunking. */
static void test_sparse_windows(void **state)
{
	enum { REPEAT, RUNS, TEXT, RANDOM, N_CONTENT };
	static const int mixed[] = {0, 1, 9, 6, 0, 0, 3};
	size_t n = 700000;
	_cleanup_free_ uint8_t *c = malloc(n);

	(void)state;
	assert_non_null(c);
	for (int kind = 0; kind < N_CONTENT; kind++) {
		struct buf tar = {0};

		if (kind == REPEAT) {
			/* a 30,000-byte random block over and over, a byte in 64 changed: the
			 * matches are 30,000 back, across every point */
			for (size_t i = 0; i < n; i++)
				c[i] = i < 30000 || rnd() % 64 == 0 ? (uint8_t)rnd() : c[i - 30000];
		} else if (kind == RUNS) {
			/* runs of one byte and of short periods: distance < length */
			for (size_t i = 0; i < n;) {
				size_t run = 1 + rnd() % 2000, period = 1 + rnd() % 5;
				uint8_t base = (uint8_t)rnd();

				for (size_t k = 0; k < run && i < n; k++, i++)
					c[i] = (uint8_t)(base + k % period);
			}
		} else if (kind == TEXT) {
			_cleanup_free_ uint8_t *t = make_content(n, 77);

			memcpy(c, t, n);
		} else {
			for (size_t i = 0; i < n; i++)
				c[i] = (uint8_t)rnd();
		}
		tar_of(c, n, &tar);
		for (int variant = 0; variant < 6; variant++) {
			static const uint32_t spans[] = {16384, 4096, 65536, 16384, 16384, 32768};
			struct buf gz = {0};
			struct built bt, other;
			size_t zeroed, total;

			switch (variant) {
			case 0:
				gzip_mem(&tar, 6, 2, 1, &gz);
				break;
			case 1:
				gzip_mem(&tar, 1, 1, 1, &gz);
				break;
			case 2:
				gzip_mem(&tar, 9, 1, 1, &gz);
				break;
			case 3:
				gzip_mem(&tar, 6, 3, 7, &gz); /* members of 100 KB: short tails */
				break;
			case 4:
				gzip_levels(&tar, mixed, ARRAY_SIZE(mixed), 23456, &gz);
				break;
			default:
				gzip_mem(&tar, 0, 8, 1, &gz); /* stored blocks only */
				break;
			}
			assert_int_equal(build(&gz, LI_GZIP, spans[variant], NULL, 8192,
			                       (uint64_t)(kind * 10 + variant), &bt),
			                 0);
			assert_int_equal(last_stats.windows_whole, 0);
			assert_true(last_stats.points > 3);
			check_sparse_windows(&bt, &tar, &zeroed, &total);
			assert_true(total > 0);
			if (variant == 5 || kind == RANDOM)
				/* nothing refers back into stored or random data */
				assert_true(zeroed > total * 9 / 10);
			else
				assert_true(zeroed > 0 && zeroed < total);
			/* the same index whatever the chunks */
			assert_int_equal(build(&gz, LI_GZIP, spans[variant], NULL,
			                       variant == 1 ? 7 : 100000, 5, &other),
			                 0);
			assert_int_equal(other.idx_len, bt.idx_len);
			assert_memory_equal(other.idx, bt.idx, bt.idx_len);
			built_free(&other);
			built_free(&bt);
			free(gz.p);
		}
		free(tar.p);
	}
}

/* Span 0: 1.5 MiB for gzip, whether given or detected, 1 MiB for the rest. */
static void test_default_span(void **state)
{
	const struct file_spec *files;
	struct buf tar = {0}, gz = {0}, zs = {0};
	const struct buf *inputs[] = {&gz, &gz, &zs, &tar};
	static const enum li_compression comps[] = {LI_GZIP, LI_AUTO, LI_ZSTD, LI_AUTO};
	static const uint32_t want[] = {LI_GZIP_SPAN, LI_GZIP_SPAN, LI_DEFAULT_SPAN,
	                                LI_DEFAULT_SPAN};
	size_t n;

	(void)state;
	pax_stream(&tar, &files, &n);
	gzip_buf(&tar, 6, 1, &gz);
	zstd_buf(&tar, &zs);
	for (size_t k = 0; k < ARRAY_SIZE(inputs); k++) {
		struct built bt;
		struct li_info info;

		assert_int_equal(build(inputs[k], comps[k], 0, NULL, 0, 1, &bt), 0);
		li_get_info(bt.li, &info);
		assert_int_equal(info.span, want[k]);
		built_free(&bt);
	}
	free(tar.p);
	free(gz.p);
	free(zs.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pax_all_compressions),
	    cmocka_unit_test(test_lazy_fetch_hook),
	    cmocka_unit_test(test_gnu_and_ustar),
	    cmocka_unit_test(test_sparse_formats),
	    cmocka_unit_test(test_chunking_invariance),
	    cmocka_unit_test(test_random_ranges_across_spans),
	    cmocka_unit_test(test_sparse_windows),
	    cmocka_unit_test(test_default_span),
	    cmocka_unit_test(test_concurrent_reads),
	    cmocka_unit_test(test_corrupt_and_truncated),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_empty_layers),
	    cmocka_unit_test(test_corrupt_index),
	    cmocka_unit_test(test_builder_misuse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
