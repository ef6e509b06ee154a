/* The setup plan: which steps a configuration produces, in which order, for root and
 * rootless, cgroup v1 and v2 hosts; generated /etc files; the command's environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include "runner/plan.h"

static char *const argv_true[] = {"/bin/true", NULL};
static const char *const v1[] = {"cpu cpu",   "memory memory", "systemd name=systemd",
                                 "bad/dir x", "nospace",       NULL};

static const struct setup_step *find(const struct setup_plan *p, enum step_type t,
                                     const char *target, size_t *ret_index)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->steps[i].type == t && strcmp(p->steps[i].target, target) == 0) {
			if (ret_index)
				*ret_index = i;
			return &p->steps[i];
		}
	return NULL;
}

static size_t count(const struct setup_plan *p, enum step_type t)
{
	size_t n = 0;

	for (size_t i = 0; i < p->n; i++)
		n += p->steps[i].type == t;
	return n;
}

static void test_root_v1(void **state)
{
	struct runner_config c = {
	    .rootfs = "/r", .argv = argv_true, .net = RUNNER_NET_NONE, .cwd = "/work"};
	struct host_facts h = {.cgroup_v1 = v1, .resolv_conf = "nameserver 127.0.0.53\n"};
	struct setup_plan *p = NULL;
	const struct setup_step *s;
	size_t i_proc = 0, i_dev = 0, i_null = 0, i_pts = 0, i_sys = 0, i_cg = 0, i_ro = 0,
	       i_mask = 0, i_sysmask = 0;

	(void)state;
	assert_int_equal(plan_build(&c, &h, "box", &p), 0);
	s = find(p, STEP_MOUNT, "/proc", &i_proc);
	assert_non_null(s);
	assert_string_equal(s->fstype, "proc");
	assert_int_equal(s->flags, MS_NOSUID | MS_NOEXEC | MS_NODEV);
	s = find(p, STEP_MOUNT, "/dev", &i_dev);
	assert_non_null(s);
	assert_int_equal(s->flags, MS_NOSUID | MS_STRICTATIME);
	assert_string_equal(s->data, "mode=755,size=65536k");
	s = find(p, STEP_MKNOD, "/dev/null", &i_null);
	assert_non_null(s);
	assert_int_equal(s->dev, makedev(1, 3));
	assert_int_equal(s->mode, S_IFCHR | 0666);
	assert_int_equal(count(p, STEP_MKNOD), 6);
	assert_int_equal(count(p, STEP_SYMLINK), 6);
	assert_string_equal(find(p, STEP_SYMLINK, "/dev/ptmx", NULL)->source, "pts/ptmx");
	assert_string_equal(find(p, STEP_SYMLINK, "/dev/fd", NULL)->source, "/proc/self/fd");
	s = find(p, STEP_MOUNT, "/dev/pts", &i_pts);
	assert_non_null(s);
	assert_string_equal(s->data, "newinstance,ptmxmode=0666,mode=0620,gid=5");
	assert_string_equal(find(p, STEP_MOUNT, "/dev/shm", NULL)->data, "mode=1777,size=65536k");
	assert_non_null(find(p, STEP_MOUNT, "/dev/mqueue", NULL));
	s = find(p, STEP_MOUNT, "/sys", &i_sys);
	assert_true(s->flags & MS_RDONLY);
	/* v1: a tmpfs, the valid hierarchies, then the tmpfs made read-only. */
	s = find(p, STEP_MOUNT, "/sys/fs/cgroup", &i_cg);
	assert_string_equal(s->fstype, "tmpfs");
	assert_string_equal(find(p, STEP_MOUNT, "/sys/fs/cgroup/cpu", NULL)->data, "cpu");
	assert_string_equal(find(p, STEP_MOUNT, "/sys/fs/cgroup/systemd", NULL)->data,
	                    "name=systemd");
	assert_true(find(p, STEP_MOUNT, "/sys/fs/cgroup/memory", NULL)->flags & MS_RDONLY);
	assert_null(find(p, STEP_MOUNT, "/sys/fs/cgroup/bad/dir", NULL));
	assert_non_null(find(p, STEP_REMOUNT_RO, "/sys/fs/cgroup", &i_ro));
	assert_non_null(find(p, STEP_MASK, "/proc/kcore", &i_mask));
	assert_non_null(find(p, STEP_MASK, "/sys/firmware", &i_sysmask));
	assert_int_equal(count(p, STEP_MASK), 12);
	assert_int_equal(count(p, STEP_READONLY), 5);
	assert_true(find(p, STEP_READONLY, "/proc/sysrq-trigger", NULL)->opts & STEP_OPTIONAL);
	/* Order: each mount after what it lands on; masks after proc and sys. */
	assert_true(i_proc < i_dev && i_dev < i_null && i_null < i_pts);
	assert_true(i_sys < i_cg && i_cg < i_ro && i_ro < i_mask && i_sys < i_sysmask);
	s = find(p, STEP_FILE, "/etc/hostname", NULL);
	assert_string_equal(s->source, "box\n");
	assert_true(s->opts & STEP_ON_FILE);
	assert_non_null(
	    strstr(find(p, STEP_FILE, "/etc/hosts", NULL)->source, "127.0.0.1\tlocalhost"));
	s = find(p, STEP_FILE, "/etc/resolv.conf", NULL);
	assert_null(strstr(s->source, "127.0.0.53"));
	assert_non_null(strstr(s->source, "nameserver 8.8.8.8"));
	assert_non_null(find(p, STEP_MKDIR, "/work", NULL));
	assert_int_equal(count(p, STEP_BIND), 0);
	plan_free(p);
}

