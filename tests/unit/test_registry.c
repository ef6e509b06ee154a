/* The registry client against a scripted HTTP server in a thread: token flow, Basic,
 * redirects without Authorization, Range resume, retries, size limits, error messages. */
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "common/log.h"
#include "fsd/image/registry.h"

/* A request as the server saw it. */
struct seen {
	char path[256];
	char auth[128];
	char range[64];
	char origin[64]; /* Host header */
};

struct server;
typedef void (*handler_fn)(struct server *s, int fd, const struct seen *q, unsigned n);

struct server {
	int lfd;
	unsigned port;
	pthread_t thread;
	handler_fn handler;
	pthread_mutex_t lock;
	struct seen log[64];
	unsigned n;
	const char *blob;
	size_t blob_len;
};

static struct server srv;

static void header_value(const char *req, const char *name, char *out, size_t size)
{
	const char *p = strcasestr(req, name);

	out[0] = '\0';
	if (!p)
		return;
	p += strlen(name);
	while (*p == ' ')
		p++;
	snprintf(out, size, "%.*s", (int)strcspn(p, "\r\n"), p);
}

static void *serve(void *arg)
{
	struct server *s = arg;

	for (;;) {
		char req[8192];
		size_t len = 0;
		struct seen q;
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		unsigned n;

		if (fd < 0)
			return NULL;
		/* One request per connection (responses say Connection: close). */
		while (len < sizeof(req) - 1 && !memmem(req, len, "\r\n\r\n", 4)) {
			ssize_t k = read(fd, req + len, sizeof(req) - 1 - len);

			if (k <= 0)
				break;
			len += (size_t)k;
		}
		req[len] = '\0';
		memset(&q, 0, sizeof(q));
		sscanf(req, "GET %255s", q.path);
		header_value(req, "\nAuthorization:", q.auth, sizeof(q.auth));
		header_value(req, "\nRange:", q.range, sizeof(q.range));
		header_value(req, "\nHost:", q.origin, sizeof(q.origin));
		pthread_mutex_lock(&s->lock);
		n = s->n;
		if (s->n < ARRAY_SIZE(s->log))
			s->log[s->n++] = q;
		pthread_mutex_unlock(&s->lock);
		s->handler(s, fd, &q, n);
		close(fd);
	}
}

static void reply(int fd, const char *status, const char *headers, const void *body, size_t len)
{
	char h[1024];
	int n = snprintf(h, sizeof(h), "HTTP/1.1 %s\r\nConnection: close\r\n%s\r\n", status,
	                 headers ?: "");

	assert_int_equal(write_full(fd, h, (size_t)n), 0);
	if (len)
		(void)write_full(fd, body, len);
}

static void reply_str(int fd, const char *status, const char *headers, const char *body)
{
	char h[1024];

	snprintf(h, sizeof(h), "%sContent-Length: %zu\r\n", headers ?: "", strlen(body));
	reply(fd, status, h, body, strlen(body));
}

static char big_blob[300000];

static int setup(void **state)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);

	(void)state;
	memset(&srv, 0, sizeof(srv));
	pthread_mutex_init(&srv.lock, NULL);
	srv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (srv.lfd < 0 || bind(srv.lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(srv.lfd, 16) < 0 || getsockname(srv.lfd, (struct sockaddr *)&a, &alen) < 0)
		return -1;
	srv.port = ntohs(a.sin_port);
	for (size_t i = 0; i < sizeof(big_blob); i++)
		big_blob[i] = (char)(i * 7 + i / 251);
	srv.blob = big_blob;
	srv.blob_len = sizeof(big_blob);
	/* No credentials from the machine running the tests. */
	setenv("HOME", "/nonexistent", 1);
	unsetenv("DOCKER_CONFIG");
	unsetenv("XDG_RUNTIME_DIR");
	unsetenv("REGISTRY_AUTH_FILE");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	shutdown(srv.lfd, SHUT_RDWR);
	close(srv.lfd);
	if (srv.handler)
		pthread_join(srv.thread, NULL);
	return 0;
}

