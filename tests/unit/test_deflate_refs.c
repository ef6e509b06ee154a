/* The deflate reference decoder: hand-written fixed-code streams with known matches (which
 * history bytes they mark, overlapping and chained copies, the max_out cut), zlib's own
 * streams at every level and strategy with preset dictionaries and bit offsets (output
 * equal to the input, unmarked history bytes irrelevant), and invalid or truncated data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <zlib.h>
#include "common/macros.h"
#include "fsd/index/deflate_refs.h"

/* ---- a bit writer for fixed-code streams ---- */

struct bw {
	uint8_t p[4096];
	size_t len;
	uint64_t acc;
	unsigned n;
};

static void put(struct bw *w, uint32_t v, unsigned bits)
{
	w->acc |= (uint64_t)v << w->n;
	w->n += bits;
	while (w->n >= 8) {
		assert_true(w->len < sizeof(w->p));
		w->p[w->len++] = (uint8_t)w->acc;
		w->acc >>= 8;
		w->n -= 8;
	}
}

static void flush(struct bw *w)
{
	if (w->n)
		put(w, 0, 8 - w->n);
}

/* Huffman codes go most significant bit first. */
static void put_code(struct bw *w, uint32_t code, unsigned bits)
{
	for (unsigned k = bits; k-- > 0;)
		put(w, (code >> k) & 1, 1);
}

static void put_fixed_sym(struct bw *w, unsigned s)
{
	if (s < 144)
		put_code(w, 0x30 + s, 8);
	else if (s < 256)
		put_code(w, 0x190 + s - 144, 9);
	else if (s < 280)
		put_code(w, s - 256, 7);
	else
		put_code(w, 0xc0 + s - 280, 8);
}

