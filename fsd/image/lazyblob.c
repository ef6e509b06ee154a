/* A layer blob fetched lazily; see lazyblob.h. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "common/log.h"
#include "fsd/image/lazyblob.h"
#include "fsd/image/store.h"

#define DEFAULT_MAX_REQUEST (4u << 20)
#define FILL_MAX_REQUEST (1u << 20)
#define QUIET_POLL_MS 20
/* A read that has gone on sequentially for ahead_after bytes (default SEQ_MIN) fetches
 * ahead, from SEQ_AHEAD doubling up to max_request: one large request instead of one per
 * decoded piece (a small file, or a few pages of a library, never gets there). */
#define SEQ_MIN (2u << 20)
#define SEQ_AHEAD (512u << 10)

enum span_state {
	SPAN_MISSING = 0,
	SPAN_BUSY,    /* being fetched by a thread of this process */
	SPAN_PRESENT, /* in the file, verified */
};

struct lazyblob {
	struct store *s;
	struct spans *sp;
	int fd;
	struct lazyblob_opts o;
	pthread_mutex_t lock; /* protects everything below */
	pthread_cond_t changed;
	uint8_t *state; /* enum span_state per span */
	uint64_t present_spans;
	uint64_t fill_cursor;
	unsigned demand_active;
	int64_t last_demand_ms;
	/* Sequential reads: where the last demand ended, how far the reads have gone on from
	 * there without a jump, and how far ahead they fetch now. */
	uint64_t seq_next, seq_run, ahead;
	bool ahead_running; /* a read-ahead thread is fetching */
	bool stop;          /* lazyblob_stop(): the fill gives up waiting */
	bool failed;        /* the complete blob did not have its digest: nothing is served */
	struct lazyblob_stats stats;
};

static uint64_t span_len(const struct lazyblob *b, uint64_t i)
{
	uint64_t off, len;

	spans_range(b->sp, i, &off, &len);
	return len;
}

/* Whether the file holds data anywhere in [off, off + len) (not only a hole). */
static bool has_data(int fd, uint64_t off, uint64_t len)
{
	off_t d = lseek(fd, (off_t)off, SEEK_DATA);

	if (d < 0)
		return errno != ENXIO; /* unknown: look */
	return (uint64_t)d < off + len;
}

/* Marks spans [first, first + n) present where the file already has their bytes (another
 * process fetched them, or an earlier daemon). buf holds at least the range. */
static uint64_t find_present(struct lazyblob *b, uint64_t first, uint64_t n, uint8_t *buf,
                             bool *ret_present)
{
	uint64_t off, len, found = 0, end;
	ssize_t got;

	spans_range(b->sp, first, &off, &len);
	spans_range(b->sp, first + n - 1, &end, &len);
	end += len;
	for (uint64_t i = 0; i < n; i++)
		ret_present[i] = false;
	if (!has_data(b->fd, off, end - off))
		return 0;
	got = pread_full(b->fd, buf, end - off, (off_t)off);
	if (got < 0 || (uint64_t)got != end - off)
		return 0;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t so, sl;

		spans_range(b->sp, first + i, &so, &sl);
		if (spans_check(b->sp, first + i, buf + (so - off), sl)) {
			ret_present[i] = true;
			found++;
		}
	}
	return found;
}

/* Fetches spans [first, first + n), claimed SPAN_BUSY by the caller, into the file: under
 * an OFD write lock of their byte range, so that processes serving the same blob do not
 * fetch a span twice. Returns the bytes fetched, or -errno (logged). */