static void start(handler_fn h)
{
	srv.handler = h;
	assert_int_equal(pthread_create(&srv.thread, NULL, serve, &srv), 0);
}

static struct registry *client(const char *user, const char *password)
{
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	struct registry_opts o = {.username = user,
	                          .password = password,
	                          .backoff_ms = 1,
	                          .timeout_s = 5,
	                          .max_retries = 3};
	struct registry *r = NULL;
	char s[64];

	snprintf(s, sizeof(s), "127.0.0.1:%u/ns/app:v1", srv.port);
	assert_int_equal(ref_parse(s, &ref, NULL), 0);
	assert_int_equal(registry_new(ref, &o, &r), 0);
	return r;
}

static const char manifest[] = "{\"schemaVersion\":2}";

/* Bearer flow: 401 → token with Basic credentials → the manifest. */
static void h_token(struct server *s, int fd, const struct seen *q, unsigned n)
{
	char h[256];

	(void)n;
	if (startswith(q->path, "/token")) {
		if (!streq(q->auth, "Basic dXNlcjpwYXNz") ||
		    !strstr(q->path, "scope=repository%3Ans%2Fapp%3Apull") ||
		    !strstr(q->path, "service=reg"))
			return reply_str(fd, "401 Unauthorized", NULL, "{\"error\":\"no\"}");
		return reply_str(fd, "200 OK", NULL,
		                 "{\"access_token\":\"T1\",\"expires_in\":300}");
	}
	if (!streq(q->auth, "Bearer T1")) {
		snprintf(h, sizeof(h),
		         "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:%u/token\","
		         "service=\"reg\"\r\n",
		         s->port);
		return reply_str(
		    fd, "401 Unauthorized", h,
		    "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"token\"}]}");
	}
	if (strstr(q->path, "/manifests/v1") || strstr(q->path, "/manifests/sha256:"))
		return reply_str(fd, "200 OK",
		                 "Content-Type: application/vnd.oci.image.manifest.v1+json; "
		                 "charset=utf-8\r\n",
		                 manifest);
	reply_str(
	    fd, "404 Not Found", NULL,
	    "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\"}]}");
}

static void test_token_flow(void **state)
{
	_cleanup_(registry_freep) struct registry *r = client("user", "pass");
	_cleanup_free_ char *body = NULL, *mt = NULL, *dig = NULL;
	struct error err = {""};
	char want[DIGEST_STR_LEN + 1], url[128];
	size_t len = 0;

	(void)state;
	start(h_token);
	assert_int_equal(registry_get_manifest(r, "v1", 4096, &body, &len, &mt, &dig, &err), 0);
	assert_int_equal(len, strlen(manifest));
	assert_memory_equal(body, manifest, len);
	assert_string_equal(mt, "application/vnd.oci.image.manifest.v1+json");
	sha256_buf(manifest, strlen(manifest), want);
	assert_string_equal(dig, want);
	assert_int_equal(srv.n, 3); /* 401, token, manifest */
	assert_string_equal(srv.log[2].auth, "Bearer T1");
	free(TAKE_PTR(body));
	free(TAKE_PTR(mt));
	free(TAKE_PTR(dig));

	/* The token is reused; a missing manifest names the registry's error. */
	assert_int_equal(registry_get_manifest(r, "v2", 4096, &body, &len, &mt, &dig, &err),
	                 -ENOENT);
	assert_int_equal(srv.n, 4);
	snprintf(url, sizeof(url), "GET http://127.0.0.1:%u/v2/ns/app/manifests/v2: 404 ",
	         srv.port);
	assert_true(startswith(err.msg, url));
	assert_string_equal(err.msg + strlen(url), "MANIFEST_UNKNOWN: manifest unknown");

	/* By digest: the body must match it. */
	assert_int_equal(registry_get_manifest(r, want, 4096, &body, &len, &mt, &dig, &err), 0);
	free(TAKE_PTR(body));
	free(TAKE_PTR(mt));
	free(TAKE_PTR(dig));
	want[8] = want[8] == '0' ? '1' : '0';
	assert_int_equal(registry_get_manifest(r, want, 4096, &body, &len, &mt, &dig, &err),
	                 -EBADMSG);
	assert_non_null(strstr(err.msg, "digest mismatch"));
	assert_null(body);
	assert_int_equal(registry_get_manifest(r, "../../etc", 4096, &body, &len, &mt, &dig, &err),
	                 -EINVAL);
}

