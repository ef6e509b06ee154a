/* Open file and directory handles that mean the same to every process serving a mount.
 *
 * The kernel names an open file by the 64-bit handle it got in the OPEN reply. A handle
 * here is a slot number in a table whose records (inode number, open flags, kind) live in
 * a shared file mapping, ROOT/mounts/NAME/handles: a process that takes a mount over finds
 * the record of every handle the kernel still holds and opens the object again on first
 * use (handles_rec(), handles_set()). In memory, each slot also holds the open object of
 * this process; looking it up (handles_get()) is two array loads. Handle 0 is never given
 * out (FUSE uses it for "no handle").
 *
 * A freed slot is given out again, except those that were already free when the table was
 * taken over: the kernel sends again the requests the dead process had not answered, a
 * RELEASE it had carried out among them, so those slots are given out only once the table
 * is otherwise full (by then, long after the takeover).
 *
 * The file grows with the slots given out (it starts at 64 KiB): the mapping covers the
 * whole capacity, but only records below the file's end are ever touched.
 *
 * Thread-safe. Errors are -errno. */
#pragma once

#include <stdint.h>
#include "common/macros.h"

enum handle_kind {
	HANDLE_FREE = 0,
	HANDLE_FILE = 1,
	HANDLE_DIR = 2,
};

struct handle_rec {
	uint64_t ino;
	uint32_t flags; /* the open(2) flags */
	uint32_t kind;  /* enum handle_kind */
};

struct handles;

/* Opens the table in dirfd/name with room for capacity handles: with keep, the records
 * already there are taken over (a file that is not a table is an error, -EBADMSG);
 * else it starts empty. dirfd -1: in anonymous memory, for one process only. */
int handles_open(int dirfd, const char *name, bool keep, uint32_t capacity, struct handles **ret);
void handles_free(struct handles *h);

/* A new handle for ptr (not NULL), opened as ino with flags. -ENFILE when the table is
 * full. */
int handles_add(struct handles *h, uint64_t ino, uint32_t flags, enum handle_kind kind, void *ptr,
                uint64_t *ret_fh);

/* The open object of handle fh in this process, or NULL (not opened here yet, or no such
 * handle). */
void *handles_get(struct handles *h, uint64_t fh);

/* The record of handle fh; -EBADF when there is no such handle. */
int handles_rec(struct handles *h, uint64_t fh, struct handle_rec *ret);

/* Installs ptr as fh's open object unless another thread did first; returns the object
 * installed (ptr, or the other thread's: then ptr is the caller's to close). NULL when fh
 * is no handle (or no memory for it). */
void *handles_set(struct handles *h, uint64_t fh, void *ptr);

/* Frees handle fh and returns its open object in this process (NULL when none). */
void *handles_remove(struct handles *h, uint64_t fh);

/* One more than the largest handle ever given out in this table: every handle is below. */
uint64_t handles_end(struct handles *h);

/* How many handles are in use. */
uint32_t handles_count(struct handles *h);
