/* Layer index reader: maps an index, hands out entries, and reads file data at any offset
 * through the access points (gzip checkpoints or zstd frames) and the span cache.
 *
 * The map's structure is checked at open (magic, version, section bounds), its crc32 only
 * when asked (LI_OPEN_VERIFY: pull time, tests); every record is range-checked where it is
 * used, so a corrupt index yields -EBADMSG or wrong bytes, never a wild read. */
#include <fcntl.h>
#include <isa-l/igzip_lib.h>
#include <limits.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <zlib.h>
#include <zstd.h>
#include "common/fileio.h"
#include "fsd/index/layerindex.h"
#include "fsd/index/layerindex_format.h"
#include "fsd/index/spancache.h"
#include "fsd/index/unitcache.h"

#define WINDOW_SIZE 32768u
#define READ_CHUNK (128u << 10)
#define MAX_INDEX_SIZE (16ull << 30)
#define MAX_SPAN (64u << 20) /* li_builder_new()'s bound: a span is decoded in memory */
/* A gzip span longer than this (one deflate block can be huge in a hostile stream) is
 * decoded and cached in pieces of span bytes instead of in one piece. */
#define MAX_UNIT_SPANS 4u

struct li_index {
	const uint8_t *map;
	size_t map_len;
	const struct lix_header *h;
	const struct lix_entry *entries;
	const struct lix_xattr *xattrs;
	const struct lix_segment *segments;
	const struct lix_point *points;
	const uint8_t *windows;
	const char *strings;
	int data_fd;
	li_fetch_fn fetch; /* makes data bytes present before they are read, or NULL */
	void *fetch_ctx;
	struct unitcache *ucache; /* decoded units on disk, or NULL */
	uint64_t owner;           /* span cache key */
	char digest[80];
};

static bool section_ok(const struct lix_header *h, uint64_t off, uint64_t count, uint64_t size)
{
	return off % 8 == 0 && off >= h->header_size && off <= h->file_size &&
	       count * size <= h->file_size - off;
}

/* Structure of the map: magic, version, sizes and section bounds; with verify, also the
 * crc32 of the whole file (a read of every byte). */
static int check_header(const uint8_t *map, size_t len, bool verify)
{
	const struct lix_header *h = (const void *)map;
	struct lix_header copy;
	uint32_t crc;

	if (len < sizeof(*h) || memcmp(h->magic, LIX_MAGIC, 8) != 0)
		return -EBADMSG;
	if (h->version != LIX_VERSION || h->header_size != sizeof(*h) || h->file_size != len)
		return -EBADMSG;
	if (h->compression < LI_TAR || h->compression > LI_ZSTD || h->span < 4096 ||
	    h->span > MAX_SPAN)
		return -EBADMSG;
	if (!section_ok(h, h->entries_off, h->n_entries, sizeof(struct lix_entry)) ||
	    !section_ok(h, h->xattrs_off, h->n_xattrs, sizeof(struct lix_xattr)) ||
	    !section_ok(h, h->segments_off, h->n_segments, sizeof(struct lix_segment)) ||
	    !section_ok(h, h->points_off, h->n_points, sizeof(struct lix_point)) ||
	    !section_ok(h, h->windows_off, h->windows_len, 1) ||
	    !section_ok(h, h->strings_off, h->strings_len, 1))
		return -EBADMSG;
	if (h->strings_len > UINT32_MAX ||
	    (h->strings_len > 0 && map[h->strings_off + h->strings_len - 1] != 0))
		return -EBADMSG;
	if (memchr(h->digest, 0, sizeof(h->digest)) == NULL)
		return -EBADMSG;
	if (h->compression == LI_TAR ? h->n_points != 0 : (h->total_out > 0 && h->n_points == 0))
		return -EBADMSG;
	if (!verify)
		return 0;
	copy = *h;
	copy.crc = 0;
	crc = (uint32_t)crc32_z(0, (const void *)&copy, sizeof(copy));
	crc = (uint32_t)crc32_z(crc, map + sizeof(copy), len - sizeof(copy));
	return crc == h->crc ? 0 : -EBADMSG;
}

