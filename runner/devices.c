/* Device cgroup rules: Docker's defaults, cgroup v1 lines and the cgroup v2 BPF program. */
#include <inttypes.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "runner/devices.h"
#include "common/macros.h"

#define RWM (RUNNER_DEV_READ | RUNNER_DEV_WRITE | RUNNER_DEV_MKNOD)
#define MAX_RULES 256

const struct dev_rule devices_default_rules[] = {
    {'c', DEV_ANY, DEV_ANY, RUNNER_DEV_MKNOD},
    {'b', DEV_ANY, DEV_ANY, RUNNER_DEV_MKNOD},
    {'c', 1, 3, RWM},         /* null */
    {'c', 1, 5, RWM},         /* zero */
    {'c', 1, 7, RWM},         /* full */
    {'c', 1, 8, RWM},         /* random */
    {'c', 1, 9, RWM},         /* urandom */
    {'c', 5, 0, RWM},         /* tty */
    {'c', 5, 1, RWM},         /* console */
    {'c', 5, 2, RWM},         /* ptmx */
    {'c', 136, DEV_ANY, RWM}, /* pts/N */
};
const size_t devices_n_default_rules = ARRAY_SIZE(devices_default_rules);

static bool rule_valid(const struct dev_rule *r)
{
	return (r->type == 'c' || r->type == 'b') && (r->major >= 0 || r->major == DEV_ANY) &&
	       (r->minor >= 0 || r->minor == DEV_ANY) && r->access && !(r->access & ~RWM);
}

int devices_rules(const struct host_device *devs, size_t n, struct dev_rule **ret, size_t *ret_n)
{
	_cleanup_free_ struct dev_rule *v = NULL;
	size_t k = devices_n_default_rules;

	if (n > MAX_RULES)
		return -E2BIG;
	v = calloc(k + n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	memcpy(v, devices_default_rules, k * sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		if (!S_ISCHR(devs[i].mode) && !S_ISBLK(devs[i].mode))
			return -EINVAL;
		v[k++] = (struct dev_rule){
		    .type = S_ISCHR(devs[i].mode) ? 'c' : 'b',
		    .major = (int32_t)major(devs[i].rdev),
		    .minor = (int32_t)minor(devs[i].rdev),
		    .access = devs[i].access,
		};
	}
	*ret = TAKE_PTR(v);
	*ret_n = k;
	return 0;
}

static void num(char *buf, size_t size, int32_t v)
{
	if (v == DEV_ANY)
		snprintf(buf, size, "*");
	else
		snprintf(buf, size, "%" PRId32, v);
}

int devices_v1_line(const struct dev_rule *r, char *buf, size_t size)
{
	char maj[16], min[16];
	int n;

	if (!rule_valid(r))
		return -EINVAL;
	num(maj, sizeof(maj), r->major);
	num(min, sizeof(min), r->minor);
	n = snprintf(
	    buf, size, "%c %s:%s %s%s%s", r->type, maj, min, r->access & RUNNER_DEV_READ ? "r" : "",
	    r->access & RUNNER_DEV_WRITE ? "w" : "", r->access & RUNNER_DEV_MKNOD ? "m" : "");
	if (n < 0 || (size_t)n >= size)
		return -ENOBUFS;
	return 0;
}

/* Raw instructions; the uapi headers have no macros for them. */
static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
	return (struct bpf_insn){
	    .code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm};
}

#define LDX_W(dst, src, off) insn(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
#define AND32_K(dst, imm) insn(BPF_ALU | BPF_AND | BPF_K, dst, 0, 0, imm)
#define RSH32_K(dst, imm) insn(BPF_ALU | BPF_RSH | BPF_K, dst, 0, 0, imm)
#define MOV64_X(dst, src) insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
#define MOV64_K(dst, imm) insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
#define JNE_K(dst, imm) insn(BPF_JMP | BPF_JNE | BPF_K, dst, 0, 0, imm)
#define EXIT() insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

static unsigned devcg_access(unsigned access)
{
	return (access & RUNNER_DEV_READ ? BPF_DEVCG_ACC_READ : 0) |
	       (access & RUNNER_DEV_WRITE ? BPF_DEVCG_ACC_WRITE : 0) |
	       (access & RUNNER_DEV_MKNOD ? BPF_DEVCG_ACC_MKNOD : 0);
}

