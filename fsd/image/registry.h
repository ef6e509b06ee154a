/* OCI distribution client on libcurl.
 *
 * One struct registry talks to one repository on one registry (ping, auth, manifests,
 * blobs). Authentication: anonymous or credentials, through `WWW-Authenticate: Bearer`
 * token flow or Basic; tokens are refreshed when a request gets 401 mid-pull. Redirects
 * (blob storage) are followed without forwarding Authorization. Retries with
 * exponential backoff on 429, 5xx, timeouts and dropped connections; an interrupted blob
 * resumes with a Range request. TLS: system CAs plus
 * /etc/containers/certs.d/HOST[:PORT]/ca.crt and /etc/docker/certs.d/HOST[:PORT]/ca.crt.
 *
 * Thread safety: a struct registry may be used from several threads at once (parallel
 * layer downloads); each call uses its own curl easy handle, the token is shared under
 * a lock. Errors: functions return -errno and, when err is not NULL, write a one-line
 * message into it that names the URL and the registry's own error ("GET
 * http://127.0.0.1:5000/v2/x/manifests/y: 401 unauthorized: authentication required"). */
#pragma once

#include <limits.h>
#include <stdint.h>
#include "common/error.h"
#include "common/macros.h"
#include "ref.h"

/* registry_opts.max_retries: no retry at all (0 means the default). */
#define REGISTRY_RETRIES_NONE UINT_MAX

struct registry_opts {
	bool insecure;        /* plain HTTP / unverified TLS for a non-loopback registry */
	const char *username; /* NULL: look up credentials (see auth.h), else use these */
	const char *password;
	const char *certs_dir; /* override for tests; NULL: the standard directories */
	unsigned max_retries;  /* 0: default (5); REGISTRY_RETRIES_NONE: none */
	unsigned timeout_s;    /* connect and low-speed timeout; 0: default (30 s) */
	unsigned backoff_ms;   /* first retry delay, doubled each time; 0: default (250 ms) */
	bool push;             /* ask tokens for the push scope too (index push) */
};

struct registry;

/* Creates a client for ref's domain and repository (REF_REGISTRY only). No I/O yet. */
int registry_new(const struct image_ref *ref, const struct registry_opts *opts,
                 struct registry **ret);
void registry_free(struct registry *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct registry *, registry_free);

/* GET /v2/ and authenticate if asked to; verifies that the credentials work.
 * -EACCES on wrong credentials. */
int registry_ping(struct registry *r, struct error *err);

/* Fetches the manifest for reference (tag or digest) with an Accept header listing OCI
 * index/manifest and Docker list/schema2. Fails with -EFBIG beyond max bytes, -ENOENT when
 * missing (404 / MANIFEST_UNKNOWN), -EACCES when unauthorized. On success the malloc'ed body
 * (NUL-terminated), its Content-Type (may be NULL) and the sha256 digest of the body are
 * returned. */
int registry_get_manifest(struct registry *r, const char *reference, size_t max, char **ret_body,
                          size_t *ret_len, char **ret_media_type, char **ret_digest,
                          struct error *err);

/* Called with consecutive bytes of a blob. Returns 0 to continue, -errno to abort. */
typedef int (*registry_data_fn)(const void *buf, size_t len, void *userdata);

/* Streams blob digest starting at byte offset (Range request when offset > 0) to fn.
 * expected_size (or 0 when unknown) bounds the transfer: more bytes, or a Content-Length
 * announcing more, is an error at once; a response that stalls or breaks off after the
 * last expected byte is complete. Dropped connections are retried from the last delivered
 * byte, so fn sees every byte exactly once, in order; a 416 to such a Range request is
 * final. Digest verification is the caller's job. urls: optional
 * NULL-terminated list of foreign-layer URLs to try when the registry lacks the blob. */
int registry_get_blob(struct registry *r, const char *digest, uint64_t offset,
                      uint64_t expected_size, char *const *urls, registry_data_fn fn,
                      void *userdata, struct error *err);

/* Fetches bytes [offset, offset + len) of blob digest into buf with one Range request
 * (resumed from the last byte on a dropped connection, as registry_get_blob()); a registry
 * that answers 200 with the whole blob is read up to the end of the range only. Verifying
 * the bytes is the caller's job. Thread-safe. */
int registry_get_blob_range(struct registry *r, const char *digest, uint64_t offset, uint64_t len,
                            void *buf, struct error *err);

/* Bounds each later request of r: at most max_retries retries, timeout_s of silence. For
 * a mount's lazy reads, which a process is waiting on. */
void registry_set_limits(struct registry *r, unsigned max_retries, unsigned timeout_s);

/* GET /v2/NAME/referrers/DIGEST: the referrers index of a manifest (malloc'ed body).
 * -ENOENT when the registry has no referrers API. */
int registry_get_referrers(struct registry *r, const char *digest, size_t max, char **ret_body,
                           size_t *ret_len, struct error *err);

/* HEAD of blob digest: 1 when the registry has it, 0 when not, -errno. */
int registry_has_blob(struct registry *r, const char *digest, struct error *err);
/* Uploads a blob (POST, then a monolithic PUT with its digest). */
int registry_put_blob(struct registry *r, const char *digest, const void *buf, size_t len,
                      struct error *err);
/* PUT of a manifest under reference (a tag or its digest) with its media type. */
int registry_put_manifest(struct registry *r, const char *reference, const char *media_type,
                          const void *buf, size_t len, struct error *err);

/* Fetches a small blob (config) fully into memory, verifying its digest; -EFBIG beyond max
 * (or a Content-Length beyond it). A response that announces more than it sends is complete
 * as soon as the bytes held have the digest. */
int registry_get_blob_mem(struct registry *r, const char *digest, size_t max, char **ret_body,
                          size_t *ret_len, struct error *err);
