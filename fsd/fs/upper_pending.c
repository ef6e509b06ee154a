/* Copies whose data is not yet durable: the pending names in the work directory, the
 * syncer thread that retires them, the link count users see meanwhile, a user's fsync,
 * and recovery after a crash. See upper.h for the contract. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include "common/fileio.h"
#include "common/log.h"
#include "upper_internal.h"

/* Copies synced with one fsync of the work directory. */
#define SYNC_BATCH 64
/* At most this many copies pending: a copy-up waits for the syncer beyond it, which bounds
 * the memory, the open fds and the work left for recovery. */
#define MAX_PENDING 1024

struct pending_entry {
	struct pending_entry *hnext; /* hash chain; changed with plock and nlink_lock held */
	struct pending_entry *qnext; /* syncer queue; protected by plock */
	ino_t ino;                   /* immutable */
	int fd;                      /* the file (O_RDWR); immutable */
	bool linked;                 /* the pending name exists; protected by nlink_lock */
	bool queued;                 /* protected by plock */
	bool busy;                   /* being synced (syncer or fsync); protected by plock */
	uint64_t queued_ms;          /* protected by plock */
	char name[UPPER_PENDING_NAME_MAX];
};

/* ---- names ---- */

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* n hex digits at s followed by the character end; their value in *ret when ret. */
static bool hex_field(const char *s, size_t n, char end, uint64_t *ret)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++) {
		if (!is_hex(s[i]))
			return false;
		v = v << 4 | (uint64_t)(s[i] <= '9' ? s[i] - '0' : s[i] - 'a' + 10);
	}
	if (s[n] != end)
		return false;
	if (ret)
		*ret = v;
	return true;
}

int upper_pending_name_parse(const char *name, struct upper_pending_name *ret)
{
	struct upper_pending_name p = {0};
	const char *s = name;
	uint64_t node, seq;
	size_t len, seq_len;

	len = strnlen(name, UPPER_PENDING_NAME_MAX);
	if (len >= UPPER_PENDING_NAME_MAX || !startswith(name, "p-"))
		return -EINVAL;
	s += 2;
	if (!hex_field(s, UPPER_BOOT_LEN, '-', NULL))
		return -EINVAL;
	memcpy(p.boot, s, UPPER_BOOT_LEN);
	s += UPPER_BOOT_LEN + 1;
	if (!hex_field(s, UPPER_IMAGE_LEN, '-', NULL))
		return -EINVAL;
	memcpy(p.image, s, UPPER_IMAGE_LEN);
	s += UPPER_IMAGE_LEN + 1;
	if (!hex_field(s, 8, '-', &node))
		return -EINVAL;
	s += 9;
	seq_len = len - (size_t)(s - name);
	if (seq_len < 1 || seq_len > 16 || !hex_field(s, seq_len, '\0', &seq))
		return -EINVAL;
	p.node = (uint32_t)node;
	p.seq = seq;
	*ret = p;
	return 0;
}

void upper_pending_name_format(const struct upper_pending_name *p, char *buf)
{
	snprintf(buf, UPPER_PENDING_NAME_MAX, "p-%.16s-%.12s-%08x-%llx", p->boot, p->image,
	         (unsigned)p->node, (unsigned long long)p->seq);
}

/* ---- the set of pending copies ---- */

static struct pending_entry **bucket(struct upper *u, ino_t ino)
{
	return &u->buckets[(uint64_t)ino % PENDING_BUCKETS];
}

/* With plock or nlink_lock held. */
static struct pending_entry *find(struct upper *u, ino_t ino)
{
	for (struct pending_entry *e = *bucket(u, ino); e; e = e->hnext)
		if (e->ino == ino)
			return e;
	return NULL;
}

/* With plock and nlink_lock held for writing. */
static void unhash(struct upper *u, struct pending_entry *e)
{
	for (struct pending_entry **p = bucket(u, e->ino); *p; p = &(*p)->hnext)
		if (*p == e) {
			*p = e->hnext;
			u->n_pending--;
			return;
		}
}

