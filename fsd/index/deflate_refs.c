/* Raw deflate decoder that marks the history bytes a stream copies (see deflate_refs.h).
 *
 * Huffman codes are decoded with a table indexed by the next FAST_BITS bits; longer codes
 * (rare: lengths 10-15) fall back to the canonical walk over the code length counts, which
 * also rejects the unused patterns of an incomplete code. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "common/macros.h"
#include "fsd/index/deflate_refs.h"

#define MAX_BITS 15
#define FAST_BITS 10
#define MAX_LIT 288
#define MAX_DIST 32
#define MAX_HIST 32768u

struct bitreader {
	const uint8_t *in;
	size_t len, pos;
	uint64_t buf; /* the next cnt bits, least significant first */
	unsigned cnt;
};

struct huff {
	uint16_t fast[1u << FAST_BITS]; /* symbol << 4 | length; 0: longer code or none */
	uint16_t count[MAX_BITS + 1];   /* codes of each length */
	uint16_t sym[MAX_LIT];          /* symbols in canonical order */
	unsigned max;                   /* longest code length, 0: no codes */
};

struct decoder {
	struct bitreader br;
	const uint8_t *hist;
	size_t hist_len;
	uint8_t *out;
	size_t out_pos, max_out;
	uint8_t *used;
	struct huff lit, dist;
};

