/* The gzip half of the layer index builder: inflates a gzip layer with ISA-L, cut in
 * pieces that depend only on the stream, and records an access point (a checkpoint: bit
 * offset, uncompressed offset, window) at a deflate block boundary every span bytes. Each
 * window is stored sparse, only the bytes the data after the point can copy, once that data
 * has been seen and the sparse window proven by inflating from the point with it. The
 * builder's state and the calls into layerindex.c are in layerindex_build.h. */
#include <isa-l/igzip_lib.h>
#include <stdint.h>
#include <zlib.h>
#include "fsd/index/deflate_refs.h"
#include "fsd/index/layerindex_build.h"

#define WINDOW_CBOUND (WINDOW_SIZE + 1024u) /* room for a compressed window (stored blocks) */
#define GZ_STEP (64u << 10) /* at most this much compressed input per inflate call */
#define GZ_HUNT_STEP 64u    /* the same while looking for a block boundary */
/* Sparse windows (docs/decisions/0017-sparse-windows-and-gzip-span.md): a window is
 * compressed once the output reaches SPARSE_NEED bytes past its point, every byte the deflate
 * data after the point cannot copy zeroed. At most SPARSE_IN compressed bytes after a point
 * are searched for that (more only in a hostile stream: the window is then kept whole). */
#define SPARSE_NEED (WINDOW_SIZE + DREF_MAX_MATCH)
#define SPARSE_IN (128u << 10)
#define SPARSE_RECENT 1024u /* compressed bytes kept before a point, for its block header */

_Static_assert(MAX_PENDING >= SPARSE_NEED / MIN_SPAN + 1, "points waiting for their window");

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

/* Compresses window (wlen bytes) into the windows section for point k. */
static int store_window(struct li_builder *b, uint32_t k, const uint8_t *window, size_t wlen)
{
	struct lix_point *p;
	size_t at = b->windows.len, clen;
	int r;

	r = lb_dynbuf_append(&b->windows, NULL, WINDOW_CBOUND);
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
	r = lb_dynbuf_append(&b->zin, in, in_len);
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
	r = lb_dynbuf_append(&b->zout, out, (size_t)MIN((uint64_t)out_len, need - MIN(need, end)));
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
	r = lb_append_point(b, &p);
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
		r = lb_dynbuf_append(&b->zout, window, wlen);
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
ssize_t lb_gzip_produce(struct li_builder *b, const void **ret)
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
				r = lb_input_more(b);
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

			r = lb_input_until(b, end, have == 0);
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
		r = lb_check_out(b, n);
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

int lb_gzip_finish(struct li_builder *b)
{
	if (b->n_pend == 0)
		return 0;
	return finish_pending(b, true); /* the last member's end stored them already */
}
