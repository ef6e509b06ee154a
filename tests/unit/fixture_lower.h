/* An in-memory lower layer for unit tests of the filesystem core: a fixed table of nodes
 * (node 0 is the root), served through the lower ops table (fsd/fs/lower.h). The table and
 * the struct mem_lower are borrowed: they must outlive the filesystem built over them.
 * Reads are short on purpose (at most 4 bytes), so the core must loop. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "fsd/fs/lower.h"

struct mem_xattr {
	const char *name;
	const char *value;
	size_t len;
};

struct mem_node {
	const char *name;
	uint32_t parent;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	const char *data; /* file content or symlink target */
	uint32_t canonical;
	nlink_t nlink;
	dev_t rdev;
	struct mem_xattr xattrs[2];
};

/* Children of a directory are listed in node order; a child's offset is its rank. */
struct mem_lower {
	const struct mem_node *nodes;
	uint32_t n;
	/* Misbehaviours of a corrupt tree. */
	bool bad_lookup;   /* lookup answers a node out of range */
	bool stuck_offset; /* readdir hands out the same next_off forever */
	int closed;
};

/* ops->close counts in m->closed. */
extern const struct lower_ops mem_lower_ops;

/* The lower over m, for imgfs_new(). */
struct lower mem_lower_of(struct mem_lower *m);
