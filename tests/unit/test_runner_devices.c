/* The device cgroup rules: Docker's defaults as cgroup v1 lines, the --device rules, the
 * shape of the BPF program and, as root on a host with cgroup2, what the attached program
 * lets a process open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "runner/devices.h"

static void test_v1_lines(void **state)
{
	static const char *const want[] = {
	    "c *:* m",   "b *:* m",   "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm",   "c 1:8 rwm",
	    "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
	};
	char buf[32];

	(void)state;
	assert_int_equal(devices_n_default_rules, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < devices_n_default_rules; i++) {
		assert_int_equal(devices_v1_line(&devices_default_rules[i], buf, sizeof(buf)), 0);
		assert_string_equal(buf, want[i]);
	}
	assert_int_equal(
	    devices_v1_line(&(struct dev_rule){'a', 1, 1, RUNNER_DEV_READ}, buf, sizeof(buf)),
	    -EINVAL);
	assert_int_equal(devices_v1_line(&(struct dev_rule){'c', 1, 1, 0}, buf, sizeof(buf)),
	                 -EINVAL);
	assert_int_equal(devices_v1_line(&devices_default_rules[2], buf, 4), -ENOBUFS);
}

static void test_rules(void **state)
{
	struct host_device d[] = {
	    {.mode = S_IFBLK | 0660, .rdev = makedev(7, 3), .access = RUNNER_DEV_READ},
	    {.mode = S_IFCHR | 0600, .rdev = makedev(10, 237), .access = RUNNER_DEV_WRITE},
	};
	struct dev_rule *r = NULL;
	size_t n = 0;
	char buf[32];

	(void)state;
	assert_int_equal(devices_rules(d, 2, &r, &n), 0);
	assert_int_equal(n, devices_n_default_rules + 2);
	assert_memory_equal(r, devices_default_rules,
	                    devices_n_default_rules * sizeof(struct dev_rule));
	assert_int_equal(devices_v1_line(&r[n - 2], buf, sizeof(buf)), 0);
	assert_string_equal(buf, "b 7:3 r");
	assert_int_equal(devices_v1_line(&r[n - 1], buf, sizeof(buf)), 0);
	assert_string_equal(buf, "c 10:237 w");
	free(r);
	r = NULL;
	d[1].mode = S_IFREG | 0644;
	assert_int_equal(devices_rules(d, 2, &r, &n), -EINVAL);
	assert_null(r);
}

static void test_bpf_shape(void **state)
{
	struct bpf_insn *p = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(devices_bpf_build(devices_default_rules, devices_n_default_rules, &p, &n),
	                 0);
	/* 6 loads, per rule: type check, access check (3, unless rwm), major, minor, return 1
	 * (2); then return 0 (2). */
	assert_int_equal(n, 6 + 2 * (1 + 3 + 2) + 8 * (1 + 2 + 2) + (1 + 1 + 2) + 2);
	assert_int_equal(p[n - 2].code, BPF_ALU64 | BPF_MOV | BPF_K);
	assert_int_equal(p[n - 2].imm, 0);
	assert_int_equal(p[n - 1].code, BPF_JMP | BPF_EXIT);
	/* Every jump lands inside the program. */
	for (size_t i = 0; i < n; i++)
		if (p[i].code == (BPF_JMP | BPF_JNE | BPF_K))
			assert_true(i + 1 + (size_t)p[i].off < n);
	free(p);
	p = NULL;
	assert_int_equal(devices_bpf_build(&(struct dev_rule){'x', 1, 1, 1}, 1, &p, &n), -EINVAL);
	assert_null(p);
}

/* A cgroup2 directory to test in, or NULL. */
static const char *cgroup2_root(void)
{
	static const char *const roots[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
	struct statfs s;

	for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++)
		if (statfs(roots[i], &s) == 0 && s.f_type == CGROUP2_SUPER_MAGIC)
			return roots[i];
	return NULL;
}

enum {
	BAD_MKNOD_BLOCK = 1 << 0,
	BAD_OPEN_BLOCK = 1 << 1,
	BAD_NULL = 1 << 2,
	BAD_RULE_READ = 1 << 3,
	BAD_RULE_WRITE = 1 << 4,
	BAD_SETUP = 1 << 5,
};

/* Creates node (type, major, minor) at path and opens it with flags; returns the errno. */
static int try_node(const char *path, mode_t type, unsigned maj, unsigned min, int flags,
                    bool *ret_made)
{
	int fd, err = 0;

	unlink(path);
	*ret_made = mknod(path, type | 0600, makedev(maj, min)) == 0;
	if (!*ret_made)
		return errno;
	fd = open(path, flags | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		err = errno;
	else
		close(fd);
	unlink(path);
	return err;
}

static int child_checks(const char *dir)
{
	char path[256];
	bool made;
	int bad = 0;

	snprintf(path, sizeof(path), "%s/node", dir);
	/* mknod of any block device is allowed; opening it is not. */
	if (try_node(path, S_IFBLK, 7, 0, O_RDONLY, &made) != EPERM)
		bad |= made ? BAD_OPEN_BLOCK : 0;
	if (!made)
		bad |= BAD_MKNOD_BLOCK;
	if (try_node(path, S_IFCHR, 1, 3, O_RDWR, &made) != 0)
		bad |= BAD_NULL;
	/* The extra rule allows reading 1:11 (kmsg), not writing it. */
	if (try_node(path, S_IFCHR, 1, 11, O_RDONLY, &made) != 0)
		bad |= BAD_RULE_READ;
	if (try_node(path, S_IFCHR, 1, 11, O_WRONLY, &made) != EPERM)
		bad |= BAD_RULE_WRITE;
	return bad;
}

static void test_bpf_attached(void **state)
{
	const char *root = cgroup2_root();
	char cg[256], procs[300], dir[] = "/tmp/imgfs-devtest-XXXXXX", go;
	struct dev_rule *rules = NULL;
	struct host_device extra = {
	    .mode = S_IFCHR | 0600, .rdev = makedev(1, 11), .access = RUNNER_DEV_READ};
	int fds[2], cgfd, status, r;
	size_t n = 0;
	pid_t pid;
	FILE *f;

	(void)state;
	if (geteuid() != 0 || !root) {
		skip();
		return;
	}
	snprintf(cg, sizeof(cg), "%s/imgfs-test-devices-%d", root, (int)getpid());
	assert_int_equal(mkdir(cg, 0755), 0);
	assert_non_null(mkdtemp(dir));
	cgfd = open(cg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(cgfd >= 0);
	assert_int_equal(devices_rules(&extra, 1, &rules, &n), 0);
	r = devices_bpf_attach(cgfd, rules, n);
	free(rules);
	close(cgfd);
	assert_int_equal(r, 0);

	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[1]);
		_exit(read(fds[0], &go, 1) == 1 ? child_checks(dir) : BAD_SETUP);
	}
	close(fds[0]);
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cg);
	f = fopen(procs, "we");
	assert_non_null(f);
	fprintf(f, "%d\n", (int)pid);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(write(fds[1], "g", 1), 1);
	close(fds[1]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	rmdir(dir);
	for (int i = 0; i < 100 && rmdir(cg) < 0 && errno == EBUSY; i++)
		nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_v1_lines),
	    cmocka_unit_test(test_rules),
	    cmocka_unit_test(test_bpf_shape),
	    cmocka_unit_test(test_bpf_attached),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
