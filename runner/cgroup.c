/* Per-container cgroups (v2, or v1 on hybrid hosts). */
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include "common/fileio.h"
#include "runner/cgroup.h"
#include "runner/devices.h"
#include "runner/util.h"

#define CGROUP_ROOT "/sys/fs/cgroup"
#define CPU_PERIOD_US 100000

struct runner_cgroup {
	size_t n;
	char *paths[6];
};

bool cgroup_is_unified(void)
{
	struct statfs s;

	return statfs(CGROUP_ROOT, &s) == 0 && s.f_type == CGROUP2_SUPER_MAGIC;
}

static int write_str(const char *dir, const char *file, const char *value)
{
	_cleanup_free_ char *p = path_join(dir, file);
	_cleanup_close_ int fd = -1;

	if (!p)
		return -ENOMEM;
	fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return write_full(fd, value, strlen(value));
}

static int write_u64(const char *dir, const char *file, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
	return write_str(dir, file, buf);
}

/* Creates base/imgfs/name (replacing an empty one); returns the malloc'ed path in *ret. */
static int make_dir(const char *base, const char *name, char **ret)
{
	_cleanup_free_ char *parent = path_join(base, "imgfs"), *p = NULL;

	if (!parent)
		return -ENOMEM;
	if (mkdir(parent, 0755) < 0 && errno != EEXIST)
		return -errno;
	p = path_join(parent, name);
	if (!p)
		return -ENOMEM;
	/* NAME is our pid: one that exists was left by an earlier runner with the same pid
	 * that was killed (SIGKILL) before it could remove it. Empty, it can go. */
	if (mkdir(p, 0755) < 0 && (errno != EEXIST || rmdir(p) < 0 || mkdir(p, 0755) < 0))
		return -errno;
	*ret = TAKE_PTR(p);
	return 0;
}

static int create_v2(const struct runner_config *c, const char *name, struct runner_cgroup *cg,
                     struct error *e)
{
	char buf[64];
	const char *dir;
	int r;

	/* Enable the controllers for our subtree; an unavailable one fails here. The device
	 * program needs none. */
	snprintf(buf, sizeof(buf), "%s%s%s", c->memory ? "+memory " : "",
	         c->cpus_milli ? "+cpu " : "", c->pids ? "+pids" : "");
	_cleanup_free_ char *parent = path_join(CGROUP_ROOT, "imgfs");
	if (!parent)
		return -ENOMEM;
	if (buf[0]) {
		r = write_str(CGROUP_ROOT, "cgroup.subtree_control", buf);
		if (r < 0)
			return runner_errf(e, r == -EINVAL ? -ENODEV : r,
			                   "cannot enable cgroup controllers '%s' in " CGROUP_ROOT,
			                   buf);
	}
	if (mkdir(parent, 0755) < 0 && errno != EEXIST)
		return runner_errf(e, -errno, "cannot create cgroup '%s'", parent);
	if (buf[0]) {
		r = write_str(parent, "cgroup.subtree_control", buf);
		if (r < 0)
			return runner_errf(e, r, "cannot enable cgroup controllers in '%s'",
			                   parent);
	}
	r = make_dir(CGROUP_ROOT, name, &cg->paths[cg->n]);
	if (r < 0)
		return runner_errf(e, r, "cannot create cgroup imgfs/%s", name);
	dir = cg->paths[cg->n++];
	if (c->memory) {
		r = write_u64(dir, "memory.max", c->memory);
		if (r >= 0)
			r = write_str(dir, "memory.swap.max", "0");
		if (r < 0 && r != -ENOENT)
			return runner_errf(e, r, "cannot set the memory limit in '%s'", dir);
	}
	if (c->cpus_milli) {
		snprintf(buf, sizeof(buf), "%llu %u",
		         (unsigned long long)(c->cpus_milli * CPU_PERIOD_US / 1000), CPU_PERIOD_US);
		r = write_str(dir, "cpu.max", buf);
		if (r < 0)
			return runner_errf(e, r, "cannot set the CPU quota in '%s'", dir);
	}
	if (c->pids) {
		r = write_u64(dir, "pids.max", c->pids);
		if (r < 0)
			return runner_errf(e, r, "cannot set the pids limit in '%s'", dir);
	}
	return 0;
}

static int create_v1(const char *controller, const char *name, struct runner_cgroup *cg,
                     struct error *e, char **ret_dir)
{
	_cleanup_free_ char *base = path_join(CGROUP_ROOT, controller);
	struct statfs s;
	int r;

	if (!base)
		return -ENOMEM;
	if (statfs(base, &s) < 0 || s.f_type != CGROUP_SUPER_MAGIC)
		return runner_errf(e, -ENODEV, "no cgroup v1 '%s' controller at '%s'", controller,
		                   base);
	r = make_dir(base, name, &cg->paths[cg->n]);
	if (r < 0)
		return runner_errf(e, r, "cannot create cgroup '%s/imgfs/%s'", base, name);
	*ret_dir = cg->paths[cg->n++];
	return 0;
}

static bool is_fs(const char *path, long magic)
{
	struct statfs s;

	return statfs(path, &s) == 0 && s.f_type == magic;
}

/* Attaches the device program for rules to the cgroup v2 directory dir. */
static int devices_v2(const char *dir, const struct dev_rule *rules, size_t n_rules,
                      struct error *e)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return runner_errf(e, -errno, "cannot open cgroup '%s'", dir);
	r = devices_bpf_attach(fd, rules, n_rules);
	if (r < 0)
		return runner_errf(e, r, "cannot attach the device cgroup program to '%s'", dir);
	return 0;
}