int li_open_flags(int index_fd, int data_fd, unsigned flags, struct li_index **ret)
{
	_cleanup_close_ int dfd = -1;
	struct li_index *idx;
	struct stat st;
	void *map;
	int r;

	if (fstat(index_fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(struct lix_header) ||
	    (uint64_t)st.st_size > MAX_INDEX_SIZE)
		return -EBADMSG;
	if (data_fd >= 0) {
		dfd = fcntl(data_fd, F_DUPFD_CLOEXEC, 3);
		if (dfd < 0)
			return -errno;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, index_fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	r = check_header(map, (size_t)st.st_size, flags & LI_OPEN_VERIFY);
	if (r < 0) {
		munmap(map, (size_t)st.st_size);
		return r;
	}
	idx = calloc(1, sizeof(*idx));
	if (!idx) {
		munmap(map, (size_t)st.st_size);
		return -ENOMEM;
	}
	idx->map = map;
	idx->map_len = (size_t)st.st_size;
	idx->h = map;
	idx->entries = (const void *)(idx->map + idx->h->entries_off);
	idx->xattrs = (const void *)(idx->map + idx->h->xattrs_off);
	idx->segments = (const void *)(idx->map + idx->h->segments_off);
	idx->points = (const void *)(idx->map + idx->h->points_off);
	idx->windows = idx->map + idx->h->windows_off;
	idx->strings = (const char *)(idx->map + idx->h->strings_off);
	idx->data_fd = TAKE_FD(dfd);
	idx->owner = spancache_new_owner();
	memcpy(idx->digest, idx->h->digest, sizeof(idx->digest));
	*ret = idx;
	return 0;
}

int li_open(int index_fd, int data_fd, struct li_index **ret)
{
	return li_open_flags(index_fd, data_fd, LI_OPEN_VERIFY, ret);
}

int li_peek_compression(int index_fd, enum li_compression *ret)
{
	struct lix_header h;
	ssize_t n;

	n = pread_full(index_fd, &h, sizeof(h), 0);
	if (n < 0)
		return (int)n;
	if ((size_t)n < sizeof(h) || memcmp(h.magic, LIX_MAGIC, 8) != 0)
		return -EBADMSG;
	*ret = (enum li_compression)h.compression;
	return 0;
}

void li_close(struct li_index *idx)
{
	if (!idx)
		return;
	spancache_drop_owner(idx->owner);
	munmap((void *)idx->map, idx->map_len);
	if (idx->data_fd >= 0)
		close(idx->data_fd);
	free(idx);
}

void li_get_info(const struct li_index *idx, struct li_info *ret)
{
	*ret = (struct li_info){
	    .compression = idx->h->compression,
	    .span = idx->h->span,
	    .total_in = idx->h->total_in,
	    .total_out = idx->h->total_out,
	    .n_entries = idx->h->n_entries,
	    .n_points = idx->h->n_points,
	    .dropped = idx->h->dropped,
	    .digest = idx->digest,
	};
}

size_t li_entry_count(const struct li_index *idx)
{
	return idx->h->n_entries;
}

static const struct lix_entry *entry_at(const struct li_index *idx, size_t i)
{
	const struct lix_entry *e;
	const struct lix_header *h = idx->h;

	if (i >= h->n_entries)
		return NULL;
	e = &idx->entries[i];
	if (e->path >= h->strings_len || (e->link != LIX_NONE && e->link >= h->strings_len))
		return NULL;
	if (e->type < LI_REG || e->type > LI_FIFO)
		return NULL;
	if ((e->type == LI_SYMLINK || e->type == LI_HARDLINK) && e->link == LIX_NONE)
		return NULL;
	if ((uint64_t)e->xattr_first + e->n_xattrs > h->n_xattrs ||
	    (uint64_t)e->seg_first + e->n_segments > h->n_segments)
		return NULL;
	if (e->data_off > h->total_out || e->stored > h->total_out - e->data_off)
		return NULL;
	if (e->type == LI_REG && !(e->flags & LIX_F_SPARSE) &&
	    (e->n_segments != 0 || e->stored != e->size))
		return NULL;
	return e;
}

int li_entry_get(const struct li_index *idx, size_t i, struct li_entry *ret)
{
	const struct lix_entry *e = entry_at(idx, i);

	if (!e)
		return i >= idx->h->n_entries ? -ENOENT : -EBADMSG;
	*ret = (struct li_entry){
	    .path = idx->strings + e->path,
	    .type = e->type,
	    .mode = e->mode & 07777,
	    .uid = e->uid,
	    .gid = e->gid,
	    .mtime_sec = e->mtime_sec,
	    .mtime_nsec = e->mtime_nsec,
	    .size = e->type == LI_REG ? e->size : 0,
	    .rdev_major = e->rdev_major,
	    .rdev_minor = e->rdev_minor,
	    .link = e->link == LIX_NONE ? NULL : idx->strings + e->link,
	    .data_off = e->data_off,
	    .n_xattrs = e->n_xattrs,
	    .n_segments = e->n_segments,
	    .stored = e->type == LI_REG ? e->stored : 0,
	};
	return 0;
}

int li_xattr_get(const struct li_index *idx, size_t i, uint32_t k, const char **ret_name,
                 const void **ret_value, size_t *ret_value_len)
{
	const struct lix_entry *e = entry_at(idx, i);
	const struct lix_xattr *x;

	if (!e)
		return i >= idx->h->n_entries ? -ENOENT : -EBADMSG;
	if (k >= e->n_xattrs)
		return -ENOENT;
	x = &idx->xattrs[e->xattr_first + k];
	if (x->name >= idx->h->strings_len ||
	    (uint64_t)x->value + x->value_len >= idx->h->strings_len)
		return -EBADMSG;
	*ret_name = idx->strings + x->name;
	*ret_value = idx->strings + x->value;
	*ret_value_len = x->value_len;
	return 0;
}

int li_has_xattr_name(const struct li_index *idx, const char *name)
{
	size_t len = strlen(name);

	for (uint32_t k = 0; k < idx->h->n_xattrs; k++) {
		const struct lix_xattr *x = &idx->xattrs[k];

		if (x->name >= idx->h->strings_len)
			return -EBADMSG;
		if (idx->h->strings_len - x->name > len &&
		    memcmp(idx->strings + x->name, name, len + 1) == 0)
			return 1;
	}
	return 0;
}

/* ---- the uncompressed stream ---- */

/* The last point at or before off (points[0].out_off is 0 when there are points). */
static uint32_t find_point(const struct li_index *idx, uint64_t off)
{
	uint32_t lo = 0, hi = idx->h->n_points;

	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (idx->points[mid].out_off <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static uint64_t point_end(const struct li_index *idx, uint32_t k)
{
	return k + 1 < idx->h->n_points ? idx->points[k + 1].out_off : idx->h->total_out;
}

static uint64_t decoded_units;

uint64_t li_decoded_units(void)
{
	return __atomic_load_n(&decoded_units, __ATOMIC_RELAXED);
}

void li_set_unit_cache(struct li_index *idx, struct unitcache *c)
{
	idx->ucache = c;
}

/* The layer's hex digest, for the unit cache; "" (never cached) when it has none. */
static const char *layer_hex(const struct li_index *idx)
{
	return startswith(idx->digest, "sha256:") ? idx->digest + 7 : "";
}

/* Bytes [start, start + len) of the stream from the unit cache: 0, or -ENOENT. */
static int cached_unit(const struct li_index *idx, uint64_t start, uint8_t *dst, size_t len)
{
	if (!idx->ucache)
		return -ENOENT;
	return unitcache_get(idx->ucache, layer_hex(idx), start, dst, len);
}

static void cache_unit(const struct li_index *idx, uint64_t start, const uint8_t *data, size_t len)
{
	__atomic_add_fetch(&decoded_units, 1, __ATOMIC_RELAXED);
	if (idx->ucache)
		unitcache_put(idx->ucache, layer_hex(idx), start, data, len, idx->h->total_out);
}

void li_set_fetch(struct li_index *idx, li_fetch_fn fn, void *ctx)
{
	idx->fetch = fn;
	idx->fetch_ctx = ctx;
}

/* Makes data bytes [off, off + len) present (clipped to the compressed size). */
static int fetch_data(const struct li_index *idx, uint64_t off, uint64_t len)
{
	uint64_t size = idx->h->compression == LI_TAR ? idx->h->total_out : idx->h->total_in;

	if (!idx->fetch || off >= size)
		return 0;
	return idx->fetch(idx->fetch_ctx, off, MIN(len, size - off));
}

/* Where the compressed bytes that point p's span needs end: the next point's offset, plus
 * what the decoders read of the next block's header before they notice that the output is
 * complete (a dynamic Huffman header is a few hundred bytes), or the end of the layer. */
#define NEXT_HEADER_BYTES 4096u
static uint64_t point_in_end(const struct li_index *idx, const struct lix_point *p)
{
	size_t k = (size_t)(p - idx->points);

	uint64_t next;

	if (k + 1 >= idx->h->n_points)
		return idx->h->total_in;
	next = idx->points[k + 1].in_off;
	/* A hostile index's points need not increase: then the rest of the layer. */
	if (next < idx->points[k].in_off || next >= idx->h->total_in)
		return idx->h->total_in;
	/* A span that ends where a gzip member starts needs nothing of it. */
	if ((idx->points[k + 1].flags & LIX_P_MEMBER) && next > idx->points[k].in_off)
		return next;
	return idx->h->total_in - next > NEXT_HEADER_BYTES ? next + NEXT_HEADER_BYTES
	                                                   : idx->h->total_in;
}

struct compressed_reader {
	const struct li_index *idx;
	int fd;
	uint64_t pos;
	uint64_t limit; /* bytes from here on need not be fetched (see fetch_data()) */
	uint8_t *buf;
	size_t len, at;
};

/* Makes sure unread input is in cr->buf; returns the bytes available, 0 at end of file.
 * Input past cr->limit is read as the data file holds it: the decoder stops once it has
 * the span's output, before those bytes matter. */
static ssize_t cr_fill(struct compressed_reader *cr)
{
	ssize_t n;

	if (cr->at < cr->len)
		return (ssize_t)(cr->len - cr->at);
	if (cr->pos < cr->limit) {
		int r =
		    fetch_data(cr->idx, cr->pos, MIN((uint64_t)READ_CHUNK, cr->limit - cr->pos));

		if (r < 0)
			return r;
	}
	n = pread_full(cr->fd, cr->buf, READ_CHUNK, (off_t)cr->pos);
	if (n < 0)
		return n;
	cr->pos += (uint64_t)n;
	cr->len = (size_t)n;
	cr->at = 0;
	return n;
}

static int load_window(const struct li_index *idx, const struct lix_point *p, uint8_t *win,
                       size_t *ret_len)
{
	uLongf wlen = WINDOW_SIZE;

	*ret_len = 0;
	if (p->window_len == 0)
		return 0;
	if (p->window_off > idx->h->windows_len ||
	    p->window_len > idx->h->windows_len - p->window_off)
		return -EBADMSG;
	if (uncompress(win, &wlen, idx->windows + p->window_off, p->window_len) != Z_OK)
		return -EBADMSG;
	*ret_len = wlen;
	return 0;
}

/* Writes the bytes [skip, skip + len) of the stream from point p on into dst, with ISA-L.
 * Returns 0, or 1 when ISA-L cannot do it (the member ends first: trailers and headers
 * are left to zlib), or -errno. */
static int inflate_isal(const struct li_index *idx, const struct lix_point *p, uint64_t start,
                        uint8_t prime, const uint8_t *win, size_t wlen, uint64_t skip, uint8_t *dst,
                        size_t len)
{
	_cleanup_free_ struct inflate_state *st = malloc(sizeof(*st));
	_cleanup_free_ uint8_t *in = malloc(READ_CHUNK), *trash = NULL;
	struct compressed_reader cr = {
	    .idx = idx, .fd = idx->data_fd, .pos = start, .limit = point_in_end(idx, p), .buf = in};
	size_t done = 0;

	if (!st || !in)
		return -ENOMEM;
	if (skip > 0) {
		trash = malloc(READ_CHUNK);
		if (!trash)
			return -ENOMEM;
	}
	isal_inflate_init(st);
	st->crc_flag = ISAL_DEFLATE;
	if (wlen > 0 && isal_inflate_set_dict(st, (uint8_t *)win, (uint32_t)wlen) != COMP_OK)
		return 1;
	if (p->bits) {
		st->read_in = (uint64_t)(prime >> (8 - p->bits));
		st->read_in_length = p->bits;
	}
	while (done < len) {
		ssize_t n;
		int r;

		if (st->avail_in == 0) {
			cr.at = cr.len;
			n = cr_fill(&cr);
			if (n < 0)
				return (int)n;
			if (n == 0)
				return 1;
			st->next_in = cr.buf;
			st->avail_in = (uint32_t)n;
		}
		if (skip > 0) {
			st->next_out = trash;
			st->avail_out = (uint32_t)MIN(skip, (uint64_t)READ_CHUNK);
		} else {
			st->next_out = dst + done;
			st->avail_out = (uint32_t)MIN(len - done, (size_t)UINT32_MAX);
		}
		{
			uint32_t out_before = st->avail_out, in_before = st->avail_in;

			r = isal_inflate(st);
			if (r != ISAL_DECOMP_OK)
				return 1;
			if (out_before == st->avail_out && in_before == st->avail_in)
				return 1; /* stuck: let zlib decide */
			if (skip > 0)
				skip -= out_before - st->avail_out;
			else
				done += out_before - st->avail_out;
		}
		if ((st->block_state == ISAL_BLOCK_INPUT_DONE ||
		     st->block_state == ISAL_BLOCK_FINISH) &&
		    (skip > 0 || done < len) && st->avail_out > 0)
			return 1;
	}
	return 0;
}

/* The same with zlib, which also walks across gzip member boundaries. */
static int inflate_zlib(const struct li_index *idx, const struct lix_point *p, uint64_t start,
                        uint8_t prime, const uint8_t *win, size_t wlen, uint64_t skip, uint8_t *dst,
                        size_t len)
{
	_cleanup_free_ uint8_t *in = malloc(READ_CHUNK), *trash = NULL;
	struct compressed_reader cr = {
	    .idx = idx, .fd = idx->data_fd, .pos = start, .limit = point_in_end(idx, p), .buf = in};
	z_stream z = {0};
	bool raw = true;
	size_t done = 0, trailer = 0;
	int r = 0, zr;

	if (!in)
		return -ENOMEM;
	if (skip > 0) {
		trash = malloc(READ_CHUNK);
		if (!trash)
			return -ENOMEM;
	}
	if (inflateInit2(&z, -15) != Z_OK)
		return -ENOMEM;
	if (p->bits && inflatePrime(&z, p->bits, prime >> (8 - p->bits)) != Z_OK)
		r = -EBADMSG;
	if (r == 0 && wlen > 0 && inflateSetDictionary(&z, win, (uInt)wlen) != Z_OK)
		r = -EBADMSG;
	while (r == 0 && done < len) {
		ssize_t n = cr_fill(&cr);
		size_t avail_in, avail_out;

		if (n < 0) {
			r = (int)n;
			break;
		}
		if (n == 0) {
			r = -EIO; /* the blob ends before the index says it does */
			break;
		}
		if (trailer > 0) {
			size_t k = MIN(trailer, (size_t)n);

			cr.at += k;
			trailer -= k;
			if (trailer == 0) {
				raw = false;
				if (inflateReset2(&z, 15 + 16) != Z_OK)
					r = -EIO;
			}
			continue;
		}
		avail_in = cr.len - cr.at;
		z.next_in = cr.buf + cr.at;
		z.avail_in = (uInt)avail_in;
		if (skip > 0) {
			z.next_out = trash;
			avail_out = (size_t)MIN(skip, (uint64_t)READ_CHUNK);
		} else {
			z.next_out = dst + done;
			avail_out = MIN(len - done, (size_t)UINT_MAX);
		}
		z.avail_out = (uInt)avail_out;
		zr = inflate(&z, Z_NO_FLUSH);
		cr.at += avail_in - z.avail_in;
		if (skip > 0)
			skip -= avail_out - z.avail_out;
		else
			done += avail_out - z.avail_out;
		if (zr == Z_STREAM_END) {
			/* A raw start does not read the member's trailer: skip its 8 bytes. */
			if (raw)
				trailer = 8;
			else if (inflateReset(&z) != Z_OK)
				r = -EIO;
		} else if (zr != Z_OK && zr != Z_BUF_ERROR) {
			r = zr == Z_MEM_ERROR ? -ENOMEM : -EIO;
		}
	}
	inflateEnd(&z);
	return r;
}

/* The first deflate byte of the gzip member whose header starts at off (RFC 1952: FEXTRA,
 * FNAME, FCOMMENT, FHCRC), into *ret; -EIO for anything that is not a member header. The
 * header's bytes are present: decode_gzip() fetched from off on. */
#define MEMBER_HEADER_MAX 4096u
static int member_header_len(const struct li_index *idx, uint64_t off, uint64_t *ret)
{
	_cleanup_free_ uint8_t *h = malloc(MEMBER_HEADER_MAX);
	size_t at = 10;
	ssize_t n;
	uint8_t flg;

	if (!h)
		return -ENOMEM;
	n = pread_full(idx->data_fd, h, MEMBER_HEADER_MAX, (off_t)off);
	if (n < 0)
		return (int)n;
	if (n < 10 || h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 || (h[3] & 0xe0))
		return -EIO;
	flg = h[3];
	if (flg & 4) {
		if ((size_t)n < at + 2)
			return -EIO;
		at += 2 + (size_t)(h[at] | h[at + 1] << 8);
	}
	for (uint8_t f = 8; f <= 16; f <<= 1) {
		if (!(flg & f))
			continue;
		while (at < (size_t)n && h[at])
			at++;
		at++;
	}
	if (flg & 2)
		at += 2;
	if (at >= (size_t)n)
		return -EIO;
	*ret = off + at;
	return 0;
}

static int decode_gzip(const struct li_index *idx, const struct lix_point *p, uint64_t skip,
                       uint8_t *dst, size_t len)
{
	uint8_t win[WINDOW_SIZE], prime = p->prime_byte;
	uint64_t start;
	size_t wlen;
	int r;

	if (p->bits > 7)
		return -EBADMSG;
	/* The input this output needs at once (one request where it has to be fetched): the
	 * whole span's for the whole span, else a share of it in proportion, with a margin;
	 * cr_fill() fetches on if that was short. */
	if (point_in_end(idx, p) > p->in_off && idx->fetch) {
		uint64_t in = point_in_end(idx, p) - p->in_off;
		uint64_t out = point_end(idx, (uint32_t)(p - idx->points)) - p->out_off;

		if (out > 0 && skip + len < out)
			in = MIN(in, in * (skip + len) / out + in / 8 + NEXT_HEADER_BYTES);
		r = fetch_data(idx, p->in_off, in);
		if (r < 0)
			return r;
	}
	r = load_window(idx, p, win, &wlen);
	if (r < 0)
		return r;
	start = p->in_off;
	if (p->flags & LIX_P_PRIME_DATA) {
		/* The byte the point starts inside of is the data's, not the index's. */
		ssize_t n;

		if (!p->bits || p->in_off == 0)
			return -EBADMSG;
		r = fetch_data(idx, p->in_off - 1, 1);
		if (r < 0)
			return r;
		n = pread_full(idx->data_fd, &prime, 1, (off_t)(p->in_off - 1));
		if (n < 0)
			return (int)n;
		if (n != 1)
			return -EIO;
	}
	if (p->flags & LIX_P_MEMBER) {
		if (p->bits || wlen)
			return -EBADMSG;
		r = member_header_len(idx, p->in_off, &start);
		if (r < 0)
			return r;
	}
	r = inflate_isal(idx, p, start, prime, win, wlen, skip, dst, len);
	if (r <= 0)
		return r;
	return inflate_zlib(idx, p, start, prime, win, wlen, skip, dst, len);
}

static int decode_zstd(const struct li_index *idx, const struct lix_point *p, uint8_t *dst,
                       size_t len)
{
	_cleanup_free_ uint8_t *frame = NULL;
	ssize_t n;
	size_t got;

	if (p->window_len == 0 || p->window_len > ZSTD_compressBound(idx->h->span))
		return -EBADMSG;
	frame = malloc(p->window_len);
	if (!frame)
		return -ENOMEM;
	n = pread_full(idx->data_fd, frame, p->window_len, (off_t)p->in_off);
	if (n < 0)
		return (int)n;
	if ((size_t)n != p->window_len)
		return -EIO;
	got = ZSTD_decompress(dst, len, frame, p->window_len);
	if (ZSTD_isError(got) || got != len)
		return -EIO;
	return 0;
}

/* Output of a lazily fetched gzip span, decoded and cached in pieces of LAZY_PIECE bytes
 * from the checkpoint on, only as far as a read needs: its input is fetched over the
 * network, and a small file in the middle of a span then costs half of it, not all.
 * Copies what piece of span k holds at off into buf (at most len bytes, *ret_n). */
#define LAZY_PIECE (256u << 10)
#define LAZY_PIECE_KEY (1ull << 31)
static int read_lazy_piece(struct li_index *idx, uint32_t k, uint8_t *buf, size_t len, uint64_t off,
                           size_t *ret_n)
{
	const struct lix_point *p = &idx->points[k];
	uint64_t end = point_end(idx, k), j = (off - p->out_off) / LAZY_PIECE;
	uint64_t pstart = p->out_off + j * LAZY_PIECE, pend = MIN(end, pstart + LAZY_PIECE);
	const struct span *s = spancache_get(idx->owner, ((uint64_t)k << 32) | LAZY_PIECE_KEY | j);

	if (!s && idx->ucache) {
		/* An earlier mount decoded (and fetched) this piece already. */
		uint8_t *data = spancache_alloc(pend - pstart);

		if (!data)
			return -ENOMEM;
		if (cached_unit(idx, pstart, data, pend - pstart) == 0) {
			s = spancache_insert(idx->owner, ((uint64_t)k << 32) | LAZY_PIECE_KEY | j,
			                     data, pend - pstart);
			if (!s)
				return -ENOMEM;
		} else
			spancache_free(data);
	}
	if (!s) {
		/* Pieces 0..j, decoded from the checkpoint in one pass. */
		_cleanup_free_ uint8_t *all = malloc(pend - p->out_off);
		int r;

		if (!all)
			return -ENOMEM;
		r = decode_gzip(idx, p, 0, all, pend - p->out_off);
		if (r < 0)
			return r;
		for (uint64_t i = 0; i <= j; i++) {
			uint64_t a = i * LAZY_PIECE, b = MIN(pend - p->out_off, a + LAZY_PIECE);
			uint64_t key = ((uint64_t)k << 32) | LAZY_PIECE_KEY | i;
			const struct span *got = i < j ? spancache_get(idx->owner, key) : NULL;
			uint8_t *data;

			if (got) {
				spancache_put(got);
				continue;
			}
			cache_unit(idx, p->out_off + a, all + a, b - a);
			data = spancache_alloc(b - a);
			if (!data)
				return -ENOMEM;
			memcpy(data, all + a, b - a);
			got = spancache_insert(idx->owner, key, data, b - a);
			if (!got)
				return -ENOMEM;
			if (i == j)
				s = got;
			else
				spancache_put(got);
		}
	}
	*ret_n = (size_t)MIN((uint64_t)len, pend - off);
	memcpy(buf, s->data + (off - pstart), *ret_n);
	spancache_put(s);
	return 0;
}

/* Copies stream bytes [off, off + len) into buf, which is entirely within the stream. */
static int read_stream(struct li_index *idx, uint8_t *buf, size_t len, uint64_t off)
{
	const struct lix_header *h = idx->h;

	if (idx->data_fd < 0)
		return -EBADF;
	if (off > h->total_out || len > h->total_out - off)
		return -EINVAL;
	if (h->compression == LI_TAR) {
		int r = fetch_data(idx, off, len);
		ssize_t n;

		if (r < 0)
			return r;
		n = pread_full(idx->data_fd, buf, len, (off_t)off);

		if (n < 0)
			return (int)n;
		return (size_t)n == len ? 0 : -EIO;
	}
	while (len > 0) {
		uint32_t k = find_point(idx, off);
		const struct lix_point *p = &idx->points[k];
		uint64_t end = point_end(idx, k), ustart, ulen, unit;
		const struct span *s;
		size_t n;

		if (p->out_off > off || end <= off || end - p->out_off > h->total_out)
			return -EBADMSG;
		if (h->compression == LI_ZSTD && end - p->out_off > h->span)
			return -EBADMSG;
		if (idx->fetch && h->compression == LI_GZIP &&
		    end - p->out_off <= (uint64_t)MAX_UNIT_SPANS * h->span) {
			int r = read_lazy_piece(idx, k, buf, len, off, &n);

			if (r < 0)
				return r;
			buf += n;
			len -= n;
			off += n;
			continue;
		}
		if (end - p->out_off <= (uint64_t)MAX_UNIT_SPANS * h->span) {
			ustart = p->out_off;
			ulen = end - p->out_off;
			unit = (uint64_t)k << 32;
		} else {
			uint64_t c = (off - p->out_off) / h->span;

			ustart = p->out_off + c * h->span;
			ulen = MIN((uint64_t)h->span, end - ustart);
			unit = ((uint64_t)k << 32) | c;
		}
		s = spancache_get(idx->owner, unit);
		if (!s && ustart >= off && ustart + ulen <= off + len) {
			/* The request covers the whole unit (a large read: copy-up, a big
			 * read-ahead): decode straight into it. No copy, no allocation, and the
			 * cache keeps the units that small reads share. */
			uint8_t *dst = buf + (ustart - off);
			int r = 0;

			if (cached_unit(idx, ustart, dst, ulen) < 0) {
				r = h->compression == LI_ZSTD
				        ? decode_zstd(idx, p, dst, ulen)
				        : decode_gzip(idx, p, ustart - p->out_off, dst, ulen);
				if (r >= 0)
					cache_unit(idx, ustart, dst, ulen);
			}
			if (r < 0)
				return r;
			n = (size_t)(ustart + ulen - off);
			buf += n;
			len -= n;
			off += n;
			continue;
		}
		if (!s && idx->ucache) {
			/* Decoded by an earlier mount: the blocks of it this read needs, straight
			 * from the cache file into buf (no decode, no whole unit in memory). */
			n = (size_t)MIN((uint64_t)len, ustart + ulen - off);
			if (unitcache_read(idx->ucache, layer_hex(idx), ustart, ulen, off - ustart,
			                   buf, n) == 0) {
				buf += n;
				len -= n;
				off += n;
				continue;
			}
		}
		if (!s) {
			uint8_t *data = spancache_alloc(ulen);
			int r;

			if (!data)
				return -ENOMEM;
			if (h->compression == LI_ZSTD)
				r = decode_zstd(idx, p, data, ulen);
			else
				r = decode_gzip(idx, p, ustart - p->out_off, data, ulen);
			if (r >= 0)
				cache_unit(idx, ustart, data, ulen);
			if (r < 0) {
				spancache_free(data);
				return r;
			}
			s = spancache_insert(idx->owner, unit, data, ulen);
			if (!s)
				return -ENOMEM;
		}
		n = (size_t)MIN((uint64_t)len, ustart + ulen - off);
		memcpy(buf, s->data + (off - ustart), n);
		spancache_put(s);
		buf += n;
		len -= n;
		off += n;
	}
	return 0;
}

ssize_t li_read_stream(struct li_index *idx, void *buf, size_t len, uint64_t off)
{
	int r;

	if (off >= idx->h->total_out)
		return 0;
	len = (size_t)MIN((uint64_t)MIN(len, (size_t)SSIZE_MAX), idx->h->total_out - off);
	r = read_stream(idx, buf, len, off);
	return r < 0 ? r : (ssize_t)len;
}

/* The first segment of e that ends after off (n_segments when none). */
static uint32_t find_segment(const struct lix_segment *seg, uint32_t n, uint64_t off)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (seg[mid].file_off + seg[mid].len <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool segment_ok(const struct lix_entry *e, const struct lix_segment *s)
{
	return s->len <= e->size && s->file_off <= e->size - s->len && s->stored_off <= e->stored &&
	       s->len <= e->stored - s->stored_off;
}

ssize_t li_read(struct li_index *idx, size_t i, void *buf, size_t len, uint64_t off)
{
	const struct lix_entry *e = entry_at(idx, i);
	const struct lix_segment *seg;
	uint8_t *out = buf;
	size_t done = 0;
	int r;

	if (!e)
		return i >= idx->h->n_entries ? -ENOENT : -EBADMSG;
	if (e->type == LI_DIR)
		return -EISDIR;
	if (e->type != LI_REG)
		return -EINVAL;
	if (off >= e->size)
		return 0;
	len = (size_t)MIN((uint64_t)MIN(len, (size_t)SSIZE_MAX), e->size - off);
	if (!(e->flags & LIX_F_SPARSE)) {
		r = read_stream(idx, out, len, e->data_off + off);
		return r < 0 ? r : (ssize_t)len;
	}
	seg = &idx->segments[e->seg_first];
	for (uint32_t k = find_segment(seg, e->n_segments, off); done < len;) {
		uint64_t pos = off + done;
		size_t n;

		if (k >= e->n_segments || pos < seg[k].file_off) {
			/* a hole, up to the next segment or the end */
			uint64_t hole_end = k < e->n_segments ? seg[k].file_off : e->size;

			n = (size_t)MIN((uint64_t)(len - done), hole_end - pos);
			memset(out + done, 0, n);
		} else {
			if (!segment_ok(e, &seg[k]))
				return -EBADMSG;
			n = (size_t)MIN((uint64_t)(len - done), seg[k].file_off + seg[k].len - pos);
			r = read_stream(idx, out + done, n,
			                e->data_off + seg[k].stored_off + (pos - seg[k].file_off));
			if (r < 0)
				return r;
			k++;
		}
		done += n;
	}
	return (ssize_t)done;
}

void li_prefetch(struct li_index *idx, size_t i)
{
	const struct lix_entry *e = entry_at(idx, i);
	const struct lix_header *h = idx->h;
	uint64_t start, end;

	if (!e || e->type != LI_REG || e->stored == 0 || idx->data_fd < 0)
		return;
	start = e->data_off;
	end = e->data_off + e->stored;
	if (h->compression != LI_TAR) {
		uint32_t k0, k1;

		if (h->n_points == 0)
			return;
		k0 = find_point(idx, start);
		k1 = find_point(idx, end - 1) + 1;
		start = idx->points[k0].in_off;
		end = k1 < h->n_points ? idx->points[k1].in_off : UINT64_MAX;
		if (end <= start)
			return;
	}
	(void)posix_fadvise(idx->data_fd, (off_t)start,
	                    end == UINT64_MAX ? 0 : (off_t)(end - start), POSIX_FADV_WILLNEED);
}

int64_t li_seek(struct li_index *idx, size_t i, uint64_t off, int whence)
{
	const struct lix_entry *e = entry_at(idx, i);
	const struct lix_segment *seg;
	uint32_t k;

	if (!e)
		return i >= idx->h->n_entries ? -ENOENT : -EBADMSG;
	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	if (off >= e->size || e->type != LI_REG)
		return -ENXIO;
	if (!(e->flags & LIX_F_SPARSE))
		return whence == SEEK_DATA ? (int64_t)off : (int64_t)e->size;
	seg = &idx->segments[e->seg_first];
	k = find_segment(seg, e->n_segments, off);
	if (whence == SEEK_DATA) {
		if (k >= e->n_segments)
			return -ENXIO;
		return (int64_t)MAX(off, seg[k].file_off);
	}
	if (k >= e->n_segments || off < seg[k].file_off)
		return (int64_t)off;
	/* adjacent segments are one data region */
	while (k + 1 < e->n_segments && seg[k + 1].file_off == seg[k].file_off + seg[k].len)
		k++;
	return (int64_t)MIN(seg[k].file_off + seg[k].len, e->size);
}

void li_cache_set_size(size_t bytes)
{
	spancache_set_size(bytes);
}
