/* libcurl, libarchive and libcrypto, loaded at their first use instead of at process start.
 *
 * Only `imgfs pull` (and a mount or run that has to pull) needs them, yet linking them
 * made every command load ~40 libraries (libcurl alone brings gnutls, krb5, ldap, ssh2,
 * ...): ~7 ms of the ~11 ms that `imgfs mount` spent before main(). libcrypto is the
 * accelerator of large SHA-256 digests (common/digest.c hashes small buffers itself), and
 * loading it cost every command about 4 ms of CPU before main(). The functions the
 * project calls are defined here under their own names, with the libraries' prototypes
 * (the headers check them); the first call of each resolves the real one with dlsym()
 * and every call after that is one indirect jump. Neither library is linked, so these
 * definitions are not exported and cannot interpose on the libraries' own calls.
 *
 * Entry points (curl_global_init, archive_read_new, EVP_MD_CTX_new) report a missing
 * library as the
 * library itself reports failure (CURLE_FAILED_INIT, NULL) after logging dlerror(); every
 * other function can only be reached through an object one of them returned.
 *
 * The log lines here are the exception to "library code does not log": the functions keep
 * the libraries' prototypes, so there is no struct error to carry dlerror()'s text, and
 * their callers only see the library's own failure code. The text is known only here, once
 * per process (pthread_once), so this is where it is reported. (A missing symbol is logged
 * just before abort(): the installed library is not the one the build was checked
 * against.) */
#define CURL_DISABLE_TYPECHECK
#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <dlfcn.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "common/log.h"

#ifndef CURL_SONAME
#define CURL_SONAME "libcurl.so.4"
#endif
#ifndef ARCHIVE_SONAME
#define ARCHIVE_SONAME "libarchive.so.13"
#endif
#ifndef CRYPTO_SONAME
#define CRYPTO_SONAME "libcrypto.so.3"
#endif

struct lazy_lib {
	const char *soname, *what;
	pthread_once_t once;
	void *handle;
};

static struct lazy_lib curl_lib = {CURL_SONAME, "libcurl", PTHREAD_ONCE_INIT, NULL};
static struct lazy_lib archive_lib = {ARCHIVE_SONAME, "libarchive", PTHREAD_ONCE_INIT, NULL};
static struct lazy_lib crypto_lib = {CRYPTO_SONAME, "libcrypto", PTHREAD_ONCE_INIT, NULL};

/* Logs at LOG_ERR on failure: see the top of the file for why this is the reporting site. */
static void lazy_open(struct lazy_lib *lib)
{
	lib->handle = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
	if (!lib->handle)
		log_msg(LOG_ERR, "cannot load %s (%s): %s", lib->soname, lib->what, dlerror());
}

static void open_curl(void)
{
	lazy_open(&curl_lib);
}

static void open_archive(void)
{
	lazy_open(&archive_lib);
}

static void open_crypto(void)
{
	lazy_open(&crypto_lib);
}

static bool lazy_load(struct lazy_lib *lib)
{
	pthread_once(&lib->once, lib == &curl_lib      ? open_curl
	                         : lib == &archive_lib ? open_archive
	                                               : open_crypto);
	return lib->handle != NULL;
}

/* The address of name in lib, looked up once and kept in *cache. Only entry points may
 * find the library missing (they check lazy_load() first); anything else reaching here
 * without it is a bug. */
static void *lazy_sym(void **cache, struct lazy_lib *lib, const char *name)
{
	void *p = __atomic_load_n(cache, __ATOMIC_ACQUIRE);

	if (p)
		return p;
	p = lazy_load(lib) ? dlsym(lib->handle, name) : NULL;
	if (!p) {
		log_msg(LOG_ERR, "%s: no symbol %s", lib->soname, name);
		abort();
	}
	__atomic_store_n(cache, p, __ATOMIC_RELEASE);
	return p;
}

