/* Internals shared by upper.c (the upper directory and copy-up) and upper_pending.c (the
 * copies whose data is not yet durable). Not a public interface: see upper.h. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include "upper.h"

#define PENDING_BUCKETS 64

struct pending_entry;

struct upper {
	int root_fd; /* immutable */
	int work_fd; /* immutable */
	char prefix[24];
	size_t prefix_len;
	char opaque[40];   /* PREFIX "opaque" */
	char redirect[40]; /* PREFIX "redirect" */
	char escaped[40];  /* PREFIX "overlay." */
	atomic_ulong counter;
	uid_t euid;
	gid_t egid;
	char boot[UPPER_BOOT_LEN + 1];   /* this boot: hex of the kernel's boot_id; immutable */
	char image[UPPER_IMAGE_LEN + 1]; /* the image pending names refer to; set before use */
	bool is_volatile;                /* set before use */
	unsigned delay_ms;               /* test knob: the syncer waits this long; immutable */

	/* Copies whose data is not yet durable (upper_pending.c). plock protects the queue,
	 * the busy and failed flags and the syncer state; nlink_lock makes a stat and the
	 * removal of a pending name atomic with respect to each other (the linked flag). The
	 * hash is changed with both held, so either is enough to read it. Order: plock, then
	 * nlink_lock. */
	pthread_mutex_t plock;
	pthread_cond_t pcond;
	pthread_rwlock_t nlink_lock;
	struct pending_entry *buckets[PENDING_BUCKETS];
	struct pending_entry *qhead, *qtail;
	size_t n_pending;
	bool syncer_running, stop;
	pthread_t syncer;
};

/* upper.c: copies the data of src into fd (holes kept, size set). */
int upper_copy_data(const struct upper_src *src, int fd);

/* upper_pending.c */
void pending_init(struct upper *u);
/* Stops the syncer after it synced everything queued, frees the entries. */
void pending_done(struct upper *u);
/* Registers the file fd (taken, also on failure) at work/name as pending, before it is
 * linked into place. */
int pending_add(struct upper *u, int fd, const char *name);
/* After the file was linked into place: queues it for the syncer. */
void pending_queue(struct upper *u, ino_t ino);
/* The link into place failed: forgets the entry and removes work/name. */
void pending_cancel(struct upper *u, ino_t ino);