/* Tokens T1, T2, ... from the token endpoint; a token below valid_from is answered 403
 * with a fresh challenge, as registries answer a token that expired or was revoked. */
static int token_gen, valid_from = 1;

static void h_token403(struct server *s, int fd, const struct seen *q, unsigned n)
{
	char h[256], tok[32];
	int got = 0;

	(void)n;
	snprintf(h, sizeof(h),
	         "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:%u/token\",service=\"reg\"\r\n",
	         s->port);
	if (startswith(q->path, "/token")) {
		snprintf(tok, sizeof(tok), "{\"token\":\"T%d\"}", ++token_gen);
		return reply_str(fd, "200 OK", NULL, tok);
	}
	if (sscanf(q->auth, "Bearer T%d", &got) != 1)
		return reply_str(fd, "401 Unauthorized", h, "");
	if (got < valid_from)
		return reply_str(fd, "403 Forbidden", h, "{\"errors\":[{\"code\":\"DENIED\"}]}");
	reply_str(fd, "200 OK", "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
	          manifest);
}

static void test_token_403_refresh(void **state)
{
	_cleanup_(registry_freep) struct registry *r = client(NULL, NULL);
	_cleanup_free_ char *body = NULL, *mt = NULL, *dig = NULL;
	struct error err = {""};
	size_t len = 0;

	(void)state;
	token_gen = 0;
	valid_from = 1;
	start(h_token403);
	assert_int_equal(registry_get_manifest(r, "v1", 4096, &body, &len, &mt, &dig, &err), 0);
	free(TAKE_PTR(body));
	free(TAKE_PTR(mt));
	free(TAKE_PTR(dig));
	/* T1 is refused from now on: a 403, a new token, the answer. */
	valid_from = 2;
	assert_int_equal(registry_get_manifest(r, "v1", 4096, &body, &len, &mt, &dig, &err), 0);
	assert_int_equal(token_gen, 2);
	assert_string_equal(srv.log[srv.n - 1].auth, "Bearer T2");
	assert_string_equal(err.msg, "");
}

static void test_token_wrong_password(void **state)
{
	_cleanup_(registry_freep) struct registry *r = client("user", "nope");
	struct error err = {""};

	(void)state;
	start(h_token);
	assert_int_equal(registry_ping(r, &err), -EACCES);
	assert_non_null(strstr(err.msg, "/token: 401"));
}

/* Plain Basic auth. */
static void h_basic(struct server *s, int fd, const struct seen *q, unsigned n)
{
	(void)s, (void)n;
	if (!streq(q->auth, "Basic dXNlcjpwYXNz"))
		return reply_str(
		    fd, "401 Unauthorized", "WWW-Authenticate: Basic realm=\"r\"\r\n",
		    "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication "
		    "required\"}]}");
	reply_str(fd, "200 OK", NULL, "{}");
}

static void test_basic(void **state)
{
	struct error err = {""};
	struct registry *r;

	(void)state;
	start(h_basic);
	r = client(NULL, NULL);
	assert_int_equal(registry_ping(r, &err), -EACCES);
	assert_non_null(strstr(err.msg, "401 UNAUTHORIZED: authentication required"));
	registry_free(r);
	r = client("user", "wrong");
	assert_int_equal(registry_ping(r, &err), -EACCES);
	assert_non_null(strstr(err.msg, "credentials of 'user' rejected"));
	registry_free(r);
	r = client("user", "pass");
	assert_int_equal(registry_ping(r, &err), 0);
	registry_free(r);
}

