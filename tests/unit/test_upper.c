/* The upper directory in overlayfs' format, without root (user.overlay.* xattrs): copy-up
 * keeps data, holes, mode, times and xattrs and is atomic; whiteouts are char 0/0;
 * removal leaves a whiteout; creation over a whiteout is atomic and opaque for
 * directories; redirects; escaping of the overlay's own xattr names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include "common/fileio.h"
#include "fsd/fs/upper.h"

struct fixture {
	char dir[64];
	struct upper *u;
	int root;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int rfd, wfd;

	strcpy(f->dir, "/tmp/test_upper.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	rfd = open(f->dir, O_RDONLY | O_DIRECTORY);
	assert_true(rfd >= 0);
	assert_int_equal(mkdirat(rfd, "upper", 0755), 0);
	assert_int_equal(mkdirat(rfd, "work", 0700), 0);
	/* Leftover of an interrupted copy-up: upper_open() removes it. */
	assert_int_equal(mkdirat(rfd, "work/#stale", 0700), 0);
	f->root = openat(rfd, "upper", O_RDONLY | O_DIRECTORY);
	wfd = openat(rfd, "work", O_RDONLY | O_DIRECTORY);
	close(rfd);
	assert_int_equal(upper_open(dup(f->root), wfd, UPPER_XATTR_USER, &f->u), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	upper_free(f->u);
	close(f->root);
	(void)rm_rf_at(AT_FDCWD, f->dir);
	free(f);
	return 0;
}

/* A lower file: 3 MiB with data at 1 MiB and at the end, two xattrs. */
#define SRC_SIZE (3u << 20)

static ssize_t src_read(void *ctx, void *buf, size_t size, uint64_t off)
{
	(void)ctx;
	if (off >= SRC_SIZE)
		return 0;
	size = MIN(size, SRC_SIZE - off);
	for (size_t i = 0; i < size; i++) {
		uint64_t o = off + i;
		((char *)buf)[i] =
		    (o >= (1u << 20) && o < (1u << 20) + 5) || o >= SRC_SIZE - 4 ? 'd' : 0;
	}
	return (ssize_t)size;
}

static int64_t src_seek(void *ctx, uint64_t off, int whence)
{
	(void)ctx;
	if (off >= SRC_SIZE)
		return -ENXIO;
	if (whence == SEEK_DATA) {
		if (off < (1u << 20) + 5)
			return MAX(off, (uint64_t)1u << 20);
		return MAX(off, (uint64_t)SRC_SIZE - 4);
	}
	if (off < (1u << 20) + 5)
		return off < (1u << 20) ? (int64_t)off : (1 << 20) + 5;
	return off < SRC_SIZE - 4 ? (int64_t)off : SRC_SIZE;
}

static ssize_t src_listxattr(void *ctx, char *buf, size_t size)
{
	static const char list[] = "user.a\0user.overlay.opaque\0";

	(void)ctx;
	if (size == 0)
		return sizeof(list) - 1;
	if (size < sizeof(list) - 1)
		return -ERANGE;
	memcpy(buf, list, sizeof(list) - 1);
	return sizeof(list) - 1;
}

static ssize_t src_getxattr(void *ctx, const char *name, void *buf, size_t size)
{
	(void)ctx;
	if (!streq(name, "user.a") && !streq(name, "user.overlay.opaque"))
		return -ENODATA;
	if (size == 0)
		return 1;
	memcpy(buf, streq(name, "user.a") ? "1" : "y", 1);
	return 1;
}