static int64_t fetch_run(struct lazyblob *b, uint64_t first, uint64_t n)
{
	_cleanup_free_ uint8_t *buf = NULL;
	_cleanup_free_ bool *present = NULL;
	uint64_t off, len, end, lo = 0, hi = n, fetched = 0;
	struct flock fl;
	struct error err = {""};
	int r = 0;

	spans_range(b->sp, first, &off, &len);
	spans_range(b->sp, first + n - 1, &end, &len);
	end += len;
	buf = malloc(end - off);
	present = calloc(n, sizeof(*present));
	if (!buf || !present) {
		r = -ENOMEM;
		goto release;
	}
	fl = (struct flock){.l_type = F_WRLCK,
	                    .l_whence = SEEK_SET,
	                    .l_start = (off_t)off,
	                    .l_len = (off_t)(end - off)};
	while (fcntl(b->fd, F_OFD_SETLKW, &fl) < 0)
		if (errno != EINTR) {
			r = log_errno(LOG_ERR, -errno, "cannot lock the lazy blob of %s",
			              b->sp->layer);
			goto release;
		}
	if (find_present(b, first, n, buf, present) == n)
		goto unlock;
	/* One request from the first missing span to the last. */
	while (lo < hi && present[lo])
		lo++;
	while (hi > lo && present[hi - 1])
		hi--;
	for (int attempt = 0; attempt < 2 && lo < hi; attempt++) {
		uint64_t ro, rl, re;

		spans_range(b->sp, first + lo, &ro, &rl);
		spans_range(b->sp, first + hi - 1, &re, &rl);
		re += rl;
		r = b->o.fetch(b->o.ctx, ro, re - ro, buf + (ro - off), &err);
		log_debug("%.19s: fetched bytes %llu-%llu (%llu spans)", b->sp->layer,
		          (unsigned long long)ro, (unsigned long long)re - 1,
		          (unsigned long long)(hi - lo));
		pthread_mutex_lock(&b->lock);
		b->stats.requests++;
		pthread_mutex_unlock(&b->lock);
		if (r < 0)
			break;
		fetched += re - ro;
		for (uint64_t i = lo; i < hi; i++) {
			uint64_t so, sl;

			if (present[i])
				continue;
			spans_range(b->sp, first + i, &so, &sl);
			/* A span that cannot be checked holds no file data (spans.h). */
			if (spans_checkable(b->sp, first + i) &&
			    !spans_check(b->sp, first + i, buf + (so - off), sl))
				continue;
			r = pwrite_full(b->fd, buf + (so - off), sl, (off_t)so);
			if (r < 0)
				break;
			present[i] = true;
		}
		if (r < 0)
			break;
		while (lo < hi && present[lo])
			lo++;
		while (hi > lo && present[hi - 1])
			hi--;
	}
	if (r >= 0 && lo < hi)
		r = -EIO;
	if (r < 0) {
		uint64_t bo, bl, be;

		spans_range(b->sp, first + MIN(lo, n - 1), &bo, &bl);
		spans_range(b->sp, first + (hi ? hi - 1 : 0), &be, &bl);
		if (error_isset(&err))
			log_msg(LOG_ERR, "%s: %s", b->sp->layer, err.msg);
		else if (r == -EIO)
			log_msg(LOG_ERR,
			        "%s: bytes %llu-%llu do not match the span table, also when "
			        "fetched again",
			        b->sp->layer, (unsigned long long)bo,
			        (unsigned long long)(be + bl - 1));
		else
			log_errno(LOG_ERR, r, "%s: cannot fetch bytes %llu-%llu", b->sp->layer,
			          (unsigned long long)off, (unsigned long long)(end - 1));
	}
unlock:
	fl.l_type = F_UNLCK;
	(void)fcntl(b->fd, F_OFD_SETLK, &fl);
release:
	/* The claimed spans go back, present or missing, and waiters look again. */
	pthread_mutex_lock(&b->lock);
	for (uint64_t i = 0; i < n; i++) {
		bool there = present && present[i];

		b->state[first + i] = there ? SPAN_PRESENT : SPAN_MISSING;
		if (there) {
			b->present_spans++;
			b->stats.present += spans_owned(b->sp, first + i);
		}
	}
	pthread_cond_broadcast(&b->changed);
	pthread_mutex_unlock(&b->lock);
	return r < 0 ? r : (int64_t)fetched;
}

/* Claims the first run of missing spans in [first, last] (at most max bytes), SPAN_BUSY.
 * Returns 1 with the run, 0 when every span there is present, or waits while others
 * fetch the rest. Called with b->lock held. */
