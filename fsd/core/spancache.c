/* Process-wide LRU of decoded spans; the contract is in spancache.h. */
#include <pthread.h>
#include <stdlib.h>
#include "common/macros.h"
#include "fsd/core/spancache.h"

#define N_BUCKETS 1024u

struct cspan {
	struct span pub; /* first: spancache_put() casts back */
	uint64_t owner, unit;
	unsigned refs;                     /* protected by lock; the table holds one while cached */
	bool cached;                       /* in the table and the LRU list */
	struct cspan *hnext;               /* bucket chain */
	struct cspan *lru_prev, *lru_next; /* lru_next towards older */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct cspan *buckets[N_BUCKETS];      /* protected by lock */
static struct cspan *lru_head, *lru_tail;     /* protected by lock; head is the newest */
static size_t cached_bytes;                   /* protected by lock */
static size_t limit = SPANCACHE_DEFAULT_SIZE; /* protected by lock */
static uint64_t next_owner = 1;               /* protected by lock */

static unsigned bucket_of(uint64_t owner, uint64_t unit)
{
	uint64_t h = owner * 0x9e3779b97f4a7c15ull ^ unit * 0xc2b2ae3d27d4eb4full;

	return (unsigned)(h >> 32) % N_BUCKETS;
}

static void span_unref(struct cspan *c)
{
	if (--c->refs > 0)
		return;
	free((void *)c->pub.data);
	free(c);
}

static void lru_unlink(struct cspan *c)
{
	if (c->lru_prev)
		c->lru_prev->lru_next = c->lru_next;
	else
		lru_head = c->lru_next;
	if (c->lru_next)
		c->lru_next->lru_prev = c->lru_prev;
	else
		lru_tail = c->lru_prev;
	c->lru_prev = c->lru_next = NULL;
}

static void lru_push_front(struct cspan *c)
{
	c->lru_prev = NULL;
	c->lru_next = lru_head;
	if (lru_head)
		lru_head->lru_prev = c;
	lru_head = c;
	if (!lru_tail)
		lru_tail = c;
}

/* Removes c from the table and the list and drops the table's reference. */
static void uncache(struct cspan *c)
{
	struct cspan **pp = &buckets[bucket_of(c->owner, c->unit)];

	while (*pp && *pp != c)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = c->hnext;
	lru_unlink(c);
	c->cached = false;
	cached_bytes -= c->pub.len;
	span_unref(c);
}

static void evict_locked(void)
{
	while (cached_bytes > limit && lru_tail)
		uncache(lru_tail);
}

static struct cspan *find_locked(uint64_t owner, uint64_t unit)
{
	for (struct cspan *c = buckets[bucket_of(owner, unit)]; c; c = c->hnext)
		if (c->owner == owner && c->unit == unit)
			return c;
	return NULL;
}

uint64_t spancache_new_owner(void)
{
	uint64_t o;

	pthread_mutex_lock(&lock);
	o = next_owner++;
	pthread_mutex_unlock(&lock);
	return o;
}

const struct span *spancache_get(uint64_t owner, uint64_t unit)
{
	struct cspan *c;

	pthread_mutex_lock(&lock);
	c = find_locked(owner, unit);
	if (c) {
		c->refs++;
		lru_unlink(c);
		lru_push_front(c);
	}
	pthread_mutex_unlock(&lock);
	return c ? &c->pub : NULL;
}

const struct span *spancache_insert(uint64_t owner, uint64_t unit, uint8_t *data, size_t len)
{
	struct cspan *c, *old;
	unsigned b;

	c = calloc(1, sizeof(*c));
	if (!c) {
		free(data);
		return NULL;
	}
	c->pub = (struct span){.data = data, .len = len};
	c->owner = owner;
	c->unit = unit;
	c->refs = 1; /* the caller's */

	pthread_mutex_lock(&lock);
	old = find_locked(owner, unit);
	if (old) {
		old->refs++;
		pthread_mutex_unlock(&lock);
		free(data);
		free(c);
		return &old->pub;
	}
	if (len <= limit) {
		b = bucket_of(owner, unit);
		c->hnext = buckets[b];
		buckets[b] = c;
		lru_push_front(c);
		c->cached = true;
		c->refs++; /* the table's */
		cached_bytes += len;
		evict_locked();
	}
	pthread_mutex_unlock(&lock);
	return &c->pub;
}

void spancache_put(const struct span *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&lock);
	span_unref((struct cspan *)s);
	pthread_mutex_unlock(&lock);
}

void spancache_drop_owner(uint64_t owner)
{
	pthread_mutex_lock(&lock);
	for (struct cspan *c = lru_head, *next; c; c = next) {
		next = c->lru_next;
		if (c->owner == owner)
			uncache(c);
	}
	pthread_mutex_unlock(&lock);
}

void spancache_set_size(size_t bytes)
{
	pthread_mutex_lock(&lock);
	limit = bytes;
	evict_locked();
	pthread_mutex_unlock(&lock);
}

size_t spancache_bytes(void)
{
	size_t n;

	pthread_mutex_lock(&lock);
	n = cached_bytes;
	pthread_mutex_unlock(&lock);
	return n;
}
