/* The container's setup, planned as data (bubblewrap's SetupOp idea): plan_build() turns a
 * runner_config plus a few facts about the host into an ordered array of steps; mount.c
 * executes them in the child. Everything here is pure and unit-tested without root.
 *
 * All targets are absolute paths inside the container's root; the executor resolves them
 * with openat2(RESOLVE_IN_ROOT), so no step can reach outside the rootfs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "common/macros.h"
#include "runner/runner.h"

enum step_type {
	STEP_MOUNT,      /* mount a new fstype instance (source, fstype, flags, data) on target */
	STEP_BIND,       /* bind host path source onto target */
	STEP_MKNOD,      /* device node dev with mode (S_IFCHR or S_IFBLK | perms) at target */
	STEP_SYMLINK,    /* symlink at target pointing to source */
	STEP_MKDIR,      /* directory target (and missing parents) */
	STEP_MASK,       /* /dev/null over a file, an empty read-only tmpfs over a directory */
	STEP_READONLY,   /* target becomes a recursive read-only bind of itself */
	STEP_REMOUNT_RO, /* the mount at target becomes read-only (not recursive) */
	STEP_FILE,       /* a generated file with contents source, bound onto target */
};

/* step.opts */
#define STEP_OPTIONAL (1u << 0) /* a missing target (or source) skips the step */
#define STEP_ON_FILE (1u << 1)  /* the mountpoint is a file, created as one when missing */
#define STEP_REC (1u << 2)      /* recursive bind */
#define STEP_RDONLY (1u << 3)   /* bind read-only (recursively with STEP_REC) */

struct setup_step {
	enum step_type type;
	unsigned opts;
	char *target;
	char *source;
	char *fstype;
	char *data;
	unsigned long flags; /* MS_* for STEP_MOUNT */
	mode_t mode;
	dev_t dev;
};

/* A --device as found on the host. */
struct host_device {
	const char *host;      /* the node's path on the host */
	const char *container; /* where it goes in the container */
	mode_t mode;           /* the host node's type (S_IFCHR or S_IFBLK) and permissions */
	dev_t rdev;
	unsigned access; /* RUNNER_DEV_* */
};

/* What plan_build() needs to know about the host. */
struct host_facts {
	bool userns;  /* we run in a new user namespace (rootless): no mknod, no v1 cgroup */
	bool cgroup2; /* the host's /sys/fs/cgroup is cgroup2 (unified) */
	const char *const *cgroup_v1; /* v1 hierarchies as "DIR OPTIONS" ("cpu cpu",
	                                 "systemd name=systemd"), NULL-terminated, may be NULL */
	const char *resolv_conf;      /* host's /etc/resolv.conf contents, NULL if missing */
	const char *hosts; /* host's /etc/hosts contents (for RUNNER_NET_HOST), NULL if missing */
	const struct host_device *devices; /* --device nodes to create, n_devices of them */
	size_t n_devices;
	unsigned n_cpus; /* possible CPUs: their thermal_throttle directories are masked */
};

struct setup_plan {
	struct setup_step *steps;
	size_t n, cap;
};

/* Builds the steps for c. hostname is the container's final host name.
 * Returns 0 and sets *ret (free with plan_free()), -EINVAL for an invalid config (relative
 * or empty working directory), -ENOMEM. */
int plan_build(const struct runner_config *c, const struct host_facts *h, const char *hostname,
               struct setup_plan **ret);
void plan_free(struct setup_plan *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct setup_plan *, plan_free);

/* Paths Docker masks and makes read-only, NULL-terminated. */
extern const char *const plan_masked_paths[];
extern const char *const plan_readonly_paths[];

/* The container's /etc/hosts: localhost entries (Docker's), or the host's file with
 * RUNNER_NET_HOST. Returns a malloc'ed string or NULL on ENOMEM. */
char *plan_hosts_file(enum runner_net net, const char *host_hosts);

/* The container's /etc/resolv.conf from the host's: as is with RUNNER_NET_HOST; otherwise
 * without loopback nameservers (unreachable from a new network namespace), and with
 * Docker's fallback servers when none is left. Lines longer than 4 KiB are dropped.
 * Returns a malloc'ed string or NULL on ENOMEM. */
char *plan_resolv_conf(enum runner_net net, const char *host_resolv);

/* The command's environment: PATH (Docker's default), HOSTNAME, then c->env in order ("K=V"
 * replaces an earlier K; "K" takes K from getenv_fn, or drops it when unset), then HOME
 * (unless set) and TERM=xterm with a tty (unless set).
 * Returns 0 and sets *ret (a NULL-terminated array, free with plan_env_free()), -EINVAL for
 * an entry with an empty name, -ENOMEM. */
int plan_env(const struct runner_config *c, const char *hostname, const char *home, bool tty,
             char *(*getenv_fn)(const char *), char ***ret);
void plan_env_free(char **env);

/* Docker's default capability set as a bit mask of CAP_* numbers. */
uint64_t plan_default_caps(void);
