/* On-disk layout of a layer index (private to layerindex*.c).
 *
 * One file, little endian, every section 8-byte aligned so the map can be read in place:
 *
 *   struct lix_header                       magic "IMGFSLIX", version, sizes, crc32
 *   struct lix_entry   entries[n_entries]   tar order, duplicates kept (later wins)
 *   struct lix_xattr   xattrs[n_xattrs]     entry e owns xattrs[xattr_first ..+n_xattrs)
 *   struct lix_segment segments[n_segments] entry e owns segments[seg_first ..+n_segments)
 *   struct lix_point   points[n_points]     access points, sorted by out_off
 *   uint8_t            windows[windows_len] zlib-compressed 32 KiB windows of gzip points
 *   char               strings[strings_len] NUL-terminated paths, link targets, xattr
 *                                           names; xattr values are binary (plus a NUL)
 *
 * crc32 (zlib's) covers the whole file with the checksum field read as zero. Offsets of
 * strings are relative to the string table. An access point is either a gzip checkpoint
 * (in_off = first compressed byte to read, bits = bits of the byte before it still
 * unread, that byte itself, and the window that precedes out_off), or a frame of the
 * seekable zstd copy (in_off and window_len = the frame's offset and size in that file). */
#pragma once

#include <stdint.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the layer index is stored in host order, which must be little endian"
#endif

#define LIX_MAGIC "IMGFSLIX"
#define LIX_VERSION 1u
#define LIX_NONE UINT32_MAX
#define LIX_F_SPARSE 1u /* data is segments[] (possibly none: all hole), not contiguous */
/* lix_point.flags: in_off is the first byte of a gzip member's header (no window, no bits):
 * the points of an index described from a foreign table of contents (eStargz), whose
 * members start where a chunk of file data does. */
#define LIX_P_MEMBER 1u
/* lix_point.flags: prime_byte is not recorded: it is the data's byte before in_off (the
 * points of an index described from a SOCI zTOC, whose checkpoints have no such byte). */
#define LIX_P_PRIME_DATA 2u

struct lix_header {
	char magic[8];
	uint32_t version;
	uint32_t header_size;
	uint32_t compression; /* enum li_compression, never LI_AUTO */
	uint32_t span;
	uint32_t crc;
	uint32_t dropped; /* entries dropped as hostile ('..' paths, bad hardlinks) */
	uint64_t file_size;
	uint64_t total_in;  /* compressed bytes of the layer blob */
	uint64_t total_out; /* bytes of the uncompressed tar stream */
	uint64_t zst_size;  /* size of the seekable zstd copy (zstd layers) */
	uint32_t n_entries, n_xattrs, n_segments, n_points;
	uint64_t entries_off, xattrs_off, segments_off, points_off, windows_off, strings_off;
	uint64_t windows_len, strings_len;
	char digest[80]; /* "sha256:HEX", NUL-padded */
};

struct lix_entry {
	uint32_t path;  /* string offset */
	uint32_t link;  /* string offset or LIX_NONE */
	uint16_t type;  /* enum li_type */
	uint16_t flags; /* LIX_F_* */
	uint32_t mode;  /* permission bits incl. setuid/setgid/sticky */
	uint32_t uid, gid;
	uint32_t mtime_nsec;
	uint32_t rdev_major, rdev_minor;
	uint32_t xattr_first, n_xattrs;
	uint32_t seg_first, n_segments;
	uint32_t pad2;
	int64_t mtime_sec;
	uint64_t size;     /* apparent size */
	uint64_t data_off; /* in the uncompressed stream */
	uint64_t stored;   /* bytes stored in the stream (sum of segments when sparse) */
};

struct lix_xattr {
	uint32_t name;  /* string offset */
	uint32_t value; /* string offset of value_len bytes */
	uint32_t value_len;
	uint32_t pad;
};

struct lix_segment {
	uint64_t file_off; /* offset in the file */
	uint64_t len;
	uint64_t stored_off; /* offset of these bytes after the entry's data_off */
};

struct lix_point {
	uint64_t out_off;
	uint64_t in_off;
	uint64_t window_off; /* gzip: offset in windows[]; zstd: unused */
	uint32_t window_len; /* gzip: compressed window size (0: none); zstd: frame size */
	uint8_t bits;
	uint8_t prime_byte;
	uint16_t flags; /* LIX_P_* */
};

_Static_assert(sizeof(struct lix_header) == 224, "header layout");
_Static_assert(sizeof(struct lix_entry) == 88, "entry layout");
_Static_assert(sizeof(struct lix_xattr) == 16, "xattr layout");
_Static_assert(sizeof(struct lix_segment) == 24, "segment layout");
_Static_assert(sizeof(struct lix_point) == 32, "point layout");
