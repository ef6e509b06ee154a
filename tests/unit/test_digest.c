/* SHA-256 digests (common/digest.c): the portable code for small buffers, libcrypto for the
 * rest, and the two agree. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include "common/digest.h"

/* FIPS 180-2 appendix B and the empty message. */
static void test_vectors(void **state)
{
	static const struct {
		const char *in, *out;
	} v[] = {
	    {"", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	    {"abc", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
	     "sha256:248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
	};
	char got[DIGEST_STR_LEN + 1];
	(void)state;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		sha256_buf(v[i].in, strlen(v[i].in), got);
		assert_string_equal(got, v[i].out);
	}
}

/* A million 'a', hashed in one piece (libcrypto) and fed in odd pieces. */
static void test_million(void **state)
{
	const char *want =
	    "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
	char *buf = malloc(1000000), got[DIGEST_STR_LEN + 1];
	struct sha256 *h = sha256_new();
	(void)state;

	assert_non_null(buf);
	assert_non_null(h);
	memset(buf, 'a', 1000000);
	sha256_buf(buf, 1000000, got);
	assert_string_equal(got, want);
	for (size_t off = 0, n = 1; off < 1000000; off += n, n = n * 3 % 997 + 1)
		sha256_update(h, buf + off, MIN(n, 1000000 - off));
	sha256_final(h, got);
	sha256_free(h);
	assert_string_equal(got, want);
	free(buf);
}

/* Every length around the block and padding boundaries, and some on either side of the
 * size where libcrypto takes over, against libcrypto itself. */
static void test_against_libcrypto(void **state)
{
	size_t max = 70000;
	uint8_t *buf = malloc(max), got[32], want[32];
	unsigned int n = 0;
	uint32_t x = 12345;
	(void)state;

	assert_non_null(buf);
	for (size_t i = 0; i < max; i++) {
		x = x * 1103515245 + 12345;
		buf[i] = (uint8_t)(x >> 16);
	}
	for (size_t len = 0; len < max; len = len < 300 ? len + 1 : len * 5 / 4 + 7) {
		sha256_raw(buf, len, got);
		assert_int_equal(
		    EVP_Digest(buf, len, want, &n, EVP_get_digestbyname("SHA256"), NULL), 1);
		assert_memory_equal(got, want, 32);
	}
	for (size_t len = 32 * 1024 - 70; len < 32 * 1024 + 70; len++) {
		sha256_raw(buf, len, got);
		assert_int_equal(
		    EVP_Digest(buf, len, want, &n, EVP_get_digestbyname("SHA256"), NULL), 1);
		assert_memory_equal(got, want, 32);
	}
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vectors),
	    cmocka_unit_test(test_million),
	    cmocka_unit_test(test_against_libcrypto),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
