/* Planning of the container's setup: config + host facts -> ordered steps. Pure. */
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include "runner/plan.h"

/* moby's defaultLinuxMaskedPaths (daemon/pkg/oci/defaults.go at the commit named in
 * seccomp_profile.c), without the per-CPU thermal_throttle paths that plan_build() adds. */
const char *const plan_masked_paths[] = {
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    NULL,
};

const char *const plan_readonly_paths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", NULL,
};

static const struct {
	const char *name;
	unsigned major, minor;
} devices[] = {
    {"null", 1, 3},   {"zero", 1, 5},    {"full", 1, 7},
    {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
};

static const struct {
	const char *link, *target;
} dev_symlinks[] = {
    {"/dev/fd", "/proc/self/fd"},       {"/dev/stdin", "/proc/self/fd/0"},
    {"/dev/stdout", "/proc/self/fd/1"}, {"/dev/stderr", "/proc/self/fd/2"},
    {"/dev/ptmx", "pts/ptmx"},          {"/dev/core", "/proc/kcore"},
};

uint64_t plan_default_caps(void)
{
	static const int caps[] = {
	    CAP_CHOWN,   CAP_DAC_OVERRIDE, CAP_FSETID,           CAP_FOWNER,
	    CAP_MKNOD,   CAP_NET_RAW,      CAP_SETGID,           CAP_SETUID,
	    CAP_SETFCAP, CAP_SETPCAP,      CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT,
	    CAP_KILL,    CAP_AUDIT_WRITE,
	};
	uint64_t m = 0;

	for (size_t i = 0; i < ARRAY_SIZE(caps); i++)
		m |= 1ull << caps[i];
	return m;
}

void plan_free(struct setup_plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++) {
		free(p->steps[i].target);
		free(p->steps[i].source);
		free(p->steps[i].fstype);
		free(p->steps[i].data);
	}
	free(p->steps);
	free(p);
}

