/* The merged lower tree: built from the layer indexes at pull time (tree_build), mapped at
 * mount time (tree_open). The contract is in tree.h.
 *
 * File layout (little endian, sections 8-byte aligned):
 *   struct tree_header                 magic "IMGFSTRE", version, counts, crc32
 *   struct tree_layer  layers[n]       layer digests, bottom first
 *   struct tree_node   nodes[n_nodes]  breadth first: a directory's children are
 *                                      contiguous and sorted by name (strcmp)
 *   char               strings[]       NUL-terminated names
 * crc32 covers the file with the crc field read as zero. */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <zlib.h>
#include "common/digest.h"
#include "fsd/index/layerindex.h"
#include "fsd/index/tree.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the tree file is stored in host order, which must be little endian"
#endif

#define TREE_MAGIC "IMGFSTRE"
#define TREE_VERSION 1u
#define NONE UINT32_MAX
#define DIR_SIZE 4096u
#define MAX_TREE_SIZE (16ull << 30)

struct tree_header {
	char magic[8];
	uint32_t version;
	uint32_t header_size;
	uint32_t n_nodes, n_layers;
	uint32_t crc;
	uint32_t dropped; /* hardlinks to nothing and other entries left out while merging */
	uint64_t file_size;
	uint64_t layers_off, nodes_off, strings_off, strings_len;
};

struct tree_layer {
	char digest[80];
};

struct tree_node {
	uint32_t parent;
	uint32_t first_child, n_children;
	uint32_t name; /* string offset */
	uint32_t canonical;
	uint32_t mode; /* st_mode, type bits included */
	uint32_t uid, gid;
	uint32_t nlink;
	uint32_t layer, entry; /* where data, xattrs and link target are; NONE: implicit dir */
	uint32_t mtime_nsec;
	uint32_t rdev_major, rdev_minor;
	int64_t mtime_sec;
	uint64_t size, blocks;
};

_Static_assert(sizeof(struct tree_header) == 72, "header layout");
_Static_assert(sizeof(struct tree_node) == 80, "node layout");

/* ---- building ---- */

/* A file as extraction would create it: one per tar entry that made it into the tree;
 * hardlinked names share one. */
struct minode {
	uint32_t layer, entry; /* NONE: an implicit directory */
	uint32_t refs;         /* names in the tree referring to it */
	uint32_t first_out;    /* while serialising: its canonical node */
};

/* A name in the tree being built. */
struct mnode {
	char *path; /* full path, "" for the root */
	uint32_t parent;
	uint32_t first_child, next, prev; /* unsorted child list */
	uint32_t inode;
	uint32_t hnext; /* hash chain */
	uint32_t out;   /* while serialising: its number */
	bool alive, is_dir;
};

struct builder {
	struct li_index **layers;
	size_t n_layers;
	struct mnode *nodes;
	uint32_t n_nodes, cap_nodes;
	struct minode *inodes;
	uint32_t n_inodes, cap_inodes;
	uint32_t *buckets;
	uint32_t n_buckets; /* power of two */
	uint32_t n_alive;
	uint32_t dropped;
};

