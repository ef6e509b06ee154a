/* Fuzzes www_auth_parse: any header is parsed or rejected without leaks or overreads, and
 * a parsed challenge always has a canonical scheme (and a realm when it is Bearer). */
#include <stdint.h>
#include "fsd/image/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_free_ char *s = NULL;
	struct www_auth a = {0};
	int r;

	if (size > 32768)
		return 0;
	s = strndup((const char *)data, size);
	if (!s)
		return 0;
	r = www_auth_parse(s, &a);
	if (r == 0) {
		if (!a.scheme || (!streq(a.scheme, "Bearer") && !streq(a.scheme, "Basic")))
			abort();
		if (streq(a.scheme, "Bearer") && (!a.realm || !*a.realm))
			abort();
		www_auth_clear(&a);
	} else if (r != -EINVAL && r != -EOPNOTSUPP && r != -ENOMEM) {
		abort();
	}
	return 0;
}
