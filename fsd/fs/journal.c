/* Namespace changes in flight; see journal.h. */
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "fsd/fs/journal.h"

#define JOURNAL_SLOTS 256
#define JOURNAL_MAGIC UINT64_C(0x314c4e524a534649) /* "IFSJRNL1" */

enum { SLOT_FREE = 0, SLOT_CLAIMED = 1, SLOT_LIVE = 2 };

struct record {
	_Atomic uint32_t state;
	uint32_t op;
	uint32_t pid;
	uint32_t pad0;
	uint64_t parent, newparent;
	uint64_t name_hash, newname_hash;
	uint64_t pad[2];
};

struct journal_file {
	uint64_t magic;
	uint64_t pad[7];
	struct record recs[JOURNAL_SLOTS];
};

_Static_assert(sizeof(struct record) == 64, "one cache line a record");

struct journal {
	struct journal_file *map;
	_Atomic unsigned n_prior;
	uint64_t prior_until_ms;
	_Atomic bool prior[JOURNAL_SLOTS]; /* records of the dead worker, not ours to reuse */
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* FNV-1a; 0 for no name. */
static uint64_t name_hash(const char *s)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	if (!s)
		return 0;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * UINT64_C(0x100000001b3);
	return h | 1;
}

int journal_open(int dirfd, const char *name, bool keep, struct journal **ret)
{
	struct journal *j;
	struct stat st;
	void *map;
	int fd;

	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	if (dirfd < 0) {
		*ret = j;
		return 0;
	}
	fd = openat(dirfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || fstat(fd, &st) < 0) {
		int r = -errno;

		if (fd >= 0)
			close(fd);
		free(j);
		return r;
	}
	if (!keep || st.st_size != (off_t)sizeof(struct journal_file)) {
		keep = false;
		if (ftruncate(fd, 0) < 0 || ftruncate(fd, sizeof(struct journal_file)) < 0) {
			int r = -errno;

			close(fd);
			free(j);
			return r;
		}
	}
	map = mmap(NULL, sizeof(struct journal_file), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (map == MAP_FAILED) {
		free(j);
		return -errno;
	}
	(void)madvise(map, sizeof(struct journal_file), MADV_RANDOM); /* as handles.c */
	j->map = map;
	if (!keep || j->map->magic != JOURNAL_MAGIC) {
		memset(j->map, 0, sizeof(*j->map));
		j->map->magic = JOURNAL_MAGIC;
	}
	for (unsigned i = 0; i < JOURNAL_SLOTS; i++) {
		struct record *rec = &j->map->recs[i];

		/* Every whole record is a dead worker's: this one has recorded nothing yet. */
		if (atomic_load(&rec->state) == SLOT_LIVE) {
			atomic_store(&j->prior[i], true);
			j->n_prior++;
		} else
			atomic_store(&rec->state, SLOT_FREE); /* half-written: never used */
	}
	j->prior_until_ms = now_ms() + JOURNAL_PRIOR_MS;
	*ret = j;
	return 0;
}

void journal_free(struct journal *j)
{
	if (!j)
		return;
	if (j->map)
		munmap(j->map, sizeof(*j->map));
	free(j);
}

int journal_begin(struct journal *j, const struct journal_change *c)
{
	if (!j || !j->map)
		return -1;
	for (unsigned i = 0; i < JOURNAL_SLOTS; i++) {
		struct record *rec = &j->map->recs[i];
		uint32_t free_state = SLOT_FREE;

		if (atomic_load_explicit(&j->prior[i], memory_order_relaxed))
			continue;
		if (!atomic_compare_exchange_strong(&rec->state, &free_state, SLOT_CLAIMED))
			continue;
		rec->op = (uint32_t)c->op;
		rec->pid = c->pid;
		rec->parent = c->parent;
		rec->newparent = c->newparent;
		rec->name_hash = name_hash(c->name);
		rec->newname_hash = name_hash(c->newname);
		atomic_store_explicit(&rec->state, SLOT_LIVE, memory_order_release);
		return (int)i;
	}
	return -1;
}

void journal_end(struct journal *j, int slot)
{
	if (!j || !j->map || slot < 0 || slot >= JOURNAL_SLOTS)
		return;
	atomic_store_explicit(&j->map->recs[slot].state, SLOT_FREE, memory_order_release);
}

/* Forgets every record of the dead worker: they are too old to be a request sent again. */
static void expire_prior(struct journal *j)
{
	for (unsigned i = 0; i < JOURNAL_SLOTS; i++) {
		bool was = true;

		if (atomic_compare_exchange_strong(&j->prior[i], &was, false)) {
			atomic_store(&j->map->recs[i].state, SLOT_FREE);
			atomic_fetch_sub(&j->n_prior, 1);
		}
	}
}

bool journal_take_prior(struct journal *j, const struct journal_change *c)
{
	uint64_t nh, nnh;

	if (!j || !j->map || atomic_load_explicit(&j->n_prior, memory_order_acquire) == 0)
		return false;
	if (now_ms() > j->prior_until_ms) {
		expire_prior(j);
		return false;
	}
	nh = name_hash(c->name);
	nnh = name_hash(c->newname);
	for (unsigned i = 0; i < JOURNAL_SLOTS; i++) {
		struct record *rec = &j->map->recs[i];
		bool was = true;

		if (!atomic_load(&j->prior[i]) || rec->op != (uint32_t)c->op ||
		    rec->pid != c->pid || rec->parent != c->parent || rec->name_hash != nh ||
		    rec->newparent != c->newparent || rec->newname_hash != nnh)
			continue;
		if (!atomic_compare_exchange_strong(&j->prior[i], &was, false))
			continue; /* another thread took it */
		atomic_store(&rec->state, SLOT_FREE);
		atomic_fetch_sub(&j->n_prior, 1);
		return true;
	}
	return false;
}

unsigned journal_prior_count(struct journal *j)
{
	return j ? atomic_load(&j->n_prior) : 0;
}
