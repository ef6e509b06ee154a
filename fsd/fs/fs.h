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

struct upper;

struct imgfs_opts {
	struct upper *upper; /* the writable layer (upper.h), taken over; NULL: read-only,
	                      * every change refused with -EROFS */
	/* The host labels no file (no SELinux): security.selinux is EOPNOTSUPP, to read and
	 * to write, when no layer carries one, as on a read-only mount always. */
	bool no_security_labels;
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
	/* Creation: permission bits to clear where the parent has no default ACL (the kernel
	 * leaves that to the filesystem when it enforces ACLs itself). */
	mode_t umask;
};

/* Creates the filesystem over lower, taking ownership of it (lower->ops->close is called
 * by imgfs_free(), also when imgfs_new() fails). Does no work proportional to the image. */
int imgfs_new(const struct lower *lower, const struct imgfs_opts *opts, struct imgfs **ret);
/* Frees everything; outstanding files and directories must have been released. */
void imgfs_free(struct imgfs *fs);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct imgfs *, imgfs_free);

bool imgfs_is_ro(const struct imgfs *fs);

/* Writable mounts, before serving: recovers the copy-ups a killed daemon left pending
 * (upper_recover(), with the lower files as the source). Returns the number of files
 * whose data was rewritten from the image, or -errno. */
int imgfs_recover_copyups(struct imgfs *fs);

/* fn(userdata, ino) is told when the attributes of an inode changed other than by the
 * request that names it (a directory copied up as a parent: its link count; a hardlinked
 * file copied up: its st_ino), so the kernel can drop what it cached. It is called with
 * the core's locks held and must not call back into the core. Set before serving. */
void imgfs_set_notify(struct imgfs *fs, void (*fn)(void *userdata, uint64_t ino), void *userdata);

/* Looks name up in directory parent and counts one kernel lookup of the result.
 * "." and ".." are answered too (the kernel sends them for NFS export).
 * -ENOENT, -ENOTDIR, -ENAMETOOLONG, -ESTALE (parent unknown), -EIO (corrupt tree). */
int imgfs_lookup(struct imgfs *fs, uint64_t parent, const char *name, struct imgfs_entry *ret);
/* The entry of inode ino, counting one kernel lookup of it, as a lookup of one of its
 * names would. Writable mounts (-EROFS on a read-only one); -ESTALE when unknown. */
int imgfs_entry(struct imgfs *fs, uint64_t ino, struct imgfs_entry *ret);
/* Drops nlookup kernel lookups of ino; unknown inodes and excess counts are ignored. */
void imgfs_forget(struct imgfs *fs, uint64_t ino, uint64_t nlookup);
/* Kernel lookups currently counted for ino (0 when unknown); for tests and debugging. */
uint64_t imgfs_lookup_count(struct imgfs *fs, uint64_t ino);
/* Number of live inode objects; for tests and debugging. */
size_t imgfs_inode_count(struct imgfs *fs);

int imgfs_getattr(struct imgfs *fs, uint64_t ino, struct stat *ret);
/* imgfs_getattr() through an open file (fstat): also works once the name is gone. */
int imgfs_fgetattr(struct imgfs *fs, uint64_t ino, struct imgfs_file *f, struct stat *ret);
/* Symlink target, NUL-terminated, in buf; returns its length. -EINVAL if not a symlink,
 * -ENAMETOOLONG when it does not fit. */
int imgfs_readlink(struct imgfs *fs, uint64_t ino, char *buf, size_t size);

/* Opens a regular file. Flags asking for writing or truncation: -EROFS on a read-only
 * mount; in a writable one they copy the file up first (O_TRUNC: without its data).
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
/* imgfs_readdir() of directory ino without an open handle, for a kernel that does not
 * open directories. Read-only mounts only (a writable mount's listing is a snapshot taken
 * at opendir): -EBADF there. -ENOTDIR when ino is not a directory. */
int imgfs_readdir_ino(struct imgfs *fs, uint64_t ino, uint64_t off, bool plus, imgfs_dirent_fn fn,
                      void *userdata);

/* Extended attributes with getxattr(2)/listxattr(2) conventions: size 0 returns the
 * length; -ERANGE when buf is too small; -ENODATA when missing. */
ssize_t imgfs_getxattr(struct imgfs *fs, uint64_t ino, const char *name, void *buf, size_t size);
ssize_t imgfs_listxattr(struct imgfs *fs, uint64_t ino, char *buf, size_t size);

/* statvfs of the mount: block and file counts of the image (computed on the first call),
 * ST_RDONLY when read-only. */
int imgfs_statfs(struct imgfs *fs, uint64_t ino, struct statvfs *ret);

/* ---- the writable layer (all -EROFS on a read-only mount) ----
 *
 * overlayfs semantics (redirect_dir=on, index=off): a lower file or directory is copied up
 * on its first change (data, attributes, xattrs, link, rename), alone (a hardlinked image
 * file leaves its group) and with its parents; removing a lower name leaves a whiteout;
 * a directory made where a lower one was removed is opaque; a moved lower directory
 * carries a redirect, and a move that would need an absolute redirect longer than 256
 * bytes (overlayfs' redirect_max) is refused with -EXDEV, so that mv copies. Names are checked as
 * the kernel's VFS would not: existence
 * (-EEXIST, -ENOENT), emptiness (-ENOTEMPTY), types (-EISDIR, -ENOTDIR), length
 * (-ENAMETOOLONG). Permissions are the kernel's business (default_permissions).
 *
 * New objects belong to cred's uid and gid (the parent's gid when it is setgid); mode has
 * the caller's umask applied already. Entries returned count one kernel lookup. */