/* Blob: the first answer breaks off after a third, the registry redirects to storage on
 * another origin ("localhost" instead of "127.0.0.1"), which must get no Authorization. */
static bool ignore_range;

static void h_blob(struct server *s, int fd, const struct seen *q, unsigned n)
{
	char h[256];
	unsigned long long from = 0;

	if (startswith(q->path, "/v2/")) {
		if (!streq(q->auth, "Basic dXNlcjpwYXNz"))
			return reply_str(fd, "401 Unauthorized", "WWW-Authenticate: Basic\r\n", "");
		snprintf(h, sizeof(h), "Location: http://localhost:%u/storage/b\r\n", s->port);
		return reply_str(fd, "307 Temporary Redirect", h, "");
	}
	if (q->auth[0])
		return reply_str(fd, "400 Bad Request", NULL, "leaked");
	if (q->range[0] && !ignore_range) {
		assert_int_equal(sscanf(q->range, "bytes=%llu-", &from), 1);
		snprintf(
		    h, sizeof(h), "Content-Length: %llu\r\nContent-Range: bytes %llu-%zu/%zu\r\n",
		    (unsigned long long)(s->blob_len - from), from, s->blob_len - 1, s->blob_len);
		if (n < 6) /* break off again, half way */
			return reply(fd, "206 Partial Content", h, s->blob + from,
			             (s->blob_len - from) / 2);
		return reply(fd, "206 Partial Content", h, s->blob + from, s->blob_len - from);
	}
	snprintf(h, sizeof(h), "Content-Length: %zu\r\n", s->blob_len);
	reply(fd, "200 OK", h, s->blob, n < 6 ? s->blob_len / 3 + n * 1000 : s->blob_len);
}

struct hashing {
	struct sha256 *h;
	uint64_t n;
};

static int hash_cb(const void *buf, size_t len, void *userdata)
{
	struct hashing *x = userdata;

	sha256_update(x->h, buf, len);
	x->n += len;
	return 0;
}

static void blob_case(bool ignore, uint64_t offset)
{
	_cleanup_(registry_freep) struct registry *r = client("user", "pass");
	struct error err = {""};
	struct hashing x = {sha256_new(), 0};
	char want[DIGEST_STR_LEN + 1], got[DIGEST_STR_LEN + 1];

	ignore_range = ignore;
	start(h_blob);
	sha256_buf(big_blob, sizeof(big_blob), want);
	sha256_update(x.h, big_blob, offset);
	if (registry_get_blob(r, want, offset, sizeof(big_blob), NULL, hash_cb, &x, &err) < 0)
		fail_msg("%s", err.msg);
	sha256_final(x.h, got);
	sha256_free(x.h);
	assert_int_equal(x.n, sizeof(big_blob) - offset);
	assert_string_equal(got, want);
	for (unsigned i = 0; i < srv.n; i++) {
		if (startswith(srv.log[i].path, "/storage"))
			assert_string_equal(srv.log[i].auth, "");
	}
	assert_true(srv.n > 6); /* it did break off and resume */
}

static void test_blob_resume_206(void **state)
{
	(void)state;
	blob_case(false, 0);
	assert_non_null(strstr(srv.log[srv.n - 1].range, "bytes="));
}

static void test_blob_resume_200(void **state)
{
	(void)state;
	blob_case(true, 0);
}

static void test_blob_offset(void **state)
{
	(void)state;
	blob_case(false, 1234);
	assert_string_equal(srv.log[1].range, "bytes=1234-");
}

/* A byte range of a blob (lazy pull): the bytes asked for, from a server that honours the
 * range (and breaks off, so that the range is resumed) or sends the whole blob. */