/* The v1 devices controller: deny everything, then allow each rule. */
static int devices_v1(const char *name, const struct dev_rule *rules, size_t n_rules,
                      struct runner_cgroup *cg, struct error *e)
{
	char *dir, line[64];
	int r;

	r = create_v1("devices", name, cg, e, &dir);
	if (r < 0)
		return r;
	r = write_str(dir, "devices.deny", "a");
	if (r < 0)
		return runner_errf(e, r, "cannot write devices.deny in '%s'", dir);
	for (size_t i = 0; i < n_rules; i++) {
		r = devices_v1_line(&rules[i], line, sizeof(line));
		if (r >= 0)
			r = write_str(dir, "devices.allow", line);
		if (r < 0)
			return runner_errf(e, r, "cannot allow '%s' in '%s/devices.allow'", line,
			                   dir);
	}
	return 0;
}

int cgroup_create(const struct runner_config *c, const char *name, const struct dev_rule *rules,
                  size_t n_rules, struct runner_cgroup **ret, struct error *e)
{
	_cleanup_(cgroup_destroyp) struct runner_cgroup *cg = NULL;
	_cleanup_free_ char *v1_devices = path_join(CGROUP_ROOT, "devices");
	char *dir;
	int r;

	if (!v1_devices)
		return -ENOMEM;
	if (!c->memory && !c->cpus_milli && !c->pids && !rules) {
		*ret = NULL;
		return 0;
	}
	cg = calloc(1, sizeof(*cg));
	if (!cg)
		return -ENOMEM;
	if (cgroup_is_unified()) {
		r = create_v2(c, name, cg, e);
		if (r >= 0 && rules)
			r = devices_v2(cg->paths[cg->n - 1], rules, n_rules, e);
		if (r < 0)
			return r;
		*ret = TAKE_PTR(cg);
		return 0;
	}
	if (rules && is_fs(v1_devices, CGROUP_SUPER_MAGIC)) {
		r = devices_v1(name, rules, n_rules, cg, e);
		if (r < 0)
			return r;
	} else if (rules && is_fs(CGROUP_ROOT "/unified", CGROUP2_SUPER_MAGIC)) {
		/* A hybrid host without the v1 devices controller: the device program works
		 * on its v2 hierarchy, where every process has a cgroup too. */
		r = make_dir(CGROUP_ROOT "/unified", name, &cg->paths[cg->n]);
		if (r < 0)
			return runner_errf(e, r, "cannot create cgroup '%s/imgfs/%s'",
			                   CGROUP_ROOT "/unified", name);
		r = devices_v2(cg->paths[cg->n++], rules, n_rules, e);
		if (r < 0)
			return r;
	} else if (rules) {
		return runner_errf(e, -ENODEV,
		                   "no device cgroup: neither a cgroup v1 'devices' hierarchy nor "
		                   "cgroup2 under " CGROUP_ROOT);
	}
	if (c->memory) {
		r = create_v1("memory", name, cg, e, &dir);
		if (r < 0)
			return r;
		r = write_u64(dir, "memory.limit_in_bytes", c->memory);
		if (r < 0)
			return runner_errf(e, r, "cannot set the memory limit in '%s'", dir);
		/* memsw exists only with swap accounting; without it swap is not limited. */
		r = write_u64(dir, "memory.memsw.limit_in_bytes", c->memory);
		if (r < 0 && r != -ENOENT)
			return runner_errf(e, r, "cannot set the memory+swap limit in '%s'", dir);
	}
	if (c->cpus_milli) {
		r = create_v1("cpu", name, cg, e, &dir);
		if (r < 0)
			return r;
		r = write_u64(dir, "cpu.cfs_period_us", CPU_PERIOD_US);
		if (r >= 0)
			r = write_u64(dir, "cpu.cfs_quota_us",
			              c->cpus_milli * CPU_PERIOD_US / 1000);
		if (r < 0)
			return runner_errf(e, r, "cannot set the CPU quota in '%s'", dir);
	}
	if (c->pids) {
		r = create_v1("pids", name, cg, e, &dir);
		if (r < 0)
			return r;
		r = write_u64(dir, "pids.max", c->pids);
		if (r < 0)
			return runner_errf(e, r, "cannot set the pids limit in '%s'", dir);
	}
	*ret = TAKE_PTR(cg);
	return 0;
}

int cgroup_attach(struct runner_cgroup *cg, pid_t pid, struct error *e)
{
	for (size_t i = 0; cg && i < cg->n; i++) {
		int r = write_u64(cg->paths[i], "cgroup.procs", (uint64_t)pid);

		if (r < 0)
			return runner_errf(e, r, "cannot move the container into '%s'",
			                   cg->paths[i]);
	}
	return 0;
}

static void kill_all(const char *dir)
{
	_cleanup_free_ char *p = path_join(dir, "cgroup.procs");
	_cleanup_fclose_ FILE *f = NULL;
	long pid;

	if (!p)
		return;
	f = fopen(p, "re");
	if (!f)
		return;
	while (fscanf(f, "%ld", &pid) == 1)
		if (pid > 0)
			kill((pid_t)pid, SIGKILL);
}

void cgroup_destroy(struct runner_cgroup *cg)
{
	if (!cg)
		return;
	for (size_t i = 0; i < cg->n; i++) {
		/* The container's processes die with its PID 1, but the kernel takes a moment
		 * to empty the cgroup: retry for up to 2 s. */
		for (int tries = 0; tries < 200; tries++) {
			if (rmdir(cg->paths[i]) == 0 || errno != EBUSY)
				break;
			kill_all(cg->paths[i]);
			nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
		}
		free(cg->paths[i]);
	}
	free(cg);
}