static void test_rootless(void **state)
{
	struct runner_config c = {.rootfs = "/r", .argv = argv_true, .net = RUNNER_NET_HOST};
	struct host_facts h = {
	    .userns = true, .hosts = "10.0.0.1 myhost\n", .resolv_conf = "nameserver 127.0.0.53\n"};
	struct setup_plan *p = NULL;
	const struct setup_step *s;

	(void)state;
	assert_int_equal(plan_build(&c, &h, "box", &p), 0);
	assert_int_equal(count(p, STEP_MKNOD), 0);
	s = find(p, STEP_BIND, "/dev/null", NULL);
	assert_non_null(s);
	assert_string_equal(s->source, "/dev/null");
	assert_true(s->opts & STEP_ON_FILE);
	assert_non_null(find(p, STEP_BIND, "/dev/tty", NULL));
	assert_string_equal(find(p, STEP_MOUNT, "/dev/pts", NULL)->data,
	                    "newinstance,ptmxmode=0666,mode=0620");
	/* Host network in a user namespace: sysfs cannot be mounted, the host's is bound. */
	s = find(p, STEP_BIND, "/sys", NULL);
	assert_non_null(s);
	assert_int_equal(s->opts & (STEP_REC | STEP_RDONLY), STEP_REC | STEP_RDONLY);
	assert_null(find(p, STEP_MOUNT, "/sys", NULL));
	assert_null(find(p, STEP_MOUNT, "/sys/fs/cgroup", NULL));
	/* --net host: the host's files as they are. */
	assert_string_equal(find(p, STEP_FILE, "/etc/hosts", NULL)->source, "10.0.0.1 myhost\n");
	assert_string_equal(find(p, STEP_FILE, "/etc/resolv.conf", NULL)->source,
	                    "nameserver 127.0.0.53\n");
	assert_null(find(p, STEP_MKDIR, "/", NULL));
	plan_free(p);

	c.net = RUNNER_NET_NONE;
	assert_int_equal(plan_build(&c, &h, "box", &p), 0);
	assert_non_null(find(p, STEP_MOUNT, "/sys", NULL));
	s = find(p, STEP_BIND, "/sys/fs/cgroup", NULL);
	assert_non_null(s);
	assert_true(s->opts & STEP_OPTIONAL);
	plan_free(p);
}

