/* The decoded-data cache: decoded units of layer streams kept on disk, so that the next
 * mount of an image (or another process serving the same layer) copies them instead of
 * inflating them again.
 *
 * A directory (the store's cache/sha256, handed over as an fd: this module knows no store
 * layout) holds one subdirectory per layer, named by the hex of its digest, and in it one
 * file per unit, named START-LEN (hex): bytes [START, START + LEN) of the layer's
 * uncompressed stream. A name is a range, not an index's unit number, so indexes with
 * different access points (a pull's, a published one) never confuse their units. Each
 * file is a 40-byte header (magic, start, length, block size, block count, crc32 of the
 * table), a table of the crc32 of every 64 KiB block of the data, and the data.
 *
 * Crash safety: an entry is written under a temporary name (.tmp-PID-RAND) and renamed
 * into place, never synced: a killed process leaves at most a temporary file, which
 * readers never open and eviction removes once it is an hour old. After a power loss a
 * renamed entry may hold garbage: a block whose crc32 does not match is never served, and
 * its entry is removed. Any malformed entry is removed and read as a miss.
 *
 * Size: a layer's entries never hold more data than its uncompressed size (entries of
 * indexes with different access points may overlap: the least recently used of the layer
 * go first). The whole cache is bounded (unitcache_open()'s
 * max_bytes): the process counts the bytes present (one scan, at the first insert) plus
 * what it adds, and past the bound removes the least recently used entries (hits refresh
 * an entry's mtime) until three quarters of it are left. Processes sharing the cache each
 * count their own additions, so the bound is kept to within what the others added since
 * their last scan.
 *
 * Every function is thread-safe; failures to write the cache are silent (it is only a
 * cache). */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include "common/macros.h"

#define UNITCACHE_DEFAULT_MAX (1ull << 30)
/* Units larger than this are not cached. */
#define UNITCACHE_MAX_UNIT (64u << 20)

struct unitcache;

/* Uses the directory dirfd (duplicated), bounded by max_bytes (0: nothing is stored). */
int unitcache_open(int dirfd, uint64_t max_bytes, struct unitcache **ret);
void unitcache_free(struct unitcache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct unitcache *, unitcache_free);

/* Fills buf with bytes [start, start + len) of the stream of layer hex: 0, or -ENOENT
 * when the cache does not have them intact. */
int unitcache_get(struct unitcache *c, const char *hex, uint64_t start, void *buf, size_t len);
/* The same for n bytes at off of that unit: only the 64 KiB blocks holding them are read
 * and checked, so a small read of a cached unit costs a small read. */
int unitcache_read(struct unitcache *c, const char *hex, uint64_t start, size_t len, size_t off,
                   void *buf, size_t n);
/* Stores bytes [start, start + len) of the stream of layer hex, whose uncompressed size
 * is layer_size (0: unknown). A layer's entries never hold more than layer_size bytes of
 * data (entries of different indexes may overlap): its least recently used go first. An
 * entry that is already there is left alone. */
void unitcache_put(struct unitcache *c, const char *hex, uint64_t start, const void *buf,
                   size_t len, uint64_t layer_size);

struct unitcache_stats {
	uint64_t hits, misses, stored, corrupt, evicted;
};
void unitcache_get_stats(struct unitcache *c, struct unitcache_stats *ret);

/* Bytes the cache directory dirfd holds (entries and leftovers), for `imgfs images`. */
uint64_t unitcache_dir_bytes(int dirfd);
/* Removes entries, least recently used first, until at most target bytes are left, and
 * temporary files older than an hour. Returns the bytes removed. */
uint64_t unitcache_trim(struct unitcache *c, uint64_t target);