static void range_case(bool ignore)
{
	_cleanup_(registry_freep) struct registry *r = client("user", "pass");
	struct error err = {""};
	char want[DIGEST_STR_LEN + 1];
	static uint8_t buf[50000];

	ignore_range = ignore;
	start(h_blob);
	sha256_buf(big_blob, sizeof(big_blob), want);
	if (registry_get_blob_range(r, want, 1000, sizeof(buf), buf, &err) < 0)
		fail_msg("%s", err.msg);
	assert_memory_equal(buf, big_blob + 1000, sizeof(buf));
	assert_string_equal(srv.log[1].range, "bytes=1000-50999");
	assert_int_equal(registry_get_blob_range(r, "sha256:x", 0, 1, buf, &err), -EINVAL);
}

static void test_blob_range(void **state)
{
	(void)state;
	range_case(false);
	range_case(true);
}

/* Retries: 429 with Retry-After 0, then 503, then the answer; then a permanent 503. */
static void h_retry(struct server *s, int fd, const struct seen *q, unsigned n)
{
	(void)s;
	if (strstr(q->path, "/manifests/v1")) {
		if (n == 0)
			return reply_str(fd, "429 Too Many Requests", "Retry-After: 0\r\n", "");
		if (n == 1)
			return reply_str(fd, "503 Service Unavailable", NULL, "");
		return reply_str(fd, "200 OK", NULL, manifest);
	}
	if (strstr(q->path, "/manifests/loop"))
		return reply_str(fd, "302 Found", "Location: /v2/ns/app/manifests/loop\r\n", "");
	if (strstr(q->path, "/manifests/big"))
		return reply_str(fd, "200 OK", NULL, "[                                        ]");
	if (strstr(q->path, "/manifests/chunked")) {
		reply(fd, "200 OK", "Transfer-Encoding: chunked\r\n", NULL, 0);
		for (int i = 0; i < 10; i++)
			(void)write_full(fd, "10\r\n0123456789abcdef\r\n", 22);
		(void)write_full(fd, "0\r\n\r\n", 5);
		return;
	}
	if (strstr(q->path, "/blobs/"))
		return reply_str(fd, "200 OK", NULL, "0123456789");
	reply_str(fd, "503 Service Unavailable", NULL, "");
}

static void test_retries_and_limits(void **state)
{
	_cleanup_(registry_freep) struct registry *r = client(NULL, NULL);
	_cleanup_free_ char *body = NULL, *mt = NULL, *dig = NULL;
	struct error err = {""};
	struct hashing x = {sha256_new(), 0};
	size_t len;

	(void)state;
	start(h_retry);
	assert_int_equal(registry_get_manifest(r, "v1", 4096, &body, &len, &mt, &dig, &err), 0);
	assert_int_equal(srv.n, 3);
	assert_null(mt);
	free(TAKE_PTR(body));
	free(TAKE_PTR(dig));

	assert_int_equal(registry_ping(r, &err), -EIO);
	assert_non_null(strstr(err.msg, "503 Service Unavailable"));
	assert_int_equal(srv.n, 3 + 4); /* max_retries 3: four attempts */

	assert_int_equal(registry_get_manifest(r, "loop", 4096, &body, &len, &mt, &dig, &err),
	                 -ELOOP);
	assert_non_null(strstr(err.msg, "redirects"));
	assert_int_equal(registry_get_manifest(r, "big", 16, &body, &len, &mt, &dig, &err), -EFBIG);
	assert_int_equal(registry_get_manifest(r, "chunked", 100, &body, &len, &mt, &dig, &err),
	                 -EFBIG);
	assert_int_equal(registry_get_manifest(r, "chunked", 160, &body, &len, &mt, &dig, &err), 0);
	assert_int_equal(len, 160);

	/* A blob longer than its descriptor says. */
	assert_int_equal(
	    registry_get_blob(
	        r, "sha256:0000000000000000000000000000000000000000000000000000000000000000", 0, 5,
	        NULL, hash_cb, &x, &err),
	    -EFBIG);
	sha256_free(x.h);
}