/* With plock held. */
static void dequeue(struct upper *u, struct pending_entry *e)
{
	struct pending_entry *prev = NULL;

	if (!e->queued)
		return;
	for (struct pending_entry *q = u->qhead; q; prev = q, q = q->qnext)
		if (q == e) {
			if (prev)
				prev->qnext = e->qnext;
			else
				u->qhead = e->qnext;
			if (u->qtail == e)
				u->qtail = prev;
			break;
		}
	e->qnext = NULL;
	e->queued = false;
}

static void entry_free(struct pending_entry *e)
{
	if (e->fd >= 0)
		close(e->fd);
	free(e);
}

/* Removes the pending name of e (marked busy by the caller): e's data must be durable. */
static int unlink_name(struct upper *u, struct pending_entry *e)
{
	int r = 0;

	pthread_rwlock_wrlock(&u->nlink_lock);
	if (e->linked) {
		if (unlinkat(u->work_fd, e->name, 0) < 0 && errno != ENOENT)
			r = -errno;
		else
			e->linked = false;
	}
	pthread_rwlock_unlock(&u->nlink_lock);
	return r;
}

/* Forgets the entries of batch (busy, owned by the caller) whose name is gone; the others
 * (their sync failed) stay known, so their link is still counted off, and are left to a
 * user's fsync or to recovery. */
static void retire(struct upper *u, struct pending_entry **batch, size_t n)
{
	pthread_mutex_lock(&u->plock);
	pthread_rwlock_wrlock(&u->nlink_lock);
	for (size_t i = 0; i < n; i++) {
		struct pending_entry *e = batch[i];

		if (!e->linked) {
			unhash(u, e);
			entry_free(e);
			batch[i] = NULL;
		}
	}
	pthread_rwlock_unlock(&u->nlink_lock);
	for (size_t i = 0; i < n; i++)
		if (batch[i])
			batch[i]->busy = false;
	pthread_cond_broadcast(&u->pcond);
	pthread_mutex_unlock(&u->plock);
}

static void *syncer_main(void *arg)
{
	struct upper *u = arg;

	pthread_mutex_lock(&u->plock);
	for (;;) {
		struct pending_entry *batch[SYNC_BATCH];
		size_t n = 0;
		bool dir_sync = false;

		if (!u->qhead) {
			if (u->stop)
				break;
			pthread_cond_wait(&u->pcond, &u->plock);
			continue;
		}
		if (u->delay_ms && !u->stop) {
			uint64_t due = u->qhead->queued_ms + u->delay_ms, now = monotonic_ms();

			if (now < due) {
				struct timespec ts;

				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_sec += (time_t)((due - now) / 1000);
				ts.tv_nsec += (long)((due - now) % 1000) * 1000000;
				if (ts.tv_nsec >= 1000000000) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000;
				}
				pthread_cond_timedwait(&u->pcond, &u->plock, &ts);
				continue;
			}
		}
		while (u->qhead && n < SYNC_BATCH) {
			struct pending_entry *e = u->qhead;

			dequeue(u, e);
			e->busy = true;
			batch[n++] = e;
		}
		pthread_mutex_unlock(&u->plock);
		for (size_t i = 0; i < n; i++) {
			int r = fdatasync(batch[i]->fd) < 0 ? -errno : 0;

			if (r >= 0)
				r = unlink_name(u, batch[i]);
			if (r < 0)
				log_errno(LOG_WARNING, r,
				          "cannot make a copied-up file durable (work/%s kept for "
				          "recovery)",
				          batch[i]->name);
			else
				dir_sync = true;
		}
		/* The names' removal is durable before the entries are forgotten: a user's
		 * fsync meanwhile waits for it (busy), so recovery never finds a name whose
		 * file was fsynced since. */
		if (dir_sync && fsync(u->work_fd) < 0)
			log_errno(LOG_WARNING, -errno, "cannot fsync the work directory");
		retire(u, batch, n);
		pthread_mutex_lock(&u->plock);
	}
	pthread_mutex_unlock(&u->plock);
	return NULL;
}

void pending_init(struct upper *u)
{
	pthread_mutex_init(&u->plock, NULL);
	pthread_cond_init(&u->pcond, NULL);
	pthread_rwlock_init(&u->nlink_lock, NULL);
}

