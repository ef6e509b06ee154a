/* Process-wide LRU of decoded spans; the contract is in spancache.h. */
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include "common/macros.h"
#include "fsd/index/spancache.h"

#define N_BUCKETS 1024u
#define N_GHOSTS 64u /* evicted keys remembered: more than parallel readers evict in a row */
#define N_SPARE 2u   /* freed buffers kept for reuse */
#define BUF_HEADER 64u

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
static size_t target = SPANCACHE_MIN_SIZE;    /* protected by lock; <= limit */
static uint64_t next_owner = 1;               /* protected by lock */

/* Buffers freed last, for spancache_alloc(); protected by lock. */
static uint8_t *spare[N_SPARE];

/* Keys of recently evicted spans, a ring; protected by lock. */
static struct {
	uint64_t owner, unit;
} ghosts[N_GHOSTS];
static unsigned ghost_next;

static unsigned bucket_of(uint64_t owner, uint64_t unit)
{
	uint64_t h = owner * 0x9e3779b97f4a7c15ull ^ unit * 0xc2b2ae3d27d4eb4full;

	return (unsigned)(h >> 32) % N_BUCKETS;
}

/* A buffer is a mapping: a header, then the bytes. */
struct buf_header {
	size_t size;        /* of the mapping */
	uint8_t *next_free; /* in unmap_list */
};

static struct buf_header *header_of(const uint8_t *data)
{
	return (struct buf_header *)(void *)(data - BUF_HEADER);
}

static size_t buf_size(const uint8_t *data)
{
	return header_of(data)->size;
}

/* Buffers to unmap once the lock is dropped; protected by lock. */
static uint8_t *unmap_list;

static void buf_unmap_later(uint8_t *data)
{
	if (!data)
		return;
	header_of(data)->next_free = unmap_list;
	unmap_list = data;
}

/* Drops the lock, then unmaps what was freed while it was held. */
static void unlock_and_unmap(void)
{
	uint8_t *data = unmap_list;

	unmap_list = NULL;
	pthread_mutex_unlock(&lock);
	while (data) {
		uint8_t *next = header_of(data)->next_free;

		munmap(header_of(data), buf_size(data));
		data = next;
	}
}

/* Called with lock held: data becomes a spare or is unmapped at unlock_and_unmap(). */
static void buf_free_locked(uint8_t *data)
{
	unsigned small = 0;

	for (unsigned i = 0; i < N_SPARE; i++) {
		if (!spare[i]) {
			spare[i] = data;
			return;
		}
		if (buf_size(spare[i]) < buf_size(spare[small]))
			small = i;
	}
	/* Full: keep the larger ones, they can hold any span the smaller could. */
	if (buf_size(data) > buf_size(spare[small])) {
		uint8_t *out = spare[small];

		spare[small] = data;
		data = out;
	}
	buf_unmap_later(data);
}

uint8_t *spancache_alloc(size_t len)
{
	uint8_t *data = NULL;
	size_t size;
	void *p;

	pthread_mutex_lock(&lock);
	for (unsigned i = 0; i < N_SPARE; i++) {
		if (spare[i] && buf_size(spare[i]) - BUF_HEADER >= len &&
		    (!data || buf_size(spare[i]) < buf_size(data))) {
			data = spare[i];
		}
	}
	for (unsigned i = 0; data && i < N_SPARE; i++)
		if (spare[i] == data)
			spare[i] = NULL;
	pthread_mutex_unlock(&lock);
	if (data)
		return data;
	if (len > SIZE_MAX - BUF_HEADER - 4096)
		return NULL;
	size = (len + BUF_HEADER + 4095) & ~(size_t)4095;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	((struct buf_header *)p)->size = size;
	return (uint8_t *)p + BUF_HEADER;
}

void spancache_free(uint8_t *data)
{
	if (!data)
		return;
	pthread_mutex_lock(&lock);
	buf_free_locked(data);
	unlock_and_unmap();
}

/* Called with lock held. */
static void span_unref(struct cspan *c)
{
	if (--c->refs > 0)
		return;
	buf_free_locked((uint8_t *)c->pub.data);
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

static size_t floor_locked(void)
{
	return MIN(limit, (size_t)SPANCACHE_MIN_SIZE);
}

static void evict_locked(void)
{
	while (cached_bytes > target && lru_tail) {
		/* Owner numbers start at 1: a zeroed slot matches nothing. */
		ghosts[ghost_next].owner = lru_tail->owner;
		ghosts[ghost_next].unit = lru_tail->unit;
		ghost_next = (ghost_next + 1) % N_GHOSTS;
		uncache(lru_tail);
	}
}

/* Adapts the size to an insert of len bytes under key (owner, unit). */
static void adapt_locked(uint64_t owner, uint64_t unit, size_t len)
{
	for (unsigned i = 0; i < N_GHOSTS; i++) {
		if (ghosts[i].owner == owner && ghosts[i].unit == unit) {
			ghosts[i].owner = 0;
			target = MIN(limit, target + len);
			return;
		}
	}
	if (target > floor_locked())
		target -= MIN(target - floor_locked(), MAX(len / 16, (size_t)1));
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
		spancache_free(data);
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
		spancache_free(data);
		free(c);
		return &old->pub;
	}
	if (len <= limit) {
		adapt_locked(owner, unit, len);
		b = bucket_of(owner, unit);
		c->hnext = buckets[b];
		buckets[b] = c;
		lru_push_front(c);
		c->cached = true;
		c->refs++; /* the table's */
		cached_bytes += len;
		evict_locked();
	}
	unlock_and_unmap();
	return &c->pub;
}

void spancache_put(const struct span *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&lock);
	span_unref((struct cspan *)s);
	unlock_and_unmap();
}

void spancache_drop_owner(uint64_t owner)
{
	pthread_mutex_lock(&lock);
	for (struct cspan *c = lru_head, *next; c; c = next) {
		next = c->lru_next;
		if (c->owner == owner)
			uncache(c);
	}
	unlock_and_unmap();
}

void spancache_set_size(size_t bytes)
{
	pthread_mutex_lock(&lock);
	limit = bytes;
	target = floor_locked();
	evict_locked();
	unlock_and_unmap();
}

size_t spancache_target(void)
{
	size_t n;

	pthread_mutex_lock(&lock);
	n = target;
	pthread_mutex_unlock(&lock);
	return n;
}

size_t spancache_bytes(void)
{
	size_t n;

	pthread_mutex_lock(&lock);
	n = cached_bytes;
	pthread_mutex_unlock(&lock);
	return n;
}
