/* The in-memory lower of unit tests; see fixture_lower.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include "common/macros.h"
#include "fixture_lower.h"

static uint32_t m_node_count(void *data)
{
	return ((struct mem_lower *)data)->n;
}

static bool m_is_dir(struct mem_lower *m, uint32_t node)
{
	return node < m->n && S_ISDIR(m->nodes[node].mode);
}

static int m_lookup(void *data, uint32_t dir, const char *name, uint32_t *ret)
{
	struct mem_lower *m = data;

	if (!m_is_dir(m, dir))
		return -ENOTDIR;
	for (uint32_t i = 1; i < m->n; i++) {
		if (m->nodes[i].parent == dir && streq(m->nodes[i].name, name)) {
			*ret = m->bad_lookup ? m->n + 5 : i;
			return 0;
		}
	}
	return -ENOENT;
}

static uint32_t m_parent(void *data, uint32_t node)
{
	struct mem_lower *m = data;

	return node < m->n ? m->nodes[node].parent : 0;
}

static uint32_t m_canonical(void *data, uint32_t node)
{
	struct mem_lower *m = data;

	return node < m->n ? m->nodes[node].canonical : node;
}

static int m_stat(void *data, uint32_t node, struct stat *ret)
{
	struct mem_lower *m = data;
	const struct mem_node *n;

	if (node >= m->n)
		return -EIO;
	n = &m->nodes[node];
	memset(ret, 0, sizeof(*ret));
	ret->st_ino = node + 1;
	ret->st_mode = n->mode;
	ret->st_uid = n->uid;
	ret->st_gid = n->gid;
	ret->st_nlink = n->nlink;
	ret->st_rdev = n->rdev;
	ret->st_size = n->data ? (off_t)strlen(n->data) : 0;
	ret->st_mtim.tv_sec = 1700000000;
	return 0;
}

static int m_readdir(void *data, uint32_t dir, uint64_t off, lower_dirent_fn fn, void *userdata)
{
	struct mem_lower *m = data;
	uint64_t rank = 0;

	if (!m_is_dir(m, dir))
		return -ENOTDIR;
	for (uint32_t i = 1; i < m->n; i++) {
		if (m->nodes[i].parent != dir)
			continue;
		if (rank++ < off)
			continue;
		if (fn(m->nodes[i].name, i, m->stuck_offset ? off : rank, userdata))
			return 0;
	}
	return 0;
}

static int m_readlink(void *data, uint32_t node, char *buf, size_t size)
{
	struct mem_lower *m = data;
	size_t len;

	if (node >= m->n || !S_ISLNK(m->nodes[node].mode))
		return -EINVAL;
	len = strlen(m->nodes[node].data);
	if (len >= size)
		return -ENAMETOOLONG;
	memcpy(buf, m->nodes[node].data, len + 1);
	return (int)len;
}

static ssize_t m_getxattr(void *data, uint32_t node, const char *name, void *buf, size_t size)
{
	struct mem_lower *m = data;

	for (size_t k = 0; node < m->n && k < ARRAY_SIZE(m->nodes[node].xattrs); k++) {
		const struct mem_xattr *x = &m->nodes[node].xattrs[k];

		if (!x->name || !streq(x->name, name))
			continue;
		if (size == 0)
			return (ssize_t)x->len;
		if (size < x->len)
			return -ERANGE;
		memcpy(buf, x->value, x->len);
		return (ssize_t)x->len;
	}
	return -ENODATA;
}

static ssize_t m_listxattr(void *data, uint32_t node, char *buf, size_t size)
{
	struct mem_lower *m = data;
	size_t len = 0;

	for (size_t k = 0; node < m->n && k < ARRAY_SIZE(m->nodes[node].xattrs); k++) {
		const char *name = m->nodes[node].xattrs[k].name;

		if (!name)
			continue;
		if (size) {
			if (len + strlen(name) + 1 > size)
				return -ERANGE;
			memcpy(buf + len, name, strlen(name) + 1);
		}
		len += strlen(name) + 1;
	}
	return (ssize_t)len;
}

static ssize_t m_read(void *data, uint32_t node, void *buf, size_t size, uint64_t off)
{
	struct mem_lower *m = data;
	size_t len;

	if (node >= m->n || !S_ISREG(m->nodes[node].mode))
		return -EINVAL;
	len = strlen(m->nodes[node].data);
	if (off >= len)
		return 0;
	/* Short reads of at most 4 bytes: the core must loop. */
	size = MIN(MIN(size, len - off), 4);
	memcpy(buf, m->nodes[node].data + off, size);
	return (ssize_t)size;
}

static int64_t m_seek(void *data, uint32_t node, uint64_t off, int whence)
{
	struct mem_lower *m = data;
	size_t len = strlen(m->nodes[node].data);

	if (off >= len)
		return -ENXIO;
	return whence == SEEK_DATA ? (int64_t)off : (int64_t)len;
}

static void m_close(void *data)
{
	((struct mem_lower *)data)->closed++;
}

static int m_has_xattr_name(void *data, const char *name)
{
	struct mem_lower *m = data;

	for (uint32_t n = 0; n < m->n; n++)
		for (size_t k = 0; k < ARRAY_SIZE(m->nodes[n].xattrs); k++)
			if (m->nodes[n].xattrs[k].name && streq(m->nodes[n].xattrs[k].name, name))
				return 1;
	return 0;
}

const struct lower_ops mem_lower_ops = {
    .node_count = m_node_count,
    .lookup = m_lookup,
    .parent = m_parent,
    .canonical = m_canonical,
    .stat = m_stat,
    .readdir = m_readdir,
    .readlink = m_readlink,
    .getxattr = m_getxattr,
    .listxattr = m_listxattr,
    .has_xattr_name = m_has_xattr_name,
    .read = m_read,
    .seek = m_seek,
    .close = m_close,
};

struct lower mem_lower_of(struct mem_lower *m)
{
	return (struct lower){.ops = &mem_lower_ops, .data = m};
}
