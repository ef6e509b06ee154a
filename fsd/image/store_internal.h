/* Internals shared by store.c (layout, blobs, indexes, refs, mounts) and store_gc.c (mark
 * and sweep). Not a public interface: see store.h. */
#pragma once

#include <jansson.h>
#include "store.h"

/* flock(2), retried on EINTR: 0 or -errno. */
int store_flock_retry(int fd, int op);
/* Opens ROOT/index.lock and takes LOCK_EX on it (waiting); the lock goes with *ret_fd. */
int store_open_index_lock(struct store *s, int *ret_fd);
/* Reads index.json into *ret (json_decref()). The caller holds the index lock when it will
 * write it back. A store without one yet reads as an empty index; -EBADMSG when it is not
 * an OCI index. */
int store_index_load(struct store *s, json_t **ret);
/* The string member key of obj, or NULL (also for a NULL obj). Borrowed from obj. */
const char *store_json_str(json_t *obj, const char *key);
