/* The seccomp profile: the program compiled at build time is byte for byte what libseccomp
 * builds at run time for the same variant, it is used only for that variant, and a process
 * that loads it gets Docker's answers (no root needed: no_new_privs suffices). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "runner/plan.h"
#include "runner/seccomp_profile.h"
#include "runner/security.h"

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef AF_ALG
#define AF_ALG 38
#endif

static void test_precompiled_equals_libseccomp(void **state)
{
	uint64_t caps = plan_default_caps();
	scmp_filter_ctx ctx = NULL;
	struct sock_fprog prog;
	void *buf = NULL;
	size_t size = 0;

	(void)state;
	assert_true(seccomp_precompiled(caps, &prog));
	assert_int_equal(seccomp_profile_build(caps, true, &ctx), 0);
	assert_int_equal(seccomp_profile_export(ctx, &buf, &size), 0);
	seccomp_release(ctx);
	assert_int_equal(size, prog.len * sizeof(struct sock_filter));
	assert_memory_equal(buf, prog.filter, size);
	free(buf);
}

static void test_precompiled_only_for_its_variant(void **state)
{
	uint64_t caps = plan_default_caps();
	struct sock_fprog prog = {0};

	(void)state;
	assert_false(seccomp_precompiled(caps | (1ull << CAP_SYS_ADMIN), &prog));
	assert_false(seccomp_precompiled(caps | (1ull << CAP_SYS_PTRACE), &prog));
	assert_false(seccomp_precompiled(caps & ~(1ull << CAP_SYS_CHROOT), &prog));
	assert_false(seccomp_precompiled(0, &prog));
	assert_null(prog.filter);
}

/* The variants differ where the profile says they do: a capability-conditional group. */
static void test_variants_differ(void **state)
{
	uint64_t caps = plan_default_caps();
	scmp_filter_ctx a = NULL, b = NULL;
	void *ba = NULL, *bb = NULL;
	size_t na = 0, nb = 0;

	(void)state;
	assert_int_equal(seccomp_profile_build(caps, true, &a), 0);
	assert_int_equal(seccomp_profile_build(caps | (1ull << CAP_SYS_ADMIN), true, &b), 0);
	assert_int_equal(seccomp_profile_export(a, &ba, &na), 0);
	assert_int_equal(seccomp_profile_export(b, &bb, &nb), 0);
	assert_true(na != nb || memcmp(ba, bb, na) != 0);
	seccomp_release(a);
	seccomp_release(b);
	free(ba);
	free(bb);
	assert_true(seccomp_profile_allow_count() > 300);
}

enum {
	BAD_LOAD = 1 << 0,
	BAD_GETPID = 1 << 1,
	BAD_KEYCTL = 1 << 2,
	BAD_CLONE3 = 1 << 3,
	BAD_UNSHARE = 1 << 4,
	BAD_VSOCK = 1 << 5,
	BAD_PERSONALITY = 1 << 6,
	BAD_PERSONALITY_DENIED = 1 << 7,
	BAD_MOUNT = 1 << 8,
	BAD_IO_URING = 1 << 9,
	BAD_ALG = 1 << 10,
	BAD_UNIX = 1 << 11,
};

/* errno of a raw syscall, 0 when it succeeded. */
static int sys_errno(long r)
{
	return r < 0 ? errno : 0;
}

/* In a child: loads the profile for caps and reports every unexpected answer as a bit of
 * the int it writes to a pipe (an exit status keeps only 8 bits). With CAP_SYS_ADMIN in
 * caps, unshare and mount are allowed by the filter (the kernel then answers on its own,
 * never with the filter's EPERM for unshare(0)). */
static int probe_in_child(uint64_t caps)
{
	int status, fds[2], bad = -1;
	pid_t pid;

	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	pid = fork();
	if (pid == 0) {
		bool admin = caps & (1ull << CAP_SYS_ADMIN);
		int s;

		bad = 0;
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || seccomp_load_default(caps) < 0) {
			bad = BAD_LOAD;
			goto out;
		}
		if (syscall(SYS_getpid) != getpid())
			bad |= BAD_GETPID;
		if (sys_errno(syscall(SYS_keyctl, 0, 0, 0, 0, 0)) != EPERM)
			bad |= BAD_KEYCTL;
		if (!admin && sys_errno(syscall(SYS_clone3, NULL, 0)) != ENOSYS)
			bad |= BAD_CLONE3;
		if (sys_errno(syscall(SYS_unshare, 0)) != (admin ? 0 : EPERM))
			bad |= BAD_UNSHARE;
		s = (int)syscall(SYS_socket, AF_VSOCK, SOCK_STREAM, 0);
		if (s >= 0 || errno != EPERM)
			bad |= BAD_VSOCK;
		s = (int)syscall(SYS_socket, AF_ALG, SOCK_SEQPACKET, 0);
		if (s >= 0 || errno != EPERM)
			bad |= BAD_ALG;
		s = (int)syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0);
		if (s < 0)
			bad |= BAD_UNIX;
		else
			close(s);
		/* moby >= 25 removed io_uring from the allowlist: EPERM, not EFAULT/EINVAL. */
		if (sys_errno(syscall(SYS_io_uring_setup, 1, NULL)) != EPERM ||
		    sys_errno(syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0)) != EPERM ||
		    sys_errno(syscall(SYS_io_uring_register, -1, 0, NULL, 0)) != EPERM)
			bad |= BAD_IO_URING;
		if (syscall(SYS_personality, 0xffffffffUL) < 0)
			bad |= BAD_PERSONALITY;
		if (sys_errno(syscall(SYS_personality, (unsigned long)ADDR_NO_RANDOMIZE)) != EPERM)
			bad |= BAD_PERSONALITY_DENIED;
		if (!admin && sys_errno(syscall(SYS_mount, "none", "/", "tmpfs", 0, NULL)) != EPERM)
			bad |= BAD_MOUNT;
	out:
		_exit(write(fds[1], &bad, sizeof(bad)) == sizeof(bad) ? 0 : 1);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(fds[1]);
	assert_int_equal(read(fds[0], &bad, sizeof(bad)), sizeof(bad));
	close(fds[0]);
	return bad;
}

static void test_load_precompiled(void **state)
{
	(void)state;
	assert_int_equal(probe_in_child(plan_default_caps()), 0);
}

static void test_load_built_at_run_time(void **state)
{
	(void)state;
	assert_int_equal(probe_in_child(plan_default_caps() | (1ull << CAP_SYS_ADMIN)), 0);
	assert_int_equal(probe_in_child(plan_default_caps() & ~(1ull << CAP_SYS_CHROOT)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_precompiled_equals_libseccomp),
	    cmocka_unit_test(test_precompiled_only_for_its_variant),
	    cmocka_unit_test(test_variants_differ),
	    cmocka_unit_test(test_load_precompiled),
	    cmocka_unit_test(test_load_built_at_run_time),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
