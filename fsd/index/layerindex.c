/* Layer index builder: the decompress → tar parse → index pass that runs while a layer
 * downloads. The reading side is in layerindex_read.c; the on-disk layout in
 * layerindex_format.h.
 *
 * li_builder_feed() runs on the download thread and only copies bytes into a bounded ring;
 * a worker thread owned by the builder inflates them and hands the tar stream to libarchive
 * through a read callback (libarchive pulls, the download pushes: the ring joins the two
 * and keeps hashing and inflating on separate cores). Everything the worker records
 * depends only on the byte stream, never on how it was chunked, so the index of a layer is
 * the same whatever the network did. */
#include <archive.h>
#include <archive_entry.h>
#include <isa-l/igzip_lib.h>
#include <pthread.h>
#include <stdint.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>
#include "common/fileio.h"
#include "fsd/index/deflate_refs.h"
#include "fsd/index/layerindex.h"
#include "fsd/index/layerindex_format.h"

#define RING_SIZE (4u << 20)
#define IN_SIZE (256u << 10)
#define OUT_SIZE (256u << 10)
#define WINDOW_SIZE 32768u
#define WINDOW_CBOUND (WINDOW_SIZE + 1024u) /* room for a compressed window (stored blocks) */
#define GZ_STEP (64u << 10) /* at most this much compressed input per inflate call */
#define GZ_HUNT_STEP 64u    /* the same while looking for a block boundary */
#define MIN_SPAN 4096u
#define MAX_SPAN (64u << 20)
/* Sparse windows (docs/decisions/0017-sparse-windows-and-gzip-span.md): a window is
 * compressed once the output reaches SPARSE_NEED bytes past its point, every byte the deflate
 * data after the point cannot copy zeroed. At most SPARSE_IN compressed bytes after a point
 * are searched for that (more only in a hostile stream: the window is then kept whole). */
#define SPARSE_NEED (WINDOW_SIZE + DREF_MAX_MATCH)
#define SPARSE_IN (128u << 10)
#define SPARSE_RECENT 1024u /* compressed bytes kept before a point, for its block header */
#define MAX_PENDING 16      /* (SPARSE_NEED / MIN_SPAN) + 1 points wait at most */
/* zstd re-encode level: pull time over store size (bench/NOTES.md, "The layer index on a
 * 558 MiB tar") */
#define ZSTD_FRAME_LEVEL 1

struct dynbuf {
	uint8_t *p;
	size_t len, cap;
};

struct li_builder {
	enum li_compression comp; /* LI_AUTO until the worker has seen the first bytes */
	uint32_t span;
	bool default_span; /* span 0 given: set by the compression once detected */
	int data_fd;       /* borrowed */
	struct li_limits lim;

	pthread_mutex_t lock;
	pthread_cond_t can_put, can_get;
	uint8_t *ring;    /* RING_SIZE bytes */
	size_t ring_head; /* protected by lock */
	size_t ring_len;  /* protected by lock */
	bool eof, cancel; /* protected by lock */
	bool worker_done; /* protected by lock */
	int worker_err;   /* protected by lock, valid once worker_done */
	pthread_t thread;
	bool thread_running, fed, finished; /* caller's thread only */

	/* Everything below belongs to the worker until it is joined. */
	uint8_t *in;
	size_t in_pos, in_len;
	uint64_t in_base; /* stream offset of in[0] */
	uint8_t *out;
	uint64_t total_out;
	int err; /* first error of the stream callbacks */

	struct inflate_state *isal;
	uint8_t *deflate_buf; /* ISA-L's level 1 work area, for windows */
	enum { GZ_HEADER, GZ_DEFLATE } gz_phase;
	bool gz_seen;           /* a member header was read */
	bool gz_need_piece;     /* the last piece is consumed and its output handed over */
	uint64_t gz_member_out; /* stream output offset of the member's first byte */
	size_t out_prev;        /* bytes produce_gzip returned last time */
	struct gzip_header_state {
		uint8_t fixed[10];
		uint32_t pos;  /* bytes of the current field read */
		uint32_t need; /* FEXTRA length */
		uint32_t crc;  /* of the header so far, for FHCRC */
		uint8_t flags, field;
	} gh;
	uint64_t last_point_out;

	/* Points whose window waits for the deflate data after them (sparse windows). */
	struct pending_window {
		uint32_t point;   /* index in points */
		uint32_t wlen;    /* window bytes before out_off */
		uint64_t out_off; /* the point's uncompressed offset */
		uint64_t bitpos;  /* and its compressed bit offset */
	} pend[MAX_PENDING];
	uint32_t n_pend;
	struct dynbuf zin;  /* compressed bytes inflated so far, from zin_base */
	uint64_t zin_base;  /* (only the last SPARSE_RECENT while no point waits) */
	struct dynbuf zout; /* output from zout_base: the windows and what follows them */
	uint64_t zout_base;
	uint8_t *used;               /* WINDOW_SIZE marks from dref_decode() */
	uint8_t *sparse;             /* WINDOW_SIZE: the window with unused bytes zeroed */
	struct inflate_state *check; /* inflates from a point with its sparse window */
	uint8_t *check_out;          /* SPARSE_NEED bytes */
	uint64_t sparse_kept;        /* windows kept whole (checks failed; hostile streams) */

	ZSTD_DCtx *zd;
	ZSTD_CCtx *zc;
	uint8_t *frame; /* span bytes waiting to be compressed into the next frame */
	size_t frame_len;
	uint64_t frame_start; /* stream offset of frame[0] */
	uint8_t *frame_out;
	size_t frame_out_cap;
	uint64_t zst_size;
	size_t zstd_pending; /* ZSTD_decompressStream's hint: 0 between frames */
	bool zstd_seen;

	struct dynbuf entries, xattrs, segments, points, windows, strings;
	uint32_t n_entries, n_xattrs, n_segments, n_points;
	uint32_t dropped;
	char *pathbuf, *linkbuf; /* 2 * max_path + 2 bytes each */
};

void li_limits_default(struct li_limits *ret)
{
	*ret = (struct li_limits){
	    .max_out = 64ull << 30,
	    .max_entries = 4u << 20,
	    .max_path = 4096,
	    .max_meta = 512ull << 20,
	    .max_xattrs = 1024,
	    .max_segments = 1u << 20,
	};
}

static int dynbuf_append(struct dynbuf *d, const void *data, size_t n)
{
	if (n > SIZE_MAX - d->len)
		return -ENOMEM;
	if (d->len + n > d->cap) {
		size_t cap = MAX(d->cap * 2, MAX(d->len + n, (size_t)4096));
		uint8_t *p = realloc(d->p, cap);

		if (!p)
			return -ENOMEM;
		d->p = p;
		d->cap = cap;
	}
	if (data && n)
		memcpy(d->p + d->len, data, n); /* data NULL: reserve only */
	d->len += n;
	return 0;
}