static void test_copy_up_file(void **state)
{
	struct fixture *f = *state;
	struct upper_src src = {
	    .read = src_read,
	    .seek = src_seek,
	    .listxattr = src_listxattr,
	    .getxattr = src_getxattr,
	};
	struct stat st, pst_before, pst_after;
	char buf[8];
	int fd;

	src.st.st_mode = S_IFREG | 04750;
	src.st.st_uid = getuid();
	src.st.st_gid = getgid();
	src.st.st_size = SRC_SIZE;
	src.st.st_mtim = (struct timespec){.tv_sec = 1104537600, .tv_nsec = 123456789};
	src.st.st_atim = src.st.st_mtim;
	assert_int_equal(mkdirat(f->root, "d", 0755), 0);
	fd = openat(f->root, "d", O_RDONLY | O_DIRECTORY);
	assert_int_equal(futimens(fd, (struct timespec[]){{.tv_sec = 5}, {.tv_sec = 7}}), 0);
	assert_int_equal(fstat(fd, &pst_before), 0);

	assert_int_equal(upper_copy_up(f->u, &src, fd, "file", true, NULL), 0);
	assert_int_equal(fstatat(fd, "file", &st, 0), 0);
	assert_int_equal(st.st_mode, S_IFREG | 04750);
	assert_int_equal(st.st_size, SRC_SIZE);
	assert_int_equal(st.st_mtim.tv_sec, 1104537600);
	assert_int_equal(st.st_mtim.tv_nsec, 123456789);
	/* Holes stay holes: far less than 3 MiB allocated. */
	assert_true(st.st_blocks * 512 < (1 << 20));
	{
		int ffd = openat(fd, "file", O_RDONLY);

		assert_int_equal(pread(ffd, buf, 5, 1 << 20), 5);
		assert_memory_equal(buf, "ddddd", 5);
		assert_int_equal(pread(ffd, buf, 4, SRC_SIZE - 4), 4);
		assert_memory_equal(buf, "dddd", 4);
		assert_int_equal(fgetxattr(ffd, "user.a", buf, sizeof(buf)), 1);
		/* The overlay's own names are never copied. */
		assert_int_equal(fgetxattr(ffd, "user.overlay.opaque", buf, sizeof(buf)), -1);
		close(ffd);
	}
	/* A copy-up is not a change of the parent. */
	assert_int_equal(fstat(fd, &pst_after), 0);
	assert_int_equal(pst_after.st_mtim.tv_sec, pst_before.st_mtim.tv_sec);
	/* Copying over an existing name is refused, and leaves nothing in work/ once the
	 * first copy is durable. */
	assert_int_equal(upper_copy_up(f->u, &src, fd, "file", true, NULL), -EEXIST);
	assert_int_equal(upper_flush(f->u), 0);
	assert_int_equal(upper_dir_only_whiteouts(upper_work_fd(f->u)), 0);
	close(fd);
}

