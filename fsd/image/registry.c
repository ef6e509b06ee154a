/* OCI distribution client on libcurl. See registry.h.
 *
 * Every call runs one logical request through request(): a loop of attempts (retries
 * with backoff, re-authentication on 401, Range resume of a body that broke off), each
 * attempt an exchange() that follows redirects by hand, so that the Authorization header
 * goes to the registry's own origin only. Response headers and body go through struct
 * xfer, which decides per response whether the body is payload (2xx) or an error
 * document to quote. */
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <strings.h>
#include <time.h>
#include "fsd/image/registry.h"
#include "fsd/image/auth.h"
#include "fsd/image/manifest.h"
#include "common/digest.h"
#include "common/fileio.h"
#include "common/log.h"

#define USER_AGENT "imgfs/0.1"
#define DEFAULT_RETRIES 5
#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_BACKOFF_MS 250
#define BACKOFF_MAX_MS 30000
#define RETRY_AFTER_MAX_S 120
#define MAX_REDIRECT_RETRIES 2 /* fresh redirects asked for after a refused one */
#define MAX_REDIRECTS 10
#define MAX_AUTH_ROUNDS 3
/* A resumed attempt starts a fresh series of retries only after this much progress: a
 * server that hands out a few bytes per connection runs out of retries instead of being
 * retried once per byte. */
#define RESUME_MIN_PROGRESS (64u << 10)
#define TOKEN_MAX (1u << 20)
#define ERRBODY_MAX 16384
/* curl's receive buffer: blob bytes reach the sink in chunks up to this size (curl's
 * default, 16 KiB, costs a write(), a hash update and a ring hand-off per 16 KiB). */
#define RECV_BUFFER_SIZE (512L << 10)
#define CA_FILE_MAX (4u << 20)
#define SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

static const char manifest_accept[] = "Accept: application/vnd.oci.image.index.v1+json, "
                                      "application/vnd.oci.image.manifest.v1+json, "
                                      "application/vnd.docker.distribution.manifest.list.v2+json, "
                                      "application/vnd.docker.distribution.manifest.v2+json";

enum auth_scheme {
	AUTH_NONE,   /* nothing asked for yet */
	AUTH_BEARER, /* token from the realm */
	AUTH_BASIC,  /* credentials on every request */
};

struct registry {
	char *domain;
	char *repo;
	char *origin;  /* "http://127.0.0.1:5000": URLs under origin + "/" get Authorization */
	bool insecure; /* TLS without verification, and plain HTTP when TLS is not spoken */
	bool push;     /* tokens are asked for with the push scope too */
	pthread_once_t origin_once; /* the insecure HTTPS-or-HTTP probe, done once */
	unsigned max_retries, timeout_s, backoff_ms;
	char *ca_blob; /* system CAs + certs.d/HOST/ *.crt, or NULL when there are no extras */
	size_t ca_blob_len;