static void dynbuf_free(struct dynbuf *d)
{
	free(d->p);
	*d = (struct dynbuf){0};
}

/* ---- the ring between the feeding thread and the worker ---- */

/* Appends ring bytes to b->in (after discarding what was consumed); when wait, blocks until
 * there are some. Returns 1 when bytes were added (or b->in is full), 0 at the end of the
 * input, -EAGAIN (only without wait) when none are there yet, -ECANCELED. */
static int input_more_wait(struct li_builder *b, bool wait)
{
	size_t n, first;

	if (b->in_pos == b->in_len) {
		b->in_base += b->in_len;
		b->in_pos = b->in_len = 0;
	}
	if (b->in_len == IN_SIZE)
		return 1;
	pthread_mutex_lock(&b->lock);
	while (wait && b->ring_len == 0 && !b->eof && !b->cancel)
		pthread_cond_wait(&b->can_get, &b->lock);
	if (b->cancel) {
		pthread_mutex_unlock(&b->lock);
		return -ECANCELED;
	}
	if (b->ring_len == 0) {
		pthread_mutex_unlock(&b->lock);
		return b->eof ? 0 : -EAGAIN;
	}
	n = MIN(b->ring_len, IN_SIZE - b->in_len);
	first = MIN(n, RING_SIZE - b->ring_head);
	memcpy(b->in + b->in_len, b->ring + b->ring_head, first);
	memcpy(b->in + b->in_len + first, b->ring, n - first);
	b->ring_head = (b->ring_head + n) % RING_SIZE;
	b->ring_len -= n;
	pthread_cond_signal(&b->can_put);
	pthread_mutex_unlock(&b->lock);
	b->in_len += n;
	return 1;
}

static int input_more(struct li_builder *b)
{
	return input_more_wait(b, true);
}

/* Makes b->in hold the stream up to offset end (at most IN_SIZE past b->in_pos), moving the
 * unconsumed bytes to its start when it is full. Returns 1, 0 when the input ends first,
 * -EAGAIN (only without wait), -ECANCELED. */
static int input_until(struct li_builder *b, uint64_t end, bool wait)
{
	while (b->in_base + b->in_len < end) {
		int r;

		if (b->in_len == IN_SIZE) {
			memmove(b->in, b->in + b->in_pos, b->in_len - b->in_pos);
			b->in_base += b->in_pos;
			b->in_len -= b->in_pos;
			b->in_pos = 0;
		}
		r = input_more_wait(b, wait);
		if (r <= 0)
			return r;
	}
	return 1;
}

/* ---- decompression: each produce_* returns bytes of tar stream, 0 at its end ---- */

static int check_out(struct li_builder *b, size_t n)
{
	b->total_out += n;
	return b->total_out > b->lim.max_out ? -EFBIG : 0;
}

static ssize_t produce_tar(struct li_builder *b, const void **ret)
{
	size_t n;
	int r;

	if (b->in_pos == b->in_len) {
		r = input_more(b);
		if (r <= 0)
			return r;
	}
	n = b->in_len - b->in_pos;
	*ret = b->in + b->in_pos;
	b->in_pos = b->in_len;
	r = check_out(b, n);
	return r < 0 ? r : (ssize_t)n;
}

/* Compresses a window into out (WINDOW_CBOUND bytes) in the zlib format the reader
 * uncompress()es: ISA-L's level 1, about 5 times faster than zlib's level 1 for the same
 * size; zlib only if ISA-L gives up. Sets *ret_len. */
static int compress_window(struct li_builder *b, const uint8_t *window, size_t wlen, uint8_t *out,
                           size_t *ret_len)
{
	struct isal_zstream zs;
	uLongf clen = WINDOW_CBOUND;

	if (!b->deflate_buf) {
		b->deflate_buf = malloc(ISAL_DEF_LVL1_DEFAULT);
		if (!b->deflate_buf)
			return -ENOMEM;
	}
	isal_deflate_stateless_init(&zs);
	zs.level = 1;
	zs.level_buf = b->deflate_buf;
	zs.level_buf_size = ISAL_DEF_LVL1_DEFAULT;
	zs.gzip_flag = IGZIP_ZLIB;
	zs.end_of_stream = 1;
	zs.next_in = (uint8_t *)window;
	zs.avail_in = (uint32_t)wlen;
	zs.next_out = out;
	zs.avail_out = WINDOW_CBOUND;
	if (isal_deflate_stateless(&zs) == COMP_OK) {
		*ret_len = zs.total_out;
		return 0;
	}
	if (compress2(out, &clen, window, wlen, 1) != Z_OK)
		return -ENOMEM;
	*ret_len = clen;
	return 0;
}

/* Appends access point p to the table (at most UINT32_MAX points). */
static int append_point(struct li_builder *b, const struct lix_point *p)
{
	int r;

	if (b->n_points == UINT32_MAX)
		return -EFBIG;
	r = dynbuf_append(&b->points, p, sizeof(*p));
	if (r < 0)
		return r;
	b->n_points++;
	return 0;
}

/* Compresses window (wlen bytes) into the windows section for point k. */
static int store_window(struct li_builder *b, uint32_t k, const uint8_t *window, size_t wlen)
{
	struct lix_point *p;
	size_t at = b->windows.len, clen;
	int r;

	r = dynbuf_append(&b->windows, NULL, WINDOW_CBOUND);
	if (r < 0)
		return r;
	r = compress_window(b, window, wlen, b->windows.p + at, &clen);
	if (r < 0)
		return r;
	b->windows.len = at + clen;
	p = (struct lix_point *)b->points.p + k;
	p->window_off = at;
	p->window_len = (uint32_t)clen;
	return 0;
}

/* Inflates with ISA-L from bit bitpos % 8 of in (in_len bytes), after the window win, into
 * b->check_out; true when that gives exactly the len bytes of want. This is how the
 * reader starts at the point, so it proves the sparse window. */
static bool check_sparse(struct li_builder *b, const uint8_t *in, size_t in_len, unsigned bit,
                         const uint8_t *win, size_t wlen, const uint8_t *want, size_t len)
{
	struct inflate_state *st;

	if (!b->check)
		b->check = malloc(sizeof(*b->check));
	if (!b->check_out)
		b->check_out = malloc(SPARSE_NEED);
	if (!b->check || !b->check_out)
		return false; /* the window is kept whole */
	st = b->check;
	isal_inflate_init(st);
	st->crc_flag = ISAL_DEFLATE;
	if (isal_inflate_set_dict(st, (uint8_t *)win, (uint32_t)wlen) != COMP_OK)
		return false;
	if (bit) {
		if (in_len == 0)
			return false;
		st->read_in = (uint64_t)(in[0] >> bit);
		st->read_in_length = (int32_t)(8 - bit);
		in++;
		in_len--;
	}
	st->next_in = (uint8_t *)in;
	st->avail_in = (uint32_t)in_len;
	st->next_out = b->check_out;
	st->avail_out = (uint32_t)len;
	if (isal_inflate(st) != ISAL_DECOMP_OK || st->avail_out != 0)
		return false;
	return memcmp(b->check_out, want, len) == 0;
}

