/* SHA-256 (FIPS 180-4), with the x86 SHA extensions where the CPU has them. Our own rather
 * than libcrypto's: linking libcrypto and its first digest cost 6-7 ms at each start of a
 * command (relocations, provider and configuration set-up), more than a mount. */
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif
#include "digest.h"

struct sha256 {
	uint32_t h[8];
	uint64_t len; /* bytes hashed so far */
	uint8_t buf[64];
	size_t n; /* bytes in buf */
};

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

static inline uint32_t ror(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

static inline uint32_t load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void compress_portable(uint32_t h[8], const uint8_t *data, size_t blocks)
{
	for (; blocks > 0; blocks--, data += 64) {
		uint32_t w[64], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5],
		                g = h[6], k = h[7];

		for (int t = 0; t < 16; t++)
			w[t] = load_be32(data + 4 * t);
		for (int t = 16; t < 64; t++) {
			uint32_t s0 = ror(w[t - 15], 7) ^ ror(w[t - 15], 18) ^ (w[t - 15] >> 3);
			uint32_t s1 = ror(w[t - 2], 17) ^ ror(w[t - 2], 19) ^ (w[t - 2] >> 10);

			w[t] = w[t - 16] + s0 + w[t - 7] + s1;
		}
		for (int t = 0; t < 64; t++) {
			uint32_t t1 = k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) +
			              ((e & f) ^ (~e & g)) + K[t] + w[t];
			uint32_t t2 =
			    (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));

			k = g;
			g = f;
			f = e;
			e = d + t1;
			d = c;
			c = b;
			b = a;
			a = t1 + t2;
		}
		h[0] += a;
		h[1] += b;
		h[2] += c;
		h[3] += d;
		h[4] += e;
		h[5] += f;
		h[6] += g;
		h[7] += k;
	}
}

#if defined(__x86_64__)
/* Four rounds a step: the state as (A,B,E,F) and (C,D,G,H), the schedule in four registers
 * of four words, each new one from the four before (SHA256MSG1/MSG2). */
__attribute__((target("sha,sse4.1,ssse3"))) static void
compress_shani(uint32_t h[8], const uint8_t *data, size_t blocks)
{
	const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
	__m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xb1); /* CDAB */
	__m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1b);  /* EFGH */
	__m128i s0 = _mm_alignr_epi8(tmp, s1, 8);                                       /* ABEF */

	s1 = _mm_blend_epi16(s1, tmp, 0xf0); /* CDGH */
	for (; blocks > 0; blocks--, data += 64) {
		__m128i abef = s0, cdgh = s1, m[4];

#pragma GCC unroll 16
		for (int g = 0; g < 16; g++) {
			__m128i wk;

			if (g < 4) {
				m[g] = _mm_shuffle_epi8(
				    _mm_loadu_si128((const __m128i *)(data + 16 * g)), bswap);
			} else {
				/* m[g&3] holds W[t-16..t-13], then the three groups after it. */
				__m128i x = _mm_add_epi32(
				    _mm_sha256msg1_epu32(m[g & 3], m[(g + 1) & 3]),
				    _mm_alignr_epi8(m[(g + 3) & 3], m[(g + 2) & 3], 4));

				m[g & 3] = _mm_sha256msg2_epu32(x, m[(g + 3) & 3]);
			}
			wk = _mm_add_epi32(m[g & 3], _mm_loadu_si128((const __m128i *)&K[4 * g]));
			s1 = _mm_sha256rnds2_epu32(s1, s0, wk);
			s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(wk, 0x0e));
		}
		s0 = _mm_add_epi32(s0, abef);
		s1 = _mm_add_epi32(s1, cdgh);
	}
	tmp = _mm_shuffle_epi32(s0, 0x1b);                                  /* FEBA */
	s1 = _mm_shuffle_epi32(s1, 0xb1);                                   /* DCHG */
	_mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(tmp, s1, 0xf0)); /* DCBA */
	_mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(s1, tmp, 8));    /* HGFE */
}

static bool cpu_has_sha(void)
{
	unsigned a, b, c, d;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
		return false;
	return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
}
#endif

typedef void (*compress_fn)(uint32_t h[8], const uint8_t *data, size_t blocks);

static compress_fn compress_impl(void)
{
	static compress_fn fn;
	compress_fn f = __atomic_load_n(&fn, __ATOMIC_RELAXED);

	if (!f) {
		/* Threads that race here all choose the same. */
		f = compress_portable;
#if defined(__x86_64__)
		if (cpu_has_sha() && !getenv("IMGFS_SHA256_PORTABLE"))
			f = compress_shani;
#endif
		__atomic_store_n(&fn, f, __ATOMIC_RELAXED);
	}
	return f;
}

static void init(struct sha256 *h)
{
	memcpy(h->h, H0, sizeof(H0));
	h->len = 0;
	h->n = 0;
}

struct sha256 *sha256_new(void)
{
	struct sha256 *h = malloc(sizeof(*h));

	if (h)
		init(h);
	return h;
}

void sha256_free(struct sha256 *h)
{
	free(h);
}

void sha256_update(struct sha256 *h, const void *data, size_t len)
{
	const uint8_t *p = data;
	compress_fn compress = compress_impl();

	h->len += len;
	if (h->n > 0) {
		size_t take = 64 - h->n < len ? 64 - h->n : len;

		memcpy(h->buf + h->n, p, take);
		h->n += take;
		p += take;
		len -= take;
		if (h->n < 64)
			return;
		compress(h->h, h->buf, 1);
		h->n = 0;
	}
	if (len >= 64) {
		compress(h->h, p, len / 64);
		p += len & ~(size_t)63;
		len &= 63;
	}
	memcpy(h->buf, p, len);
	h->n = len;
}

/* The digest of what h hashed; h is spent. */
static void finish(struct sha256 *h, uint8_t out[32])
{
	uint64_t bits = h->len * 8;
	compress_fn compress = compress_impl();

	h->buf[h->n++] = 0x80;
	if (h->n > 56) {
		memset(h->buf + h->n, 0, 64 - h->n);
		compress(h->h, h->buf, 1);
		h->n = 0;
	}
	memset(h->buf + h->n, 0, 56 - h->n);
	for (int i = 0; i < 8; i++)
		h->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
	compress(h->h, h->buf, 1);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(h->h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(h->h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(h->h[i] >> 8);
		out[4 * i + 3] = (uint8_t)h->h[i];
	}
}

static void to_hex(const unsigned char *md, char out[DIGEST_STR_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";

	memcpy(out, "sha256:", 7);
	for (int i = 0; i < 32; i++) {
		out[7 + 2 * i] = hex[md[i] >> 4];
		out[7 + 2 * i + 1] = hex[md[i] & 15];
	}
	out[DIGEST_STR_LEN] = '\0';
}

void sha256_final(struct sha256 *h, char out[DIGEST_STR_LEN + 1])
{
	uint8_t md[32];

	finish(h, md);
	to_hex(md, out);
	init(h);
}

void sha256_buf(const void *buf, size_t len, char out[DIGEST_STR_LEN + 1])
{
	uint8_t md[32];

	sha256_raw(buf, len, md);
	to_hex(md, out);
}

bool digest_valid(const char *s)
{
	if (!s || strncmp(s, "sha256:", 7) != 0)
		return false;
	for (int i = 0; i < DIGEST_HEX_LEN; i++) {
		char c = s[7 + i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return s[DIGEST_STR_LEN] == '\0';
}

void sha256_raw(const void *buf, size_t len, uint8_t out[32])
{
	struct sha256 h;

	init(&h);
	sha256_update(&h, buf, len);
	finish(&h, out);
}