	pthread_mutex_t lock;
	/* protected by lock: */
	enum auth_scheme scheme;
	char *realm, *service;
	char *token;              /* bearer token, or NULL */
	uint64_t token_expiry_ms; /* monotonic */
	unsigned auth_gen;        /* bumped whenever the credentials sent change */
	char *user, *password;
	bool creds_known; /* user/password given or looked up (may still be NULL) */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init_once(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
	                      .tv_nsec = (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void freestr(char **p)
{
	if (*p) {
		explicit_bzero(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

_printf_(2, 3) static void set_err(struct error *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

/* A growable byte buffer. */
struct buf {
	char *data;
	size_t len, cap;
};

static int buf_append(struct buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = MAX(b->cap * 2, b->len + n + 1);
		char *d = realloc(b->data, MAX(cap, (size_t)4096));

		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = MAX(cap, (size_t)4096);
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

static void buf_free(struct buf *b)
{
	free(b->data);
	*b = (struct buf){0};
}

/* --- TLS: extra CAs from certs.d ------------------------------------------------------ */

static int append_file(struct buf *b, const char *path)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r = read_file_full(AT_FDCWD, path, CA_FILE_MAX, &data, &len);

	if (r < 0)
		return r;
	r = buf_append(b, data, len);
	if (r >= 0)
		r = buf_append(b, "\n", 1);
	return r;
}

/* Collects every *.crt of BASE/HOST for each base; *ret stays NULL when there is none. */
static int load_extra_cas(const char *certs_dir, const char *host, struct buf *ret)
{
	const char *bases[2] = {"/etc/containers/certs.d", "/etc/docker/certs.d"};
	size_t n_bases = 2, n_found = 0;
	struct buf b = {0};
	int r;

	if (certs_dir) {
		bases[0] = certs_dir;
		n_bases = 1;
	}
	for (size_t i = 0; i < n_bases; i++) {
		_cleanup_free_ char *dir = path_join(bases[i], host);
		struct dirent **names = NULL;
		int n;

		if (!dir) {
			buf_free(&b);
			return -ENOMEM;
		}
		n = scandir(dir, &names, NULL, alphasort);
		if (n < 0)
			continue;
		for (int k = 0; k < n; k++) {
			size_t len = strlen(names[k]->d_name);
			_cleanup_free_ char *p = NULL;

			if (len > 4 && streq(names[k]->d_name + len - 4, ".crt")) {
				p = path_join(dir, names[k]->d_name);
				r = p ? append_file(&b, p) : -ENOMEM;
				if (r < 0)
					log_debug("cannot read CA '%s': %s", p ?: dir,
					          strerror(-r));
				else
					n_found++;
			}
			free(names[k]);
		}
		free(names);
	}
	if (n_found == 0) {
		buf_free(&b);
		return 0;
	}
	/* A CA blob replaces curl's default bundle, so the system CAs go in first. */
	{
		struct buf all = {0};

		r = append_file(&all, SYSTEM_CA_FILE);
		if (r < 0 && r != -ENOENT) {
			buf_free(&all);
			buf_free(&b);
			return r;
		}
		if (buf_append(&all, b.data, b.len) < 0) {
			buf_free(&all);
			buf_free(&b);
			return -ENOMEM;
		}
		buf_free(&b);
		*ret = all;
	}
	log_debug("%zu extra CA file(s) for %s", n_found, host);
	return 0;
}

/* --- the client ------------------------------------------------------------------------- */

void registry_free(struct registry *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->lock);
	free(r->domain);
	free(r->repo);
	free(r->origin);
	free(r->ca_blob);
	free(r->realm);
	free(r->service);
	freestr(&r->token);
	freestr(&r->user);
	freestr(&r->password);
	free(r);
}

int registry_new(const struct image_ref *ref, const struct registry_opts *opts,
                 struct registry **ret)
{
	_cleanup_(registry_freep) struct registry *r = NULL;
	struct registry_opts none = {0};
	struct buf ca = {0};
	const char *host;
	int k;

	if (!ref || ref->transport != REF_REGISTRY || !ref->domain || !ref->path)
		return -EINVAL;
	if (!opts)
		opts = &none;
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_result != CURLE_OK)
		return -ENOMEM;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	if (pthread_mutex_init(&r->lock, NULL) != 0) {
		free(TAKE_PTR(r));
		return -ENOMEM;
	}
	host = ref_registry_host(ref);
	r->domain = strdup(ref->domain);
	r->repo = strdup(ref->path);
	/* Loopback registries speak plain HTTP (as Docker's default insecure 127.0.0.0/8);
	 * --insecure means HTTPS without verification first, plain HTTP when the registry
	 * does not speak TLS, as podman's --tls-verify=false does. */
	r->insecure = opts->insecure && !ref_registry_is_loopback(ref);
	r->origin_once = (pthread_once_t)PTHREAD_ONCE_INIT;
	if (asprintf(&r->origin, "%s://%s", ref_registry_is_loopback(ref) ? "http" : "https",
	             host) < 0)
		r->origin = NULL;
	if (!r->domain || !r->repo || !r->origin)
		return -ENOMEM;
	if (opts->max_retries == REGISTRY_RETRIES_NONE)
		r->max_retries = 0;
	else
		r->max_retries = opts->max_retries ?: DEFAULT_RETRIES;
	r->timeout_s = opts->timeout_s ?: DEFAULT_TIMEOUT_S;
	r->push = opts->push;
	r->backoff_ms = opts->backoff_ms ?: DEFAULT_BACKOFF_MS;
	if (opts->username) {
		r->user = strdup(opts->username);
		r->password = strdup(opts->password ?: "");
		if (!r->user || !r->password)
			return -ENOMEM;
		r->creds_known = true;
	}
	if (startswith(r->origin, "https://")) {
		k = load_extra_cas(opts->certs_dir, host, &ca);
		if (k < 0)
			return k;
		r->ca_blob = ca.data;
		r->ca_blob_len = ca.len;
	}
	*ret = TAKE_PTR(r);
	return 0;
}

/* --- one HTTP exchange ------------------------------------------------------------------ */

/* Where a 2xx body goes: called with the bytes at absolute offset x->offset. */
struct xfer;
typedef int (*sink_fn)(struct xfer *x, const char *buf, size_t len);

struct xfer {
	struct registry *r;
	const char *accept; /* full "Accept: ..." header or NULL */
	const char *method; /* "HEAD", "POST", "PUT"; NULL: GET */
	const void *upload; /* the request body of a POST or PUT */
	size_t upload_len;
	const char *upload_type; /* full "Content-Type: ..." header of the body, or NULL */
	char *location;          /* the Location header of the last response, or NULL */
	bool want_range;         /* send Range: bytes=offset- when offset > 0 */
	uint64_t range_end;      /* with want_range: ask for bytes=offset-(range_end - 1), also from
	                          * 0, and end the transfer there (also a 200 with the whole blob) */
	bool range_done;         /* the transfer was ended at range_end */
	uint64_t offset;         /* absolute position of the next payload byte */
	uint64_t limit;          /* payload may not go beyond this absolute offset; 0: no limit */
	int limit_err;           /* error when it does (-EFBIG) */
	/* A body in memory (mem_sink) is whole once it hashes to this digest, or to the
	 * response's Docker-Content-Digest with verify_remote, even when the response
	 * announced more and then went silent. */
	const char *verify;
	bool verify_remote;
	sink_fn sink;
	void *sink_data;

	/* the current response, reset per exchange */
	long status;
	int64_t content_length;
	int64_t range_start;
	int64_t range_total; /* the N of Content-Range "bytes A-B/N" or "bytes * /N"; -1: absent */
	char remote_digest[DIGEST_STR_LEN + 1]; /* Docker-Content-Digest, or "" */
	bool headers_done, body_started, to_sink;
	uint64_t skip;       /* bytes of a 200 answer to a Range request already delivered */
	int64_t retry_after; /* seconds, from Retry-After; 0 when absent */
	int err;             /* error raised inside a callback, explained in msg */
	uint64_t last_rx_ms; /* when the last header or body bytes arrived (monotonic) */
	bool stalled;        /* aborted: nothing received for the registry's timeout */
	char msg[160];
	struct buf www_auth; /* all WWW-Authenticate values, joined with ", " */
	char *content_type;
	struct buf errbody;
	char curl_err[CURL_ERROR_SIZE];
	char url[512]; /* the URL of the last hop, for messages */
};

static void xfer_reset_response(struct xfer *x)
{
	x->status = 0;
	x->content_length = -1;
	x->range_start = -1;
	x->range_total = -1;
	x->remote_digest[0] = '\0';
	x->headers_done = x->body_started = x->to_sink = false;
	x->skip = 0;
	x->retry_after = 0;
	x->err = 0;
	x->stalled = false;
	x->range_done = false;
	free(x->location);
	x->location = NULL;
	x->msg[0] = '\0';
	buf_free(&x->www_auth);
	free(x->content_type);
	x->content_type = NULL;
	buf_free(&x->errbody);
	x->curl_err[0] = '\0';
}

static void xfer_done(struct xfer *x)
{
	free(x->location);
	x->location = NULL;
	buf_free(&x->www_auth);
	free(x->content_type);
	buf_free(&x->errbody);
}

static bool is_2xx(long s)
{
	return s >= 200 && s < 300;
}

static bool is_redirect(long s)
{
	return s == 301 || s == 302 || s == 303 || s == 307 || s == 308;
}

static char *trim(char *s, size_t len)
{
	while (len > 0 && isspace((unsigned char)s[len - 1]))
		len--;
	while (len > 0 && isspace((unsigned char)*s)) {
		s++;
		len--;
	}
	return strndup(s, len);
}

static size_t header_cb(char *line, size_t size, size_t nitems, void *userdata)
{
	struct xfer *x = userdata;
	size_t len = size * nitems;
	const char *colon;

	x->last_rx_ms = monotonic_ms();
	_cleanup_free_ char *value = NULL;

	if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* A new response (after 100 Continue, or the next hop). */
		const char *sp = memchr(line, ' ', len);

		xfer_reset_response(x);
		if (!sp || sp + 4 > line + len || !isdigit((unsigned char)sp[1]) ||
		    !isdigit((unsigned char)sp[2]) || !isdigit((unsigned char)sp[3]))
			return 0;
		x->status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
		return len;
	}
	if (len <= 2 && (line[0] == '\r' || line[0] == '\n')) {
		x->headers_done = true;
		/* A 416 is final with its headers: its body can only delay the answer (a
		 * registry may announce the blob's length there and send a short message). */
		if (x->status == 416)
			return 0;
		/* End of headers: reject an oversized payload before reading it. */
		if (is_2xx(x->status) && x->limit && x->content_length >= 0) {
			uint64_t start =
			    x->status == 206 && x->range_start >= 0 ? (uint64_t)x->range_start : 0;

			if (start + (uint64_t)x->content_length > x->limit) {
				x->err = x->limit_err;
				snprintf(x->msg, sizeof(x->msg),
				         "%" PRId64
				         " bytes announced, more than the limit of %" PRIu64,
				         x->content_length, x->limit - start);
				return 0;
			}
		}
		return len;
	}
	colon = memchr(line, ':', len);
	if (!colon)
		return len;
	value = trim((char *)colon + 1, len - (size_t)(colon + 1 - line));
	if (!value) {
		x->err = -ENOMEM;
		return 0;
	}
#define IS(name)                                                                                   \
	((size_t)(colon - line) == strlen(name) && strncasecmp(line, name, strlen(name)) == 0)
	if (IS("WWW-Authenticate")) {
		if ((x->www_auth.len && buf_append(&x->www_auth, ", ", 2) < 0) ||
		    buf_append(&x->www_auth, value, strlen(value)) < 0) {
			x->err = -ENOMEM;
			return 0;
		}
	} else if (IS("Content-Type")) {
		free(x->content_type);
		x->content_type = TAKE_PTR(value);
	} else if (IS("Location")) {
		free(x->location);
		x->location = TAKE_PTR(value);
	} else if (IS("Content-Length")) {
		char *end;
		unsigned long long v;

		errno = 0;
		v = strtoull(value, &end, 10);
		if (errno || *end || end == value || value[0] == '-')
			x->content_length = -1;
		else
			x->content_length = v > INT64_MAX ? INT64_MAX : (int64_t)v;
	} else if (IS("Retry-After")) {
		char *end;
		long v = strtol(value, &end, 10);

		if (end != value && *end == '\0' && v >= 0) {
			x->retry_after = v;
		} else {
			time_t when = curl_getdate(value, NULL);
			time_t now = time(NULL);

			if (when > now)
				x->retry_after = when - now;
		}
	} else if (IS("Content-Range")) {
		unsigned long long a, b, n;

		if (sscanf(value, "bytes %llu-%llu/%llu", &a, &b, &n) == 3) {
			x->range_start = (int64_t)MIN(a, (unsigned long long)INT64_MAX);
			x->range_total = (int64_t)MIN(n, (unsigned long long)INT64_MAX);
		} else if (sscanf(value, "bytes %llu-", &a) == 1) {
			x->range_start = (int64_t)MIN(a, (unsigned long long)INT64_MAX);
		} else if (sscanf(value, "bytes */%llu", &n) == 1) {
			x->range_total = (int64_t)MIN(n, (unsigned long long)INT64_MAX);
		}
	} else if (IS("Docker-Content-Digest")) {
		if (digest_valid(value))
			snprintf(x->remote_digest, sizeof(x->remote_digest), "%s", value);
	}
#undef IS
	return len;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct xfer *x = userdata;
	size_t len = size * nmemb;

	x->last_rx_ms = monotonic_ms();
	if (!x->body_started) {
		x->body_started = true;
		x->to_sink = is_2xx(x->status);
		if (x->status == 206) {
			if (x->range_start < 0 || (uint64_t)x->range_start != x->offset) {
				x->err = -EPROTO;
				snprintf(x->msg, sizeof(x->msg),
				         "206 for range %" PRId64 "-, asked for %" PRIu64 "-",
				         x->range_start, x->offset);
				return 0;
			}
		} else if (x->to_sink) {
			/* A 200 answers from byte 0: skip what was delivered before. */
			x->skip = x->offset;
		}
	}
	if (!x->to_sink) {
		if (x->errbody.len < ERRBODY_MAX &&
		    buf_append(&x->errbody, data, MIN(len, ERRBODY_MAX - x->errbody.len)) < 0) {
			x->err = -ENOMEM;
			return 0;
		}
		return len;
	}
	if (x->skip) {
		size_t s = (size_t)MIN((uint64_t)len, x->skip);

		x->skip -= s;
		data += s;
		len -= s;
		if (len == 0)
			return size * nmemb;
	}
	if (x->range_end && x->offset + len >= x->range_end) {
		/* The bytes asked for are here; the rest of a 200 is not wanted. */
		len = (size_t)(x->range_end - x->offset);
		x->err = len ? x->sink(x, data, len) : 0;
		if (x->err < 0) {
			snprintf(x->msg, sizeof(x->msg), "%s", strerror(-x->err));
			return 0;
		}
		x->offset += len;
		x->range_done = true;
		return 0;
	}
	if (x->limit && x->offset + len > x->limit) {
		x->err = x->limit_err;
		snprintf(x->msg, sizeof(x->msg), "body longer than %" PRIu64 " bytes", x->limit);
		return 0;
	}
	x->err = x->sink(x, data, len);
	if (x->err < 0) {
		snprintf(x->msg, sizeof(x->msg), "%s", strerror(-x->err));
		return 0;
	}
	x->offset += len;
	/* A sink that waited (a slow disk, a full index ring) is not a silent server. */
	x->last_rx_ms = monotonic_ms();
	return size * nmemb;
}

/* Ends a transfer that has received nothing for the registry's timeout. curl's own
 * low-speed limit averages over the last seconds, so it notices a server that went silent
 * after sending some bytes only several seconds late. */
static int progress_cb(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
	struct xfer *x = userdata;

	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	if (monotonic_ms() - x->last_rx_ms < (uint64_t)x->r->timeout_s * 1000)
		return 0;
	x->stalled = true;
	return 1;
}

static void curl_easy_cleanupp(CURL **c)
{
	if (*c)
		curl_easy_cleanup(*c);
}

static void curl_slist_free_allp(struct curl_slist **l)
{
	if (*l)
		curl_slist_free_all(*l);
}

/* The Authorization header value for the registry's origin, or NULL (anonymous). Sets
 * *gen to the auth generation it belongs to. */
static int auth_header(struct registry *r, char **ret, unsigned *gen)
{
	_cleanup_free_ char *b64 = NULL;
	char *h = NULL;
	int k = 0;

	pthread_mutex_lock(&r->lock);
	*gen = r->auth_gen;
	if (r->scheme == AUTH_BEARER && r->token) {
		if (asprintf(&h, "Authorization: Bearer %s", r->token) < 0)
			k = -ENOMEM, h = NULL;
	} else if (r->scheme == AUTH_BASIC && r->user) {
		k = auth_basic_encode(r->user, r->password, &b64);
		if (k >= 0 && asprintf(&h, "Authorization: Basic %s", b64) < 0)
			k = -ENOMEM, h = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	if (k >= 0)
		*ret = h;
	return k;
}

static bool same_origin(const char *origin, const char *url)
{
	size_t n = strlen(origin);

	return strncasecmp(url, origin, n) == 0 && (url[n] == '/' || url[n] == '\0');
}

enum {
	AUTH_REGISTRY, /* the registry's token or Basic credentials on its own origin */
	AUTH_PLAIN,    /* nothing */
};

/* Performs one request, following redirects by hand. Returns the final HTTP status, or a
 * negative curl error mapped to -errno (x->curl_err names it). *ret_retryable says whether
 * a network error is worth another attempt; *ret_gen is the auth generation that was sent. */
static int exchange(struct xfer *x, const char *url0, const char *extra_auth, int mode,
                    bool *ret_retryable, unsigned *ret_gen, char **ret_final_url)
{
	struct registry *r = x->r;
	_cleanup_(curl_easy_cleanupp) CURL *c = curl_easy_init();
	_cleanup_free_ char *url = strdup(url0);
	unsigned hops = 0;

	*ret_retryable = false;
	*ret_gen = 0;
	if (!c || !url)
		return -ENOMEM;
	for (;;) {
		_cleanup_(curl_slist_free_allp) struct curl_slist *hdrs = NULL;
		_cleanup_free_ char *auth = NULL;
		char range[64];
		CURLcode rc;
		struct curl_slist *t;
		char *loc = NULL;

		curl_easy_reset(c);
		xfer_reset_response(x);
		if (x->accept && !(hdrs = curl_slist_append(hdrs, x->accept)))
			return -ENOMEM;
		if (x->upload_type) {
			if (!(t = curl_slist_append(hdrs, x->upload_type)))
				return -ENOMEM;
			hdrs = t;
		}
		if (x->want_range && x->range_end > x->offset) {
			snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-%" PRIu64,
			         x->offset, x->range_end - 1);
			if (!(t = curl_slist_append(hdrs, range)))
				return -ENOMEM;
			hdrs = t;
		} else if (x->want_range && x->offset > 0) {
			snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-", x->offset);
			if (!(t = curl_slist_append(hdrs, range)))
				return -ENOMEM;
			hdrs = t;
		}
		if (same_origin(r->origin, url)) {
			if (mode == AUTH_REGISTRY) {
				int k = auth_header(r, &auth, ret_gen);

				if (k < 0)
					return k;
			} else if (extra_auth) {
				auth = strdup(extra_auth);
				if (!auth)
					return -ENOMEM;
			}
		} else if (extra_auth && hops == 0) {
			/* The token realm's own origin gets the Basic credentials. */
			auth = strdup(extra_auth);
			if (!auth)
				return -ENOMEM;
		}
		if (auth) {
			if (!(t = curl_slist_append(hdrs, auth)))
				return -ENOMEM;
			hdrs = t;
		}
		snprintf(x->url, sizeof(x->url), "%s", url);
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(c, CURLOPT_USERAGENT, USER_AGENT);
		curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
		curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)r->timeout_s);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)r->timeout_s);
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_cb);
		curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
		curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
		curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
		curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
		curl_easy_setopt(c, CURLOPT_BUFFERSIZE, RECV_BUFFER_SIZE);
		if (x->method && streq(x->method, "HEAD")) {
			curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
		} else if (x->method) {
			/* A body (empty for a POST that starts an upload), sent as given. */
			curl_easy_setopt(c, CURLOPT_POSTFIELDS, x->upload ? x->upload : "");
			curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->upload_len);
			curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, x->method);
		}
		curl_easy_setopt(c, CURLOPT_ERRORBUFFER, x->curl_err);
		if (r->insecure) {
			curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
			curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
		}
		if (r->ca_blob) {
			struct curl_blob blob = {
			    .data = r->ca_blob, .len = r->ca_blob_len, .flags = CURL_BLOB_NOCOPY};

			curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &blob);
		}
		x->curl_err[0] = '\0';
		x->last_rx_ms = monotonic_ms();
		rc = curl_easy_perform(c);
		if (rc == CURLE_ABORTED_BY_CALLBACK && x->stalled) {
			snprintf(x->curl_err, sizeof(x->curl_err),
			         "timed out: nothing received for %u s", r->timeout_s);
			rc = CURLE_OPERATION_TIMEDOUT;
		}
		if (x->err < 0) {
			snprintf(x->curl_err, sizeof(x->curl_err), "%s", x->msg);
			return x->err;
		}
		if (x->range_done) {
			if (ret_final_url)
				*ret_final_url = TAKE_PTR(url);
			return (int)x->status;
		}
		if (rc != CURLE_OK && x->headers_done && !is_2xx(x->status) &&
		    !is_redirect(x->status)) {
			/* An error answer is its status: a body that broke off, stalled or was
			 * not read (416) only shortens the message quoted from it. */
			log_debug("GET %s: %ld with an incomplete body: %s", url, x->status,
			          x->curl_err[0] ? x->curl_err : curl_easy_strerror(rc));
			x->curl_err[0] = '\0';
			rc = CURLE_OK;
		}
		if (rc != CURLE_OK) {
			if (!x->curl_err[0])
				snprintf(x->curl_err, sizeof(x->curl_err), "%s",
				         curl_easy_strerror(rc));
			switch (rc) {
			case CURLE_OPERATION_TIMEDOUT:
				/* curl words the low-speed limit as "Operation too slow";
				 * here it means the server went silent. */
				if (startswith(x->curl_err, "Operation too slow"))
					snprintf(x->curl_err, sizeof(x->curl_err),
					         "timed out: nothing received for %u s",
					         r->timeout_s);
				*ret_retryable = true;
				return -ETIMEDOUT;
			case CURLE_COULDNT_CONNECT:
				*ret_retryable = true;
				return -ECONNREFUSED;
			case CURLE_PARTIAL_FILE:
			case CURLE_RECV_ERROR:
			case CURLE_SEND_ERROR:
			case CURLE_GOT_NOTHING:
			case CURLE_HTTP2:
			case CURLE_HTTP2_STREAM:
				*ret_retryable = true;
				return -ECONNRESET;
			case CURLE_COULDNT_RESOLVE_HOST:
				return -EHOSTUNREACH;
			case CURLE_WEIRD_SERVER_REPLY:
			case CURLE_UNSUPPORTED_PROTOCOL:
				return -EPROTO;
			case CURLE_OUT_OF_MEMORY:
				return -ENOMEM;
			default:
				return -EIO;
			}
		}
		if (!is_redirect(x->status) || (x->method && !streq(x->method, "HEAD"))) {
			/* A request with a body is never replayed elsewhere: its caller reads
			 * the Location. */
			if (ret_final_url)
				*ret_final_url = TAKE_PTR(url);
			return (int)x->status;
		}
		if (++hops > MAX_REDIRECTS) {
			snprintf(x->curl_err, sizeof(x->curl_err), "more than %d redirects",
			         MAX_REDIRECTS);
			return -ELOOP;
		}
		if (curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &loc) != CURLE_OK || !loc ||
		    !(startswith(loc, "http://") || startswith(loc, "https://"))) {
			snprintf(x->curl_err, sizeof(x->curl_err),
			         "%ld redirect without a usable "
			         "Location",
			         x->status);
			return -EPROTO;
		}
		log_debug("%s redirected to %.200s", url, loc);
		free(url);
		url = strdup(loc);
		if (!url)
			return -ENOMEM;
	}
}