/* Stores the window of pending point w: the window bytes that no back-reference starting
 * in the first WINDOW_SIZE bytes after the point copies are zeroed (no later one reaches
 * the window), which our decoder finds from the compressed bytes after the point; the
 * result is proven by inflating from the point with it as the reader will. Needs the
 * output up to SPARSE_NEED bytes after the point, or up to the member's end. */
static int finish_window(struct li_builder *b, const struct pending_window *w)
{
	const uint8_t *win = b->zout.p + (w->out_off - w->wlen - b->zout_base);
	const uint8_t *after = win + w->wlen, *in;
	size_t have_out =
	    (size_t)MIN(b->zout_base + b->zout.len - w->out_off, (uint64_t)SPARSE_NEED);
	uint64_t first = w->bitpos / 8;
	size_t in_len;
	struct dref d;
	int r;

	if (!b->used)
		b->used = malloc(WINDOW_SIZE);
	if (!b->sparse)
		b->sparse = malloc(WINDOW_SIZE);
	if (!b->used || !b->sparse)
		return -ENOMEM;
	if (first < b->zin_base)
		goto whole; /* the block header is not there (never with ISA-L's header sizes) */
	in = b->zin.p + (first - b->zin_base);
	in_len = (size_t)MIN(b->zin_base + b->zin.len - first, (uint64_t)SPARSE_IN);
	memset(b->used, 0, w->wlen);
	r = dref_decode(in, in_len, (unsigned)(w->bitpos % 8), NULL, w->wlen, NULL, WINDOW_SIZE,
	                b->used, &d);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || d.out_len > have_out)
		goto whole;
	for (size_t i = 0; i < w->wlen; i++)
		b->sparse[i] = win[i] & (uint8_t)-b->used[i]; /* used[] is 0 or 1 */
	if (!check_sparse(b, in, in_len, (unsigned)(w->bitpos % 8), b->sparse, w->wlen, after,
	                  d.out_len))
		goto whole;
	return store_window(b, w->point, b->sparse, w->wlen);
whole:
	b->sparse_kept++;
	return store_window(b, w->point, win, w->wlen);
}

/* Drops what no waiting point needs any more from zin and zout. */
static void trim_pending(struct li_builder *b)
{
	uint64_t in_keep = b->zin_base + b->zin.len, out_keep = b->zout_base + b->zout.len;
	size_t drop;

	if (b->n_pend == 0) {
		b->zout.len = 0;
		b->zout_base = out_keep;
		in_keep -= MIN(in_keep - b->zin_base, (uint64_t)SPARSE_RECENT);
	}
	for (uint32_t k = 0; k < b->n_pend; k++) {
		in_keep = MIN(in_keep, b->pend[k].bitpos / 8);
		out_keep = MIN(out_keep, b->pend[k].out_off - b->pend[k].wlen);
	}
	drop = (size_t)(MAX(in_keep, b->zin_base) - b->zin_base);
	if (drop >= (64u << 10) || (drop > 0 && drop == b->zin.len) ||
	    (b->n_pend == 0 && drop >= SPARSE_RECENT)) {
		memmove(b->zin.p, b->zin.p + drop, b->zin.len - drop);
		b->zin.len -= drop;
		b->zin_base += drop;
	}
	drop = (size_t)(MAX(out_keep, b->zout_base) - b->zout_base);
	if (drop >= (64u << 10)) {
		memmove(b->zout.p, b->zout.p + drop, b->zout.len - drop);
		b->zout.len -= drop;
		b->zout_base += drop;
	}
}

/* Stores the windows of the waiting points that have all they need: the output up to
 * SPARSE_NEED after them, or (member_end) the rest of their member; or whose compressed
 * bytes exceed what is searched (2 * SPARSE_IN: the search then fails in any feeding). */
static int finish_pending(struct li_builder *b, bool member_end)
{
	uint32_t kept = 0;
	int r;

	for (uint32_t k = 0; k < b->n_pend; k++) {
		const struct pending_window *w = &b->pend[k];

		if (member_end || b->zout_base + b->zout.len >= w->out_off + SPARSE_NEED ||
		    b->zin_base + b->zin.len - w->bitpos / 8 >= 2 * (uint64_t)SPARSE_IN) {
			r = finish_window(b, w);
			if (r < 0)
				return r;
		} else {
			b->pend[kept++] = *w;
		}
	}
	if (kept == b->n_pend)
		return 0;
	b->n_pend = kept;
	trim_pending(b);
	return 0;
}

/* After an inflate call that consumed in_len bytes at in (in b->in) and wrote out_len bytes
 * at out: keeps what the waiting points need (all of it while one waits, else the last
 * SPARSE_RECENT compressed bytes) and stores the windows that are complete. */
static int track_pending(struct li_builder *b, const uint8_t *in, size_t in_len, const uint8_t *out,
                         size_t out_len, bool member_end)
{
	uint64_t at = b->in_base + (uint64_t)(in - b->in); /* stream offset of in[0] */
	uint64_t end = b->zout_base + b->zout.len, need = 0;
	int r;

	if (at != b->zin_base + b->zin.len) {
		b->zin.len = 0; /* after a member header, which is not inflated */
		b->zin_base = at;
	}
	if (b->n_pend == 0 && in_len >= SPARSE_RECENT) {
		b->zin_base += b->zin.len + in_len - SPARSE_RECENT;
		b->zin.len = 0;
		in += in_len - SPARSE_RECENT;
		in_len = SPARSE_RECENT;
	}
	r = dynbuf_append(&b->zin, in, in_len);
	if (r < 0)
		return r;
	if (b->n_pend == 0) {
		b->zout_base += out_len;
		trim_pending(b);
		return 0;
	}
	/* Only up to the furthest byte a waiting point needs: with that much, every point is
	 * complete and none is left waiting, so the next point finds zout empty. */
	for (uint32_t k = 0; k < b->n_pend; k++)
		need = MAX(need, b->pend[k].out_off + SPARSE_NEED);
	r = dynbuf_append(&b->zout, out, (size_t)MIN((uint64_t)out_len, need - MIN(need, end)));
	if (r < 0)
		return r;
	return finish_pending(b, member_end);
}

/* Records an access point at stream bit offset bitpos, where a deflate block (or a member's
 * deflate stream) starts, and at the current output offset. The reader restarts there from
 * the byte at in_off after priming the bits left of the byte before (the top bits of
 * prime_byte) and the window: the wlen bytes of output before the point (none at a member
 * start, as zlib's inflateGetDictionary after inflateReset). The window is stored once the
 * data after the point is known (finish_pending). */