/* The program, for struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
 * where access_type is (access << 16) | type:
 *
 *	r2 = type; r3 = requested access; r4 = major; r5 = minor
 *	for each rule:
 *		if (r2 != rule type) goto next
 *		if (r3 & ~rule access) goto next      (omitted when the rule allows rwm)
 *		if (r4 != rule major) goto next       (omitted for DEV_ANY)
 *		if (r5 != rule minor) goto next       (omitted for DEV_ANY)
 *		return 1
 *	next:
 *	return 0
 */
int devices_bpf_build(const struct dev_rule *rules, size_t n, struct bpf_insn **ret, size_t *ret_n)
{
	_cleanup_free_ struct bpf_insn *p = NULL;
	size_t i = 0;

	if (n > 4 * MAX_RULES)
		return -E2BIG;
	p = calloc(7 + n * 7, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p[i++] = LDX_W(BPF_REG_2, BPF_REG_1, 0);
	p[i++] = AND32_K(BPF_REG_2, 0xffff);
	p[i++] = LDX_W(BPF_REG_3, BPF_REG_1, 0);
	p[i++] = RSH32_K(BPF_REG_3, 16);
	p[i++] = LDX_W(BPF_REG_4, BPF_REG_1, 4);
	p[i++] = LDX_W(BPF_REG_5, BPF_REG_1, 8);
	for (size_t k = 0; k < n; k++) {
		const struct dev_rule *r = &rules[k];
		size_t jumps[4], n_jumps = 0;

		if (!rule_valid(r))
			return -EINVAL;
		jumps[n_jumps++] = i;
		p[i++] =
		    JNE_K(BPF_REG_2, r->type == 'c' ? BPF_DEVCG_DEV_CHAR : BPF_DEVCG_DEV_BLOCK);
		if ((r->access & RWM) != RWM) {
			p[i++] = MOV64_X(BPF_REG_1, BPF_REG_3);
			p[i++] = AND32_K(BPF_REG_1, (int32_t)(~devcg_access(r->access) & 0xffff));
			jumps[n_jumps++] = i;
			p[i++] = JNE_K(BPF_REG_1, 0);
		}
		if (r->major != DEV_ANY) {
			jumps[n_jumps++] = i;
			p[i++] = JNE_K(BPF_REG_4, r->major);
		}
		if (r->minor != DEV_ANY) {
			jumps[n_jumps++] = i;
			p[i++] = JNE_K(BPF_REG_5, r->minor);
		}
		p[i++] = MOV64_K(BPF_REG_0, 1);
		p[i++] = EXIT();
		/* Every failed comparison jumps to the next rule, which starts at i. */
		for (size_t j = 0; j < n_jumps; j++)
			p[jumps[j]].off = (int16_t)(i - jumps[j] - 1);
	}
	p[i++] = MOV64_K(BPF_REG_0, 0);
	p[i++] = EXIT();
	*ret = TAKE_PTR(p);
	*ret_n = i;
	return 0;
}

static int sys_bpf(int cmd, union bpf_attr *attr)
{
	return (int)syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

int devices_bpf_attach(int cgroup_fd, const struct dev_rule *rules, size_t n)
{
	_cleanup_free_ struct bpf_insn *prog = NULL;
	_cleanup_close_ int prog_fd = -1;
	union bpf_attr attr;
	size_t len;
	int r;

	r = devices_bpf_build(rules, n, &prog, &len);
	if (r < 0)
		return r;
	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	attr.insns = (uint64_t)(uintptr_t)prog;
	attr.insn_cnt = (uint32_t)len;
	attr.license = (uint64_t)(uintptr_t) "GPL";
	prog_fd = sys_bpf(BPF_PROG_LOAD, &attr);
	if (prog_fd < 0)
		return -errno;
	memset(&attr, 0, sizeof(attr));
	attr.target_fd = (uint32_t)cgroup_fd;
	attr.attach_bpf_fd = (uint32_t)prog_fd;
	attr.attach_type = BPF_CGROUP_DEVICE;
	attr.attach_flags = BPF_F_ALLOW_MULTI;
	if (sys_bpf(BPF_PROG_ATTACH, &attr) < 0)
		return -errno;
	return 0;
}
