/* Credentials files (lookup order, formats, atomic store) and WWW-Authenticate parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>
#include "common/error.h"
#include "common/fileio.h"
#include "fsd/image/auth.h"

static char tmpdir[64];

static int setup(void **state)
{
	(void)state;
	strcpy(tmpdir, "/tmp/test_auth.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	unsetenv("REGISTRY_AUTH_FILE");
	unsetenv("XDG_RUNTIME_DIR");
	unsetenv("DOCKER_CONFIG");
	setenv("HOME", tmpdir, 1);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return rm_rf_at(AT_FDCWD, tmpdir);
}

/* Writes content to tmpdir/rel, creating parent directories. */
static void put(const char *rel, const char *content)
{
	_cleanup_free_ char *p = path_join(tmpdir, rel);
	char *slash;

	assert_non_null(p);
	slash = strrchr(p, '/');
	*slash = '\0';
	assert_int_equal(mkdir_p_at(AT_FDCWD, p, 0700), 0);
	*slash = '/';
	assert_int_equal(write_file_atomic(AT_FDCWD, p, content, strlen(content), 0600), 0);
}

static char *tpath(const char *rel)
{
	char *p = path_join(tmpdir, rel);

	assert_non_null(p);
	return p;
}

static void expect_creds(const char *domain, int want, const char *user, const char *password)
{
	char *u = (char *)0x1, *pw = (char *)0x1;
	struct error err = {""};
	int r = auth_find(domain, &u, &pw, &err);

	if (r != want)
		fail_msg("auth_find('%s') = %d, expected %d", domain, r, want);
	/* A broken file is named in the reason. */
	if (r < 0 && !strstr(err.msg, "credentials file '"))
		fail_msg("auth_find('%s'): reason '%s'", domain, err.msg);
	if (want == 1) {
		assert_string_equal(u, user);
		assert_string_equal(pw, password);
		free(u);
		free(pw);
	} else {
		assert_ptr_equal(u, (char *)0x1);
		assert_ptr_equal(pw, (char *)0x1);
	}
}

/* base64("alice:secret") and friends */
#define ALICE "YWxpY2U6c2VjcmV0"
#define BOB "Ym9iOmh1bnRlcjI="
#define CAROL "Y2Fyb2w6YTpiOmM=" /* carol:a:b:c */
#define DAVE "ZGF2ZTpwdw=="      /* dave:pw */

static void test_lookup_none(void **state)
{
	(void)state;
	expect_creds("quay.io", 0, NULL, NULL);
}

static void test_lookup_order(void **state)
{
	_cleanup_free_ char *regfile = tpath("reg-auth.json");
	_cleanup_free_ char *runtime = tpath("run");
	_cleanup_free_ char *dockercfg = tpath("dockercfg");

	(void)state;
	put(".docker/config.json", "{\"auths\":{\"a.io\":{\"auth\":\"" DAVE "\"},"
	                           "\"b.io\":{\"auth\":\"" DAVE "\"},"
	                           "\"c.io\":{\"auth\":\"" DAVE "\"}}}");
	expect_creds("c.io", 1, "dave", "pw"); /* ~/.docker/config.json */

	put("dockercfg/config.json", "{\"auths\":{\"c.io\":{\"auth\":\"" CAROL "\"}}}");
	setenv("DOCKER_CONFIG", dockercfg, 1);
	expect_creds("c.io", 1, "carol", "a:b:c"); /* $DOCKER_CONFIG replaces ~/.docker */
	expect_creds("a.io", 0, NULL, NULL);

	put("run/containers/auth.json", "{\"auths\":{\"b.io\":{\"auth\":\"" BOB "\"},"
	                                "\"c.io\":{\"auth\":\"" BOB "\"}}}");
	setenv("XDG_RUNTIME_DIR", runtime, 1);
	expect_creds("b.io", 1, "bob", "hunter2");
	expect_creds("c.io", 1, "bob", "hunter2");

	put("reg-auth.json", "{\"auths\":{\"c.io\":{\"auth\":\"" ALICE "\"}}}");
	setenv("REGISTRY_AUTH_FILE", regfile, 1);
	expect_creds("c.io", 1, "alice", "secret");
	expect_creds("b.io", 1, "bob", "hunter2"); /* falls through to the next file */
	expect_creds("x.io", 0, NULL, NULL);
}

static void test_lookup_keys(void **state)
{
	(void)state;
	put(".docker/config.json", "{\"credsStore\":\"desktop\",\"auths\":{"
	                           "\"https://index.docker.io/v1/\":{\"auth\":\"" ALICE "\"},"
	                           "\"http://127.0.0.1:5000/v2/\":{\"auth\":\"" BOB "\"},"
	                           "\"localhost:5000\":{},"
	                           "\"https://quay.io\":{\"auth\":\"" BOB "\"},"
	                           "\"quay.io\":{\"auth\":\"" DAVE "\"}}}");
	expect_creds("docker.io", 1, "alice", "secret");
	expect_creds("127.0.0.1:5000", 1, "bob", "hunter2");
	expect_creds("127.0.0.1", 0, NULL, NULL);
	expect_creds("localhost:5000", 0, NULL, NULL); /* no "auth": a credential helper's */
	expect_creds("quay.io", 1, "dave", "pw");      /* the exact key wins */
}