static int add_gzip_point(struct li_builder *b, uint64_t bitpos, uint64_t next_bits,
                          const uint8_t *window, size_t wlen)
{
	struct lix_point p = {
	    .out_off = b->total_out,
	    .in_off = (bitpos + 7) / 8,
	    .bits = (uint8_t)((8 - bitpos % 8) % 8),
	};
	int r;

	if (p.bits)
		p.prime_byte = (uint8_t)((next_bits & ((1u << p.bits) - 1)) << (8 - p.bits));
	r = append_point(b, &p);
	if (r < 0)
		return r;
	b->last_point_out = p.out_off;
	if (wlen == 0)
		return 0;
	if (b->n_pend == MAX_PENDING)
		return store_window(b, b->n_points - 1, window, wlen); /* spans < MIN_SPAN only */
	if (b->n_pend == 0) {
		b->zout.len = 0;
		b->zout_base = p.out_off - wlen;
		r = dynbuf_append(&b->zout, window, wlen);
		if (r < 0)
			return r;
	}
	b->pend[b->n_pend++] = (struct pending_window){.point = b->n_points - 1,
	                                               .wlen = (uint32_t)wlen,
	                                               .out_off = p.out_off,
	                                               .bitpos = bitpos};
	return 0;
}

enum { GH_FIXED, GH_XLEN, GH_EXTRA, GH_NAME, GH_COMMENT, GH_HCRC, GH_DONE };
#define GZ_FHCRC 0x02
#define GZ_FEXTRA 0x04
#define GZ_FNAME 0x08
#define GZ_FCOMMENT 0x10

/* Reads a gzip member header from b->in as far as it goes, keeping its place in b->gh.
 * Returns 1 once the header is complete, 0 when it needs more input, -EBADMSG. The checks
 * are zlib's: magic, deflate, no reserved flag, header crc. */
static int gzip_header(struct li_builder *b)
{
	struct gzip_header_state *g = &b->gh;

	for (;;) {
		const uint8_t *p = b->in + b->in_pos, *nul;
		size_t avail = b->in_len - b->in_pos, n = 0;
		uint8_t field = g->field;

		if (field == GH_DONE)
			return 1;
		if ((field == GH_XLEN && !(g->flags & GZ_FEXTRA)) ||
		    (field == GH_NAME && !(g->flags & GZ_FNAME)) ||
		    (field == GH_COMMENT && !(g->flags & GZ_FCOMMENT)) ||
		    (field == GH_HCRC && !(g->flags & GZ_FHCRC)) ||
		    (field == GH_EXTRA && g->need == 0)) {
			g->field = field == GH_XLEN ? GH_NAME : field + 1;
			continue;
		}
		if (avail == 0)
			return 0;
		switch (field) {
		case GH_FIXED:
			n = MIN(avail, sizeof(g->fixed) - g->pos);
			memcpy(g->fixed + g->pos, p, n);
			g->pos += (uint32_t)n;
			if (g->pos < sizeof(g->fixed))
				break;
			if (g->fixed[0] != 0x1f || g->fixed[1] != 0x8b || g->fixed[2] != 8 ||
			    (g->fixed[3] & 0xe0))
				return -EBADMSG;
			g->flags = g->fixed[3];
			g->pos = 0;
			g->field = GH_XLEN;
			break;
		case GH_XLEN:
			g->need |= (uint32_t)p[0] << (8 * g->pos);
			n = 1;
			if (++g->pos == 2) {
				g->pos = 0;
				g->field = GH_EXTRA;
			}
			break;
		case GH_EXTRA:
			n = MIN(avail, (size_t)g->need);
			g->need -= (uint32_t)n;
			break;
		case GH_NAME:
		case GH_COMMENT:
			nul = memchr(p, 0, avail);
			n = nul ? (size_t)(nul - p) + 1 : avail;
			if (nul)
				g->field++;
			break;
		case GH_HCRC:
			g->need |= (uint32_t)p[0] << (8 * g->pos);
			n = 1;
			if (++g->pos < 2)
				break;
			if (g->need != (g->crc & 0xffff))
				return -EBADMSG;
			g->field = GH_DONE;
			break;
		}
		if (field != GH_HCRC)
			g->crc = (uint32_t)crc32_z(g->crc, p, n);
		b->in_pos += n;
	}
}

/* Where the next inflate input ends. ISA-L stops only when its input or output runs out, and
 * it sits at a deflate block boundary only when its input ended inside the next block's
 * header or right at the end of a stored block. So the input is cut in pieces that depend
 * only on the stream (never on how the bytes arrived), and a point is recorded at the end of
 * the first piece that leaves the inflater at a boundary at least span bytes after the last
 * point: until the span is nearly covered, pieces sized from the compression ratio so far;
 * then small ones, or the rest of a stored block. The state at the end of a piece does not
 * depend on how the output was split either (ISA-L decodes every complete symbol it has the
 * bits for), so the index is the same however the layer was fed (tested). */
static uint64_t gzip_piece_end(struct li_builder *b)
{
	const struct inflate_state *st = b->isal;
	uint64_t pos = b->in_base + b->in_pos, since = b->total_out - b->last_point_out;
	double est;

	if (since >= b->span) {
		uint32_t buffered = (uint32_t)st->read_in_length / 8;

		if (st->block_state == ISAL_BLOCK_TYPE0 && st->type0_block_len > 0 &&
		    (uint32_t)st->type0_block_len > buffered)
			return pos + MIN((uint32_t)st->type0_block_len - buffered, GZ_STEP);
		return pos + GZ_HUNT_STEP;
	}
	/* half the input the ratio so far gives for the rest of the span (a prior of 8:1 until
	 * there is a ratio), so that the pieces shrink towards the span mark */
	est = (double)(b->span - since) * (double)(pos + 4096) / (double)(b->total_out + 32768) / 2;
	return pos + (uint64_t)MIN(MAX(est, (double)GZ_HUNT_STEP), (double)GZ_STEP);
}

/* At the end of a piece: records a point when the inflater stopped between two blocks. The
 * bits it holds (read_in) and a block header it could not finish (tmp_in) are not
 * consumed yet; window_end is the end of the output so far. */
static int gzip_piece_done(struct li_builder *b, const uint8_t *window_end)
{
	const struct inflate_state *st = b->isal;
	uint64_t bitpos;
	size_t wlen;

	if (st->block_state != ISAL_BLOCK_NEW_HDR && st->block_state != ISAL_BLOCK_HDR)
		return 0;
	if (b->total_out - b->last_point_out < b->span)
		return 0;
	bitpos =
	    (b->in_base + b->in_pos - (uint64_t)st->tmp_in_size) * 8 - (uint64_t)st->read_in_length;
	wlen = (size_t)MIN((uint64_t)WINDOW_SIZE, b->total_out - b->gz_member_out);
	return add_gzip_point(b, bitpos, st->read_in, window_end - wlen, wlen);
}

