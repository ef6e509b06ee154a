/* The writable layer of the filesystem core, without root or FUSE: an in-memory lower
 * (fixture_lower.c) under a temporary upper directory in overlayfs' format with
 * user.overlay.* xattrs (as an unprivileged overlayfs mount writes them). Renames with and
 * without redirects, RENAME_EXCHANGE and RENAME_NOREPLACE, whiteouts, opaque directories,
 * copy-up, the split of an image hardlink, files unlinked while open, and the redirect
 * length limit the kernel's overlayfs enforces with EXDEV. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include "common/fileio.h"
#include "fsd/fs/fs.h"
#include "fsd/fs/upper.h"
#include "fixture_lower.h"

static char name200[201], name100[101], name255[256], name254[255];

/* Owners are filled in at setup: the test's own, so that copy-up needs no privilege. */
static struct mem_node image[] = {
    /* 0 */ {.name = "", .parent = 0, .mode = S_IFDIR | 0755, .canonical = 0, .nlink = 2},
    /* 1 */ {.name = "a", .parent = 0, .mode = S_IFDIR | 0755, .canonical = 1, .nlink = 2},
    /* 2 */
    {.name = "x", .parent = 1, .mode = S_IFREG | 0644, .data = "ax\n", .canonical = 2, .nlink = 1},
    /* 3 */ {.name = "sub", .parent = 1, .mode = S_IFDIR | 0755, .canonical = 3, .nlink = 2},
    /* 4 */
    {.name = "y",
     .parent = 3,
     .mode = S_IFREG | 0644,
     .data = "sub y\n",
     .canonical = 4,
     .nlink = 1},
    /* 5 */ {.name = "b", .parent = 0, .mode = S_IFDIR | 0755, .canonical = 5, .nlink = 2},
    /* 6 */
    {.name = "f",
     .parent = 0,
     .mode = S_IFREG | 0640,
     .data = "lower f\n",
     .canonical = 6,
     .nlink = 1,
     .xattrs = {{"user.note", "hi", 2}}},
    /* 7 */
    {.name = "h1",
     .parent = 0,
     .mode = S_IFREG | 0644,
     .data = "shared\n",
     .canonical = 8,
     .nlink = 2},
    /* 8 */
    {.name = "h2",
     .parent = 0,
     .mode = S_IFREG | 0644,
     .data = "shared\n",
     .canonical = 8,
     .nlink = 2},
    /* 9 */ {.name = "e", .parent = 0, .mode = S_IFDIR | 0755, .canonical = 9, .nlink = 2},
    /* 10 */
    {.name = "z", .parent = 9, .mode = S_IFREG | 0644, .data = "ez\n", .canonical = 10, .nlink = 1},
    /* 11 */ {.name = "L", .parent = 0, .mode = S_IFDIR | 0755, .canonical = 11, .nlink = 2},
    /* 12: name200 */ {.parent = 11, .mode = S_IFDIR | 0755, .canonical = 12, .nlink = 2},
    /* 13: name100 */ {.parent = 12, .mode = S_IFDIR | 0755, .canonical = 13, .nlink = 2},
    /* 14: "/L/N200/N100/d", 306 bytes */
    {.name = "d", .parent = 13, .mode = S_IFDIR | 0755, .canonical = 14, .nlink = 2},
    /* 15 */
    {.name = "c",
     .parent = 14,
     .mode = S_IFREG | 0644,
     .data = "deep c\n",
     .canonical = 15,
     .nlink = 1},
    /* 16: name255, "/N255" is 256 bytes */
    {.parent = 0, .mode = S_IFDIR | 0755, .canonical = 16, .nlink = 2},
    /* 17 */ {.name = "q", .parent = 0, .mode = S_IFDIR | 0755, .canonical = 17, .nlink = 2},
    /* 18: name254, "/q/N254" is 257 bytes */
    {.parent = 17, .mode = S_IFDIR | 0755, .canonical = 18, .nlink = 2},
    /* 19 */
    {.name = "g",
     .parent = 0,
     .mode = S_IFREG | 0644,
     .data = "lower g\n",
     .canonical = 19,
     .nlink = 1},
};

struct fixture {
	char dir[64];
	char upper[80];
	struct mem_lower mem;
	struct imgfs *fs;
	struct imgfs_cred cred;
};

static ssize_t pwrite_fn(int fd, uint64_t off, size_t size, void *userdata)
{
	ssize_t n = pwrite(fd, userdata, size, (off_t)off);

	return n < 0 ? -errno : n;
}

