/* A small raw deflate (RFC 1951) decoder that reports which bytes of the history a stream
 * copies from. The layer index uses it to find the bytes of a checkpoint's 32 KiB window
 * that the deflate data after the checkpoint can read: only back-references that start
 * within the first 32 KiB of output after the point can reach the window, so decoding that
 * much tells exactly which window bytes matter (sparse windows:
 * docs/decisions/0017-sparse-windows-and-gzip-span.md).
 *
 * It accepts what zlib's inflate accepts and rejects what it rejects (incomplete codes
 * only as a single one-bit code, no distance codes 30-31, no length codes 286-287), and
 * is written for hostile input: every read is bounded by the input, every copy by the
 * history and the output. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest output one symbol adds: a match of 258 bytes. */
#define DREF_MAX_MATCH 258u

/* Decoder state after dref_decode(), filled in whatever the outcome. */
struct dref {
	size_t out_len; /* bytes of output decoded (complete symbols and stored bytes) */
	size_t in_bits; /* bits consumed from the input, counted from bit 0 of in[0] */
	bool final;     /* the final block ended: the stream is complete */
};

/* Decodes the raw deflate stream that starts at bit first_bit (0-7, least significant
 * first) of in[0] and follows hist_len (at most 32768) bytes of history, until out_len
 * reaches max_out (the last match may end up to DREF_MAX_MATCH - 1 bytes later) or the
 * final block ends.
 *
 * hist: the history bytes, needed only when out is not NULL (matches copy from them).
 * out: NULL to only follow the symbols, else room for max_out + DREF_MAX_MATCH bytes.
 * used: NULL, or hist_len bytes the caller has cleared; every history byte a match copies
 * is set to 1. Copies of output bytes are not marked: they were produced by the stream, so
 * what they need from the history is marked where they were first copied.
 *
 * Returns 0 with d->out_len >= max_out or d->final; -EBADMSG when the data is not valid
 * deflate (d->out_len: the output before the bad symbol); -ENOBUFS when the input ends
 * first (d->out_len: the output of the complete symbols and stored bytes before that). */
int dref_decode(const uint8_t *in, size_t in_len, unsigned first_bit, const uint8_t *hist,
                size_t hist_len, uint8_t *out, size_t max_out, uint8_t *used, struct dref *d);
