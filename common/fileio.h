/* File and path helpers. All return 0/positive on success or -errno; out-params are
 * written only on success; every fd is O_CLOEXEC. */
#pragma once

#include <dirent.h>
#include <stdint.h>
#include <sys/types.h>
#include "macros.h"

/* Writes len bytes of buf to name in dirfd atomically: a temporary file in the same
 * directory, fsync, rename over name, fsync of the directory. mode is the file's mode. */
int write_file_atomic(int dirfd, const char *name, const void *buf, size_t len, mode_t mode);

/* write_file_atomic() without the fsyncs: readers see the old content or the new, never a
 * mix, but a crash of the machine may leave either or an empty file. For files that mean
 * nothing after a reboot. */
int write_file_replace(int dirfd, const char *name, const void *buf, size_t len, mode_t mode);

/* Reads the whole file at path (relative to dirfd) into a NUL-terminated malloc'ed buffer.
 * Fails with -EFBIG when the file is larger than max bytes. *ret_len may be NULL. */
int read_file_full(int dirfd, const char *path, size_t max, char **ret_buf, size_t *ret_len);

/* Writes/reads exactly len bytes, retrying on EINTR and short transfers.
 * read_full returns the number of bytes read (less than len only at end of file). */
int write_full(int fd, const void *buf, size_t len);
/* pwrite(2) of all of buf at off, retried on EINTR and short writes; 0 or -errno. */
int pwrite_full(int fd, const void *buf, size_t len, off_t off);
ssize_t read_full(int fd, void *buf, size_t len);
ssize_t pread_full(int fd, void *buf, size_t len, off_t off);

/* Creates path and its missing parents (relative to dirfd) with mode; existing is fine. */
int mkdir_p_at(int dirfd, const char *path, mode_t mode);

/* fsyncs the directory at path (relative to dirfd). */
int fsync_dir_at(int dirfd, const char *path);

/* Joins a and b with one '/'; returns a malloc'ed string or NULL on ENOMEM. */
char *path_join(const char *a, const char *b);

/* A directory stream of the directory dirfd refers to, on a descriptor of its own (dirfd
 * stays open and its position untouched): 0 and *ret, or -errno. */
int opendir_fd(int dirfd, DIR **ret);

/* Removes path (relative to dirfd) and everything below it; a missing path is fine.
 * Does not cross mount points and never follows symlinks. */
int rm_rf_at(int dirfd, const char *path);

/* Formats a byte count as "12.3 MB" into buf (SI units, as docker does). */
const char *format_bytes(uint64_t n, char *buf, size_t size);