int imgfs_create(struct imgfs *fs, uint64_t parent, const char *name, mode_t mode, int flags,
                 const struct imgfs_cred *cred, struct imgfs_entry *ret,
                 struct imgfs_file **ret_file);
/* Any type but directories (mode's S_IFMT; S_IFREG when 0); a whiteout (char 0/0): -EPERM. */
int imgfs_mknod(struct imgfs *fs, uint64_t parent, const char *name, mode_t mode, dev_t rdev,
                const struct imgfs_cred *cred, struct imgfs_entry *ret);
int imgfs_mkdir(struct imgfs *fs, uint64_t parent, const char *name, mode_t mode,
                const struct imgfs_cred *cred, struct imgfs_entry *ret);
int imgfs_symlink(struct imgfs *fs, uint64_t parent, const char *name, const char *target,
                  const struct imgfs_cred *cred, struct imgfs_entry *ret);
int imgfs_link(struct imgfs *fs, uint64_t ino, uint64_t newparent, const char *newname,
               struct imgfs_entry *ret);
int imgfs_unlink(struct imgfs *fs, uint64_t parent, const char *name);
int imgfs_rmdir(struct imgfs *fs, uint64_t parent, const char *name);
#define IMGFS_RENAME_NOREPLACE (1u << 0)
#define IMGFS_RENAME_EXCHANGE (1u << 1)
int imgfs_rename(struct imgfs *fs, uint64_t parent, const char *name, uint64_t newparent,
                 const char *newname, unsigned flags);

#define IMGFS_SET_MODE (1u << 0)
#define IMGFS_SET_UID (1u << 1)
#define IMGFS_SET_GID (1u << 2)
#define IMGFS_SET_SIZE (1u << 3)
#define IMGFS_SET_ATIME (1u << 4)
#define IMGFS_SET_MTIME (1u << 5)
#define IMGFS_SET_ATIME_NOW (1u << 6)
#define IMGFS_SET_MTIME_NOW (1u << 7)
/* No attribute, only the change time (chown to -1, -1): copied up and the upper's ctime
 * set, as overlayfs does. */
#define IMGFS_SET_CTIME (1u << 8)

/* Changes the attributes named by valid (IMGFS_SET_*) from st; f (may be NULL) is the open
 * file of an ftruncate/fchmod. Returns the new attributes in *ret. */
int imgfs_setattr(struct imgfs *fs, uint64_t ino, struct imgfs_file *f, const struct stat *st,
                  unsigned valid, struct stat *ret);
/* Moves size bytes into fd (the upper file) at off; returns the number moved (fewer only
 * on an error after some were) or -errno. */
typedef ssize_t (*imgfs_write_fn)(int fd, uint64_t off, size_t size, void *userdata);
/* Writeback a write made due: its own descriptor of the upper file and the range. */
struct imgfs_writeback {
	int fd; /* -1: none due */
	uint64_t off, len;
};
/* Writes to a file opened for writing: fn(fd, off, size, userdata) moves the data into
 * the upper file (e.g. splice(2) from a pipe); the core checks f and accounts the write.
 *
 * writer: NULL when the kernel has already cleared the setuid/setgid bits as write(2) does
 * (a write through its page cache); else the writer of a write that bypassed that (FUSE
 * direct I/O), for whom the core clears them as the kernel would: setuid always, setgid
 * when group-executable or the writer is not in the file's group, unless the writer is
 * root (taken as holding CAP_FSETID). security.capability goes with any write into the
 * upper file.
 *
 * Once a file has been written in order for IMGFS_WRITEBACK_CHUNK bytes, that stretch is
 * due for writeback, returned in *ret_wb (fd -1 when none; always set): pass it to
 * imgfs_writeback() once the write has been answered, so that the disk works while the
 * writer writes on and a final fsync waits for the tail only. Writes out of order
 * (rewrites, random I/O) make nothing due. */
ssize_t imgfs_write_with(struct imgfs *fs, struct imgfs_file *f, uint64_t off, size_t size,
                         imgfs_write_fn fn, void *userdata, const struct imgfs_cred *writer,
                         struct imgfs_writeback *ret_wb);
/* Starts the writeback of wb (sync_file_range(SYNC_FILE_RANGE_WRITE): no wait, errors show
 * at fsync) and closes its descriptor; nothing when none is due. */
void imgfs_writeback(struct imgfs_writeback *wb);
#define IMGFS_WRITEBACK_CHUNK (8u << 20)
int imgfs_fallocate(struct imgfs *fs, struct imgfs_file *f, int mode, uint64_t off, uint64_t len);
/* Makes the file's data (and its name) durable. */
int imgfs_fsync(struct imgfs *fs, struct imgfs_file *f, bool datasync);
int imgfs_fsyncdir(struct imgfs *fs, uint64_t ino, bool datasync);
/* setxattr(2)/removexattr(2); names of the overlay's own namespace are stored escaped. */
int imgfs_setxattr(struct imgfs *fs, uint64_t ino, const char *name, const void *value, size_t size,
                   int flags);
int imgfs_removexattr(struct imgfs *fs, uint64_t ino, const char *name);

/* access(2) for cred: R_OK/W_OK/X_OK against the mode bits (root passes all but X_OK on a
 * file without any x bit); W_OK on a read-only filesystem is -EROFS. */
int imgfs_access(struct imgfs *fs, uint64_t ino, const struct imgfs_cred *cred, int mask);

/* A new mount of a writable layer: drops the data of files that were unlinked while open
 * when the mount that had them open ended (kept only for processes that take a mount
 * over). */
int imgfs_drop_orphans(struct imgfs *fs);