/* --- errors ------------------------------------------------------------------------------ */

static const char *status_text(long s)
{
	switch (s) {
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 416:
		return "Range Not Satisfiable";
	case 429:
		return "Too Many Requests";
	case 500:
		return "Internal Server Error";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	default:
		return "";
	}
}

/* Formats "METHOD URL: STATUS CODE: message" from the registry's JSON error document
 * ({"errors":[{"code":…,"message":…}]}), or the status text when there is none. */
static void http_error(struct error *err, const char *url, const struct xfer *x)
{
	json_t *root = NULL, *e;
	const char *code = NULL, *msg = NULL;

	if (!err)
		return;
	if (x->url[0])
		url = x->url;
	if (x->errbody.len)
		root = json_loadb(x->errbody.data, x->errbody.len, 0, NULL);
	e = json_array_get(json_object_get(root, "errors"), 0);
	code = json_string_value(json_object_get(e, "code"));
	msg = json_string_value(json_object_get(e, "message"));
	if (!code && !msg) {
		/* token servers: {"error": "...", "details": "..."} */
		code = json_string_value(json_object_get(root, "error"));
		msg = json_string_value(json_object_get(root, "details"));
	}
	if (code || msg)
		set_err(err, "GET %s: %ld %.60s%s%.200s", url, x->status, code ?: "",
		        code && msg ? ": " : "", msg ?: "");
	else
		set_err(err, "GET %s: %ld %s", url, x->status, status_text(x->status));
	json_decref(root);
}