static const uint16_t len_base[29] = {3,  4,  5,  6,   7,   8,   9,   10,  11, 13,
                                      15, 17, 19, 23,  27,  31,  35,  43,  51, 59,
                                      67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {
    1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
    193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
static const uint8_t clen_order[19] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                       11, 4,  12, 3, 13, 2, 14, 1, 15};

static void refill(struct bitreader *br)
{
	while (br->cnt <= 56 && br->pos < br->len) {
		br->buf |= (uint64_t)br->in[br->pos++] << br->cnt;
		br->cnt += 8;
	}
}

/* Reads n (0-16) bits into *v. -ENOBUFS when the input ends first. */
static int getbits(struct bitreader *br, unsigned n, unsigned *v)
{
	if (br->cnt < n) {
		refill(br);
		if (br->cnt < n)
			return -ENOBUFS;
	}
	*v = (unsigned)(br->buf & ((1ull << n) - 1));
	br->buf >>= n;
	br->cnt -= n;
	return 0;
}

/* Builds the decoding tables for n code lengths. As zlib: an over-subscribed set is
 * invalid; an incomplete one is valid only as a single code of length one, and never for
 * the code length code (codes); a set without codes is valid until a symbol is decoded. */
static int huff_build(struct huff *h, const uint8_t *lens, unsigned n, bool codes)
{
	uint16_t offs[MAX_BITS + 2], next[MAX_BITS + 1];
	unsigned max = 0;
	int left = 1;

	memset(h->count, 0, sizeof(h->count));
	memset(h->fast, 0, sizeof(h->fast));
	for (unsigned s = 0; s < n; s++)
		h->count[lens[s]]++;
	for (unsigned l = 1; l <= MAX_BITS; l++)
		if (h->count[l])
			max = l;
	h->count[0] = 0;
	h->max = max;
	if (max == 0)
		return codes ? -EBADMSG : 0;
	for (unsigned l = 1; l <= MAX_BITS; l++) {
		left = (left << 1) - h->count[l];
		if (left < 0)
			return -EBADMSG; /* over-subscribed */
	}
	if (left > 0 && (codes || max != 1))
		return -EBADMSG; /* incomplete */
	offs[1] = 0;
	for (unsigned l = 1; l <= MAX_BITS; l++)
		offs[l + 1] = (uint16_t)(offs[l] + h->count[l]);
	next[0] = 0;
	for (unsigned l = 1, code = 0; l <= MAX_BITS; l++) {
		code = (code + h->count[l - 1]) << 1;
		next[l] = (uint16_t)code;
	}
	for (unsigned s = 0; s < n; s++) {
		unsigned l = lens[s], code, rev = 0;

		if (l == 0)
			continue;
		h->sym[offs[l]++] = (uint16_t)s;
		code = next[l]++;
		if (l > FAST_BITS)
			continue;
		for (unsigned k = 0; k < l; k++)
			rev |= ((code >> k) & 1u) << (l - 1 - k);
		for (unsigned k = rev; k < (1u << FAST_BITS); k += 1u << l)
			h->fast[k] = (uint16_t)(s << 4 | l);
	}
	return 0;
}

/* Decodes one symbol: >= 0, or -EBADMSG (no such code), -ENOBUFS. */
static int huff_decode(struct bitreader *br, const struct huff *h)
{
	unsigned e, code = 0, first = 0, index = 0;

	if (br->cnt < MAX_BITS)
		refill(br);
	e = h->fast[br->buf & ((1u << FAST_BITS) - 1)];
	if (e) {
		unsigned l = e & 15;

		if (l > br->cnt)
			return -ENOBUFS;
		br->buf >>= l;
		br->cnt -= l;
		return (int)(e >> 4);
	}
	for (unsigned l = 1; l <= h->max; l++) {
		unsigned count = h->count[l];

		if (l > br->cnt)
			return -ENOBUFS;
		code |= (unsigned)(br->buf >> (l - 1)) & 1u;
		if (code - first < count) {
			br->buf >>= l;
			br->cnt -= l;
			return h->sym[index + code - first];
		}
		index += count;
		first = (first + count) << 1;
		code <<= 1;
	}
	return -EBADMSG;
}

static int stored(struct decoder *d)
{
	struct bitreader *br = &d->br;
	unsigned len, nlen;
	size_t n, want;
	int r;

	br->buf >>= br->cnt % 8; /* to the byte boundary */
	br->cnt -= br->cnt % 8;
	r = getbits(br, 16, &len);
	if (r == 0)
		r = getbits(br, 16, &nlen);
	if (r < 0)
		return r;
	if (len != (~nlen & 0xffffu))
		return -EBADMSG;
	/* hand the whole bytes still buffered back to the input */
	br->pos -= br->cnt / 8;
	br->buf = 0;
	br->cnt = 0;
	want = MIN((size_t)len, d->max_out - d->out_pos);
	n = MIN(want, br->len - br->pos);
	if (d->out)
		memcpy(d->out + d->out_pos, br->in + br->pos, n);
	br->pos += n;
	d->out_pos += n;
	return n < want ? -ENOBUFS : 0;
}

/* One match of len bytes from dist back: marks the history bytes it reads and copies. */
static void match(struct decoder *d, unsigned len, unsigned dist)
{
	size_t from_hist = 0;

	if (dist > d->out_pos) {
		size_t s = d->hist_len - (dist - d->out_pos);

		from_hist = MIN((size_t)len, dist - d->out_pos);
		if (d->used)
			memset(d->used + s, 1, from_hist);
		if (d->out)
			memcpy(d->out + d->out_pos, d->hist + s, from_hist);
	}
	if (d->out) {
		uint8_t *o = d->out + d->out_pos;

		/* byte by byte: the source may overlap what is being written */
		for (size_t k = from_hist; k < len; k++)
			o[k] = o[(ptrdiff_t)k - (ptrdiff_t)dist];
	}
	d->out_pos += len;
}

static int codes(struct decoder *d)
{
	struct bitreader *br = &d->br;

	while (d->out_pos < d->max_out) {
		unsigned extra, len, dist;
		int sym = huff_decode(br, &d->lit), r;

		if (sym < 0)
			return sym;
		if (sym < 256) {
			if (d->out)
				d->out[d->out_pos] = (uint8_t)sym;
			d->out_pos++;
			continue;
		}
		if (sym == 256)
			return 1;
		sym -= 257;
		if (sym >= 29)
			return -EBADMSG; /* 286, 287: only the fixed code has them */
		r = getbits(br, len_extra[sym], &extra);
		if (r < 0)
			return r;
		len = len_base[sym] + extra;
		sym = huff_decode(br, &d->dist);
		if (sym < 0)
			return sym;
		if (sym >= 30)
			return -EBADMSG;
		r = getbits(br, dist_extra[sym], &extra);
		if (r < 0)
			return r;
		dist = dist_base[sym] + extra;
		if (dist > d->out_pos + d->hist_len)
			return -EBADMSG; /* before the history */
		match(d, len, dist);
	}
	return 0;
}

static int fixed(struct decoder *d)
{
	uint8_t lens[MAX_LIT];
	int r;

	for (unsigned s = 0; s < MAX_LIT; s++)
		lens[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
	r = huff_build(&d->lit, lens, MAX_LIT, false);
	if (r < 0)
		return r;
	memset(lens, 5, MAX_DIST); /* 30 and 31 are invalid once decoded */
	return huff_build(&d->dist, lens, MAX_DIST, false);
}

static int dynamic(struct decoder *d)
{
	struct bitreader *br = &d->br;
	uint8_t lens[MAX_LIT + MAX_DIST] = {0};
	unsigned nlen, ndist, ncode, v;
	int r;

	r = getbits(br, 5, &nlen);
	if (r == 0)
		r = getbits(br, 5, &ndist);
	if (r == 0)
		r = getbits(br, 4, &ncode);
	if (r < 0)
		return r;
	nlen += 257;
	ndist += 1;
	ncode += 4;
	if (nlen > 286 || ndist > 30)
		return -EBADMSG;
	for (unsigned k = 0; k < ncode; k++) {
		r = getbits(br, 3, &v);
		if (r < 0)
			return r;
		lens[clen_order[k]] = (uint8_t)v;
	}
	r = huff_build(&d->lit, lens, 19, true);
	if (r < 0)
		return r;
	for (unsigned k = 0; k < nlen + ndist;) {
		unsigned rep, val = 0;
		int sym = huff_decode(br, &d->lit);

		if (sym < 0)
			return sym;
		if (sym < 16) {
			lens[k++] = (uint8_t)sym;
			continue;
		}
		if (sym == 16) {
			if (k == 0)
				return -EBADMSG;
			val = lens[k - 1];
			r = getbits(br, 2, &rep);
			rep += 3;
		} else if (sym == 17) {
			r = getbits(br, 3, &rep);
			rep += 3;
		} else {
			r = getbits(br, 7, &rep);
			rep += 11;
		}
		if (r < 0)
			return r;
		if (rep > nlen + ndist - k)
			return -EBADMSG;
		memset(lens + k, (int)val, rep);
		k += rep;
	}
	if (lens[256] == 0)
		return -EBADMSG; /* no end-of-block code */
	r = huff_build(&d->lit, lens, nlen, false);
	if (r < 0)
		return r;
	return huff_build(&d->dist, lens + nlen, ndist, false);
}

int dref_decode(const uint8_t *in, size_t in_len, unsigned first_bit, const uint8_t *hist,
                size_t hist_len, uint8_t *out, size_t max_out, uint8_t *used, struct dref *res)
{
	struct decoder *d;
	unsigned v;
	int r = 0;

	*res = (struct dref){0};
	if (first_bit > 7 || hist_len > MAX_HIST || (out && hist_len && !hist))
		return -EINVAL;
	d = malloc(sizeof(*d));
	if (!d)
		return -ENOMEM;
	*d = (struct decoder){
	    .br = {.in = in, .len = in_len},
	    .hist = hist,
	    .hist_len = hist_len,
	    .out = out,
	    .max_out = max_out,
	    .used = used,
	};
	r = getbits(&d->br, first_bit, &v);
	while (r == 0 && d->out_pos < max_out) {
		unsigned last, type;

		r = getbits(&d->br, 1, &last);
		if (r == 0)
			r = getbits(&d->br, 2, &type);
		if (r < 0)
			break;
		if (type == 0) {
			r = stored(d);
			if (r < 0 || d->out_pos >= max_out)
				break; /* a stored block may be cut at max_out */
		} else {
			r = type == 1 ? fixed(d) : type == 2 ? dynamic(d) : -EBADMSG;
			if (r == 0)
				r = codes(d);
			if (r <= 0)
				break; /* error, or max_out reached inside the block */
			r = 0;
		}
		if (last) {
			res->final = true;
			break;
		}
	}
	res->out_len = d->out_pos;
	res->in_bits = d->br.pos * 8 - d->br.cnt;
	free(d);
	return r;
}
