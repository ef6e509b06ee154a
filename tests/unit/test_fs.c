/* The filesystem core over an in-memory lower: lookups and their counts, attributes,
 * directory offsets, symlinks, xattrs, reads, and what a corrupt lower does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/sysmacros.h>
#include "fsd/fs/fs.h"
#include "fixture_lower.h"

static const struct mem_node image[] = {
    /* 0 */ {.name = "", .parent = 0, .mode = S_IFDIR | 0755, .canonical = 0, .nlink = 4},
    /* 1 */ {.name = "bin", .parent = 0, .mode = S_IFDIR | 0755, .canonical = 1, .nlink = 2},
    /* 2 */ {.name = "etc", .parent = 0, .mode = S_IFDIR | 0755, .canonical = 2, .nlink = 2},
    /* 3 */
    {.name = "sh",
     .parent = 1,
     .mode = S_IFREG | 04755,
     .data = "#!/bin/busybox\n",
     .canonical = 3,
     .nlink = 1,
     .xattrs = {{"security.capability", "\x01\x00\x00\x02", 4}, {"user.note", "hi", 2}}},
    /* 4 */ {.name = "link", .parent = 1, .mode = S_IFLNK | 0777, .data = "sh", .canonical = 4},
    /* 5 */
    {.name = "null", .parent = 1, .mode = S_IFCHR | 0666, .canonical = 5, .rdev = 0x103},
    /* 6 */
    {.name = "hard",
     .parent = 2,
     .mode = S_IFREG | 0600,
     .uid = 1000,
     .gid = 1000,
     .data = "root:x:0:0\n",
     .canonical = 7,
     .nlink = 2},
    /* 7 */
    {.name = "passwd",
     .parent = 2,
     .mode = S_IFREG | 0600,
     .uid = 1000,
     .gid = 1000,
     .data = "root:x:0:0\n",
     .canonical = 7,
     .nlink = 2},
    /* 8 */ {.name = "bad/name", .parent = 2, .mode = S_IFREG | 0644, .data = "", .canonical = 8},
    /* 9 */ {.name = "weird", .parent = 2, .mode = 0644, .data = "", .canonical = 9},
};

static struct mem_lower mem;

static struct imgfs *new_fs(void)
{
	struct lower l = mem_lower_of(&mem);
	struct imgfs *fs = NULL;

	mem = (struct mem_lower){.nodes = image, .n = ARRAY_SIZE(image)};
	assert_int_equal(imgfs_new(&l, NULL, &fs), 0);
	return fs;
}