static uint32_t hash_path(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

static uint32_t lookup(const struct builder *b, const char *path)
{
	for (uint32_t n = b->buckets[hash_path(path) & (b->n_buckets - 1)]; n != NONE;
	     n = b->nodes[n].hnext)
		if (streq(b->nodes[n].path, path))
			return n;
	return NONE;
}

static int rehash(struct builder *b, uint32_t n_buckets)
{
	uint32_t *bk = malloc(sizeof(uint32_t) * n_buckets);

	if (!bk)
		return -ENOMEM;
	memset(bk, 0xff, sizeof(uint32_t) * n_buckets);
	for (uint32_t n = 0; n < b->n_nodes; n++) {
		uint32_t h;

		if (!b->nodes[n].alive)
			continue;
		h = hash_path(b->nodes[n].path) & (n_buckets - 1);
		b->nodes[n].hnext = bk[h];
		bk[h] = n;
	}
	free(b->buckets);
	b->buckets = bk;
	b->n_buckets = n_buckets;
	return 0;
}

static void hash_remove(struct builder *b, uint32_t n)
{
	uint32_t *pp = &b->buckets[hash_path(b->nodes[n].path) & (b->n_buckets - 1)];

	while (*pp != NONE && *pp != n)
		pp = &b->nodes[*pp].hnext;
	if (*pp == n)
		*pp = b->nodes[n].hnext;
}

static int new_inode(struct builder *b, uint32_t layer, uint32_t entry, uint32_t *ret)
{
	if (b->n_inodes == b->cap_inodes) {
		uint32_t cap = b->cap_inodes ? b->cap_inodes * 2 : 1024;
		struct minode *p;

		if (cap < b->cap_inodes)
			return -EFBIG;
		p = reallocarray(b->inodes, cap, sizeof(*p));
		if (!p)
			return -ENOMEM;
		b->inodes = p;
		b->cap_inodes = cap;
	}
	b->inodes[b->n_inodes] = (struct minode){.layer = layer, .entry = entry, .first_out = NONE};
	*ret = b->n_inodes++;
	return 0;
}

/* Adds a name under parent (NONE for the root) referring to inode. */
static int new_node(struct builder *b, uint32_t parent, const char *path, uint32_t inode,
                    bool is_dir, uint32_t *ret)
{
	struct mnode *m;
	uint32_t n, h;
	int r;

	if (b->n_nodes >= NONE - 1)
		return -EFBIG;
	if (b->n_nodes == b->cap_nodes) {
		uint32_t cap = b->cap_nodes ? b->cap_nodes * 2 : 1024;
		struct mnode *p = reallocarray(b->nodes, cap, sizeof(*p));

		if (!p)
			return -ENOMEM;
		b->nodes = p;
		b->cap_nodes = cap;
	}
	if (b->n_alive + 1 > b->n_buckets) {
		r = rehash(b, b->n_buckets * 2);
		if (r < 0)
			return r;
	}
	n = b->n_nodes;
	m = &b->nodes[n];
	*m = (struct mnode){.parent = parent,
	                    .first_child = NONE,
	                    .next = NONE,
	                    .prev = NONE,
	                    .inode = inode,
	                    .out = NONE,
	                    .alive = true,
	                    .is_dir = is_dir};
	m->path = strdup(path);
	if (!m->path)
		return -ENOMEM;
	b->n_nodes++;
	b->n_alive++;
	h = hash_path(path) & (b->n_buckets - 1);
	m->hnext = b->buckets[h];
	b->buckets[h] = n;
	if (parent != NONE) {
		struct mnode *p = &b->nodes[parent];

		m->next = p->first_child;
		if (p->first_child != NONE)
			b->nodes[p->first_child].prev = n;
		p->first_child = n;
	}
	b->inodes[inode].refs++;
	*ret = n;
	return 0;
}

/* Removes n and everything below it. */
static void remove_node(struct builder *b, uint32_t n)
{
	struct mnode *m = &b->nodes[n];

	while (m->first_child != NONE)
		remove_node(b, m->first_child);
	if (m->parent != NONE) {
		if (m->prev != NONE)
			b->nodes[m->prev].next = m->next;
		else
			b->nodes[m->parent].first_child = m->next;
		if (m->next != NONE)
			b->nodes[m->next].prev = m->prev;
	}
	hash_remove(b, n);
	b->inodes[m->inode].refs--;
	m->alive = false;
	b->n_alive--;
	free(m->path);
	m->path = NULL;
}

/* The directory at path, created (as an implicit 0755 root-owned directory, the way
 * containerd's and umoci's extraction do) when missing, replacing what is there when it is
 * not a directory. */
static int ensure_dir(struct builder *b, const char *path, uint32_t *ret)
{
	_cleanup_free_ char *parent_path = NULL;
	uint32_t n = lookup(b, path), parent, inode;
	char *slash;
	int r;

	if (n != NONE && b->nodes[n].is_dir) {
		*ret = n;
		return 0;
	}
	parent_path = strdup(path);
	if (!parent_path)
		return -ENOMEM;
	slash = strrchr(parent_path, '/');
	if (slash)
		*slash = 0;
	else
		parent_path[0] = 0;
	r = ensure_dir(b, parent_path, &parent);
	if (r < 0)
		return r;
	n = lookup(b, path); /* ensure_dir() of the parent may have removed it */
	if (n != NONE)
		remove_node(b, n);
	r = new_inode(b, NONE, NONE, &inode);
	if (r < 0)
		return r;
	return new_node(b, parent, path, inode, true, ret);
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

static bool has_whiteout_component(const char *path)
{
	for (const char *p = path; p; p = strchr(p, '/')) {
		if (*p == '/')
			p++;
		if (startswith(p, ".wh."))
			return true;
	}
	return false;
}

/* Whiteouts of layer l act on the layers below it only, so they are applied before any
 * entry of l, whatever their place in the tar. */
static int apply_whiteouts(struct builder *b, uint32_t l)
{
	struct li_index *li = b->layers[l];

	for (size_t i = 0; i < li_entry_count(li); i++) {
		_cleanup_free_ char *target = NULL;
		struct li_entry e;
		const char *name;
		size_t dir_len;
		uint32_t n;
		int r;

		r = li_entry_get(li, i, &e);
		if (r < 0)
			return r;
		name = base_name(e.path);
		if (!startswith(name, ".wh."))
			continue;
		dir_len = (size_t)(name - e.path);
		if (streq(name, ".wh..wh..opq")) {
			/* Opaque: hide what the lower layers have in the directory. */
			target = strndup(e.path, dir_len ? dir_len - 1 : 0);
			if (!target)
				return -ENOMEM;
			n = lookup(b, target);
			if (n != NONE && b->nodes[n].is_dir)
				while (b->nodes[n].first_child != NONE)
					remove_node(b, b->nodes[n].first_child);
			continue;
		}
		if (startswith(name, ".wh..wh.") || !name[4])
			continue; /* aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs) */
		if (asprintf(&target, "%.*s%s", (int)dir_len, e.path, name + 4) < 0)
			return -ENOMEM;
		n = lookup(b, target);
		if (n != NONE && n != 0)
			remove_node(b, n);
	}
	return 0;
}

static int apply_entries(struct builder *b, uint32_t l)
{
	struct li_index *li = b->layers[l];

	for (size_t i = 0; i < li_entry_count(li); i++) {
		_cleanup_free_ char *parent_path = NULL;
		struct li_entry e;
		uint32_t n, parent, inode, held = NONE;
		bool is_dir;
		int r;

		r = li_entry_get(li, i, &e);
		if (r < 0)
			return r;
		if (has_whiteout_component(e.path))
			continue;
		if (!e.path[0]) {
			/* "./": the root's own attributes */
			r = new_inode(b, l, (uint32_t)i, &inode);
			if (r < 0)
				return r;
			b->inodes[b->nodes[0].inode].refs--;
			b->nodes[0].inode = inode;
			b->inodes[inode].refs++;
			continue;
		}
		if (e.type == LI_HARDLINK) {
			/* The target must be a name present now: an earlier entry of this layer
			 * or one from below. Hold its inode while the tree changes. */
			n = lookup(b, e.link);
			if (n == NONE || b->nodes[n].is_dir || streq(e.link, e.path)) {
				b->dropped++;
				continue;
			}
			held = b->nodes[n].inode;
			b->inodes[held].refs++;
		}
		parent_path = strndup(e.path, (size_t)(base_name(e.path) - e.path));
		if (!parent_path)
			return -ENOMEM;
		if (parent_path[0])
			parent_path[strlen(parent_path) - 1] = 0;
		r = ensure_dir(b, parent_path, &parent);
		if (r < 0)
			return r;
		is_dir = e.type == LI_DIR;
		n = lookup(b, e.path);
		if (n != NONE && is_dir && b->nodes[n].is_dir) {
			/* An existing directory takes the new attributes and keeps its content. */
			r = new_inode(b, l, (uint32_t)i, &inode);
			if (r < 0)
				return r;
			b->inodes[b->nodes[n].inode].refs--;
			b->nodes[n].inode = inode;
			b->inodes[inode].refs++;
			continue;
		}
		if (n != NONE)
			remove_node(b, n);
		if (held != NONE) {
			inode = held;
			b->inodes[held].refs--; /* new_node() takes its own reference */
		} else {
			r = new_inode(b, l, (uint32_t)i, &inode);
			if (r < 0)
				return r;
		}
		r = new_node(b, parent, e.path, inode, is_dir, &n);
		if (r < 0)
			return r;
	}
	return 0;
}

static int cmp_names(const void *a, const void *b, void *userdata)
{
	const struct mnode *nodes = userdata;
	const uint32_t *x = a, *y = b;

	return strcmp(base_name(nodes[*x].path), base_name(nodes[*y].path));
}

static uint64_t blocks_of(uint64_t bytes)
{
	return (bytes + 4095) / 4096 * 8;
}

static mode_t type_bits(enum li_type t)
{
	switch (t) {
	case LI_DIR:
		return S_IFDIR;
	case LI_SYMLINK:
		return S_IFLNK;
	case LI_CHR:
		return S_IFCHR;
	case LI_BLK:
		return S_IFBLK;
	case LI_FIFO:
		return S_IFIFO;
	default:
		return S_IFREG;
	}
}

static int fill_node(const struct builder *b, const struct mnode *m, struct tree_node *t)
{
	const struct minode *in = &b->inodes[m->inode];
	struct li_entry e;
	int r;

	t->layer = in->layer;
	t->entry = in->entry;
	t->nlink = in->refs;
	if (in->layer == NONE) {
		t->mode = S_IFDIR | 0755;
		t->size = DIR_SIZE;
		t->blocks = 8;
		return 0;
	}
	r = li_entry_get(b->layers[in->layer], in->entry, &e);
	if (r < 0)
		return r;
	t->mode = type_bits(e.type) | (e.type == LI_SYMLINK ? 0777 : e.mode);
	t->uid = e.uid;
	t->gid = e.gid;
	t->mtime_sec = e.mtime_sec;
	t->mtime_nsec = e.mtime_nsec;
	t->rdev_major = e.rdev_major;
	t->rdev_minor = e.rdev_minor;
	switch (e.type) {
	case LI_REG:
		t->size = e.size;
		t->blocks = blocks_of(e.stored);
		break;
	case LI_DIR:
		t->size = DIR_SIZE;
		t->blocks = 8;
		break;
	case LI_SYMLINK:
		t->size = strlen(e.link);
		break;
	default:
		break;
	}
	return 0;
}

static int serialise(struct builder *b, const char *const *digests, void **ret_buf, size_t *ret_len)
{
	_cleanup_free_ uint32_t *order = NULL, *kids = NULL;
	_cleanup_free_ struct tree_node *out = NULL;
	_cleanup_free_ char *strings = NULL;
	struct tree_header h = {.magic = TREE_MAGIC,
	                        .version = TREE_VERSION,
	                        .header_size = sizeof(h),
	                        .n_layers = (uint32_t)b->n_layers,
	                        .dropped = b->dropped};
	size_t strings_len = 0, cap_strings = 0, off;
	uint32_t n_out = 1, q = 0;
	uint8_t *buf;
	int r;

	order = malloc(sizeof(uint32_t) * b->n_alive);
	kids = malloc(sizeof(uint32_t) * b->n_alive);
	out = calloc(b->n_alive, sizeof(*out));
	if (!order || !kids || !out)
		return -ENOMEM;
	/* Breadth first, so that siblings are contiguous. */
	order[0] = 0;
	b->nodes[0].out = 0;
	while (q < n_out) {
		uint32_t n = order[q++], k = 0;
		struct tree_node *t = &out[b->nodes[n].out];

		for (uint32_t c = b->nodes[n].first_child; c != NONE; c = b->nodes[c].next)
			kids[k++] = c;
		qsort_r(kids, k, sizeof(uint32_t), cmp_names, b->nodes);
		t->first_child = n_out;
		t->n_children = k;
		for (uint32_t j = 0; j < k; j++) {
			b->nodes[kids[j]].out = n_out;
			out[n_out].parent = b->nodes[n].out;
			order[n_out++] = kids[j];
		}
	}
	for (uint32_t o = 0; o < n_out; o++) {
		struct mnode *m = &b->nodes[order[o]];
		struct tree_node *t = &out[o];
		struct minode *in = &b->inodes[m->inode];
		const char *name = base_name(m->path);
		size_t len = strlen(name) + 1;

		r = fill_node(b, m, t);
		if (r < 0)
			return r;
		if (in->first_out == NONE)
			in->first_out = o;
		t->canonical = in->first_out;
		if (m->is_dir) {
			t->nlink = 2;
			for (uint32_t j = 0; j < t->n_children; j++)
				if (b->nodes[order[t->first_child + j]].is_dir)
					t->nlink++;
		}
		if (strings_len + len > cap_strings) {
			char *p;

			cap_strings = MAX(cap_strings * 2, strings_len + len + 4096);
			p = realloc(strings, cap_strings);
			if (!p)
				return -ENOMEM;
			strings = p;
		}
		if (strings_len + len > UINT32_MAX)
			return -EFBIG;
		t->name = (uint32_t)strings_len;
		memcpy(strings + strings_len, name, len);
		strings_len += len;
	}
	out[0].parent = 0;
	h.n_nodes = n_out;
	h.layers_off = sizeof(h);
	h.nodes_off = h.layers_off + sizeof(struct tree_layer) * b->n_layers;
	h.strings_off = h.nodes_off + sizeof(struct tree_node) * n_out;
	h.strings_len = strings_len;
	off = (h.strings_off + strings_len + 7) & ~(size_t)7;
	h.file_size = off;
	buf = calloc(1, off);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	for (size_t l = 0; l < b->n_layers; l++)
		strncpy((char *)buf + h.layers_off + sizeof(struct tree_layer) * l, digests[l],
		        sizeof(struct tree_layer) - 1);
	memcpy(buf + h.nodes_off, out, sizeof(struct tree_node) * n_out);
	if (strings_len)
		memcpy(buf + h.strings_off, strings, strings_len);
	h.crc = (uint32_t)crc32_z(0, buf, off);
	memcpy(buf + offsetof(struct tree_header, crc), &h.crc, sizeof(h.crc));
	*ret_buf = buf;
	*ret_len = off;
	return 0;
}

static void builder_done(struct builder *b)
{
	for (size_t l = 0; l < b->n_layers; l++)
		li_close(b->layers[l]);
	free(b->layers);
	for (uint32_t n = 0; n < b->n_nodes; n++)
		free(b->nodes[n].path);
	free(b->nodes);
	free(b->inodes);
	free(b->buckets);
}

static int open_index_only(const struct li_opener *opener, const char *digest,
                           struct li_index **ret)
{
	if (!digest_valid(digest))
		return -EINVAL;
	return opener->open(opener->ctx, digest, LI_OPEN_VERIFY | LI_OPEN_NO_DATA, ret);
}

int tree_build(const struct li_opener *opener, const char *const *layer_digests, size_t n_layers,
               void **ret_buf, size_t *ret_len)
{
	struct builder b = {0};
	uint32_t root_inode, root;
	int r;

	if (n_layers >= NONE)
		return -EINVAL;
	b.layers = calloc(n_layers ? n_layers : 1, sizeof(*b.layers));
	if (!b.layers)
		return -ENOMEM;
	for (; b.n_layers < n_layers; b.n_layers++) {
		r = open_index_only(opener, layer_digests[b.n_layers], &b.layers[b.n_layers]);
		if (r < 0)
			goto out;
	}
	r = rehash(&b, 1024);
	if (r < 0)
		goto out;
	r = new_inode(&b, NONE, NONE, &root_inode);
	if (r < 0)
		goto out;
	r = new_node(&b, NONE, "", root_inode, true, &root);
	if (r < 0)
		goto out;
	for (uint32_t l = 0; l < n_layers; l++) {
		r = apply_whiteouts(&b, l);
		if (r < 0)
			goto out;
		r = apply_entries(&b, l);
		if (r < 0)
			goto out;
	}
	r = serialise(&b, layer_digests, ret_buf, ret_len);
out:
	builder_done(&b);
	return r;
}

/* ---- reading ---- */

struct tree {
	const uint8_t *map;
	size_t map_len;
	const struct tree_header *h;
	const struct tree_node *nodes;
	const char *strings;
	struct li_index **layers;
	uint32_t n_layers;
};

/* Whether node n is sound: links inside the tree, a name inside the strings, children
 * after it, data in an existing layer entry, and a canonical node that is its own. Checked
 * on every access (O(1)), so that opening a tree needs no walk over its nodes. */
static bool node_ok(const struct tree *t, uint32_t n)
{
	const struct tree_header *h = t->h;
	const struct tree_node *x = &t->nodes[n];

	if (x->parent >= h->n_nodes || x->name >= h->strings_len || x->canonical >= h->n_nodes ||
	    (uint64_t)x->first_child + x->n_children > h->n_nodes)
		return false;
	if (x->n_children && (!S_ISDIR(x->mode) || x->first_child <= n))
		return false;
	if (x->layer == NONE
	        ? !S_ISDIR(x->mode)
	        : (x->layer >= h->n_layers || x->entry >= li_entry_count(t->layers[x->layer])))
		return false;
	return t->nodes[x->canonical].canonical == x->canonical;
}

/* Every node at once: the verification of tree_open_flags(TREE_OPEN_VERIFY). */
static int check_tree(const struct tree *t)
{
	for (uint32_t n = 0; n < t->h->n_nodes; n++)
		if (!node_ok(t, n))
			return -EBADMSG;
	return 0;
}

int tree_open_flags(const struct li_opener *opener, int tree_fd, unsigned flags, struct tree **ret)
{
	_cleanup_(tree_closep) struct tree *t = NULL;
	struct tree_header copy;
	const struct tree_header *h;
	struct stat st;
	void *map;
	uint32_t crc;
	int r;

	if (fstat(tree_fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(struct tree_header) ||
	    (uint64_t)st.st_size > MAX_TREE_SIZE)
		return -EBADMSG;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, tree_fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	t->map = map;
	t->map_len = (size_t)st.st_size;
	t->h = h = map;
	if (memcmp(h->magic, TREE_MAGIC, 8) != 0 || h->version != TREE_VERSION ||
	    h->header_size != sizeof(*h) || h->file_size != t->map_len || h->n_nodes == 0 ||
	    h->layers_off != sizeof(*h) ||
	    h->nodes_off != h->layers_off + (uint64_t)sizeof(struct tree_layer) * h->n_layers ||
	    h->strings_off != h->nodes_off + (uint64_t)sizeof(struct tree_node) * h->n_nodes ||
	    h->strings_off > t->map_len || h->strings_len > t->map_len - h->strings_off ||
	    h->strings_len == 0 || t->map[h->strings_off + h->strings_len - 1] != 0)
		return -EBADMSG;
	if (flags & TREE_OPEN_VERIFY) {
		copy = *h;
		copy.crc = 0;
		crc = (uint32_t)crc32_z(0, (const void *)&copy, sizeof(copy));
		crc = (uint32_t)crc32_z(crc, t->map + sizeof(copy), t->map_len - sizeof(copy));
		if (crc != h->crc)
			return -EBADMSG;
	}
	t->nodes = (const void *)(t->map + h->nodes_off);
	t->strings = (const char *)t->map + h->strings_off;
	t->layers = calloc(h->n_layers ? h->n_layers : 1, sizeof(*t->layers));
	if (!t->layers)
		return -ENOMEM;
	for (; t->n_layers < h->n_layers; t->n_layers++) {
		const struct tree_layer *tl =
		    (const void *)(t->map + h->layers_off + sizeof(*tl) * t->n_layers);
		char digest[sizeof(tl->digest)];

		memcpy(digest, tl->digest, sizeof(digest));
		digest[sizeof(digest) - 1] = 0;
		r = opener->open(opener->ctx, digest,
		                 (flags & TREE_OPEN_VERIFY) ? LI_OPEN_VERIFY : 0,
		                 &t->layers[t->n_layers]);
		if (r < 0)
			return r;
	}
	if (!S_ISDIR(t->nodes[TREE_ROOT].mode) || !node_ok(t, TREE_ROOT))
		return -EBADMSG;
	if (flags & TREE_OPEN_VERIFY) {
		r = check_tree(t);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(t);
	return 0;
}

int tree_open(const struct li_opener *opener, int tree_fd, struct tree **ret)
{
	return tree_open_flags(opener, tree_fd, TREE_OPEN_VERIFY, ret);
}

void tree_close(struct tree *t)
{
	if (!t)
		return;
	for (uint32_t l = 0; l < t->n_layers; l++)
		li_close(t->layers[l]);
	free(t->layers);
	if (t->map)
		munmap((void *)t->map, t->map_len);
	free(t);
}

uint32_t tree_node_count(const struct tree *t)
{
	return t->h->n_nodes;
}

/* The node, or NULL when there is none of that number (-ENOENT) or it is unsound
 * (-EBADMSG; see node_get()). */
static const struct tree_node *node_at(const struct tree *t, uint32_t node)
{
	return node < t->h->n_nodes && node_ok(t, node) ? &t->nodes[node] : NULL;
}

/* node_at() with the reason: -ENOENT for a number outside the tree, -EBADMSG for a corrupt
 * node. */
static int node_get(const struct tree *t, uint32_t node, const struct tree_node **ret)
{
	if (node >= t->h->n_nodes)
		return -ENOENT;
	if (!node_ok(t, node))
		return -EBADMSG;
	*ret = &t->nodes[node];
	return 0;
}

/* The name of a child found through a sound directory (so inside the node array). */
static const char *child_name(const struct tree *t, uint32_t c)
{
	return t->nodes[c].name < t->h->strings_len ? t->strings + t->nodes[c].name : NULL;
}

int tree_lookup(const struct tree *t, uint32_t dir, const char *name, uint32_t *ret)
{
	const struct tree_node *d;
	uint32_t lo, hi;
	int r;

	r = node_get(t, dir, &d);
	if (r < 0)
		return r;
	if (!S_ISDIR(d->mode))
		return -ENOTDIR;
	lo = d->first_child;
	hi = d->first_child + d->n_children;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const char *cname = child_name(t, mid);
		int c;

		if (!cname)
			return -EBADMSG;
		c = strcmp(name, cname);
		if (c == 0) {
			*ret = mid;
			return 0;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -ENOENT;
}

uint32_t tree_parent(const struct tree *t, uint32_t node)
{
	const struct tree_node *n = node_at(t, node);

	return n ? n->parent : TREE_ROOT;
}

uint32_t tree_canonical(const struct tree *t, uint32_t node)
{
	const struct tree_node *n = node_at(t, node);

	return n ? n->canonical : node;
}

int tree_stat(const struct tree *t, uint32_t node, struct stat *ret)
{
	const struct tree_node *n;
	int r;

	r = node_get(t, node, &n);
	if (r < 0)
		return r;
	node = n->canonical;
	r = node_get(t, node, &n);
	if (r < 0)
		return r;
	*ret = (struct stat){
	    .st_ino = (ino_t)node + 1,
	    .st_mode = n->mode,
	    .st_nlink = n->nlink,
	    .st_uid = n->uid,
	    .st_gid = n->gid,
	    .st_rdev = makedev(n->rdev_major, n->rdev_minor),
	    .st_size = (off_t)n->size,
	    .st_blksize = 4096,
	    .st_blocks = (blkcnt_t)n->blocks,
	    .st_atim = {.tv_sec = n->mtime_sec, .tv_nsec = n->mtime_nsec},
	    .st_mtim = {.tv_sec = n->mtime_sec, .tv_nsec = n->mtime_nsec},
	    .st_ctim = {.tv_sec = n->mtime_sec, .tv_nsec = n->mtime_nsec},
	};
	return 0;
}

int tree_readdir(const struct tree *t, uint32_t dir, uint64_t off, tree_dirent_fn fn,
                 void *userdata)
{
	const struct tree_node *d;
	int r;

	r = node_get(t, dir, &d);
	if (r < 0)
		return r;
	if (!S_ISDIR(d->mode))
		return -ENOTDIR;
	for (uint64_t k = off; k < d->n_children; k++) {
		uint32_t c = d->first_child + (uint32_t)k;
		const char *name = child_name(t, c);

		if (!name)
			return -EBADMSG;
		if (fn(name, c, k + 1, userdata))
			break;
	}
	return 0;
}

/* The layer entry behind node (its canonical node), or -ENOENT for implicit dirs. */
static int node_entry(const struct tree *t, uint32_t node, const struct tree_node **ret_node,
                      struct li_index **ret_li, struct li_entry *ret_e)
{
	const struct tree_node *n;
	int r;

	r = node_get(t, node, &n);
	if (r < 0)
		return r;
	r = node_get(t, n->canonical, &n);
	if (r < 0)
		return r;
	*ret_node = n;
	if (n->layer == NONE)
		return -ENOENT;
	r = li_entry_get(t->layers[n->layer], n->entry, ret_e);
	if (r < 0)
		return r;
	*ret_li = t->layers[n->layer];
	return 0;
}

int tree_readlink(const struct tree *t, uint32_t node, char *buf, size_t size)
{
	const struct tree_node *n;
	struct li_index *li;
	struct li_entry e;
	size_t len;
	int r;

	r = node_entry(t, node, &n, &li, &e);
	if (r == -ENOENT && node < t->h->n_nodes)
		return -EINVAL;
	if (r < 0)
		return r;
	if (!S_ISLNK(n->mode) || !e.link)
		return -EINVAL;
	len = strlen(e.link);
	if (len >= size)
		return -ENAMETOOLONG;
	memcpy(buf, e.link, len + 1);
	return (int)len;
}

ssize_t tree_getxattr(const struct tree *t, uint32_t node, const char *name, void *buf, size_t size)
{
	const struct tree_node *n;
	struct li_index *li;
	struct li_entry e;
	int r;

	r = node_entry(t, node, &n, &li, &e);
	if (r == -ENOENT && node < t->h->n_nodes)
		return -ENODATA;
	if (r < 0)
		return r;
	for (uint32_t k = 0; k < e.n_xattrs; k++) {
		const char *xname;
		const void *value;
		size_t len;

		r = li_xattr_get(li, n->entry, k, &xname, &value, &len);
		if (r < 0)
			return r;
		if (!streq(xname, name))
			continue;
		if (size == 0)
			return (ssize_t)len;
		if (len > size)
			return -ERANGE;
		memcpy(buf, value, len);
		return (ssize_t)len;
	}
	return -ENODATA;
}

int tree_has_xattr_name(const struct tree *t, const char *name)
{
	for (uint32_t l = 0; l < t->n_layers; l++) {
		int r = li_has_xattr_name(t->layers[l], name);

		if (r != 0)
			return r;
	}
	return 0;
}

ssize_t tree_listxattr(const struct tree *t, uint32_t node, char *buf, size_t size)
{
	const struct tree_node *n;
	struct li_index *li;
	struct li_entry e;
	size_t total = 0;
	int r;

	r = node_entry(t, node, &n, &li, &e);
	if (r == -ENOENT && node < t->h->n_nodes)
		return 0;
	if (r < 0)
		return r;
	for (uint32_t k = 0; k < e.n_xattrs; k++) {
		const char *xname;
		const void *value;
		size_t len, nlen;

		r = li_xattr_get(li, n->entry, k, &xname, &value, &len);
		if (r < 0)
			return r;
		nlen = strlen(xname) + 1;
		if (size > 0) {
			if (total + nlen > size)
				return -ERANGE;
			memcpy(buf + total, xname, nlen);
		}
		total += nlen;
	}
	return (ssize_t)total;
}

ssize_t tree_read(const struct tree *t, uint32_t node, void *buf, size_t size, uint64_t off)
{
	const struct tree_node *n;
	struct li_index *li;
	struct li_entry e;
	int r;

	r = node_entry(t, node, &n, &li, &e);
	if (r == -ENOENT && node < t->h->n_nodes)
		return -EISDIR; /* implicit directories have no entry */
	if (r < 0)
		return r;
	if (S_ISDIR(n->mode))
		return -EISDIR;
	if (!S_ISREG(n->mode))
		return -EINVAL;
	return li_read(li, n->entry, buf, size, off);
}

void tree_prefetch(const struct tree *t, uint32_t node)
{
	const struct tree_node *n;
	struct li_index *li;
	struct li_entry e;

	if (node_entry(t, node, &n, &li, &e) == 0 && S_ISREG(n->mode))
		li_prefetch(li, n->entry);
}

int64_t tree_seek(const struct tree *t, uint32_t node, uint64_t off, int whence)
{
	const struct tree_node *n;
	struct li_index *li;
	struct li_entry e;
	int r;

	r = node_entry(t, node, &n, &li, &e);
	if (r == -ENOENT && node < t->h->n_nodes)
		return -EINVAL;
	if (r < 0)
		return r;
	if (!S_ISREG(n->mode))
		return -EINVAL;
	return li_seek(li, n->entry, off, whence);
}
