/* The lower layer of a mount backed by a merged image tree (fsd/index/tree.h). */
#include "lower.h"
#include "fsd/index/tree.h"

static uint32_t lt_node_count(void *data)
{
	return tree_node_count(data);
}

static int lt_lookup(void *data, uint32_t dir, const char *name, uint32_t *ret)
{
	return tree_lookup(data, dir, name, ret);
}

static uint32_t lt_parent(void *data, uint32_t node)
{
	return tree_parent(data, node);
}

static uint32_t lt_canonical(void *data, uint32_t node)
{
	return tree_canonical(data, node);
}

static int lt_stat(void *data, uint32_t node, struct stat *ret)
{
	return tree_stat(data, node, ret);
}

static int lt_readdir(void *data, uint32_t dir, uint64_t off, lower_dirent_fn fn, void *userdata)
{
	return tree_readdir(data, dir, off, fn, userdata);
}

static int lt_readlink(void *data, uint32_t node, char *buf, size_t size)
{
	return tree_readlink(data, node, buf, size);
}

static ssize_t lt_getxattr(void *data, uint32_t node, const char *name, void *buf, size_t size)
{
	return tree_getxattr(data, node, name, buf, size);
}

static ssize_t lt_listxattr(void *data, uint32_t node, char *buf, size_t size)
{
	return tree_listxattr(data, node, buf, size);
}

static int lt_has_xattr_name(void *data, const char *name)
{
	return tree_has_xattr_name(data, name);
}

static ssize_t lt_read(void *data, uint32_t node, void *buf, size_t size, uint64_t off)
{
	return tree_read(data, node, buf, size, off);
}

static void lt_prefetch(void *data, uint32_t node)
{
	tree_prefetch(data, node);
}

static int64_t lt_seek(void *data, uint32_t node, uint64_t off, int whence)
{
	return tree_seek(data, node, off, whence);
}

static void lt_close(void *data)
{
	tree_close(data);
}

static const struct lower_ops tree_lower_ops = {
    .node_count = lt_node_count,
    .lookup = lt_lookup,
    .parent = lt_parent,
    .canonical = lt_canonical,
    .stat = lt_stat,
    .readdir = lt_readdir,
    .readlink = lt_readlink,
    .getxattr = lt_getxattr,
    .listxattr = lt_listxattr,
    .has_xattr_name = lt_has_xattr_name,
    .read = lt_read,
    .prefetch = lt_prefetch,
    .seek = lt_seek,
    .close = lt_close,
};

void lower_from_tree(struct tree *t, struct lower *ret)
{
	*ret = (struct lower){.ops = &tree_lower_ops, .data = t};
}