static void test_lookup_getattr(void **state)
{
	struct imgfs *fs = new_fs();
	struct imgfs_entry e;
	struct stat st;

	(void)state;
	assert_int_equal(imgfs_getattr(fs, IMGFS_ROOT_INO, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_ino, 1);

	assert_int_equal(imgfs_lookup(fs, IMGFS_ROOT_INO, "bin", &e), 0);
	assert_int_equal(e.ino, 2);
	assert_int_equal(e.generation, 0);
	assert_true(S_ISDIR(e.st.st_mode));
	assert_int_equal(e.st.st_ino, 2);

	assert_int_equal(imgfs_lookup(fs, 2, "sh", &e), 0);
	assert_int_equal(e.ino, 4);
	assert_int_equal(e.st.st_mode, S_IFREG | 04755);
	assert_int_equal(e.st.st_size, 15);
	assert_int_equal(e.st.st_mtim.tv_sec, 1700000000);

	assert_int_equal(imgfs_lookup(fs, 2, "null", &e), 0);
	assert_true(S_ISCHR(e.st.st_mode));
	assert_int_equal(major(e.st.st_rdev), 1);
	assert_int_equal(minor(e.st.st_rdev), 3);

	assert_int_equal(imgfs_lookup(fs, IMGFS_ROOT_INO, "nope", &e), -ENOENT);
	assert_int_equal(imgfs_lookup(fs, 4, "x", &e), -ENOTDIR);
	char longname[NAME_MAX + 2];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(imgfs_lookup(fs, IMGFS_ROOT_INO, longname, &e), -ENAMETOOLONG);
	assert_int_equal(imgfs_lookup(fs, 9999, "bin", &e), -ESTALE);
	assert_int_equal(imgfs_getattr(fs, 9999, &st), -ESTALE);
	assert_int_equal(imgfs_getattr(fs, 0, &st), -ESTALE);

	/* "." and ".." (NFS export) */
	assert_int_equal(imgfs_lookup(fs, 4, ".", &e), 0);
	assert_int_equal(e.ino, 4);
	assert_int_equal(imgfs_lookup(fs, 2, "..", &e), 0);
	assert_int_equal(e.ino, 1);
	imgfs_free(fs);
	assert_int_equal(mem.closed, 1);
}

static void test_hardlinks(void **state)
{
	struct imgfs *fs = new_fs();
	struct imgfs_entry a, b;

	(void)state;
	assert_int_equal(imgfs_lookup(fs, 3, "hard", &a), 0);
	assert_int_equal(imgfs_lookup(fs, 3, "passwd", &b), 0);
	/* One st_ino and link count for stat(2), one kernel inode per name. */
	assert_int_equal(a.st.st_ino, 8);
	assert_int_equal(b.st.st_ino, 8);
	assert_int_equal(a.st.st_nlink, 2);
	assert_int_equal(b.st.st_nlink, 2);
	assert_int_equal(a.ino, 7);
	assert_int_equal(b.ino, 8);
	assert_int_equal(imgfs_lookup_count(fs, 7), 1);
	assert_int_equal(imgfs_lookup_count(fs, 8), 1);

	/* Both names give the canonical node's content. */
	struct imgfs_file *f;
	char buf[32];
	assert_int_equal(imgfs_open(fs, 7, O_RDONLY, &f), 0);
	assert_int_equal(imgfs_read(fs, f, buf, sizeof(buf), 0), 11);
	assert_memory_equal(buf, "root:x:0:0\n", 11);
	imgfs_release(fs, f);
	struct stat st;
	assert_int_equal(imgfs_getattr(fs, 7, &st), 0);
	assert_int_equal(st.st_ino, 8);
	imgfs_free(fs);
}

static void test_lookup_counts_and_forget(void **state)
{
	struct imgfs *fs = new_fs();
	struct imgfs_entry e;

	(void)state;
	assert_int_equal(imgfs_inode_count(fs), 0);
	assert_int_equal(imgfs_lookup(fs, IMGFS_ROOT_INO, "bin", &e), 0);
	assert_int_equal(imgfs_lookup(fs, IMGFS_ROOT_INO, "bin", &e), 0);
	assert_int_equal(imgfs_lookup(fs, 2, "sh", &e), 0);
	assert_int_equal(imgfs_lookup_count(fs, 2), 2);
	assert_int_equal(imgfs_lookup_count(fs, 4), 1);
	/* The parent of a lookup is not counted, nor held. */
	assert_int_equal(imgfs_lookup_count(fs, 1), 0);
	assert_int_equal(imgfs_inode_count(fs), 2);

	imgfs_forget(fs, 2, 1);
	assert_int_equal(imgfs_lookup_count(fs, 2), 1);
	assert_int_equal(imgfs_inode_count(fs), 2);
	imgfs_forget(fs, 2, 1);
	assert_int_equal(imgfs_lookup_count(fs, 2), 0);
	assert_int_equal(imgfs_inode_count(fs), 1);
	/* Excess and unknown forgets are ignored. */
	imgfs_forget(fs, 4, 10);
	imgfs_forget(fs, 4, 1);
	imgfs_forget(fs, 12345, 1);
	assert_int_equal(imgfs_inode_count(fs), 0);

	/* A forgotten lower inode is still reachable by number. */
	struct stat st;
	assert_int_equal(imgfs_getattr(fs, 4, &st), 0);
	assert_int_equal(st.st_mode, S_IFREG | 04755);
	assert_int_equal(imgfs_inode_count(fs), 0);
	imgfs_free(fs);
}

static void test_many_inodes(void **state)
{
	struct imgfs *fs = new_fs();
	struct imgfs_entry e;

	(void)state;
	/* Enough kernel lookups to make the table grow, then all forgotten. */
	for (int i = 0; i < 5000; i++) {
		assert_int_equal(imgfs_lookup(fs, 3, "passwd", &e), 0);
		assert_int_equal(imgfs_lookup(fs, 2, "sh", &e), 0);
	}
	assert_int_equal(imgfs_lookup_count(fs, 8), 5000);
	imgfs_forget(fs, 8, 5000);
	imgfs_forget(fs, 4, 4999);
	assert_int_equal(imgfs_inode_count(fs), 1);
	imgfs_forget(fs, 4, 1);
	assert_int_equal(imgfs_inode_count(fs), 0);
	imgfs_free(fs);
}

struct listing {
	char names[16][32];
	uint64_t inos[16];
	uint64_t lookup_inos[16];
	mode_t modes[16];
	uint64_t next[16];
	int n;
	int limit; /* entries to take before reporting a full buffer */
};

static int collect(const char *name, const struct imgfs_entry *ent, uint64_t next_off,
                   void *userdata)
{
	struct listing *l = userdata;

	if (l->n >= l->limit)
		return 1;
	snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
	l->inos[l->n] = ent->st.st_ino;
	l->lookup_inos[l->n] = ent->ino;
	l->modes[l->n] = ent->st.st_mode;
	l->next[l->n] = next_off;
	l->n++;
	return 0;
}

static void test_readdir_offsets(void **state)
{
	struct imgfs *fs = new_fs();
	struct imgfs_dir *d;
	struct listing all = {.limit = 16};
	uint64_t off = 0;
	int total = 0;

	(void)state;
	assert_int_equal(imgfs_opendir(fs, 2, &d), 0);
	assert_int_equal(imgfs_readdir(fs, d, 0, false, collect, &all), 0);
	assert_int_equal(all.n, 5);
	assert_string_equal(all.names[0], ".");
	assert_int_equal(all.inos[0], 2);
	assert_string_equal(all.names[1], "..");
	assert_int_equal(all.inos[1], 1);
	assert_string_equal(all.names[2], "sh");
	assert_int_equal(all.inos[2], 4);
	assert_true(S_ISREG(all.modes[2]));
	assert_string_equal(all.names[3], "link");
	assert_true(S_ISLNK(all.modes[3]));
	assert_string_equal(all.names[4], "null");
	assert_true(S_ISCHR(all.modes[4]));
	/* Without plus, nothing is counted. */
	assert_int_equal(imgfs_inode_count(fs), 1);

	/* One entry per call, resuming at each next_off, gives the same listing. */
	for (;;) {
		struct listing one = {.limit = 1};

		assert_int_equal(imgfs_readdir(fs, d, off, false, collect, &one), 0);
		if (one.n == 0)
			break;
		assert_string_equal(one.names[0], all.names[total]);
		assert_int_equal(one.next[0], all.next[total]);
		off = one.next[0];
		total++;
		assert_true(total <= 5);
	}
	assert_int_equal(total, 5);
	/* Past the end: nothing. */
	struct listing none = {.limit = 16};
	assert_int_equal(imgfs_readdir(fs, d, all.next[4], false, collect, &none), 0);
	assert_int_equal(none.n, 0);
	imgfs_releasedir(fs, d);
	assert_int_equal(imgfs_inode_count(fs), 0);

	assert_int_equal(imgfs_opendir(fs, 4, &d), -ENOTDIR);
	imgfs_free(fs);
}

static void test_readdirplus_counts(void **state)
{
	struct imgfs *fs = new_fs();
	struct imgfs_dir *d;
	struct listing l = {.limit = 3};

	(void)state;
	assert_int_equal(imgfs_opendir(fs, 2, &d), 0);
	/* ".", "..", "sh" taken; "link" refused (buffer full): only "sh" is counted. */
	assert_int_equal(imgfs_readdir(fs, d, 0, true, collect, &l), 0);
	assert_int_equal(l.n, 3);
	assert_int_equal(l.lookup_inos[0], 0);
	assert_int_equal(l.lookup_inos[1], 0);
	assert_int_equal(l.lookup_inos[2], 4);
	assert_int_equal(l.modes[2], S_IFREG | 04755); /* full attributes in plus mode */
	assert_int_equal(imgfs_lookup_count(fs, 4), 1);
	assert_int_equal(imgfs_lookup_count(fs, 5), 0);
	assert_int_equal(imgfs_lookup_count(fs, 2), 0);
	assert_int_equal(imgfs_lookup_count(fs, 1), 0);

	struct listing rest = {.limit = 16};
	assert_int_equal(imgfs_readdir(fs, d, l.next[2], true, collect, &rest), 0);
	assert_int_equal(rest.n, 2);
	assert_string_equal(rest.names[0], "link");
	assert_int_equal(imgfs_lookup_count(fs, 5), 1);
	assert_int_equal(imgfs_lookup_count(fs, 6), 1);
	imgfs_releasedir(fs, d);
	imgfs_forget(fs, 4, 1);
	imgfs_forget(fs, 5, 1);
	imgfs_forget(fs, 6, 1);
	assert_int_equal(imgfs_inode_count(fs), 0);
	imgfs_free(fs);
}

/* Without a directory handle (the kernel does not open directories of a read-only
 * mount): the same listing, offsets and counts as through imgfs_opendir(). */
static void test_readdir_without_handle(void **state)
{
	struct imgfs *fs = new_fs();
	struct imgfs_dir *d;
	struct listing with = {.limit = 16}, first = {.limit = 3}, rest = {.limit = 16};

	(void)state;
	assert_int_equal(imgfs_opendir(fs, 2, &d), 0);
	assert_int_equal(imgfs_readdir(fs, d, 0, false, collect, &with), 0);
	imgfs_releasedir(fs, d);
	assert_int_equal(with.n, 5);

	assert_int_equal(imgfs_readdir_ino(fs, 2, 0, true, collect, &first), 0);
	assert_int_equal(first.n, 3);
	assert_int_equal(imgfs_readdir_ino(fs, 2, first.next[2], true, collect, &rest), 0);
	assert_int_equal(rest.n, 2);
	for (int i = 0; i < 5; i++) {
		const struct listing *l = i < 3 ? &first : &rest;
		int k = i < 3 ? i : i - 3;

		assert_string_equal(l->names[k], with.names[i]);
		assert_int_equal(l->inos[k], with.inos[i]);
		assert_int_equal(l->next[k], with.next[i]);
	}
	/* Plus mode counted one lookup per child, and no reference stays behind. */
	assert_int_equal(imgfs_lookup_count(fs, 4), 1);
	assert_int_equal(imgfs_lookup_count(fs, 5), 1);
	assert_int_equal(imgfs_lookup_count(fs, 6), 1);
	assert_int_equal(imgfs_lookup_count(fs, 2), 0);
	imgfs_forget(fs, 4, 1);
	imgfs_forget(fs, 5, 1);
	imgfs_forget(fs, 6, 1);
	assert_int_equal(imgfs_inode_count(fs), 0);

	assert_int_equal(imgfs_readdir_ino(fs, 4, 0, false, collect, &rest), -ENOTDIR);
	assert_int_equal(imgfs_inode_count(fs), 0);
	imgfs_free(fs);
}

static void test_readlink(void **state)
{
	struct imgfs *fs = new_fs();
	char buf[64];

	(void)state;
	assert_int_equal(imgfs_readlink(fs, 5, buf, sizeof(buf)), 2);
	assert_string_equal(buf, "sh");
	assert_int_equal(imgfs_readlink(fs, 5, buf, 2), -ENAMETOOLONG);
	assert_int_equal(imgfs_readlink(fs, 4, buf, sizeof(buf)), -EINVAL);
	imgfs_free(fs);
}

static void test_xattrs(void **state)
{
	struct imgfs *fs = new_fs();
	char buf[64];

	(void)state;
	assert_int_equal(imgfs_getxattr(fs, 4, "security.capability", NULL, 0), 4);
	assert_int_equal(imgfs_getxattr(fs, 4, "security.capability", buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "\x01\x00\x00\x02", 4);
	assert_int_equal(imgfs_getxattr(fs, 4, "security.capability", buf, 2), -ERANGE);
	assert_int_equal(imgfs_getxattr(fs, 4, "user.other", buf, sizeof(buf)), -ENODATA);
	assert_int_equal(imgfs_listxattr(fs, 4, NULL, 0), 30);
	assert_int_equal(imgfs_listxattr(fs, 4, buf, sizeof(buf)), 30);
	assert_memory_equal(buf, "security.capability\0user.note\0", 30);
	assert_int_equal(imgfs_listxattr(fs, 4, buf, 10), -ERANGE);
	assert_int_equal(imgfs_listxattr(fs, 1, buf, sizeof(buf)), 0);
	imgfs_free(fs);
}

static void test_open_read(void **state)
{
	struct imgfs *fs = new_fs();
	struct imgfs_file *f;
	struct imgfs_entry e;
	char buf[64];

	(void)state;
	assert_int_equal(imgfs_lookup(fs, 2, "sh", &e), 0);
	assert_int_equal(imgfs_open(fs, 4, O_RDONLY, &f), 0);
	/* The open file holds its inode across the kernel's forget. */
	imgfs_forget(fs, 4, 1);
	assert_int_equal(imgfs_inode_count(fs), 1);
	assert_int_equal(imgfs_read(fs, f, buf, sizeof(buf), 0), 15);
	assert_memory_equal(buf, "#!/bin/busybox\n", 15);
	assert_int_equal(imgfs_read(fs, f, buf, 5, 3), 5);
	assert_memory_equal(buf, "bin/b", 5);
	assert_int_equal(imgfs_read(fs, f, buf, sizeof(buf), 15), 0);
	assert_int_equal(imgfs_read(fs, f, buf, sizeof(buf), 1000), 0);
	assert_int_equal(imgfs_lseek(fs, f, 3, SEEK_DATA), 3);
	assert_int_equal(imgfs_lseek(fs, f, 3, SEEK_HOLE), 15);
	assert_int_equal(imgfs_lseek(fs, f, 20, SEEK_DATA), -ENXIO);
	assert_int_equal(imgfs_lseek(fs, f, 3, SEEK_SET), -EINVAL);
	imgfs_release(fs, f);
	assert_int_equal(imgfs_inode_count(fs), 0);

	assert_int_equal(imgfs_open(fs, 4, O_WRONLY, &f), -EROFS);
	assert_int_equal(imgfs_open(fs, 4, O_RDWR, &f), -EROFS);
	assert_int_equal(imgfs_open(fs, 4, O_RDONLY | O_TRUNC, &f), -EROFS);
	assert_int_equal(imgfs_open(fs, 2, O_RDONLY, &f), -EISDIR);
	assert_int_equal(imgfs_open(fs, 6, O_RDONLY, &f), -EINVAL);
	assert_int_equal(imgfs_inode_count(fs), 0);
	imgfs_free(fs);
}

static void test_access_statfs(void **state)
{
	struct imgfs *fs = new_fs();
	const struct imgfs_cred root = {0}, user = {.uid = 1000, .gid = 1000},
	                        other = {.uid = 2000, .gid = 2000};
	gid_t groups[] = {5, 1000};
	const struct imgfs_cred member = {
	    .uid = 3000, .gid = 3000, .groups = groups, .n_groups = 2};
	struct statvfs sv;

	(void)state;
	assert_int_equal(imgfs_access(fs, 8, &root, R_OK), 0);
	assert_int_equal(imgfs_access(fs, 8, &root, X_OK), -EACCES);
	assert_int_equal(imgfs_access(fs, 8, &root, W_OK), -EROFS);
	assert_int_equal(imgfs_access(fs, 8, &user, R_OK), 0);
	assert_int_equal(imgfs_access(fs, 8, &other, R_OK), -EACCES);
	assert_int_equal(imgfs_access(fs, 8, &other, F_OK), 0);
	assert_int_equal(imgfs_access(fs, 8, &member, R_OK), -EACCES); /* 0600: no group bits */
	assert_int_equal(imgfs_access(fs, 4, &member, R_OK | X_OK), 0);
	assert_int_equal(imgfs_access(fs, 2, &other, X_OK), 0);
	/* Writing a device goes to the device, not to the image. */
	assert_int_equal(imgfs_access(fs, 6, &other, W_OK), 0);

	assert_int_equal(imgfs_statfs(fs, 1, &sv), 0);
	assert_int_equal(sv.f_files, ARRAY_SIZE(image));
	assert_true(sv.f_flag & ST_RDONLY);
	assert_int_equal(sv.f_namemax, 255);
	assert_int_equal(sv.f_bsize, 4096);
	/* Two non-empty files of less than a block each: the hardlink pair counts once. */
	assert_int_equal(sv.f_blocks, 2);
	imgfs_free(fs);
}

static void test_corrupt_lower(void **state)
{
	struct imgfs *fs = new_fs();
	struct imgfs_entry e;
	struct imgfs_dir *d;
	struct listing l = {.limit = 16};
	struct stat st;

	(void)state;
	/* A node with no valid file type. */
	assert_int_equal(imgfs_lookup(fs, 3, "weird", &e), -EIO);
	assert_int_equal(imgfs_getattr(fs, 10, &st), -EIO);
	assert_int_equal(imgfs_inode_count(fs), 0);

	/* Names the kernel cannot take and broken nodes are skipped in listings. */
	assert_int_equal(imgfs_opendir(fs, 3, &d), 0);
	assert_int_equal(imgfs_readdir(fs, d, 0, true, collect, &l), 0);
	assert_int_equal(l.n, 4);
	assert_string_equal(l.names[2], "hard");
	assert_string_equal(l.names[3], "passwd");

	/* Offsets that do not advance end the listing with EIO instead of looping. */
	mem.stuck_offset = true;
	struct listing s = {.limit = 16};
	assert_int_equal(imgfs_readdir(fs, d, 2, false, collect, &s), -EIO);
	assert_true(s.n <= 1);
	mem.stuck_offset = false;
	imgfs_releasedir(fs, d);
	imgfs_forget(fs, 7, 1);
	imgfs_forget(fs, 8, 1);

	/* Node numbers out of range. */
	mem.bad_lookup = true;
	assert_int_equal(imgfs_lookup(fs, IMGFS_ROOT_INO, "bin", &e), -EIO);
	assert_int_equal(imgfs_inode_count(fs), 0);
	imgfs_free(fs);
}

static void test_empty_lower(void **state)
{
	struct lower l = mem_lower_of(&mem);
	struct imgfs *fs = NULL;

	(void)state;
	mem = (struct mem_lower){.nodes = image, .n = 0};
	assert_int_equal(imgfs_new(&l, NULL, &fs), -EBADMSG);
	assert_null(fs);
	assert_int_equal(mem.closed, 1);
}

static void *hammer(void *arg)
{
	struct imgfs *fs = arg;
	struct imgfs_entry e;
	struct imgfs_file *f;
	struct imgfs_dir *d;
	struct listing l;
	char buf[16];

	for (int i = 0; i < 2000; i++) {
		if (imgfs_lookup(fs, 3, "passwd", &e) != 0 || e.ino != 8)
			return (void *)1;
		if (imgfs_open(fs, 8, O_RDONLY, &f) != 0)
			return (void *)1;
		imgfs_forget(fs, 8, 1);
		if (imgfs_read(fs, f, buf, sizeof(buf), 0) != 11)
			return (void *)1;
		imgfs_release(fs, f);
		if (imgfs_opendir(fs, 2, &d) != 0)
			return (void *)1;
		l = (struct listing){.limit = 16};
		if (imgfs_readdir(fs, d, 0, true, collect, &l) != 0 || l.n != 5)
			return (void *)1;
		imgfs_releasedir(fs, d);
		imgfs_forget(fs, 4, 1);
		imgfs_forget(fs, 5, 1);
		imgfs_forget(fs, 6, 1);
	}
	return NULL;
}

static void test_concurrent_counts(void **state)
{
	struct imgfs *fs = new_fs();
	pthread_t threads[4];

	(void)state;
	/* Lookups, opens, listings and forgets from several threads balance out. */
	for (size_t i = 0; i < ARRAY_SIZE(threads); i++)
		assert_int_equal(pthread_create(&threads[i], NULL, hammer, fs), 0);
	for (size_t i = 0; i < ARRAY_SIZE(threads); i++) {
		void *ret;

		assert_int_equal(pthread_join(threads[i], &ret), 0);
		assert_null(ret);
	}
	assert_int_equal(imgfs_inode_count(fs), 0);
	imgfs_free(fs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lookup_getattr),
	    cmocka_unit_test(test_hardlinks),
	    cmocka_unit_test(test_lookup_counts_and_forget),
	    cmocka_unit_test(test_many_inodes),
	    cmocka_unit_test(test_readdir_offsets),
	    cmocka_unit_test(test_readdirplus_counts),
	    cmocka_unit_test(test_readdir_without_handle),
	    cmocka_unit_test(test_readlink),
	    cmocka_unit_test(test_xattrs),
	    cmocka_unit_test(test_open_read),
	    cmocka_unit_test(test_access_statfs),
	    cmocka_unit_test(test_corrupt_lower),
	    cmocka_unit_test(test_empty_lower),
	    cmocka_unit_test(test_concurrent_counts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
