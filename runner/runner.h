/* librunner: turns a directory into a container and runs one command in it.
 *
 * The caller fills a struct runner_config and calls runner_run(). The configuration is
 * first turned into a plan (plan.h: an array of setup steps, pure and unit-tested), then
 * a child is cloned into new namespaces and executes the plan: mounts, pivot_root,
 * capabilities, seccomp, user, exec. runner_run() waits for the command and returns its
 * exit status the way Docker reports it.
 *
 * Not thread-safe: runner_run() blocks signals, may change the terminal mode of stdin and
 * expects to be the only thing waiting for children of the calling process. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "common/error.h"

/* Docker's default search path, set when the environment has no PATH. */
#define RUNNER_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Exit statuses of runner_run's container, as Docker's. */
#define RUNNER_EXIT_FAILURE 125 /* the runner itself failed */
#define RUNNER_EXIT_CANNOT_EXEC 126
#define RUNNER_EXIT_NOT_FOUND 127

enum runner_net {
	RUNNER_NET_HOST, /* share the host's network namespace */
	RUNNER_NET_NONE, /* a new network namespace with only loopback up */
};

/* Access to a device, as Docker's --device PERMS "rwm". */
#define RUNNER_DEV_READ (1u << 0)
#define RUNNER_DEV_WRITE (1u << 1)
#define RUNNER_DEV_MKNOD (1u << 2)

/* A host device made available in the container (Docker's --device). */
struct runner_device {
	const char *host;      /* absolute path of a character or block device on the host */
	const char *container; /* absolute path inside the container */
	unsigned access;       /* RUNNER_DEV_* allowed in the device cgroup */
};

struct runner_config {
	const char
	    *rootfs;       /* directory (a symlink to one is resolved once, by the caller's view) */
	char *const *argv; /* command, NULL-terminated, argv[0] required; looked up in PATH */
	char *const *env;  /* "K=V" (or "K": taken from our environment), NULL-terminated, may be
	                      NULL; applied over the defaults (PATH, HOSTNAME, HOME) */
	const char *cwd;   /* working directory inside; created when missing; NULL = "/" */
	const char *user;  /* "user[:group]" names or ids, resolved in the rootfs' /etc/passwd and
	                      /etc/group; NULL = root */
	const char
	    *hostname; /* NULL: 12 random hex digits, or the host's name with RUNNER_NET_HOST */
	enum runner_net net;
	uint64_t memory;     /* bytes, 0 = unlimited; swap limited to the same value */
	uint64_t cpus_milli; /* CPU quota in thousandths of a CPU, 0 = unlimited */
	uint64_t pids;       /* maximum number of tasks, 0 = unlimited */
	bool no_init;        /* run the command as PID 1 instead of under the built-in init */
	int tty;             /* 1: allocate a pty, 0: no, -1: when stdin is a terminal */
	const struct runner_device *devices; /* created in the container and allowed in its
	                                        device cgroup, n_devices of them */
	size_t n_devices;
};

/* Runs c->argv in a container on c->rootfs and waits for it.
 * Returns 0 and sets *ret_exit_status to the command's status: its exit code, 128+N when
 * killed by signal N, RUNNER_EXIT_CANNOT_EXEC / RUNNER_EXIT_NOT_FOUND when the command could
 * not be executed (then err->msg says why). Returns -errno when the container could not be
 * set up, with err->msg naming what failed; *ret_exit_status is then untouched.
 * err may be NULL. Forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the
 * container while it runs; when the caller dies the container is killed. */
int runner_run(const struct runner_config *c, int *ret_exit_status, struct error *err);

/* Parses a size such as "32m", "1g", "1.5GiB", "4096" (binary multiples, as Docker).
 * Returns 0 and sets *ret, -EINVAL for a malformed or zero size, -ERANGE on overflow. */
int runner_parse_size(const char *s, uint64_t *ret);

/* Parses a CPU count such as "1", "0.5", "1.25" (at most 3 decimals) into thousandths.
 * Returns 0 and sets *ret, -EINVAL when malformed or zero, -ERANGE when absurdly large. */
int runner_parse_cpus(const char *s, uint64_t *ret);

/* Parses Docker's --device value "HOST[:CONTAINER][:PERMS]" (PERMS: one or more of r, w, m;
 * default rwm; CONTAINER defaults to HOST; both absolute). spec is split in place: the
 * paths of *ret point into it. Returns 0 and sets *ret, or -EINVAL. */
int runner_parse_device(char *spec, struct runner_device *ret);

/* Parses a positive decimal integer no larger than max. Returns 0 / -EINVAL / -ERANGE. */
int runner_parse_uint(const char *s, uint64_t max, uint64_t *ret);
