/* The merged tree's reader: maps a tree file (tree_open), opens the layers it names through
 * the caller's opener, and answers lookups, readdir, attributes, xattrs and reads from the
 * map and the layer indexes. The contract is in tree.h; the format is in tree_format.h,
 * the builder in tree_build.c. */
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <zlib.h>
#include "fsd/index/layerindex.h"
#include "fsd/index/tree.h"
#include "fsd/index/tree_format.h"

#define MAX_TREE_SIZE (16ull << 30)

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
	if (x->layer == TREE_NONE
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
	    .st_mode = n->mode & TREE_MODE_BITS,
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
	if (n->layer == TREE_NONE)
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

static ssize_t copy_value(const void *value, size_t len, void *buf, size_t size)
{
	if (size == 0)
		return (ssize_t)len;
	if (len > size)
		return -ERANGE;
	memcpy(buf, value, len);
	return (ssize_t)len;
}

/* An opaque directory's own xattr comes from its mark, whatever its tar entry says. */
static bool is_opaque_name(const struct tree_node *n, const char *name)
{
	return n->mode & TREE_MODE_OPAQUE && streq(name, TREE_OPAQUE_XATTR);
}

ssize_t tree_getxattr(const struct tree *t, uint32_t node, const char *name, void *buf, size_t size)
{
	const struct tree_node *n;
	struct li_index *li;
	struct li_entry e;
	int r;

	r = node_entry(t, node, &n, &li, &e);
	if (r < 0 && (r != -ENOENT || node >= t->h->n_nodes))
		return r;
	if (is_opaque_name(n, name))
		return copy_value("y", 1, buf, size);
	if (r == -ENOENT)
		return -ENODATA; /* an implicit directory */
	for (uint32_t k = 0; k < e.n_xattrs; k++) {
		const char *xname;
		const void *value;
		size_t len;

		r = li_xattr_get(li, n->entry, k, &xname, &value, &len);
		if (r < 0)
			return r;
		if (!streq(xname, name))
			continue;
		return copy_value(value, len, buf, size);
	}
	return -ENODATA;
}

int tree_has_xattr_name(const struct tree *t, const char *name)
{
	if (streq(name, TREE_OPAQUE_XATTR))
		return 1; /* a one-layer tree's opaque directories carry it without a tar entry */
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
	if (r < 0 && (r != -ENOENT || node >= t->h->n_nodes))
		return r;
	if (n->mode & TREE_MODE_OPAQUE) {
		total = sizeof(TREE_OPAQUE_XATTR);
		if (size > 0 && total > size)
			return -ERANGE;
		if (size > 0)
			memcpy(buf, TREE_OPAQUE_XATTR, total);
	}
	if (r == -ENOENT)
		return (ssize_t)total;
	for (uint32_t k = 0; k < e.n_xattrs; k++) {
		const char *xname;
		const void *value;
		size_t len, nlen;

		r = li_xattr_get(li, n->entry, k, &xname, &value, &len);
		if (r < 0)
			return r;
		if (is_opaque_name(n, xname))
			continue;
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