static int status_errno(long s)
{
	if (s == 401 || s == 403)
		return -EACCES;
	if (s == 404)
		return -ENOENT;
	if (s == 429)
		return -EAGAIN;
	if (s >= 500)
		return -EIO;
	return -EPROTO;
}

static bool status_retryable(long s)
{
	return s == 408 || s == 429 || (s >= 500 && s != 501 && s != 505);
}

/* --- authentication --------------------------------------------------------------------- */

static int mem_sink(struct xfer *x, const char *buf, size_t len)
{
	return buf_append(x->sink_data, buf, len);
}

static char *url_escape(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0);
	char *out = e ? strdup(e) : NULL;

	curl_free(e);
	return out;
}

/* Credentials for the token or Basic flow; looked up once. Called with r->lock held. */
static void ensure_creds_locked(struct registry *r)
{
	if (r->creds_known)
		return;
	r->creds_known = true;
	if (auth_lookup(r->domain, &r->user, &r->password) <= 0) {
		r->user = NULL;
		r->password = NULL;
	}
}

/* Fetches a token from the challenge's realm. Called with r->lock held. */
static int fetch_token_locked(struct registry *r, const struct www_auth *wa, struct error *err)
{
	_cleanup_free_ char *url = NULL, *svc = NULL, *scope = NULL, *sc = NULL, *basic = NULL;
	_cleanup_free_ char *b64 = NULL;
	struct buf body = {0};
	struct xfer x = {
	    .r = r, .sink = mem_sink, .sink_data = &body, .limit = TOKEN_MAX, .limit_err = -EFBIG};
	json_t *root = NULL;
	const char *tok;
	json_int_t expires = 0;
	bool retryable;
	unsigned gen, attempt = 0;
	int k;

	if (!startswith(wa->realm, "https://") && !startswith(wa->realm, "http://")) {
		set_err(err, "%s: token realm '%.200s' is not an http(s) URL", r->origin,
		        wa->realm);
		return -EPROTO;
	}
	if (asprintf(&sc, "repository:%s:%s", r->repo, r->push ? "pull,push" : "pull") < 0)
		return -ENOMEM;
	scope = url_escape(sc);
	svc = wa->service ? url_escape(wa->service) : strdup("");
	if (!scope || !svc)
		return -ENOMEM;
	if (asprintf(&url, "%s%sscope=%s%s%s", wa->realm, strchr(wa->realm, '?') ? "&" : "?", scope,
	             wa->service ? "&service=" : "", svc) < 0)
		return -ENOMEM;
	ensure_creds_locked(r);
	if (r->user) {
		k = auth_basic_encode(r->user, r->password, &b64);
		if (k < 0)
			return k;
		if (asprintf(&basic, "Authorization: Basic %s", b64) < 0)
			return -ENOMEM;
	}
	for (;;) {
		body.len = 0;
		x.offset = 0;
		k = exchange(&x, url, basic, AUTH_PLAIN, &retryable, &gen, NULL);
		if ((k < 0 && retryable) || (k > 0 && status_retryable(k))) {
			if (attempt++ < r->max_retries) {
				sleep_ms((uint64_t)r->backoff_ms << MIN(attempt - 1, 7u));
				continue;
			}
		}
		break;
	}
	if (k < 0) {
		set_err(err, "GET %s: %s", wa->realm, x.curl_err[0] ? x.curl_err : strerror(-k));
	} else if (!is_2xx(k)) {
		x.url[0] = '\0'; /* name the realm, not the query with the scope */
		http_error(err, wa->realm, &x);
		k = status_errno(k);
	} else {
		root = json_loadb(body.data ?: "", body.len, 0, NULL);
		tok = json_string_value(json_object_get(root, "token"));
		if (!tok || !*tok)
			tok = json_string_value(json_object_get(root, "access_token"));
		if (!tok || !*tok || strpbrk(tok, "\r\n")) {
			set_err(err, "GET %s: the token server's answer has no token", wa->realm);
			k = -EPROTO;
		} else {
			if (json_is_integer(json_object_get(root, "expires_in")))
				expires = json_integer_value(json_object_get(root, "expires_in"));
			/* The distribution spec's minimum is 60 s when unset or smaller. */
			if (expires < 60)
				expires = 60;
			freestr(&r->token);
			r->token = strdup(tok);
			k = r->token ? 0 : -ENOMEM;
			/* Refresh a little early so that a request never leaves with a token
			 * about to expire. */
			r->token_expiry_ms = monotonic_ms() + (uint64_t)expires * 1000 -
			                     MIN((uint64_t)expires * 100, (uint64_t)30000);
			log_debug("token for %s from %s (expires in %lld s)", r->repo, wa->realm,
			          (long long)expires);
		}
	}
	json_decref(root);
	if (body.data)
		explicit_bzero(body.data, body.len);
	buf_free(&body);
	xfer_done(&x);
	return k;
}

