/* Internals shared by fs.c (inode table, lookup, the merged read side) and fs_write.c (the
 * changes of the writable layer). Not a public interface: see fs.h. */
#pragma once

#include <pthread.h>
#include "fs.h"
#include "upper.h"

#define NO_NODE UINT32_MAX

/* An inode the kernel knows about, or one in use by an open file or a request.
 *
 * Read-only mounts use only the first block. In a writable mount an inode also knows
 * where it is (parent and name, so that the upper entry can be found) and what it is made
 * of: its lower node (NO_NODE for objects of the upper layer alone) and its upper entry. */
/* How many merged listings a writable mount keeps for reads without a handle: a walk
 * reads one directory in a few requests in a row. */
#define LISTINGS_CACHED 32
struct listing;

struct inode {
	uint64_t ino;        /* immutable */
	uint64_t generation; /* immutable; 0 for lower inodes */
	uint32_t lower;      /* lower node of the name looked up, or NO_NODE; immutable */
	uint32_t data;       /* its canonical node: attributes and content; immutable */
	mode_t type;         /* S_IFMT bits; immutable */
	uint64_t nlookup;    /* kernel lookups; protected by fs->lock */
	uint64_t refs;       /* open files/dirs, children, requests; protected by fs->lock */
	struct inode *next;  /* hash chain; protected by fs->lock */
	struct inode *unext; /* chain of the upper index; protected by fs->lock */
	bool indexed;        /* in the upper index; protected by fs->lock */
	/* Found again for a number a process before this one gave the kernel (see
	 * inode_restore()): its lookup count is not known, so it is kept until the kernel
	 * forgets it. Protected by fs->lock. */
	bool restored;
	/* An upper file unlinked while open: a link work/orphan-INO keeps its data for the
	 * processes that take the mount over, removed when the inode goes. Writable mounts;
	 * protected by fs->ns. */
	bool orphan;

	/* Writable mounts only; protected by fs->ns (written with it held for writing). */
	struct inode *parent; /* holds a reference; NULL for the root */
	char *name;
	bool upper;         /* has an upper entry */
	bool unlinked;      /* its name is gone (kept alive by open files) */
	bool opaque;        /* directories: the upper directory hides the lower one */
	uint32_t lower_dir; /* directories: the lower directory merged in, or NO_NODE */
	int dirfd;          /* directories with an upper entry: upper_open_dir() fd */
	int pathfd;         /* other upper objects: an O_PATH fd when the name is not enough
	                       (hardlinked, or unlinked while open); else -1 */
	ino_t upper_ino;    /* st_ino in the upper filesystem, when upper */
	uint64_t st_ino;    /* st_ino shown for upper objects */
};

struct imgfs {
	struct lower lower; /* immutable, thread-safe */
	uint32_t n_nodes;   /* immutable */
	bool ro;            /* immutable */
	/* Read-only mounts: whether the image has SELinux labels, learnt at the first
	 * request for one: 0 not yet known, 1 none, 2 some (atomic). */
	int selinux_labels;
	bool no_security_labels; /* imgfs_opts.no_security_labels */
	struct upper *upper;     /* immutable; NULL when read-only */

	pthread_mutex_t lock;
	struct inode **buckets;  /* protected by lock */
	size_t n_buckets;        /* power of two; protected by lock */
	size_t n_inodes;         /* protected by lock */
	struct inode **ubuckets; /* upper index by upper st_ino; n_ubuckets; protected by lock */
	size_t n_ubuckets;
	uint64_t next_ino;  /* next number for an object without a lower node; protected by lock */
	struct inode *root; /* writable mounts: the root, never freed */

	/* The namespace of the writable layer: held for reading to look at the upper
	 * directory, for writing to change it. Taken before lock, never the other way. */
	pthread_rwlock_t ns;
	/* Bumped by ns_wrlock() each time ns is taken for writing (atomic): a listing built
	 * under ns for reading at one value is the directory as long as it stays. */
	uint64_t ns_gen;
	/* Merged listings served without a directory handle (fs_merge.c), the last few. */
	pthread_mutex_t listings_lock;
	struct listing *listings[LISTINGS_CACHED]; /* protected by listings_lock */
	unsigned listings_next;                    /* protected by listings_lock */

	void (*notify)(void *userdata, uint64_t ino); /* immutable after imgfs_set_notify() */
	void *notify_data;

	pthread_mutex_t stats_lock;
	bool stats_valid;     /* protected by stats_lock */
	uint64_t stats_bytes; /* protected by stats_lock */
};

struct imgfs_file {
	struct inode *inode; /* holds a reference */
	pthread_mutex_t lock;
	int fd; /* the upper file, or -1 while reading the lower; protected by lock */
	bool writable;
	/* Writes in order (see imgfs_write_with()): [wb_start, wb_end) was written in order
	 * since a writeback was last made due (up to wb_start). Protected by wb_lock. */
	pthread_mutex_t wb_lock;
	uint64_t wb_start, wb_end;
};

struct dir_snap_entry {
	char *name;
};

struct imgfs_dir {
	struct inode *inode; /* holds a reference */
	pthread_mutex_t lock;
	struct dir_snap_entry *snap; /* merged listing of a writable mount; protected by lock */
	size_t n_snap;
	bool have_snap;
};

/* What a name of a directory is in the merged view; see resolve(). */
enum found_kind { FOUND_NONE, FOUND_LOWER, FOUND_UPPER };