/* Lying and broken lengths: each answer below used to cost a low-speed timeout per attempt,
 * and retries after it, or Range requests past the end. */
static const char small_blob[] = "{\"architecture\":\"amd64\",\"os\":\"linux\"}";

/* Blob storage whose signed redirect has expired by the time it is used, the first time:
 * the client asks the registry again and follows the fresh one. */
static int redirects_made;

static void h_expired_redirect(struct server *s, int fd, const struct seen *q, unsigned n)
{
	char h[256];
	int sig = 0;

	(void)n;
	if (startswith(q->path, "/v2/")) {
		snprintf(h, sizeof(h), "Location: http://localhost:%u/storage/b?sig=%d\r\n",
		         s->port, ++redirects_made);
		return reply_str(fd, "307 Temporary Redirect", h, "");
	}
	if (sscanf(q->path, "/storage/b?sig=%d", &sig) == 1 && sig < 2)
		return reply_str(fd, "403 Forbidden", NULL, "<Error>Request has expired</Error>");
	snprintf(h, sizeof(h), "Content-Length: %zu\r\n", strlen(small_blob));
	reply(fd, "200 OK", h, small_blob, strlen(small_blob));
}

/* Blob storage (another origin) that answers with a challenge of its own: its realm must
 * never see the registry's credentials. */
static void h_foreign_challenge(struct server *s, int fd, const struct seen *q, unsigned n)
{
	char h[256];

	(void)n;
	if (startswith(q->path, "/token"))
		return reply_str(fd, "200 OK", NULL, "{\"token\":\"T1\"}");
	if (startswith(q->path, "/v2/")) {
		if (!streq(q->auth, "Bearer T1")) {
			snprintf(h, sizeof(h),
			         "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:%u/token\"\r\n",
			         s->port);
			return reply_str(fd, "401 Unauthorized", h, "");
		}
		snprintf(h, sizeof(h), "Location: http://localhost:%u/storage/b\r\n", s->port);
		return reply_str(fd, "307 Temporary Redirect", h, "");
	}
	if (startswith(q->path, "/evil"))
		return reply_str(fd, "200 OK", NULL, "{\"token\":\"stolen\"}");
	snprintf(h, sizeof(h), "WWW-Authenticate: Bearer realm=\"http://localhost:%u/evil\"\r\n",
	         s->port);
	reply_str(fd, "401 Unauthorized", h, "");
}

static void test_foreign_challenge(void **state)
{
	_cleanup_(registry_freep) struct registry *r = client("user", "pass");
	struct error err = {""};
	char digest[DIGEST_STR_LEN + 1], buf[8];

	(void)state;
	start(h_foreign_challenge);
	sha256_buf(small_blob, strlen(small_blob), digest);
	assert_true(registry_get_blob_range(r, digest, 0, 5, buf, &err) < 0);
	for (unsigned i = 0; i < srv.n; i++)
		assert_false(startswith(srv.log[i].path, "/evil"));
}

static void test_expired_redirect(void **state)
{
	_cleanup_(registry_freep) struct registry *r = client(NULL, NULL);
	struct error err = {""};
	char digest[DIGEST_STR_LEN + 1], buf[8];

	(void)state;
	redirects_made = 0;
	start(h_expired_redirect);
	sha256_buf(small_blob, strlen(small_blob), digest);
	if (registry_get_blob_range(r, digest, 2, 5, buf, &err) < 0)
		fail_msg("%s", err.msg);
	assert_memory_equal(buf, small_blob + 2, 5);
	assert_int_equal(redirects_made, 2);
}

/* Keeps the connection open, sending nothing, until the client hangs up. */
static void hold(int fd)
{
	char c;

	while (read(fd, &c, 1) > 0)
		;
}

