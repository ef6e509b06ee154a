/* Linked into every unit test binary: CMOCKA_TEST_FILTER=GLOB runs only the tests whose
 * name matches (cmocka 1.1 has the call but reads no variable for it); `make test T=NAME
 * F=GLOB` sets it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

__attribute__((constructor)) static void filter_from_environment(void)
{
	const char *glob = getenv("CMOCKA_TEST_FILTER");

	if (glob && *glob)
		cmocka_set_test_filter(glob);
}