static void test_cgroup2(void **state)
{
	struct runner_config c = {.rootfs = "/r", .argv = argv_true};
	struct host_facts h = {.cgroup2 = true, .cgroup_v1 = v1};
	struct setup_plan *p = NULL;
	const struct setup_step *s;

	(void)state;
	assert_int_equal(plan_build(&c, &h, "x", &p), 0);
	s = find(p, STEP_MOUNT, "/sys/fs/cgroup", NULL);
	assert_string_equal(s->fstype, "cgroup2");
	assert_true(s->flags & MS_RDONLY);
	assert_null(find(p, STEP_MOUNT, "/sys/fs/cgroup/cpu", NULL));
	assert_null(find(p, STEP_REMOUNT_RO, "/sys/fs/cgroup", NULL));
	plan_free(p);
}

static void test_invalid(void **state)
{
	struct runner_config c = {.rootfs = "/r", .argv = argv_true, .cwd = "relative"};
	struct host_facts h = {0};
	struct setup_plan *p = (struct setup_plan *)0x1;

	(void)state;
	assert_int_equal(plan_build(&c, &h, "x", &p), -EINVAL);
	assert_ptr_equal(p, (struct setup_plan *)0x1);
}

static void test_resolv(void **state)
{
	char *r;

	(void)state;
	r = plan_resolv_conf(RUNNER_NET_NONE,
	                     "# c\nsearch example.com\nnameserver 127.0.0.1\n"
	                     "nameserver ::1\nnameserver 10.1.1.1\noptions ndots:2");
	assert_string_equal(r, "# c\nsearch example.com\nnameserver 10.1.1.1\noptions ndots:2\n");
	free(r);
	r = plan_resolv_conf(RUNNER_NET_NONE, NULL);
	assert_string_equal(r, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
	free(r);
	r = plan_resolv_conf(RUNNER_NET_NONE, "\tnameserver\t127.0.0.11\n");
	assert_string_equal(r, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
	free(r);
	r = plan_resolv_conf(RUNNER_NET_HOST, "nameserver 127.0.0.53\n");
	assert_string_equal(r, "nameserver 127.0.0.53\n");
	free(r);
	r = plan_hosts_file(RUNNER_NET_HOST, NULL);
	assert_non_null(strstr(r, "localhost"));
	free(r);
}

static char *fake_getenv(const char *name)
{
	return strcmp(name, "FROMHOST") == 0 ? "yes" : NULL;
}

static void test_env(void **state)
{
	char *const user_env[] = {"FOO=1", "PATH=/x", "FROMHOST", "UNSET", "FOO=2", "EMPTY=", NULL};
	struct runner_config c = {.env = user_env};
	char **env = NULL;

	(void)state;
	assert_int_equal(plan_env(&c, "h1", "/root", false, fake_getenv, &env), 0);
	assert_string_equal(env[0], "PATH=/x");
	assert_string_equal(env[1], "HOSTNAME=h1");
	assert_string_equal(env[2], "FOO=2");
	assert_string_equal(env[3], "FROMHOST=yes");
	assert_string_equal(env[4], "EMPTY=");
	assert_string_equal(env[5], "HOME=/root");
	assert_null(env[6]);
	plan_env_free(env);

	c.env = NULL;
	assert_int_equal(plan_env(&c, "h", NULL, true, NULL, &env), 0);
	assert_string_equal(env[0], "PATH=" RUNNER_DEFAULT_PATH);
	assert_string_equal(env[2], "HOME=/");
	assert_string_equal(env[3], "TERM=xterm");
	assert_null(env[4]);
	plan_env_free(env);

	char *const bad[] = {"=x", NULL};
	c.env = bad;
	env = (char **)0x1;
	assert_int_equal(plan_env(&c, "h", NULL, false, NULL, &env), -EINVAL);
	assert_ptr_equal(env, (char **)0x1);
}

static void test_caps(void **state)
{
	(void)state;
	/* The mask the kernel shows as CapEff in a Docker container. */
	assert_int_equal(plan_default_caps(), 0xa80425fbull);
}

/* Docker's masked paths, with /proc/interrupts and each CPU's thermal_throttle
 * (GHSA-6fw5-f8r9-fgfm); all optional. */
static void test_masks(void **state)
{
	struct runner_config c = {.rootfs = "/r", .argv = argv_true};
	struct host_facts h = {.cgroup2 = true, .n_cpus = 2};
	struct setup_plan *p = NULL;
	const struct setup_step *s;

	(void)state;
	assert_int_equal(plan_build(&c, &h, "box", &p), 0);
	s = find(p, STEP_MASK, "/proc/interrupts", NULL);
	assert_non_null(s);
	assert_true(s->opts & STEP_OPTIONAL);
	assert_non_null(find(p, STEP_MASK, "/sys/devices/system/cpu/cpu0/thermal_throttle", NULL));
	s = find(p, STEP_MASK, "/sys/devices/system/cpu/cpu1/thermal_throttle", NULL);
	assert_non_null(s);
	assert_true(s->opts & STEP_OPTIONAL);
	assert_null(find(p, STEP_MASK, "/sys/devices/system/cpu/cpu2/thermal_throttle", NULL));
	plan_free(p);
}

/* --device: a node with the host's type, numbers and permissions as root, a bind of the
 * host's node in a user namespace; after /dev is mounted either way. */
static void test_devices(void **state)
{
	struct runner_config c = {.rootfs = "/r", .argv = argv_true};
	struct host_device d[] = {
	    {.host = "/dev/loop-control",
	     .container = "/dev/loop-control",
	     .mode = S_IFCHR | 0660,
	     .rdev = makedev(10, 237),
	     .access = RUNNER_DEV_READ},
	    {.host = "/dev/sda",
	     .container = "/disk",
	     .mode = S_IFBLK | 0660,
	     .rdev = makedev(8, 0)},
	};
	struct host_facts h = {.cgroup2 = true, .devices = d, .n_devices = 2};
	struct setup_plan *p = NULL;
	const struct setup_step *s;
	size_t i_dev = 0, i_loop = 0;

	(void)state;
	assert_int_equal(plan_build(&c, &h, "box", &p), 0);
	assert_non_null(find(p, STEP_MOUNT, "/dev", &i_dev));
	s = find(p, STEP_MKNOD, "/dev/loop-control", &i_loop);
	assert_non_null(s);
	assert_true(i_loop > i_dev);
	assert_int_equal(s->mode, S_IFCHR | 0660);
	assert_int_equal(s->dev, makedev(10, 237));
	s = find(p, STEP_MKNOD, "/disk", NULL);
	assert_non_null(s);
	assert_int_equal(s->mode, S_IFBLK | 0660);
	plan_free(p);

	h.userns = true;
	assert_int_equal(plan_build(&c, &h, "box", &p), 0);
	assert_null(find(p, STEP_MKNOD, "/dev/loop-control", NULL));
	s = find(p, STEP_BIND, "/disk", NULL);
	assert_non_null(s);
	assert_string_equal(s->source, "/dev/sda");
	assert_true(s->opts & STEP_ON_FILE);
	plan_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_root_v1), cmocka_unit_test(test_rootless),
	    cmocka_unit_test(test_cgroup2), cmocka_unit_test(test_invalid),
	    cmocka_unit_test(test_resolv),  cmocka_unit_test(test_env),
	    cmocka_unit_test(test_caps),    cmocka_unit_test(test_devices),
	    cmocka_unit_test(test_masks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
