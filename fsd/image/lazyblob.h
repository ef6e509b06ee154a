/* A layer blob fetched lazily: a sparse file in the store (store_open_lazy()) filled span by
 * span (spans.h) as reads need them, and completed in the background; once every span is
 * there and the whole blob has its digest, it becomes an ordinary blob in blobs/.
 *
 * A span is there when its bytes in the file have its digest: that is checked when the
 * blob is opened (so a killed daemon's work is kept, and a half-written span is fetched
 * again) and before a span is fetched (another process serving the same blob may have
 * fetched it: the processes coordinate with OFD locks on the spans' byte ranges, the
 * threads of one process with a mutex). Every fetched span is verified before it is
 * written; one that fails is fetched once more, then the read fails with -EIO and one log
 * line names the blob and the span: never wrong bytes.
 *
 * Reads come first: lazyblob_fill() fetches only when no read has needed a fetch for
 * fill_delay_ms. A read that goes on sequentially fetches ahead of itself, so that a large
 * file costs a few large requests rather than one per decoded piece. Thread-safe. */
#pragma once

#include <stdint.h>
#include "common/error.h"
#include "common/macros.h"
#include "fsd/image/spans.h"

struct store;

/* Fetches bytes [off, off + len) of the blob into buf (exactly len bytes); 0 or -errno
 * with a reason in err. Called from several threads at once. */
typedef int (*lazyblob_fetch_fn)(void *ctx, uint64_t off, uint64_t len, void *buf,
                                 struct error *err);

struct lazyblob_opts {
	lazyblob_fetch_fn fetch;
	void *ctx;
	unsigned fill_delay_ms; /* quiet time after a read's fetch before the fill goes on */
	uint64_t max_request;   /* bytes of adjacent spans fetched in one request; 0: 4 MiB */
	/* Reads that go on sequentially for this many bytes of the blob fetch ahead (512 KiB,
	 * doubling up to max_request); 0: 2 MiB. */
	uint64_t ahead_after;
};

struct lazyblob_stats {
	uint64_t size;         /* the blob's */
	uint64_t present;      /* bytes there (fetched by anyone, verified) */
	uint64_t demand_bytes; /* fetched by this process for reads */
	uint64_t fill_bytes;   /* fetched by this process in the background */
	uint64_t requests;     /* fetches made by this process */
	bool committed;        /* complete, verified, in blobs/ */
};

struct lazyblob;

/* Opens the lazy blob of sp->layer (taking sp over, also on failure), checks which spans
 * are there already. -EEXIST when the blob is already complete in blobs/ (nothing to do
 * lazily). */
int lazyblob_open(struct store *s, struct spans *sp, const struct lazyblob_opts *o,
                  struct lazyblob **ret);
void lazyblob_free(struct lazyblob *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct lazyblob *, lazyblob_free);

/* The sparse file, to read the blob from (borrowed; stays valid after the commit). */
int lazyblob_fd(const struct lazyblob *b);
const char *lazyblob_digest(const struct lazyblob *b);

/* Makes bytes [off, off + len) present, fetching the missing spans in as few requests as
 * the adjacency of the missing spans allows. An li_fetch_fn (ctx is the lazyblob). */
int lazyblob_ensure(void *b, uint64_t off, uint64_t len);

/* One step of the background fill: waits for the reads to be quiet, then fetches the next
 * run of missing spans. Returns 1 when it fetched (or found) something, 0 when the blob is
 * complete (then also verified and committed into blobs/), -ECANCELED when it should not
 * be called again (lazyblob_stop(), or a complete blob without the layer's digest: then
 * reads fail too and the fetched bytes are dropped), another -errno on failure (logged). */
int lazyblob_fill(struct lazyblob *b);
/* Makes a waiting or later lazyblob_fill() return -ECANCELED. */
void lazyblob_stop(struct lazyblob *b);

void lazyblob_get_stats(struct lazyblob *b, struct lazyblob_stats *ret);
