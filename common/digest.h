/* SHA-256 digests in OCI form ("sha256:" + 64 lowercase hex): our own implementation, with
 * the x86 SHA extensions when the CPU has them ($IMGFS_SHA256_PORTABLE set at the first
 * digest forces the portable code, for tests). */
#pragma once

#include <stdint.h>
#include "macros.h"

#define DIGEST_HEX_LEN 64
#define DIGEST_STR_LEN (7 + DIGEST_HEX_LEN) /* "sha256:" + hex, without NUL */

struct sha256;

/* Streaming hasher. sha256_new returns NULL on ENOMEM; sha256_free accepts NULL. */
struct sha256 *sha256_new(void);
void sha256_free(struct sha256 *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct sha256 *, sha256_free);
void sha256_update(struct sha256 *h, const void *buf, size_t len);
/* Writes "sha256:HEX" into out (at least DIGEST_STR_LEN + 1 bytes); the hasher starts
 * again empty. */
void sha256_final(struct sha256 *h, char out[DIGEST_STR_LEN + 1]);

/* One-shot digest of a buffer. */
void sha256_buf(const void *buf, size_t len, char out[DIGEST_STR_LEN + 1]);
/* One-shot digest of a buffer, the 32 raw bytes. */
void sha256_raw(const void *buf, size_t len, uint8_t out[32]);

/* True when s is "sha256:" followed by exactly 64 lowercase hex digits. Other algorithms
 * (sha512) are accepted by OCI but not by this store; callers report them. */
bool digest_valid(const char *s);

/* Returns the hex part of a valid digest (pointer into s). */
static inline const char *digest_hex(const char *s)
{
	return s + 7;
}
