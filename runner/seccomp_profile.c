/* Docker's default seccomp profile as libseccomp rules.
 *
 * Follows github.com/moby/profiles/seccomp v0.2.3 (default.json), the version vendored by
 * moby/moby at commit b985e2313a8676e18072b442911fc8f64f17d440 (after docker-v29.7.2),
 * compared rule by rule: the unconditional allowlist (in the profile's order), the
 * kernel 4.8 ptrace group, socket without AF_ALG and AF_VSOCK, the personality values,
 * the per-architecture and per-capability groups and clone/clone3 without CAP_SYS_ADMIN.
 * Since moby 25 io_uring_setup, io_uring_enter and io_uring_register are not allowed, so
 * they get the default EPERM. To update: diff the new default.json's groups against the
 * tables below, then record the new version here and in docs/ARCHITECTURE.md. */
#include <linux/capability.h>
#include <linux/filter.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "runner/seccomp_profile.h"
#include "common/macros.h"

/* The unconditional allowlist of moby's profiles/seccomp/default.json. Names unknown to
 * libseccomp or to an architecture are skipped. */
static const char *const allow[] = {
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
};

/* Allowed only for a process holding the capability (the profile's "includes.caps"). */
static const struct {
	int cap;
	const char *names[28];
} cap_allow[] = {
    {CAP_DAC_READ_SEARCH, {"open_by_handle_at"}},
    {CAP_SYS_ADMIN,
     {"bpf",
      "clone",
      "clone3",
      "fanotify_init",
      "fsconfig",
      "fsmount",
      "fsopen",
      "fspick",
      "lookup_dcookie",
      "lsm_get_self_attr",
      "lsm_list_modules",
      "lsm_set_self_attr",
      "mount",
      "mount_setattr",
      "move_mount",
      "open_tree",
      "perf_event_open",
      "quotactl",
      "quotactl_fd",
      "setdomainname",
      "sethostname",
      "setns",
      "syslog",
      "umount",
      "umount2",
      "unshare"}},
    {CAP_SYS_BOOT, {"reboot"}},
    {CAP_SYS_CHROOT, {"chroot"}},
    {CAP_SYS_MODULE, {"delete_module", "init_module", "finit_module"}},
    {CAP_SYS_PACCT, {"acct"}},
    {CAP_SYS_PTRACE,
     {"kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"}},
    {CAP_SYS_RAWIO, {"iopl", "ioperm"}},
    {CAP_SYS_TIME, {"settimeofday", "stime", "clock_settime", "clock_settime64"}},
    {CAP_SYS_TTY_CONFIG, {"vhangup"}},
    {CAP_SYS_NICE, {"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"}},
    {CAP_SYSLOG, {"syslog"}},
    {CAP_BPF, {"bpf"}},
    {CAP_PERFMON, {"perf_event_open"}},
};

/* The profile's architecture-specific allowances for the architecture we run on. */
static const char *const arch_allow[] = {
#if defined(__x86_64__) || defined(__i386__)
    "arch_prctl",
    "modify_ldt",
#elif defined(__aarch64__) || defined(__arm__)
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
#elif defined(__powerpc64__)
    "sync_file_range2",
    "swapcontext",
#elif defined(__s390x__)
    "s390_pci_mmio_read",
    "s390_pci_mmio_write",
    "s390_runtime_instr",
#elif defined(__riscv)
    "riscv_flush_icache",
#endif
    NULL,
};

unsigned seccomp_profile_allow_count(void)
{
	return ARRAY_SIZE(allow);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(scmp_filter_ctx, seccomp_release);

/* Adds a rule for name; names this libseccomp does not know are skipped, as runc does.
 * -EEXIST (a name listed twice) is not an error either. */
static int rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n_args,
                const struct scmp_arg_cmp *args)
{
	int nr = seccomp_syscall_resolve_name(name);
	int r;

	if (nr == __NR_SCMP_ERROR)
		return 0;
	r = seccomp_rule_add_array(ctx, action, nr, n_args, args);
	if (r == -EEXIST)
		return 0;
	return r;
}

