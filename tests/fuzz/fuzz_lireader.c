/* Fuzzes the layer index reader: li_open() on a hostile index file and hostile layer data,
 * then every reader call (li_entry_get, li_xattr_get, li_read, li_seek, li_read_stream).
 * li_open() either rejects the index (-EBADMSG) or yields one whose every call returns a
 * result within bounds or -errno, without reading outside the map or the buffers.
 *
 * The first byte picks the mode. Bits 0-1: the fixture layer to start from (gzip with a
 * 16 KiB span, plain tar, zstd, gzip with a 4 KiB span). Bit 2, raw: the rest is
 * "u32 index length, index bytes, data bytes", used as is. Otherwise the rest is a list of
 * patches (u32 offset, u8 length, that many bytes; length 0 truncates there) applied to the
 * fixture's index followed by its data. Bit 3, repair: the index's file_size and crc32 are
 * recomputed after the patches, so that the checks behind the checksum are reached.
 * Bits 4-7: the size of each read. Without patches, every file must read back exactly. */
#include <stdint.h>
#include <zlib.h>
#include "fsd/index/layerindex_format.h"
#include "tests/fuzz/layerfixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define READ_BUDGET (1u << 20)
#define MAX_WALK 4096u

struct base {
	struct fx_buf index, data;
};

static const struct {
	enum li_compression comp;
	uint32_t span;
} base_kinds[4] = {{LI_GZIP, 16384}, {LI_TAR, 4096}, {LI_ZSTD, 4096}, {LI_GZIP, 4096}};

