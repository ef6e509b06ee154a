/* SHA-256 (common/digest.c): the FIPS 180-4 and NIST example messages, every length around
 * the block and padding boundaries fed at once and in pieces of every size, compared with
 * the portable code ($IMGFS_SHA256_PORTABLE, in a child process) and with sha256sum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common/digest.h"

static void assert_digest(const char *msg, size_t len, const char *hex)
{
	char out[DIGEST_STR_LEN + 1];

	sha256_buf(msg, len, out);
	assert_string_equal(out + 7, hex);
}

static void test_known_answers(void **state)
{
	static char million[1000000];

	(void)state;
	assert_digest("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_digest("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
	              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	assert_digest(
	    "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnop"
	    "qklmnopqrlmnopqrsmnopqrstnopqrstu",
	    112, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
	memset(million, 'a', sizeof(million));
	assert_digest(million, sizeof(million),
	              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Lengths 0..300 of a pattern, each hashed at once and in pieces of 1..70 bytes. */
static void digests_of_lengths(char out[301][DIGEST_STR_LEN + 1])
{
	unsigned char data[300];

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 131 + 7);
	for (size_t len = 0; len <= 300; len++) {
		sha256_buf(data, len, out[len]);
		for (size_t piece = 1; piece <= 70; piece++) {
			_cleanup_(sha256_freep) struct sha256 *h = sha256_new();
			char again[DIGEST_STR_LEN + 1];

			assert_non_null(h);
			for (size_t off = 0; off < len; off += piece)
				sha256_update(h, data + off, len - off < piece ? len - off : piece);
			sha256_final(h, again);
			assert_string_equal(again, out[len]);
		}
	}
}

static void test_portable_and_accelerated_agree(void **state)
{
	static char here[301][DIGEST_STR_LEN + 1], portable[301][DIGEST_STR_LEN + 1];
	int fds[2], status;
	pid_t pid;
	size_t got = 0;

	(void)state;
	digests_of_lengths(here);
	/* The implementation is chosen at the first digest of a process: a child that starts
	 * with $IMGFS_SHA256_PORTABLE set runs the portable code. */
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static char out[301][DIGEST_STR_LEN + 1];

		setenv("IMGFS_SHA256_PORTABLE", "1", 1);
		digests_of_lengths(out);
		_exit(write(fds[1], out, sizeof(out)) == (ssize_t)sizeof(out) ? 0 : 1);
	}
	close(fds[1]);
	while (got < sizeof(portable)) {
		ssize_t n = read(fds[0], (char *)portable + got, sizeof(portable) - got);

		assert_true(n > 0);
		got += (size_t)n;
	}
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	for (size_t len = 0; len <= 300; len++)
		assert_string_equal(here[len], portable[len]);
}

static void test_against_sha256sum(void **state)
{
	static unsigned char data[3 << 20];
	char path[] = "/tmp/test_digest.XXXXXX", cmd[128], line[128], out[DIGEST_STR_LEN + 1];
	unsigned seed = 12345;
	FILE *f, *p;
	int fd;

	(void)state;
	for (size_t i = 0; i < sizeof(data); i++) {
		seed = seed * 1103515245 + 12345;
		data[i] = (unsigned char)(seed >> 16);
	}
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_int_equal(fwrite(data, 1, sizeof(data) - 17, f), sizeof(data) - 17);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "sha256sum %s", path);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(line, sizeof(line), p));
	pclose(p);
	unlink(path);
	sha256_buf(data, sizeof(data) - 17, out);
	assert_memory_equal(out + 7, line, DIGEST_HEX_LEN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_known_answers),
	    cmocka_unit_test(test_portable_and_accelerated_agree),
	    cmocka_unit_test(test_against_sha256sum),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