static int gzip_member_start(struct li_builder *b)
{
	if (!b->isal) {
		b->isal = malloc(sizeof(*b->isal));
		if (!b->isal)
			return -ENOMEM;
		isal_inflate_init(b->isal);
	}
	isal_inflate_reset(b->isal);
	b->isal->crc_flag = ISAL_GZIP_NO_HDR_VER; /* our header parser, ISA-L's trailer check */
	b->gh = (struct gzip_header_state){0};
	b->gz_phase = GZ_DEFLATE;
	b->gz_seen = true;
	b->gz_member_out = b->total_out;
	b->gz_need_piece = true;
	if (b->n_points == 0 || b->total_out - b->last_point_out >= b->span)
		return add_gzip_point(b, (b->in_base + b->in_pos) * 8, 0, NULL, 0);
	return 0;
}

/* Inflates with ISA-L into b->out after WINDOW_SIZE bytes of history (the window of a point
 * may reach into the output returned before). Concatenated gzip members are one stream. */
static ssize_t produce_gzip(struct li_builder *b, const void **ret)
{
	uint8_t *dst = b->out + WINDOW_SIZE;
	size_t have = 0;
	int r;

	if (b->out_prev > 0)
		memmove(b->out, b->out + b->out_prev, WINDOW_SIZE);
	b->out_prev = 0;
	while (have < OUT_SIZE) {
		struct inflate_state *st = b->isal;
		uint32_t in_before, out_before;
		size_t n;
		int ir;

		if (b->gz_phase == GZ_HEADER) {
			if (b->in_pos == b->in_len) {
				if (have > 0)
					break; /* hand over what we have before waiting */
				r = input_more(b);
				if (r < 0)
					return r;
				if (r == 0) {
					/* no member at all, or a truncated header */
					if (!b->gz_seen || b->gh.field != GH_FIXED ||
					    b->gh.pos != 0)
						return -EBADMSG;
					break;
				}
			}
			r = gzip_header(b);
			if (r < 0)
				return r;
			if (r > 0) {
				r = gzip_member_start(b);
				if (r < 0)
					return r;
			}
			continue;
		}
		if (b->gz_need_piece) {
			uint64_t end = gzip_piece_end(b);

			r = input_until(b, end, have == 0);
			if (r == -EAGAIN)
				break; /* hand over what we have before waiting */
			if (r < 0)
				return r;
			if (r == 0)
				end = b->in_base + b->in_len;
			if (end == b->in_base + b->in_pos)
				return -EBADMSG; /* the stream ends inside a member */
			b->gz_need_piece = false;
			st->next_in = b->in + b->in_pos;
			st->avail_in = (uint32_t)(end - (b->in_base + b->in_pos));
		}
		in_before = st->avail_in;
		out_before = (uint32_t)(OUT_SIZE - have);
		st->next_out = dst + have;
		st->avail_out = out_before;
		ir = isal_inflate(st);
		if (ir < 0)
			return -EBADMSG;
		n = out_before - st->avail_out;
		r = track_pending(b, b->in + b->in_pos, in_before - st->avail_in, dst + have, n,
		                  st->block_state == ISAL_BLOCK_FINISH);
		if (r < 0)
			return r;
		b->in_pos += in_before - st->avail_in;
		have += n;
		r = check_out(b, n);
		if (r < 0)
			return r;
		if (st->block_state == ISAL_BLOCK_FINISH) {
			/* trailer checked; what follows is the next member's header */
			st->avail_in = 0;
			b->gz_phase = GZ_HEADER;
			continue;
		}
		if (st->avail_in == 0 && st->avail_out > 0 &&
		    st->tmp_out_valid == st->tmp_out_processed) {
			r = gzip_piece_done(b, dst + have);
			if (r < 0)
				return r;
			b->gz_need_piece = true;
		} else if (n == 0 && st->avail_in == in_before && st->avail_out > 0) {
			return -EBADMSG; /* no progress with input and room: never loop */
		}
	}
	b->out_prev = have;
	*ret = dst;
	return (ssize_t)have;
}

static int flush_frame(struct li_builder *b)
{
	struct lix_point p = {.out_off = b->frame_start, .in_off = b->zst_size};
	size_t n;
	int r;

	if (b->frame_len == 0)
		return 0;
	n = ZSTD_compressCCtx(b->zc, b->frame_out, b->frame_out_cap, b->frame, b->frame_len,
	                      ZSTD_FRAME_LEVEL);
	if (ZSTD_isError(n))
		return -ENOMEM;
	r = write_full(b->data_fd, b->frame_out, n);
	if (r < 0)
		return r;
	p.window_len = (uint32_t)n;
	r = append_point(b, &p);
	if (r < 0)
		return r;
	b->zst_size += n;
	b->frame_start += b->frame_len;
	b->frame_len = 0;
	return 0;
}

/* Decodes the zstd layer and re-encodes the tar stream as independent frames of span bytes
 * (a zstd frame cannot be entered in the middle), written in order to data_fd. */
static ssize_t produce_zstd(struct li_builder *b, const void **ret)
{
	ZSTD_outBuffer ob = {.dst = b->out, .size = OUT_SIZE, .pos = 0};
	int r;

	while (ob.pos == 0) {
		ZSTD_inBuffer ib;
		size_t hint;

		if (b->in_pos == b->in_len) {
			r = input_more(b);
			if (r < 0)
				return r;
			if (r == 0) {
				if (b->zstd_pending || !b->zstd_seen)
					return -EBADMSG;
				return 0;
			}
		}
		b->zstd_seen = true;
		ib = (ZSTD_inBuffer){.src = b->in, .size = b->in_len, .pos = b->in_pos};
		hint = ZSTD_decompressStream(b->zd, &ob, &ib);
		if (ZSTD_isError(hint))
			return ZSTD_getErrorCode(hint) == ZSTD_error_memory_allocation ? -ENOMEM
			                                                               : -EBADMSG;
		b->in_pos = ib.pos;
		b->zstd_pending = hint;
	}
	r = check_out(b, ob.pos);
	if (r < 0)
		return r;
	for (size_t done = 0; done < ob.pos;) {
		size_t n = MIN(ob.pos - done, b->span - b->frame_len);

		memcpy(b->frame + b->frame_len, b->out + done, n);
		b->frame_len += n;
		done += n;
		if (b->frame_len == b->span) {
			r = flush_frame(b);
			if (r < 0)
				return r;
		}
	}
	*ret = b->out;
	return (ssize_t)ob.pos;
}

static ssize_t produce(struct li_builder *b, const void **ret)
{
	switch (b->comp) {
	case LI_GZIP:
		return produce_gzip(b, ret);
	case LI_ZSTD:
		return produce_zstd(b, ret);
	default:
		return produce_tar(b, ret);
	}
}

static la_ssize_t read_cb(struct archive *a, void *userdata, const void **ret)
{
	struct li_builder *b = userdata;
	ssize_t n = produce(b, ret);

	if (n < 0) {
		if (!b->err)
			b->err = (int)n;
		archive_set_error(a, EIO, "layer stream: %s", strerror((int)-n));
		return -1;
	}
	return n;
}