static void h_lengths(struct server *s, int fd, const struct seen *q, unsigned n)
{
	char h[256];

	(void)s;
	(void)n;
	if (strstr(q->path, "/blobs/sha256:cccc")) {
		/* Every byte of the blob, then neither the last chunk nor a close. */
		reply(fd, "200 OK", "Transfer-Encoding: chunked\r\n", NULL, 0);
		snprintf(h, sizeof(h), "%zx\r\n", strlen(small_blob));
		(void)write_full(fd, h, strlen(h));
		(void)write_full(fd, small_blob, strlen(small_blob));
		(void)write_full(fd, "\r\n", 2);
		return hold(fd);
	}
	if (strstr(q->path, "/manifests/missing")) {
		/* A 404 announcing more error document than it sends. */
		reply(fd, "404 Not Found", "Content-Length: 1000\r\n", "{\"errors\":[]}", 13);
		return hold(fd);
	}
	if (strstr(q->path, "/blobs/sha256:dddd")) {
		/* The server's blob is shorter than expected: the Range request past its end
		 * gets 416, which announces the full length and sends a short message. */
		if (q->range[0]) {
			snprintf(h, sizeof(h),
			         "Content-Range: bytes */%zu\r\nContent-Length: %zu\r\n",
			         strlen(small_blob), strlen(small_blob));
			reply(fd, "416 Requested Range Not Satisfiable", h, "bad range", 9);
			return hold(fd);
		}
		return reply_str(fd, "200 OK", NULL, small_blob);
	}
	if (strstr(q->path, "/blobs/sha256:eeee")) {
		/* Ten bytes per connection, then a close, Range or not. */
		unsigned long long from = 0;

		if (q->range[0])
			sscanf(q->range, "bytes=%llu-", &from);
		snprintf(
		    h, sizeof(h), "Content-Length: %llu\r\nContent-Range: bytes %llu-%zu/%zu\r\n",
		    (unsigned long long)(s->blob_len - from), from, s->blob_len - 1, s->blob_len);
		return reply(fd, from ? "206 Partial Content" : "200 OK", h, s->blob + from, 10);
	}
	/* Content-Length larger than the body, then silence. */
	snprintf(h, sizeof(h), "Content-Length: %zu\r\n", strlen(small_blob) + 100);
	reply(fd, "200 OK", h, small_blob, strlen(small_blob));
	hold(fd);
}

/* A client whose timeouts cost a second rather than the tests' usual five. */
static struct registry *quick_client(void)
{
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	struct registry_opts o = {.backoff_ms = 1, .timeout_s = 1, .max_retries = 3};
	struct registry *r = NULL;
	char s[64];

	snprintf(s, sizeof(s), "127.0.0.1:%u/ns/app:v1", srv.port);
	assert_int_equal(ref_parse(s, &ref, NULL), 0);
	assert_int_equal(registry_new(ref, &o, &r), 0);
	return r;
}

static void test_long_content_length(void **state)
{
	_cleanup_(registry_freep) struct registry *r = quick_client();
	_cleanup_free_ char *body = NULL, *mt = NULL, *dig = NULL;
	struct error err = {""};
	char want[DIGEST_STR_LEN + 1];
	size_t len = 0;

	(void)state;
	start(h_lengths);
	sha256_buf(small_blob, strlen(small_blob), want);

	/* A manifest by digest and a config: whole once the bytes held have the digest; one
	 * request each, no Range request past the end. */
	assert_int_equal(registry_get_manifest(r, want, 4096, &body, &len, &mt, &dig, &err), 0);
	assert_int_equal(len, strlen(small_blob));
	assert_string_equal(dig, want);
	assert_int_equal(srv.n, 1);
	free(TAKE_PTR(body));
	assert_int_equal(registry_get_blob_mem(r, want, 4096, &body, &len, &err), 0);
	assert_memory_equal(body, small_blob, len);
	assert_int_equal(srv.n, 2);
	assert_string_equal(srv.log[1].range, "");

	/* With the blob's size known, the announced excess fails at once. */
	free(TAKE_PTR(body));
	assert_int_equal(registry_get_blob_mem(r, want, strlen(small_blob), &body, &len, &err),
	                 -EFBIG);
	assert_non_null(strstr(err.msg, want));
	assert_non_null(strstr(err.msg, "bytes announced"));
	assert_int_equal(srv.n, 3);
}

