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
 * spans exceed the current size; referenced spans leave the table at once and are freed by
 * their last spancache_put(). Two threads missing the same key both decode it; the second
 * spancache_insert() returns the first one's span and frees its own.
 *
 * Size: adaptive between SPANCACHE_MIN_SIZE and the limit (spancache_set_size()). The
 * kernel keeps the decoded pages of files it read, so a span is only worth keeping while
 * the rest of it is still to be read: one sequential reader needs one span, parallel
 * readers of different places one each. The cache remembers the keys of the spans it
 * evicted last; inserting one of them again (it was evicted too early) grows the size by
 * that span, and every other insert shrinks it by a sixteenth of its length, so the
 * cache follows the number of readers and falls back to the minimum when they are gone.
 *
 * Every function is thread-safe. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SPANCACHE_DEFAULT_SIZE (32u << 20) /* the limit */
#define SPANCACHE_MIN_SIZE (8u << 20)

struct span {
	const uint8_t *data;
	size_t len;
};

/* Memory for a span's bytes, to be handed to spancache_insert() or spancache_free(). Its
 * own pages, returned to the system when freed (spans are freed in any order, which would
 * leave the heap full of holes), except for the last few freed, reused here so that a
 * decode does not fault in fresh pages. NULL on ENOMEM. */
uint8_t *spancache_alloc(size_t len);
void spancache_free(uint8_t *data);

uint64_t spancache_new_owner(void);
/* Returns a referenced span or NULL on a miss. */
const struct span *spancache_get(uint64_t owner, uint64_t unit);
/* Takes ownership of data (from spancache_alloc(), len bytes) and returns a referenced span: the
 * new one, or the one another thread inserted first. NULL on ENOMEM (data is freed). */
const struct span *spancache_insert(uint64_t owner, uint64_t unit, uint8_t *data, size_t len);
void spancache_put(const struct span *s);
/* Drops every span of owner (on close). */
void spancache_drop_owner(uint64_t owner);
/* Sets the limit (0 disables the cache); the size starts at the minimum again, or at the
 * limit when that is smaller. */
void spancache_set_size(size_t bytes);
/* Bytes currently cached, and the current size (for tests and statistics). */
size_t spancache_bytes(void);
size_t spancache_target(void);