/* ---- entries ---- */

static int add_string(struct li_builder *b, const void *s, size_t len, uint32_t *ret)
{
	size_t at = b->strings.len;
	int r;

	if (at + len + 1 > UINT32_MAX)
		return -EFBIG;
	r = dynbuf_append(&b->strings, s, len);
	if (r < 0)
		return r;
	r = dynbuf_append(&b->strings, "", 1);
	if (r < 0)
		return r;
	*ret = (uint32_t)at;
	return 0;
}

/* Normalises a tar path into out (at least strlen(in) + 1 bytes): relative to the layer
 * root, without empty, "." or trailing components. Returns false when a component is "..":
 * such an entry would land outside the root when extracted naively, and no layer built by
 * a sane tool contains one, so it is dropped rather than cleaned lexically. */
static bool normalise_path(const char *in, char *out)
{
	size_t o = 0;

	while (*in) {
		const char *end = strchrnul(in, '/');
		size_t n = (size_t)(end - in);

		if (n == 2 && in[0] == '.' && in[1] == '.')
			return false;
		if (n > 0 && !(n == 1 && in[0] == '.')) {
			if (o > 0)
				out[o++] = '/';
			memcpy(out + o, in, n);
			o += n;
		}
		in = *end ? end + 1 : end;
	}
	out[o] = 0;
	return true;
}

static uint32_t clamp_id(la_int64_t id)
{
	/* Out-of-range ids cannot be chowned to; show them as the overflow id, as the kernel
	 * does for unmapped ids. */
	return id < 0 || id >= UINT32_MAX ? 65534u : (uint32_t)id;
}

static size_t meta_bytes(const struct li_builder *b)
{
	return b->strings.len + b->xattrs.len + b->segments.len + b->entries.len;
}

static struct lix_xattr *find_xattr(struct li_builder *b, const struct lix_entry *e,
                                    const char *name)
{
	struct lix_xattr *x;

	if (e->n_xattrs == 0)
		return NULL; /* the table may not be allocated yet */
	x = (struct lix_xattr *)b->xattrs.p + e->xattr_first;
	for (uint32_t k = 0; k < e->n_xattrs; k++)
		if (streq((const char *)b->strings.p + x[k].name, name))
			return &x[k];
	return NULL;
}

static int add_xattrs(struct li_builder *b, struct archive_entry *ae, struct lix_entry *e)
{
	struct lix_xattr *old;
	const char *name;
	const void *value;
	size_t size;
	int r;

	e->xattr_first = b->n_xattrs;
	archive_entry_xattr_reset(ae);
	while (archive_entry_xattr_next(ae, &name, &value, &size) == ARCHIVE_OK) {
		struct lix_xattr x = {0};

		if (!name || !*name || strlen(name) > 255 || size > 65536 || (!value && size))
			return -EBADMSG; /* the kernel's XATTR_NAME_MAX and XATTR_SIZE_MAX */
		r = add_string(b, value, size, &x.value);
		if (r < 0)
			return r;
		x.value_len = (uint32_t)size;
		/* libarchive's pax writer stores each xattr twice (LIBARCHIVE.xattr and
		 * SCHILY.xattr) and the reader returns both: one name, the last value. */
		old = find_xattr(b, e, name);
		if (old) {
			old->value = x.value;
			old->value_len = x.value_len;
			continue;
		}
		if (e->n_xattrs >= b->lim.max_xattrs || b->n_xattrs == UINT32_MAX)
			return -EFBIG;
		r = add_string(b, name, strlen(name), &x.name);
		if (r < 0)
			return r;
		r = dynbuf_append(&b->xattrs, &x, sizeof(x));
		if (r < 0)
			return r;
		b->n_xattrs++;
		e->n_xattrs++;
	}
	return 0;
}

static int add_segments(struct li_builder *b, struct archive_entry *ae, struct lix_entry *e)
{
	la_int64_t off, len;
	uint64_t end = 0, stored = 0;
	int r;

	e->seg_first = b->n_segments;
	if (archive_entry_sparse_reset(ae) == 0) {
		e->stored = e->size;
		return 0;
	}
	e->flags |= LIX_F_SPARSE;
	while (archive_entry_sparse_next(ae, &off, &len) == ARCHIVE_OK) {
		struct lix_segment s;

		if (off < 0 || len < 0 || (uint64_t)off < end || (uint64_t)len > e->size ||
		    (uint64_t)off > e->size - (uint64_t)len)
			return -EBADMSG;
		if (len == 0)
			continue;
		if (e->n_segments >= b->lim.max_segments || b->n_segments == UINT32_MAX)
			return -EFBIG;
		s = (struct lix_segment){
		    .file_off = (uint64_t)off, .len = (uint64_t)len, .stored_off = stored};
		r = dynbuf_append(&b->segments, &s, sizeof(s));
		if (r < 0)
			return r;
		b->n_segments++;
		e->n_segments++;
		end = (uint64_t)off + (uint64_t)len;
		stored += (uint64_t)len;
	}
	e->stored = stored;
	return 0;
}

static int add_entry(struct li_builder *b, struct archive_entry *ae, uint64_t data_off)
{
	struct lix_entry e = {.link = LIX_NONE, .data_off = data_off};
	const char *path, *hardlink, *symlink = NULL;
	int r;

	path = archive_entry_pathname(ae);
	if (!path)
		path = archive_entry_pathname_utf8(ae);
	if (!path)
		return -EBADMSG;
	if (strlen(path) > b->lim.max_path)
		return -EFBIG;
	if (!normalise_path(path, b->pathbuf))
		goto drop;

	hardlink = archive_entry_hardlink(ae);
	if (!hardlink)
		hardlink = archive_entry_hardlink_utf8(ae);
	if (hardlink) {
		if (strlen(hardlink) > b->lim.max_path)
			return -EFBIG;
		if (!normalise_path(hardlink, b->linkbuf) || !b->linkbuf[0])
			goto drop;
		e.type = LI_HARDLINK;
	} else {
		switch (archive_entry_filetype(ae)) {
		case AE_IFREG:
			e.type = LI_REG;
			break;
		case AE_IFDIR:
			e.type = LI_DIR;
			break;
		case AE_IFLNK:
			e.type = LI_SYMLINK;
			symlink = archive_entry_symlink(ae);
			if (!symlink)
				symlink = archive_entry_symlink_utf8(ae);
			if (!symlink || !*symlink)
				goto drop; /* the kernel refuses empty targets */
			if (strlen(symlink) > b->lim.max_path)
				return -EFBIG;
			break;
		case AE_IFCHR:
			e.type = LI_CHR;
			break;
		case AE_IFBLK:
			e.type = LI_BLK;
			break;
		case AE_IFIFO:
			e.type = LI_FIFO;
			break;
		default:
			goto drop; /* sockets and unknown types cannot be extracted either */
		}
	}
	if (!b->pathbuf[0] && e.type != LI_DIR)
		goto drop; /* only a directory can describe the root */
	if (b->n_entries >= b->lim.max_entries)
		return -EFBIG;

	e.mode = (uint32_t)archive_entry_perm(ae) & 07777;
	e.uid = clamp_id(archive_entry_uid(ae));
	e.gid = clamp_id(archive_entry_gid(ae));
	if (archive_entry_mtime_is_set(ae)) {
		e.mtime_sec = archive_entry_mtime(ae);
		e.mtime_nsec = (uint32_t)MIN(MAX(archive_entry_mtime_nsec(ae), 0L), 999999999L);
	}
	if (e.type == LI_CHR || e.type == LI_BLK) {
		e.rdev_major = (uint32_t)archive_entry_rdevmajor(ae);
		e.rdev_minor = (uint32_t)archive_entry_rdevminor(ae);
	}
	r = add_string(b, b->pathbuf, strlen(b->pathbuf), &e.path);
	if (r < 0)
		return r;
	if (hardlink)
		r = add_string(b, b->linkbuf, strlen(b->linkbuf), &e.link);
	else if (symlink)
		r = add_string(b, symlink, strlen(symlink), &e.link);
	if (r < 0)
		return r;
	r = add_xattrs(b, ae, &e);
	if (r < 0)
		return r;
	if (e.type == LI_REG) {
		la_int64_t size = archive_entry_size_is_set(ae) ? archive_entry_size(ae) : 0;

		if (size < 0)
			return -EBADMSG;
		e.size = (uint64_t)size;
		r = add_segments(b, ae, &e);
		if (r < 0)
			return r;
	}
	r = dynbuf_append(&b->entries, &e, sizeof(e));
	if (r < 0)
		return r;
	b->n_entries++;
	if (meta_bytes(b) > b->lim.max_meta)
		return -EFBIG;
	return 0;
drop:
	b->dropped++;
	return 0;
}

