/* Fuzzes the layer index builder and reader. The first byte picks how the rest is handed
 * over: bits 0-1 the compression given to li_builder_new (auto, tar, gzip, zstd), bit 2
 * feeding in small chunks, bit 3 gzip the rest here first (so that mutations of a tar
 * still reach the checkpoint code). A stream either fails cleanly or yields an index that
 * opens, and whose every entry reads back within its size. */
#include <stdint.h>
#include <sys/mman.h>
#include <zlib.h>
#include "common/fileio.h"
#include "fsd/index/layerindex.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *gzip_copy(const uint8_t *data, size_t size, size_t *ret_len)
{
	uLong cap = compressBound((uLong)size) + 64;
	uint8_t *out = malloc(cap);
	z_stream z = {0};

	if (!out || deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
		free(out);
		return NULL;
	}
	z.next_in = (uint8_t *)data;
	z.avail_in = (uInt)size;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END) {
		deflateEnd(&z);
		free(out);
		return NULL;
	}
	*ret_len = z.total_out;
	deflateEnd(&z);
	return out;
}

static void read_back(struct li_index *li)
{
	static uint8_t buf[65536];
	uint64_t budget = 64u << 20;

	for (size_t i = 0; i < li_entry_count(li); i++) {
		struct li_entry e;
		const char *name;
		const void *value;
		size_t len;

		if (li_entry_get(li, i, &e) < 0)
			abort(); /* the index was just built: it must be consistent */
		for (uint32_t k = 0; k < e.n_xattrs; k++)
			if (li_xattr_get(li, i, k, &name, &value, &len) < 0)
				abort();
		if (e.type != LI_REG)
			continue;
		for (uint64_t off = 0; off < e.size && budget > 0;) {
			ssize_t n = li_read(li, i, buf, sizeof(buf), off);

			if (n <= 0 || (uint64_t)n > e.size - off)
				abort();
			off += (uint64_t)n;
			budget -= MIN(budget, (uint64_t)n);
			if (off < e.size && e.n_segments)
				(void)li_seek(li, i, off, (off & 1) ? SEEK_DATA : SEEK_HOLE);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum li_compression comps[] = {LI_AUTO, LI_TAR, LI_GZIP, LI_ZSTD};
	_cleanup_(li_builder_freep) struct li_builder *b = NULL;
	_cleanup_(li_closep) struct li_index *li = NULL;
	_cleanup_close_ int zfd = -1, blob_fd = -1, idx_fd = -1;
	_cleanup_free_ uint8_t *gz = NULL;
	_cleanup_free_ void *idx = NULL;
	struct li_limits lim;
	size_t idx_len, chunk;
	uint8_t mode;
	int r = 0;

	if (size < 1 || size > (1u << 20))
		return 0;
	mode = data[0];
	data++;
	size--;
	if (mode & 8) {
		gz = gzip_copy(data, size, &size);
		if (!gz)
			return 0;
		data = gz;
	}
	zfd = memfd_create("zst", MFD_CLOEXEC);
	if (zfd < 0)
		return 0;
	if (li_builder_new(comps[mode & 3], 4096, zfd, &b) < 0)
		return 0;
	li_limits_default(&lim);
	lim.max_out = 32u << 20;
	lim.max_entries = 20000;
	if (li_builder_set_limits(b, &lim) < 0)
		abort();
	chunk = (mode & 4) ? 1 + (size_t)(mode >> 4) * 97 : size;
	for (size_t off = 0; off < size && r == 0; off += chunk)
		r = li_builder_feed(b, data + off, MIN(chunk, size - off));
	if (r == 0)
		r = li_builder_finish(b, "sha256:fuzz", &idx, &idx_len);
	if (r < 0) {
		if (r != -EBADMSG && r != -EFBIG && r != -ENOMEM)
			abort();
		return 0;
	}
	blob_fd = memfd_create("blob", MFD_CLOEXEC);
	idx_fd = memfd_create("idx", MFD_CLOEXEC);
	if (blob_fd < 0 || idx_fd < 0 || write_full(blob_fd, data, size) < 0 ||
	    write_full(idx_fd, idx, idx_len) < 0)
		return 0;
	{
		struct li_info info;

		/* a zstd layer reads from the seekable copy, the others from the blob */
		r = li_open(idx_fd, blob_fd, &li);
		if (r < 0)
			abort();
		li_get_info(li, &info);
		if (info.compression == LI_ZSTD) {
			li_close(TAKE_PTR(li));
			if (li_open(idx_fd, zfd, &li) < 0)
				abort();
		}
	}
	read_back(li);
	return 0;
}
