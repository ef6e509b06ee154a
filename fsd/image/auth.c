/* Registry credentials (podman/Docker auth files) and WWW-Authenticate parsing. */
#include <ctype.h>
#include <fcntl.h>
#include <jansson.h>
#include <pwd.h>
#include <strings.h>
#include <sys/stat.h>
#include "fsd/image/auth.h"
#include "common/error.h"
#include "common/fileio.h"
#include "common/log.h"

#define AUTH_FILE_MAX (4u << 20)
#define WWW_AUTH_MAX 16384
#define DOCKER_HUB_KEY "https://index.docker.io/v1/"

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(char c)
{
	const char *p = c ? strchr(b64_alphabet, c) : NULL;

	return p ? (int)(p - b64_alphabet) : -1;
}

/* Decodes standard base64 (padding optional, no whitespace) into a NUL-terminated buffer. */
static int base64_decode(const char *in, char **ret, size_t *ret_len)
{
	size_t n = strlen(in), o = 0;
	_cleanup_free_ char *out = NULL;
	unsigned acc = 0, bits = 0;

	while (n > 0 && in[n - 1] == '=')
		n--;
	if (strlen(in) - n > 2 || n % 4 == 1)
		return -EINVAL;
	out = malloc(n / 4 * 3 + 3);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int v = b64_value(in[i]);

		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	out[o] = '\0';
	*ret_len = o;
	*ret = TAKE_PTR(out);
	return 0;
}

static char *base64_encode(const void *data, size_t len)
{
	const unsigned char *in = data;
	char *out = malloc((len + 2) / 3 * 4 + 1), *p = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		unsigned v = (unsigned)in[i] << 16;

		if (i + 1 < len)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		*p++ = b64_alphabet[(v >> 18) & 63];
		*p++ = b64_alphabet[(v >> 12) & 63];
		*p++ = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
		*p++ = i + 2 < len ? b64_alphabet[v & 63] : '=';
	}
	*p = '\0';
	return out;
}

int auth_basic_encode(const char *user, const char *password, char **ret)
{
	_cleanup_free_ char *pair = NULL;
	char *out;

	if (asprintf(&pair, "%s:%s", user, password) < 0)
		return -ENOMEM;
	out = base64_encode(pair, strlen(pair));
	explicit_bzero(pair, strlen(pair));
	if (!out)
		return -ENOMEM;
	*ret = out;
	return 0;
}

/* "https://index.docker.io/v1/" -> "docker.io", "http://host:5000/x" -> "host:5000". */
static char *normalize_key(const char *key)
{
	size_t len;

	if (startswith(key, "https://"))
		key += 8;
	else if (startswith(key, "http://"))
		key += 7;
	len = strcspn(key, "/");
	if ((len == 15 && strncmp(key, "index.docker.io", 15) == 0) ||
	    (len == 20 && strncmp(key, "registry-1.docker.io", 20) == 0))
		return strdup("docker.io");
	return strndup(key, len);
}

static const char *home_dir(void)
{
	const char *h = getenv("HOME");
	struct passwd *pw;

	if (h && h[0] == '/')
		return h;
	pw = getpwuid(getuid());
	return pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : NULL;
}

static char *docker_config_path(void)
{
	const char *d = getenv("DOCKER_CONFIG");
	const char *home;
	char *p = NULL;

	if (d && *d)
		return path_join(d, "config.json");
	home = home_dir();
	if (!home)
		return NULL;
	if (asprintf(&p, "%s/.docker/config.json", home) < 0)
		return NULL;
	return p;
}

/* Looks up domain in one auth file. Returns 1 when found, 0 when the file is missing or has
 * no usable entry, -errno when the file is broken. */
static int lookup_file(const char *path, const char *domain, char **ret_user, char **ret_password,
                       struct error *err)
{
	_cleanup_free_ char *buf = NULL, *decoded = NULL;
	_cleanup_(json_decrefp) json_t *root = NULL;
	json_t *auths, *entry, *best = NULL;
	json_error_t jerr;
	const char *key, *b64;
	size_t len = 0, dlen = 0;
	char *colon;
	int r;

