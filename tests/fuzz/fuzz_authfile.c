/* Fuzzes the credentials file parser: auth_find() on an arbitrary auth.json (named by
 * $REGISTRY_AUTH_FILE), then auth_store() into the same bytes as a Docker config.json
 * (named by $DOCKER_CONFIG) and auth_find() again. A lookup finds well-formed credentials,
 * finds none, or rejects the file with a reason; a store either refuses the file or keeps
 * it a file in which the credentials just stored are found.
 *
 * Input: the first line is the registry domain (docker.io when there is no newline), the
 * rest is the file. Files live in a temporary directory on /dev/shm (or $TMPDIR), removed
 * at exit. */
#include <fcntl.h>
#include <sys/stat.h>
#include <stdint.h>
#include "common/error.h"
#include "common/fileio.h"
#include "fsd/image/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];
static char auth_file[300];
static char docker_dir[300];

static void remove_dir(void)
{
	rm_rf_at(AT_FDCWD, dir);
}

static void setup(void)
{
	const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");

	if (dir[0])
		return;
	snprintf(dir, sizeof(dir), "%s/fuzz-auth.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		abort();
	atexit(remove_dir);
	snprintf(auth_file, sizeof(auth_file), "%s/auth.json", dir);
	snprintf(docker_dir, sizeof(docker_dir), "%s/docker", dir);
	if (mkdir(docker_dir, 0700) < 0)
		abort();
	unsetenv("XDG_RUNTIME_DIR");
}

static void check_found(int r, char *user, char *password, const struct error *err)
{
	if (r == 1) {
		if (!user || !password || !*user || strchr(user, ':'))
			abort();
		free(user);
		free(password);
	} else if (r != 0 && r != -EINVAL && r != -ENOMEM) {
		abort();
	} else if (r == -EINVAL && !error_isset(err)) {
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_free_ char *domain = NULL;
	const uint8_t *nl = memchr(data, '\n', MIN(size, (size_t)256));
	char *user = NULL, *password = NULL;
	struct error err = {""};
	int r;

	if (size > (1u << 20))
		return 0;
	setup();
	domain = nl ? strndup((const char *)data, (size_t)(nl - data)) : strdup("docker.io");
	if (!domain)
		return 0;
	if (nl) {
		size -= (size_t)(nl + 1 - data);
		data = nl + 1;
	}

	/* podman's auth.json, read only */
	if (setenv("REGISTRY_AUTH_FILE", auth_file, 1) < 0 || setenv("DOCKER_CONFIG", dir, 1) < 0 ||
	    write_file_atomic(AT_FDCWD, auth_file, data, size, 0600) < 0)
		return 0;
	r = auth_find(domain, &user, &password, &err);
	check_found(r, user, password, &err);

	/* Docker's config.json, updated by imgfs login */
	user = password = NULL;
	if (unsetenv("REGISTRY_AUTH_FILE") < 0 || setenv("DOCKER_CONFIG", docker_dir, 1) < 0)
		return 0;
	{
		_cleanup_close_ int dfd = open(docker_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (dfd < 0 || write_file_atomic(dfd, "config.json", data, size, 0600) < 0)
			return 0;
	}
	if (!*domain || strchr(domain, '/'))
		return 0; /* not a domain imgfs login accepts */
	r = auth_store(domain, "fuzzuser", "fuzz:pass word", NULL);
	if (r < 0) {
		if (r != -EINVAL && r != -ENOMEM)
			abort();
		return 0;
	}
	r = auth_find(domain, &user, &password, NULL);
	if (r != 1 || !streq(user, "fuzzuser") || !streq(password, "fuzz:pass word"))
		abort();
	free(user);
	free(password);
	return 0;
}