int seccomp_profile_build(uint64_t caps, bool kernel_4_8, scmp_filter_ctx *ret)
{
	_cleanup_(seccomp_releasep) scmp_filter_ctx ctx = NULL;
	static const uint64_t personas[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffff};
	/* CLONE_NEWNS | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWCGROUP */
	const uint64_t ns_flags = 0x7E020000;
	int r;

	ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	if (!ctx)
		return -ENOMEM;
	/* A binary search over syscall numbers instead of a linear list: the same decisions,
	 * but the kernel evaluates it faster, both when it is loaded (it is run once per
	 * syscall number and architecture to fill the kernel's allow cache, which halves the
	 * load time) and for every syscall the cache cannot answer (those with argument
	 * checks). */
	r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	if (r < 0)
		return r;
#if defined(__x86_64__)
	/* The profile's archMap: x86_64 processes may also use the i386 and x32 ABIs. */
	r = seccomp_arch_add(ctx, SCMP_ARCH_X86);
	if (r < 0 && r != -EEXIST)
		return r;
	r = seccomp_arch_add(ctx, SCMP_ARCH_X32);
	if (r < 0 && r != -EEXIST)
		return r;
#endif
	for (size_t i = 0; i < ARRAY_SIZE(allow); i++) {
		r = rule(ctx, SCMP_ACT_ALLOW, allow[i], 0, NULL);
		if (r < 0)
			return r;
	}
	for (const char *const *a = arch_allow; *a; a++) {
		r = rule(ctx, SCMP_ACT_ALLOW, *a, 0, NULL);
		if (r < 0)
			return r;
	}
	if (kernel_4_8) {
		static const char *const pt[] = {"process_vm_readv", "process_vm_writev", "ptrace"};

		for (size_t i = 0; i < ARRAY_SIZE(pt); i++) {
			r = rule(ctx, SCMP_ACT_ALLOW, pt[i], 0, NULL);
			if (r < 0)
				return r;
		}
	}
	/* socket: anything but AF_ALG (38) and AF_VSOCK (40), as three rules like the
	 * profile's; libseccomp ORs rules of one syscall. */
	r = rule(ctx, SCMP_ACT_ALLOW, "socket", 1,
	         (struct scmp_arg_cmp[]){SCMP_A0(SCMP_CMP_LT, 38)});
	if (r >= 0)
		r = rule(ctx, SCMP_ACT_ALLOW, "socket", 1,
		         (struct scmp_arg_cmp[]){SCMP_A0(SCMP_CMP_EQ, 39)});
	if (r >= 0)
		r = rule(ctx, SCMP_ACT_ALLOW, "socket", 1,
		         (struct scmp_arg_cmp[]){SCMP_A0(SCMP_CMP_GT, 40)});
	if (r < 0)
		return r;
	for (size_t i = 0; i < ARRAY_SIZE(personas); i++) {
		r = rule(ctx, SCMP_ACT_ALLOW, "personality", 1,
		         (struct scmp_arg_cmp[]){SCMP_A0(SCMP_CMP_EQ, personas[i])});
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < ARRAY_SIZE(cap_allow); i++) {
		if (!(caps & (1ull << cap_allow[i].cap)))
			continue;
		for (size_t j = 0; j < ARRAY_SIZE(cap_allow[i].names) && cap_allow[i].names[j];
		     j++) {
			r = rule(ctx, SCMP_ACT_ALLOW, cap_allow[i].names[j], 0, NULL);
			if (r < 0)
				return r;
		}
	}
	if (!(caps & (1ull << CAP_SYS_ADMIN))) {
		/* clone without namespace flags; clone3's flags are in memory that seccomp
		 * cannot inspect, so it gets ENOSYS and libc falls back to clone. */
		r = rule(
		    ctx, SCMP_ACT_ALLOW, "clone", 1, (struct scmp_arg_cmp[]) {
#if defined(__s390x__) || defined(__s390__)
			    SCMP_A1(SCMP_CMP_MASKED_EQ, ns_flags, 0)
#else
				 SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags, 0)
#endif
		    });
		if (r < 0)
			return r;
		r = rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(ctx);
	return 0;
}

int seccomp_profile_export(scmp_filter_ctx ctx, void **ret, size_t *ret_size)
{
	_cleanup_close_ int fd = memfd_create("seccomp-bpf", MFD_CLOEXEC);
	_cleanup_free_ void *buf = NULL;
	struct stat st;
	int r;

	if (fd < 0)
		return -errno;
	r = seccomp_export_bpf(ctx, fd);
	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size <= 0 || (size_t)st.st_size % sizeof(struct sock_filter) != 0 ||
	    (size_t)st.st_size > BPF_MAXINSNS * sizeof(struct sock_filter))
		return -EINVAL;
	buf = malloc((size_t)st.st_size);
	if (!buf)
		return -ENOMEM;
	if (pread(fd, buf, (size_t)st.st_size, 0) != st.st_size)
		return -EIO;
	*ret = TAKE_PTR(buf);
	*ret_size = (size_t)st.st_size;
	return 0;
}
