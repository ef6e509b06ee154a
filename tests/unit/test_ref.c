/* Reference parsing and normalisation: a table of valid and invalid references, each
 * checked for its canonical form or its exact error reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include "common/error.h"
#include "common/fileio.h"
#include "fsd/image/ref.h"

#define HEX "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DIG "sha256:" HEX

#define E_LOWER "invalid reference format: repository name must be lowercase"
#define E_REPO "invalid reference format: invalid repository name"
#define E_TAG "invalid reference format: invalid tag"
#define E_DOMAIN "invalid reference format: invalid domain"
#define E_PORT "invalid reference format: invalid port"
#define E_IPV6 "invalid reference format: invalid IPv6 address"
#define E_EMPTY "invalid reference format: empty reference"
#define E_EMPTYREPO "invalid reference format: empty repository name"
#define E_LONG "invalid reference format: repository name must not be more than 255 characters"
#define E_CHAR "invalid reference format: unexpected character"
#define E_DIGEST "invalid digest: sha256 needs 64 lowercase hex digits"
#define E_DIGESTFMT "invalid digest format"
#define E_ALGO "unsupported digest algorithm (only sha256)"
#define E_HEXNAME "invalid repository name: cannot specify 64-byte hexadecimal strings"

struct valid_case {
	const char *in;
	const char *name;
	const char *domain, *path, *tag, *digest;
};

/* Registry references: canonical name and every part. */
static const struct valid_case valid[] = {
    {"alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", NULL},
    {"alpine:3.20", "docker.io/library/alpine:3.20", "docker.io", "library/alpine", "3.20", NULL},
    {"docker.io/library/alpine:latest", "docker.io/library/alpine:latest", "docker.io",
     "library/alpine", "latest", NULL},
    {"docker.io/alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest",
     NULL},
    {"index.docker.io/alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine",
     "latest", NULL},
    {"index.docker.io/user/app:v1", "docker.io/user/app:v1", "docker.io", "user/app", "v1", NULL},
    {"user/app", "docker.io/user/app:latest", "docker.io", "user/app", "latest", NULL},
    {"a/b/c/d", "docker.io/a/b/c/d:latest", "docker.io", "a/b/c/d", "latest", NULL},
    {"alpine@" DIG, "docker.io/library/alpine@" DIG, "docker.io", "library/alpine", NULL, DIG},
    {"alpine:3.20@" DIG, "docker.io/library/alpine:3.20@" DIG, "docker.io", "library/alpine",
     "3.20", DIG},
    {"localhost/foo", "localhost/foo:latest", "localhost", "foo", "latest", NULL},
    {"localhost:5000/a/b@" DIG, "localhost:5000/a/b@" DIG, "localhost:5000", "a/b", NULL, DIG},
    {"127.0.0.1:5000/x:tag", "127.0.0.1:5000/x:tag", "127.0.0.1:5000", "x", "tag", NULL},
    {"[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000", "x", "latest", NULL},
    {"[2001:db8::1]/ns/img:1", "[2001:db8::1]/ns/img:1", "[2001:db8::1]", "ns/img", "1", NULL},
    {"quay.io/coreos/etcd:v3.5.0", "quay.io/coreos/etcd:v3.5.0", "quay.io", "coreos/etcd", "v3.5.0",
     NULL},
    {"My-Registry.example.com:443/team/app", "My-Registry.example.com:443/team/app:latest",
     "My-Registry.example.com:443", "team/app", "latest", NULL},
    {"ghcr.io/a__b/c.d-e---f_g", "ghcr.io/a__b/c.d-e---f_g:latest", "ghcr.io", "a__b/c.d-e---f_g",
     "latest", NULL},
    {"alpine:_tag-With.Upper", "docker.io/library/alpine:_tag-With.Upper", "docker.io",
     "library/alpine", "_tag-With.Upper", NULL},
    /* Docker reads a lone host:port as name:tag. */
    {"localhost:5000", "docker.io/library/localhost:5000", "docker.io", "library/localhost", "5000",
     NULL},
    {"docker://busybox:1", "docker.io/library/busybox:1", "docker.io", "library/busybox", "1",
     NULL},
    {"registry.example.com/" HEX, "registry.example.com/" HEX ":latest", "registry.example.com",
     HEX, "latest", NULL},
};

struct invalid_case {
	const char *in;
	const char *reason;
};