/* ---- the worker ---- */

static int detect(struct li_builder *b)
{
	static const uint8_t zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
	const uint8_t *p;
	int r;

	while (b->in_len < 4) {
		r = input_more(b);
		if (r < 0)
			return r;
		if (r == 0)
			break;
	}
	p = b->in;
	if (b->in_len >= 2 && p[0] == 0x1f && p[1] == 0x8b)
		b->comp = LI_GZIP;
	else if (b->in_len >= 4 && (memcmp(p, zstd_magic, 4) == 0 ||
	                            ((p[0] & 0xf0) == 0x50 && p[1] == 0x2a && p[2] == 0x4d &&
	                             p[3] == 0x18))) /* a skippable frame first */
		b->comp = LI_ZSTD;
	else
		b->comp = LI_TAR;
	return 0;
}

static int setup_zstd(struct li_builder *b)
{
	if (b->data_fd < 0)
		return -EINVAL;
	b->zd = ZSTD_createDCtx();
	b->zc = ZSTD_createCCtx();
	b->frame = malloc(b->span);
	b->frame_out_cap = ZSTD_compressBound(b->span);
	b->frame_out = malloc(b->frame_out_cap);
	if (!b->zd || !b->zc || !b->frame || !b->frame_out)
		return -ENOMEM;
	return 0;
}

static int parse(struct li_builder *b)
{
	struct archive *a = archive_read_new();
	struct archive_entry *ae;
	int r = 0, ar;

	if (!a)
		return -ENOMEM;
	archive_read_support_format_tar(a);
	ar = archive_read_open(a, b, NULL, read_cb, NULL);
	while (ar == ARCHIVE_OK) {
		ar = archive_read_next_header(a, &ae);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
			break; /* ARCHIVE_RETRY is a damaged header: not retried */
		/* With no filter, the client stream position right after the header is where
		 * the entry's data (after the in-data map of a pax 1.0 sparse file) begins. */
		r = add_entry(b, ae, (uint64_t)archive_filter_bytes(a, 0));
		if (r < 0)
			break;
		ar = ARCHIVE_OK;
	}
	if (r == 0 && ar != ARCHIVE_EOF && ar != ARCHIVE_OK) {
		if (b->err)
			r = b->err;
		else if (b->total_out == 0)
			r = 0; /* an empty stream is an empty layer */
		else
			r = -EBADMSG;
	}
	archive_read_free(a);
	return r;
}

static int run(struct li_builder *b)
{
	const void *p;
	ssize_t n;
	int r;

	if (b->comp == LI_AUTO) {
		r = detect(b);
		if (r < 0)
			return r;
	}
	if (b->default_span)
		b->span = b->comp == LI_GZIP ? LI_GZIP_SPAN : LI_DEFAULT_SPAN;
	if (b->comp == LI_ZSTD) {
		r = setup_zstd(b);
		if (r < 0)
			return r;
	}
	r = parse(b);
	if (r < 0)
		return r;
	/* libarchive stops at the end-of-archive blocks; the rest of the stream must still
	 * decompress cleanly (checksums, truncation) and counts against the limits. */
	while ((n = produce(b, &p)) > 0)
		;
	if (n < 0)
		return (int)n;
	if (b->n_pend > 0) {
		r = finish_pending(b, true); /* the last member's end stored them already */
		if (r < 0)
			return r;
	}
	if (b->comp == LI_ZSTD)
		return flush_frame(b);
	return 0;
}

static void *worker(void *userdata)
{
	struct li_builder *b = userdata;
	int r = run(b);

	pthread_mutex_lock(&b->lock);
	b->worker_done = true;
	b->worker_err = r;
	pthread_cond_broadcast(&b->can_put);
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

/* ---- API ---- */

int li_builder_new(enum li_compression comp, uint32_t span, int data_fd, struct li_builder **ret)
{
	_cleanup_(li_builder_freep) struct li_builder *b = NULL;
	bool default_span = span == 0;
	int r;

	if (span == 0)
		span = comp == LI_GZIP ? LI_GZIP_SPAN : LI_DEFAULT_SPAN;
	if (span < MIN_SPAN || span > MAX_SPAN || comp > LI_ZSTD)
		return -EINVAL;
	if (comp == LI_ZSTD && data_fd < 0)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->comp = comp;
	b->span = span;
	b->default_span = default_span;
	b->data_fd = data_fd;
	li_limits_default(&b->lim);
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->can_put, NULL);
	pthread_cond_init(&b->can_get, NULL);
	b->ring = malloc(RING_SIZE);
	b->in = malloc(IN_SIZE);
	b->out = malloc(WINDOW_SIZE + OUT_SIZE); /* history for gzip windows, then output */
	b->pathbuf = malloc(2 * (size_t)b->lim.max_path + 2);
	b->linkbuf = malloc(2 * (size_t)b->lim.max_path + 2);
	if (!b->ring || !b->in || !b->out || !b->pathbuf || !b->linkbuf)
		return -ENOMEM;
	r = -pthread_create(&b->thread, NULL, worker, b);
	if (r < 0)
		return r;
	b->thread_running = true;
	*ret = TAKE_PTR(b);
	return 0;
}

