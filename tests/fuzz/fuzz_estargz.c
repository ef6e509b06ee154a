/* Fuzzes what an eStargz layer hands a lazy mount before any file byte: the footer
 * (estargz_footer_parse), the TOC (estargz_build, given the input as the TOC's JSON in a
 * TOC member) and the chunked span table it makes (spans_parse, spans_check). The first
 * input byte picks the parser. Any input is refused with a reason, or yields an index that
 * opens and verifies and a span table that round-trips. */
#include <stdint.h>
#include <sys/mman.h>
#include "common/fileio.h"
#include "fsd/image/estargz.h"
#include "fsd/index/layerindex.h"
#include "tests/unit/fixture_estargz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LAYER "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

/* What estargz_build() made must be what readers accept. */
static void check_built(void *index, size_t index_len, struct spans *sp)
{
	struct li_index *idx = NULL;
	struct spans *back = NULL;
	void *enc = NULL;
	size_t enc_len = 0;
	int fd = memfd_create("index", MFD_CLOEXEC);

	if (fd < 0 || write_full(fd, index, index_len) < 0)
		abort();
	if (li_open_flags(fd, -1, LI_OPEN_VERIFY | LI_OPEN_NO_DATA, &idx) < 0)
		abort();
	for (size_t i = 0; i < li_entry_count(idx); i++) {
		struct li_entry e;

		if (li_entry_get(idx, i, &e) < 0)
			abort();
	}
	li_close(idx);
	close(fd);
	if (spans_encode(sp, &enc, &enc_len) < 0 ||
	    spans_parse(enc, enc_len, LAYER, sp->blob_size, &back, NULL) < 0 ||
	    back->n_spans != sp->n_spans || back->n_chunks != sp->n_chunks)
		abort();
	spans_free(back);
	free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct error err = {""};
	const uint8_t *buf = data + 1;
	size_t len = size - 1;
	int r;

	if (size < 1 || size > (1u << 20))
		return 0;
	switch (data[0] % 3) {
	case 0: {
		uint64_t off = 0, blob = 1000000;

		r = estargz_footer_parse(buf, len, blob, &off, &err);
		if (r < 0 ? !err.msg[0] : off >= blob - ESTARGZ_FOOTER_SIZE)
			abort();
		return 0;
	}
	case 1: {
		uint8_t *member = NULL;
		size_t member_len = 0, index_len = 0;
		void *index = NULL;
		struct spans *sp = NULL;
		uint64_t toc_off = 1u << 20;

		if (esgz_toc_member((const char *)buf, len, &member, &member_len) < 0)
			return 0;
		r = estargz_build(LAYER, toc_off + member_len + ESTARGZ_FOOTER_SIZE, toc_off,
		                  member, member_len, NULL, &index, &index_len, &sp, &err);
		free(member);
		if (r < 0) {
			if (r == -EBADMSG && !err.msg[0])
				abort();
			return 0;
		}
		check_built(index, index_len, sp);
		free(index);
		spans_free(sp);
		return 0;
	}
	default: {
		struct spans *sp = NULL;

		r = spans_parse(buf, len, NULL, UINT64_MAX, &sp, &err);
		if (r < 0) {
			if (r == -EBADMSG && !err.msg[0])
				abort();
			return 0;
		}
		/* Checking any span against bytes that are not its own is a refusal, not a
		 * crash (the fuzz input stands in for the blob). */
		for (uint64_t i = 0; i < sp->n_spans && i < 64; i++) {
			uint64_t off, n;

			spans_range(sp, i, &off, &n);
			if (n <= len)
				(void)spans_check(sp, i, buf, (size_t)n);
		}
		spans_free(sp);
		return 0;
	}
	}
}
