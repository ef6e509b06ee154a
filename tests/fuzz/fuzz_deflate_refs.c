/* Fuzzes the deflate reference decoder against zlib. Byte 0: bit 0 deflates the payload
 * here first (with the history as preset dictionary, level from bits 1-3), so that most
 * inputs are valid streams full of matches into the history; bits 4-6 the bit the stream
 * starts at. Byte 1 picks the history length, byte 2 how much output to decode; the rest
 * is the payload. The history is a pattern derived from the payload.
 *
 * Checked: the decoder never reads or writes out of bounds; what it decodes equals zlib's
 * output (zlib's inflatePrime() supplies the start bit, inflateSetDictionary() the
 * history); it fails exactly where zlib stops early; and decoding again with every history
 * byte it did not mark changed gives the same output, the property the layer index
 * relies on. */
#include <stdint.h>
#include <zlib.h>
#include "common/macros.h"
#include "fsd/index/deflate_refs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t hist_lens[8] = {0, 1, 7, 300, 4096, 20000, 32767, 32768};
static const size_t max_outs[8] = {0, 1, 100, 258, 4096, 32768, 33000, 200000};

/* Raw deflate of payload with dict as preset dictionary, starting at bit first_bit of the
 * first byte (the bits before are junk, put there by deflatePrime() so that stored blocks
 * are aligned as in a real stream). */
static uint8_t *deflate_copy(const uint8_t *payload, size_t len, const uint8_t *dict,
                             size_t dict_len, int level, unsigned first_bit, size_t *ret_len)
{
	size_t cap = compressBound((uLong)len) + 64;
	uint8_t *out = malloc(cap);
	z_stream s = {0};

	if (!out || deflateInit2(&s, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		goto fail;
	if ((dict_len && deflateSetDictionary(&s, dict, (uInt)dict_len) != Z_OK) ||
	    (first_bit && deflatePrime(&s, (int)first_bit, (1 << first_bit) - 1) != Z_OK)) {
		deflateEnd(&s);
		goto fail;
	}
	s.next_in = (uint8_t *)payload;
	s.avail_in = (uInt)len;
	s.next_out = out;
	s.avail_out = (uInt)cap;
	if (deflate(&s, Z_FINISH) != Z_STREAM_END) {
		deflateEnd(&s);
		goto fail;
	}
	*ret_len = s.total_out;
	deflateEnd(&s);
	return out;
fail:
	free(out);
	return NULL;
}

/* zlib's output for the same input: inflates into out (cap bytes); returns its code. */
static int zlib_inflate(const uint8_t *in, size_t len, unsigned first_bit, const uint8_t *hist,
                        size_t hist_len, uint8_t *out, size_t cap, size_t *ret_out)
{
	z_stream s = {0};
	int zr;

	*ret_out = 0;
	if (inflateInit2(&s, -15) != Z_OK)
		abort();
	if (hist_len && inflateSetDictionary(&s, hist, (uInt)hist_len) != Z_OK)
		abort();
	if (first_bit) {
		if (len == 0) {
			inflateEnd(&s);
			return Z_BUF_ERROR;
		}
		if (inflatePrime(&s, (int)(8 - first_bit), in[0] >> first_bit) != Z_OK)
			abort();
		in++;
		len--;
	}
	s.next_in = (uint8_t *)in;
	s.avail_in = (uInt)len;
	s.next_out = out;
	s.avail_out = (uInt)cap;
	zr = inflate(&s, Z_SYNC_FLUSH);
	*ret_out = s.total_out;
	inflateEnd(&s);
	return zr;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_free_ uint8_t *stream = NULL, *hist = NULL, *hist2 = NULL, *used = NULL;
	_cleanup_free_ uint8_t *out = NULL, *out2 = NULL, *zout = NULL;
	const uint8_t *in, *payload = data + 3;
	size_t in_len, hist_len, max_out, payload_len, zlen, cap;
	unsigned first_bit;
	struct dref d, d2;
	int r, r2, zr;

	if (size < 3)
		return 0;
	payload_len = size - 3;
	first_bit = (data[0] >> 4) & 7;
	hist_len = hist_lens[data[1] & 7];
	max_out = max_outs[data[2] & 7];
	hist = malloc(hist_len + 1);
	hist2 = malloc(hist_len + 1);
	used = calloc(1, hist_len + 1);
	cap = max_out + DREF_MAX_MATCH;
	out = malloc(cap);
	out2 = malloc(cap);
	zout = malloc(cap);
	if (!hist || !hist2 || !used || !out || !out2 || !zout)
		abort();
	for (size_t i = 0; i < hist_len; i++)
		hist[i] =
		    payload_len ? payload[(i * 7) % payload_len] ^ (uint8_t)(i >> 9) : (uint8_t)i;
	if (data[0] & 1) {
		stream = deflate_copy(payload, payload_len, hist, hist_len,
		                      1 + ((data[0] >> 1) & 7), first_bit, &in_len);
		if (!stream)
			return 0;
		in = stream;
	} else {
		in = payload;
		in_len = payload_len;
	}

	r = dref_decode(in, in_len, first_bit, hist, hist_len, out, max_out, used, &d);
	if (r != 0 && r != -EBADMSG && r != -ENOBUFS)
		abort();
	if (d.out_len > cap || d.in_bits > in_len * 8 ||
	    (r == 0 && !d.final && d.out_len < max_out))
		abort();

	zr = zlib_inflate(in, in_len, first_bit, hist, hist_len, zout, cap, &zlen);
	if (r == 0) {
		if (zlen < d.out_len || memcmp(zout, out, d.out_len) != 0)
			abort();
		if (d.final && (zr != Z_STREAM_END || zlen != d.out_len))
			abort();
	} else {
		if (zr == Z_STREAM_END || zlen != d.out_len || memcmp(zout, out, d.out_len) != 0)
			abort();
	}
	if (data[0] & 1 && r != 0)
		abort(); /* zlib's own stream, whole: always valid */

	/* Every history byte not marked may be anything: the output stays the same. */
	for (size_t i = 0; i < hist_len; i++)
		hist2[i] = used[i] ? hist[i] : (uint8_t)~hist[i];
	r2 = dref_decode(in, in_len, first_bit, hist2, hist_len, out2, max_out, NULL, &d2);
	if (r2 != r || d2.out_len != d.out_len || d2.final != d.final ||
	    memcmp(out, out2, d.out_len) != 0)
		abort();
	/* Following the symbols without output gives the same marks. */
	memset(hist2, 0, hist_len);
	r2 = dref_decode(in, in_len, first_bit, NULL, hist_len, NULL, max_out, hist2, &d2);
	if (r2 != r || d2.out_len != d.out_len || memcmp(hist2, used, hist_len) != 0)
		abort();
	return 0;
}
