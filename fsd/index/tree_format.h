/* On-disk layout of a merged tree (private to tree*.c: tree_build.c writes it, tree.c
 * maps it).
 *
 * One file, little endian, sections 8-byte aligned:
 *   struct tree_header                 magic "IMGFSTRE", version, counts, crc32
 *   struct tree_layer  layers[n]       layer digests, bottom first
 *   struct tree_node   nodes[n_nodes]  breadth first: a directory's children are
 *                                      contiguous and sorted by name (strcmp)
 *   char               strings[]       NUL-terminated names
 * crc32 covers the file with the crc field read as zero. */
#pragma once

#include <stdint.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the tree file is stored in host order, which must be little endian"
#endif

#define TREE_MAGIC "IMGFSTRE"
#define TREE_VERSION 1u
#define TREE_NONE UINT32_MAX /* no such node or layer */

/* In tree_node.mode, above the st_mode bits: a directory of a one-layer tree in overlay
 * lower format (tree_build_layer()) that carries trusted.overlay.opaque=y. (A whiteout
 * there needs no mark: a character device 0/0 whose entry is the `.wh.` file.) */
#define TREE_MODE_OPAQUE (1u << 31)
#define TREE_MODE_BITS 0177777u

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
	uint32_t layer, entry; /* where data, xattrs and link target are; TREE_NONE: implicit dir */
	uint32_t mtime_nsec;
	uint32_t rdev_major, rdev_minor;
	int64_t mtime_sec;
	uint64_t size, blocks;
};

_Static_assert(sizeof(struct tree_header) == 72, "header layout");
_Static_assert(sizeof(struct tree_node) == 80, "node layout");
