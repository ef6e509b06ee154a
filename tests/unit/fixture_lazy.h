/* What the tests of layers read lazily from a publisher's index (eStargz, SOCI) share: bytes
 * in a memfd, a fetch hook that records which bytes reads asked for, and the index the layer
 * builder makes of the tar stream itself, which a described index must agree with. A
 * failure fails the running test (cmocka). */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include "fsd/index/layerindex.h"

/* A memfd holding the len bytes of buf; the caller closes it. */
int lazyfix_memfd(const void *buf, size_t len);

/* The union of the byte ranges a fetch hook was asked for: start it as {UINT64_MAX, 0}. */
struct lazyfix_range {
	uint64_t lo, hi;
};

/* li_set_fetch() hook (ctx: a struct lazyfix_range) that records each range and fetches
 * nothing: the data is all there. */
int lazyfix_record(void *ctx, uint64_t off, uint64_t len);

/* Reads entry i of idx into *a and of ref into *e, and asserts that they are the same
 * path with the same type, mode and size. */
void lazyfix_entry_pair(struct li_index *idx, struct li_index *ref, size_t i, struct li_entry *a,
                        struct li_entry *e);

/* The layer builder's index of the gzip blob of len bytes (layer digest layer), opened
 * verified with data_fd (the same blob) as its data. Close it with li_close(). */
struct li_index *lazyfix_stream_index(const void *blob, size_t len, const char *layer, int data_fd);