static int claim_run(struct lazyblob *b, uint64_t first, uint64_t last, uint64_t max,
                     uint64_t *ret_first, uint64_t *ret_n)
{
	for (;;) {
		bool busy = false;
		uint64_t i, n = 0, bytes = 0;

		for (i = first; i <= last; i++) {
			if (b->state[i] == SPAN_MISSING)
				break;
			busy |= b->state[i] == SPAN_BUSY;
		}
		if (i > last) {
			if (!busy)
				return 0;
			pthread_cond_wait(&b->changed, &b->lock);
			continue;
		}
		while (i + n <= last && b->state[i + n] == SPAN_MISSING &&
		       (n == 0 || bytes + span_len(b, i + n) <= max)) {
			b->state[i + n] = SPAN_BUSY;
			bytes += span_len(b, i + n);
			n++;
		}
		*ret_first = i;
		*ret_n = n;
		return 1;
	}
}

/* Makes spans [first, last] present, for reads: fetches the missing ones, waits for those
 * others fetch. */
static int fetch_spans(struct lazyblob *b, uint64_t first, uint64_t last)
{
	for (;;) {
		uint64_t run, n;
		int64_t got;
		int r;

		pthread_mutex_lock(&b->lock);
		if (b->present_spans == b->sp->n_spans) {
			pthread_mutex_unlock(&b->lock);
			return 0;
		}
		r = claim_run(b, first, last, b->o.max_request, &run, &n);
		if (r > 0)
			b->demand_active++;
		pthread_mutex_unlock(&b->lock);
		if (r == 0)
			return 0;
		got = fetch_run(b, run, n);
		pthread_mutex_lock(&b->lock);
		b->demand_active--;
		b->last_demand_ms = (int64_t)monotonic_ms();
		if (got > 0)
			b->stats.demand_bytes += (uint64_t)got;
		pthread_mutex_unlock(&b->lock);
		if (got < 0)
			return (int)got;
	}
}

struct ahead_job {
	struct lazyblob *b;
	uint64_t run, n; /* spans claimed SPAN_BUSY for it */
};

/* The read-ahead, fetched while the read that asked for it decodes what it has: at most
 * one such thread per blob (ahead_running), waited for by lazyblob_free(). Its spans are
 * claimed before it starts, so that the reads after it wait for them instead of fetching
 * them again; its failures are the next read's to meet (fetch_run() logs them). */
static void *ahead_thread(void *userdata)
{
	struct ahead_job *job = userdata;
	struct lazyblob *b = job->b;
	int64_t got = fetch_run(b, job->run, job->n);

	pthread_mutex_lock(&b->lock);
	if (got > 0)
		b->stats.demand_bytes += (uint64_t)got;
	b->ahead_running = false;
	pthread_cond_broadcast(&b->changed);
	pthread_mutex_unlock(&b->lock);
	free(job);
	return NULL;
}

/* Claims the first run of missing spans in [first, last] (at most max bytes) for a
 * read-ahead thread and starts it; nothing when none is missing. Called with b->lock held. */
static void start_ahead(struct lazyblob *b, uint64_t first, uint64_t last, uint64_t max)
{
	struct ahead_job *job;
	pthread_attr_t attr;
	pthread_t t;
	uint64_t i = first, n = 0, bytes = 0;
	int r;

	while (i <= last && b->state[i] != SPAN_MISSING)
		i++;
	while (i + n <= last && b->state[i + n] == SPAN_MISSING &&
	       (n == 0 || bytes + span_len(b, i + n) <= max))
		bytes += span_len(b, i + n++);
	if (n == 0 || !(job = malloc(sizeof(*job))))
		return;
	*job = (struct ahead_job){.b = b, .run = i, .n = n};
	for (uint64_t k = 0; k < n; k++)
		b->state[i + k] = SPAN_BUSY;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&t, &attr, ahead_thread, job);
	pthread_attr_destroy(&attr);
	if (r != 0) {
		for (uint64_t k = 0; k < n; k++)
			b->state[i + k] = SPAN_MISSING;
		free(job);
		return;
	}
	b->ahead_running = true;
}

