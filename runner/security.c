/* Capabilities and Docker's default seccomp profile. */
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include "runner/seccomp_profile.h"
#include "runner/security.h"
#include "common/macros.h"
/* Generated at build time by runner/gen/gen_seccomp.c: seccomp_default_bpf[] and
 * SECCOMP_DEFAULT_BPF_CAPS, the capabilities it was compiled for. */
#include "runner/seccomp_default_bpf.h"

int caps_restrict(uint64_t caps)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2] = {0};

	for (int cap = 0; cap < 64; cap++) {
		if (caps & (1ull << cap))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL) /* past the kernel's last capability */
				break;
			return -errno;
		}
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return -errno;
	data[0].effective = data[0].permitted = (uint32_t)caps;
	data[1].effective = data[1].permitted = (uint32_t)(caps >> 32);
	/* Inheritable stays empty, as in Docker since 20.10.14 (CVE-2022-24769): a non-root
	 * user must not gain capabilities by executing a file with inheritable file caps. */
	if (syscall(SYS_capset, &hdr, data) < 0)
		return -errno;
	return 0;
}

static bool kernel_at_least(unsigned major, unsigned minor)
{
	struct utsname u;
	unsigned ma = 0, mi = 0;

	if (uname(&u) < 0 || sscanf(u.release, "%u.%u", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(scmp_filter_ctx, seccomp_release);

bool seccomp_precompiled(uint64_t caps, struct sock_fprog *ret)
{
	if (caps != SECCOMP_DEFAULT_BPF_CAPS || !kernel_at_least(4, 8))
		return false;
	*ret = (struct sock_fprog){
	    .len = ARRAY_SIZE(seccomp_default_bpf),
	    .filter = (struct sock_filter *)seccomp_default_bpf,
	};
	return true;
}

int seccomp_load_default(uint64_t caps)
{
	_cleanup_(seccomp_releasep) scmp_filter_ctx ctx = NULL;
	struct sock_fprog prog;
	int r;

	/* Compiling the profile costs more than the rest of the container's setup (libseccomp
	 * builds it for three architectures on x86_64), so the usual variant is compiled once,
	 * at build time, and only loaded here. */
	if (seccomp_precompiled(caps, &prog)) {
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
			return -errno;
		return 0;
	}
	r = seccomp_profile_build(caps, kernel_at_least(4, 8), &ctx);
	if (r < 0)
		return r;
	return seccomp_load(ctx);
}