static const struct base *get_base(unsigned k)
{
	static struct base bases[4];
	static bool done[4];
	struct fx_buf tar = {0}, layer = {0};

	if (done[k])
		return &bases[k];
	if (fx_layer_tar(0, &tar) < 0 || fx_compress(base_kinds[k].comp, &tar, &layer) < 0 ||
	    fx_index(base_kinds[k].comp, &layer, base_kinds[k].span, &bases[k].index,
	             &bases[k].data) < 0)
		abort(); /* the fixture itself must index */
	fx_buf_free(&tar);
	fx_buf_free(&layer);
	done[k] = true;
	return &bases[k];
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Applies the patches in [p, end) to the index and data, seen as one concatenated buffer. */
static void apply_patches(const uint8_t *p, const uint8_t *end, struct fx_buf *idx,
                          struct fx_buf *dat)
{
	while (end - p >= 5) {
		size_t total = idx->len + dat->len, off, len = p[4];

		if (total == 0)
			return;
		off = le32(p) % total;
		p += 5;
		len = MIN(len, (size_t)(end - p));
		if (len == 0 && p[-1] == 0) {
			if (off < idx->len)
				idx->len = off;
			else
				dat->len = off - idx->len;
			continue;
		}
		for (size_t k = 0; k < len; k++, off++) {
			if (off < idx->len)
				idx->data[off] = p[k];
			else if (off - idx->len < dat->len)
				dat->data[off - idx->len] = p[k];
		}
		p += len;
	}
}

static void repair(struct fx_buf *idx)
{
	struct lix_header h;
	uint32_t crc;

	if (idx->len < sizeof(h))
		return;
	memcpy(&h, idx->data, sizeof(h));
	h.file_size = idx->len;
	h.crc = 0;
	crc = (uint32_t)crc32_z(0, (const void *)&h, sizeof(h));
	h.crc = (uint32_t)crc32_z(crc, idx->data + sizeof(h), idx->len - sizeof(h));
	memcpy(idx->data, &h, sizeof(h));
}

static void check_entry(struct li_index *li, size_t i, bool exact, size_t chunk, uint64_t *budget)
{
	static uint8_t buf[65536];
	const struct fx_file *f = NULL;
	struct li_entry e;
	ssize_t n;
	int r;

	r = li_entry_get(li, i, &e);
	if (r < 0) {
		if (r != -EBADMSG || exact || li_read(li, i, buf, 1, 0) >= 0)
			abort();
		return;
	}
	if (strlen(e.path) > (1u << 20) || (e.link && strlen(e.link) > (1u << 20)))
		abort();
	for (uint32_t k = 0; k < e.n_xattrs && k < 64; k++) {
		const char *name;
		const void *value;
		size_t len;
		uint8_t sum = 0;

		if (li_xattr_get(li, i, k, &name, &value, &len) < 0)
			continue;
		for (size_t j = 0; j < len; j++)
			sum ^= ((const uint8_t *)value)[j];
		(void)strlen(name);
		buf[0] = sum;
	}
	if (e.type != LI_REG) {
		if (e.size != 0 || li_read(li, i, buf, sizeof(buf), 0) >= 0)
			abort();
		return;
	}
	if (exact) {
		f = fx_expect(0, e.path);
		if (!f || f->size != e.size)
			abort();
	}
	for (uint64_t off = 0; off<e.size && * budget> 0;) {
		n = li_read(li, i, buf, chunk, off);
		if (n < 0) {
			if (exact)
				abort();
			break;
		}
		if (n == 0 || (size_t)n > chunk || (uint64_t)n > e.size - off)
			abort();
		for (ssize_t k = 0; f && k < n; k++)
			if (buf[k] != fx_byte_at(f, off + (uint64_t)k))
				abort();
		off += (uint64_t)n;
		*budget -= MIN(*budget, (uint64_t)n);
	}
	if (li_read(li, i, buf, chunk, e.size) != 0)
		abort();
	for (int w = 0; w < 2; w++) {
		const uint64_t offs[] = {0, e.size / 2, e.size ? e.size - 1 : 0, e.size};

		for (size_t k = 0; k < ARRAY_SIZE(offs); k++) {
			int whence = w ? SEEK_HOLE : SEEK_DATA;
			int64_t s = li_seek(li, i, offs[k], whence);

			if (offs[k] >= e.size && s != -ENXIO)
				abort();
			if (exact && s >= 0 && ((uint64_t)s < offs[k] || (uint64_t)s > e.size))
				abort();
		}
	}
}

static void walk(struct li_index *li, bool exact, size_t chunk)
{
	static uint8_t buf[4096];
	uint64_t budget = READ_BUDGET;
	struct li_info info;
	size_t n = li_entry_count(li);

	li_get_info(li, &info);
	if (info.n_entries != n || strlen(info.digest) >= 80)
		abort();
	for (size_t i = 0; i < n && i < MAX_WALK; i++)
		check_entry(li, i, exact, chunk, &budget);
	if (li_read(li, n, buf, sizeof(buf), 0) != -ENOENT)
		abort();
	{
		const uint64_t offs[] = {0, info.total_out / 3,
		                         info.total_out ? info.total_out - 1 : 0, info.total_out,
		                         UINT64_MAX};

		for (size_t k = 0; k < ARRAY_SIZE(offs); k++) {
			ssize_t r = li_read_stream(li, buf, sizeof(buf), offs[k]);

			if (r > (ssize_t)sizeof(buf) || (offs[k] >= info.total_out && r != 0) ||
			    (exact && r < 0))
				abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(li_closep) struct li_index *li = NULL;
	_cleanup_close_ int idx_fd = -1, data_fd = -1;
	struct fx_buf idx = {0}, dat = {0};
	const struct base *b;
	bool exact = false;
	uint8_t mode;
	size_t chunk;
	int r;

	if (size < 1 || size > (1u << 20))
		return 0;
	mode = data[0];
	chunk = 509 + (size_t)(mode >> 4) * 4099;
	data++;
	size--;
	if (mode & 4) {
		uint32_t ilen;

		if (size < 4)
			return 0;
		ilen = MIN(le32(data), (uint32_t)(size - 4));
		if (fx_buf_append(&idx, data + 4, ilen) < 0 ||
		    fx_buf_append(&dat, data + 4 + ilen, size - 4 - ilen) < 0)
			goto out;
	} else {
		b = get_base(mode & 3);
		if (fx_buf_append(&idx, b->index.data, b->index.len) < 0 ||
		    fx_buf_append(&dat, b->data.data, b->data.len) < 0)
			goto out;
		apply_patches(data, data + size, &idx, &dat);
		exact = size < 5;
	}
	if (mode & 8)
		repair(&idx);
	idx_fd = fx_memfd("index", idx.data, idx.len);
	data_fd = fx_memfd("data", dat.data, dat.len);
	if (idx_fd < 0 || data_fd < 0)
		goto out;
	r = li_open(idx_fd, data_fd, &li);
	if (r < 0) {
		if (exact || (r != -EBADMSG && r != -ENOMEM))
			abort();
		goto out;
	}
	walk(li, exact, chunk);
out:
	fx_buf_free(&idx);
	fx_buf_free(&dat);
	return 0;
}
