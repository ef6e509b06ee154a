#include <pthread.h>
#include <stdarg.h>
#include <time.h>
#include "common/fileio.h"
#include "common/log.h"
#include "progress.h"

struct bar {
	char id[13]; /* short digest, as docker shows it */
	uint64_t total, done;
	uint64_t start_ns, last_ns;
	const char *status;
};

struct progress {
	enum progress_mode mode;
	pthread_mutex_t lock; /* protects everything below */
	struct bar *bars;
	size_t n, cap;
	size_t drawn; /* bar lines currently on the terminal */
	uint64_t last_draw_ns;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct progress *progress_new(enum progress_mode mode)
{
	struct progress *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	if (mode == PROGRESS_AUTO)
		mode = isatty(STDERR_FILENO) ? PROGRESS_BARS : PROGRESS_PLAIN;
	p->mode = mode;
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

void progress_free(struct progress *p)
{
	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p->bars);
	free(p);
}

static void format_bar(const struct bar *b, uint64_t now, char *line, size_t size)
{
	char done[32], total[32], rate[32];
	double secs = (double)((b->last_ns ? b->last_ns : now) - b->start_ns) / 1e9;
	double bps = secs > 0.05 ? (double)b->done / secs : 0;
	unsigned width = 30, fill = 0;
	char gauge[32];

	if (b->total)
		fill =
		    (unsigned)((double)width * (double)MIN(b->done, b->total) / (double)b->total);
	for (unsigned i = 0; i < width; i++)
		gauge[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
	gauge[width] = '\0';
	format_bytes(b->done, done, sizeof(done));
	format_bytes(b->total, total, sizeof(total));
	format_bytes((uint64_t)bps, rate, sizeof(rate));
	if (b->status) {
		snprintf(line, size, "%s: %-8s %s", b->id, b->status, total);
	} else {
		unsigned eta = bps > 0 && b->total > b->done
		                   ? (unsigned)((double)(b->total - b->done) / bps)
		                   : 0;

		snprintf(line, size, "%s: [%s] %s/%s %s/s ETA %um%02us", b->id, gauge, done, total,
		         rate, eta / 60, eta % 60);
	}
}

/* Redraws every bar in place: move up over the previous drawing, rewrite each line. */
static void draw(struct progress *p)
{
	char buf[16384];
	size_t n = 0;
	uint64_t now = now_ns();
	int k;

	if (p->drawn) {
		k = snprintf(buf, sizeof(buf), "\033[%zuA", p->drawn);
		n = k > 0 ? (size_t)k : 0;
	}
	for (size_t i = 0; i < p->n && n + 200 < sizeof(buf); i++) {
		char line[256];

		format_bar(&p->bars[i], now, line, sizeof(line));
		k = snprintf(buf + n, sizeof(buf) - n, "\r\033[2K%s\n", line);
		if (k > 0)
			n += (size_t)k;
	}
	p->drawn = p->n;
	p->last_draw_ns = now;
	write_full(STDERR_FILENO, buf, n);
}

int progress_add(struct progress *p, const char *digest, uint64_t total)
{
	struct bar *b;
	int slot;

	pthread_mutex_lock(&p->lock);
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 16;
		struct bar *nb = realloc(p->bars, cap * sizeof(*nb));

		if (!nb) {
			pthread_mutex_unlock(&p->lock);
			return -ENOMEM;
		}
		p->bars = nb;
		p->cap = cap;
	}
	slot = (int)p->n++;
	b = &p->bars[slot];
	memset(b, 0, sizeof(*b));
	snprintf(b->id, sizeof(b->id), "%.12s",
	         startswith(digest, "sha256:") ? digest + 7 : digest);
	b->total = total;
	b->start_ns = now_ns();
	if (p->mode == PROGRESS_BARS)
		draw(p);
	pthread_mutex_unlock(&p->lock);
	return slot;
}

void progress_update(struct progress *p, int slot, uint64_t done)
{
	if (p->mode != PROGRESS_BARS || slot < 0)
		return;
	pthread_mutex_lock(&p->lock);
	p->bars[slot].done = done;
	if (now_ns() - p->last_draw_ns > 100000000u)
		draw(p);
	pthread_mutex_unlock(&p->lock);
}

void progress_finish(struct progress *p, int slot, const char *status)
{
	struct bar *b;

	if (p->mode == PROGRESS_QUIET || slot < 0)
		return;
	pthread_mutex_lock(&p->lock);
	b = &p->bars[slot];
	b->status = status;
	b->last_ns = now_ns();
	if (p->mode == PROGRESS_BARS) {
		draw(p);
	} else {
		char line[256];

		format_bar(b, b->last_ns, line, sizeof(line));
		fprintf(stderr, "%s\n", line);
	}
	pthread_mutex_unlock(&p->lock);
}

void progress_note(struct progress *p, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (p->mode == PROGRESS_QUIET)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&p->lock);
	if (p->mode == PROGRESS_BARS && p->drawn) {
		/* Keep notes above the bars: clear the bars, print, redraw. */
		fprintf(stderr, "\033[%zuA\r\033[J%s\n", p->drawn, line);
		p->drawn = 0;
		draw(p);
	} else {
		fprintf(stderr, "%s\n", line);
	}
	pthread_mutex_unlock(&p->lock);
}
