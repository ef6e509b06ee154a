/* The handle table; see handles.h. */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fsd/fs/handles.h"

#define HANDLES_MAGIC UINT64_C(0x31444e4853464d49) /* "IMFSHND1" */

/* Slot 0 of the mapping. */
struct handles_header {
	uint64_t magic;
	uint32_t capacity;
	uint32_t high; /* slots below this were used at some time */
};

_Static_assert(sizeof(struct handles_header) == sizeof(struct handle_rec), "one slot each");

/* The open objects, in chunks of CHUNK slots allocated when a slot in them is first used:
 * a table sized for a million handles costs nothing until they are used. */
#define CHUNK_SHIFT 12
#define CHUNK (1u << CHUNK_SHIFT)
/* Records a new table's file has room for at first (64 KiB). */
#define FILE_RECS_MIN 4096u

struct handles {
	struct handle_rec *recs; /* the mapping: recs[0] is the header */
	size_t map_size;
	/* The file, and the records it has room for (the mapping is of the whole capacity; the
	 * file grows as slots are given out, so that it is never larger than what was used);
	 * fd -1 for a table in anonymous memory. Protected by lock. */
	int fd;
	uint32_t file_recs;
	uint32_t capacity;
	_Atomic(_Atomic(void *) *) *chunks; /* capacity / CHUNK + 1; set under lock */
	pthread_mutex_t lock;
	uint32_t *free_slots; /* stack of free slots below high; protected by lock */
	uint32_t n_free;      /* protected by lock */
	uint32_t free_cap;    /* room in free_slots, at least high; protected by lock */
	/* free_slots[0, n_aside): the slots that were free when the table was taken over,
	 * given out only once it is otherwise full; protected by lock */
	uint32_t n_aside;
	uint32_t used; /* protected by lock */
};

/* The open object's place of slot fh, NULL when its chunk was never used. */
static _Atomic(void *) *slot_of(struct handles *h, uint64_t fh)
{
	_Atomic(void *) *c =
	    atomic_load_explicit(&h->chunks[fh >> CHUNK_SHIFT], memory_order_acquire);

	return c ? &c[fh & (CHUNK - 1)] : NULL;
}

/* slot_of(), allocating its chunk; with lock held. NULL without memory. */
static _Atomic(void *) *slot_make(struct handles *h, uint64_t fh)
{
	_Atomic(void *) *c = slot_of(h, fh);

	if (c)
		return c;
	c = calloc(CHUNK, sizeof(*c));
	if (!c)
		return NULL;
	atomic_store_explicit(&h->chunks[fh >> CHUNK_SHIFT], c, memory_order_release);
	return &c[fh & (CHUNK - 1)];
}

/* Room in free_slots for n slots; with lock held (or before the table is shared). */
static int free_room(struct handles *h, uint32_t n)
{
	uint32_t cap = h->free_cap ? h->free_cap : 64;
	uint32_t *p;

	if (n <= h->free_cap)
		return 0;
	while (cap < n)
		cap = cap > UINT32_MAX / 2 ? UINT32_MAX : cap * 2;
	p = realloc(h->free_slots, (size_t)cap * sizeof(*p));
	if (!p)
		return -ENOMEM;
	h->free_slots = p;
	h->free_cap = cap;
	return 0;
}

static struct handles_header *header(struct handles *h)
{
	return (struct handles_header *)(void *)h->recs;
}

