/* Image references: see ref.h for the accepted forms. */
#include <ctype.h>
#include <stdint.h>
#include <sys/stat.h>
#include "fsd/image/ref.h"
#include "common/digest.h"
#include "common/error.h"

#define REF_INPUT_MAX 4096 /* longer input is refused before any work */
#define NAME_TOTAL_MAX 255
#define TAG_MAX 128
#define OCI_TAG_MAX 255

#define DOCKER_DOMAIN "docker.io"
#define DOCKER_LEGACY_DOMAIN "index.docker.io"
#define DOCKER_REGISTRY_HOST "registry-1.docker.io"

void ref_free(struct image_ref *r)
{
	if (!r)
		return;
	free(r->domain);
	free(r->path);
	free(r->tag);
	free(r->digest);
	free(r->name);
	free(r);
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return isascii((unsigned char)c) && isalnum((unsigned char)c);
}

/* path-component := [a-z0-9]+ (separator [a-z0-9]+)*, separator := [_.] | "__" | "-"+ */
static bool path_component_valid(const char *s, size_t len)
{
	size_t i = 0;

	if (len == 0 || !is_lower_alnum(s[0]))
		return false;
	while (i < len) {
		size_t sep = 0;

		while (i < len && is_lower_alnum(s[i]))
			i++;
		if (i == len)
			return true;
		if (s[i] == '.') {
			sep = 1;
		} else if (s[i] == '_') {
			sep = (i + 1 < len && s[i + 1] == '_') ? 2 : 1;
		} else if (s[i] == '-') {
			while (i + sep < len && s[i + sep] == '-')
				sep++;
		} else {
			return false;
		}
		i += sep;
		if (i == len || !is_lower_alnum(s[i]))
			return false;
	}
	return true;
}

static bool has_upper(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] >= 'A' && s[i] <= 'Z')
			return true;
	return false;
}

/* tag := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
static bool tag_valid(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > TAG_MAX || !(is_alnum(s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!(is_alnum(s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '-'))
			return false;
	return true;
}

/* domain-component := [A-Za-z0-9] | [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9] */
static bool host_name_valid(const char *s, size_t len)
{
	size_t i = 0;

	if (len == 0)
		return false;
	while (i < len) {
		size_t start = i;

		while (i < len && (is_alnum(s[i]) || s[i] == '-'))
			i++;
		if (i == start || s[start] == '-' || s[i - 1] == '-')
			return false;
		if (i == len)
			return true;
		if (s[i] != '.')
			return false;
		i++;
		if (i == len)
			return false;
	}
	return true;
}

static bool ipv6_valid(const char *s, size_t len)
{
	size_t colons = 0;

	if (len < 2 || len > 45)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == ':')
			colons++;
		else if (!isxdigit((unsigned char)s[i]) && s[i] != '.')
			return false;
	}
	return colons >= 2;
}

/* domain := host [':' port]; host := domain-name | '[' IPv6 ']'. */
static const char *domain_check(const char *s, size_t len)
{
	const char *port = NULL;
	size_t host_len = len;

	if (len == 0)
		return "invalid reference format: empty domain";
	if (s[0] == '[') {
		const char *end = memchr(s, ']', len);

		if (!end || !ipv6_valid(s + 1, (size_t)(end - s - 1)))
			return "invalid reference format: invalid IPv6 address";
		host_len = (size_t)(end - s) + 1;
		if (host_len < len) {
			if (s[host_len] != ':')
				return "invalid reference format: invalid domain";
			port = s + host_len + 1;
		}
	} else {
		const char *colon = memchr(s, ':', len);

		if (colon) {
			host_len = (size_t)(colon - s);
			port = colon + 1;
		}
		if (!host_name_valid(s, host_len))
			return "invalid reference format: invalid domain";
	}
	if (port) {
		size_t plen = (size_t)(s + len - port);
		unsigned long v = 0;

		if (plen == 0 || plen > 5)
			return "invalid reference format: invalid port";
		for (size_t i = 0; i < plen; i++) {
			if (port[i] < '0' || port[i] > '9')
				return "invalid reference format: invalid port";
			v = v * 10 + (unsigned long)(port[i] - '0');
		}
		if (v == 0 || v > 65535)
			return "invalid reference format: invalid port";
	}
	return NULL;
}

