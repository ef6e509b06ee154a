/* The merged tree's builder (tree_build): replays the layer indexes bottom to top as an
 * extraction would (whiteouts, opaque directories, replacements, implicit parents,
 * hardlinks across layers) into an in-memory tree, then serialises it in the format of
 * tree_format.h. The contract is in tree.h; the reader is tree.c. */
#include <stdint.h>
#include <sys/stat.h>
#include <zlib.h>
#include "common/digest.h"
#include "fsd/index/layerindex.h"
#include "fsd/index/tree.h"
#include "fsd/index/tree_format.h"

#define DIR_SIZE 4096u

/* A file as extraction would create it: one per tar entry that made it into the tree;
 * hardlinked names share one. */
struct minode {
	uint32_t layer, entry; /* TREE_NONE: an implicit directory */
	uint32_t refs;         /* names in the tree referring to it */
	uint32_t first_out;    /* while serialising: its canonical node */
	bool whiteout;         /* overlay format: a character device 0/0 */
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
	bool opaque; /* overlay format: trusted.overlay.opaque=y */
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
	/* Overlay format: the merged layers below the one being built (same layer numbers),
	 * whose directories give an implicit directory its attributes, as extracting the
	 * layer onto them would; NULL otherwise. */
	const struct builder *below;
	bool overlay; /* serialise only the layers that nodes use */
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
	for (uint32_t n = b->buckets[hash_path(path) & (b->n_buckets - 1)]; n != TREE_NONE;
	     n = b->nodes[n].hnext)
		if (streq(b->nodes[n].path, path))
			return n;
	return TREE_NONE;
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

	while (*pp != TREE_NONE && *pp != n)
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
	b->inodes[b->n_inodes] =
	    (struct minode){.layer = layer, .entry = entry, .first_out = TREE_NONE};
	*ret = b->n_inodes++;
	return 0;
}

/* Adds a name under parent (TREE_NONE for the root) referring to inode. */
static int new_node(struct builder *b, uint32_t parent, const char *path, uint32_t inode,
                    bool is_dir, uint32_t *ret)
{
	struct mnode *m;
	uint32_t n, h;
	int r;

	if (b->n_nodes >= TREE_NONE - 1)
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
	                    .first_child = TREE_NONE,
	                    .next = TREE_NONE,
	                    .prev = TREE_NONE,
	                    .inode = inode,
	                    .out = TREE_NONE,
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
	if (parent != TREE_NONE) {
		struct mnode *p = &b->nodes[parent];

		m->next = p->first_child;
		if (p->first_child != TREE_NONE)
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

	while (m->first_child != TREE_NONE)
		remove_node(b, m->first_child);
	if (m->parent != TREE_NONE) {
		if (m->prev != TREE_NONE)
			b->nodes[m->prev].next = m->next;
		else
			b->nodes[m->parent].first_child = m->next;
		if (m->next != TREE_NONE)
			b->nodes[m->next].prev = m->prev;
	}
	hash_remove(b, n);
	b->inodes[m->inode].refs--;
	m->alive = false;
	b->n_alive--;
	free(m->path);
	m->path = NULL;
}

/* Overlay format: an implicit directory takes the attributes of the directory the layers
 * below have at path, if any (else it stays a 0755 root-owned one). */
static void inherit_below(struct builder *b, const char *path, uint32_t inode)
{
	uint32_t n;

	if (!b->below)
		return;
	n = lookup(b->below, path);
	if (n == TREE_NONE || !b->below->nodes[n].is_dir)
		return;
	b->inodes[inode].layer = b->below->inodes[b->below->nodes[n].inode].layer;
	b->inodes[inode].entry = b->below->inodes[b->below->nodes[n].inode].entry;
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

	if (n != TREE_NONE && b->nodes[n].is_dir) {
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
	if (n != TREE_NONE)
		remove_node(b, n);
	r = new_inode(b, TREE_NONE, TREE_NONE, &inode);
	if (r < 0)
		return r;
	inherit_below(b, path, inode);
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
			if (n != TREE_NONE && b->nodes[n].is_dir)
				while (b->nodes[n].first_child != TREE_NONE)
					remove_node(b, b->nodes[n].first_child);
			continue;
		}
		if (startswith(name, ".wh..wh.") || !name[4])
			continue; /* aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs) */
		if (asprintf(&target, "%.*s%s", (int)dir_len, e.path, name + 4) < 0)
			return -ENOMEM;
		n = lookup(b, target);
		if (n != TREE_NONE && n != 0)
			remove_node(b, n);
	}
	return 0;
}

/* The overlay lower format's view of a whiteout entry of layer l: 0 when e is none; 1
 * when it was handled (an opaque mark set, a whiteout node made, aufs bookkeeping left
 * out); -errno. */