int lazyblob_ensure(void *userdata, uint64_t off, uint64_t len)
{
	struct lazyblob *b = userdata;
	uint64_t ahead;

	if (len == 0 || off >= b->sp->blob_size)
		return 0;
	len = MIN(len, b->sp->blob_size - off);
	pthread_mutex_lock(&b->lock);
	if (b->failed) {
		pthread_mutex_unlock(&b->lock);
		return -EIO;
	}
	if (off <= b->seq_next && off + len > b->seq_next) {
		/* On from where the reads were: the run grows, and so does the read-ahead. */
		b->seq_run += off + len - b->seq_next;
		b->seq_next = off + len;
		if (b->seq_run >= b->o.ahead_after)
			b->ahead = MIN(MAX(b->ahead * 2, (uint64_t)SEQ_AHEAD), b->o.max_request);
	} else if (off + len > b->seq_next || off + b->seq_run < b->seq_next) {
		/* Elsewhere (a range within the run, a decoder starting again from its
		 * checkpoint, changes nothing). */
		b->seq_run = len;
		b->seq_next = off + len;
		b->ahead = 0;
	}
	ahead = MIN(b->ahead, b->sp->blob_size - (off + len));
	/* While half the read-ahead is still there (or being fetched), nothing more: the next
	 * request is then a large one, not the few KB the window slid by. */
	if (ahead > 0 && (b->ahead_running ||
	                  b->state[spans_find(b->sp, off + len + ahead / 2)] != SPAN_MISSING))
		ahead = 0;
	if (ahead > 0 && !b->stop)
		start_ahead(b, spans_find(b->sp, off + len),
		            spans_find(b->sp, off + len + ahead - 1), b->o.max_request);
	pthread_mutex_unlock(&b->lock);
	return fetch_spans(b, spans_find(b->sp, off), spans_find(b->sp, off + len - 1));
}

/* The whole file has the blob's digest: then it goes into blobs/. */
static int commit(struct lazyblob *b)
{
	_cleanup_(sha256_freep) struct sha256 *h = sha256_new();
	_cleanup_free_ uint8_t *buf = malloc(1u << 20);
	char digest[DIGEST_STR_LEN + 1];
	uint64_t off = 0;
	int r;

	if (!h || !buf)
		return -ENOMEM;
	while (off < b->sp->blob_size) {
		ssize_t n = pread_full(b->fd, buf,
		                       (size_t)MIN((uint64_t)(1u << 20), b->sp->blob_size - off),
		                       (off_t)off);

		if (n <= 0)
			return n < 0 ? (int)n : -EIO;
		sha256_update(h, buf, (size_t)n);
		off += (uint64_t)n;
	}
	sha256_final(h, digest);
	if (!streq(digest, b->sp->layer))
		return log_errno(LOG_ERR, -EBADMSG,
		                 "%s: the fetched blob has digest %s; it is not kept", b->sp->layer,
		                 digest);
	r = store_commit_lazy(b->s, b->sp->layer, b->fd);
	if (r == -ESTALE && store_has_blob(b->s, b->sp->layer))
		r = 0; /* another process committed it first */
	if (r < 0)
		return log_errno(LOG_ERR, r, "%s: cannot keep the fetched blob", b->sp->layer);
	pthread_mutex_lock(&b->lock);
	b->stats.committed = true;
	pthread_mutex_unlock(&b->lock);
	log_debug("%s: complete", b->sp->layer);
	return 0;
}

int lazyblob_fill(struct lazyblob *b)
{
	uint64_t run = 0, n = 0, max;
	int64_t got;
	int r;

	max = MIN((uint64_t)FILL_MAX_REQUEST, b->o.max_request);
	pthread_mutex_lock(&b->lock);
	if (b->stats.committed) {
		pthread_mutex_unlock(&b->lock);
		return 0;
	}
	for (;;) {
		int64_t quiet = (int64_t)monotonic_ms() - b->last_demand_ms;
		int wait;

		if (b->stop || b->failed) {
			pthread_mutex_unlock(&b->lock);
			return -ECANCELED;
		}
		if (b->demand_active == 0 && quiet >= (int64_t)b->o.fill_delay_ms)
			break;
		wait = b->demand_active ? QUIET_POLL_MS
		                        : (int)MIN((int64_t)QUIET_POLL_MS * 5,
		                                   (int64_t)b->o.fill_delay_ms - quiet);
		pthread_mutex_unlock(&b->lock);
		(void)poll(NULL, 0, wait);
		pthread_mutex_lock(&b->lock);
	}
	r = 0;
	if (b->sp->n_spans > 0) {
		/* From the cursor to the end, then from the start. */
		r = claim_run(b, b->fill_cursor, b->sp->n_spans - 1, max, &run, &n);
		if (r == 0 && b->fill_cursor > 0)
			r = claim_run(b, 0, b->sp->n_spans - 1, max, &run, &n);
	}
	pthread_mutex_unlock(&b->lock);
	if (r == 0) {
		r = commit(b);
		return r == -EBADMSG ? -ECANCELED : r < 0 ? -EIO : 0;
	}
	got = fetch_run(b, run, n);
	if (got < 0)
		return (int)got;
	pthread_mutex_lock(&b->lock);
	b->stats.fill_bytes += (uint64_t)got;
	b->fill_cursor = run + n < b->sp->n_spans ? run + n : 0;
	pthread_mutex_unlock(&b->lock);
	return 1;
}

