/* Per-container cgroups for --memory, --cpus, --pids-limit and the device rules: cgroup v2 when the
 * host's /sys/fs/cgroup is unified, else the v1 hierarchies (hybrid hosts). The parent creates them
 * before the container runs and removes them afterwards. */
#pragma once

#include <stdint.h>
#include <sys/types.h>
#include "common/macros.h"
#include "runner/runner.h"

struct runner_cgroup;
struct dev_rule;

/* Creates the cgroup(s) imgfs/NAME under each needed hierarchy and sets the limits of c
 * (memory with the same swap limit, CPU quota per 100 ms period, pids) and, when rules is
 * not NULL, the device cgroup allowing only rules[0..n_rules): the v2 device program when
 * /sys/fs/cgroup is unified, else the v1 devices controller, else (hybrid without it) the
 * program on the v2 hierarchy at /sys/fs/cgroup/unified.
 * Returns 0 and sets *ret (NULL when c sets no limit and rules is NULL), or -errno with
 * e->msg naming the controller or file (a missing controller is -ENODEV). */
int cgroup_create(const struct runner_config *c, const char *name, const struct dev_rule *rules,
                  size_t n_rules, struct runner_cgroup **ret, struct error *e);

/* Moves pid into every cgroup of cg. Returns 0 or -errno with e->msg set. */
int cgroup_attach(struct runner_cgroup *cg, pid_t pid, struct error *e);

/* Kills what is left in the cgroups, removes them and frees cg. NULL is fine. */
void cgroup_destroy(struct runner_cgroup *cg);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct runner_cgroup *, cgroup_destroy);

/* True when the host's /sys/fs/cgroup is a cgroup2 mount. */
bool cgroup_is_unified(void);
