/* Fuzzes als_ref_decode, the parser of the directory names podman looks up in a layer
 * store: any input is rejected, or decodes to a printable reference that encodes back to
 * the very same name. */
#include <stdint.h>
#include "fsd/image/als.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_free_ char *s = NULL, *ref = NULL, *again = NULL;

	if (size > 1024)
		return 0;
	s = strndup((const char *)data, size);
	if (!s)
		return 0;
	if (als_ref_decode(s, &ref) < 0)
		return 0;
	if (!ref[0] || strlen(ref) > ALS_REF_MAX)
		abort();
	for (const char *p = ref; *p; p++)
		if ((uint8_t)*p <= ' ' || (uint8_t)*p >= 127)
			abort();
	if (als_ref_encode(ref, &again) < 0 || strcmp(again, s) != 0)
		abort();
	return 0;
}
