/* A process-wide LRU cache of decoded spans of layer streams.
 *
 * Keys are (owner, unit): owner is a number handed out by spancache_new_owner() (never
 * reused, so a closed index cannot alias a new one), unit any number the owner picks.
 * Values are immutable byte buffers with a reference count.
 *
 * Locking: one mutex protects the hash table, the LRU list and the byte total; it is held
 * only for list and table updates, never while decoding or copying data. A span found by
 * spancache_get() is referenced and stays valid until spancache_put(), even if it is
 * evicted meanwhile. Eviction: least recently used first, whenever the bytes of cached
 * spans exceed the size limit; referenced spans leave the table at once and are freed by
 * their last spancache_put(). Two threads missing the same key both decode it; the second
 * spancache_insert() returns the first one's span and frees its own.
 *
 * Every function is thread-safe. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SPANCACHE_DEFAULT_SIZE (32u << 20)

struct span {
	const uint8_t *data;
	size_t len;
};

uint64_t spancache_new_owner(void);
/* Returns a referenced span or NULL on a miss. */
const struct span *spancache_get(uint64_t owner, uint64_t unit);
/* Takes ownership of data (malloc'ed, len bytes) and returns a referenced span: the new
 * one, or the one another thread inserted first. NULL on ENOMEM (data is freed). */
const struct span *spancache_insert(uint64_t owner, uint64_t unit, uint8_t *data, size_t len);
void spancache_put(const struct span *s);
/* Drops every span of owner (on close). */
void spancache_drop_owner(uint64_t owner);
void spancache_set_size(size_t bytes);
/* Bytes currently cached (for tests and statistics). */
size_t spancache_bytes(void);