void pending_done(struct upper *u)
{
	pthread_mutex_lock(&u->plock);
	u->stop = true;
	pthread_cond_broadcast(&u->pcond);
	pthread_mutex_unlock(&u->plock);
	if (u->syncer_running)
		pthread_join(u->syncer, NULL);
	u->syncer_running = false;
	/* What is left failed to sync: its name stays for recovery. */
	for (size_t i = 0; i < PENDING_BUCKETS; i++)
		while (u->buckets[i]) {
			struct pending_entry *e = u->buckets[i];

			u->buckets[i] = e->hnext;
			entry_free(e);
		}
	pthread_rwlock_destroy(&u->nlink_lock);
	pthread_cond_destroy(&u->pcond);
	pthread_mutex_destroy(&u->plock);
}

int pending_add(struct upper *u, int fd, const char *name)
{
	struct pending_entry *e;
	struct stat st;

	if (fstat(fd, &st) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		close(fd);
		return -ENOMEM;
	}
	e->ino = st.st_ino;
	e->fd = fd;
	e->linked = true;
	snprintf(e->name, sizeof(e->name), "%s", name);
	pthread_mutex_lock(&u->plock);
	/* Backpressure: the syncer needs no lock of the caller's to make progress. */
	while (u->n_pending >= MAX_PENDING && u->syncer_running)
		pthread_cond_wait(&u->pcond, &u->plock);
	if (!u->syncer_running && !u->stop && pthread_create(&u->syncer, NULL, syncer_main, u) == 0)
		u->syncer_running = true;
	pthread_rwlock_wrlock(&u->nlink_lock);
	e->hnext = *bucket(u, e->ino);
	*bucket(u, e->ino) = e;
	u->n_pending++;
	pthread_rwlock_unlock(&u->nlink_lock);
	pthread_mutex_unlock(&u->plock);
	return 0;
}

void pending_queue(struct upper *u, ino_t ino)
{
	struct pending_entry *e;
	bool inline_sync;

	pthread_mutex_lock(&u->plock);
	e = find(u, ino);
	inline_sync = !u->syncer_running;
	if (e && !inline_sync) {
		e->queued = true;
		e->queued_ms = monotonic_ms();
		if (u->qtail)
			u->qtail->qnext = e;
		else
			u->qhead = e;
		u->qtail = e;
		pthread_cond_broadcast(&u->pcond);
	}
	pthread_mutex_unlock(&u->plock);
	/* No syncer thread (it could not be started): synchronously, as before. */
	if (e && inline_sync)
		(void)upper_sync_pending(u, ino);
}

void pending_cancel(struct upper *u, ino_t ino)
{
	struct pending_entry *e;

	pthread_mutex_lock(&u->plock);
	pthread_rwlock_wrlock(&u->nlink_lock);
	e = find(u, ino);
	if (e) {
		unhash(u, e);
		(void)unlinkat(u->work_fd, e->name, 0);
	}
	pthread_rwlock_unlock(&u->nlink_lock);
	pthread_cond_broadcast(&u->pcond);
	pthread_mutex_unlock(&u->plock);
	if (e)
		entry_free(e);
}

/* ---- what users see and do ---- */

