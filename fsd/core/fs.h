/* The filesystem of a mount, without FUSE: an inode table over the lower tree (later the
 * writable upper layer too), answering the questions a FUSE daemon is asked.
 *
 * Inodes are named by 64-bit numbers, as the kernel sees them (FUSE node ids). A lower
 * node n is inode n + 1, so the root is inode 1 (IMGFS_ROOT_INO == FUSE_ROOT_ID); its
 * st_ino is canonical(n) + 1, so the names of a hardlink group share st_ino and st_nlink
 * (what stat(2) users see) while each name is its own inode for the kernel: the writable
 * layer can copy one name up and break it out of the group, as overlayfs does without an
 * index. Lower inode numbers are stable for the life of the image (generation 0); inodes
 * that can be reused carry a generation.
 *
 * Reference counting: imgfs_lookup() (and each entry that imgfs_readdir() in plus mode
 * hands out and the caller accepts) counts one kernel lookup of that inode;
 * imgfs_forget() drops them, as the kernel's FORGET does. Open files and directories
 * hold a reference of their own. An inode object exists while it has kernel lookups or
 * references; lower inodes can still be used after they were forgotten (their number is
 * enough to find them again), which is what NFS export needs.
 *
 * Every function returns >= 0 on success or -errno; out-parameters are written only on
 * success. Thread safety: every function may be called concurrently from many threads on
 * the same struct imgfs; locking is internal (one mutex around the inode table and the
 * counts, never held while reading the lower layer). */
#pragma once

#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include "common/macros.h"
#include "lower.h"

#define IMGFS_ROOT_INO 1u

struct imgfs;
struct imgfs_file;
struct imgfs_dir;

struct imgfs_opts {
	bool ro; /* refuse every change with -EROFS (the writable layer is not there yet) */
};

/* An inode handed to the kernel: number, generation and attributes. */
struct imgfs_entry {
	uint64_t ino; /* 0 in readdir's "." and "..": no lookup was counted */
	uint64_t generation;
	struct stat st;
};

/* The caller's identity, for imgfs_access(). */
struct imgfs_cred {
	uid_t uid;
	gid_t gid;
	const gid_t *groups; /* supplementary groups, may be NULL */
	size_t n_groups;
};

/* Creates the filesystem over lower, taking ownership of it (lower->ops->close is called
 * by imgfs_free(), also when imgfs_new() fails). Does no work proportional to the image. */
int imgfs_new(const struct lower *lower, const struct imgfs_opts *opts, struct imgfs **ret);
/* Frees everything; outstanding files and directories must have been released. */
void imgfs_free(struct imgfs *fs);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct imgfs *, imgfs_free);

bool imgfs_is_ro(const struct imgfs *fs);

/* Looks name up in directory parent and counts one kernel lookup of the result.
 * "." and ".." are answered too (the kernel sends them for NFS export).
 * -ENOENT, -ENOTDIR, -ENAMETOOLONG, -ESTALE (parent unknown), -EIO (corrupt tree). */
int imgfs_lookup(struct imgfs *fs, uint64_t parent, const char *name, struct imgfs_entry *ret);
/* Drops nlookup kernel lookups of ino; unknown inodes and excess counts are ignored. */
void imgfs_forget(struct imgfs *fs, uint64_t ino, uint64_t nlookup);
/* Kernel lookups currently counted for ino (0 when unknown); for tests and debugging. */
uint64_t imgfs_lookup_count(struct imgfs *fs, uint64_t ino);
/* Number of live inode objects; for tests and debugging. */
size_t imgfs_inode_count(struct imgfs *fs);

int imgfs_getattr(struct imgfs *fs, uint64_t ino, struct stat *ret);
/* Symlink target, NUL-terminated, in buf; returns its length. -EINVAL if not a symlink,
 * -ENAMETOOLONG when it does not fit. */
int imgfs_readlink(struct imgfs *fs, uint64_t ino, char *buf, size_t size);

/* Opens a regular file for reading. Flags asking for writing or truncation: -EROFS.
 * -EISDIR for directories, -EINVAL for other types. *ret is released with
 * imgfs_release(); it stays valid across forgets of its inode. */
int imgfs_open(struct imgfs *fs, uint64_t ino, int flags, struct imgfs_file **ret);
/* Reads up to size bytes at off: fewer only at the end of the file. */
ssize_t imgfs_read(struct imgfs *fs, struct imgfs_file *f, void *buf, size_t size, uint64_t off);
/* SEEK_DATA/SEEK_HOLE (other whences: -EINVAL): the resulting offset, -ENXIO past data. */
int64_t imgfs_lseek(struct imgfs *fs, struct imgfs_file *f, uint64_t off, int whence);
void imgfs_release(struct imgfs *fs, struct imgfs_file *f);

/* Opens a directory (-ENOTDIR otherwise); release with imgfs_releasedir(). */
int imgfs_opendir(struct imgfs *fs, uint64_t ino, struct imgfs_dir **ret);
/* Called for each entry; ent->st has at least st_ino and the type bits of st_mode (all of
 * it in plus mode). Returns non-zero when the entry was not taken (buffer full): the walk
 * stops and, in plus mode, no lookup is counted for it. */
typedef int (*imgfs_dirent_fn)(const char *name, const struct imgfs_entry *ent, uint64_t next_off,
                               void *userdata);
/* Lists d from offset off (0: start; otherwise a next_off handed out before): ".", "..",
 * then the children. In plus mode, each taken entry other than "." and ".." counts one
 * kernel lookup, as imgfs_lookup() would. Entries with names the kernel cannot take (empty,
 * containing '/', "." or "..") are skipped. */
int imgfs_readdir(struct imgfs *fs, struct imgfs_dir *d, uint64_t off, bool plus,
                  imgfs_dirent_fn fn, void *userdata);
void imgfs_releasedir(struct imgfs *fs, struct imgfs_dir *d);

/* Extended attributes with getxattr(2)/listxattr(2) conventions: size 0 returns the
 * length; -ERANGE when buf is too small; -ENODATA when missing. */
ssize_t imgfs_getxattr(struct imgfs *fs, uint64_t ino, const char *name, void *buf, size_t size);
ssize_t imgfs_listxattr(struct imgfs *fs, uint64_t ino, char *buf, size_t size);

/* statvfs of the mount: block and file counts of the image (computed on the first call),
 * ST_RDONLY when read-only. */
int imgfs_statfs(struct imgfs *fs, uint64_t ino, struct statvfs *ret);

/* access(2) for cred: R_OK/W_OK/X_OK against the mode bits (root passes all but X_OK on a
 * file without any x bit); W_OK on a read-only filesystem is -EROFS. */
int imgfs_access(struct imgfs *fs, uint64_t ino, const struct imgfs_cred *cred, int mask);
