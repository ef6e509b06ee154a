/* Registry credentials, looked up as podman does: $REGISTRY_AUTH_FILE,
 * $XDG_RUNTIME_DIR/containers/auth.json, then $DOCKER_CONFIG/config.json or
 * ~/.docker/config.json ("auths": {"HOST": {"auth": base64("user:password")}}).
 * docker.io credentials may be stored under "https://index.docker.io/v1/" as well. */
#pragma once

#include "common/macros.h"

struct error;

/* Finds credentials for domain (as in struct image_ref). Returns 1 and sets both
 * malloc'ed strings when found, 0 when none, -errno on a broken file, with a reason naming
 * the file in err (may be NULL). */
int auth_find(const char *domain, char **ret_user, char **ret_password, struct error *err);

/* auth_find() for the registry client, which goes on without credentials when the file is
 * broken: logs that reason (LOG_ERR) itself. To be replaced by auth_find() once the
 * registry client carries a struct error. */
int auth_lookup(const char *domain, char **ret_user, char **ret_password);

/* Stores credentials for domain in the Docker config file ($DOCKER_CONFIG/config.json or
 * ~/.docker/config.json), keeping every other key of the file; written atomically, mode 0600.
 * Returns 0 or -errno with a reason naming the file in err (may be NULL). */
int auth_store(const char *domain, const char *user, const char *password, struct error *err);

/* Sets *ret to the malloc'ed base64 of "user:password", as sent after "Basic " in an
 * Authorization header. Returns 0 or -ENOMEM. */
int auth_basic_encode(const char *user, const char *password, char **ret);

/* Parses a WWW-Authenticate header value. Returns 0 and fills *ret (free with
 * www_auth_clear()), -EINVAL on malformed input, -EOPNOTSUPP for schemes other than
 * Bearer and Basic. */
struct www_auth {
	char *scheme; /* "Bearer" or "Basic", canonical case */
	char *realm;
	char *service;
	char *scope;
	char *error; /* Bearer error="insufficient_scope" etc., or NULL */
};
int www_auth_parse(const char *header, struct www_auth *ret);
void www_auth_clear(struct www_auth *a);