static int apply_overlay_whiteout(struct builder *b, uint32_t l, size_t i, const struct li_entry *e)
{
	_cleanup_free_ char *dir = NULL, *target = NULL;
	const char *name = base_name(e->path);
	size_t dir_len = (size_t)(name - e->path);
	uint32_t n, parent, inode;
	int r;

	if (!startswith(name, ".wh."))
		return 0;
	dir = strndup(e->path, dir_len ? dir_len - 1 : 0);
	if (!dir)
		return -ENOMEM;
	if (has_whiteout_component(dir)) {
		b->dropped++;
		return 1;
	}
	if (streq(name, ".wh..wh..opq")) {
		r = ensure_dir(b, dir, &n);
		if (r < 0)
			return r;
		b->nodes[n].opaque = true;
		return 1;
	}
	if (startswith(name, ".wh..wh.") || !name[4])
		return 1; /* aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs) */
	if (asprintf(&target, "%s%s%s", dir, dir[0] ? "/" : "", name + 4) < 0) {
		target = NULL;
		return -ENOMEM;
	}
	r = ensure_dir(b, dir, &parent);
	if (r < 0)
		return r;
	if (lookup(b, target) != TREE_NONE)
		return 1; /* an entry of this layer: a whiteout hides only the layers below */
	r = new_inode(b, l, (uint32_t)i, &inode);
	if (r < 0)
		return r;
	b->inodes[inode].whiteout = true;
	r = new_node(b, parent, target, inode, false, &n);
	return r < 0 ? r : 1;
}

/* Replays the entries of layer l. overlay: in overlay lower format (whiteouts and opaque
 * marks kept as overlayfs shows them), else merged (whiteouts already applied). */
