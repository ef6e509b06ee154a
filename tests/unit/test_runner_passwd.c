/* "-u user[:group]" resolution against sample /etc/passwd and /etc/group files, including
 * hostile ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runner/passwd.h"

static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n"
                             "# a comment\n"
                             "\n"
                             "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                             "broken:x:notanumber:1::/x:/bin/sh\n"
                             "short:x:5\n"
                             "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
                             "nohome:x:1001:1001\n"
                             "  spaced:x:1002:1002::/s:/bin/sh  \n"
                             "1003:x:1004:1004::/numeric-name:/bin/sh\n"
                             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin";
static const char group[] = "root:x:0:\n"
                            "wheel:x:10:root,alice\n"
                            "audio:x:29:alice\n"
                            "alice:x:1000:\n"
                            "bad:x:nan:alice\n"
                            "staff:x:50:bob,alice,carol\n"
                            "wheel2:x:10:alice\n"
                            "nogroup:x:65534:";

static struct exec_user resolve_ok(const char *spec, const char *p, const char *g)
{
	struct exec_user u;
	int r = passwd_resolve(spec, p, g, &u);

	if (r != 0)
		fail_msg("'%s': %s", spec ? spec : "(null)", strerror(-r));
	return u;
}

static void test_root_default(void **state)
{
	struct exec_user u;

	(void)state;
	u = resolve_ok(NULL, passwd, group);
	assert_int_equal(u.uid, 0);
	assert_int_equal(u.gid, 0);
	assert_string_equal(u.home, "/root");
	assert_int_equal(u.n_groups, 1);
	assert_int_equal(u.groups[0], 10);
	u = resolve_ok("root", passwd, group);
	assert_int_equal(u.n_groups, 1);
}

static void test_named_user(void **state)
{
	struct exec_user u;

	(void)state;
	u = resolve_ok("alice", passwd, group);
	assert_int_equal(u.uid, 1000);
	assert_int_equal(u.gid, 1000);
	assert_string_equal(u.home, "/home/alice");
	/* wheel, audio, staff; the duplicate gid 10 (wheel2) once; "bad" ignored */
	assert_int_equal(u.n_groups, 3);
	assert_int_equal(u.groups[0], 10);
	assert_int_equal(u.groups[1], 29);
	assert_int_equal(u.groups[2], 50);
	u = resolve_ok("1000", passwd, group);
	assert_int_equal(u.uid, 1000);
	assert_int_equal(u.n_groups, 3);
	u = resolve_ok("nohome", passwd, group);
	assert_int_equal(u.uid, 1001);
	assert_string_equal(u.home, "/");
	u = resolve_ok("spaced", passwd, group);
	assert_int_equal(u.uid, 1002);
	/* A user named like a number is found by name first. */
	u = resolve_ok("1003", passwd, group);
	assert_int_equal(u.uid, 1004);
	assert_string_equal(u.home, "/numeric-name");
}

static void test_explicit_group(void **state)
{
	struct exec_user u;

	(void)state;
	u = resolve_ok("alice:audio", passwd, group);
	assert_int_equal(u.uid, 1000);
	assert_int_equal(u.gid, 29);
	assert_int_equal(u.n_groups, 0); /* as runc: supplementary groups only without a group */
	u = resolve_ok("alice:50", passwd, group);
	assert_int_equal(u.gid, 50);
	u = resolve_ok("alice:4242", passwd, group);
	assert_int_equal(u.gid, 4242);
	u = resolve_ok("0:0", passwd, group);
	assert_int_equal(u.uid, 0);
	assert_int_equal(u.gid, 0);
}

static void test_numeric_unknown(void **state)
{
	struct exec_user u;

	(void)state;
	u = resolve_ok("4321", passwd, group);
	assert_int_equal(u.uid, 4321);
	assert_int_equal(u.gid, 0);
	assert_int_equal(u.n_groups, 0);
	assert_string_equal(u.home, "/");
	u = resolve_ok("4321:77", NULL, NULL);
	assert_int_equal(u.uid, 4321);
	assert_int_equal(u.gid, 77);
	u = resolve_ok(NULL, NULL, NULL);
	assert_int_equal(u.uid, 0);
}

static void test_errors(void **state)
{
	struct exec_user u = {.uid = 99};

	(void)state;
	assert_int_equal(passwd_resolve("mallory", passwd, group, &u), -ENOENT);
	assert_int_equal(passwd_resolve("alice:nosuch", passwd, group, &u), -ESRCH);
	assert_int_equal(passwd_resolve("root", NULL, NULL, &u), -ENOENT);
	assert_int_equal(passwd_resolve("broken", passwd, group, &u), -ENOENT);
	assert_int_equal(passwd_resolve(":0", passwd, group, &u), -EINVAL);
	assert_int_equal(passwd_resolve("alice:", passwd, group, &u), -EINVAL);
	assert_int_equal(passwd_resolve("a:b:c", passwd, group, &u), -EINVAL);
	assert_int_equal(passwd_resolve("4294967296", passwd, group, &u), -ERANGE);
	assert_int_equal(passwd_resolve("2147483648", passwd, group, &u), -ERANGE);
	assert_int_equal(passwd_resolve("0:99999999999", passwd, group, &u), -ERANGE);
	assert_int_equal(u.uid, 99);
}

static void test_hostile(void **state)
{
	size_t big = 3 * PASSWD_MAX_LINE;
	char *p = malloc(big + 200), *g = malloc(100000);
	struct exec_user u;
	size_t n = 0;

	(void)state;
	/* An over-long line is skipped, not truncated into a match. */
	memset(p, 'a', big);
	memcpy(p, "evil:x:0:0::/", 13);
	strcpy(p + big, "\nalice:x:7:7::/h:/bin/sh\nevil2:x:99999999999999:1::/:/bin/sh\n");
	assert_int_equal(passwd_resolve("evil", p, NULL, &u), -ENOENT);
	assert_int_equal(passwd_resolve("evil2", p, NULL, &u), -ENOENT);
	u = resolve_ok("alice", p, NULL);
	assert_int_equal(u.uid, 7);
	/* Thousands of groups: bounded. */
	for (int i = 0; i < 5000; i++)
		n += (size_t)sprintf(g + n, "g%d:x:%d:alice\n", i, i + 100);
	u = resolve_ok("alice", p, g);
	assert_int_equal(u.n_groups, PASSWD_MAX_GROUPS);
	/* Field separators only, missing fields, NUL-free binary junk. */
	u = resolve_ok("4", ":::::::::\n::\n\xff\xfe:x:1\n", "::::\n:\n");
	assert_int_equal(u.uid, 4);
	free(p);
	free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_root_default),   cmocka_unit_test(test_named_user),
	    cmocka_unit_test(test_explicit_group), cmocka_unit_test(test_numeric_unknown),
	    cmocka_unit_test(test_errors),         cmocka_unit_test(test_hostile),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
