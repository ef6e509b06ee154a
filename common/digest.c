/* SHA-256 for digests: a portable implementation (FIPS 180-4) for small buffers, OpenSSL's
 * libcrypto for streams and large buffers.
 *
 * libcrypto is loaded at the first hash that needs it (common/lazylib.c), not at start:
 * loading it, relocating it and setting up its default provider cost a command about as
 * much CPU as everything else `imgfs mount` or `imgfs umount` does (docs/decisions/
 * 0706-small-digests-without-libcrypto.md), and those commands hash only a mountpoint name
 * and a few small store files. What libcrypto brings is speed on large inputs (SHA
 * extensions, vector code): a pull hashes every blob, a lazy mount every 64 KiB span. When
 * it cannot be loaded the portable code hashes everything, only slower. */
#include <openssl/evp.h>
#include "digest.h"

/* Buffers below this are hashed by the portable code. */
#define SMALL_MAX (32u * 1024)

/* ---- the portable SHA-256 ---- */

struct sha256_small {
	uint32_t h[8];
	uint64_t len; /* bytes hashed so far */
	uint8_t block[64];
	size_t used; /* bytes in block */
};

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

static void small_init(struct sha256_small *s)
{
	static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
	                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

	memcpy(s->h, h0, sizeof(h0));
	s->len = 0;
	s->used = 0;
}

static void small_block(struct sha256_small *s, const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, h;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
	e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 =
		    h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));

		h = g, g = f, f = e, e = d + t1;
		d = c, c = b, b = a, a = t1 + t2;
	}
	s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
	s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void small_update(struct sha256_small *s, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	s->len += len;
	if (s->used) {
		size_t n = MIN(len, sizeof(s->block) - s->used);

		memcpy(s->block + s->used, p, n);
		s->used += n, p += n, len -= n;
		if (s->used < sizeof(s->block))
			return;
		small_block(s, s->block);
		s->used = 0;
	}
	for (; len >= 64; p += 64, len -= 64)
		small_block(s, p);
	memcpy(s->block, p, len);
	s->used = len;
}

static void small_final(struct sha256_small *s, uint8_t out[32])
{
	uint64_t bits = s->len * 8;
	uint8_t pad[72] = {0x80};
	/* The 0x80, zeros to 56 mod 64, then the length in bits, big endian. */
	size_t n = (s->used < 56 ? 56 : 120) - s->used;

	for (int i = 0; i < 8; i++)
		pad[n + i] = (uint8_t)(bits >> (56 - 8 * i));
	small_update(s, pad, n + 8);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(s->h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
		out[4 * i + 3] = (uint8_t)s->h[i];
	}
}

/* ---- the hasher ---- */

struct sha256 {
	EVP_MD_CTX *ctx; /* NULL: libcrypto could not be loaded, the portable code hashes */
	struct sha256_small small;
};

struct sha256 *sha256_new(void)
{
	struct sha256 *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	/* The first call loads libcrypto; NULL when it cannot (or on ENOMEM, which the
	 * portable code then avoids as well). */
	h->ctx = EVP_MD_CTX_new();
	if (h->ctx && EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(h->ctx);
		h->ctx = NULL;
	}
	if (!h->ctx)
		small_init(&h->small);
	return h;
}

void sha256_free(struct sha256 *h)
{
	if (!h)
		return;
	if (h->ctx)
		EVP_MD_CTX_free(h->ctx);
	free(h);
}

void sha256_update(struct sha256 *h, const void *buf, size_t len)
{
	if (h->ctx)
		EVP_DigestUpdate(h->ctx, buf, len);
	else
		small_update(&h->small, buf, len);
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

static void final_raw(struct sha256 *h, uint8_t out[32])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!h->ctx) {
		small_final(&h->small, out);
		return;
	}
	EVP_DigestFinal_ex(h->ctx, md, &n);
	memcpy(out, md, 32);
}

void sha256_final(struct sha256 *h, char out[DIGEST_STR_LEN + 1])
{
	uint8_t md[32];

	final_raw(h, md);
	to_hex(md, out);
}

void sha256_raw(const void *buf, size_t len, uint8_t out[32])
{
	_cleanup_(sha256_freep) struct sha256 *h = NULL;
	struct sha256_small s;

	if (len >= SMALL_MAX)
		h = sha256_new();
	if (h) {
		sha256_update(h, buf, len);
		final_raw(h, out);
		return;
	}
	/* Small, or no memory for a hasher (the portable code needs none). */
	small_init(&s);
	small_update(&s, buf, len);
	small_final(&s, out);
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
