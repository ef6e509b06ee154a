#include <fcntl.h>
#include <sys/stat.h>
#include "common/fileio.h"
#include "fsd/initlayer.h"

static const struct {
	const char *path;
	mode_t mode;
} entries[] = {
    {"proc", S_IFDIR | 0555},      {"sys", S_IFDIR | 0555},
    {"dev", S_IFDIR | 0755},       {"etc/hostname", S_IFREG | 0644},
    {"etc/hosts", S_IFREG | 0644}, {"etc/resolv.conf", S_IFREG | 0644},
};

/* Makes dir name (in dirfd) exist in the upper, with st's attributes when st is not NULL. */
static int make_dir(int dirfd, const char *name, const struct stat *st)
{
	if (mkdirat(dirfd, name, st ? (st->st_mode & 07777) : 0755) < 0) {
		if (errno != EEXIST)
			return -errno;
		return 0; /* created for an earlier entry */
	}
	if (!st)
		return 0;
	if (fchownat(dirfd, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0 ||
	    fchmodat(dirfd, name, st->st_mode & 07777, 0) < 0)
		return -errno;
	return 0;
}

/* The times are set last: creating children changes a directory's mtime. */
static int copy_times(int dirfd, const char *name, const struct stat *st)
{
	struct timespec ts[2] = {st->st_atim, st->st_mtim};

	return utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* Creates the leaf entry e in dirfd. */
static int make_leaf(int dirfd, const char *name, mode_t mode)
{
	int fd;

	if (S_ISDIR(mode)) {
		int r = make_dir(dirfd, name, NULL);

		if (r >= 0 && fchmodat(dirfd, name, mode & 07777, 0) < 0)
			r = -errno;
		return r;
	}
	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode & 07777);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

/* Returns 1 when it created the entry, 0 when the image has it (or a symlinked parent). */
static int populate_one(const struct tree *t, int upper_fd, const char *path, mode_t mode)
{
	_cleanup_free_ char *copy = strdup(path);
	char *comp[8], *save = NULL, *c;
	struct stat parents[8];
	bool parent_in_lower[8];
	int fds[8];
	size_t n = 0, depth = 0;
	uint32_t node = TREE_ROOT;
	bool in_lower = true;
	int dirfd = upper_fd, r = 0;

	if (!copy)
		return -ENOMEM;
	for (c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (n == ARRAY_SIZE(comp))
			return -ENAMETOOLONG;
		comp[n++] = c;
	}
	for (size_t i = 0; i < n && r >= 0; i++) {
		bool leaf = i == n - 1;
		uint32_t child;
		struct stat st;

		if (in_lower && tree_lookup(t, node, comp[i], &child) == 0 &&
		    tree_stat(t, child, &st) == 0) {
			if (leaf || !S_ISDIR(st.st_mode))
				break; /* the image has it, or a symlinked parent decides */
			node = child;
		} else {
			in_lower = false;
		}
		if (leaf) {
			r = make_leaf(dirfd, comp[i], mode);
			if (r >= 0)
				r = 1;
			break;
		}
		r = make_dir(dirfd, comp[i], in_lower ? &st : NULL);
		if (r < 0)
			break;
		fds[depth] =
		    openat(dirfd, comp[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fds[depth] < 0) {
			r = -errno;
			break;
		}
		parents[depth] = st;
		parent_in_lower[depth] = in_lower;
		dirfd = fds[depth++];
	}
	/* Restore the image's times on the parents, innermost first. */
	while (depth > 0) {
		depth--;
		close(fds[depth]);
		if (r >= 0 && parent_in_lower[depth]) {
			int k = copy_times(depth ? fds[depth - 1] : upper_fd, comp[depth],
			                   &parents[depth]);

			if (k < 0)
				r = k;
		}
	}
	return r;
}

int initlayer_populate(const struct tree *t, int upper_fd)
{
	int n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(entries); i++) {
		int r = populate_one(t, upper_fd, entries[i].path, entries[i].mode);

		if (r < 0)
			return r;
		n += r;
	}
	return n;
}
