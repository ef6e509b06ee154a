/* The container's device cgroup: which device nodes its processes may create (mknod) and
 * open, as Docker's default rules plus one rule per --device.
 *
 * Two enforcement points, chosen by cgroup.c: the cgroup v1 `devices` controller
 * (devices.deny "a", then one devices.allow line per rule), or on cgroup v2 a
 * BPF_PROG_TYPE_CGROUP_DEVICE program attached to the container's cgroup. The program is
 * written as raw BPF instructions and loaded with the bpf() syscall (no libbpf), as runc
 * and crun do. Everything here but devices_bpf_attach() is pure. */
#pragma once

#include <linux/bpf.h>
#include <stddef.h>
#include <stdint.h>
#include "runner/plan.h"
#include "runner/runner.h"

#define DEV_ANY (-1) /* a rule's major or minor that matches every number */

/* One allow rule: type 'c' or 'b'; major and minor a number or DEV_ANY; access a mask of
 * RUNNER_DEV_READ, RUNNER_DEV_WRITE, RUNNER_DEV_MKNOD. Everything not allowed is denied. */
struct dev_rule {
	char type;
	int32_t major, minor;
	unsigned access;
};

/* Docker's default rules (moby's oci defaults and runc's): mknod of any character or block
 * device; read, write and mknod of null, zero, full, random, urandom, tty, console, ptmx
 * and the pts devices (136:*). Not /dev/net/tun, not /dev/fuse. */
extern const struct dev_rule devices_default_rules[];
extern const size_t devices_n_default_rules;

/* The container's rules: Docker's defaults, then one for each of devs[0..n) (its type,
 * major, minor and access). Returns 0 and sets *ret (malloc'ed, the caller frees) and
 * *ret_n, or -EINVAL (a node that is not a character or block device), -ENOMEM. */
int devices_rules(const struct host_device *devs, size_t n, struct dev_rule **ret, size_t *ret_n);

/* Formats r as a cgroup v1 devices.allow line ("c 1:3 rwm", "b *:* m") into buf.
 * Returns 0, or -EINVAL for an invalid rule, -ENOBUFS when buf is too small. */
int devices_v1_line(const struct dev_rule *r, char *buf, size_t size);

/* Builds the cgroup device program that allows exactly what one of rules[0..n) allows.
 * Returns 0 and sets *ret (malloc'ed, the caller frees) and *ret_n (instructions), or
 * -EINVAL (invalid rule), -E2BIG (too many rules), -ENOMEM. */
int devices_bpf_build(const struct dev_rule *rules, size_t n, struct bpf_insn **ret, size_t *ret_n);

/* Loads the program for rules and attaches it to the cgroup v2 directory cgroup_fd
 * (BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI). The program stays attached for the life of the
 * cgroup. Needs CAP_SYS_ADMIN (or CAP_BPF). Returns 0 or -errno. */
int devices_bpf_attach(int cgroup_fd, const struct dev_rule *rules, size_t n);