/* Reacts to a 401 for a request sent with auth generation gen: takes the challenge,
 * fetches a new token or switches to Basic. Another thread may have done it already
 * (the generation moved on), then there is nothing to do. */
static int authenticate(struct registry *r, const char *challenge, unsigned gen, struct error *err,
                        const char *url)
{
	/* The caller has put the 401 into err; token failures replace it. */
	struct www_auth wa = {0};
	int k;

	k = www_auth_parse(challenge ?: "", &wa);
	if (k < 0) {
		set_err(err, "GET %s: 401 with %s WWW-Authenticate challenge '%.100s'", url,
		        k == -EOPNOTSUPP ? "an unsupported" : "a malformed", challenge ?: "");
		return k == -EOPNOTSUPP ? -EACCES : -EPROTO;
	}
	pthread_mutex_lock(&r->lock);
	if (r->auth_gen != gen) {
		k = 0;
	} else if (streq(wa.scheme, "Bearer")) {
		free(r->realm);
		free(r->service);
		r->realm = strdup(wa.realm);
		r->service = wa.service ? strdup(wa.service) : NULL;
		r->scheme = AUTH_BEARER;
		k = fetch_token_locked(r, &wa, err);
		r->auth_gen++;
	} else {
		ensure_creds_locked(r);
		if (!r->user || r->scheme == AUTH_BASIC) {
			/* err already quotes the 401; say which credentials were used. */
			if (err && r->user) {
				size_t n = strlen(err->msg);

				snprintf(err->msg + n, sizeof(err->msg) - n,
				         " (credentials of '%.40s' rejected)", r->user);
			} else if (err && !r->user) {
				size_t n = strlen(err->msg);

				snprintf(err->msg + n, sizeof(err->msg) - n,
				         " (no credentials for %.60s, see imgfs login)", r->domain);
			}
			k = -EACCES;
		} else {
			r->scheme = AUTH_BASIC;
			r->auth_gen++;
			k = 0;
		}
	}
	pthread_mutex_unlock(&r->lock);
	www_auth_clear(&wa);
	return k;
}

