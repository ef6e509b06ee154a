#!/bin/bash
# runner vs runc: the same probe in the same rootfs, with a runc config adjusted to Docker's
# defaults, must report the same container. Intentional differences are filtered out below
# and explained in docs/decisions/0037-runner-setup-plan-and-mounts-by-fd.md.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/runner_lib.sh"
require_root
require_cmd runc jq

BUNDLE="$TESTDIR/bundle"
ROOT="$BUNDLE/rootfs"
mkdir -p "$BUNDLE"
make_rootfs "$ROOT"
mkdir -p "$ROOT/proc" "$ROOT/dev" "$ROOT/sys"
touch "$ROOT/etc/hostname" "$ROOT/etc/hosts" "$ROOT/etc/resolv.conf"
printf 'c1\n' >"$BUNDLE/hostname"
printf '127.0.0.1\tlocalhost\n' >"$BUNDLE/hosts"
printf 'nameserver 8.8.8.8\n' >"$BUNDLE/resolv.conf"

CAPS='["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW",
"CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT",
"CAP_KILL","CAP_AUDIT_WRITE"]'
# A seccomp allowlist for runc: what the probe needs and Docker allows (keyctl is not in it),
# and clone3 -> ENOSYS as in Docker's profile.
SECCOMP='{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
"architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
"syscalls":[{"names":["read","write","openat","open","close","fstat","newfstatat","statx",
"lstat","stat","mmap","munmap","mprotect","brk","arch_prctl","set_tid_address",
"set_robust_list","rseq","prlimit64","readlink","readlinkat","uname","getrandom","getpid",
"getppid","getuid","getgid","geteuid","getegid","getcwd","getdents64","lseek","exit_group",
"exit","statfs","fstatfs","ioctl","fcntl","rt_sigaction","rt_sigprocmask","rt_sigreturn",
"execve","futex","capget","capset","prctl","setgroups","setuid","setgid","setresuid",
"setresgid","chdir","fchdir","dup2","dup3","getgroups","write","writev","madvise","epoll_pwait",
"nanosleep","clock_nanosleep","close_range","tgkill","gettid","sched_yield","sched_getaffinity",
"faccessat2","access","wait4","kill","getrlimit","setsid","umask","fchown","mknodat"],
"action":"SCMP_ACT_ALLOW"},{"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}'

(cd "$BUNDLE" && runc spec)
jq --argjson caps "$CAPS" --argjson seccomp "$SECCOMP" --arg b "$BUNDLE" '
  .process.terminal = false | .process.args = ["/probe"] |
  .process.env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "HOSTNAME=c1", "HOME=/root"] |
  .process.user = {uid: 0, gid: 0, additionalGids: [10]} |
  .process.capabilities = {bounding: $caps, effective: $caps, permitted: $caps,
                           inheritable: [], ambient: []} |
  .process.noNewPrivileges = true |
  .root.readonly = false | .hostname = "c1" |
  .linux.namespaces = [{type:"pid"},{type:"network"},{type:"ipc"},{type:"uts"},
                       {type:"mount"},{type:"cgroup"}] |
  .linux.seccomp = $seccomp |
  .linux.maskedPaths = ["/proc/asound","/proc/acpi","/proc/interrupts","/proc/kcore","/proc/keys",
     "/proc/latency_stats","/proc/timer_list","/proc/timer_stats","/proc/sched_debug",
     "/proc/scsi","/sys/firmware","/sys/devices/virtual/powercap"] |
  .linux.readonlyPaths = ["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"] |
  .mounts = [.mounts[] | if .destination == "/dev/shm"
                         then .options = ["nosuid","noexec","nodev","mode=1777","size=65536k"]
                         elif .destination == "/proc" then .options = ["nosuid","noexec","nodev"]
                         else . end] |
  .mounts += [{destination:"/etc/hostname", type:"bind", source:($b+"/hostname"), options:["rbind","rprivate"]},
              {destination:"/etc/hosts", type:"bind", source:($b+"/hosts"), options:["rbind","rprivate"]},
              {destination:"/etc/resolv.conf", type:"bind", source:($b+"/resolv.conf"), options:["rbind","rprivate"]}]
' "$BUNDLE/config.json" >"$BUNDLE/config.json.new"
mv "$BUNDLE/config.json.new" "$BUNDLE/config.json"

id="imgfs-runner-test-$$"
defer runc delete -f "$id"
assert_ok runc run --bundle "$BUNDLE" "$id"
RUNC_OUT=$OUT
assert_ok "$RUNNER" --no-init --net none --hostname c1 "$ROOT" /probe
RUNNER_OUT=$OUT

# Both must differ from the host in the same namespaces.
for o in RUNC_OUT RUNNER_OUT; do
	OUT=${!o}
	for ns in cgroup ipc mnt net pid uts; do
		assert_ne "$(probe_get ns.$ns)" "$(readlink /proc/self/ns/$ns)" "$o: $ns namespace"
	done
	assert_eq "$(probe_get ns.user)" "$(readlink /proc/self/ns/user)" "$o: user namespace"
done

# Intentional differences: namespace ids; the generated /etc files (runc binds host files,
# the runner binds files from a private tmpfs); on a cgroup v1 host runc leaves the tmpfs
# holding the hierarchies writable, the runner makes it read-only.
normalize() {
	grep -v '^ns\.' | grep -v '^readonly /sys/fs/cgroup:' |
		sed -E 's#^(mount: /sys/fs/cgroup tmpfs) r[ow],#\1 #' |
		sed -E 's#^(mount: /etc/(hostname|hosts|resolv.conf)) .*#\1#'
}
diff -u <(printf '%s\n' "$RUNC_OUT" | normalize) <(printf '%s\n' "$RUNNER_OUT" | normalize) ||
	fail "runner and runc report different containers (- runc, + runner)"
log "ok"
