/* The merged tree: layers are written with libarchive, indexed into a temporary directory,
 * merged with tree_build and read back through tree_open, as a mount would: whiteouts,
 * opaque directories, replacements, hardlinks across layers, implicit parents, lookup and
 * readdir order, attributes, xattrs, symlinks and file data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <zlib.h>
#include <zstd.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "fsd/index/layerindex.h"
#include "fsd/index/tree.h"
#include "fsd/index/tree_format.h"
#include "tests/unit/fixture_buf.h"
#include "tests/unit/fixture_layerdir.h"

/* Fixture tables name only the fields that matter for each entry. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

struct ent {
	const char *path;
	char type; /* f file, d dir, l symlink, h hardlink, c chr, b blk, p fifo */
	uint32_t mode;
	const char *data; /* file content, link target */
	uint32_t uid, gid;
	const char *xattr_name, *xattr_value;
	uint32_t major, minor;
};

static void make_tar(const struct ent *ents, struct buf *out)
{
	struct archive *a = archive_write_new();

	assert_int_equal(archive_write_set_format_pax(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open(a, out, NULL, buf_write_cb, NULL), ARCHIVE_OK);
	for (const struct ent *x = ents; x->path; x++) {
		struct archive_entry *e = archive_entry_new();
		size_t len = x->type == 'f' && x->data ? strlen(x->data) : 0;

		archive_entry_copy_pathname(e, x->path);
		archive_entry_set_perm(e, x->mode ? x->mode : (x->type == 'd' ? 0755 : 0644));
		archive_entry_set_uid(e, x->uid);
		archive_entry_set_gid(e, x->gid);
		archive_entry_set_mtime(e, 1700000000, 123);
		switch (x->type) {
		case 'f':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_size(e, (la_int64_t)len);
			break;
		case 'd':
			archive_entry_set_filetype(e, AE_IFDIR);
			break;
		case 'l':
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_copy_symlink(e, x->data);
			break;
		case 'h':
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_copy_hardlink(e, x->data);
			break;
		case 'c':
		case 'b':
			archive_entry_set_filetype(e, x->type == 'c' ? AE_IFCHR : AE_IFBLK);
			archive_entry_set_rdevmajor(e, x->major);
			archive_entry_set_rdevminor(e, x->minor);
			break;
		case 'p':
			archive_entry_set_filetype(e, AE_IFIFO);
			break;
		}
		if (x->xattr_name)
			archive_entry_xattr_add_entry(e, x->xattr_name, x->xattr_value,
			                              strlen(x->xattr_value));
		assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
		if (len)
			assert_int_equal(archive_write_data(a, x->data, len), (la_ssize_t)len);
		archive_entry_free(e);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

static void gzip_buf(const struct buf *in, struct buf *out)
{
	z_stream z = {0};
	uint8_t chunk[65536];
	int zr;

	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = in->p;
	z.avail_in = (uInt)in->len;
	do {
		z.next_out = chunk;
		z.avail_out = sizeof(chunk);
		zr = deflate(&z, Z_FINISH);
		buf_put(out, chunk, sizeof(chunk) - z.avail_out);
	} while (zr == Z_OK);
	assert_int_equal(zr, Z_STREAM_END);
	deflateEnd(&z);
}

/* ---- a temporary directory: the layers (fixture_layerdir.h) and the tree ---- */

static char dir_path[64];
static int dir_fd = -1;
static struct li_opener opener;

static int setup_dir(void **state)
{
	(void)state;
	strcpy(dir_path, "/tmp/test_tree.XXXXXX");
	assert_non_null(mkdtemp(dir_path));
	dir_fd = open(dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dir_fd >= 0);
	opener = layerdir_opener(&dir_fd);
	return 0;
}

static int teardown_dir(void **state)
{
	(void)state;
	rm_rf_at(AT_FDCWD, dir_path);
	close(dir_fd);
	return 0;
}

/* Writes one layer (compression 'g' gzip, 'z' zstd, 't' plain tar) and its index into the
 * layer directory and returns its digest in digest. */
static void add_layer(const struct ent *ents, char comp, char digest[DIGEST_STR_LEN + 1])
{
	_cleanup_(li_builder_freep) struct li_builder *b = NULL;
	struct buf tar = {0}, blob = {0};
	void *idx;
	size_t idx_len;
	int zfd = -1;

	make_tar(ents, &tar);
	if (comp == 'g') {
		gzip_buf(&tar, &blob);
	} else if (comp == 'z') {
		size_t cap = ZSTD_compressBound(tar.len), n;

		buf_put(&blob, NULL, cap);
		n = ZSTD_compress(blob.p, cap, tar.p, tar.len, 3);
		assert_false(ZSTD_isError(n));
		blob.len = n;
	} else {
		buf_put(&blob, tar.p, tar.len);
	}
	sha256_buf(blob.p, blob.len, digest);
	if (comp == 'z') /* the builder writes the seekable copy, which is what is read */
		assert_int_equal(layerdir_open_data(dir_fd, digest, &zfd), 0);
	assert_int_equal(li_builder_new(LI_AUTO, 4096, zfd, &b), 0);
	assert_int_equal(li_builder_feed(b, blob.p, blob.len), 0);
	assert_int_equal(li_builder_finish(b, digest, &idx, &idx_len), 0);
	assert_int_equal(
	    layerdir_put(dir_fd, digest, idx, idx_len, zfd >= 0 ? NULL : blob.p, blob.len), 0);
	if (zfd >= 0)
		close(zfd);
	free(idx);
	free(tar.p);
	free(blob.p);
}

/* Builds the tree of the layers (NULL-terminated list of entry tables) and opens it. */
static struct tree *open_image(const struct ent *const *layers, const char *comps)
{
	char digests[8][DIGEST_STR_LEN + 1];
	const char *dp[8];
	struct tree *t = NULL;
	void *buf;
	size_t n = 0, len;
	int fd;

	for (; layers[n]; n++) {
		add_layer(layers[n], comps ? comps[n] : 'g', digests[n]);
		dp[n] = digests[n];
	}
	assert_int_equal(tree_build(&opener, dp, n, &buf, &len), 0);
	assert_int_equal(write_file_atomic(dir_fd, "tree", buf, len, 0644), 0);
	free(buf);
	fd = openat(dir_fd, "tree", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(tree_open(&opener, fd, &t), 0);
	close(fd); /* the map stays valid */
	return t;
}

static int resolve(const struct tree *t, const char *path, uint32_t *ret)
{
	_cleanup_free_ char *copy = strdup(path);
	uint32_t node = TREE_ROOT;
	char *save = NULL;

	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		int r = tree_lookup(t, node, c, &node);

		if (r < 0)
			return r;
	}
	*ret = node;
	return 0;
}

static uint32_t must(const struct tree *t, const char *path)
{
	uint32_t n = 0;

	if (resolve(t, path, &n) < 0)
		fail_msg("'%s' is missing", path);
	return n;
}

static void assert_missing(const struct tree *t, const char *path)
{
	uint32_t n;

	if (resolve(t, path, &n) == 0)
		fail_msg("'%s' should not exist", path);
}

static void assert_content(const struct tree *t, const char *path, const char *want)
{
	char buf[256];
	ssize_t n = tree_read(t, must(t, path), buf, sizeof(buf), 0);

	assert_int_equal(n, (ssize_t)strlen(want));
	assert_memory_equal(buf, want, (size_t)n);
}

struct names {
	char list[64][64];
	uint64_t offs[64];
	int n, stop_after;
};

static int collect(const char *name, uint32_t node, uint64_t next_off, void *userdata)
{
	struct names *nm = userdata;

	(void)node;
	snprintf(nm->list[nm->n], sizeof(nm->list[0]), "%s", name);
	nm->offs[nm->n++] = next_off;
	return nm->stop_after && nm->n >= nm->stop_after;
}

static char *listing(const struct tree *t, const char *dir)
{
	static char out[1024];
	struct names nm = {0};

	assert_int_equal(tree_readdir(t, must(t, dir), 0, collect, &nm), 0);
	out[0] = 0;
	for (int i = 0; i < nm.n; i++)
		snprintf(out + strlen(out), sizeof(out) - strlen(out), "%s%s", i ? " " : "",
		         nm.list[i]);
	return out;
}

/* ---- tests ---- */

static void test_single_layer_attributes(void **state)
{
	static const struct ent l1[] = {
	    {"./", 'd', 0700, NULL, 5, 6},
	    {"etc/", 'd', 0755},
	    {"etc/passwd", 'f', 0644, "root:x:0:0\n"},
	    {"etc/shadow", 'f', 0640, "secret\n", 0, 42},
	    {"bin/", 'd'},
	    {"bin/ping", 'f', 04755, "ELF", .xattr_name = "security.capability",
	     .xattr_value = "\x01\x02\x03\x04"},
	    {"bin/sh", 'l', 0777, "/bin/busybox"},
	    {"dev/console", 'c', 0600, NULL, .major = 5, .minor = 1},
	    {"dev/sda", 'b', 0660, NULL, 0, 6, .major = 8, .minor = 0},
	    {"run/fifo", 'p', 0600},
	    {"tmp/", 'd', 01777},
	    {"etc/zz", 'f', 0, "z", .xattr_name = "user.a", .xattr_value = "1"},
	    {"etc/aa", 'f', 0, "a"},
	    {NULL}};
	const struct ent *layers[] = {l1, NULL};
	_cleanup_(tree_closep) struct tree *t = open_image(layers, NULL);
	struct stat st;
	char buf[64];
	uint32_t n;

	(void)state;
	/* the root takes "./"'s attributes and is inode 1 */
	assert_int_equal(tree_stat(t, TREE_ROOT, &st), 0);
	assert_int_equal(st.st_ino, 1);
	assert_int_equal(st.st_mode, S_IFDIR | 0700);
	assert_int_equal(st.st_uid, 5);
	assert_int_equal(st.st_gid, 6);
	assert_int_equal(st.st_nlink, 2 + 5); /* etc bin dev run tmp */
	assert_string_equal(listing(t, ""), "bin dev etc run tmp");
	assert_string_equal(listing(t, "etc"), "aa passwd shadow zz");

	assert_int_equal(tree_stat(t, must(t, "etc/shadow"), &st), 0);
	assert_int_equal(st.st_mode, S_IFREG | 0640);
	assert_int_equal(st.st_gid, 42);
	assert_int_equal(st.st_size, 7);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(st.st_mtim.tv_sec, 1700000000);
	assert_int_equal(st.st_mtim.tv_nsec, 123);
	assert_int_equal(st.st_blocks, 8);
	assert_content(t, "etc/passwd", "root:x:0:0\n");
	n = must(t, "etc/passwd");
	assert_int_equal(tree_read(t, n, buf, sizeof(buf), 5), 6);
	assert_memory_equal(buf, "x:0:0\n", 6);
	assert_int_equal(tree_read(t, n, buf, sizeof(buf), 11), 0);
	assert_int_equal(tree_seek(t, n, 3, SEEK_DATA), 3);
	assert_int_equal(tree_seek(t, n, 3, SEEK_HOLE), 11);
	assert_int_equal(tree_seek(t, n, 11, SEEK_DATA), -ENXIO);
	assert_int_equal(tree_seek(t, must(t, "etc"), 0, SEEK_DATA), -EINVAL);

	assert_int_equal(tree_stat(t, must(t, "bin/ping"), &st), 0);
	assert_int_equal(st.st_mode, S_IFREG | 04755);
	assert_int_equal(tree_stat(t, must(t, "tmp"), &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 01777);

	n = must(t, "bin/sh");
	assert_int_equal(tree_stat(t, n, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(st.st_size, 12);
	assert_int_equal(tree_readlink(t, n, buf, sizeof(buf)), 12);
	assert_string_equal(buf, "/bin/busybox");
	assert_int_equal(tree_readlink(t, n, buf, 5), -ENAMETOOLONG);
	assert_int_equal(tree_readlink(t, must(t, "etc/passwd"), buf, sizeof(buf)), -EINVAL);
	assert_int_equal(tree_read(t, must(t, "etc"), buf, sizeof(buf), 0), -EISDIR);

	assert_int_equal(tree_stat(t, must(t, "dev/console"), &st), 0);
	assert_int_equal(st.st_mode, S_IFCHR | 0600);
	assert_int_equal(st.st_rdev, makedev(5, 1));
	assert_int_equal(tree_stat(t, must(t, "dev/sda"), &st), 0);
	assert_int_equal(st.st_mode, S_IFBLK | 0660);
	assert_int_equal(st.st_rdev, makedev(8, 0));
	assert_int_equal(tree_stat(t, must(t, "run/fifo"), &st), 0);
	assert_int_equal(st.st_mode, S_IFIFO | 0600);

	/* xattrs, with getxattr(2)/listxattr(2) conventions */
	n = must(t, "bin/ping");
	assert_int_equal(tree_getxattr(t, n, "security.capability", NULL, 0), 4);
	assert_int_equal(tree_getxattr(t, n, "security.capability", buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "\x01\x02\x03\x04", 4);
	assert_int_equal(tree_getxattr(t, n, "security.capability", buf, 2), -ERANGE);
	assert_int_equal(tree_getxattr(t, n, "user.none", buf, sizeof(buf)), -ENODATA);
	assert_int_equal(tree_listxattr(t, n, NULL, 0), 20);
	assert_int_equal(tree_listxattr(t, n, buf, sizeof(buf)), 20);
	assert_string_equal(buf, "security.capability");
	assert_int_equal(tree_listxattr(t, n, buf, 3), -ERANGE);
	assert_int_equal(tree_listxattr(t, must(t, "etc/aa"), buf, sizeof(buf)), 0);
	assert_int_equal(tree_getxattr(t, must(t, "run"), "user.a", buf, sizeof(buf)), -ENODATA);
	/* names used anywhere in the layers, prefixes and extensions of them not */
	assert_int_equal(tree_has_xattr_name(t, "security.capability"), 1);
	assert_int_equal(tree_has_xattr_name(t, "user.a"), 1);
	assert_int_equal(tree_has_xattr_name(t, "security.selinux"), 0);
	assert_int_equal(tree_has_xattr_name(t, "user."), 0);
	assert_int_equal(tree_has_xattr_name(t, "user.ab"), 0);

	/* lookups that fail */
	assert_int_equal(tree_lookup(t, TREE_ROOT, "nope", &n), -ENOENT);
	assert_int_equal(tree_lookup(t, must(t, "etc/passwd"), "x", &n), -ENOTDIR);
	assert_int_equal(tree_lookup(t, tree_node_count(t), "x", &n), -ENOENT);
	assert_int_equal(tree_parent(t, must(t, "etc/passwd")), must(t, "etc"));
	assert_int_equal(tree_parent(t, TREE_ROOT), TREE_ROOT);
}

static void test_implicit_parents_and_readdir_offsets(void **state)
{
	static const struct ent l1[] = {{"x/y/z", 'f', 0600, "deep"}, {"x/y/w/", 'd', 0711},
	                                {"m", 'f', 0, "m"},           {"a", 'f', 0, "a"},
	                                {"k", 'f', 0, "k"},           {NULL}};
	const struct ent *layers[] = {l1, NULL};
	_cleanup_(tree_closep) struct tree *t = open_image(layers, NULL);
	struct names nm = {.stop_after = 2};
	struct stat st;

	(void)state;
	assert_int_equal(tree_stat(t, TREE_ROOT, &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 0755);
	assert_int_equal(tree_stat(t, must(t, "x/y"), &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 0755);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(st.st_nlink, 3); /* w */
	assert_int_equal(tree_stat(t, must(t, "x"), &st), 0);
	assert_int_equal(st.st_nlink, 3);
	assert_content(t, "x/y/z", "deep");

	/* readdir in name order, stoppable, resumable at next_off */
	assert_int_equal(tree_readdir(t, TREE_ROOT, 0, collect, &nm), 0);
	assert_int_equal(nm.n, 2);
	assert_string_equal(nm.list[0], "a");
	assert_string_equal(nm.list[1], "k");
	nm.stop_after = 0;
	assert_int_equal(tree_readdir(t, TREE_ROOT, nm.offs[1], collect, &nm), 0);
	assert_int_equal(nm.n, 4);
	assert_string_equal(nm.list[2], "m");
	assert_string_equal(nm.list[3], "x");
	nm.n = 0;
	assert_int_equal(tree_readdir(t, TREE_ROOT, 99, collect, &nm), 0);
	assert_int_equal(nm.n, 0);
	assert_int_equal(tree_readdir(t, must(t, "a"), 0, collect, &nm), -ENOTDIR);
}

static void test_whiteouts_and_opaque(void **state)
{
	static const struct ent l1[] = {{"a/", 'd'},
	                                {"a/x", 'f', 0, "x"},
	                                {"a/y", 'f', 0, "y"},
	                                {"b/", 'd'},
	                                {"b/z", 'f', 0, "z"},
	                                {"b/sub/deep", 'f', 0, "d"},
	                                {"c", 'f', 0, "c"},
	                                {"o/", 'd', 0755},
	                                {"o/old", 'f', 0, "old"},
	                                {"o/sub/", 'd'},
	                                {"o/sub/old2", 'f', 0, "2"},
	                                {"keep", 'f', 0, "keep"},
	                                {NULL}};
	static const struct ent l2[] = {{"a/.wh.x", 'f'},
	                                {"d/new", 'f', 0, "new"},
	                                {"d/.wh.new", 'f'}, /* same layer: does not hide d/new */
	                                {".wh.b", 'f'},
	                                {"c/", 'd', 0700}, /* after .wh.c below: the dir stays */
	                                {".wh.c", 'f'},
	                                {"o/", 'd', 0750},
	                                {"o/new", 'f', 0, "fresh"},
	                                {"o/.wh..wh..opq", 'f'},
	                                {".wh..wh.plnk/", 'd'},
	                                {".wh.nothing-below", 'f'},
	                                {NULL}};
	const struct ent *layers[] = {l1, l2, NULL};
	_cleanup_(tree_closep) struct tree *t = open_image(layers, NULL);
	struct stat st;

	(void)state;
	assert_string_equal(listing(t, ""), "a c d keep o");
	assert_string_equal(listing(t, "a"), "y");
	assert_missing(t, "b");
	assert_missing(t, "b/z");
	assert_string_equal(listing(t, "d"), "new");
	assert_int_equal(tree_stat(t, must(t, "c"), &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 0700);
	/* opaque: lower content hidden, the layer's own content and the dir's new mode kept */
	assert_string_equal(listing(t, "o"), "new");
	assert_content(t, "o/new", "fresh");
	assert_int_equal(tree_stat(t, must(t, "o"), &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 0750);
	assert_int_equal(st.st_nlink, 2);
	assert_content(t, "keep", "keep");
}

/* One layer in overlay lower format: what a layer's diff directory is for overlayfs. */
static void test_layer_in_overlay_format(void **state)
{
	static const struct ent l2[] = {{"a/.wh.x", 'f'},
	                                {"d/new", 'f', 0, "new"},
	                                {"d/.wh.new", 'f'}, /* same layer: d/new stays */
	                                {".wh.b", 'f'},
	                                {".wh.c", 'f'},
	                                {"c/", 'd', 0700}, /* a dir over its whiteout: opaque */
	                                {"o/", 'd', 0750, NULL, 0, 0, "user.k", "v"},
	                                {"o/new", 'f', 0, "fresh"},
	                                {"o/.wh..wh..opq", 'f'},
	                                {"i/.wh..wh..opq", 'f'}, /* an implicit dir, opaque */
	                                {".wh..wh.plnk/", 'd'},
	                                {"e/.wh.sub/f", 'f', 0, "below a whiteout"},
	                                {NULL}};
	char digest[DIGEST_STR_LEN + 1], list[256];
	const char *dp = digest;
	_cleanup_(tree_closep) struct tree *t = NULL;
	struct stat st;
	char v[8];
	void *buf;
	size_t len;
	int fd;

	(void)state;
	add_layer(l2, 'g', digest);
	assert_int_equal(tree_build_layer(&opener, &dp, 1, &buf, &len), 0);
	assert_int_equal(write_file_atomic(dir_fd, "tree", buf, len, 0644), 0);
	free(buf);
	fd = openat(dir_fd, "tree", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(tree_open(&opener, fd, &t), 0);
	close(fd);

	assert_string_equal(listing(t, ""), "a b c d i o"); /* nothing below e/.wh.sub */
	assert_string_equal(listing(t, "a"), "x");
	assert_int_equal(tree_stat(t, must(t, "a/x"), &st), 0);
	assert_int_equal(st.st_mode, S_IFCHR);
	assert_int_equal(st.st_rdev, makedev(0, 0));
	assert_int_equal(tree_stat(t, must(t, "b"), &st), 0);
	assert_true(S_ISCHR(st.st_mode));
	assert_content(t, "d/new", "new");
	assert_int_equal(tree_getxattr(t, must(t, "a/x"), TREE_OPAQUE_XATTR, v, sizeof(v)),
	                 -ENODATA);
	/* opaque directories: the mark, their own xattrs, their mode without the mark */
	assert_int_equal(tree_getxattr(t, must(t, "o"), TREE_OPAQUE_XATTR, v, sizeof(v)), 1);
	assert_memory_equal(v, "y", 1);
	assert_int_equal(tree_getxattr(t, must(t, "o"), "user.k", v, sizeof(v)), 1);
	assert_int_equal(tree_listxattr(t, must(t, "o"), list, sizeof(list)),
	                 (ssize_t)sizeof(TREE_OPAQUE_XATTR "\0user.k"));
	assert_memory_equal(list, TREE_OPAQUE_XATTR "\0user.k",
	                    sizeof(TREE_OPAQUE_XATTR "\0user.k"));
	assert_int_equal(tree_stat(t, must(t, "o"), &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 0750);
	assert_string_equal(listing(t, "o"), "new");
	assert_int_equal(tree_getxattr(t, must(t, "i"), TREE_OPAQUE_XATTR, v, sizeof(v)), 1);
	assert_int_equal(tree_getxattr(t, must(t, "c"), TREE_OPAQUE_XATTR, v, sizeof(v)), 1);
	assert_int_equal(tree_stat(t, must(t, "c"), &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 0700);
	assert_int_equal(tree_getxattr(t, must(t, "d"), TREE_OPAQUE_XATTR, v, sizeof(v)), -ENODATA);
	assert_int_equal(tree_listxattr(t, must(t, "d"), list, sizeof(list)), 0);
	assert_int_equal(tree_has_xattr_name(t, TREE_OPAQUE_XATTR), 1);
}

/* A layer that implies a directory without an entry: the directory keeps what the layers
 * below say of it, and the layer's tree names only the layers it takes something from. */
static void test_layer_implicit_dirs_from_below(void **state)
{
	static const struct ent l1[] = {
	    {"a/", 'd', 0700, NULL, 5, 6}, {"a/old", 'f', 0, "old"}, {NULL}};
	static const struct ent l2[] = {{"x", 'f', 0, "x"}, {NULL}};
	static const struct ent l3[] = {{"a/b/f", 'f', 0, "f"}, {NULL}};
	char d[3][DIGEST_STR_LEN + 1];
	const char *dp[3] = {d[0], d[1], d[2]};
	_cleanup_(tree_closep) struct tree *t = NULL;
	struct stat st;
	void *buf;
	size_t len;
	int fd;

	(void)state;
	add_layer(l1, 'g', d[0]);
	add_layer(l2, 'g', d[1]);
	add_layer(l3, 'g', d[2]);
	assert_int_equal(tree_build_layer(&opener, dp, 3, &buf, &len), 0);
	/* l3 and l1 (for a/), not l2 */
	assert_int_equal(((const struct tree_header *)buf)->n_layers, 2);
	assert_int_equal(write_file_atomic(dir_fd, "tree", buf, len, 0644), 0);
	free(buf);
	fd = openat(dir_fd, "tree", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(tree_open(&opener, fd, &t), 0);
	close(fd);
	assert_string_equal(listing(t, ""), "a");
	assert_string_equal(listing(t, "a"), "b"); /* a/old is the layer below's */
	assert_int_equal(tree_stat(t, must(t, "a"), &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 0700);
	assert_int_equal(st.st_uid, 5);
	assert_int_equal(st.st_gid, 6);
	assert_int_equal(tree_stat(t, must(t, "a/b"), &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 0755); /* nothing below: implicit */
	assert_content(t, "a/b/f", "f");
}

struct all_layers {
	const struct li_opener *op;
	const char *const *digests;
	size_t calls;
};

/* Each tree tree_build_layers() hands out is the one tree_build_layer() builds alone. */
static int same_as_alone(size_t i, void *buf, size_t len, void *userdata)
{
	struct all_layers *a = userdata;
	void *alone;
	size_t alone_len;

	assert_int_equal(i, a->calls);
	a->calls++;
	assert_int_equal(tree_build_layer(a->op, a->digests, i + 1, &alone, &alone_len), 0);
	assert_int_equal(len, alone_len);
	assert_memory_equal(buf, alone, len);
	free(alone);
	free(buf);
	return 0;
}

static int stop_at_second(size_t i, void *buf, size_t len, void *userdata)
{
	(void)len;
	(void)userdata;
	free(buf);
	return i == 1 ? -ECANCELED : 0;
}

static void test_all_layers_at_once(void **state)
{
	static const struct ent l1[] = {{"a/", 'd', 0700}, {"a/x", 'f', 0, "x"}, {NULL}};
	static const struct ent l2[] = {{"a/.wh.x", 'f'}, {"b/c/d", 'f', 0, "d"}, {NULL}};
	static const struct ent l3[] = {{"a/y", 'f', 0, "y"}, {"b/.wh..wh..opq", 'f'}, {NULL}};
	char d[3][DIGEST_STR_LEN + 1];
	const char *dp[3] = {d[0], d[1], d[2]};
	struct all_layers a = {&opener, dp, 0};

	(void)state;
	add_layer(l1, 'g', d[0]);
	add_layer(l2, 'z', d[1]);
	add_layer(l3, 't', d[2]);
	assert_int_equal(tree_build_layers(&opener, dp, 3, same_as_alone, &a), 0);
	assert_int_equal(a.calls, 3);
	assert_int_equal(tree_build_layers(&opener, dp, 3, stop_at_second, NULL), -ECANCELED);
}

static void test_replacements_and_duplicates(void **state)
{
	static const struct ent l1[] = {{"f", 'f', 0, "file"},
	                                {"d/", 'd'},
	                                {"d/child", 'f', 0, "c"},
	                                {"d/sub/", 'd'},
	                                {"s", 'l', 0, "target"},
	                                {"dup", 'f', 0, "first"},
	                                {"dup", 'f', 0600, "second"},
	                                {"q/", 'd', 0700},
	                                {"q/", 'd', 0711},
	                                {NULL}};
	static const struct ent l2[] = {{"f/", 'd', 0701},
	                                {"f/inner", 'f', 0, "in"},
	                                {"d", 'f', 0, "now a file"},
	                                {"s/x", 'f', 0, "under a former symlink"},
	                                {NULL}};
	const struct ent *layers[] = {l1, l2, NULL};
	_cleanup_(tree_closep) struct tree *t = open_image(layers, NULL);
	struct stat st;
	uint32_t n;

	(void)state;
	assert_int_equal(tree_stat(t, must(t, "f"), &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 0701);
	assert_content(t, "f/inner", "in");
	assert_int_equal(tree_stat(t, must(t, "d"), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_content(t, "d", "now a file");
	assert_int_equal(tree_lookup(t, must(t, "d"), "child", &n), -ENOTDIR);
	assert_int_equal(tree_stat(t, must(t, "s"), &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_content(t, "s/x", "under a former symlink");
	/* later wins within a layer */
	assert_content(t, "dup", "second");
	assert_int_equal(tree_stat(t, must(t, "dup"), &st), 0);
	assert_int_equal(st.st_mode, S_IFREG | 0600);
	assert_int_equal(tree_stat(t, must(t, "q"), &st), 0);
	assert_int_equal(st.st_mode, S_IFDIR | 0711);
	assert_string_equal(listing(t, ""), "d dup f q s");
}

static void test_hardlinks_across_layers(void **state)
{
	static const struct ent l1[] = {{"orig", 'f', 0640, "AAAA"},
	                                {"link1", 'h', 0, "orig"},
	                                {"dir/", 'd'},
	                                {"bad-dir-link", 'h', 0, "dir"},
	                                {"bad-missing", 'h', 0, "nowhere"},
	                                {"bad-forward", 'h', 0, "later"},
	                                {"later", 'f', 0, "L"},
	                                {NULL}};
	static const struct ent l2[] = {{"sub/link2", 'h', 0, "orig"}, {NULL}};
	static const struct ent l3[] = {{"orig", 'f', 0600, "BB"}, {NULL}};
	const struct ent *layers[] = {l1, l2, l3, NULL};
	_cleanup_(tree_closep) struct tree *t = open_image(layers, "gzt");
	struct stat a, b, c;

	(void)state;
	assert_int_equal(tree_stat(t, must(t, "link1"), &a), 0);
	assert_int_equal(tree_stat(t, must(t, "sub/link2"), &b), 0);
	assert_int_equal(tree_stat(t, must(t, "orig"), &c), 0);
	/* link1 and link2 keep the first file, which "orig" no longer names */
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(a.st_nlink, 2);
	assert_int_equal(a.st_mode, S_IFREG | 0640);
	assert_int_equal(a.st_ino, tree_canonical(t, must(t, "sub/link2")) + 1);
	assert_int_equal(tree_canonical(t, must(t, "link1")),
	                 tree_canonical(t, must(t, "sub/link2")));
	assert_content(t, "link1", "AAAA");
	assert_content(t, "sub/link2", "AAAA");
	assert_true(c.st_ino != a.st_ino);
	assert_int_equal(c.st_nlink, 1);
	assert_content(t, "orig", "BB");
	assert_missing(t, "bad-dir-link");
	assert_missing(t, "bad-missing");
	assert_missing(t, "bad-forward");
}

static void test_hardlink_group_in_one_layer(void **state)
{
	static const struct ent l1[] = {{"bin/busybox", 'f', 0755, "BUSYBOX"},
	                                {"bin/sh", 'h', 0, "bin/busybox"},
	                                {"bin/ls", 'h', 0, "bin/busybox"},
	                                {NULL}};
	static const struct ent l2[] = {{"bin/.wh.ls", 'f'}, {NULL}};
	const struct ent *layers[] = {l1, l2, NULL};
	_cleanup_(tree_closep) struct tree *t = open_image(layers, "zg");
	struct stat a, b;

	(void)state;
	assert_int_equal(tree_stat(t, must(t, "bin/busybox"), &a), 0);
	assert_int_equal(tree_stat(t, must(t, "bin/sh"), &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(a.st_nlink, 2); /* ls was whited out */
	assert_missing(t, "bin/ls");
	assert_content(t, "bin/sh", "BUSYBOX");
	/* the canonical node is the first in tree order */
	assert_int_equal(tree_canonical(t, must(t, "bin/sh")), must(t, "bin/busybox"));
}

static void test_corrupt_tree_file(void **state)
{
	static const struct ent l1[] = {{"f", 'f', 0, "x"}, {NULL}};
	const struct ent *layers[] = {l1, NULL};
	struct tree *t = open_image(layers, NULL);
	_cleanup_free_ char *data = NULL;
	size_t len;

	(void)state;
	tree_close(t);
	assert_int_equal(read_file_full(dir_fd, "tree", 1 << 20, &data, &len), 0);
	for (size_t at = 0; at < len; at += 7) {
		int fd;

		data[at] ^= 0x40;
		assert_int_equal(write_file_atomic(dir_fd, "bad", data, len, 0644), 0);
		data[at] ^= 0x40;
		fd = openat(dir_fd, "bad", O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		t = NULL;
		assert_int_equal(tree_open(&opener, fd, &t), -EBADMSG);
		close(fd);
	}
	{
		const char *missing[] = {
		    "sha256:0000000000000000000000000000000000000000000000000000000000000000"};
		void *buf;

		assert_int_equal(tree_build(&opener, missing, 1, &buf, &len), -ENOENT);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_single_layer_attributes),
	    cmocka_unit_test(test_implicit_parents_and_readdir_offsets),
	    cmocka_unit_test(test_whiteouts_and_opaque),
	    cmocka_unit_test(test_layer_in_overlay_format),
	    cmocka_unit_test(test_layer_implicit_dirs_from_below),
	    cmocka_unit_test(test_all_layers_at_once),
	    cmocka_unit_test(test_replacements_and_duplicates),
	    cmocka_unit_test(test_hardlinks_across_layers),
	    cmocka_unit_test(test_hardlink_group_in_one_layer),
	    cmocka_unit_test(test_corrupt_tree_file),
	};

	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
