/* Fuzzes the merged tree reader: tree_open() on a hostile tree file, then a walk of what it
 * opened with every reader call (tree_readdir, tree_lookup, tree_stat, tree_parent,
 * tree_canonical, tree_readlink, tree_getxattr, tree_listxattr, tree_read, tree_seek).
 * tree_open() either rejects the file or yields a tree whose every call returns a result
 * within bounds or -errno, without reading outside the map.
 *
 * The layers the tree names live in a directory built once (fixture_layerdir.h): the two
 * fixture layers of layerfixture.h (gzip below, plain tar above), indexed, and the tree
 * tree_build() makes of them. The first input byte picks the mode. Bit 0, raw: the rest is
 * the tree file. Otherwise the rest is a list of patches (u32 offset, u8 length, that many
 * bytes; length 0 truncates there) applied to the built tree. Bit 1, repair: file_size and
 * crc32 are recomputed and the layer slots name the fixture's layers, so that the checks
 * behind them are reached. Without patches, the walk must find the fixture exactly. */
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <zlib.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "fsd/index/tree.h"
#include "tests/fuzz/layerfixture.h"
#include "tests/unit/fixture_layerdir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_VISITS 20000u
#define MAX_DEPTH 64
#define READ_BUDGET (1u << 20)

/* The first fields of the tree file's header (fsd/index/tree_format.h). */
struct tree_header_prefix {
	char magic[8];
	uint32_t version, header_size, n_nodes, n_layers, crc, dropped;
	uint64_t file_size, layers_off;
};
#define TREE_HEADER_SIZE 72u
#define TREE_LAYER_SIZE 80u

static char dir_path[] = "/tmp/fuzz-tree.XXXXXX";
static int dir_fd = -1;
static struct li_opener opener;
static char digests[2][DIGEST_STR_LEN + 1];
static struct fx_buf base_tree;

static void remove_dir(void)
{
	if (dir_fd >= 0)
		rm_rf_at(AT_FDCWD, dir_path);
}

static int put_layer(int variant, enum li_compression comp, char digest[DIGEST_STR_LEN + 1])
{
	struct fx_buf tar = {0}, layer = {0}, idx = {0}, dat = {0};
	int r;

	r = fx_layer_tar(variant, &tar);
	if (r == 0)
		r = fx_compress(comp, &tar, &layer);
	if (r == 0)
		r = fx_index(comp, &layer, 4096, &idx, &dat);
	if (r == 0) {
		sha256_buf(layer.data, layer.len, digest);
		r = layerdir_put(dir_fd, digest, idx.data, idx.len, dat.data, dat.len);
	}
	fx_buf_free(&tar);
	fx_buf_free(&layer);
	fx_buf_free(&idx);
	fx_buf_free(&dat);
	return r;
}