static int dup_opt(const char *s, char **ret)
{
	*ret = NULL;
	if (!s)
		return 0;
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

/* A step as written in this file; add() copies its strings into the plan. */
struct step_in {
	enum step_type type;
	unsigned opts;
	const char *target, *source, *fstype, *data;
	unsigned long flags;
	mode_t mode;
	dev_t dev;
};

static int add(struct setup_plan *p, const struct step_in *s)
{
	struct setup_step *n;

	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;

		n = realloc(p->steps, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		p->steps = n;
		p->cap = cap;
	}
	n = &p->steps[p->n];
	*n = (struct setup_step){
	    .type = s->type, .opts = s->opts, .flags = s->flags, .mode = s->mode, .dev = s->dev};
	if (dup_opt(s->target, &n->target) < 0 || dup_opt(s->source, &n->source) < 0 ||
	    dup_opt(s->fstype, &n->fstype) < 0 || dup_opt(s->data, &n->data) < 0) {
		free(n->target);
		free(n->source);
		free(n->fstype);
		free(n->data);
		return -ENOMEM;
	}
	p->n++;
	return 0;
}

#define ADD(p, ...)                                                                                \
	do {                                                                                       \
		int _r = add((p), &(struct step_in){__VA_ARGS__});                                 \
		if (_r < 0)                                                                        \
			return _r;                                                                 \
	} while (0)

static int plan_dev(struct setup_plan *p, const struct host_facts *h)
{
	char path[64];

	ADD(p, .type = STEP_MOUNT, .target = "/dev", .source = "tmpfs", .fstype = "tmpfs",
	    .flags = MS_NOSUID | MS_STRICTATIME, .data = "mode=755,size=65536k");
	for (size_t i = 0; i < ARRAY_SIZE(devices); i++) {
		snprintf(path, sizeof(path), "/dev/%s", devices[i].name);
		/* Device nodes cannot be created in a user namespace: bind the host's. */
		if (h->userns)
			ADD(p, .type = STEP_BIND, .target = path, .source = path,
			    .opts = STEP_ON_FILE);
		else
			ADD(p, .type = STEP_MKNOD, .target = path, .mode = S_IFCHR | 0666,
			    .dev = makedev(devices[i].major, devices[i].minor));
	}
	for (size_t i = 0; i < ARRAY_SIZE(dev_symlinks); i++)
		ADD(p, .type = STEP_SYMLINK, .target = dev_symlinks[i].link,
		    .source = dev_symlinks[i].target);
	/* gid=5 (tty) must be mapped in the user namespace; rootless maps only our own id. */
	ADD(p, .type = STEP_MOUNT, .target = "/dev/pts", .source = "devpts", .fstype = "devpts",
	    .flags = MS_NOSUID | MS_NOEXEC,
	    .data = h->userns ? "newinstance,ptmxmode=0666,mode=0620"
	                      : "newinstance,ptmxmode=0666,mode=0620,gid=5");
	ADD(p, .type = STEP_MOUNT, .target = "/dev/shm", .source = "shm", .fstype = "tmpfs",
	    .flags = MS_NOSUID | MS_NODEV | MS_NOEXEC, .data = "mode=1777,size=65536k");
	ADD(p, .type = STEP_MOUNT, .target = "/dev/mqueue", .source = "mqueue", .fstype = "mqueue",
	    .flags = MS_NOSUID | MS_NODEV | MS_NOEXEC);
	/* --device: the device cgroup (cgroup.c) decides what may be opened; the node only
	 * has to exist. */
	for (size_t i = 0; i < h->n_devices; i++) {
		const struct host_device *d = &h->devices[i];

		if (h->userns)
			ADD(p, .type = STEP_BIND, .target = d->container, .source = d->host,
			    .opts = STEP_ON_FILE);
		else
			ADD(p, .type = STEP_MKNOD, .target = d->container,
			    .mode = d->mode & (S_IFMT | 0777), .dev = d->rdev);
	}
	return 0;
}

static int plan_sys(struct setup_plan *p, const struct runner_config *c, const struct host_facts *h)
{
	const unsigned long ro = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;

	/* sysfs can only be mounted by the owner of the network namespace's user namespace:
	 * rootless with the host's network gets a read-only bind of the host's /sys. */
	if (h->userns && c->net == RUNNER_NET_HOST) {
		ADD(p, .type = STEP_BIND, .target = "/sys", .source = "/sys",
		    .opts = STEP_REC | STEP_RDONLY);
		return 0;
	}
	ADD(p, .type = STEP_MOUNT, .target = "/sys", .source = "sysfs", .fstype = "sysfs",
	    .flags = ro);
	if (h->cgroup2) {
		ADD(p, .type = STEP_MOUNT, .target = "/sys/fs/cgroup", .source = "cgroup",
		    .fstype = "cgroup2", .flags = ro);
		return 0;
	}
	if (h->userns) {
		/* v1 hierarchies cannot be mounted in a user namespace. */
		ADD(p, .type = STEP_BIND, .target = "/sys/fs/cgroup", .source = "/sys/fs/cgroup",
		    .opts = STEP_REC | STEP_RDONLY | STEP_OPTIONAL);
		return 0;
	}
	/* v1 or hybrid: a tmpfs holding each v1 hierarchy, mounted in the cgroup namespace so
	 * that each shows the container's own cgroup as its root, as runc does. */
	ADD(p, .type = STEP_MOUNT, .target = "/sys/fs/cgroup", .source = "tmpfs", .fstype = "tmpfs",
	    .flags = MS_NOSUID | MS_NODEV | MS_NOEXEC, .data = "mode=755");
	for (const char *const *v = h->cgroup_v1; v && *v; v++) {
		const char *sp = strchr(*v, ' ');
		char dir[256];
		int n;

		if (!sp || sp == *v || !sp[1] || memchr(*v, '/', (size_t)(sp - *v)))
			continue;
		n = snprintf(dir, sizeof(dir), "/sys/fs/cgroup/%.*s", (int)(sp - *v), *v);
		if (n < 0 || (size_t)n >= sizeof(dir))
			continue;
		ADD(p, .type = STEP_MOUNT, .target = dir, .source = "cgroup", .fstype = "cgroup",
		    .flags = ro, .data = sp + 1);
	}
	ADD(p, .type = STEP_REMOUNT_RO, .target = "/sys/fs/cgroup");
	return 0;
}

int plan_build(const struct runner_config *c, const struct host_facts *h, const char *hostname,
               struct setup_plan **ret)
{
	_cleanup_(plan_freep) struct setup_plan *p = NULL;
	_cleanup_free_ char *hosts = NULL, *resolv = NULL, *hn = NULL;

	if (c->cwd && c->cwd[0] != '/')
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;

	ADD(p, .type = STEP_MOUNT, .target = "/proc", .source = "proc", .fstype = "proc",
	    .flags = MS_NOSUID | MS_NOEXEC | MS_NODEV);
	int r = plan_dev(p, h);
	if (r < 0)
		return r;
	r = plan_sys(p, c, h);
	if (r < 0)
		return r;
	for (const char *const *m = plan_masked_paths; *m; m++)
		ADD(p, .type = STEP_MASK, .target = *m, .opts = STEP_OPTIONAL);
	/* GHSA-6fw5-f8r9-fgfm: the thermal throttle counters leak host activity. */
	for (unsigned cpu = 0; cpu < h->n_cpus; cpu++) {
		char path[80];

		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%u/thermal_throttle", cpu);
		ADD(p, .type = STEP_MASK, .target = path, .opts = STEP_OPTIONAL);
	}
	for (const char *const *m = plan_readonly_paths; *m; m++)
		ADD(p, .type = STEP_READONLY, .target = *m, .opts = STEP_OPTIONAL);

	hosts = plan_hosts_file(c->net, h->hosts);
	resolv = plan_resolv_conf(c->net, h->resolv_conf);
	if (!hosts || !resolv || asprintf(&hn, "%s\n", hostname) < 0)
		return -ENOMEM;
	ADD(p, .type = STEP_FILE, .target = "/etc/hostname", .source = hn, .opts = STEP_ON_FILE);
	ADD(p, .type = STEP_FILE, .target = "/etc/hosts", .source = hosts, .opts = STEP_ON_FILE);
	ADD(p, .type = STEP_FILE, .target = "/etc/resolv.conf", .source = resolv,
	    .opts = STEP_ON_FILE);
	if (c->cwd && !streq(c->cwd, "/"))
		ADD(p, .type = STEP_MKDIR, .target = c->cwd);
	*ret = TAKE_PTR(p);
	return 0;
}

char *plan_hosts_file(enum runner_net net, const char *host_hosts)
{
	if (net == RUNNER_NET_HOST && host_hosts)
		return strdup(host_hosts);
	return strdup("127.0.0.1\tlocalhost\n"
	              "::1\tlocalhost ip6-localhost ip6-loopback\n"
	              "fe00::0\tip6-localnet\n"
	              "ff00::0\tip6-mcastprefix\n"
	              "ff02::1\tip6-allnodes\n"
	              "ff02::2\tip6-allrouters\n");
}

static bool is_loopback_nameserver(const char *line, size_t len)
{
	char buf[128];
	const char *a;

	if (len >= sizeof(buf))
		return false;
	memcpy(buf, line, len);
	buf[len] = '\0';
	a = buf;
	while (*a == ' ' || *a == '\t')
		a++;
	if (!startswith(a, "nameserver") || (a[10] != ' ' && a[10] != '\t'))
		return false;
	a += 10;
	while (*a == ' ' || *a == '\t')
		a++;
	return startswith(a, "127.") || startswith(a, "::1") || startswith(a, "0:0:0:0:0:0:0:1");
}

static bool is_nameserver(const char *line, size_t len)
{
	while (len > 0 && (*line == ' ' || *line == '\t'))
		line++, len--;
	return len > 11 && startswith(line, "nameserver") && (line[10] == ' ' || line[10] == '\t');
}

char *plan_resolv_conf(enum runner_net net, const char *host_resolv)
{
	static const char fallback[] = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";
	const char *pos = host_resolv ? host_resolv : "";
	size_t total = strlen(pos), used = 0;
	bool any_ns = false;
	char *out;

	if (net == RUNNER_NET_HOST && host_resolv)
		return strdup(host_resolv);
	out = malloc(total + sizeof(fallback) + 2);
	if (!out)
		return NULL;
	while (*pos) {
		const char *nl = strchr(pos, '\n');
		size_t len = nl ? (size_t)(nl - pos) : strlen(pos);

		if (len <= 4096 && !is_loopback_nameserver(pos, len)) {
			memcpy(out + used, pos, len);
			used += len;
			out[used++] = '\n';
			any_ns |= is_nameserver(pos, len);
		}
		pos += len + (nl ? 1 : 0);
	}
	if (!any_ns) {
		memcpy(out + used, fallback, sizeof(fallback) - 1);
		used += sizeof(fallback) - 1;
	}
	out[used] = '\0';
	return out;
}

void plan_env_free(char **env)
{
	if (!env)
		return;
	for (char **e = env; *e; e++)
		free(*e);
	free(env);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(char **, plan_env_free);

/* Index of the entry named like kv (up to '=' or the end) in env[0..n), or -1. */
static ssize_t env_find(char **env, size_t n, const char *kv)
{
	size_t len = strcspn(kv, "=");

	for (size_t i = 0; i < n; i++)
		if (strncmp(env[i], kv, len) == 0 && env[i][len] == '=')
			return (ssize_t)i;
	return -1;
}

/* Sets kv ("K=V") in env (size n, room for one more and the NULL), replacing K if present. */
static int env_set(char **env, size_t *n, const char *kv)
{
	ssize_t i = env_find(env, *n, kv);
	char *d = strdup(kv);

	if (!d)
		return -ENOMEM;
	if (i >= 0) {
		free(env[i]);
		env[i] = d;
	} else {
		env[(*n)++] = d;
		env[*n] = NULL;
	}
	return 0;
}

int plan_env(const struct runner_config *c, const char *hostname, const char *home, bool tty,
             char *(*getenv_fn)(const char *), char ***ret)
{
	_cleanup_(plan_env_freep) char **env = NULL;
	_cleanup_free_ char *tmp = NULL;
	size_t n = 0, max = 5;
	int r;

	for (char *const *e = c->env; e && *e; e++)
		max++;
	env = calloc(max + 1, sizeof(*env));
	if (!env)
		return -ENOMEM;
	r = env_set(env, &n, "PATH=" RUNNER_DEFAULT_PATH);
	if (r < 0)
		return r;
	if (asprintf(&tmp, "HOSTNAME=%s", hostname) < 0)
		return -ENOMEM;
	r = env_set(env, &n, tmp);
	if (r < 0)
		return r;
	for (char *const *e = c->env; e && *e; e++) {
		const char *eq = strchr(*e, '=');

		if (*e[0] == '=' || !*e[0])
			return -EINVAL;
		if (!eq) {
			const char *v = getenv_fn ? getenv_fn(*e) : NULL;

			if (!v)
				continue;
			free(tmp);
			if (asprintf(&tmp, "%s=%s", *e, v) < 0) {
				tmp = NULL;
				return -ENOMEM;
			}
			r = env_set(env, &n, tmp);
		} else {
			r = env_set(env, &n, *e);
		}
		if (r < 0)
			return r;
	}
	if (env_find(env, n, "HOME") < 0) {
		free(tmp);
		if (asprintf(&tmp, "HOME=%s", home && *home ? home : "/") < 0) {
			tmp = NULL;
			return -ENOMEM;
		}
		r = env_set(env, &n, tmp);
		if (r < 0)
			return r;
	}
	if (tty && env_find(env, n, "TERM") < 0) {
		r = env_set(env, &n, "TERM=xterm");
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(env);
	return 0;
}