void handles_free(struct handles *h)
{
	if (!h)
		return;
	if (h->recs)
		munmap(h->recs, h->map_size);
	if (h->chunks)
		for (uint32_t i = 0; i <= h->capacity >> CHUNK_SHIFT; i++)
			free(atomic_load_explicit(&h->chunks[i], memory_order_relaxed));
	free(h->chunks);
	free(h->free_slots);
	if (h->fd >= 0)
		close(h->fd);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

int handles_open(int dirfd, const char *name, bool keep, uint32_t capacity, struct handles **ret)
{
	struct handles *h;
	int fd = -1, r;
	struct stat st;
	void *map;

	if (capacity < 2)
		return -EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	pthread_mutex_init(&h->lock, NULL);
	h->fd = -1;
	h->capacity = capacity;
	h->map_size = (size_t)capacity * sizeof(struct handle_rec);
	h->chunks = calloc((capacity >> CHUNK_SHIFT) + 1, sizeof(*h->chunks));
	if (!h->chunks) {
		handles_free(h);
		return -ENOMEM;
	}
	if (dirfd >= 0) {
		fd = openat(dirfd, name,
		            O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (keep ? 0 : O_TRUNC), 0600);
		if (fd < 0 || fstat(fd, &st) < 0) {
			r = -errno;
			goto fail;
		}
		if (keep && (st.st_size < (off_t)sizeof(struct handle_rec) ||
		             st.st_size > (off_t)h->map_size ||
		             st.st_size % (off_t)sizeof(struct handle_rec) != 0)) {
			r = -EBADMSG;
			goto fail;
		}
		h->file_recs = keep ? (uint32_t)(st.st_size / (off_t)sizeof(struct handle_rec))
		                    : MIN(capacity, FILE_RECS_MIN);
		if (!keep &&
		    ftruncate(fd, (off_t)h->file_recs * (off_t)sizeof(struct handle_rec)) < 0) {
			r = -errno;
			goto fail;
		}
		/* The whole capacity: the part past the end of the file is never touched. */
		map = mmap(NULL, h->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	} else {
		keep = false;
		h->file_recs = capacity;
		map = mmap(NULL, h->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		           -1, 0);
	}
	if (map == MAP_FAILED) {
		r = -errno;
		goto fail;
	}
	if (fd >= 0) {
		h->fd = TAKE_FD(fd);
		/* A fault reads one page, not a read-ahead window of the (sparse, mostly
		 * never touched) file that the kernel would zero first. */
		(void)madvise(map, h->map_size, MADV_RANDOM);
	}
	h->recs = map;
	if (keep) {
		struct handles_header *hd = header(h);

		if (hd->magic != HANDLES_MAGIC || hd->capacity != capacity || hd->high > capacity ||
		    hd->high < 1 || hd->high > h->file_recs) {
			handles_free(h);
			return -EBADMSG;
		}
		if (free_room(h, hd->high) < 0) {
			handles_free(h);
			return -ENOMEM;
		}
		for (uint32_t i = hd->high; i-- > 1;) {
			if (h->recs[i].kind == HANDLE_FREE)
				h->free_slots[h->n_free++] = i;
			else if (h->recs[i].kind == HANDLE_FILE || h->recs[i].kind == HANDLE_DIR)
				h->used++;
			else
				h->recs[i].kind = HANDLE_FREE, h->free_slots[h->n_free++] = i;
		}
		/* A RELEASE the process before this one carried out and did not answer is sent
		 * again (FUSE_NOTIFY_RESEND): its slot must not be a handle of this process by
		 * then, or the new handle would be freed under its user (EBADF). */
		h->n_aside = h->n_free;
	} else {
		*header(h) = (struct handles_header){
		    .magic = HANDLES_MAGIC, .capacity = capacity, .high = 1};
	}
	*ret = h;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	handles_free(h);
	return r;
}

int handles_add(struct handles *h, uint64_t ino, uint32_t flags, enum handle_kind kind, void *ptr,
                uint64_t *ret_fh)
{
	struct handles_header *hd = header(h);
	uint32_t slot;

	if (!ptr || (kind != HANDLE_FILE && kind != HANDLE_DIR))
		return -EINVAL;
	_Atomic(void *) *place;
	bool fresh = false;

	pthread_mutex_lock(&h->lock);
	if (h->n_free > h->n_aside)
		slot = h->free_slots[h->n_free - 1];
	else if (hd->high < h->capacity)
		slot = hd->high, fresh = true;
	else if (h->n_free > 0)
		slot = h->free_slots[h->n_free - 1]; /* set aside, but nothing else is left */
	else {
		pthread_mutex_unlock(&h->lock);
		return -ENFILE;
	}
	place = slot_make(h, slot);
	/* Room to free every slot given out, so that handles_remove() never fails. */
	if (!place || free_room(h, hd->high + 1) < 0) {
		pthread_mutex_unlock(&h->lock);
		return -ENOMEM;
	}
	if (fresh && slot >= h->file_recs) {
		/* The file grows by doubling: its records are only ever read up to high. */
		uint32_t n = (uint32_t)MIN((uint64_t)h->file_recs * 2, (uint64_t)h->capacity);

		if (ftruncate(h->fd, (off_t)n * (off_t)sizeof(struct handle_rec)) < 0) {
			int r = -errno;

			pthread_mutex_unlock(&h->lock);
			return r;
		}
		h->file_recs = n;
	}
	if (fresh) {
		hd->high++;
	} else {
		h->n_free--;
		h->n_aside = MIN(h->n_aside, h->n_free);
	}
	h->recs[slot].ino = ino;
	h->recs[slot].flags = flags;
	h->recs[slot].kind = kind;
	atomic_store_explicit(place, ptr, memory_order_release);
	h->used++;
	pthread_mutex_unlock(&h->lock);
	*ret_fh = slot;
	return 0;
}

void *handles_get(struct handles *h, uint64_t fh)
{
	_Atomic(void *) *place;

	if (fh == 0 || fh >= h->capacity)
		return NULL;
	place = slot_of(h, fh);
	return place ? atomic_load_explicit(place, memory_order_acquire) : NULL;
}

int handles_rec(struct handles *h, uint64_t fh, struct handle_rec *ret)
{
	int r = -EBADF;

	if (fh == 0 || fh >= h->capacity)
		return -EBADF;
	pthread_mutex_lock(&h->lock);
	if (fh < header(h)->high && h->recs[fh].kind != HANDLE_FREE) {
		*ret = h->recs[fh];
		r = 0;
	}
	pthread_mutex_unlock(&h->lock);
	return r;
}

void *handles_set(struct handles *h, uint64_t fh, void *ptr)
{
	void *cur = NULL;

	if (fh == 0 || fh >= h->capacity)
		return NULL;
	pthread_mutex_lock(&h->lock);
	if (fh < header(h)->high && h->recs[fh].kind != HANDLE_FREE) {
		_Atomic(void *) *place = slot_make(h, fh);

		cur = place ? atomic_load_explicit(place, memory_order_relaxed) : NULL;
		if (place && !cur) {
			atomic_store_explicit(place, ptr, memory_order_release);
			cur = ptr;
		}
	}
	pthread_mutex_unlock(&h->lock);
	return cur;
}

void *handles_remove(struct handles *h, uint64_t fh)
{
	void *cur = NULL;

	if (fh == 0 || fh >= h->capacity)
		return NULL;
	pthread_mutex_lock(&h->lock);
	if (fh < header(h)->high && h->recs[fh].kind != HANDLE_FREE) {
		_Atomic(void *) *place = slot_of(h, fh);

		cur = place ? atomic_exchange_explicit(place, NULL, memory_order_acq_rel) : NULL;
		h->recs[fh].kind = HANDLE_FREE;
		h->free_slots[h->n_free++] = (uint32_t)fh;
		h->used--;
	}
	pthread_mutex_unlock(&h->lock);
	return cur;
}

uint32_t handles_count(struct handles *h)
{
	uint32_t n;

	pthread_mutex_lock(&h->lock);
	n = h->used;
	pthread_mutex_unlock(&h->lock);
	return n;
}

uint64_t handles_end(struct handles *h)
{
	uint64_t n;

	pthread_mutex_lock(&h->lock);
	n = header(h)->high;
	pthread_mutex_unlock(&h->lock);
	return n;
}