#define LAZY_FN(lib, ret, name, params, args)                                                      \
	ret name params                                                                            \
	{                                                                                          \
		static void *fn;                                                                   \
		return ((ret(*) params)lazy_sym(&fn, &lib, #name))args;                            \
	}

#define LAZY_VOID(lib, name, params, args)                                                         \
	void name params                                                                           \
	{                                                                                          \
		static void *fn;                                                                   \
		((void(*) params)lazy_sym(&fn, &lib, #name)) args;                                 \
	}

/* ---- libcurl ---- */

CURLcode curl_global_init(long flags)
{
	if (!lazy_load(&curl_lib))
		return CURLE_FAILED_INIT;
	static void *fn;

	return ((CURLcode(*)(long))lazy_sym(&fn, &curl_lib, "curl_global_init"))(flags);
}

LAZY_FN(curl_lib, CURL *, curl_easy_init, (void), ())
LAZY_FN(curl_lib, CURLcode, curl_easy_perform, (CURL * c), (c))
LAZY_VOID(curl_lib, curl_easy_cleanup, (CURL * c), (c))
LAZY_VOID(curl_lib, curl_easy_reset, (CURL * c), (c))
LAZY_FN(curl_lib, const char *, curl_easy_strerror, (CURLcode e), (e))
LAZY_FN(curl_lib, char *, curl_easy_escape, (CURL * c, const char *s, int len), (c, s, len))
LAZY_VOID(curl_lib, curl_free, (void *p), (p))
LAZY_FN(curl_lib, time_t, curl_getdate, (const char *s, const time_t *unused), (s, unused))
LAZY_FN(curl_lib, struct curl_slist *, curl_slist_append, (struct curl_slist * l, const char *s),
        (l, s))
LAZY_VOID(curl_lib, curl_slist_free_all, (struct curl_slist * l), (l))

/* The variadic two take one argument whose type the option's number range gives
 * (curl.h: CURLOPTTYPE_* and CURLINFO_* bases). */
CURLcode curl_easy_setopt(CURL *c, CURLoption opt, ...)
{
	static void *fn;
	CURLcode (*f)(CURL *, CURLoption, ...) = lazy_sym(&fn, &curl_lib, "curl_easy_setopt");
	CURLcode r;
	va_list ap;

	va_start(ap, opt);
	if (opt < CURLOPTTYPE_OBJECTPOINT)
		r = f(c, opt, va_arg(ap, long));
	else if (opt < CURLOPTTYPE_FUNCTIONPOINT)
		r = f(c, opt, va_arg(ap, void *));
	else if (opt < CURLOPTTYPE_OFF_T)
		r = f(c, opt, va_arg(ap, void (*)(void)));
	else if (opt < CURLOPTTYPE_BLOB)
		r = f(c, opt, va_arg(ap, curl_off_t));
	else
		r = f(c, opt, va_arg(ap, void *));
	va_end(ap);
	return r;
}

CURLcode curl_easy_getinfo(CURL *c, CURLINFO info, ...)
{
	static void *fn;
	CURLcode (*f)(CURL *, CURLINFO, ...) = lazy_sym(&fn, &curl_lib, "curl_easy_getinfo");
	CURLcode r;
	va_list ap;

	va_start(ap, info);
	r = f(c, info, va_arg(ap, void *)); /* always a pointer to the result */
	va_end(ap);
	return r;
}

/* ---- libarchive ---- */

struct archive *archive_read_new(void)
{
	if (!lazy_load(&archive_lib))
		return NULL;
	static void *fn;

	return ((struct archive * (*)(void)) lazy_sym(&fn, &archive_lib, "archive_read_new"))();
}

LAZY_FN(archive_lib, int, archive_read_free, (struct archive * a), (a))
LAZY_FN(archive_lib, int, archive_read_support_filter_gzip, (struct archive * a), (a))
LAZY_FN(archive_lib, int, archive_read_support_filter_zstd, (struct archive * a), (a))
LAZY_FN(archive_lib, int, archive_read_support_format_raw, (struct archive * a), (a))
LAZY_FN(archive_lib, int, archive_read_support_format_tar, (struct archive * a), (a))
LAZY_FN(archive_lib, int, archive_read_open,
        (struct archive * a, void *data, archive_open_callback *open, archive_read_callback *read,
         archive_close_callback *close),
        (a, data, open, read, close))
LAZY_FN(archive_lib, int, archive_read_open_filename,
        (struct archive * a, const char *name, size_t block), (a, name, block))
LAZY_FN(archive_lib, int, archive_read_next_header, (struct archive * a, struct archive_entry **e),
        (a, e))
LAZY_FN(archive_lib, la_ssize_t, archive_read_data, (struct archive * a, void *buf, size_t len),
        (a, buf, len))
LAZY_FN(archive_lib, const char *, archive_error_string, (struct archive * a), (a))
LAZY_FN(archive_lib, la_int64_t, archive_filter_bytes, (struct archive * a, int n), (a, n))

/* Formatted here: a va_list cannot be handed on to a variadic function. */
void archive_set_error(struct archive *a, int err, const char *fmt, ...)
{
	static void *fn;
	void (*f)(struct archive *, int, const char *, ...) =
	    lazy_sym(&fn, &archive_lib, "archive_set_error");
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	f(a, err, "%s", msg);
}

LAZY_FN(archive_lib, __LA_MODE_T, archive_entry_filetype, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, __LA_MODE_T, archive_entry_perm, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, la_int64_t, archive_entry_uid, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, la_int64_t, archive_entry_gid, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, la_int64_t, archive_entry_size, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, int, archive_entry_size_is_set, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, time_t, archive_entry_mtime, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, long, archive_entry_mtime_nsec, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, int, archive_entry_mtime_is_set, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, dev_t, archive_entry_rdevmajor, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, dev_t, archive_entry_rdevminor, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, const char *, archive_entry_pathname, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, const char *, archive_entry_pathname_utf8, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, const char *, archive_entry_hardlink, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, const char *, archive_entry_hardlink_utf8, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, const char *, archive_entry_symlink, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, const char *, archive_entry_symlink_utf8, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, int, archive_entry_xattr_reset, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, int, archive_entry_xattr_next,
        (struct archive_entry * e, const char **name, const void **value, size_t *size),
        (e, name, value, size))
LAZY_FN(archive_lib, int, archive_entry_sparse_reset, (struct archive_entry * e), (e))
LAZY_FN(archive_lib, int, archive_entry_sparse_next,
        (struct archive_entry * e, la_int64_t *off, la_int64_t *len), (e, off, len))

/* ---- libcrypto ---- */

EVP_MD_CTX *EVP_MD_CTX_new(void)
{
	static void *fn;

	if (!lazy_load(&crypto_lib))
		return NULL;
	return ((EVP_MD_CTX * (*)(void)) lazy_sym(&fn, &crypto_lib, "EVP_MD_CTX_new"))();
}

LAZY_VOID(crypto_lib, EVP_MD_CTX_free, (EVP_MD_CTX * ctx), (ctx))
LAZY_FN(crypto_lib, const EVP_MD *, EVP_sha256, (void), ())
LAZY_FN(crypto_lib, int, EVP_DigestInit_ex, (EVP_MD_CTX * ctx, const EVP_MD *type, ENGINE *impl),
        (ctx, type, impl))
LAZY_FN(crypto_lib, int, EVP_DigestUpdate, (EVP_MD_CTX * ctx, const void *d, size_t cnt),
        (ctx, d, cnt))
LAZY_FN(crypto_lib, int, EVP_DigestFinal_ex, (EVP_MD_CTX * ctx, unsigned char *md, unsigned int *s),
        (ctx, md, s))