int upper_fstatat(struct upper *u, int dirfd, const char *name, int flags, struct stat *ret)
{
	struct stat st;
	int r = 0;

	pthread_rwlock_rdlock(&u->nlink_lock);
	if (fstatat(dirfd, name, &st, flags | AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	else if (S_ISREG(st.st_mode) && st.st_nlink > 0 && u->n_pending > 0) {
		/* Also when the pending name is the only link left: the user unlinked the
		 * file (kept open), whose count is then 0. */
		struct pending_entry *e = find(u, st.st_ino);

		if (e && e->linked)
			st.st_nlink--;
	}
	pthread_rwlock_unlock(&u->nlink_lock);
	if (r < 0)
		return r;
	*ret = st;
	return 0;
}

int upper_sync_pending(struct upper *u, ino_t ino)
{
	struct pending_entry *e;
	int r;

	pthread_mutex_lock(&u->plock);
	for (;;) {
		e = find(u, ino);
		if (!e || !e->busy)
			break;
		/* The syncer has it: done (or failed) when it gives it back. */
		pthread_cond_wait(&u->pcond, &u->plock);
	}
	if (!e) {
		pthread_mutex_unlock(&u->plock);
		return 0;
	}
	dequeue(u, e);
	e->busy = true;
	pthread_mutex_unlock(&u->plock);
	r = fdatasync(e->fd) < 0 ? -errno : 0;
	if (r >= 0)
		r = unlink_name(u, e);
	if (r >= 0 && fsync(u->work_fd) < 0)
		r = -errno;
	retire(u, &e, 1);
	return r;
}

int upper_flush(struct upper *u)
{
	pthread_mutex_lock(&u->plock);
	while (u->syncer_running && (u->qhead || u->n_pending > 0)) {
		bool any_busy = false;

		for (size_t i = 0; i < PENDING_BUCKETS && !any_busy; i++)
			for (struct pending_entry *e = u->buckets[i]; e; e = e->hnext)
				if (e->busy || e->queued) {
					any_busy = true;
					break;
				}
		if (!any_busy)
			break; /* only failed copies left */
		pthread_cond_wait(&u->pcond, &u->plock);
	}
	pthread_mutex_unlock(&u->plock);
	return 0;
}

/* ---- recovery ---- */

/* Rewrites the data of fd from src: what a copy-up wrote, times kept. */
static int rewrite(int fd, const struct upper_src *src)
{
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (ftruncate(fd, 0) < 0)
		return -errno;
	r = upper_copy_data(src, fd);
	if (r < 0)
		return r;
	if (futimens(fd, (struct timespec[]){st.st_atim, st.st_mtim}) < 0)
		return -errno;
	return 0;
}

/* One pending name: 1 when rewritten, 0 when synced or removed, or -errno. */
static int recover_one(struct upper *u, const char *name, const struct upper_pending_name *p,
                       upper_src_fn src_of, void *ctx)
{
	_cleanup_close_ int pfd = -1, fd = -1;
	char path[40];
	struct stat st;
	int r = 0;

	/* Never opened through the name: an O_PATH fd, checked, then reopened. */
	pfd = openat(u->work_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(pfd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_nlink <= 1) {
		/* Not a copy, or a copy that never took its place (or lost it). */
		if (rm_rf_at(u->work_fd, name) < 0)
			return -errno;
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", pfd);
	fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (!streq(p->boot, u->boot)) {
		struct upper_src src = {0};

		if (!streq(p->image, u->image)) {
			log_msg(
			    LOG_WARNING,
			    "work/%s: a copy-up of image %s interrupted by a crash; this is image "
			    "%s, so its data is kept as it is",
			    name, p->image, u->image);
		} else if ((r = src_of(ctx, p->node, &src)) < 0 || !S_ISREG(src.st.st_mode)) {
			log_msg(LOG_WARNING,
			        "work/%s: lower node %u is not a regular file of the image; data "
			        "kept as it is",
			        name, (unsigned)p->node);
			r = 0;
		} else {
			r = rewrite(fd, &src);
			if (r < 0)
				return r;
			r = 1;
		}
	}
	if (fdatasync(fd) < 0)
		return -errno;
	if (unlinkat(u->work_fd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	return r;
}

int upper_recover(struct upper *u, upper_src_fn src_of, void *ctx)
{
	DIR *d;
	struct dirent *de;
	int r = 0, rewritten = 0;
	bool any = false;

	r = opendir_fd(u->work_fd, &d);
	if (r < 0)
		return r;
	while ((de = readdir(d))) {
		struct upper_pending_name p;
		int q;

		if (upper_pending_name_parse(de->d_name, &p) < 0)
			continue;
		any = true;
		q = recover_one(u, de->d_name, &p, src_of, ctx);
		if (q < 0) {
			log_errno(LOG_WARNING, q, "cannot recover the copy-up work/%s", de->d_name);
			if (r >= 0)
				r = q;
		} else
			rewritten += q;
	}
	closedir(d);
	if (any && fsync(u->work_fd) < 0 && r >= 0)
		r = -errno;
	return r < 0 ? r : rewritten;
}
