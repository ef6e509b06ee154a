/* The layer index builder's state, shared by its two halves (private to them):
 * layerindex.c (the ring, the worker, tar and zstd streams, entries, serialising) and
 * layerindex_gzip.c (inflating gzip and recording its access points, with sparse windows).
 * The lb_ functions are the calls between the two; each runs on the worker thread only. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <zstd.h>
#include "fsd/index/layerindex.h"
#include "fsd/index/layerindex_format.h"

#define OUT_SIZE (256u << 10)
#define WINDOW_SIZE 32768u
#define MIN_SPAN 4096u
#define MAX_PENDING 16 /* (SPARSE_NEED / MIN_SPAN) + 1 gzip points wait at most */

struct dynbuf {
	uint8_t *p;
	size_t len, cap;
};

struct li_builder {
	enum li_compression comp; /* LI_AUTO until the worker has seen the first bytes */
	uint32_t span;
	bool default_span; /* span 0 given: set by the compression once detected */
	int data_fd;       /* borrowed */
	struct li_limits lim;

	pthread_mutex_t lock;
	pthread_cond_t can_put, can_get;
	uint8_t *ring;    /* RING_SIZE bytes */
	size_t ring_head; /* protected by lock */
	size_t ring_len;  /* protected by lock */
	bool eof, cancel; /* protected by lock */
	bool worker_done; /* protected by lock */
	int worker_err;   /* protected by lock, valid once worker_done */
	pthread_t thread;
	bool thread_running, fed, finished; /* caller's thread only */
	bool described;                     /* li_builder_new_described(): no stream, no worker */

	/* Everything below belongs to the worker until it is joined. */
	uint8_t *in;
	size_t in_pos, in_len;
	uint64_t in_base; /* stream offset of in[0] */
	uint8_t *out;
	uint64_t total_out;
	int err; /* first error of the stream callbacks */

	struct inflate_state *isal;
	uint8_t *deflate_buf; /* ISA-L's level 1 work area, for windows */
	enum { GZ_HEADER, GZ_DEFLATE } gz_phase;
	bool gz_seen;           /* a member header was read */
	bool gz_need_piece;     /* the last piece is consumed and its output handed over */
	uint64_t gz_member_out; /* stream output offset of the member's first byte */
	size_t out_prev;        /* bytes lb_gzip_produce() returned last time */
	struct gzip_header_state {
		uint8_t fixed[10];
		uint32_t pos;  /* bytes of the current field read */
		uint32_t need; /* FEXTRA length */
		uint32_t crc;  /* of the header so far, for FHCRC */
		uint8_t flags, field;
	} gh;
	uint64_t last_point_out;

	/* Points whose window waits for the deflate data after them (sparse windows,
	 * layerindex_gzip.c). */
	struct pending_window {
		uint32_t point;   /* index in points */
		uint32_t wlen;    /* window bytes before out_off */
		uint64_t out_off; /* the point's uncompressed offset */
		uint64_t bitpos;  /* and its compressed bit offset */
	} pend[MAX_PENDING];
	uint32_t n_pend;
	struct dynbuf zin;  /* compressed bytes inflated so far, from zin_base */
	uint64_t zin_base;  /* (only the last SPARSE_RECENT while no point waits) */
	struct dynbuf zout; /* output from zout_base: the windows and what follows them */
	uint64_t zout_base;
	uint8_t *used;               /* WINDOW_SIZE marks from dref_decode() */
	uint8_t *sparse;             /* WINDOW_SIZE: the window with unused bytes zeroed */
	struct inflate_state *check; /* inflates from a point with its sparse window */
	uint8_t *check_out;          /* SPARSE_NEED bytes */
	uint64_t sparse_kept;        /* windows kept whole (checks failed; hostile streams) */

	ZSTD_DCtx *zd;
	ZSTD_CCtx *zc;
	uint8_t *frame; /* span bytes waiting to be compressed into the next frame */
	size_t frame_len;
	uint64_t frame_start; /* stream offset of frame[0] */
	uint8_t *frame_out;
	size_t frame_out_cap;
	uint64_t zst_size;
	size_t zstd_pending; /* ZSTD_decompressStream's hint: 0 between frames */
	bool zstd_seen;

	struct dynbuf entries, xattrs, segments, points, windows, strings;
	uint32_t n_entries, n_xattrs, n_segments, n_points;
	uint32_t dropped;
	char *pathbuf, *linkbuf; /* 2 * max_path + 2 bytes each */
};

/* Appends n bytes of data to d (data NULL: reserves them). */
int lb_dynbuf_append(struct dynbuf *d, const void *data, size_t n);
/* Appends ring bytes to b->in, waiting for some: 1, 0 at the end of the input, -ECANCELED. */
int lb_input_more(struct li_builder *b);
/* Makes b->in hold the stream up to offset end (at most IN_SIZE past b->in_pos); when wait,
 * waits for the bytes. 1, 0 when the input ends first, -EAGAIN (only without wait),
 * -ECANCELED. */
int lb_input_until(struct li_builder *b, uint64_t end, bool wait);
/* Counts n more bytes of tar stream against the limit: 0, or -EFBIG. */
int lb_check_out(struct li_builder *b, size_t n);
/* Appends access point p to the table (at most UINT32_MAX points). */
int lb_append_point(struct li_builder *b, const struct lix_point *p);

/* The next bytes of the tar stream of a gzip layer into *ret: their number, 0 at its end,
 * -EBADMSG for a corrupt or truncated stream, -EFBIG, -ENOMEM, -ECANCELED. Records the
 * access points (and their windows) on the way. */
ssize_t lb_gzip_produce(struct li_builder *b, const void **ret);
/* At the end of the stream: stores the windows of the points still waiting. */
int lb_gzip_finish(struct li_builder *b);
