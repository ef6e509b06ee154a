/* Fuzzes what lazy pull reads from a registry before any layer byte: the layer index
 * artifact (indexart_parse), the referrers index (indexart_referrers, and the merge
 * indexart_referrers_add does on it) and the span table (spans_parse). The first input
 * byte picks the parser. Any input is refused with a reason or yields values within the
 * bounds the parsers promise. */
#include <stdint.h>
#include "fsd/image/indexart.h"
#include "fsd/image/spans.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SUBJECT "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct error err = {""};
	const char *buf = (const char *)data + 1;
	size_t len = size - 1;
	int r;

	if (size < 1 || size > (1u << 20))
		return 0;
	switch (data[0] % 3) {
	case 0: {
		struct indexart *a = NULL;

		r = indexart_parse(buf, len, SUBJECT, &a, &err);
		if (r < 0) {
			if (r == -EBADMSG && !err.msg[0])
				abort();
			return 0;
		}
		for (size_t i = 0; i < a->n_layers; i++)
			if (!digest_valid(a->layers[i].index.digest) ||
			    !digest_valid(a->layers[i].spans.digest) ||
			    a->layers[i].index.size > INDEXART_MAX_INDEX_SIZE ||
			    indexart_find(a, a->layers[i].layer) == NULL)
				abort();
		indexart_free(a);
		return 0;
	}
	case 1: {
		char(*found)[DIGEST_STR_LEN + 1] = NULL, *merged = NULL;
		size_t n = 0, mlen = 0;
		bool changed;

		r = indexart_referrers(buf, len, &found, &n, &err);
		if (r < 0)
			return 0;
		for (size_t i = 0; i < n; i++)
			if (!digest_valid(found[i]))
				abort();
		free(found);
		r = indexart_referrers_add(buf, len, SUBJECT, 10, &merged, &mlen, &changed, &err);
		if (r == 0 && changed) {
			/* What we push must parse, with our entry in it. */
			found = NULL;
			if (indexart_referrers(merged, mlen, &found, &n, NULL) < 0 || n == 0)
				abort();
			free(found);
		}
		free(merged);
		return 0;
	}
	default: {
		struct spans *sp = NULL;

		r = spans_parse(buf, len, NULL, UINT64_MAX, &sp, &err);
		if (r < 0)
			return 0;
		if (sp->n_spans * sp->span_size < sp->blob_size ||
		    (sp->n_spans && (sp->n_spans - 1) * sp->span_size >= sp->blob_size))
			abort();
		spans_free(sp);
		return 0;
	}
	}
}