int lazyblob_open(struct store *s, struct spans *sp, const struct lazyblob_opts *o,
                  struct lazyblob **ret)
{
	_cleanup_(spans_freep) struct spans *owned = sp;
	_cleanup_free_ uint8_t *buf = NULL;
	_cleanup_free_ bool *present = NULL;
	struct lazyblob *b;
	int r;

	if (!o->fetch)
		return -EINVAL;
	if (store_has_blob(s, sp->layer))
		return -EEXIST;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->s = s;
	b->sp = TAKE_PTR(owned);
	b->fd = -1;
	b->o = *o;
	if (!b->o.max_request)
		b->o.max_request = DEFAULT_MAX_REQUEST;
	if (!b->o.ahead_after)
		b->o.ahead_after = SEQ_MIN;
	b->o.max_request = MAX(b->o.max_request, b->sp->max_len);
	/* The fill waits its delay from the start too: a container's first reads go first. */
	b->last_demand_ms = (int64_t)monotonic_ms();
	b->stats.size = b->sp->blob_size;
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->changed, NULL);
	b->state = calloc(b->sp->n_spans ? b->sp->n_spans : 1, 1);
	buf = malloc(b->sp->max_len ? b->sp->max_len : 1);
	present = calloc(1, sizeof(*present));
	if (!b->state || !buf || !present) {
		lazyblob_free(b);
		return -ENOMEM;
	}
	r = store_open_lazy(s, b->sp->layer, b->sp->blob_size, &b->fd);
	if (r < 0) {
		lazyblob_free(b);
		return r;
	}
	/* What an earlier daemon, or another process now, fetched and verified. */
	for (uint64_t i = 0; i < b->sp->n_spans; i++)
		if (find_present(b, i, 1, buf, present) == 1) {
			b->state[i] = SPAN_PRESENT;
			b->present_spans++;
			b->stats.present += spans_owned(b->sp, i);
		}
	*ret = b;
	return 0;
}

void lazyblob_free(struct lazyblob *b)
{
	if (!b)
		return;
	/* A read-ahead in flight ends with its request. */
	pthread_mutex_lock(&b->lock);
	b->stop = true;
	while (b->ahead_running)
		pthread_cond_wait(&b->changed, &b->lock);
	pthread_mutex_unlock(&b->lock);
	if (b->fd >= 0)
		close(b->fd);
	pthread_cond_destroy(&b->changed);
	pthread_mutex_destroy(&b->lock);
	free(b->state);
	spans_free(b->sp);
	free(b);
}

void lazyblob_stop(struct lazyblob *b)
{
	pthread_mutex_lock(&b->lock);
	b->stop = true;
	pthread_cond_broadcast(&b->changed);
	pthread_mutex_unlock(&b->lock);
}

int lazyblob_fd(const struct lazyblob *b)
{
	return b->fd;
}

const char *lazyblob_digest(const struct lazyblob *b)
{
	return b->sp->layer;
}

void lazyblob_get_stats(struct lazyblob *b, struct lazyblob_stats *ret)
{
	pthread_mutex_lock(&b->lock);
	*ret = b->stats;
	pthread_mutex_unlock(&b->lock);
}