static const struct invalid_case invalid[] = {
    {"", E_EMPTY},
    {"Alpine", E_LOWER},
    {"docker.io/Library/alpine", E_LOWER},
    {"localhost:5000/Foo:tag", E_LOWER},
    {"alpine:", E_TAG},
    {"alpine:-bad", E_TAG},
    {"alpine:a:b", E_TAG},
    {"alpine:"
     "0123456789012345678901234567890123456789012345678901234567890123456789"
     "012345678901234567890123456789012345678901234567890123456789",
     E_TAG},
    {"alpine@sha256:abc", E_DIGEST},
    {"alpine@sha256:"
     "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
     E_DIGEST},
    {"alpine@sha512:abcd", E_ALGO},
    {"alpine@", E_DIGESTFMT},
    {"alpine@latest", E_DIGESTFMT},
    {"a//b", E_REPO},
    {"a/b/", E_REPO},
    {"-alpine", E_REPO},
    {"alpine-", E_REPO},
    {"al..pine", E_REPO},
    {"a___b", E_REPO},
    {"localhost:5000/", E_EMPTYREPO},
    {"host:99999/x", E_PORT},
    {"host:0/x", E_PORT},
    {"host:/x", E_PORT},
    {"host:abc/x", E_PORT},
    {"-bad.example.com/x", E_DOMAIN},
    {"bad..example.com/x", E_DOMAIN},
    {"[::1/x", E_IPV6},
    {"[zz::1]:5000/x", E_IPV6},
    {"[::1]x/y", E_DOMAIN},
    {"alpine latest", E_CHAR},
    {"alp\tine", E_CHAR},
    {"caf\xc3\xa9", E_CHAR},
    {HEX, E_HEXNAME},
    {"oci:", "oci: missing directory"},
    {"oci::tag", "oci: missing directory"},
    {"oci:dir:bad tag", "oci: invalid tag"},
    {"oci:dir@sha256:1234", E_DIGEST},
    {"docker-archive:", "docker-archive: missing file name"},
    {"docker-archive:f.tar:Bad", E_LOWER},
};

static char *long_name(size_t path_len)
{
	char *s = malloc(path_len + 32);

	assert_non_null(s);
	strcpy(s, "example.com/"); /* 12 characters of the 255 */
	memset(s + 12, 'a', path_len);
	s[12 + path_len] = '\0';
	return s;
}

static void check_str(const char *what, const char *in, const char *got, const char *want)
{
	if ((got == NULL) != (want == NULL) || (got && strcmp(got, want) != 0))
		fail_msg("'%s': %s is '%s', expected '%s'", in, what, got ?: "(null)",
		         want ?: "(null)");
}

static void test_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(valid); i++) {
		_cleanup_(ref_freep) struct image_ref *r = NULL;
		struct error err = {""};
		int k = ref_parse(valid[i].in, &r, &err);

		if (k < 0)
			fail_msg("'%s': rejected (%d): %s", valid[i].in, k, err.msg);
		assert_int_equal(r->transport, REF_REGISTRY);
		check_str("name", valid[i].in, r->name, valid[i].name);
		check_str("domain", valid[i].in, r->domain, valid[i].domain);
		check_str("path", valid[i].in, r->path, valid[i].path);
		check_str("tag", valid[i].in, r->tag, valid[i].tag);
		check_str("digest", valid[i].in, r->digest, valid[i].digest);

		/* The canonical form is a fixed point. */
		_cleanup_(ref_freep) struct image_ref *again = NULL;
		assert_int_equal(ref_parse(r->name, &again, NULL), 0);
		check_str("re-parsed name", r->name, again->name, r->name);
	}
}

static void test_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(invalid); i++) {
		struct image_ref *r = (struct image_ref *)0x1;
		struct error err = {""};
		int k = ref_parse(invalid[i].in, &r, &err);

		if (k != -EINVAL)
			fail_msg("'%s': accepted or wrong error (%d)", invalid[i].in, k);
		assert_ptr_equal(r, (struct image_ref *)0x1); /* untouched on failure */
		check_str("reason", invalid[i].in, err.msg, invalid[i].reason);
	}
}

static void test_length_limit(void **state)
{
	_cleanup_free_ char *ok = long_name(255 - 12), *bad = long_name(256 - 12);
	_cleanup_free_ char *huge = malloc(10000);
	_cleanup_(ref_freep) struct image_ref *r = NULL;
	struct error err = {""};

	(void)state;
	assert_int_equal(ref_parse(ok, &r, &err), 0);
	assert_false(error_isset(&err));
	assert_int_equal(strlen(r->domain) + 1 + strlen(r->path), 255);
	assert_int_equal(ref_parse(bad, &r, &err), -EINVAL);
	assert_string_equal(err.msg, E_LONG);
	/* docker.io/library/ counts: 18 characters plus a 238-character name is too long. */
	memset(huge, 'a', 238);
	huge[238] = '\0';
	err = (struct error){""};
	assert_int_equal(ref_parse(huge, &r, &err), -EINVAL);
	assert_string_equal(err.msg, E_LONG);
	memset(huge, 'a', 9999);
	huge[9999] = '\0';
	err = (struct error){""};
	assert_int_equal(ref_parse(huge, &r, &err), -EINVAL);
	assert_string_equal(err.msg, "reference too long");
}

/* Replaces the "%s" in pattern, if any, with dir. */
static void expand(char *out, size_t size, const char *pattern, const char *dir)
{
	const char *p = strstr(pattern, "%s");

	if (p)
		assert_true((size_t)snprintf(out, size, "%.*s%s%s", (int)(p - pattern), pattern,
		                             dir, p + 2) < size);
	else
		assert_true((size_t)snprintf(out, size, "%s", pattern) < size);
}