#define DIGEST_OF(c) "sha256:" c c c c c c c c c c c c c c c c /* 64 hex digits */

static void test_stalls_after_the_payload(void **state)
{
	_cleanup_(registry_freep) struct registry *r = quick_client();
	_cleanup_free_ char *body = NULL, *mt = NULL, *dig = NULL;
	struct error err = {""};
	struct hashing x = {sha256_new(), 0};
	size_t len = 0;

	(void)state;
	start(h_lengths);
	/* Every byte of a blob of known size, then a chunked body that never ends: done,
	 * without a Range request for bytes past the end. */
	assert_int_equal(
	    registry_get_blob(r, DIGEST_OF("cccc"), 0, strlen(small_blob), NULL, hash_cb, &x, &err),
	    0);
	sha256_free(x.h);
	assert_int_equal(x.n, strlen(small_blob));
	assert_int_equal(srv.n, 1);

	/* An error answer whose body stalls is its status, not a timeout to retry. */
	assert_int_equal(registry_get_manifest(r, "missing", 4096, &body, &len, &mt, &dig, &err),
	                 -ENOENT);
	assert_non_null(strstr(err.msg, "/manifests/missing: 404"));
	assert_int_equal(srv.n, 2);
}

static void test_range_past_the_end(void **state)
{
	_cleanup_(registry_freep) struct registry *r = quick_client();
	struct error err = {""};
	struct hashing x = {sha256_new(), 0};
	char want[128];

	(void)state;
	start(h_lengths);
	/* The server's blob ends before the expected size: its 416 is final, at once. */
	assert_int_equal(registry_get_blob(r, DIGEST_OF("dddd"), 0, 1000, NULL, hash_cb, &x, &err),
	                 -EPROTO);
	sha256_free(x.h);
	snprintf(want, sizeof(want), "416 Range Not Satisfiable for bytes=%zu-: the server has %zu",
	         strlen(small_blob), strlen(small_blob));
	assert_non_null(strstr(err.msg, want));
	assert_non_null(strstr(err.msg, DIGEST_OF("dddd")));
	assert_int_equal(srv.n, 2);
}

static void test_trickle_runs_out_of_retries(void **state)
{
	_cleanup_(registry_freep) struct registry *r = quick_client();
	struct error err = {""};
	struct hashing x = {sha256_new(), 0};

	(void)state;
	start(h_lengths);
	/* Ten bytes per connection: progress, but too little to start the retries afresh. */
	assert_int_equal(
	    registry_get_blob(r, DIGEST_OF("eeee"), 0, sizeof(big_blob), NULL, hash_cb, &x, &err),
	    -ECONNRESET);
	sha256_free(x.h);
	assert_non_null(strstr(err.msg, "after 4 attempts"));
	assert_int_equal(srv.n, 4);
	assert_int_equal(x.n, 40);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_token_flow, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_blob_range, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_token_403_refresh, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_expired_redirect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_foreign_challenge, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_token_wrong_password, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_basic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_blob_resume_206, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_blob_resume_200, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_blob_offset, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retries_and_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_long_content_length, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stalls_after_the_payload, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_range_past_the_end, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_trickle_runs_out_of_retries, setup, teardown),
	};

	/* The scripted server writes to clients that may have hung up already, and the client
	 * runs with CURLOPT_NOSIGNAL: as in imgfs itself, SIGPIPE is ignored. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