/* Renews a token close to its expiry before a request goes out. */
static int refresh_if_expiring(struct registry *r, struct error *err)
{
	struct www_auth wa = {0};
	int k = 0;

	pthread_mutex_lock(&r->lock);
	if (r->scheme == AUTH_BEARER && r->token && r->realm &&
	    monotonic_ms() >= r->token_expiry_ms) {
		wa.realm = r->realm;
		wa.service = r->service;
		k = fetch_token_locked(r, &wa, err);
		r->auth_gen++;
	}
	pthread_mutex_unlock(&r->lock);
	return k;
}

/* --- the request loop ------------------------------------------------------------------- */

/* True when the payload is whole although its response broke off or stalled: every byte
 * up to expect_end, or a body in memory with the digest it should have. A server that
 * announces more than it sends and then holds the connection is done with once its
 * payload is. */
static bool payload_complete(const struct xfer *x, uint64_t expect_end)
{
	const struct buf *b = x->sink_data;
	const char *want = x->verify;
	char got[DIGEST_STR_LEN + 1];

	if (expect_end)
		return x->offset >= expect_end;
	if (!want && x->verify_remote && x->remote_digest[0])
		want = x->remote_digest;
	if (!want || x->sink != mem_sink)
		return false;
	sha256_buf(b->data ?: "", b->len, got);
	return streq(got, want);
}

/* A 416 answers a Range request that starts at or past the end of what the server has:
 * final either way. Returns 0 when the payload held is whole (a blob of unknown size, left
 * to the caller's digest check), else -EPROTO with err naming the range and sizes. */
static int range_not_satisfiable(struct xfer *x, const char *url, uint64_t expect_end,
                                 struct error *err)
{
	if (x->range_total >= 0 && x->offset < (uint64_t)x->range_total) {
		http_error(err, url, x);
		return -EPROTO;
	}
	if (expect_end == 0 || x->offset >= expect_end)
		return 0;
	if (x->range_total >= 0)
		set_err(err,
		        "GET %s: 416 Range Not Satisfiable for bytes=%" PRIu64
		        "-: the server has %" PRId64 " bytes, %" PRIu64 " expected",
		        x->url[0] ? x->url : url, x->offset, x->range_total, expect_end);
	else
		set_err(err,
		        "GET %s: 416 Range Not Satisfiable for bytes=%" PRIu64 "- of %" PRIu64
		        " bytes",
		        x->url[0] ? x->url : url, x->offset, expect_end);
	return -EPROTO;
}

/* Runs x against url until a 2xx completes the payload: re-authenticates on 401, retries
 * with backoff on 429/5xx/network errors, and resumes from x->offset when want_range is
 * set. Returns 0 or -errno with err filled. When resuming is impossible, a retry starts
 * over and reset(x) is called first. */
static int request(struct registry *r, struct xfer *x, const char *url,
                   void (*reset)(struct xfer *), uint64_t expect_end, struct error *err)
{
	unsigned attempt = 0, auth_rounds = 0, reresolved = 0;
	int k;

	for (;;) {
		uint64_t before;
		bool retryable = false;
		unsigned gen = 0;
		uint64_t delay;

		if (reset)
			reset(x);
		before = x->offset;
		k = refresh_if_expiring(r, err);
		if (k < 0)
			return k;
		k = exchange(x, url, NULL, AUTH_REGISTRY, &retryable, &gen, NULL);
		if (k == 416 && x->want_range && x->offset > 0) {
			k = range_not_satisfiable(x, url, expect_end, err);
			if (k == 0 && err)
				err->msg[0] = '\0';
			return k;
		}
		if (k < 0 && retryable && payload_complete(x, expect_end)) {
			log_debug("GET %s: %s after the whole payload, done", url, x->curl_err);
			if (err)
				err->msg[0] = '\0';
			return 0;
		}
		if (k > 0 && is_2xx(k)) {
			if (expect_end == 0 || x->offset >= expect_end) {
				if (err)
					err->msg[0] = '\0';
				return 0;
			}
			/* A clean end before the expected size: resume like a dropped
			 * connection. */
			snprintf(x->curl_err, sizeof(x->curl_err),
			         "body ended at byte %" PRIu64 " of %" PRIu64, x->offset,
			         expect_end);
			k = -ECONNRESET;
			retryable = x->want_range;
		}
		if (x->want_range && x->offset - before >= RESUME_MIN_PROGRESS) {
			/* Progress: the next failure starts a fresh series of retries. */
			attempt = 0;
			auth_rounds = 0;
		}
		/* A 403 with a challenge is a token that no longer does (some registries answer
		 * an expired token so): the same as a 401, within the same bound. Only the
		 * registry's own origin is believed: a challenge from where a redirect or a
		 * foreign layer's URL led could name any realm, which would get the user's
		 * credentials. */
		if ((k == 401 || (k == 403 && x->www_auth.data)) &&
		    same_origin(r->origin, x->url)) {
			if (++auth_rounds > MAX_AUTH_ROUNDS) {
				http_error(err, url, x);
				return -EACCES;
			}
			_cleanup_free_ char *ch =
			    x->www_auth.data ? strdup(x->www_auth.data) : NULL;
			http_error(err, url, x);
			k = authenticate(r, ch, gen, err, url);
			if (k < 0)
				return k;
			continue;
		}
		/* Refused where a redirect led (a signed blob-storage URL that expired during a
		 * long-lived mount): ask the registry again, for a fresh redirect. */
		if (k >= 400 && k < 500 && k != 416 && k != 429 &&
		    !same_origin(r->origin, x->url) && reresolved++ < MAX_REDIRECT_RETRIES) {
			log_debug("GET %s: %ld at %.200s, asking the registry again", url, (long)k,
			          x->url);
			continue;
		}
		if (k > 0 && !status_retryable(k)) {
			http_error(err, url, x);
			return status_errno(k);
		}
		if (k < 0 && !retryable) {
			set_err(err, "GET %s: %s", url,
			        x->curl_err[0] ? x->curl_err : strerror(-k));
			return k;
		}
		if (attempt >= r->max_retries) {
			if (k > 0) {
				http_error(err, url, x);
				k = status_errno(k);
			} else {
				set_err(err, "GET %s: %s (after %u attempts)", url,
				        x->curl_err[0] ? x->curl_err : strerror(-k), attempt + 1);
			}
			return k;
		}
		delay = (uint64_t)r->backoff_ms << MIN(attempt, 10u);
		delay = MIN(delay, (uint64_t)BACKOFF_MAX_MS);
		if ((k == 429 || k == 503) && x->retry_after > 0)
			delay = (uint64_t)MIN(x->retry_after, (int64_t)RETRY_AFTER_MAX_S) * 1000;
		log_debug("GET %s: %s, retry %u in %" PRIu64 " ms", url,
		          k > 0 ? status_text(k) : x->curl_err, attempt + 1, delay);
		attempt++;
		sleep_ms(delay);
	}
}