static void test_local_transports(void **state)
{
	char tmpl[] = "/tmp/test_ref.XXXXXX";
	char cwd[PATH_MAX];
	_cleanup_free_ char *name = NULL;
	struct {
		const char *in;
		enum ref_transport t;
		const char *path, *tag, *digest, *name; /* "%s" stands for the temp dir */
	} cases[] = {
	    {"oci:layout", REF_OCI, "%s/layout", NULL, NULL, "oci:%s/layout"},
	    {"oci:layout:v1", REF_OCI, "%s/layout", "v1", NULL, "oci:%s/layout:v1"},
	    {"oci:/abs/../abs//dir/.:busybox:1.36", REF_OCI, "/abs/dir", "busybox:1.36", NULL,
	     "oci:/abs/dir:busybox:1.36"},
	    {"oci:./x@" DIG, REF_OCI, "%s/x", NULL, DIG, "oci:%s/x@" DIG},
	    {"docker-archive:save.tar", REF_DOCKER_ARCHIVE, "%s/save.tar", NULL, NULL,
	     "docker-archive:%s/save.tar"},
	    {"docker-archive:../y/save.tar:busybox:latest", REF_DOCKER_ARCHIVE, "/tmp/y/save.tar",
	     "busybox:latest", NULL, "docker-archive:/tmp/y/save.tar:busybox:latest"},
	    {"./alpine-minirootfs.tar.gz", REF_TARBALL, "%s/alpine-minirootfs.tar.gz", NULL, NULL,
	     "%s/alpine-minirootfs.tar.gz"},
	    {"/srv/rootfs.tar", REF_TARBALL, "/srv/rootfs.tar", NULL, NULL, "/srv/rootfs.tar"},
	    /* An existing file wins over the Docker Hub name it also spells. */
	    {"root.tar.zst", REF_TARBALL, "%s/root.tar.zst", NULL, NULL, "%s/root.tar.zst"},
	};

	(void)state;
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_non_null(mkdtemp(tmpl));
	assert_int_equal(chdir(tmpl), 0);
	assert_int_equal(write_file_atomic(AT_FDCWD, "root.tar.zst", "x", 1, 0644), 0);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		_cleanup_(ref_freep) struct image_ref *r = NULL;
		struct error err = {""};
		char want[PATH_MAX + 64];

		if (ref_parse(cases[i].in, &r, &err) < 0)
			fail_msg("'%s' rejected: %s", cases[i].in, err.msg);
		assert_int_equal(r->transport, cases[i].t);
		expand(want, sizeof(want), cases[i].path, tmpl);
		check_str("path", cases[i].in, r->path, want);
		expand(want, sizeof(want), cases[i].name, tmpl);
		check_str("name", cases[i].in, r->name, want);
		check_str("tag", cases[i].in, r->tag, cases[i].tag);
		check_str("digest", cases[i].in, r->digest, cases[i].digest);
		assert_null(r->domain);
		assert_false(ref_registry_is_loopback(r));
	}
	/* Not an existing file and not a path: a registry reference. */
	{
		_cleanup_(ref_freep) struct image_ref *r = NULL;

		assert_int_equal(ref_parse("other.tar.gz", &r, NULL), 0);
		assert_int_equal(r->transport, REF_REGISTRY);
		assert_string_equal(r->name, "docker.io/library/other.tar.gz:latest");
	}
	assert_int_equal(unlink("root.tar.zst"), 0);
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(rmdir(tmpl), 0);
}

static void test_hosts(void **state)
{
	static const struct {
		const char *in, *host;
		bool loopback;
	} cases[] = {
	    {"alpine", "registry-1.docker.io", false},
	    {"index.docker.io/x/y", "registry-1.docker.io", false},
	    {"localhost/x", "localhost", true},
	    {"localhost:5000/x", "localhost:5000", true},
	    {"LOCALHOST:5000/x", "LOCALHOST:5000", true},
	    {"127.0.0.1:5000/x", "127.0.0.1:5000", true},
	    {"127.1.2.3/x", "127.1.2.3", true},
	    {"[::1]:5000/x", "[::1]:5000", true},
	    {"[::1]/x", "[::1]", true},
	    {"[::2]:5000/x", "[::2]:5000", false},
	    {"128.0.0.1:5000/x", "128.0.0.1:5000", false},
	    {"127.0.0.1.example.com/x", "127.0.0.1.example.com", false},
	    {"localhost.example.com/x", "localhost.example.com", false},
	    {"quay.io/x", "quay.io", false},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		_cleanup_(ref_freep) struct image_ref *r = NULL;

		assert_int_equal(ref_parse(cases[i].in, &r, NULL), 0);
		check_str("host", cases[i].in, ref_registry_host(r), cases[i].host);
		if (ref_registry_is_loopback(r) != cases[i].loopback)
			fail_msg("'%s': loopback should be %d", cases[i].in, cases[i].loopback);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid),        cmocka_unit_test(test_invalid),
	    cmocka_unit_test(test_length_limit), cmocka_unit_test(test_local_transports),
	    cmocka_unit_test(test_hosts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