	r = read_file_full(AT_FDCWD, path, AUTH_FILE_MAX, &buf, &len);
	if (r == -ENOENT || r == -ENOTDIR)
		return 0;
	if (r < 0)
		return error_set(err, r, "cannot read credentials file '%s': %s", path,
		                 strerror(-r));
	root = json_loadb(buf, len, 0, &jerr);
	if (!root || !json_is_object(root))
		return error_set(err, -EINVAL, "credentials file '%s': %s (line %d): %s", path,
		                 root ? "not a JSON object" : jerr.text, jerr.line,
		                 strerror(EINVAL));
	auths = json_object_get(root, "auths");
	if (!auths)
		return 0;
	if (!json_is_object(auths))
		return error_set(err, -EINVAL,
		                 "credentials file '%s': \"auths\" is not an object: %s", path,
		                 strerror(EINVAL));
	/* An exact key wins over one that only normalises to the domain. */
	json_object_foreach(auths, key, entry)
	{
		_cleanup_free_ char *norm = NULL;

		if (!json_is_object(entry) || !json_string_value(json_object_get(entry, "auth")) ||
		    !json_string_length(json_object_get(entry, "auth")))
			continue;
		if (streq(key, domain)) {
			best = entry;
			break;
		}
		norm = normalize_key(key);
		if (!norm)
			return -ENOMEM;
		if (!best && streq(norm, domain))
			best = entry;
	}
	if (!best) {
		log_debug("no credentials for %s in '%s'", domain, path);
		return 0;
	}
	b64 = json_string_value(json_object_get(best, "auth"));
	r = base64_decode(b64, &decoded, &dlen);
	if (r == -ENOMEM)
		return r;
	colon = r < 0 ? NULL : memchr(decoded, ':', dlen);
	if (!colon || strlen(decoded) != dlen || colon == decoded)
		return error_set(
		    err, -EINVAL,
		    "credentials file '%s': entry for %s is not base64(user:password): %s", path,
		    domain, strerror(EINVAL));
	*colon = '\0';
	_cleanup_free_ char *user = strdup(decoded);
	_cleanup_free_ char *password = strdup(colon + 1);
	explicit_bzero(decoded, dlen);
	if (!user || !password)
		return -ENOMEM;
	log_debug("credentials for %s from '%s'", domain, path);
	*ret_user = TAKE_PTR(user);
	*ret_password = TAKE_PTR(password);
	return 1;
}

int auth_find(const char *domain, char **ret_user, char **ret_password, struct error *err)
{
	_cleanup_free_ char *xdg = NULL, *docker = NULL;
	const char *env = getenv("REGISTRY_AUTH_FILE");
	const char *runtime = getenv("XDG_RUNTIME_DIR");
	const char *paths[3];
	size_t n = 0;

	if (env && *env)
		paths[n++] = env;
	if (runtime && *runtime) {
		xdg = path_join(runtime, "containers/auth.json");
		if (!xdg)
			return -ENOMEM;
		paths[n++] = xdg;
	}
	docker = docker_config_path();
	if (docker)
		paths[n++] = docker;
	for (size_t i = 0; i < n; i++) {
		int r = lookup_file(paths[i], domain, ret_user, ret_password, err);

		if (r != 0)
			return r;
	}
	return 0;
}

int auth_lookup(const char *domain, char **ret_user, char **ret_password)
{
	struct error err = {""};
	int r = auth_find(domain, ret_user, ret_password, &err);

	/* The registry client, the one caller, goes on without credentials when the file is
	 * broken and has no way to carry the reason: this is the reporting site until it
	 * calls auth_find() itself. */
	if (r < 0 && error_isset(&err))
		log_error(LOG_ERR, r, &err, NULL);
	return r;
}

