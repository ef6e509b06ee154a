/* Option values of the runner: sizes, CPU counts, counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "runner/runner.h"

static void test_sizes(void **state)
{
	static const struct {
		const char *in;
		int r;
		uint64_t out;
	} t[] = {
	    {"4096", 0, 4096},
	    {"32m", 0, 32ull << 20},
	    {"32M", 0, 32ull << 20},
	    {"32mb", 0, 32ull << 20},
	    {"32MiB", 0, 32ull << 20},
	    {"1g", 0, 1ull << 30},
	    {"1.5g", 0, 3ull << 29},
	    {"2k", 0, 2048},
	    {"10b", 0, 10},
	    {"1t", 0, 1ull << 40},
	    {"0", -EINVAL, 0},
	    {"0m", -EINVAL, 0},
	    {"", -EINVAL, 0},
	    {"m", -EINVAL, 0},
	    {"-1m", -EINVAL, 0},
	    {"12x", -EINVAL, 0},
	    {"12 m", -EINVAL, 0},
	    {"12mm", -EINVAL, 0},
	    {"1.2.3m", -EINVAL, 0},
	    {"99999999999999999999", -EINVAL, 0},
	    {"9000000p", -ERANGE, 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		uint64_t v = 777;
		int r = runner_parse_size(t[i].in, &v);

		if (r != t[i].r || (r == 0 && v != t[i].out))
			fail_msg("'%s': got %d/%llu, want %d/%llu", t[i].in, r,
			         (unsigned long long)v, t[i].r, (unsigned long long)t[i].out);
		if (r < 0)
			assert_int_equal(v, 777);
	}
	assert_int_equal(runner_parse_size(NULL, &(uint64_t){0}), -EINVAL);
}

static void test_cpus(void **state)
{
	uint64_t v = 0;

	(void)state;
	assert_int_equal(runner_parse_cpus("1", &v), 0);
	assert_int_equal(v, 1000);
	assert_int_equal(runner_parse_cpus("0.5", &v), 0);
	assert_int_equal(v, 500);
	assert_int_equal(runner_parse_cpus("1.25", &v), 0);
	assert_int_equal(v, 1250);
	assert_int_equal(runner_parse_cpus(".01", &v), 0);
	assert_int_equal(v, 10);
	assert_int_equal(runner_parse_cpus("0", &v), -EINVAL);
	assert_int_equal(runner_parse_cpus("0.0001", &v), -EINVAL);
	assert_int_equal(runner_parse_cpus("1.", &v), 0);
	assert_int_equal(runner_parse_cpus("abc", &v), -EINVAL);
	assert_int_equal(runner_parse_cpus("-1", &v), -EINVAL);
	assert_int_equal(runner_parse_cpus("1e3", &v), -EINVAL);
	assert_int_equal(runner_parse_cpus("", &v), -EINVAL);
	assert_int_equal(runner_parse_cpus("100000000", &v), -ERANGE);
}

static void test_uint(void **state)
{
	uint64_t v = 5;

	(void)state;
	assert_int_equal(runner_parse_uint("20", 100, &v), 0);
	assert_int_equal(v, 20);
	assert_int_equal(runner_parse_uint("101", 100, &v), -ERANGE);
	assert_int_equal(runner_parse_uint("0", 100, &v), -EINVAL);
	assert_int_equal(runner_parse_uint("-1", 100, &v), -EINVAL);
	assert_int_equal(runner_parse_uint("1x", 100, &v), -EINVAL);
	assert_int_equal(runner_parse_uint("", 100, &v), -EINVAL);
	assert_int_equal(runner_parse_uint("99999999999999999999999", UINT64_MAX, &v), -ERANGE);
	assert_int_equal(v, 20);
}

static void test_device(void **state)
{
	const unsigned rwm = RUNNER_DEV_READ | RUNNER_DEV_WRITE | RUNNER_DEV_MKNOD;
	static const struct {
		const char *in;
		int r;
		const char *host, *container;
		unsigned access;
	} t[] = {
	    {"/dev/loop-control", 0, "/dev/loop-control", "/dev/loop-control", 7},
	    {"/dev/sda:/dev/xvda", 0, "/dev/sda", "/dev/xvda", 7},
	    {"/dev/sda:r", 0, "/dev/sda", "/dev/sda", RUNNER_DEV_READ},
	    {"/dev/sda:rw", 0, "/dev/sda", "/dev/sda", RUNNER_DEV_READ | RUNNER_DEV_WRITE},
	    {"/dev/sda:/disk:mr", 0, "/dev/sda", "/disk", RUNNER_DEV_READ | RUNNER_DEV_MKNOD},
	    {"/dev/sda:/disk:rwm", 0, "/dev/sda", "/disk", 7},
	    {"/dev/sda:/disk:rr", -EINVAL, NULL, NULL, 0},
	    {"/dev/sda:/disk:x", -EINVAL, NULL, NULL, 0},
	    {"/dev/sda:/disk:", -EINVAL, NULL, NULL, 0},
	    {"/dev/sda:/disk:r:w", -EINVAL, NULL, NULL, 0},
	    {"/dev/sda:disk", -EINVAL, NULL, NULL, 0},
	    {"dev/sda", -EINVAL, NULL, NULL, 0},
	    {"", -EINVAL, NULL, NULL, 0},
	    {":/disk", -EINVAL, NULL, NULL, 0},
	};

	(void)state;
	assert_int_equal(rwm, 7);
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char buf[64];
		struct runner_device d = {.host = "untouched"};

		snprintf(buf, sizeof(buf), "%s", t[i].in);
		assert_int_equal(runner_parse_device(buf, &d), t[i].r);
		if (t[i].r < 0) {
			assert_string_equal(d.host, "untouched");
			continue;
		}
		assert_string_equal(d.host, t[i].host);
		assert_string_equal(d.container, t[i].container);
		assert_int_equal(d.access, t[i].access);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sizes),
	    cmocka_unit_test(test_cpus),
	    cmocka_unit_test(test_uint),
	    cmocka_unit_test(test_device),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