static void test_whiteouts_and_opaque(void **state)
{
	struct fixture *f = *state;
	struct upper_new n = {.mode = S_IFREG | 0644, .uid = getuid(), .gid = getgid()};
	struct stat st;
	int fd = -1, dfd;

	/* A whiteout where nothing is. */
	assert_int_equal(upper_whiteout(f->u, f->root, "gone"), 0);
	assert_int_equal(upper_stat(f->root, "gone", &st), 0);
	assert_true(upper_is_whiteout(&st));
	assert_int_equal(st.st_rdev, makedev(0, 0));

	/* A file replacing the whiteout, atomically. */
	assert_int_equal(upper_create(f->u, f->root, "gone", &n, true, &fd), 0);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
	assert_int_equal(upper_stat(f->root, "gone", &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 1);

	/* Removing it where the lower has the name leaves a whiteout again. */
	assert_int_equal(upper_remove(f->u, f->root, "gone", false, true), 0);
	assert_int_equal(upper_stat(f->root, "gone", &st), 0);
	assert_true(upper_is_whiteout(&st));

	/* A directory over the whiteout is opaque. */
	n = (struct upper_new){
	    .mode = S_IFDIR | 0700, .uid = getuid(), .gid = getgid(), .opaque = true};
	assert_int_equal(upper_create(f->u, f->root, "gone", &n, true, &dfd), 0);
	assert_true(upper_is_opaque(f->u, dfd));
	assert_int_equal(fgetxattr(dfd, "user.overlay.opaque", &(char){0}, 1), 1);
	assert_int_equal(fstat(dfd, &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 0700);

	/* rmdir of a directory holding only whiteouts; ENOTEMPTY otherwise. */
	assert_int_equal(upper_whiteout(f->u, dfd, "w1"), 0);
	n = (struct upper_new){.mode = S_IFREG | 0644, .uid = getuid(), .gid = getgid()};
	assert_int_equal(upper_create(f->u, dfd, "real", &n, false, &fd), 0);
	close(fd);
	assert_int_equal(upper_remove(f->u, f->root, "gone", true, false), -ENOTEMPTY);
	assert_int_equal(unlinkat(dfd, "real", 0), 0);
	close(dfd);
	assert_int_equal(upper_remove(f->u, f->root, "gone", true, false), 0);
	assert_int_equal(upper_stat(f->root, "gone", &st), -ENOENT);
	assert_int_equal(upper_create(f->u, f->root, "gone", &n, false, NULL), 0);
	assert_int_equal(upper_create(f->u, f->root, "gone", &n, false, NULL), -EEXIST);
}

static void test_redirect_and_xattr_names(void **state)
{
	struct fixture *f = *state;
	char buf[256];
	int dfd;

	assert_int_equal(mkdirat(f->root, "moved", 0755), 0);
	assert_int_equal(upper_open_dir(f->root, "moved", &dfd), 0);
	assert_int_equal(upper_get_redirect(f->u, dfd, buf, sizeof(buf)), -ENODATA);
	assert_int_equal(upper_set_redirect(f->u, dfd, "/w/ren/r1"), 0);
	assert_int_equal(upper_get_redirect(f->u, dfd, buf, sizeof(buf)), 9);
	assert_string_equal(buf, "/w/ren/r1");
	assert_int_equal(fgetxattr(dfd, "user.overlay.redirect", buf, sizeof(buf)), 9);

	/* A user's user.overlay.X is stored as user.overlay.overlay.X and listed as set;
	 * the overlay's own names are hidden. */
	assert_int_equal(upper_setxattr(f->u, dfd, NULL, "user.overlay.mine", "v", 1, 0), 0);
	assert_int_equal(fgetxattr(dfd, "user.overlay.overlay.mine", buf, sizeof(buf)), 1);
	assert_int_equal(upper_getxattr(f->u, dfd, NULL, "user.overlay.mine", buf, sizeof(buf)), 1);
	assert_int_equal(upper_setxattr(f->u, dfd, NULL, "user.plain", "p", 1, 0), 0);
	{
		ssize_t n = upper_listxattr(f->u, dfd, NULL, buf, sizeof(buf));
		const char want[] = "user.overlay.mine\0user.plain\0";
		bool mine = false, plain = false;

		assert_true(n > 0);
		for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1) {
			assert_false(streq(buf + i, "user.overlay.redirect"));
			mine |= streq(buf + i, "user.overlay.mine");
			plain |= streq(buf + i, "user.plain");
		}
		assert_true(mine && plain);
		assert_int_equal(n, sizeof(want) - 1);
		assert_int_equal(upper_listxattr(f->u, dfd, NULL, NULL, 0), n);
		assert_int_equal(upper_listxattr(f->u, dfd, NULL, buf, 3), -ERANGE);
	}
	assert_int_equal(upper_removexattr(f->u, dfd, NULL, "user.overlay.mine"), 0);
	assert_int_equal(fgetxattr(dfd, "user.overlay.overlay.mine", buf, sizeof(buf)), -1);
	assert_true(upper_xattr_is_private(f->u, "user.overlay.opaque"));
	assert_false(upper_xattr_is_private(f->u, "user.overlay.overlay.x"));
	assert_false(upper_xattr_is_private(f->u, "trusted.overlay.opaque"));
	close(dfd);
}

static void test_links(void **state)
{
	struct fixture *f = *state;
	struct upper_new n = {.mode = S_IFREG | 0644, .uid = getuid(), .gid = getgid()};
	struct stat a, b;

	assert_int_equal(upper_create(f->u, f->root, "a", &n, false, NULL), 0);
	assert_int_equal(upper_whiteout(f->u, f->root, "b"), 0);
	assert_int_equal(upper_link(f->u, f->root, "a", f->root, "b", true), 0);
	assert_int_equal(upper_stat(f->root, "a", &a), 0);
	assert_int_equal(upper_stat(f->root, "b", &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(a.st_nlink, 2);
	assert_int_equal(upper_link(f->u, f->root, "a", f->root, "b", false), -EEXIST);
}

static void test_pending_names(void **state)
{
	struct upper_pending_name p = {.boot = "0123456789abcdef",
	                               .image = "a1b2c3d4e5f6",
	                               .node = 0x12345678,
	                               .seq = 0xfedcba9876543210ull};
	struct upper_pending_name q;
	char buf[UPPER_PENDING_NAME_MAX];
	static const char *const bad[] = {
	    "",
	    "p-",
	    "#1-42",
	    "p-0123456789abcdef-a1b2c3d4e5f6-00000001-",                  /* no sequence */
	    "p-0123456789abcdef-a1b2c3d4e5f6-00000001-11111111111111111", /* 17 digits */
	    "p-0123456789ABCDEF-a1b2c3d4e5f6-00000001-1",                 /* upper case */
	    "p-0123456789abcde-a1b2c3d4e5f6-00000001-1",                  /* short boot */
	    "p-0123456789abcdef0-a1b2c3d4e5f6-00000001-1",                /* long boot */
	    "p-0123456789abcdef-a1b2c3d4e5f-00000001-1",                  /* short image */
	    "p-0123456789abcdef-a1b2c3d4e5f6-0000001-1",                  /* short node */
	    "p-0123456789abcdef-a1b2c3d4e5f6-000000001-1",                /* long node */
	    "p-0123456789abcdef-a1b2c3d4e5f6-00000001-1/x",
	    "p-0123456789abcdef-a1b2c3d4e5f6-00000001-+1",
	    "p-0123456789abcdef-a1b2c3d4e5f6-00000001-1 ",
	    "q-0123456789abcdef-a1b2c3d4e5f6-00000001-1",
	    "p_0123456789abcdef-a1b2c3d4e5f6-00000001-1",
	    "p-0123456789abcdef_a1b2c3d4e5f6-00000001-1",
	    "p-0123456789abcdef-a1b2c3d4e5f6-0000000g-1",
	};

	(void)state;
	upper_pending_name_format(&p, buf);
	assert_string_equal(buf, "p-0123456789abcdef-a1b2c3d4e5f6-12345678-fedcba9876543210");
	assert_int_equal(upper_pending_name_parse(buf, &q), 0);
	assert_string_equal(q.boot, p.boot);
	assert_string_equal(q.image, p.image);
	assert_int_equal(q.node, p.node);
	assert_true(q.seq == p.seq);
	assert_int_equal(upper_pending_name_parse("p-0123456789abcdef-a1b2c3d4e5f6-00000000-0", &q),
	                 0);
	assert_int_equal(q.node, 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(upper_pending_name_parse(bad[i], &q), -EINVAL);
	/* Longer than any name could be, without a terminator within the limit. */
	{
		char big[300];

		memset(big, 'a', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		memcpy(big, "p-", 2);
		assert_int_equal(upper_pending_name_parse(big, &q), -EINVAL);
	}
}

/* A fixture whose syncer holds copies for a minute: pending until fsync or upper_free(). */
static int setup_held(void **state)
{
	setenv("IMGFS_TEST_SYNC_DELAY_MS", "60000", 1);
	setup(state);
	unsetenv("IMGFS_TEST_SYNC_DELAY_MS");
	return 0;
}

/* The single pending name in work/, into buf; its count. */
static int pending_in_work(struct fixture *f, char buf[UPPER_PENDING_NAME_MAX])
{
	int fd = openat(upper_work_fd(f->u), ".", O_RDONLY | O_DIRECTORY);
	DIR *d = fdopendir(fd);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		struct upper_pending_name p;

		if (upper_pending_name_parse(de->d_name, &p) == 0) {
			snprintf(buf, UPPER_PENDING_NAME_MAX, "%.63s", de->d_name);
			n++;
		}
	}
	closedir(d);
	return n;
}

static void test_pending_copy(void **state)
{
	struct fixture *f = *state;
	struct upper_src src = {.read = src_read, .seek = src_seek, .node = 7};
	char name[UPPER_PENDING_NAME_MAX];
	struct upper_pending_name p;
	struct stat st;
	int fd;

	src.st.st_mode = S_IFREG | 0644;
	src.st.st_uid = getuid();
	src.st.st_gid = getgid();
	src.st.st_size = SRC_SIZE;
	assert_int_equal(upper_set_image(f->u, "00112233445x"), -EINVAL);
	assert_int_equal(upper_set_image(f->u, "001122334455"), 0);
	assert_int_equal(upper_copy_up(f->u, &src, f->root, "file", true, NULL), 0);
	assert_int_equal(pending_in_work(f, name), 1);
	assert_int_equal(upper_pending_name_parse(name, &p), 0);
	assert_int_equal(p.node, 7);
	assert_string_equal(p.image, "001122334455");
	/* The work name is a second link, which the user does not see. */
	assert_int_equal(fstatat(f->root, "file", &st, 0), 0);
	assert_int_equal(st.st_nlink, 2);
	assert_int_equal(upper_fstatat(f->u, f->root, "file", 0, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(upper_link(f->u, f->root, "file", f->root, "file2", false), 0);
	assert_int_equal(upper_fstatat(f->u, f->root, "file2", 0, &st), 0);
	assert_int_equal(st.st_nlink, 2);
	/* A user's fsync: the pending name is gone when it returns. */
	fd = openat(f->root, "file", O_RDWR);
	assert_int_equal(fsync(fd), 0);
	assert_int_equal(upper_sync_pending(f->u, st.st_ino), 0);
	assert_int_equal(pending_in_work(f, name), 0);
	assert_int_equal(upper_fstatat(f->u, fd, "", AT_EMPTY_PATH, &st), 0);
	assert_int_equal(st.st_nlink, 2);
	assert_int_equal(upper_sync_pending(f->u, st.st_ino), 0);
	close(fd);
}

/* A lower file for recovery: SRC_SIZE bytes as src_read() makes them. */
static int recover_src(void *ctx, uint32_t node, struct upper_src *ret)
{
	(void)ctx;
	if (node != 7)
		return -ENOENT;
	*ret = (struct upper_src){.read = src_read, .seek = src_seek, .node = node};
	ret->st.st_mode = S_IFREG | 0644;
	ret->st.st_size = SRC_SIZE;
	return 0;
}

/* Makes work/NAME a file of SRC_SIZE zero bytes linked at upper/LINK (when LINK). */
static void zero_file(struct fixture *f, const char *name, const char *link)
{
	int fd = openat(upper_work_fd(f->u), name, O_RDWR | O_CREAT | O_EXCL, 0644);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, SRC_SIZE), 0);
	close(fd);
	if (link)
		assert_int_equal(linkat(upper_work_fd(f->u), name, f->root, link, 0), 0);
}

static void test_recover(void **state)
{
	struct fixture *f = *state;
	int w = upper_work_fd(f->u);
	char buf[8], boot[UPPER_BOOT_LEN + 1] = {0}, name[UPPER_PENDING_NAME_MAX];
	struct upper_pending_name p = {
	    .boot = "ffffffffffffffff", .image = "001122334455", .node = 7, .seq = 1};
	struct stat st;
	int fd;

	assert_int_equal(upper_set_image(f->u, "001122334455"), 0);
	/* Another boot, this image: rewritten from the lower file. */
	upper_pending_name_format(&p, name);
	zero_file(f, name, "restored");
	/* Another image: kept as it is. */
	memcpy(p.image, "99887766554a", UPPER_IMAGE_LEN);
	p.seq = 2;
	upper_pending_name_format(&p, name);
	zero_file(f, name, "other-image");
	/* This boot: synced only (the page cache holds the data). */
	{
		char *id = NULL;
		size_t n = 0;

		assert_int_equal(
		    read_file_full(AT_FDCWD, "/proc/sys/kernel/random/boot_id", 64, &id, NULL), 0);
		for (const char *c = id; *c && n < UPPER_BOOT_LEN; c++)
			if (*c != '-' && *c != '\n')
				boot[n++] = *c;
		free(id);
	}
	memcpy(p.boot, boot, sizeof(p.boot));
	memcpy(p.image, "001122334455", UPPER_IMAGE_LEN);
	p.seq = 3;
	upper_pending_name_format(&p, name);
	zero_file(f, name, "same-boot");
	/* Never linked into place: removed. */
	p.seq = 4;
	upper_pending_name_format(&p, name);
	zero_file(f, name, NULL);
	/* Hostile: a symlink and a directory under pending names, never followed. */
	assert_int_equal(symlinkat("/etc/passwd", w, "p-ffffffffffffffff-001122334455-00000007-5"),
	                 0);
	assert_int_equal(mkdirat(w, "p-ffffffffffffffff-001122334455-00000007-6", 0700), 0);
	/* A lower node that is no regular file: kept as it is. */
	p.node = 9;
	p.seq = 7;
	memcpy(p.boot, "ffffffffffffffff", sizeof(p.boot));
	upper_pending_name_format(&p, name);
	zero_file(f, name, "bad-node");

	assert_int_equal(upper_recover(f->u, recover_src, NULL), 1);
	assert_int_equal(upper_dir_only_whiteouts(w), 0);
	fd = openat(f->root, "restored", O_RDONLY);
	assert_int_equal(pread(fd, buf, 5, 1 << 20), 5);
	assert_memory_equal(buf, "ddddd", 5);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, SRC_SIZE);
	assert_int_equal(st.st_nlink, 1);
	close(fd);
	fd = openat(f->root, "other-image", O_RDONLY);
	assert_int_equal(pread(fd, buf, 5, 1 << 20), 5);
	assert_memory_equal(buf, "\0\0\0\0\0", 5);
	close(fd);
	fd = openat(f->root, "same-boot", O_RDONLY);
	assert_int_equal(pread(fd, buf, 5, 1 << 20), 5);
	assert_memory_equal(buf, "\0\0\0\0\0", 5);
	close(fd);
	assert_int_equal(upper_stat(f->root, "bad-node", &st), 0);
	assert_int_equal(st.st_nlink, 1);
	/* The symlink's target was not touched. */
	assert_int_equal(stat("/etc/passwd", &st), 0);
	assert_true(st.st_size > 0);
}

/* The mode an object gets under a default ACL: the kernel's posix_acl_create_masq(). */
static void test_acl_create_mode(void **state)
{
	/* user::rwx user:65534:rwx group::r-x mask::r-x other::--- (little endian) */
	static const unsigned char with_mask[] = {
	    2,    0, 0, 0,                         /* version */
	    0x01, 0, 7, 0, 0xff, 0xff, 0xff, 0xff, /* user:: */
	    0x02, 0, 7, 0, 0xfe, 0xff, 0,    0,    /* user:65534 */
	    0x04, 0, 5, 0, 0xff, 0xff, 0xff, 0xff, /* group:: */
	    0x10, 0, 5, 0, 0xff, 0xff, 0xff, 0xff, /* mask:: */
	    0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, /* other:: */
	};
	/* user::rw- group::r-- other::r-- */
	static const unsigned char minimal[] = {
	    2, 0, 0,    0,    0x01, 0,    6,    0, 0xff, 0xff, 0xff, 0xff, 0x04, 0,
	    4, 0, 0xff, 0xff, 0xff, 0xff, 0x20, 0, 4,    0,    0xff, 0xff, 0xff, 0xff,
	};
	(void)state;
	assert_int_equal(upper_acl_create_mode(with_mask, sizeof(with_mask), 0666), 0640);
	assert_int_equal(upper_acl_create_mode(with_mask, sizeof(with_mask), 0777), 0750);
	assert_int_equal(upper_acl_create_mode(with_mask, sizeof(with_mask), 0600), 0600);
	/* setuid, setgid and sticky bits pass untouched */
	assert_int_equal(upper_acl_create_mode(with_mask, sizeof(with_mask), 07777), 07750);
	assert_int_equal(upper_acl_create_mode(minimal, sizeof(minimal), 0777), 0644);
	assert_int_equal(upper_acl_create_mode(minimal, sizeof(minimal), 0640), 0640);
	/* malformed: the mode asked for */
	assert_int_equal(upper_acl_create_mode(minimal, sizeof(minimal) - 1, 0777), 0777);
	assert_int_equal(upper_acl_create_mode(minimal, 2, 0777), 0777);
	assert_int_equal(upper_acl_create_mode(NULL, 0, 0755), 0755);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_copy_up_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_whiteouts_and_opaque, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_redirect_and_xattr_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_links, setup, teardown),
	    cmocka_unit_test(test_pending_names),
	    cmocka_unit_test(test_acl_create_mode),
	    cmocka_unit_test_setup_teardown(test_pending_copy, setup_held, teardown),
	    cmocka_unit_test_setup_teardown(test_recover, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