int auth_store(const char *domain, const char *user, const char *password, struct error *err)
{
	_cleanup_free_ char *path = docker_config_path(), *buf = NULL, *b64 = NULL;
	_cleanup_free_ char *dir = NULL, *out = NULL;
	_cleanup_(json_decrefp) json_t *root = NULL;
	json_t *auths, *entry, *aentry;
	json_error_t jerr;
	const char *key = streq(domain, "docker.io") ? DOCKER_HUB_KEY : domain, *akey;
	size_t len = 0;
	int r;

	if (!path)
		return -ENOENT;
	if (!*user || strchr(user, ':'))
		return error_set(err, -EINVAL, "the user name is empty or contains ':'");
	r = read_file_full(AT_FDCWD, path, AUTH_FILE_MAX, &buf, &len);
	if (r >= 0) {
		root = json_loadb(buf, len, 0, &jerr);
		if (!root || !json_is_object(root))
			return error_set(err, -EINVAL, "'%s' is not a JSON object; not changed",
			                 path);
	} else if (r == -ENOENT) {
		root = json_object();
		if (!root)
			return -ENOMEM;
	} else {
		return error_set(err, r, "cannot read '%s': %s", path, strerror(-r));
	}
	auths = json_object_get(root, "auths");
	if (!auths) {
		auths = json_object();
		if (!auths || json_object_set_new(root, "auths", auths) < 0)
			return -ENOMEM;
	} else if (!json_is_object(auths)) {
		return error_set(err, -EINVAL, "'%s': \"auths\" is not an object; not changed",
		                 path);
	}
	entry = json_object_get(auths, key);
	if (!entry || !json_is_object(entry)) {
		entry = json_object();
		if (!entry || json_object_set_new(auths, key, entry) < 0)
			return -ENOMEM;
	}
	r = auth_basic_encode(user, password, &b64);
	if (r < 0)
		return r;
	if (json_object_set_new(entry, "auth", json_string(b64)) < 0)
		return -ENOMEM;
	/* Other keys naming the same registry ("docker.io" written by podman, an
	 * "https://host/v2/" URL) get the new credentials too: lookup may prefer one of them. */
	json_object_foreach(auths, akey, aentry)
	{
		_cleanup_free_ char *norm = NULL;

		if (aentry == entry || !json_is_object(aentry))
			continue;
		norm = normalize_key(akey);
		if (!norm)
			return -ENOMEM;
		if (streq(norm, domain) &&
		    json_object_set_new(aentry, "auth", json_string(b64)) < 0)
			return -ENOMEM;
	}
	out = json_dumps(root, JSON_INDENT(8));
	if (!out)
		return -ENOMEM;
	dir = strndup(path, (size_t)(strrchr(path, '/') - path));
	if (!dir)
		return -ENOMEM;
	r = mkdir_p_at(AT_FDCWD, dir, 0700);
	if (r < 0)
		return error_set(err, r, "cannot create '%s': %s", dir, strerror(-r));
	r = write_file_atomic(AT_FDCWD, path, out, strlen(out), 0600);
	explicit_bzero(out, strlen(out));
	if (r < 0)
		return error_set(err, r, "cannot write '%s': %s", path, strerror(-r));
	return r;
}

/* WWW-Authenticate (RFC 7235): challenges "Scheme param=value, param="quoted", ..." or
 * "Scheme token68", several per header. The Bearer challenge is preferred, then Basic. */

void www_auth_clear(struct www_auth *a)
{
	if (!a)
		return;
	free(a->scheme);
	free(a->realm);
	free(a->service);
	free(a->scope);
	free(a->error);
	*a = (struct www_auth){0};
}

static bool is_tchar(char c)
{
	return isascii((unsigned char)c) &&
	       (isalnum((unsigned char)c) || strchr("!#$%&'*+-.^_`|~", c) != NULL) && c != '\0';
}

static bool is_token68_char(char c)
{
	return isascii((unsigned char)c) &&
	       (isalnum((unsigned char)c) || strchr("-._~+/", c) != NULL) && c != '\0';
}

static const char *skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* Reads a quoted-string starting at the opening quote into *ret; returns the position after
 * the closing quote, or NULL when malformed. */
static const char *read_quoted(const char *p, char **ret)
{
	_cleanup_free_ char *out = malloc(strlen(p) + 1);
	size_t n = 0;

	if (!out)
		return NULL;
	for (p++; *p != '"'; p++) {
		if (*p == '\0')
			return NULL;
		if (*p == '\\') {
			p++;
			if (*p == '\0')
				return NULL;
		}
		if (((unsigned char)*p < ' ' && *p != '\t') || *p == 0x7f)
			return NULL;
		out[n++] = *p;
	}
	out[n] = '\0';
	*ret = TAKE_PTR(out);
	return p + 1;
}

struct challenge {
	char *scheme;
	char *params[4]; /* realm, service, scope, error */
};

static void challenge_clear(struct challenge *c)
{
	free(c->scheme);
	for (size_t i = 0; i < ARRAY_SIZE(c->params); i++)
		free(c->params[i]);
	*c = (struct challenge){0};
}

