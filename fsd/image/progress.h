/* Pull progress: one bar per layer on a terminal (bytes, rate, ETA), plain lines
 * otherwise, nothing when quiet. Thread-safe: workers update their own bar, a single
 * mutex guards the drawing. Output goes to stderr so stdout stays machine-readable. */
#pragma once

#include <stdint.h>
#include "common/macros.h"

struct progress;

/* mode: PROGRESS_AUTO picks bars when stderr is a terminal, else plain lines. */
enum progress_mode {
	PROGRESS_AUTO,
	PROGRESS_QUIET,
	PROGRESS_PLAIN,
	PROGRESS_BARS,
};

struct progress *progress_new(enum progress_mode mode);
void progress_free(struct progress *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct progress *, progress_free);

/* Adds a bar for an item (a layer digest) of total bytes; returns its slot (>= 0) or -errno. */
int progress_add(struct progress *p, const char *digest, uint64_t total);
/* Sets how many bytes of slot are done; draws at most every 100 ms. */
void progress_update(struct progress *p, int slot, uint64_t done);
/* Marks slot finished with a status word ("done", "exists", "failed"). */
void progress_finish(struct progress *p, int slot, const char *status);
/* Prints a free-form line above the bars (or plain). */
void progress_note(struct progress *p, const char *fmt, ...) _printf_(2, 3);