/* A write(2) of buf, as the FUSE daemon makes one through its page cache. */
static ssize_t write_at(struct imgfs *fs, struct imgfs_file *f, const void *buf, size_t size,
                        uint64_t off)
{
	struct imgfs_writeback wb;
	ssize_t n = imgfs_write_with(fs, f, off, size, pwrite_fn, (void *)buf, NULL, &wb);

	imgfs_writeback(&wb);
	return n;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct upper *u = NULL;
	struct lower l;
	int dfd, rfd, wfd;

	memset(name200, 'm', 200);
	memset(name100, 'n', 100);
	memset(name255, 'p', 255);
	memset(name254, 'q', 254);
	image[12].name = name200;
	image[13].name = name100;
	image[16].name = name255;
	image[18].name = name254;
	for (size_t i = 0; i < ARRAY_SIZE(image); i++) {
		image[i].uid = getuid();
		image[i].gid = getgid();
	}
	/* Copy-ups stay pending (their work name linked) for the whole test. */
	setenv("IMGFS_TEST_SYNC_DELAY_MS", "600000", 1);

	strcpy(f->dir, "/tmp/test_fs_write.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->upper, sizeof(f->upper), "%s/upper", f->dir);
	dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(mkdirat(dfd, "upper", 0755), 0);
	assert_int_equal(mkdirat(dfd, "work", 0700), 0);
	rfd = openat(dfd, "upper", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	wfd = openat(dfd, "work", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	close(dfd);
	assert_true(rfd >= 0 && wfd >= 0);
	assert_int_equal(upper_open(rfd, wfd, UPPER_XATTR_USER, &u), 0);
	assert_int_equal(upper_set_image(u, "0123456789ab"), 0);

	f->mem = (struct mem_lower){.nodes = image, .n = ARRAY_SIZE(image)};
	l = mem_lower_of(&f->mem);
	assert_int_equal(imgfs_new(&l, &(struct imgfs_opts){.upper = u}, &f->fs), 0);
	f->cred = (struct imgfs_cred){.uid = getuid(), .gid = getgid()};
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	imgfs_free(f->fs);
	(void)rm_rf_at(AT_FDCWD, f->dir);
	free(f);
	return 0;
}

/* The inode of path (relative to the root, '/'-separated), or 0 with *ret_err set. */
static uint64_t walk_err(struct imgfs *fs, const char *path, int *ret_err)
{
	char buf[PATH_MAX], *save = NULL;
	uint64_t ino = IMGFS_ROOT_INO;

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		struct imgfs_entry e;
		int r = imgfs_lookup(fs, ino, c, &e);

		if (r < 0) {
			*ret_err = r;
			return 0;
		}
		ino = e.ino;
	}
	*ret_err = 0;
	return ino;
}

static uint64_t walk(struct imgfs *fs, const char *path)
{
	int r;
	uint64_t ino = walk_err(fs, path, &r);

	assert_int_equal(r, 0);
	return ino;
}

static int walk_errno(struct imgfs *fs, const char *path)
{
	int r;

	(void)walk_err(fs, path, &r);
	return r;
}

/* The content of the file at path, NUL-terminated, in a static buffer. */
static const char *content(struct imgfs *fs, const char *path)
{
	static char buf[256];
	struct imgfs_file *file;
	ssize_t n;

	assert_int_equal(imgfs_open(fs, walk(fs, path), O_RDONLY, &file), 0);
	n = imgfs_read(fs, file, buf, sizeof(buf) - 1, 0);
	imgfs_release(fs, file);
	assert_true(n >= 0);
	buf[n] = '\0';
	return buf;
}

/* Names of directory path, sorted and joined by ' ' (without "." and ".."). */
static int collect(const char *name, const struct imgfs_entry *ent, uint64_t next_off,
                   void *userdata)
{
	char *out = userdata;

	(void)ent, (void)next_off;
	if (streq(name, ".") || streq(name, ".."))
		return 0;
	if (*out)
		strcat(out, " ");
	strcat(out, strlen(name) > 20 ? "LONG" : name);
	return 0;
}

static const char *listing(struct imgfs *fs, const char *path)
{
	static char out[512];
	struct imgfs_dir *d;

	out[0] = '\0';
	assert_int_equal(imgfs_opendir(fs, walk(fs, path), &d), 0);
	assert_int_equal(imgfs_readdir(fs, d, 0, false, collect, out), 0);
	imgfs_releasedir(fs, d);
	return out;
}

/* The upper's entry at rel (lstat). */
static int upper_lstat(struct fixture *f, const char *rel, struct stat *ret)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s/%s", f->upper, rel);
	return lstat(p, ret) < 0 ? -errno : 0;
}

/* An xattr of the upper entry at rel, NUL-terminated, in a static buffer; NULL if none. */
static const char *upper_xattr(struct fixture *f, const char *rel, const char *name)
{
	static char buf[PATH_MAX];
	char p[PATH_MAX];
	ssize_t n;

	snprintf(p, sizeof(p), "%s/%s", f->upper, rel);
	n = lgetxattr(p, name, buf, sizeof(buf) - 1);
	if (n < 0)
		return NULL;
	buf[n] = '\0';
	return buf;
}

static bool upper_is_whiteout_at(struct fixture *f, const char *rel)
{
	struct stat st;

	return upper_lstat(f, rel, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

#define REDIRECT UPPER_XATTR_USER "redirect"
#define OPAQUE UPPER_XATTR_USER "opaque"

static void test_rename_dir_redirect(void **state)
{
	struct fixture *f = *state;
	struct imgfs *fs = f->fs;

	/* In its parent: a relative redirect, its old name whited out. */
	assert_int_equal(imgfs_rename(fs, IMGFS_ROOT_INO, "a", IMGFS_ROOT_INO, "a2", 0), 0);
	assert_string_equal(upper_xattr(f, "a2", REDIRECT), "a");
	assert_true(upper_is_whiteout_at(f, "a"));
	assert_int_equal(walk_errno(fs, "a"), -ENOENT);
	assert_string_equal(listing(fs, "a2"), "x sub");
	assert_string_equal(content(fs, "a2/sub/y"), "sub y\n");

	/* To another directory: absolute, though it had a relative one. */
	assert_int_equal(imgfs_rename(fs, walk(fs, ""), "a2", walk(fs, "b"), "a3", 0), 0);
	assert_string_equal(upper_xattr(f, "b/a3", REDIRECT), "/a");
	assert_string_equal(content(fs, "b/a3/x"), "ax\n");
	assert_int_equal(walk_errno(fs, "a2"), -ENOENT);

	/* A lower directory inside a moved one: the path of its own lower directory. */
	assert_int_equal(imgfs_rename(fs, walk(fs, "b/a3"), "sub", walk(fs, "e"), "s", 0), 0);
	assert_string_equal(upper_xattr(f, "e/s", REDIRECT), "/a/sub");
	assert_string_equal(content(fs, "e/s/y"), "sub y\n");
	assert_string_equal(listing(fs, "b/a3"), "x");
}

static void test_rename_without_redirect(void **state)
{
	struct fixture *f = *state;
	struct imgfs *fs = f->fs;
	struct imgfs_entry e;
	struct stat st;

	/* A file: copied up and moved, no redirect, a whiteout at the old name. */
	assert_int_equal(imgfs_rename(fs, IMGFS_ROOT_INO, "f", walk(fs, "b"), "f2", 0), 0);
	assert_int_equal(upper_lstat(f, "b/f2", &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_null(upper_xattr(f, "b/f2", REDIRECT));
	assert_true(upper_is_whiteout_at(f, "f"));
	assert_string_equal(content(fs, "b/f2"), "lower f\n");

	/* A directory of the upper alone moved into a merged one: opaque, no redirect. */
	assert_int_equal(imgfs_mkdir(fs, IMGFS_ROOT_INO, "n", 0755, &f->cred, &e), 0);
	assert_int_equal(imgfs_rename(fs, IMGFS_ROOT_INO, "n", walk(fs, "b"), "n", 0), 0);
	assert_null(upper_xattr(f, "b/n", REDIRECT));
	assert_string_equal(upper_xattr(f, "b/n", OPAQUE), "y");
	/* No whiteout where nothing of the lower was. */
	assert_int_equal(upper_lstat(f, "n", &st), -ENOENT);
}

static void test_rename_exchange(void **state)
{
	struct fixture *f = *state;
	struct imgfs *fs = f->fs;

	/* Two lower directories of one parent: each redirected to its lower name. */
	assert_int_equal(
	    imgfs_rename(fs, IMGFS_ROOT_INO, "a", IMGFS_ROOT_INO, "e", IMGFS_RENAME_EXCHANGE), 0);
	assert_string_equal(upper_xattr(f, "e", REDIRECT), "a");
	assert_string_equal(upper_xattr(f, "a", REDIRECT), "e");
	assert_string_equal(listing(fs, "e"), "x sub");
	assert_string_equal(listing(fs, "a"), "z");
	assert_string_equal(content(fs, "a/z"), "ez\n");

	/* A lower file and a lower directory of different parents. */
	assert_int_equal(
	    imgfs_rename(fs, IMGFS_ROOT_INO, "g", walk(fs, "e"), "sub", IMGFS_RENAME_EXCHANGE), 0);
	assert_string_equal(content(fs, "e/sub"), "lower g\n");
	assert_string_equal(content(fs, "g/y"), "sub y\n");
	assert_string_equal(upper_xattr(f, "g", REDIRECT), "/a/sub");

	/* Exchange needs both names. */
	assert_int_equal(
	    imgfs_rename(fs, IMGFS_ROOT_INO, "f", IMGFS_ROOT_INO, "none", IMGFS_RENAME_EXCHANGE),
	    -ENOENT);
}

static void test_rename_noreplace(void **state)
{
	struct fixture *f = *state;
	struct imgfs *fs = f->fs;
	struct stat st;

	assert_int_equal(
	    imgfs_rename(fs, IMGFS_ROOT_INO, "f", IMGFS_ROOT_INO, "h1", IMGFS_RENAME_NOREPLACE),
	    -EEXIST);
	assert_int_equal(upper_lstat(f, "f", &st), -ENOENT); /* nothing was copied up */
	assert_int_equal(
	    imgfs_rename(fs, IMGFS_ROOT_INO, "f", IMGFS_ROOT_INO, "f3", IMGFS_RENAME_NOREPLACE), 0);
	assert_string_equal(content(fs, "f3"), "lower f\n");
	/* Onto a whiteout: the name is free. */
	assert_int_equal(
	    imgfs_rename(fs, IMGFS_ROOT_INO, "f3", IMGFS_ROOT_INO, "f", IMGFS_RENAME_NOREPLACE), 0);
	assert_string_equal(content(fs, "f"), "lower f\n");
	assert_int_equal(imgfs_rename(fs, IMGFS_ROOT_INO, "f", IMGFS_ROOT_INO, "g",
	                              IMGFS_RENAME_NOREPLACE | IMGFS_RENAME_EXCHANGE),
	                 -EINVAL);
}

static void test_whiteout_and_opaque(void **state)
{
	struct fixture *f = *state;
	struct imgfs *fs = f->fs;
	struct imgfs_entry e;

	/* A lower file removed: a whiteout, char 0/0, hides it. */
	assert_int_equal(imgfs_unlink(fs, IMGFS_ROOT_INO, "f"), 0);
	assert_true(upper_is_whiteout_at(f, "f"));
	assert_int_equal(walk_errno(fs, "f"), -ENOENT);
	assert_null(strstr(listing(fs, ""), "f "));

	/* A lower directory removed and made again: opaque, the lower children hidden. */
	assert_int_equal(imgfs_rmdir(fs, IMGFS_ROOT_INO, "e"), -ENOTEMPTY);
	assert_int_equal(imgfs_unlink(fs, walk(fs, "e"), "z"), 0);
	assert_true(upper_is_whiteout_at(f, "e/z"));
	assert_int_equal(imgfs_rmdir(fs, IMGFS_ROOT_INO, "e"), 0);
	assert_true(upper_is_whiteout_at(f, "e"));
	assert_int_equal(imgfs_mkdir(fs, IMGFS_ROOT_INO, "e", 0700, &f->cred, &e), 0);
	assert_string_equal(upper_xattr(f, "e", OPAQUE), "y");
	assert_string_equal(listing(fs, "e"), "");
	assert_int_equal(walk_errno(fs, "e/z"), -ENOENT);
	assert_int_equal(e.st.st_mode, S_IFDIR | 0700);
}

static void test_copy_up(void **state)
{
	struct fixture *f = *state;
	struct imgfs *fs = f->fs;
	struct imgfs_file *file;
	struct stat st, in;
	char buf[32], path[PATH_MAX];
	ssize_t n;
	int fd;

	/* A change of mode copies data and metadata, xattrs included. */
	in.st_mode = 0600;
	assert_int_equal(imgfs_setattr(fs, walk(fs, "f"), NULL, &in, IMGFS_SET_MODE, &st), 0);
	assert_int_equal(st.st_mode, S_IFREG | 0600);
	assert_int_equal(upper_lstat(f, "f", &st), 0);
	assert_int_equal(st.st_mode, S_IFREG | 0600);
	assert_int_equal(st.st_size, 8);
	assert_int_equal(st.st_mtim.tv_sec, 1700000000);
	assert_string_equal(upper_xattr(f, "f", "user.note"), "hi");
	snprintf(path, sizeof(path), "%s/f", f->upper);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf));
	close(fd);
	assert_int_equal(n, 8);
	assert_memory_equal(buf, "lower f\n", 8);

	/* A write copies its parents up first, then the file. */
	assert_int_equal(imgfs_open(fs, walk(fs, "a/sub/y"), O_WRONLY, &file), 0);
	assert_int_equal(write_at(fs, file, "SUB", 3, 0), 3);
	imgfs_release(fs, file);
	assert_int_equal(upper_lstat(f, "a/sub", &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_string_equal(content(fs, "a/sub/y"), "SUB y\n");
	/* Its lower sibling stays where it is. */
	assert_int_equal(upper_lstat(f, "a/x", &st), -ENOENT);
	assert_string_equal(listing(fs, "a"), "sub x");
}

static void test_hardlink_split(void **state)
{
	struct fixture *f = *state;
	struct imgfs *fs = f->fs;
	struct imgfs_file *file;
	struct stat s1, s2;

	assert_int_equal(imgfs_getattr(fs, walk(fs, "h1"), &s1), 0);
	assert_int_equal(imgfs_getattr(fs, walk(fs, "h2"), &s2), 0);
	assert_int_equal(s1.st_ino, s2.st_ino);
	assert_int_equal(s1.st_nlink, 2);

	/* One name copied up leaves the group: the other keeps the image's data. */
	assert_int_equal(imgfs_open(fs, walk(fs, "h1"), O_WRONLY | O_TRUNC, &file), 0);
	assert_int_equal(write_at(fs, file, "mine\n", 5, 0), 5);
	imgfs_release(fs, file);
	assert_string_equal(content(fs, "h1"), "mine\n");
	assert_string_equal(content(fs, "h2"), "shared\n");
	assert_int_equal(imgfs_getattr(fs, walk(fs, "h1"), &s1), 0);
	assert_int_equal(imgfs_getattr(fs, walk(fs, "h2"), &s2), 0);
	assert_int_not_equal(s1.st_ino, s2.st_ino);
	assert_int_equal(s1.st_nlink, 1);
	/* As overlayfs without an index: the lower name still counts the image's links. */
	assert_int_equal(s2.st_nlink, 2);
	assert_int_equal(upper_lstat(f, "h2", &s2), -ENOENT);
}

/* A file whose last name went while it is open: link count 0 through the handle and by
 * number (the copy-up's pending work name is not the user's), data still readable. */
static void test_unlinked_open(void **state)
{
	struct fixture *f = *state;
	struct imgfs *fs = f->fs;
	struct imgfs_file *file, *other;
	struct imgfs_entry e;
	struct stat st;
	uint64_t ino;
	char buf[16];

	/* Copied up (still pending) by the open, then unlinked. */
	ino = walk(fs, "f");
	assert_int_equal(imgfs_open(fs, ino, O_RDWR, &file), 0);
	assert_int_equal(imgfs_fgetattr(fs, ino, file, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(imgfs_unlink(fs, IMGFS_ROOT_INO, "f"), 0);
	assert_true(upper_is_whiteout_at(f, "f"));
	assert_int_equal(imgfs_fgetattr(fs, ino, file, &st), 0);
	assert_int_equal(st.st_nlink, 0);
	assert_int_equal(imgfs_getattr(fs, ino, &st), 0);
	assert_int_equal(st.st_nlink, 0);
	assert_int_equal(imgfs_read(fs, file, buf, sizeof(buf), 0), 8);
	assert_memory_equal(buf, "lower f\n", 8);
	/* A second open of the same inode (open of /proc/self/fd/N). */
	assert_int_equal(imgfs_open(fs, ino, O_RDONLY, &other), 0);
	assert_int_equal(imgfs_fgetattr(fs, ino, other, &st), 0);
	assert_int_equal(st.st_nlink, 0);
	imgfs_release(fs, other);
	imgfs_release(fs, file);

	/* Renamed over while open. */
	ino = walk(fs, "a/x");
	assert_int_equal(imgfs_open(fs, ino, O_RDWR, &file), 0);
	assert_int_equal(imgfs_rename(fs, IMGFS_ROOT_INO, "g", walk(fs, "a"), "x", 0), 0);
	assert_int_equal(imgfs_fgetattr(fs, ino, file, &st), 0);
	assert_int_equal(st.st_nlink, 0);
	assert_int_equal(imgfs_read(fs, file, buf, sizeof(buf), 0), 3);
	imgfs_release(fs, file);

	/* Not copied up: the open file is the lower one, whose link count overlayfs shows. */
	ino = walk(fs, "e/z");
	assert_int_equal(imgfs_open(fs, ino, O_RDONLY, &file), 0);
	assert_int_equal(imgfs_unlink(fs, walk(fs, "e"), "z"), 0);
	assert_int_equal(imgfs_fgetattr(fs, ino, file, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(imgfs_read(fs, file, buf, sizeof(buf), 0), 3);
	imgfs_release(fs, file);

	/* Two names of the upper: one gone, then the other. */
	assert_int_equal(imgfs_create(fs, IMGFS_ROOT_INO, "n1", 0644, O_RDWR, &f->cred, &e, &file),
	                 0);
	ino = e.ino;
	assert_int_equal(imgfs_link(fs, ino, IMGFS_ROOT_INO, "n2", &e), 0);
	assert_int_equal(imgfs_fgetattr(fs, ino, file, &st), 0);
	assert_int_equal(st.st_nlink, 2);
	assert_int_equal(imgfs_unlink(fs, IMGFS_ROOT_INO, "n2"), 0);
	assert_int_equal(imgfs_fgetattr(fs, ino, file, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(imgfs_unlink(fs, IMGFS_ROOT_INO, "n1"), 0);
	assert_int_equal(imgfs_fgetattr(fs, ino, file, &st), 0);
	assert_int_equal(st.st_nlink, 0);
	imgfs_release(fs, file);
}

/* A lower directory moved out of its parent needs an absolute redirect: over 256 bytes
 * (overlayfs' redirect_max), -EXDEV and nothing moved, as the kernel's overlayfs answers
 * so that mv copies instead. Within its parent the redirect is its name: no limit. */
static void test_long_redirect_exdev(void **state)
{
	struct fixture *f = *state;
	struct imgfs *fs = f->fs;
	char deep[512], rel[1024];
	struct imgfs_entry e;
	uint64_t d;

	snprintf(deep, sizeof(deep), "L/%s/%s", name200, name100);
	d = walk(fs, deep);
	assert_int_equal(imgfs_rename(fs, d, "d", walk(fs, "b"), "d", 0), -EXDEV);
	assert_int_equal(imgfs_rename(fs, d, "d", walk(fs, "b"), "d", IMGFS_RENAME_NOREPLACE),
	                 -EXDEV);
	/* Exchanged with a short one, whichever is named first. */
	assert_int_equal(imgfs_rename(fs, d, "d", IMGFS_ROOT_INO, "b", IMGFS_RENAME_EXCHANGE),
	                 -EXDEV);
	assert_int_equal(imgfs_rename(fs, IMGFS_ROOT_INO, "b", d, "d", IMGFS_RENAME_EXCHANGE),
	                 -EXDEV);
	/* Into a deep directory of the upper, or exchanged with one. */
	assert_int_equal(imgfs_mkdir(fs, walk(fs, "b"), "u1", 0755, &f->cred, &e), 0);
	assert_int_equal(imgfs_mkdir(fs, walk(fs, "b/u1"), "u2", 0755, &f->cred, &e), 0);
	assert_int_equal(imgfs_rename(fs, d, "d", walk(fs, "b/u1/u2"), "d", 0), -EXDEV);
	assert_int_equal(imgfs_rename(fs, walk(fs, "b/u1"), "u2", d, "d", IMGFS_RENAME_EXCHANGE),
	                 -EXDEV);
	snprintf(rel, sizeof(rel), "%s/d/c", deep);
	assert_string_equal(content(fs, rel), "deep c\n");
	assert_string_equal(listing(fs, "b"), "u1");
	assert_string_equal(listing(fs, "b/u1"), "u2");
	snprintf(rel, sizeof(rel), "%s/d", deep);
	assert_null(upper_xattr(f, rel, REDIRECT));

	/* Exactly 256 bytes moves; 257 does not. */
	assert_int_equal(imgfs_rename(fs, IMGFS_ROOT_INO, name255, walk(fs, "b"), "p", 0), 0);
	snprintf(rel, sizeof(rel), "/%s", name255);
	assert_string_equal(upper_xattr(f, "b/p", REDIRECT), rel);
	assert_int_equal(imgfs_rename(fs, walk(fs, "q"), name254, walk(fs, "b"), "q", 0), -EXDEV);
	/* An absolute redirect it has is kept, and the move is not checked again. */
	assert_int_equal(imgfs_rename(fs, walk(fs, "b"), "p", walk(fs, "b/u1"), "p", 0), 0);
	assert_string_equal(upper_xattr(f, "b/u1/p", REDIRECT), rel);

	/* Within its parent: the name, whatever the path. */
	assert_int_equal(imgfs_rename(fs, d, "d", d, "d2", 0), 0);
	snprintf(rel, sizeof(rel), "%s/d2", deep);
	assert_string_equal(upper_xattr(f, rel, REDIRECT), "d");
	snprintf(rel, sizeof(rel), "%s/d2/c", deep);
	assert_string_equal(content(fs, rel), "deep c\n");
	/* A relative redirect does not serve elsewhere: the absolute one is too long. */
	assert_int_equal(imgfs_rename(fs, d, "d2", walk(fs, "b"), "d", 0), -EXDEV);
	/* Nor does a directory holding it move: its own path is too long. */
	assert_int_equal(imgfs_rename(fs, walk(fs, "L"), name200, walk(fs, "b"), "m", 0), 0);
	assert_int_equal(imgfs_rename(fs, walk(fs, "b/m"), name100, IMGFS_ROOT_INO, "n", 0),
	                 -EXDEV);
	/* Back under its own name in its parent: the redirect it has is kept. */
	assert_int_equal(imgfs_rename(fs, d, "d2", d, "d", 0), 0);
	snprintf(rel, sizeof(rel), "b/m/%s/d", name100);
	assert_string_equal(upper_xattr(f, rel, REDIRECT), "d");
}

/* security.selinux where nothing labels files: EOPNOTSUPP to read and to write, so that
 * ls -l stops asking (the image has no label); else what the upper holds. */
static void test_security_labels(void **state)
{
	struct fixture *f = *state;
	uint64_t ino = walk(f->fs, "a/x");
	char buf[16];

	assert_int_equal(imgfs_getxattr(f->fs, ino, "security.selinux", buf, sizeof(buf)),
	                 -ENODATA);
	{
		struct upper *u = NULL;
		struct imgfs *fs = NULL;
		struct lower l = mem_lower_of(&f->mem);
		char sub[PATH_MAX];
		int rfd, wfd;

		snprintf(sub, sizeof(sub), "%s/upper2", f->dir);
		assert_int_equal(mkdir(sub, 0755), 0);
		rfd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		snprintf(sub, sizeof(sub), "%s/work2", f->dir);
		assert_int_equal(mkdir(sub, 0700), 0);
		wfd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		assert_int_equal(upper_open(rfd, wfd, UPPER_XATTR_USER, &u), 0);
		assert_int_equal(
		    imgfs_new(&l, &(struct imgfs_opts){.upper = u, .no_security_labels = true},
		              &fs),
		    0);
		ino = walk(fs, "a/x");
		assert_int_equal(imgfs_getxattr(fs, ino, "security.selinux", buf, sizeof(buf)),
		                 -EOPNOTSUPP);
		assert_int_equal(imgfs_setxattr(fs, ino, "security.selinux", "x", 1, 0),
		                 -EOPNOTSUPP);
		assert_int_equal(imgfs_getxattr(fs, ino, "user.other", buf, sizeof(buf)), -ENODATA);
		imgfs_free(fs);
	}
}

/* Reads without a handle: one entry per call, as a reader with a small buffer. */
struct one_entry {
	char name[256];
	uint64_t next;
	bool got;
};

static int take_one(const char *name, const struct imgfs_entry *ent, uint64_t next_off,
                    void *userdata)
{
	struct one_entry *o = userdata;

	(void)ent;
	if (o->got)
		return 1;
	snprintf(o->name, sizeof(o->name), "%s", name);
	o->next = next_off;
	o->got = true;
	return 0;
}

/* A listing read without a handle resumes where the reader was after the directory
 * changed: the names that stayed are each seen once, a removed one is not seen. */
static void test_listing_without_handle(void **state)
{
	struct fixture *f = *state;
	struct imgfs *fs = f->fs;
	struct imgfs_entry e;
	char seen[40][256];
	size_t n_seen = 0, i;
	uint64_t off = 0;
	char name[16];

	for (i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "c%02zu", i);
		assert_int_equal(
		    imgfs_mknod(fs, IMGFS_ROOT_INO, name, S_IFREG | 0644, 0, &f->cred, &e), 0);
		imgfs_forget(fs, e.ino, 1);
	}
	for (;;) {
		struct one_entry o = {0};

		assert_int_equal(imgfs_readdir_ino(fs, IMGFS_ROOT_INO, off, false, take_one, &o),
		                 0);
		if (!o.got)
			break;
		assert_true(o.next > off);
		off = o.next;
		assert_true(n_seen < ARRAY_SIZE(seen));
		snprintf(seen[n_seen++], sizeof(seen[0]), "%s", o.name);
		/* After the fifth entry, c19 goes and c20 comes (it may be seen or not). */
		if (n_seen == 5 && !streq(o.name, "c19") && strncmp(o.name, "c", 1) == 0) {
			assert_int_equal(imgfs_unlink(fs, IMGFS_ROOT_INO, "c19"), 0);
			assert_int_equal(
			    imgfs_mknod(fs, IMGFS_ROOT_INO, "c20", S_IFREG | 0644, 0, &f->cred, &e),
			    0);
			imgfs_forget(fs, e.ino, 1);
		}
	}
	for (i = 0; i < 19; i++) {
		size_t count = 0;

		snprintf(name, sizeof(name), "c%02zu", i);
		for (size_t j = 0; j < n_seen; j++)
			count += streq(seen[j], name);
		assert_int_equal(count, 1);
	}
	for (size_t j = 0; j < n_seen; j++) {
		size_t count = 0;

		for (size_t k = 0; k < n_seen; k++)
			count += streq(seen[j], seen[k]);
		assert_int_equal(count, 1);
	}
	/* Read from the start again: the directory as it is now. */
	assert_non_null(strstr(listing(fs, ""), "c20"));
	assert_null(strstr(listing(fs, ""), "c19"));
}

/* A second filesystem over the same upper and work directory: what a process taking the
 * mount over opens. */
static struct imgfs *second_fs(struct fixture *f)
{
	struct upper *u = NULL;
	struct imgfs *fs = NULL;
	struct lower l = mem_lower_of(&f->mem);
	char p[PATH_MAX];
	int rfd, wfd;

	rfd = open(f->upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(p, sizeof(p), "%s/work", f->dir);
	wfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(rfd >= 0 && wfd >= 0);
	assert_int_equal(upper_open(rfd, wfd, UPPER_XATTR_USER, &u), 0);
	assert_int_equal(imgfs_new(&l, &(struct imgfs_opts){.upper = u}, &fs), 0);
	return fs;
}

/* Node ids mean the same to a second process, which never saw the lookups: an upper
 * directory and file (numbered by their upper st_ino), a lower directory, a copied-up lower
 * file, and a file unlinked while open (its data kept in the work directory until the
 * inode goes). A number nothing has is stale. */
static void test_takeover_ids(void **state)
{
	struct fixture *f = *state;
	struct imgfs *a = f->fs, *b;
	struct imgfs_file *fa, *fx, *fg, *fb;
	struct imgfs_entry e;
	struct stat st, ust;
	uint64_t dino, nino, xino, sino, gino;
	char buf[32], p[PATH_MAX];

	assert_int_equal(imgfs_mkdir(a, IMGFS_ROOT_INO, "d", 0755, &f->cred, &e), 0);
	dino = e.ino;
	assert_int_equal(imgfs_create(a, dino, "n", 0644, O_RDWR, &f->cred, &e, &fa), 0);
	nino = e.ino;
	assert_int_equal(write_at(a, fa, "new\n", 4, 0), 4);
	imgfs_release(a, fa);
	snprintf(p, sizeof(p), "%s/d/n", f->upper);
	assert_int_equal(stat(p, &ust), 0);
	assert_int_equal(nino, (UINT64_C(1) << 63) | (uint64_t)ust.st_ino);
	xino = walk(a, "a/x");
	assert_int_equal(imgfs_open(a, xino, O_RDWR, &fx), 0);
	assert_int_equal(write_at(a, fx, "AX", 2, 0), 2);
	sino = walk(a, "a/sub");
	assert_int_equal(imgfs_create(a, IMGFS_ROOT_INO, "gone", 0644, O_RDWR, &f->cred, &e, &fg),
	                 0);
	gino = e.ino;
	assert_int_equal(write_at(a, fg, "gone data\n", 10, 0), 10);
	assert_int_equal(imgfs_unlink(a, IMGFS_ROOT_INO, "gone"), 0);

	/* a "dies": it is not freed until the end, as its process would never free it. */
	b = second_fs(f);
	assert_int_equal(imgfs_getattr(b, dino, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(imgfs_getattr(b, nino, &st), 0);
	assert_int_equal(st.st_size, 4);
	assert_int_equal(imgfs_open(b, nino, O_RDONLY, &fb), 0);
	assert_int_equal(imgfs_read(b, fb, buf, sizeof(buf), 0), 4);
	assert_memory_equal(buf, "new\n", 4);
	imgfs_release(b, fb);
	assert_int_equal(imgfs_open(b, xino, O_RDWR, &fb), 0);
	assert_int_equal(imgfs_read(b, fb, buf, sizeof(buf), 0), 3);
	assert_memory_equal(buf, "AX\n", 3);
	imgfs_release(b, fb);
	assert_int_equal(imgfs_getattr(b, sino, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(imgfs_open(b, gino, O_RDONLY, &fb), 0);
	assert_int_equal(imgfs_read(b, fb, buf, sizeof(buf), 0), 10);
	assert_memory_equal(buf, "gone data\n", 10);
	assert_int_equal(imgfs_fgetattr(b, gino, fb, &st), 0);
	assert_int_equal(st.st_nlink, 0);
	imgfs_release(b, fb);
	assert_int_equal(imgfs_getattr(b, (UINT64_C(1) << 63) | 99999999, &st), -ESTALE);
	assert_int_equal(imgfs_getattr(b, 100000, &st), -ESTALE);
	/* The kernel forgets the unlinked file: its data goes with its link in work/. */
	imgfs_forget(b, gino, 1);
	snprintf(p, sizeof(p), "%s/work/orphan-%llx", f->dir, (unsigned long long)gino);
	assert_int_equal(access(p, F_OK), -1);
	assert_int_equal(imgfs_getattr(b, gino, &st), -ESTALE);
	imgfs_free(b);
	imgfs_release(a, fx);
	imgfs_release(a, fg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_rename_dir_redirect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rename_without_redirect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rename_exchange, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rename_noreplace, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_whiteout_and_opaque, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_copy_up, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hardlink_split, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unlinked_open, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_long_redirect_exdev, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_security_labels, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_listing_without_handle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_takeover_ids, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