static int param_index(const char *name, size_t len)
{
	static const char *const names[] = {"realm", "service", "scope", "error"};

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
			return (int)i;
	return -1;
}

/* Parses one challenge at *pp into c and advances *pp past it (to the next scheme or the
 * end). Returns 0 or -EINVAL/-ENOMEM. */
static int parse_challenge(const char **pp, struct challenge *c)
{
	const char *p = skip_ows(*pp), *start = p;

	while (is_tchar(*p))
		p++;
	if (p == start)
		return -EINVAL;
	c->scheme = strndup(start, (size_t)(p - start));
	if (!c->scheme)
		return -ENOMEM;
	if (*p != '\0' && *p != ' ' && *p != '\t' && *p != ',')
		return -EINVAL;
	p = skip_ows(p);

	/* "Scheme token68": the value ends in '='s and nothing but ',' or the end follows. */
	start = p;
	while (is_token68_char(*p))
		p++;
	if (p > start && *p == '=') {
		const char *q = p;

		while (*q == '=')
			q++;
		q = skip_ows(q);
		if (q - p > 1 || *q == ',' || *q == '\0') {
			*pp = *q == ',' ? q + 1 : q;
			return 0;
		}
	}
	p = start;

	for (;;) {
		const char *name, *save;
		size_t name_len;
		char *value = NULL;
		int idx;

		p = skip_ows(p);
		while (*p == ',')
			p = skip_ows(p + 1);
		if (*p == '\0')
			break;
		save = p;
		name = p;
		while (is_tchar(*p))
			p++;
		name_len = (size_t)(p - name);
		if (name_len == 0)
			return -EINVAL;
		p = skip_ows(p);
		if (*p != '=') {
			/* A token without '=' starts the next challenge. */
			*pp = save;
			return 0;
		}
		p = skip_ows(p + 1);
		if (*p == '"') {
			p = read_quoted(p, &value);
			if (!p)
				return -EINVAL;
		} else {
			const char *v = p;

			while (is_tchar(*p))
				p++;
			if (p == v)
				return -EINVAL;
			value = strndup(v, (size_t)(p - v));
			if (!value)
				return -ENOMEM;
		}
		idx = param_index(name, name_len);
		if (idx >= 0) {
			if (c->params[idx]) {
				free(value);
				return -EINVAL; /* a parameter may appear once per challenge */
			}
			c->params[idx] = value;
		} else {
			free(value);
		}
		p = skip_ows(p);
		if (*p != ',' && *p != '\0')
			return -EINVAL;
	}
	*pp = p;
	return 0;
}

int www_auth_parse(const char *header, struct www_auth *ret)
{
	struct challenge best = {0};
	const char *p = header;
	int best_rank = 0, r = 0;
	unsigned n = 0;

	if (!header || strnlen(header, WWW_AUTH_MAX + 1) > WWW_AUTH_MAX)
		return -EINVAL;
	for (;;) {
		struct challenge c = {0};
		int rank;

		p = skip_ows(p);
		while (*p == ',')
			p = skip_ows(p + 1);
		if (*p == '\0')
			break;
		r = parse_challenge(&p, &c);
		if (r < 0) {
			challenge_clear(&c);
			break;
		}
		n++;
		rank = strcasecmp(c.scheme, "Bearer") == 0  ? 2
		       : strcasecmp(c.scheme, "Basic") == 0 ? 1
		                                            : 0;
		if (rank > best_rank) {
			challenge_clear(&best);
			best = c;
			best_rank = rank;
		} else {
			challenge_clear(&c);
		}
	}
	if (r >= 0 && best_rank == 0)
		r = n == 0 ? -EINVAL : -EOPNOTSUPP;
	if (r >= 0 && best_rank == 2 && (!best.params[0] || !best.params[0][0]))
		r = -EINVAL; /* a Bearer challenge is useless without a realm */
	if (r < 0) {
		challenge_clear(&best);
		return r;
	}
	free(best.scheme);
	*ret = (struct www_auth){
	    .scheme = strdup(best_rank == 2 ? "Bearer" : "Basic"),
	    .realm = best.params[0],
	    .service = best.params[1],
	    .scope = best.params[2],
	    .error = best.params[3],
	};
	if (!ret->scheme) {
		www_auth_clear(ret);
		return -ENOMEM;
	}
	return 0;
}