/* Digests: the grammar allows other algorithms, the store only sha256 (64 lowercase hex). */
static const char *digest_check(const char *s)
{
	const char *colon = strchr(s, ':');

	if (!colon || colon == s)
		return "invalid digest format";
	if (!startswith(s, "sha256:")) {
		for (const char *p = s; p < colon; p++)
			if (!is_alnum(*p) && !strchr("+._-", *p))
				return "invalid digest format";
		return "unsupported digest algorithm (only sha256)";
	}
	if (!digest_valid(s))
		return "invalid digest: sha256 needs 64 lowercase hex digits";
	return NULL;
}

static bool all_hex64(const char *s)
{
	if (strlen(s) != DIGEST_HEX_LEN)
		return false;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return false;
	return true;
}

/* Parses a registry reference into r (which owns the strings). */
static int parse_registry(const char *s, struct image_ref *r, struct error *err)
{
	_cleanup_free_ char *copy = strdup(s);
	const char *slash, *rest;
	char *at, *colon;
	size_t dlen;

	if (!copy)
		return -ENOMEM;
	if (!*s)
		return error_set(err, -EINVAL, "invalid reference format: empty reference");
	if (all_hex64(s))
		return error_set(
		    err, -EINVAL,
		    "invalid repository name: cannot specify 64-byte hexadecimal strings");
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			return error_set(err, -EINVAL,
			                 "invalid reference format: unexpected character");

	/* Split off the digest, then the tag (after the first ':' of the remote name). */
	at = strchr(copy, '@');
	if (at) {
		const char *why;

		*at = '\0';
		why = digest_check(at + 1);
		if (why)
			return error_set(err, -EINVAL, "%s", why);
		r->digest = strdup(at + 1);
		if (!r->digest)
			return -ENOMEM;
	}
	slash = strchr(copy, '/');
	if (slash && (memchr(copy, '.', (size_t)(slash - copy)) ||
	              memchr(copy, ':', (size_t)(slash - copy)) ||
	              (slash - copy == 9 && strncasecmp(copy, "localhost", 9) == 0))) {
		const char *why;

		dlen = (size_t)(slash - copy);
		why = domain_check(copy, dlen);
		if (why)
			return error_set(err, -EINVAL, "%s", why);
		r->domain = strndup(copy, dlen);
		rest = slash + 1;
	} else {
		r->domain = strdup(DOCKER_DOMAIN);
		rest = copy;
	}
	if (!r->domain)
		return -ENOMEM;
	if (streq(r->domain, DOCKER_LEGACY_DOMAIN)) {
		free(r->domain);
		r->domain = strdup(DOCKER_DOMAIN);
		if (!r->domain)
			return -ENOMEM;
	}

	colon = strchr(rest, ':');
	if (colon) {
		*colon = '\0';
		if (!tag_valid(colon + 1))
			return error_set(err, -EINVAL, "invalid reference format: invalid tag");
		r->tag = strdup(colon + 1);
		if (!r->tag)
			return -ENOMEM;
	}
	if (!*rest)
		return error_set(err, -EINVAL, "invalid reference format: empty repository name");
	if (has_upper(rest, strlen(rest)))
		return error_set(err, -EINVAL,
		                 "invalid reference format: repository name must be lowercase");
	for (const char *c = rest;;) {
		const char *end = strchrnul(c, '/');

		if (!path_component_valid(c, (size_t)(end - c)))
			return error_set(err, -EINVAL,
			                 "invalid reference format: invalid repository name");
		if (!*end)
			break;
		c = end + 1;
	}
	if (streq(r->domain, DOCKER_DOMAIN) && !strchr(rest, '/')) {
		if (asprintf(&r->path, "library/%s", rest) < 0)
			r->path = NULL;
	} else {
		r->path = strdup(rest);
	}
	if (!r->path)
		return -ENOMEM;
	if (strlen(r->domain) + 1 + strlen(r->path) > NAME_TOTAL_MAX)
		return error_set(
		    err, -EINVAL,
		    "invalid reference format: repository name must not be more than 255 "
		    "characters");
	if (!r->tag && !r->digest) {
		r->tag = strdup("latest");
		if (!r->tag)
			return -ENOMEM;
	}
	if (asprintf(&r->name, "%s/%s%s%s%s%s", r->domain, r->path, r->tag ? ":" : "", r->tag ?: "",
	             r->digest ? "@" : "", r->digest ?: "") < 0) {
		r->name = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Makes p absolute (against the working directory) and removes ".", ".." and repeated
 * slashes lexically: the file need not exist and symlinks are kept as the user wrote them. */
static int absolute_path(const char *p, char **ret)
{
	_cleanup_free_ char *cwd = NULL, *joined = NULL, *out = NULL;
	size_t n = 0;

	if (p[0] != '/') {
		cwd = getcwd(NULL, 0);
		if (!cwd)
			return negative_errno();
		if (asprintf(&joined, "%s/%s", cwd, p) < 0)
			return -ENOMEM;
		p = joined;
	}
	out = malloc(strlen(p) + 2);
	if (!out)
		return -ENOMEM;
	for (const char *c = p; *c;) {
		size_t len;

		while (*c == '/')
			c++;
		len = strcspn(c, "/");
		if (len == 0)
			break;
		if (len == 1 && c[0] == '.') {
			/* skip */
		} else if (len == 2 && c[0] == '.' && c[1] == '.') {
			while (n > 0 && out[n - 1] != '/')
				n--;
			if (n > 0)
				n--;
		} else {
			out[n++] = '/';
			memcpy(out + n, c, len);
			n += len;
		}
		c += len;
	}
	if (n == 0)
		out[n++] = '/';
	out[n] = '\0';
	*ret = TAKE_PTR(out);
	return 0;
}

/* OCI layout tags are org.opencontainers.image.ref.name values: more liberal than Docker
 * tags (they may contain '/' and ':'), but printable and bounded. */
static bool oci_tag_valid(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > OCI_TAG_MAX || !is_alnum(s[0]))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!is_alnum(s[i]) && !strchr("._-:/+", s[i]))
			return false;
	return true;
}