/* --- public calls ----------------------------------------------------------------------- */

static void reset_mem(struct xfer *x)
{
	struct buf *b = x->sink_data;

	b->len = 0;
	x->offset = 0;
}

/* pthread_once has no argument: the registry being probed is handed over in a thread-local. */
static __thread struct registry *probing;

static size_t discard_cb(char *p, size_t size, size_t n, void *ud)
{
	(void)p;
	(void)ud;
	return size * n;
}

/* For an insecure registry: keeps https:// when the registry answers TLS at all (any HTTP
 * status), switches to http:// when the TLS handshake fails. */
static void probe_origin(void)
{
	struct registry *r = probing;
	_cleanup_free_ char *url = NULL;
	CURL *c;
	CURLcode rc;

	if (asprintf(&url, "%s/v2/", r->origin) < 0)
		return;
	c = curl_easy_init();
	if (!c)
		return;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)r->timeout_s);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)r->timeout_s);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_cb);
	rc = curl_easy_perform(c);
	curl_easy_cleanup(c);
	if (rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR) {
		char *http = NULL;

		if (asprintf(&http, "http://%s", r->origin + strlen("https://")) >= 0) {
			free(r->origin);
			r->origin = http;
		}
	}
}

/* The origin to build URLs on; probes an insecure registry once. */
static const char *origin(struct registry *r)
{
	if (r->insecure) {
		probing = r;
		pthread_once(&r->origin_once, probe_origin);
	}
	return r->origin;
}

void registry_set_limits(struct registry *r, unsigned max_retries, unsigned timeout_s)
{
	r->max_retries = max_retries;
	r->timeout_s = timeout_s ? timeout_s : r->timeout_s;
}

int registry_ping(struct registry *r, struct error *err)
{
	_cleanup_free_ char *url = NULL;
	struct buf body = {0};
	struct xfer x = {.r = r,
	                 .sink = mem_sink,
	                 .sink_data = &body,
	                 .limit = ERRBODY_MAX,
	                 .limit_err = -EFBIG};
	int k;

	if (asprintf(&url, "%s/v2/", origin(r)) < 0)
		return -ENOMEM;
	k = request(r, &x, url, reset_mem, 0, err);
	buf_free(&body);
	xfer_done(&x);
	return k;
}

/* The URL of blob digest in the registry's repository (malloc'ed), or -EINVAL. */
static int blob_url(struct registry *r, const char *digest, char **ret, struct error *err)
{
	if (!digest_valid(digest)) {
		set_err(err, "invalid blob digest '%.100s'", digest);
		return -EINVAL;
	}
	if (asprintf(ret, "%s/v2/%s/blobs/%s", origin(r), r->repo, digest) < 0) {
		*ret = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Tags and digests only: nothing that could change the URL's meaning. */
static bool reference_valid(const char *s)
{
	size_t len = strlen(s);

	if (digest_valid(s))
		return true;
	if (len == 0 || len > 128)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i]))
			return false;
	return true;
}

int registry_get_manifest(struct registry *r, const char *reference, size_t max, char **ret_body,
                          size_t *ret_len, char **ret_media_type, char **ret_digest,
                          struct error *err)
{
	_cleanup_free_ char *url = NULL, *mt = NULL, *dig = NULL;
	struct buf body = {0};
	struct xfer x = {.r = r,
	                 .accept = manifest_accept,
	                 .verify = digest_valid(reference) ? reference : NULL,
	                 .verify_remote = true,
	                 .sink = mem_sink,
	                 .sink_data = &body,
	                 .limit = max,
	                 .limit_err = -EFBIG};
	char got[DIGEST_STR_LEN + 1];
	int k;

	if (!reference_valid(reference)) {
		set_err(err, "invalid manifest reference '%.100s'", reference);
		return -EINVAL;
	}
	if (asprintf(&url, "%s/v2/%s/manifests/%s", origin(r), r->repo, reference) < 0)
		return -ENOMEM;
	k = request(r, &x, url, reset_mem, 0, err);
	if (k < 0)
		goto out;
	sha256_buf(body.data ?: "", body.len, got);
	if (digest_valid(reference) && !streq(got, reference)) {
		set_err(err, "GET %s: manifest digest mismatch: got %s", url, got);
		k = -EBADMSG;
		goto out;
	}
	if (x.content_type) {
		mt = strndup(x.content_type, strcspn(x.content_type, "; \t"));
		if (!mt) {
			k = -ENOMEM;
			goto out;
		}
	}
	dig = strdup(got);
	if (!dig || (!body.data && buf_append(&body, "", 0) < 0)) {
		k = -ENOMEM;
		goto out;
	}
	*ret_len = body.len;
	*ret_body = TAKE_PTR(body.data);
	*ret_media_type = TAKE_PTR(mt);
	*ret_digest = TAKE_PTR(dig);
out:
	buf_free(&body);
	xfer_done(&x);
	return k;
}

struct user_sink {
	registry_data_fn fn;
	void *userdata;
};

static int call_user_sink(struct xfer *x, const char *buf, size_t len)
{
	struct user_sink *u = x->sink_data;

	return u->fn(buf, len, u->userdata);
}

static int get_blob_url(struct registry *r, struct xfer *x, const char *url, uint64_t end,
                        struct error *err)
{
	return request(r, x, url, NULL, end, err);
}

int registry_get_blob(struct registry *r, const char *digest, uint64_t offset,
                      uint64_t expected_size, char *const *urls, registry_data_fn fn,
                      void *userdata, struct error *err)
{
	_cleanup_free_ char *url = NULL;
	struct user_sink u = {fn, userdata};
	struct xfer x = {.r = r,
	                 .want_range = true,
	                 .offset = offset,
	                 .limit = expected_size,
	                 .limit_err = -EFBIG,
	                 .sink = call_user_sink,
	                 .sink_data = &u};
	int k;

	if (expected_size && offset >= expected_size && digest_valid(digest))
		return offset == expected_size ? 0 : -EINVAL;
	k = blob_url(r, digest, &url, err);
	if (k < 0)
		return k;
	k = get_blob_url(r, &x, url, expected_size, err);
	/* Foreign layers: the registry may not have them; their URLs get no credentials. */
	for (size_t i = 0; k == -ENOENT && urls && urls[i] && x.offset == offset; i++) {
		if (!startswith(urls[i], "https://") && !startswith(urls[i], "http://"))
			continue;
		k = get_blob_url(r, &x, urls[i], expected_size, err);
	}
	xfer_done(&x);
	return k;
}

