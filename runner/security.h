/* Privileges of the container's processes: capabilities and Docker's default seccomp
 * profile. Runs in the child. */
#pragma once

#include <stdint.h>

/* Limits the bounding set to caps (a mask of CAP_* bits), sets the effective and permitted
 * sets to caps, clears the inheritable and ambient sets. Needs CAP_SETPCAP. 0 or -errno. */
int caps_restrict(uint64_t caps);

/* Loads Docker's default seccomp profile (moby profiles/seccomp/default.json) for a process
 * whose capabilities are caps: default action EPERM, the allowlist, and the rules that
 * depend on the architecture and on caps. Needs no_new_privs or CAP_SYS_ADMIN.
 * Returns 0 or -errno. */
int seccomp_load_default(uint64_t caps);

/* Number of syscall names in the profile's unconditional allowlist (for tests). */
unsigned seccomp_default_allow_count(void);