static int apply_entries(struct builder *b, uint32_t l, bool overlay)
{
	struct li_index *li = b->layers[l];

	for (size_t i = 0; i < li_entry_count(li); i++) {
		_cleanup_free_ char *parent_path = NULL;
		struct li_entry e;
		uint32_t n, parent, inode, held = TREE_NONE;
		bool is_dir, over_whiteout = false;
		int r;

		r = li_entry_get(li, i, &e);
		if (r < 0)
			return r;
		if (overlay) {
			r = apply_overlay_whiteout(b, l, i, &e);
			if (r < 0)
				return r;
			if (r > 0)
				continue;
		}
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
			if (n == TREE_NONE || b->nodes[n].is_dir || streq(e.link, e.path)) {
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
		if (n != TREE_NONE && is_dir && b->nodes[n].is_dir) {
			/* An existing directory takes the new attributes and keeps its content. */
			r = new_inode(b, l, (uint32_t)i, &inode);
			if (r < 0)
				return r;
			b->inodes[b->nodes[n].inode].refs--;
			b->nodes[n].inode = inode;
			b->inodes[inode].refs++;
			continue;
		}
		if (n != TREE_NONE) {
			over_whiteout = b->inodes[b->nodes[n].inode].whiteout;
			remove_node(b, n);
		}
		if (held != TREE_NONE) {
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
		/* Overlay format: a directory made where this layer removed a name hides what
		 * the layers below have there, as the merge's whiteout-first order does. */
		b->nodes[n].opaque = over_whiteout && is_dir;
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
	if (in->layer == TREE_NONE) {
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
	if (in->whiteout) {
		t->mode = S_IFCHR; /* as containerd and podman extract a whiteout */
		return 0;
	}
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
	_cleanup_free_ uint32_t *order = NULL, *kids = NULL, *used = NULL, *map = NULL;
	_cleanup_free_ struct tree_node *out = NULL;
	_cleanup_free_ char *strings = NULL;
	struct tree_header h = {.magic = TREE_MAGIC,
	                        .version = TREE_VERSION,
	                        .header_size = sizeof(h),
	                        .n_layers = (uint32_t)b->n_layers,
	                        .dropped = b->dropped};
	size_t strings_len = 0, cap_strings = 0, off;
	uint32_t n_out = 1, q = 0, n_used;
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

		for (uint32_t c = b->nodes[n].first_child; c != TREE_NONE; c = b->nodes[c].next)
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
		if (m->opaque && m->is_dir)
			t->mode |= TREE_MODE_OPAQUE;
		if (in->first_out == TREE_NONE)
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
	/* Overlay format: the layers below the one built are named only when a node uses
	 * them, so that opening the tree does not open every layer of the image. */
	used = malloc(sizeof(uint32_t) * (b->n_layers + 1));
	map = malloc(sizeof(uint32_t) * (b->n_layers + 1));
	if (!used || !map)
		return -ENOMEM;
	for (size_t l = 0; l < b->n_layers; l++) {
		map[l] = b->overlay ? TREE_NONE : (uint32_t)l;
		used[l] = (uint32_t)l;
	}
	n_used = b->overlay ? 0 : (uint32_t)b->n_layers;
	for (uint32_t o = 0; b->overlay && o < n_out; o++) {
		uint32_t l = out[o].layer;

		if (l == TREE_NONE)
			continue;
		if (map[l] == TREE_NONE) {
			map[l] = n_used;
			used[n_used++] = l;
		}
		out[o].layer = map[l];
	}
	h.n_layers = n_used;
	h.n_nodes = n_out;
	h.layers_off = sizeof(h);
	h.nodes_off = h.layers_off + sizeof(struct tree_layer) * n_used;
	h.strings_off = h.nodes_off + sizeof(struct tree_node) * n_out;
	h.strings_len = strings_len;
	off = (h.strings_off + strings_len + 7) & ~(size_t)7;
	h.file_size = off;
	buf = calloc(1, off);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	for (size_t l = 0; l < n_used; l++)
		strncpy((char *)buf + h.layers_off + sizeof(struct tree_layer) * l,
		        digests[used[l]], sizeof(struct tree_layer) - 1);
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

static int start(struct builder *b)
{
	uint32_t root_inode, root;
	int r;

	r = rehash(b, 1024);
	if (r < 0)
		return r;
	r = new_inode(b, TREE_NONE, TREE_NONE, &root_inode);
	if (r < 0)
		return r;
	inherit_below(b, "", root_inode);
	return new_node(b, TREE_NONE, "", root_inode, true, &root);
}

/* Overlay format: the merged layers below the top one, into below (which borrows b's
 * layers). */
static int build_below(struct builder *b, struct builder *below)
{
	int r;

	below->layers = b->layers;
	below->n_layers = b->n_layers - 1;
	r = start(below);
	for (uint32_t l = 0; r >= 0 && l < below->n_layers; l++) {
		r = apply_whiteouts(below, l);
		if (r >= 0)
			r = apply_entries(below, l, false);
	}
	return r;
}

static int build(const struct li_opener *opener, const char *const *layer_digests, size_t n_layers,
                 bool overlay, void **ret_buf, size_t *ret_len)
{
	struct builder b = {.overlay = overlay}, below = {0};
	int r;

	if (n_layers >= TREE_NONE)
		return -EINVAL;
	b.layers = calloc(n_layers ? n_layers : 1, sizeof(*b.layers));
	if (!b.layers)
		return -ENOMEM;
	for (; b.n_layers < n_layers; b.n_layers++) {
		r = open_index_only(opener, layer_digests[b.n_layers], &b.layers[b.n_layers]);
		if (r < 0)
			goto out;
	}
	if (overlay && n_layers > 1) {
		r = build_below(&b, &below);
		if (r < 0)
			goto out;
		b.below = &below;
	}
	r = start(&b);
	if (r < 0)
		goto out;
	for (uint32_t l = overlay && n_layers ? (uint32_t)n_layers - 1 : 0; l < n_layers; l++) {
		if (!overlay) {
			r = apply_whiteouts(&b, l);
			if (r < 0)
				goto out;
		}
		r = apply_entries(&b, l, overlay);
		if (r < 0)
			goto out;
	}
	r = serialise(&b, layer_digests, ret_buf, ret_len);
out:
	below.layers = NULL; /* b's */
	below.n_layers = 0;
	builder_done(&below);
	builder_done(&b);
	return r;
}

int tree_build(const struct li_opener *opener, const char *const *layer_digests, size_t n_layers,
               void **ret_buf, size_t *ret_len)
{
	return build(opener, layer_digests, n_layers, false, ret_buf, ret_len);
}

int tree_build_layer(const struct li_opener *opener, const char *const *layer_digests,
                     size_t n_layers, void **ret_buf, size_t *ret_len)
{
	if (n_layers == 0)
		return -EINVAL;
	return build(opener, layer_digests, n_layers, true, ret_buf, ret_len);
}

int tree_build_layers(const struct li_opener *opener, const char *const *layer_digests,
                      size_t n_layers, tree_layer_fn fn, void *userdata)
{
	struct builder below = {0};
	int r = 0;

	if (n_layers >= TREE_NONE)
		return -EINVAL;
	below.layers = calloc(n_layers ? n_layers : 1, sizeof(*below.layers));
	if (!below.layers)
		return -ENOMEM;
	for (; below.n_layers < n_layers; below.n_layers++) {
		r = open_index_only(opener, layer_digests[below.n_layers],
		                    &below.layers[below.n_layers]);
		if (r < 0)
			goto out;
	}
	r = start(&below);
	/* Layer i's tree over the merge of the layers below it, then layer i into the merge:
	 * each index is opened and replayed once. */
	for (uint32_t i = 0; r >= 0 && i < n_layers; i++) {
		struct builder b = {.overlay = true,
		                    .below = i ? &below : NULL,
		                    .layers = below.layers,
		                    .n_layers = i + 1};
		void *buf = NULL;
		size_t len = 0;

		r = start(&b);
		if (r >= 0)
			r = apply_entries(&b, i, true);
		if (r >= 0)
			r = serialise(&b, layer_digests, &buf, &len);
		b.layers = NULL; /* below's */
		b.n_layers = 0;
		builder_done(&b);
		if (r >= 0)
			r = fn(i, buf, len, userdata); /* takes buf */
		if (r >= 0)
			r = apply_whiteouts(&below, i);
		if (r >= 0)
			r = apply_entries(&below, i, false);
	}
out:
	builder_done(&below);
	return r < 0 ? r : 0;
}
