/* The Additional Layer Store protocol's names and info file (fsd/image/als.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include "fsd/image/als.h"

static void test_ref_round_trip(void **state)
{
	static const char *const refs[] = {"docker.io/library/alpine:latest",
	                                   "127.0.0.1:5000/ml:1",
	                                   "a",
	                                   "ab",
	                                   "abc",
	                                   "host/n@sha256:0123456789abcdef0123456789abcdef"
	                                   "0123456789abcdef0123456789abcdef"};

	(void)state;
	for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) {
		_cleanup_free_ char *b = NULL, *back = NULL;

		assert_int_equal(als_ref_encode(refs[i], &b), 0);
		assert_int_equal(als_ref_decode(b, &back), 0);
		assert_string_equal(back, refs[i]);
	}
}

static void test_ref_known_spellings(void **state)
{
	_cleanup_free_ char *b = NULL, *r = NULL;

	(void)state;
	/* What Go's base64.StdEncoding gives (podman's own spelling). */
	assert_int_equal(als_ref_encode("docker.io/library/alpine:latest", &b), 0);
	assert_string_equal(b, "ZG9ja2VyLmlvL2xpYnJhcnkvYWxwaW5lOmxhdGVzdA==");
	assert_int_equal(als_ref_decode("MTI3LjAuMC4xOjUwMDAvbWw6MQ==", &r), 0);
	assert_string_equal(r, "127.0.0.1:5000/ml:1");
}

static void test_ref_rejects(void **state)
{
	static const char *const bad[] = {
	    "",
	    "YQ",
	    "YQ=",
	    "Y===",
	    "YR==", /* unused bits set */
	    "YQ==YQ==",
	    "Y=Q=",
	    "a b=",
	    "ZG9j-2Vy",
	    "AA==", /* a NUL byte */
	    "IA==", /* a space */
	    "ZG9ja2VyLmlvL2xpYnJhcnkvYWxwaW5lOmxhdGVzdA",
	    ".",
	    "..",
	};
	char long_name[400];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *r = NULL;

		if (als_ref_decode(bad[i], &r) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
	}
	/* longer than a reference can be in a 255-byte name */
	memset(long_name, 'Q', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	{
		char *r = NULL;

		assert_int_equal(als_ref_decode(long_name, &r), -EINVAL);
	}
}

static void test_entries(void **state)
{
	(void)state;
	assert_int_equal(als_entry_of("diff"), ALS_DIFF);
	assert_int_equal(als_entry_of("info"), ALS_INFO);
	assert_int_equal(als_entry_of("blob"), ALS_BLOB);
	assert_int_equal(als_entry_of("use"), ALS_USE);
	assert_int_equal(als_entry_of("diff/"), ALS_NONE);
	assert_int_equal(als_entry_of(""), ALS_NONE);
}

static void test_info(void **state)
{
	static const char c[] =
	    "sha256:1111111111111111111111111111111111111111111111111111111111111111";
	static const char d[] =
	    "sha256:2222222222222222222222222222222222222222222222222222222222222222";
	_cleanup_free_ char *s = NULL;
	char *bad = NULL;
	size_t len;

	(void)state;
	assert_int_equal(
	    als_info_format(&(struct als_info){c, 1234, d, 5678, ALS_COMPRESSION_ZSTD}, &s, &len),
	    0);
	assert_string_equal(s,
	                    "{\"compressed-diff-digest\":\"sha256:1111111111111111111111111111111"
	                    "111111111111111111111111111111111\",\"compressed-size\":1234,"
	                    "\"diff-digest\":\"sha256:22222222222222222222222222222222222222222"
	                    "22222222222222222222222\",\"diff-size\":5678,\"compression\":4}\n");
	assert_int_equal(len, strlen(s));
	assert_int_equal(
	    als_info_format(&(struct als_info){c, 1, "sha256:x", 1, ALS_COMPRESSION_GZIP}, &bad,
	                    &len),
	    -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ref_round_trip), cmocka_unit_test(test_ref_known_spellings),
	    cmocka_unit_test(test_ref_rejects),    cmocka_unit_test(test_entries),
	    cmocka_unit_test(test_info),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