static void setup(void)
{
	const char *layers[2] = {digests[0], digests[1]};
	void *buf;
	size_t len;

	if (dir_fd >= 0)
		return;
	if (!mkdtemp(dir_path))
		abort();
	dir_fd = open(dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		abort();
	atexit(remove_dir);
	opener = layerdir_opener(&dir_fd);
	if (put_layer(0, LI_GZIP, digests[0]) < 0 || put_layer(1, LI_TAR, digests[1]) < 0 ||
	    tree_build(&opener, layers, 2, &buf, &len) < 0)
		abort(); /* the fixture itself must build */
	base_tree = (struct fx_buf){.data = buf, .len = len, .cap = len};
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void apply_patches(const uint8_t *p, const uint8_t *end, struct fx_buf *t)
{
	while (end - p >= 5 && t->len > 0) {
		size_t off = le32(p) % t->len, len = p[4];

		p += 5;
		len = MIN(len, (size_t)(end - p));
		if (len == 0 && p[-1] == 0) {
			t->len = off;
			continue;
		}
		for (size_t k = 0; k < len && off + k < t->len; k++)
			t->data[off + k] = p[k];
		p += len;
	}
}

static void repair(struct fx_buf *t)
{
	struct tree_header_prefix h;
	uint32_t crc;

	if (t->len < TREE_HEADER_SIZE)
		return;
	memcpy(&h, t->data, sizeof(h));
	for (uint64_t i = 0; i < h.n_layers && i < 1024; i++) {
		uint64_t off = h.layers_off + i * TREE_LAYER_SIZE;

		if (t->len < TREE_LAYER_SIZE || h.layers_off > t->len ||
		    off > t->len - TREE_LAYER_SIZE || off < h.layers_off)
			break;
		memset(t->data + off, 0, TREE_LAYER_SIZE);
		memcpy(t->data + off, digests[i % 2], DIGEST_STR_LEN);
	}
	h.file_size = t->len;
	h.crc = 0;
	memcpy(t->data, &h, sizeof(h));
	crc = (uint32_t)crc32_z(0, t->data, TREE_HEADER_SIZE);
	h.crc = (uint32_t)crc32_z(crc, t->data + TREE_HEADER_SIZE, t->len - TREE_HEADER_SIZE);
	memcpy(t->data, &h, sizeof(h));
}

struct walk {
	const struct tree *t;
	bool exact;
	uint32_t visits;
	uint64_t budget;
	unsigned files_seen;
	ino_t ino_a, ino_h, ino_big, ino_h2;
};

static void check_file(struct walk *w, uint32_t node, const char *path, const struct stat *st)
{
	static uint8_t buf[16384];
	const struct fx_file *f = NULL;

	if (w->exact) {
		f = fx_expect(2, path);
		if (!f || (uint64_t)st->st_size != f->size)
			abort();
		w->files_seen++;
	}
	for (uint64_t off = 0; off < (uint64_t)st->st_size && w->budget > 0;) {
		ssize_t n = tree_read(w->t, node, buf, sizeof(buf), off);

		if (n < 0) {
			if (w->exact)
				abort();
			return;
		}
		if (n == 0) /* the layer entry may be shorter than the node says */
			break;
		if ((size_t)n > sizeof(buf))
			abort();
		for (ssize_t k = 0; f && k < n; k++)
			if (buf[k] != fx_byte_at(f, off + (uint64_t)k))
				abort();
		off += (uint64_t)n;
		w->budget -= MIN(w->budget, (uint64_t)n);
	}
	for (int whence = SEEK_DATA; whence <= SEEK_HOLE; whence++) {
		int64_t s = tree_seek(w->t, node, 0, whence);

		if (f && f->sparse && s != (whence == SEEK_DATA ? FX_SPARSE_A : 0))
			abort();
	}
}

static void check_node(struct walk *w, uint32_t node, const char *path)
{
	char buf[4096];
	struct stat st;
	ssize_t n;

	if (tree_stat(w->t, node, &st) < 0 || st.st_ino == 0 || st.st_ino > tree_node_count(w->t) ||
	    tree_canonical(w->t, node) >= tree_node_count(w->t))
		abort();
	n = tree_readlink(w->t, node, buf, sizeof(buf));
	if (n >= 0 && (size_t)n != strlen(buf))
		abort();
	if (w->exact && S_ISLNK(st.st_mode) && (n < 0 || !streq(path, "l") || !streq(buf, "d/a")))
		abort();
	n = tree_getxattr(w->t, node, "user.fuzz", NULL, 0);
	if (n >= 0 && n <= (ssize_t)sizeof(buf)) {
		ssize_t m = tree_getxattr(w->t, node, "user.fuzz", buf, sizeof(buf));

		if (m != n)
			abort();
		if (w->exact && (m != 3 || memcmp(buf, "yes", 3) != 0))
			abort();
	}
	n = tree_listxattr(w->t, node, NULL, 0);
	if (n > 0 && n <= (ssize_t)sizeof(buf) && tree_listxattr(w->t, node, buf, sizeof(buf)) != n)
		abort();
	if (w->exact) {
		if (streq(path, "d/a"))
			w->ino_a = st.st_ino;
		else if (streq(path, "h"))
			w->ino_h = st.st_ino;
		else if (streq(path, "d/big"))
			w->ino_big = st.st_ino;
		else if (streq(path, "h2"))
			w->ino_h2 = st.st_ino;
		if (streq(path, "gone") || streq(path, "op/x") || strstr(path, ".wh."))
			abort(); /* whited out */
	}
	if (S_ISREG(st.st_mode))
		check_file(w, node, path, &st);
	else if (tree_read(w->t, node, buf, sizeof(buf), 0) >= 0)
		abort();
}

struct child_list {
	uint32_t nodes[256];
	char names[256][256];
	size_t n;
	bool more;
};

static int collect(const char *name, uint32_t node, uint64_t next_off, void *userdata)
{
	struct child_list *c = userdata;

	(void)next_off;
	if (c->n == ARRAY_SIZE(c->nodes)) {
		c->more = true;
		return 1;
	}
	c->nodes[c->n] = node;
	snprintf(c->names[c->n], sizeof(c->names[0]), "%s", name);
	c->n++;
	return 0;
}

static void walk_dir(struct walk *w, uint32_t dir, const char *path, int depth)
{
	_cleanup_free_ struct child_list *c = calloc(1, sizeof(*c));
	uint64_t off = 0;

	if (!c || depth > MAX_DEPTH)
		return;
	do {
		c->n = 0;
		c->more = false;
		/* dir was stat'ed as a directory, but a hostile tree may give its canonical
		 * node another type than the node itself: an error, not a crash */
		if (tree_readdir(w->t, dir, off, collect, c) < 0) {
			if (w->exact)
				abort();
			return;
		}
		off += c->n;
		for (size_t i = 0; i < c->n && w->visits < MAX_VISITS; i++) {
			char child_path[4096];
			uint32_t found;
			struct stat st;

			w->visits++;
			if (c->nodes[i] >= tree_node_count(w->t))
				abort();
			if (tree_lookup(w->t, dir, c->names[i], &found) == 0) {
				if (found >= tree_node_count(w->t))
					abort();
			} else if (w->exact) {
				abort();
			}
			snprintf(child_path, sizeof(child_path), "%s%s%s", path, *path ? "/" : "",
			         c->names[i]);
			check_node(w, c->nodes[i], child_path);
			if (tree_stat(w->t, c->nodes[i], &st) == 0 && S_ISDIR(st.st_mode)) {
				if (w->exact && tree_parent(w->t, c->nodes[i]) != dir)
					abort();
				walk_dir(w, c->nodes[i], child_path, depth + 1);
			}
		}
	} while (c->more && w->visits < MAX_VISITS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(tree_closep) struct tree *t = NULL;
	_cleanup_close_ int fd = -1;
	struct fx_buf tf = {0};
	struct walk w = {.budget = READ_BUDGET};
	uint32_t node;
	uint8_t mode;
	int r;

	if (size < 1 || size > (1u << 20))
		return 0;
	setup();
	mode = data[0];
	data++;
	size--;
	if (mode & 1) {
		r = fx_buf_append(&tf, data, size);
	} else {
		r = fx_buf_append(&tf, base_tree.data, base_tree.len);
		apply_patches(data, data + size, &tf);
		w.exact = size < 5;
	}
	if (r < 0)
		goto out;
	if (mode & 2)
		repair(&tf);
	fd = fx_memfd("tree", tf.data, tf.len);
	if (fd < 0)
		goto out;
	r = tree_open(&opener, fd, &t);
	if (r < 0) {
		if (w.exact)
			abort();
		goto out;
	}
	w.t = t;
	check_node(&w, TREE_ROOT, "");
	walk_dir(&w, TREE_ROOT, "", 0);
	if (tree_lookup(t, TREE_ROOT, "no such name", &node) == 0 && w.exact)
		abort();
	if (tree_stat(t, tree_node_count(t), &(struct stat){0}) != -ENOENT)
		abort();
	if (w.exact && (w.files_seen != 7 || w.ino_a == 0 || w.ino_a != w.ino_h || w.ino_big == 0 ||
	                w.ino_big != w.ino_h2))
		abort();
out:
	fx_buf_free(&tf);
	return 0;
}