static const uint16_t lbase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                   31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t lextra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                   2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dbase[30] = {1,    2,    3,    4,    5,    7,    9,    13,    17,    25,
                                   33,   49,   65,   97,   129,  193,  257,  385,   513,   769,
                                   1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dextra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                   6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static void put_match(struct bw *w, unsigned len, unsigned dist)
{
	unsigned l = 28, d = 29;

	while (lbase[l] > len)
		l--;
	if (len == 258)
		l = 28;
	else if (l == 28)
		l = 27; /* 258 has its own code: 227 + 31 uses code 284 */
	put_fixed_sym(w, 257 + l);
	put(w, len - lbase[l], lextra[l]);
	while (dbase[d] > dist)
		d--;
	put_code(w, d, 5);
	put(w, dist - dbase[d], dextra[d]);
}

/* What a stream of literals and matches decodes to, byte by byte, for comparison. */
struct ref {
	uint8_t all[70000]; /* history, then output */
	size_t hist_len, len;
};

static void ref_lit(struct ref *r, uint8_t c)
{
	r->all[r->len++] = c;
}

static void ref_match(struct ref *r, unsigned len, unsigned dist)
{
	for (unsigned k = 0; k < len; k++, r->len++)
		r->all[r->len] = r->all[r->len - dist];
}

static void lit(struct bw *w, struct ref *r, uint8_t c)
{
	put_fixed_sym(w, c);
	ref_lit(r, c);
}

static void match(struct bw *w, struct ref *r, unsigned len, unsigned dist)
{
	put_match(w, len, dist);
	ref_match(r, len, dist);
}

static void start_fixed(struct bw *w, bool last)
{
	put(w, last, 1);
	put(w, 1, 2);
}

/* ---- tests ---- */

static void expect_used(const uint8_t *used, size_t n, const size_t *want, size_t n_want)
{
	size_t count = 0;

	for (size_t i = 0; i < n; i++)
		count += used[i];
	assert_int_equal(count, n_want);
	for (size_t k = 0; k < n_want; k++)
		assert_int_equal(used[want[k]], 1);
}

/* Direct, overlapping (distance < length), chained and in-output matches. */
static void test_marks(void **state)
{
	static struct ref r;
	static uint8_t out[600];
	uint8_t hist[100], used[100] = {0};
	static const size_t want[] = {0, 1, 2, 98, 99};
	struct bw w = {0};
	struct dref d;

	(void)state;
	r.hist_len = r.len = sizeof(hist);
	for (size_t i = 0; i < sizeof(hist); i++)
		r.all[i] = hist[i] = (uint8_t)(i + 1);
	start_fixed(&w, true);
	match(&w, &r, 3, 100); /* out 0-2 = hist 0-2 */
	lit(&w, &r, 'x');      /* out 3 */
	match(&w, &r, 10, 6);  /* out 4: hist 98, 99, then its own output (overlap) */
	match(&w, &r, 5, 14);  /* out 14: a copy of out 0-4, itself a copy: marks nothing */
	match(&w, &r, 258, 1); /* out 19: a run of its last byte */
	put_fixed_sym(&w, 256);
	flush(&w);

	assert_int_equal(dref_decode(w.p, w.len, 0, hist, sizeof(hist), out, 500, used, &d), 0);
	assert_true(d.final);
	assert_int_equal(d.out_len, r.len - r.hist_len);
	assert_memory_equal(out, r.all + r.hist_len, d.out_len);
	assert_int_equal((d.in_bits + 7) / 8, w.len);
	expect_used(used, sizeof(hist), want, ARRAY_SIZE(want));

	/* the same marks without output */
	memset(used, 0, sizeof(used));
	assert_int_equal(dref_decode(w.p, w.len, 0, NULL, sizeof(hist), NULL, 500, used, &d), 0);
	assert_int_equal(d.out_len, r.len - r.hist_len);
	expect_used(used, sizeof(hist), want, ARRAY_SIZE(want));

	/* zlib agrees on the output */
	{
		z_stream z = {0};
		uint8_t zout[600];

		assert_int_equal(inflateInit2(&z, -15), Z_OK);
		assert_int_equal(inflateSetDictionary(&z, hist, sizeof(hist)), Z_OK);
		z.next_in = w.p;
		z.avail_in = (uInt)w.len;
		z.next_out = zout;
		z.avail_out = sizeof(zout);
		assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
		assert_int_equal(z.total_out, d.out_len);
		assert_memory_equal(zout, out, d.out_len);
		inflateEnd(&z);
	}
}

/* Matches starting before max_out count (and may end past it), later ones do not; the
 * longest distance reaches the first byte of a 32 KiB history. */
static void test_max_out(void **state)
{
	static struct ref r;
	static uint8_t hist[32768], used[32768], out[1200];
	static const size_t want[] = {0, 1, 2, 3, 32760, 32761, 32762};
	struct bw w = {0};
	struct dref d;

	(void)state;
	r.hist_len = r.len = sizeof(hist);
	for (size_t i = 0; i < sizeof(hist); i++)
		r.all[i] = hist[i] = (uint8_t)(i * 7);
	start_fixed(&w, true);
	match(&w, &r, 4, 32768); /* out 0: hist 0-3 */
	for (int k = 0; k < 36; k++)
		lit(&w, &r, (uint8_t)k);
	match(&w, &r, 3, 48);    /* out 40: hist 32760-32762 */
	match(&w, &r, 20, 30);   /* out 43: from the output */
	match(&w, &r, 3, 32768); /* out 63: hist 63-65, past max_out below */
	put_fixed_sym(&w, 256);
	flush(&w);

	memset(used, 0, sizeof(used));
	assert_int_equal(dref_decode(w.p, w.len, 0, hist, sizeof(hist), out, 41, used, &d), 0);
	assert_false(d.final);
	assert_int_equal(d.out_len, 43);
	assert_memory_equal(out, r.all + r.hist_len, 43);
	expect_used(used, sizeof(hist), want, ARRAY_SIZE(want));
	memset(used, 0, sizeof(used));
	assert_int_equal(dref_decode(w.p, w.len, 0, hist, sizeof(hist), out, 44, used, &d), 0);
	assert_int_equal(d.out_len, 63);
	expect_used(used, sizeof(hist), want, ARRAY_SIZE(want));
	memset(used, 0, sizeof(used));
	assert_int_equal(dref_decode(w.p, w.len, 0, hist, sizeof(hist), out, 900, used, &d), 0);
	assert_true(d.final);
	assert_int_equal(d.out_len, 66);
	assert_memory_equal(out, r.all + r.hist_len, 66);
	assert_int_equal(used[62] + used[63] + used[64] + used[65] + used[66], 3);
	assert_int_equal(used[4], 0);
	/* max_out 0 decodes nothing */
	assert_int_equal(dref_decode(w.p, w.len, 0, hist, sizeof(hist), out, 0, NULL, &d), 0);
	assert_int_equal(d.out_len, 0);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* zlib's streams of text, runs and random bytes, every level and strategy, after a preset
 * dictionary and starting at every bit offset. */
static void test_zlib_streams(void **state)
{
	static const int levels[] = {0, 1, 6, 9};
	static const int strategies[] = {Z_DEFAULT_STRATEGY, Z_FIXED, Z_HUFFMAN_ONLY, Z_RLE,
	                                 Z_FILTERED};
	static const size_t hist_lens[] = {0, 1000, 32768};
	size_t n = 200000, cap = compressBound((uLong)n) + 64;
	uint8_t *data = malloc(n), *hist = malloc(32768), *hist2 = malloc(32768);
	uint8_t *used = malloc(32768), *z = malloc(cap), *out = malloc(n + DREF_MAX_MATCH);

	(void)state;
	assert_true(data && hist && hist2 && used && z && out);
	for (size_t i = 0; i < 32768; i++)
		hist[i] = (uint8_t)("the history of a checkpoint "[i % 28] + (i / 4096));
	for (size_t i = 0; i < n;) {
		uint64_t v = rnd();
		size_t run = 1 + v % 300;

		for (size_t k = 0; k < run && i < n; k++, i++)
			data[i] = (v >> 40) % 3 == 0   ? (uint8_t)rnd()
			          : (v >> 40) % 3 == 1 ? hist[(v >> 20) % 30000 + k]
			                               : (uint8_t)(v >> 8);
	}
	for (size_t li = 0; li < ARRAY_SIZE(levels); li++)
		for (size_t si = 0; si < ARRAY_SIZE(strategies); si++)
			for (size_t hi = 0; hi < ARRAY_SIZE(hist_lens); hi++) {
				unsigned bit = (unsigned)(li * 5 + si + hi) % 8;
				size_t hl = hist_lens[hi], marked = 0;
				z_stream s = {0};
				struct dref d;

				assert_int_equal(deflateInit2(&s, levels[li], Z_DEFLATED, -15, 8,
				                              strategies[si]),
				                 Z_OK);
				if (hl)
					assert_int_equal(
					    deflateSetDictionary(&s, hist + 32768 - hl, (uInt)hl),
					    Z_OK);
				if (bit)
					assert_int_equal(deflatePrime(&s, (int)bit, 0x55), Z_OK);
				s.next_in = data;
				s.avail_in = (uInt)n;
				s.next_out = z;
				s.avail_out = (uInt)cap;
				assert_int_equal(deflate(&s, Z_FINISH), Z_STREAM_END);
				deflateEnd(&s);

				memset(used, 0, hl);
				assert_int_equal(dref_decode(z, s.total_out, bit, hist + 32768 - hl,
				                             hl, out, n + 1, used, &d),
				                 0);
				assert_true(d.final);
				assert_int_equal(d.out_len, n);
				assert_memory_equal(out, data, n);
				assert_true((d.in_bits + 7) / 8 == s.total_out);
				/* unmarked history bytes do not matter */
				for (size_t i = 0; i < hl; i++) {
					hist2[i] = used[i] ? hist[32768 - hl + i]
					                   : (uint8_t)~hist[32768 - hl + i];
					marked += used[i];
				}
				assert_int_equal(dref_decode(z, s.total_out, bit, hist2, hl, out,
				                             n + 1, NULL, &d),
				                 0);
				assert_memory_equal(out, data, n);
				if (hl && levels[li] > 0 && strategies[si] != Z_HUFFMAN_ONLY &&
				    strategies[si] != Z_RLE)
					assert_true(marked > 0 && marked < hl);
				else if (levels[li] == 0 || strategies[si] == Z_HUFFMAN_ONLY)
					assert_int_equal(marked, 0);
			}
	free(data);
	free(hist);
	free(hist2);
	free(used);
	free(z);
	free(out);
}

/* A stored block is cut at max_out; its bytes never mark the history. */
static void test_stored(void **state)
{
	static uint8_t in[70000], out[70000];
	uint8_t used[10] = {0}, hist[10] = {0};
	size_t len = 60000;
	struct dref d;

	(void)state;
	in[0] = 0x01; /* final, stored, then the byte boundary */
	in[1] = (uint8_t)len;
	in[2] = (uint8_t)(len >> 8);
	in[3] = (uint8_t)~len;
	in[4] = (uint8_t)(~len >> 8);
	for (size_t i = 0; i < len; i++)
		in[5 + i] = (uint8_t)(i * 31);
	assert_int_equal(dref_decode(in, 5 + len, 0, hist, 10, out, 100000, used, &d), 0);
	assert_true(d.final);
	assert_int_equal(d.out_len, len);
	assert_memory_equal(out, in + 5, len);
	assert_int_equal(d.in_bits, (5 + len) * 8);
	assert_int_equal(dref_decode(in, 5 + len, 0, hist, 10, out, 32768, used, &d), 0);
	assert_false(d.final);
	assert_int_equal(d.out_len, 32768);
	/* truncated: the bytes that are there, then -ENOBUFS */
	assert_int_equal(dref_decode(in, 5 + 1000, 0, hist, 10, out, 100000, used, &d), -ENOBUFS);
	assert_int_equal(d.out_len, 1000);
	for (size_t i = 0; i < 10; i++)
		assert_int_equal(used[i], 0);
	/* LEN and NLEN disagree */
	in[3] ^= 1;
	assert_int_equal(dref_decode(in, 5 + len, 0, hist, 10, out, 100000, used, &d), -EBADMSG);
	assert_int_equal(d.out_len, 0);
}

static void test_invalid(void **state)
{
	uint8_t out[600] = {0}, hist[4] = {1, 2, 3, 4};
	struct bw w;
	struct dref d;

	(void)state;
	assert_int_equal(dref_decode(out, 0, 0, NULL, 0, NULL, 10, NULL, &d), -ENOBUFS);
	assert_int_equal(dref_decode(out, 1, 8, NULL, 0, NULL, 10, NULL, &d), -EINVAL);
	assert_int_equal(dref_decode(out, 1, 0, NULL, 40000, NULL, 10, NULL, &d), -EINVAL);

	/* block type 3 */
	w = (struct bw){0};
	put(&w, 1, 1);
	put(&w, 3, 2);
	flush(&w);
	assert_int_equal(dref_decode(w.p, w.len, 0, NULL, 0, out, 10, NULL, &d), -EBADMSG);

	/* a distance before the history: 5 back with 4 bytes of history */
	w = (struct bw){0};
	start_fixed(&w, true);
	put_fixed_sym(&w, 'a');
	put_match(&w, 3, 6);
	put_fixed_sym(&w, 256);
	flush(&w);
	assert_int_equal(dref_decode(w.p, w.len, 0, hist, 4, out, 100, NULL, &d), -EBADMSG);
	assert_int_equal(d.out_len, 1);
	assert_int_equal(dref_decode(w.p, w.len, 0, hist, 4, NULL, 100, NULL, &d), -EBADMSG);
	hist[0] = 9; /* with 5 bytes it is fine */
	assert_int_equal(dref_decode(w.p, w.len, 0, NULL, 5, NULL, 100, NULL, &d), 0);
	assert_int_equal(d.out_len, 4);

	/* distance codes 30 and 31, length codes 286 and 287 (fixed code only) */
	for (unsigned bad = 0; bad < 4; bad++) {
		w = (struct bw){0};
		start_fixed(&w, true);
		put_fixed_sym(&w, 'a');
		if (bad < 2) {
			put_fixed_sym(&w, 257);
			put_code(&w, 30 + bad, 5);
		} else {
			put_fixed_sym(&w, 286 + bad - 2);
		}
		put_fixed_sym(&w, 256);
		flush(&w);
		assert_int_equal(dref_decode(w.p, w.len, 0, hist, 4, out, 100, NULL, &d), -EBADMSG);
		assert_int_equal(d.out_len, 1);
	}

	/* dynamic headers: 287 literal/length codes; an over-subscribed code length code */
	w = (struct bw){0};
	put(&w, 1, 1);
	put(&w, 2, 2);
	put(&w, 30, 5);
	put(&w, 0, 5);
	put(&w, 0, 4);
	flush(&w);
	assert_int_equal(dref_decode(w.p, w.len, 0, NULL, 0, out, 10, NULL, &d), -EBADMSG);
	w = (struct bw){0};
	put(&w, 1, 1);
	put(&w, 2, 2);
	put(&w, 0, 5);
	put(&w, 0, 5);
	put(&w, 15, 4);
	for (int k = 0; k < 19; k++)
		put(&w, 1, 3);
	flush(&w);
	assert_int_equal(dref_decode(w.p, w.len, 0, NULL, 0, out, 10, NULL, &d), -EBADMSG);

	/* truncated inside a fixed block: the literals before, then -ENOBUFS */
	w = (struct bw){0};
	start_fixed(&w, true);
	for (int k = 0; k < 20; k++)
		put_fixed_sym(&w, 'a' + k);
	flush(&w);
	assert_int_equal(dref_decode(w.p, 10, 0, NULL, 0, out, 100, NULL, &d), -ENOBUFS);
	assert_int_equal(d.out_len, 9); /* 3 + 9 * 8 bits: 9 whole literals in 80 bits */
	assert_memory_equal(out, "abcdefghi", 9);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_marks),        cmocka_unit_test(test_max_out),
	    cmocka_unit_test(test_zlib_streams), cmocka_unit_test(test_stored),
	    cmocka_unit_test(test_invalid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