static void test_lookup_broken(void **state)
{
	static const char *const broken[] = {
	    "{\"auths\":{\"a.io\":{\"auth\":\"!!!\"}}}",                 /* not base64 */
	    "{\"auths\":{\"a.io\":{\"auth\":\"bm9jb2xvbg==\"}}}",        /* "nocolon" */
	    "{\"auths\":{\"a.io\":{\"auth\":\"OnB3\"}}}",                /* ":pw", no user */
	    "{\"auths\":{\"a.io\":{\"auth\":\"YQBiOmM=\"}}}",            /* NUL inside */
	    "{\"auths\":{\"a.io\":{\"auth\":\"YWxpY2U6c2VjcmV0===\"}}}", /* too much padding */
	    "{\"auths\":[]}",
	    "{\"auths\":{",
	    "[1]",
	    "",
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(broken); i++) {
		put(".docker/config.json", broken[i]);
		expect_creds("a.io", -EINVAL, NULL, NULL);
	}
}

static json_t *load(const char *rel)
{
	_cleanup_free_ char *p = tpath(rel);
	json_error_t e;
	json_t *j = json_load_file(p, 0, &e);

	if (!j)
		fail_msg("%s: %s", p, e.text);
	return j;
}

static void test_store(void **state)
{
	_cleanup_free_ char *cfg = tpath(".docker/config.json");
	struct error err = {""};
	struct stat st;
	json_t *j;

	(void)state;
	/* A new file, directory created, mode 0600, docker.io under Docker's key. */
	assert_int_equal(auth_store("docker.io", "alice", "secret", NULL), 0);
	assert_int_equal(stat(cfg, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	j = load(".docker/config.json");
	assert_string_equal(
	    json_string_value(json_object_get(
	        json_object_get(json_object_get(j, "auths"), "https://index.docker.io/v1/"),
	        "auth")),
	    ALICE);
	json_decref(j);
	expect_creds("docker.io", 1, "alice", "secret");

	/* Other keys and other fields survive; a 0644 file becomes 0600. */
	put(".docker/config.json", "{\"credsStore\":\"pass\",\"proxies\":{\"default\":{}},"
	                           "\"auths\":{\"a.io\":{\"auth\":\"" DAVE "\"},"
	                           "\"b.io\":{\"auth\":\"" DAVE "\",\"email\":\"x@y\"}}}");
	assert_int_equal(chmod(cfg, 0644), 0);
	assert_int_equal(auth_store("b.io", "bob", "hunter2", NULL), 0);
	assert_int_equal(auth_store("localhost:5000", "carol", "a:b:c", NULL), 0);
	assert_int_equal(stat(cfg, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	j = load(".docker/config.json");
	assert_string_equal(json_string_value(json_object_get(j, "credsStore")), "pass");
	assert_non_null(json_object_get(json_object_get(j, "proxies"), "default"));
	assert_string_equal(json_string_value(json_object_get(
	                        json_object_get(json_object_get(j, "auths"), "b.io"), "email")),
	                    "x@y");
	json_decref(j);
	expect_creds("a.io", 1, "dave", "pw");
	expect_creds("b.io", 1, "bob", "hunter2");
	expect_creds("localhost:5000", 1, "carol", "a:b:c");

	/* $DOCKER_CONFIG decides where it goes. */
	_cleanup_free_ char *dc = tpath("elsewhere");
	setenv("DOCKER_CONFIG", dc, 1);
	assert_int_equal(auth_store("c.io", "u", "", NULL), 0);
	j = load("elsewhere/config.json");
	assert_non_null(json_object_get(json_object_get(j, "auths"), "c.io"));
	json_decref(j);
	expect_creds("c.io", 1, "u", "");

	/* A user name with ':' cannot be stored; a broken file is left alone. */
	assert_int_equal(auth_store("c.io", "a:b", "x", NULL), -EINVAL);
	put("elsewhere/config.json", "{broken");
	assert_int_equal(auth_store("c.io", "u", "p", &err), -EINVAL);
	assert_non_null(
	    strstr(err.msg, "elsewhere/config.json' is not a JSON object; not changed"));
	{
		_cleanup_free_ char *buf = NULL;
		_cleanup_free_ char *p = tpath("elsewhere/config.json");

		assert_int_equal(read_file_full(AT_FDCWD, p, 1024, &buf, NULL), 0);
		assert_string_equal(buf, "{broken");
	}
}

struct wa_case {
	const char *in;
	int ret;
	const char *scheme, *realm, *service, *scope, *error;
};

static const struct wa_case wa_cases[] = {
    {"Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
     "scope=\"repository:library/alpine:pull\"",
     0, "Bearer", "https://auth.docker.io/token", "registry.docker.io",
     "repository:library/alpine:pull", NULL},
    {"Basic realm=\"Registry Realm\"", 0, "Basic", "Registry Realm", NULL, NULL, NULL},
    {"basic realm=x", 0, "Basic", "x", NULL, NULL, NULL},
    {"Basic", 0, "Basic", NULL, NULL, NULL, NULL},
    {"BEARER REALM=\"http://127.0.0.1:1/t\"", 0, "Bearer", "http://127.0.0.1:1/t", NULL, NULL,
     NULL},
    {"Bearer  realm = \"r\" ,  service=svc  ,scope=\"a b\"", 0, "Bearer", "r", "svc", "a b", NULL},
    /* commas and '=' inside quotes, escapes */
    {"Bearer realm=\"https://h/t?a=1,b=2\",scope=\"repository:x:pull,push\"", 0, "Bearer",
     "https://h/t?a=1,b=2", NULL, "repository:x:pull,push", NULL},
    {"Bearer realm=\"a\\\"b\\\\c\\d\"", 0, "Bearer", "a\"b\\cd", NULL, NULL, NULL},
    {"Bearer realm=\"r\",error=\"insufficient_scope\",scope=\"repository:x:pull\"", 0, "Bearer",
     "r", NULL, "repository:x:pull", "insufficient_scope"},
    {"Bearer realm=\"r\",error=invalid_token,error_description=\"expired\"", 0, "Bearer", "r", NULL,
     NULL, "invalid_token"},
    {"Bearer realm=\"\",service=x", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer realm=r,foo=\"bar\",Service=s", 0, "Bearer", "r", "s", NULL, NULL},
    {"Bearer realm=r,,, service=s,", 0, "Bearer", "r", "s", NULL, NULL},
    {"Bearer realm=\"r\", service=\"\"", 0, "Bearer", "r", "", NULL, NULL},
    /* several challenges: Bearer preferred, unknown ones skipped */
    {"Basic realm=\"b\", Bearer realm=\"t\",service=\"s\"", 0, "Bearer", "t", "s", NULL, NULL},
    {"Negotiate, Basic realm=\"b\"", 0, "Basic", "b", NULL, NULL, NULL},
    {"Negotiate YIIB7gYGKwYB==, Basic realm=b", 0, "Basic", "b", NULL, NULL, NULL},
    {"Digest realm=\"x\", nonce=\"y\", Basic realm=\"z\"", 0, "Basic", "z", NULL, NULL, NULL},
    /* unsupported */
    {"Digest realm=\"x\", nonce=\"y\"", -EOPNOTSUPP, NULL, NULL, NULL, NULL, NULL},
    {"Negotiate", -EOPNOTSUPP, NULL, NULL, NULL, NULL, NULL},
    {"NTLM abc=", -EOPNOTSUPP, NULL, NULL, NULL, NULL, NULL},
    /* malformed */
    {"", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"   ", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {",,", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer service=\"s\"", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer realm=\"unterminated", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer realm=\"x\\", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer realm=", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer realm=\"a\" junk", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer realm=\"a\" \"b\"", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer realm=\"a\",realm=\"b\"", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer =x", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer realm=\"a\x01\"", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer realm=a\"b\"", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"\"Bearer\" realm=a", -EINVAL, NULL, NULL, NULL, NULL, NULL},
    {"Bearer;realm=a", -EINVAL, NULL, NULL, NULL, NULL, NULL},
};

static void check(const char *in, const char *what, const char *got, const char *want)
{
	if ((got == NULL) != (want == NULL) || (got && strcmp(got, want) != 0))
		fail_msg("'%s': %s is '%s', expected '%s'", in, what, got ?: "(null)",
		         want ?: "(null)");
}

static void test_www_auth(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(wa_cases); i++) {
		const struct wa_case *c = &wa_cases[i];
		struct www_auth a = {.scheme = (char *)"untouched"};
		int r = www_auth_parse(c->in, &a);

		if (r != c->ret)
			fail_msg("'%s': returned %d, expected %d", c->in, r, c->ret);
		if (r < 0) {
			assert_string_equal(a.scheme, "untouched");
			continue;
		}
		check(c->in, "scheme", a.scheme, c->scheme);
		check(c->in, "realm", a.realm, c->realm);
		check(c->in, "service", a.service, c->service);
		check(c->in, "scope", a.scope, c->scope);
		check(c->in, "error", a.error, c->error);
		www_auth_clear(&a);
		assert_null(a.scheme);
	}
}

static void test_www_auth_long(void **state)
{
	_cleanup_free_ char *big = malloc(70000);
	struct www_auth a = {0};

	(void)state;
	strcpy(big, "Bearer realm=\"");
	memset(big + 14, 'a', 60000);
	strcpy(big + 60014, "\"");
	assert_int_equal(www_auth_parse(big, &a), -EINVAL);
	memset(big + 14, 'a', 8000);
	strcpy(big + 8014, "\"");
	assert_int_equal(www_auth_parse(big, &a), 0);
	assert_int_equal(strlen(a.realm), 8000);
	www_auth_clear(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_lookup_none, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lookup_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lookup_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lookup_broken, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_store, setup, teardown),
	    cmocka_unit_test(test_www_auth),
	    cmocka_unit_test(test_www_auth_long),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