static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < ' ' || *s == 0x7f)
			return true;
	return false;
}

/* oci:DIR[:TAG] or oci:DIR@sha256:HEX. The path ends at the first ':' as in
 * containers/image, so DIR cannot contain ':'. */
static int parse_oci(const char *s, struct image_ref *r, struct error *err)
{
	_cleanup_free_ char *copy = strdup(s);
	char *at, *colon;
	int k;

	if (!copy)
		return -ENOMEM;
	at = strrchr(copy, '@');
	if (at && startswith(at + 1, "sha256:")) {
		if (!digest_valid(at + 1))
			return error_set(err, -EINVAL,
			                 "invalid digest: sha256 needs 64 lowercase hex digits");
		r->digest = strdup(at + 1);
		if (!r->digest)
			return -ENOMEM;
		*at = '\0';
	}
	colon = strchr(copy, ':');
	if (colon) {
		*colon = '\0';
		if (r->digest)
			return error_set(err, -EINVAL,
			                 "oci: reference has both a tag and a digest");
		if (!oci_tag_valid(colon + 1))
			return error_set(err, -EINVAL, "oci: invalid tag");
		r->tag = strdup(colon + 1);
		if (!r->tag)
			return -ENOMEM;
	}
	if (!*copy)
		return error_set(err, -EINVAL, "oci: missing directory");
	k = absolute_path(copy, &r->path);
	if (k < 0)
		return k;
	if (asprintf(&r->name, "oci:%s%s%s%s%s", r->path, r->tag ? ":" : "", r->tag ?: "",
	             r->digest ? "@" : "", r->digest ?: "") < 0) {
		r->name = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* docker-archive:FILE[:REF]; REF must be a valid reference and is kept as written. */
static int parse_docker_archive(const char *s, struct image_ref *r, struct error *err)
{
	_cleanup_free_ char *copy = strdup(s);
	char *colon;
	int k;

	if (!copy)
		return -ENOMEM;
	colon = strchr(copy, ':');
	if (colon) {
		_cleanup_(ref_freep) struct image_ref *inner = calloc(1, sizeof(*inner));

		*colon = '\0';
		if (!inner)
			return -ENOMEM;
		k = parse_registry(colon + 1, inner, err);
		if (k < 0)
			return k;
		r->tag = strdup(colon + 1);
		if (!r->tag)
			return -ENOMEM;
	}
	if (!*copy)
		return error_set(err, -EINVAL, "docker-archive: missing file name");
	k = absolute_path(copy, &r->path);
	if (k < 0)
		return k;
	if (asprintf(&r->name, "docker-archive:%s%s%s", r->path, r->tag ? ":" : "", r->tag ?: "") <
	    0) {
		r->name = NULL;
		return -ENOMEM;
	}
	return 0;
}

static bool is_tarball_path(const char *s)
{
	struct stat st;

	if (s[0] == '/' || startswith(s, "./") || startswith(s, "../"))
		return true;
	return stat(s, &st) == 0 && S_ISREG(st.st_mode);
}

int ref_parse(const char *s, struct image_ref **ret, struct error *err)
{
	_cleanup_(ref_freep) struct image_ref *r = NULL;
	int k;

	if (!s || !*s)
		return error_set(err, -EINVAL, "invalid reference format: empty reference");
	if (strnlen(s, REF_INPUT_MAX + 1) > REF_INPUT_MAX)
		return error_set(err, -EINVAL, "reference too long");
	if (has_control(s))
		return error_set(err, -EINVAL, "invalid reference format: unexpected character");
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	if (startswith(s, "oci:")) {
		r->transport = REF_OCI;
		k = parse_oci(s + 4, r, err);
	} else if (startswith(s, "docker-archive:")) {
		r->transport = REF_DOCKER_ARCHIVE;
		k = parse_docker_archive(s + 15, r, err);
	} else if (startswith(s, "docker://")) {
		r->transport = REF_REGISTRY;
		k = parse_registry(s + 9, r, err);
	} else if (is_tarball_path(s)) {
		r->transport = REF_TARBALL;
		k = absolute_path(s, &r->path);
		if (k >= 0) {
			r->name = strdup(r->path);
			if (!r->name)
				k = -ENOMEM;
		}
	} else {
		r->transport = REF_REGISTRY;
		k = parse_registry(s, r, err);
	}
	if (k < 0)
		return k;
	*ret = TAKE_PTR(r);
	return 0;
}

const char *ref_registry_host(const struct image_ref *r)
{
	if (r->domain && streq(r->domain, DOCKER_DOMAIN))
		return DOCKER_REGISTRY_HOST;
	return r->domain;
}

bool ref_registry_is_loopback(const struct image_ref *r)
{
	const char *d = r->domain;
	size_t hlen;
	unsigned a, b, c, e;
	char tail;

	if (!d || r->transport != REF_REGISTRY)
		return false;
	if (startswith(d, "[")) {
		hlen = strcspn(d, "]");
		return hlen == 4 && strncmp(d + 1, "::1", 3) == 0;
	}
	hlen = strcspn(d, ":");
	if (hlen == 9 && strncasecmp(d, "localhost", 9) == 0)
		return true;
	/* 127.0.0.0/8 as a dotted quad; the scan stops at ':' or the end. */
	if (sscanf(d, "%3u.%3u.%3u.%3u%c", &a, &b, &c, &e, &tail) >= 4 && a == 127 && b < 256 &&
	    c < 256 && e < 256) {
		for (size_t i = 0; i < hlen; i++)
			if (!(d[i] == '.' || (d[i] >= '0' && d[i] <= '9')))
				return false;
		return true;
	}
	return false;
}
