/* Privileges of the container's processes: capabilities and Docker's default seccomp
 * profile. Runs in the child. */
#pragma once

#include <linux/filter.h>
#include <stdbool.h>
#include <stdint.h>

/* Limits the bounding set to caps (a mask of CAP_* bits), sets the effective and permitted
 * sets to caps, clears the inheritable and ambient sets. Needs CAP_SETPCAP. 0 or -errno. */
int caps_restrict(uint64_t caps);

/* Loads Docker's default seccomp profile (seccomp_profile.h) for a process whose
 * capabilities are caps. The variant for Docker's default capabilities on a kernel >= 4.8 is
 * the BPF program compiled from the same rules at build time and is loaded as is; any other
 * variant is built with libseccomp here (a few milliseconds). Needs no_new_privs or
 * CAP_SYS_ADMIN. Returns 0 or -errno. */
int seccomp_load_default(uint64_t caps);

/* The program compiled at build time, when it is the one for caps on the running kernel:
 * returns true and sets *ret to it (static storage, valid forever), else false. */
bool seccomp_precompiled(uint64_t caps, struct sock_fprog *ret);
