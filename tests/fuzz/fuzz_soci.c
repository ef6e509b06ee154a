/* Fuzzes what a SOCI index hands a lazy mount before any file byte: the zTOC flatbuffer
 * (soci_build; the 8 bytes after the selector are the layer's size) and the SOCI index
 * manifest (soci_index_parse). The first input byte picks the parser. Any input is refused
 * with a reason, or yields an index that opens and verifies and a span table that
 * round-trips. */
#include <stdint.h>
#include <sys/mman.h>
#include "common/fileio.h"
#include "fsd/image/soci.h"
#include "fsd/index/layerindex.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LAYER "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct error err = {""};
	int r;

	if (size < 1 || size > (4u << 20))
		return 0;
	if (data[0] % 2 == 0) {
		struct li_index *idx = NULL;
		struct spans *sp = NULL, *back = NULL;
		void *index = NULL, *enc = NULL;
		size_t index_len = 0, enc_len = 0;
		uint64_t blob_size;
		int fd;

		if (size < 9)
			return 0;
		memcpy(&blob_size, data + 1, 8);
		r = soci_build(LAYER, blob_size, data + 9, size - 9, &index, &index_len, &sp, &err);
		if (r < 0) {
			if (r == -EBADMSG && !err.msg[0])
				abort();
			return 0;
		}
		fd = memfd_create("index", MFD_CLOEXEC);
		if (fd < 0 || write_full(fd, index, index_len) < 0 ||
		    li_open_flags(fd, -1, LI_OPEN_VERIFY | LI_OPEN_NO_DATA, &idx) < 0)
			abort();
		li_close(idx);
		close(fd);
		if (spans_encode(sp, &enc, &enc_len) < 0 ||
		    spans_parse(enc, enc_len, LAYER, blob_size, &back, NULL) < 0 ||
		    back->n_spans != sp->n_spans)
			abort();
		spans_free(back);
		spans_free(sp);
		free(enc);
		free(index);
		return 0;
	} else {
		struct soci_ztoc *z = NULL;
		size_t n = 0;

		r = soci_index_parse((const char *)data + 1, size - 1, LAYER, &z, &n, &err);
		if (r < 0) {
			if (r == -EBADMSG && !err.msg[0])
				abort();
			return 0;
		}
		for (size_t i = 0; i < n; i++)
			if (!digest_valid(z[i].digest) || !digest_valid(z[i].layer) ||
			    z[i].size > SOCI_MAX_ZTOC)
				abort();
		free(z);
		return 0;
	}
}