int li_builder_set_limits(struct li_builder *b, const struct li_limits *lim)
{
	char *p, *l;

	if (b->fed || lim->max_path == 0 || lim->max_path > (1u << 20) || lim->max_meta == 0 ||
	    lim->max_meta >= UINT32_MAX)
		return -EINVAL;
	if (lim->max_path > b->lim.max_path) {
		/* The worker touches pathbuf only once data arrives, and none has yet. */
		p = realloc(b->pathbuf, 2 * (size_t)lim->max_path + 2);
		if (!p)
			return -ENOMEM;
		b->pathbuf = p;
		l = realloc(b->linkbuf, 2 * (size_t)lim->max_path + 2);
		if (!l)
			return -ENOMEM;
		b->linkbuf = l;
	}
	b->lim = *lim;
	return 0;
}

int li_builder_feed(struct li_builder *b, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (b->finished || !b->thread_running)
		return -EINVAL;
	b->fed = true;
	while (len > 0) {
		size_t tail, n, first;

		pthread_mutex_lock(&b->lock);
		while (b->ring_len == RING_SIZE && !b->worker_done)
			pthread_cond_wait(&b->can_put, &b->lock);
		if (b->worker_done) {
			/* The worker stops early only on an error. */
			int r = b->worker_err < 0 ? b->worker_err : -EBADMSG;

			pthread_mutex_unlock(&b->lock);
			return r;
		}
		tail = (b->ring_head + b->ring_len) % RING_SIZE;
		n = MIN(len, RING_SIZE - b->ring_len);
		first = MIN(n, RING_SIZE - tail);
		memcpy(b->ring + tail, p, first);
		memcpy(b->ring, p + first, n - first);
		b->ring_len += n;
		pthread_cond_signal(&b->can_get);
		pthread_mutex_unlock(&b->lock);
		p += n;
		len -= n;
	}
	return 0;
}

static size_t align8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static int serialise(struct li_builder *b, const char *digest, void **ret_buf, size_t *ret_len)
{
	struct lix_header h = {
	    .magic = LIX_MAGIC,
	    .version = LIX_VERSION,
	    .header_size = sizeof(struct lix_header),
	    .compression = b->comp,
	    .span = b->span,
	    .dropped = b->dropped,
	    .total_in = b->in_base + b->in_len,
	    .total_out = b->total_out,
	    .zst_size = b->zst_size,
	    .n_entries = b->n_entries,
	    .n_xattrs = b->n_xattrs,
	    .n_segments = b->n_segments,
	    .n_points = b->n_points,
	    .windows_len = b->windows.len,
	    .strings_len = b->strings.len,
	};
	size_t off = align8(sizeof(h));
	uint8_t *buf;

	if (strlen(digest) >= sizeof(h.digest))
		return -EINVAL;
	strncpy(h.digest, digest, sizeof(h.digest));
	h.entries_off = off;
	off = align8(off + b->entries.len);
	h.xattrs_off = off;
	off = align8(off + b->xattrs.len);
	h.segments_off = off;
	off = align8(off + b->segments.len);
	h.points_off = off;
	off = align8(off + b->points.len);
	h.windows_off = off;
	off = align8(off + b->windows.len);
	h.strings_off = off;
	off = align8(off + b->strings.len);
	h.file_size = off;

	buf = calloc(1, off);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	if (b->entries.len)
		memcpy(buf + h.entries_off, b->entries.p, b->entries.len);
	if (b->xattrs.len)
		memcpy(buf + h.xattrs_off, b->xattrs.p, b->xattrs.len);
	if (b->segments.len)
		memcpy(buf + h.segments_off, b->segments.p, b->segments.len);
	if (b->points.len)
		memcpy(buf + h.points_off, b->points.p, b->points.len);
	if (b->windows.len)
		memcpy(buf + h.windows_off, b->windows.p, b->windows.len);
	if (b->strings.len)
		memcpy(buf + h.strings_off, b->strings.p, b->strings.len);
	h.crc = (uint32_t)crc32_z(0, buf, off); /* over the file with crc still 0 */
	memcpy(buf + offsetof(struct lix_header, crc), &h.crc, sizeof(h.crc));
	*ret_buf = buf;
	*ret_len = off;
	return 0;
}

static void stop_worker(struct li_builder *b, bool cancel)
{
	if (!b->thread_running)
		return;
	pthread_mutex_lock(&b->lock);
	b->eof = true;
	b->cancel = cancel;
	pthread_cond_broadcast(&b->can_get);
	pthread_mutex_unlock(&b->lock);
	pthread_join(b->thread, NULL);
	b->thread_running = false;
}

int li_builder_finish(struct li_builder *b, const char *layer_digest, void **ret_buf,
                      size_t *ret_len)
{
	const struct lix_entry *e;
	int r;

	if (b->finished || !b->thread_running)
		return -EINVAL;
	b->finished = true;
	stop_worker(b, false);
	r = b->worker_err;
	if (r < 0)
		return r;
	/* libarchive checked that every entry's data was there; this guards the format. */
	e = (const struct lix_entry *)b->entries.p;
	for (uint32_t i = 0; i < b->n_entries; i++)
		if (e[i].data_off > b->total_out || e[i].stored > b->total_out - e[i].data_off)
			return -EBADMSG;
	return serialise(b, layer_digest ? layer_digest : "", ret_buf, ret_len);
}

int li_builder_stats(const struct li_builder *b, struct li_build_stats *ret)
{
	if (!b->finished || b->thread_running || b->worker_err < 0)
		return -EINVAL;
	*ret = (struct li_build_stats){
	    .points = b->n_points,
	    .windows_whole = b->sparse_kept,
	    .window_bytes = b->windows.len,
	    .entry_bytes = b->entries.len + b->xattrs.len + b->segments.len,
	    .string_bytes = b->strings.len,
	};
	return 0;
}

void li_builder_free(struct li_builder *b)
{
	if (!b)
		return;
	stop_worker(b, true);
	free(b->isal);
	free(b->deflate_buf);
	dynbuf_free(&b->zin);
	dynbuf_free(&b->zout);
	free(b->used);
	free(b->sparse);
	free(b->check);
	free(b->check_out);
	ZSTD_freeDCtx(b->zd);
	ZSTD_freeCCtx(b->zc);
	free(b->frame);
	free(b->frame_out);
	dynbuf_free(&b->entries);
	dynbuf_free(&b->xattrs);
	dynbuf_free(&b->segments);
	dynbuf_free(&b->points);
	dynbuf_free(&b->windows);
	dynbuf_free(&b->strings);
	free(b->ring);
	free(b->in);
	free(b->out);
	free(b->pathbuf);
	free(b->linkbuf);
	pthread_cond_destroy(&b->can_put);
	pthread_cond_destroy(&b->can_get);
	pthread_mutex_destroy(&b->lock);
	free(b);
}
