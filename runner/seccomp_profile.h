/* Docker's default seccomp profile (moby profiles/seccomp/default.json) as a libseccomp
 * filter: default action EPERM, the allowlist, and the rules that depend on the
 * architecture, the kernel version and the capabilities.
 *
 * Used twice: at build time, runner/gen/gen_seccomp.c compiles the default variant (Docker's
 * default capabilities, kernel 4.8 or newer) to BPF once and security.c embeds it; at run
 * time, security.c builds any other variant here. Nothing here filters the calling process. */
#pragma once

#include <seccomp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Builds the profile for a process whose capabilities are caps (a mask of CAP_* bits);
 * kernel_4_8 says the kernel is 4.8 or newer (only then does the profile allow ptrace and
 * process_vm_*). Names unknown to the installed libseccomp are skipped.
 * Returns 0 and sets *ret (release with seccomp_release()), or -errno. */
int seccomp_profile_build(uint64_t caps, bool kernel_4_8, scmp_filter_ctx *ret);

/* The BPF program libseccomp generates for ctx, as an array of struct sock_filter.
 * Returns 0 and sets *ret (malloc'ed, the caller frees) and *ret_size (bytes), or -errno. */
int seccomp_profile_export(scmp_filter_ctx ctx, void **ret, size_t *ret_size);

/* Number of syscall names in the profile's unconditional allowlist (for tests). */
unsigned seccomp_profile_allow_count(void);