int registry_get_blob_mem(struct registry *r, const char *digest, size_t max, char **ret_body,
                          size_t *ret_len, struct error *err)
{
	_cleanup_free_ char *url = NULL;
	struct buf body = {0};
	struct xfer x = {.r = r,
	                 .want_range = true,
	                 .verify = digest,
	                 .sink = mem_sink,
	                 .sink_data = &body,
	                 .limit = max,
	                 .limit_err = -EFBIG};
	char got[DIGEST_STR_LEN + 1];
	int k;

	k = blob_url(r, digest, &url, err);
	if (k < 0)
		return k;
	k = request(r, &x, url, NULL, 0, err);
	if (k >= 0) {
		sha256_buf(body.data ?: "", body.len, got);
		if (!streq(got, digest)) {
			set_err(err, "GET %s: blob digest mismatch: got %s", url, got);
			k = -EBADMSG;
		} else if (!body.data && buf_append(&body, "", 0) < 0) {
			k = -ENOMEM;
		} else {
			*ret_len = body.len;
			*ret_body = TAKE_PTR(body.data);
		}
	}
	buf_free(&body);
	xfer_done(&x);
	return k;
}

struct range_sink {
	uint8_t *buf;
	uint64_t start;
};

static int range_sink(struct xfer *x, const char *data, size_t len)
{
	struct range_sink *rs = x->sink_data;

	memcpy(rs->buf + (x->offset - rs->start), data, len);
	return 0;
}

int registry_get_blob_range(struct registry *r, const char *digest, uint64_t offset, uint64_t len,
                            void *buf, struct error *err)
{
	_cleanup_free_ char *url = NULL;
	struct range_sink rs = {buf, offset};
	struct xfer x = {.r = r,
	                 .want_range = true,
	                 .offset = offset,
	                 .range_end = offset + len,
	                 .sink = range_sink,
	                 .sink_data = &rs};
	int k;

	k = blob_url(r, digest, &url, err);
	if (k < 0 || len == 0)
		return k;
	k = request(r, &x, url, NULL, offset + len, err);
	xfer_done(&x);
	return k;
}

int registry_get_referrers(struct registry *r, const char *digest, size_t max, char **ret_body,
                           size_t *ret_len, struct error *err)
{
	_cleanup_free_ char *url = NULL;
	struct buf body = {0};
	struct xfer x = {.r = r,
	                 .accept = "Accept: " MT_OCI_INDEX,
	                 .sink = mem_sink,
	                 .sink_data = &body,
	                 .limit = max,
	                 .limit_err = -EFBIG};
	int k;

	if (!digest_valid(digest)) {
		set_err(err, "invalid digest '%.100s'", digest);
		return -EINVAL;
	}
	if (asprintf(&url, "%s/v2/%s/referrers/%s", origin(r), r->repo, digest) < 0)
		return -ENOMEM;
	k = request(r, &x, url, reset_mem, 0, err);
	/* A registry without the API answers 404, or 400, 405 or 501 for an unknown route. */
	if (k < 0 && (x.status == 404 || x.status == 400 || x.status == 405 || x.status == 501))
		k = -ENOENT;
	if (k >= 0 && (!x.content_type || !startswith(x.content_type, MT_OCI_INDEX)))
		k = -ENOENT; /* not the API: a catch-all answer */
	if (k >= 0 && !body.data && buf_append(&body, "", 0) < 0)
		k = -ENOMEM;
	if (k >= 0) {
		*ret_len = body.len;
		*ret_body = TAKE_PTR(body.data);
	}
	buf_free(&body);
	xfer_done(&x);
	return k;
}

int registry_has_blob(struct registry *r, const char *digest, struct error *err)
{
	_cleanup_free_ char *url = NULL;
	struct buf body = {0};
	struct xfer x = {.r = r, .method = "HEAD", .sink = mem_sink, .sink_data = &body};
	int k;

	k = blob_url(r, digest, &url, err);
	if (k < 0)
		return k;
	k = request(r, &x, url, reset_mem, 0, err);
	buf_free(&body);
	xfer_done(&x);
	if (k == -ENOENT) {
		if (err)
			err->msg[0] = '\0';
		return 0;
	}
	return k < 0 ? k : 1;
}

/* An upload URL from a Location header: absolute, or a path on the registry's origin. */
static char *upload_url(struct registry *r, const char *location, const char *digest)
{
	char *url = NULL;

	if (!location || !*location)
		return NULL;
	if (asprintf(&url, "%s%s%sdigest=%s", location[0] == '/' ? origin(r) : "", location,
	             strchr(location, '?') ? "&" : "?", digest) < 0)
		return NULL;
	return url;
}

int registry_put_blob(struct registry *r, const char *digest, const void *buf, size_t len,
                      struct error *err)
{
	_cleanup_free_ char *url = NULL, *put = NULL;
	struct buf body = {0};
	struct xfer x = {.r = r, .method = "POST", .sink = mem_sink, .sink_data = &body};
	int k;

	if (!digest_valid(digest)) {
		set_err(err, "invalid blob digest '%.100s'", digest);
		return -EINVAL;
	}
	if (asprintf(&url, "%s/v2/%s/blobs/uploads/", origin(r), r->repo) < 0)
		return -ENOMEM;
	k = request(r, &x, url, reset_mem, 0, err);
	if (k >= 0) {
		put = upload_url(r, x.location, digest);
		if (!put) {
			set_err(err, "POST %s: no upload location in the answer", url);
			k = -EPROTO;
		}
	}
	if (k >= 0) {
		xfer_done(&x);
		x = (struct xfer){.r = r,
		                  .method = "PUT",
		                  .upload = buf,
		                  .upload_len = len,
		                  .upload_type = "Content-Type: application/octet-stream",
		                  .sink = mem_sink,
		                  .sink_data = &body};
		k = request(r, &x, put, reset_mem, 0, err);
	}
	buf_free(&body);
	xfer_done(&x);
	return k < 0 ? k : 0;
}

int registry_put_manifest(struct registry *r, const char *reference, const char *media_type,
                          const void *buf, size_t len, struct error *err)
{
	_cleanup_free_ char *url = NULL, *type = NULL;
	struct buf body = {0};
	struct xfer x = {.r = r,
	                 .method = "PUT",
	                 .upload = buf,
	                 .upload_len = len,
	                 .sink = mem_sink,
	                 .sink_data = &body};
	int k;

	if (!reference_valid(reference)) {
		set_err(err, "invalid manifest reference '%.100s'", reference);
		return -EINVAL;
	}
	if (asprintf(&url, "%s/v2/%s/manifests/%s", origin(r), r->repo, reference) < 0 ||
	    asprintf(&type, "Content-Type: %s", media_type) < 0)
		return -ENOMEM;
	x.upload_type = type;
	k = request(r, &x, url, reset_mem, 0, err);
	buf_free(&body);
	xfer_done(&x);
	return k < 0 ? k : 0;
}
