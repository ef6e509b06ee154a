/* Fuzzes ref_parse: any input is either rejected with a reason or yields a canonical
 * name that parses again to itself. */
#include <stdint.h>
#include "common/error.h"
#include "fsd/image/ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(ref_freep) struct image_ref *r = NULL;
	_cleanup_(ref_freep) struct image_ref *again = NULL;
	_cleanup_free_ char *s = NULL;
	struct error err = {""};
	int k;

	if (size > 8192)
		return 0;
	s = strndup((const char *)data, size);
	if (!s)
		return 0;
	k = ref_parse(s, &r, &err);
	if (k < 0) {
		if (k == -EINVAL && !error_isset(&err))
			abort();
		return 0;
	}
	if (!r->name)
		abort();
	if (r->transport == REF_REGISTRY) {
		if (!r->domain || !r->path || (!r->tag && !r->digest))
			abort();
		if (ref_parse(r->name, &again, NULL) < 0 || strcmp(again->name, r->name) != 0)
			abort();
		(void)ref_registry_host(r);
		(void)ref_registry_is_loopback(r);
	}
	return 0;
}