struct found {
	enum found_kind kind;
	uint32_t lower;     /* the parent's lower directory's entry of this name, or NO_NODE */
	bool whiteout;      /* the upper has a whiteout at the name */
	struct stat ust;    /* FOUND_UPPER: the upper entry */
	mode_t type;        /* FOUND_*: S_IFMT of what is seen */
	uint32_t lower_dir; /* directories: the lower directory merged in, or NO_NODE */
	bool opaque;
	int dirfd; /* FOUND_UPPER directories: open fd, owned by the struct until taken */
};

/* fs.c; *_locked with fs->lock held */
struct inode *table_find_locked(struct imgfs *fs, uint64_t ino);
struct inode *uindex_find_locked(struct imgfs *fs, ino_t uino);
void table_insert_locked(struct imgfs *fs, struct inode *inode);
int inode_get(struct imgfs *fs, uint64_t ino, struct inode **ret);
void inode_put(struct imgfs *fs, struct inode *inode, bool count_lookup);
void inode_ref(struct imgfs *fs, struct inode *inode);
void inode_unindex(struct imgfs *fs, struct inode *inode);
uint64_t upper_st_ino(const struct imgfs *fs, ino_t uino);
void inode_set_upper(struct imgfs *fs, struct inode *inode, ino_t upper_ino);
int lower_stat(struct imgfs *fs, uint32_t node, struct stat *ret);
int lower_canonical(struct imgfs *fs, uint32_t node, uint32_t *ret);
int resolve(struct imgfs *fs, struct inode *dir, const char *name, struct found *ret);
void found_done(struct found *f);
int child_inode(struct imgfs *fs, struct inode *dir, const char *name, struct found *f,
                struct inode **ret);
int stat_inode(struct imgfs *fs, struct inode *inode, int fd, struct stat *ret);
/* The entry (number, generation, merged attributes) of inode. Called with fs->ns held. */
int inode_entry(struct imgfs *fs, struct inode *inode, struct imgfs_entry *ret);
int lower_path(struct imgfs *fs, uint32_t node, char *buf, size_t size);
int lower_name(struct imgfs *fs, uint32_t node, char *buf, size_t size);
bool valid_name(const char *name);
/* 0 when a lookup may ask for name ("." and ".." included), -ENAMETOOLONG, or -ENOENT for
 * an empty name or one with '/'. */
int lookup_name_check(const char *name);
void notify_attr(struct imgfs *fs, uint64_t ino);
/* The upper entry of a non-directory inode: (dirfd, name) for *at() calls, or (pathfd, "")
 * for an O_PATH fd. Called with fs->ns held. */
int upper_ref(struct inode *inode, int *ret_fd, const char **ret_name);

/* Node ids of writable mounts: lower node n is n + 1 (where the kernel has not got that
 * number for another name of it), an object of the upper layer alone is this bit | its
 * upper st_ino, so a process taking a mount over finds both again; anything else (an
 * upper number in use twice) counts from n_nodes + 1 and cannot be found again. */
#define UPPER_INO_BIT (UINT64_C(1) << 63)
#define RESTORED_LOOKUPS (UINT64_C(1) << 40)

/* The inode of node id ino, which the kernel got from a process before this one: a lower
 * node looked up again by its path, an upper object by its upper st_ino (a walk of the
 * upper). Takes fs->ns for reading; returns it with a reference, -ESTALE when it is not
 * there any more (or was moved). */
int inode_restore(struct imgfs *fs, uint64_t ino, struct inode **ret);

/* The name in the work directory that keeps the data of inode ino, unlinked while open. */
#define ORPHAN_PREFIX UPPER_ORPHAN_PREFIX
void orphan_name(uint64_t ino, char buf[32]);

/* fs_write.c */
int copy_up(struct imgfs *fs, struct inode *inode, bool data);
void dir_snap_clear(struct imgfs_dir *d);

/* fs_merge.c: the merged view of a writable mount */
int merged_lookup(struct imgfs *fs, uint64_t parent, const char *name, struct imgfs_entry *ret);
int merged_getattr(struct imgfs *fs, uint64_t ino, struct imgfs_file *f, struct stat *ret);
int merged_readlink(struct imgfs *fs, uint64_t ino, char *buf, size_t size);
int merged_readdir(struct imgfs *fs, struct imgfs_dir *d, uint64_t off, bool plus,
                   imgfs_dirent_fn fn, void *userdata);
/* The same without a handle (the kernel opens directories itself): offsets are hashes of
 * the names, so a listing rebuilt after a change goes on where the reader was. */
int merged_readdir_ino(struct imgfs *fs, uint64_t ino, uint64_t off, bool plus, imgfs_dirent_fn fn,
                       void *userdata);
void listings_free(struct imgfs *fs);
/* Takes fs->ns for writing: every change to the namespace goes through it. */
void ns_wrlock(struct imgfs *fs);
ssize_t merged_getxattr(struct imgfs *fs, uint64_t ino, const char *name, void *buf, size_t size);
ssize_t merged_listxattr(struct imgfs *fs, uint64_t ino, char *buf, size_t size);

/* Whether getxattr, setxattr and removexattr of name answer EOPNOTSUPP (security.selinux
 * where nothing labels files); see fs.c. */
bool fs_xattr_unsupported(struct imgfs *fs, const char *name);
