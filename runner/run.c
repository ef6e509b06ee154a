/* runner_run(): the parent side (clone, id maps, cgroups, signal forwarding, terminal) and
 * the container side (plan execution, privileges, built-in init, exec).
 *
 * Parent and child talk over a SOCK_SEQPACKET pair whose child end is close-on-exec: the
 * parent sends one "go" byte once the id maps and cgroups are in place; the child sends
 * the pty master (SCM_RIGHTS) and at most one error. End of file on the socket means the
 * command was executed (or the child died). */
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include "common/fileio.h"
#include "runner/cgroup.h"
#include "runner/devices.h"
#include "runner/mount.h"
#include "runner/passwd.h"
#include "runner/plan.h"
#include "runner/security.h"
#include "runner/util.h"

#define MAX_ETC_FILE (1u << 20)
#define MAX_HOST_FILE (64u << 10)

enum msg_type {
	MSG_ERROR = 1, /* setup failed: text */
	MSG_EXEC,      /* exec failed: err, text */
	MSG_PTY,       /* the pty master, as SCM_RIGHTS */
};

struct msg {
	int type;
	int err;
	char text[sizeof(((struct error *)0)->msg)];
};

/* Everything the child needs, prepared by the parent before clone. */
struct child {
	const struct runner_config *c;
	const struct setup_plan *plan;
	const struct exec_user *user;
	char **env;
	const char *hostname;
	int rootfs_fd;
	int sock;
	bool userns, netns, tty;
	sigset_t oldmask;
};

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

static void send_msg(int sock, int type, int err, const char *text)
{
	struct msg m = {.type = type, .err = err};

	snprintf(m.text, sizeof(m.text), "%s", text ? text : "");
	(void)!send(sock, &m, sizeof(m), MSG_NOSIGNAL);
}

static int send_fd(int sock, int fd)
{
	struct msg m = {.type = MSG_PTY};
	char cbuf[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {.iov_base = &m, .iov_len = sizeof(m)};
	struct msghdr mh = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

static int loopback_up(void)
{
	_cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = {0};

	if (s < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return -errno;
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		return -errno;
	return 0;
}

/* Opens a pty on the container's devpts (after pivot_root); returns the slave. */
static int open_pty(int sock, int *ret_slave, struct error *e)
{
	_cleanup_close_ int master = -1, slave = -1;
	char name[64];
	int r;

	master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0)
		return runner_errf(e, -errno, "cannot open /dev/ptmx in the container");
	if (unlockpt(master) < 0 || ptsname_r(master, name, sizeof(name)) != 0)
		return runner_errf(e, -errno, "cannot set up the pty");
	slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0)
		return runner_errf(e, -errno, "cannot open '%s'", name);
	r = send_fd(sock, master);
	if (r < 0)
		return runner_errf(e, r, "cannot pass the pty to the runner");
	*ret_slave = TAKE_FD(slave);
	return 0;
}

/* Executes argv[0], searched in the PATH of env (not ours) when it has no '/'. Returns the
 * errno that describes the failure best (ENOENT only when nothing was found). */
static int exec_in_path(char *const *argv, char **env)
{
	const char *path = RUNNER_DEFAULT_PATH, *p;
	char buf[PATH_MAX];
	bool eacces = false;

	if (strchr(argv[0], '/')) {
		execve(argv[0], argv, env);
		return errno;
	}
	for (char **e = env; *e; e++)
		if (startswith(*e, "PATH="))
			path = *e + 5;
	for (p = path;; p++) {
		const char *end = strchrnul(p, ':');
		int n = snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(end - p), p,
		                 end == p ? "" : "/", argv[0]);

		if (n > 0 && (size_t)n < sizeof(buf)) {
			execve(buf, argv, env);
			if (errno == EACCES)
				eacces = true;
			else if (errno != ENOENT && errno != ENOTDIR)
				return errno;
		}
		if (!*end)
			break;
		p = end;
	}
	return eacces ? EACCES : ENOENT;
}

/* The command's own process: user, terminal, cwd, exec. Does not return. */
static void __attribute__((noreturn)) exec_command(struct child *x, int slave)
{
	const struct exec_user *u = x->user;
	const char *cwd = x->c->cwd ? x->c->cwd : "/";
	sigset_t none;
	char what[300];
	int err;

	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (slave >= 0) {
		if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) < 0) {
			err = errno;
			send_msg(x->sock, MSG_ERROR, err,
			         "cannot make the pty the controlling terminal");
			_exit(RUNNER_EXIT_FAILURE);
		}
		(void)!fchown(slave, u->uid, (gid_t)-1);
		for (int fd = 0; fd < 3; fd++)
			if (dup2(slave, fd) < 0)
				_exit(RUNNER_EXIT_FAILURE);
		if (slave > 2)
			close(slave);
	}
	/* A rootless container maps only our own id: supplementary groups cannot be set
	 * (setgroups is denied there), and other ids do not exist. */
	if (!x->userns && setgroups(u->n_groups, u->groups) < 0) {
		err = errno;
		goto fail_user;
	}
	if (setresgid(u->gid, u->gid, u->gid) < 0 || setresuid(u->uid, u->uid, u->uid) < 0) {
		err = errno;
		goto fail_user;
	}
	/* Changing credentials clears the parent-death signal. */
	if (getpid() == 1)
		prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (chdir(cwd) < 0) {
		err = errno;
		snprintf(what, sizeof(what), "cannot change to the working directory '%s'", cwd);
		send_msg(x->sock, MSG_ERROR, err, what);
		_exit(RUNNER_EXIT_FAILURE);
	}
	/* Nothing of the runner may leak into the container; x->sock closes on exec too. */
	close_range(3, ~0u, CLOSE_RANGE_CLOEXEC);
	err = exec_in_path(x->c->argv, x->env);
	send_msg(x->sock, MSG_EXEC, err, x->c->argv[0]);
	_exit(err == ENOENT ? RUNNER_EXIT_NOT_FOUND : RUNNER_EXIT_CANNOT_EXEC);

fail_user:
	snprintf(what, sizeof(what), "cannot switch to user %u:%u%s", (unsigned)u->uid,
	         (unsigned)u->gid, x->userns ? " (a rootless container maps only user 0)" : "");
	send_msg(x->sock, MSG_ERROR, err, what);
	_exit(RUNNER_EXIT_FAILURE);
}

/* PID 1: reaps every child, forwards signals to the command, exits with its status. */
static void __attribute__((noreturn)) init_loop(pid_t cmd)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	for (size_t i = 0; i < ARRAY_SIZE(forwarded); i++)
		sigaddset(&set, forwarded[i]);
	close_range(3, ~0u, 0);
	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(&set, &si), status;
		pid_t p;

		if (sig < 0)
			continue;
		if (sig != SIGCHLD) {
			kill(cmd, sig);
			continue;
		}
		while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
			if (p != cmd)
				continue;
			if (WIFEXITED(status))
				_exit(WEXITSTATUS(status));
			_exit(128 + WTERMSIG(status));
		}
	}
}

static int child_setup(struct child *x, int *ret_slave, struct error *e)
{
	_cleanup_close_ int root_fd = -1, slave = -1;
	uint64_t caps = plan_default_caps();
	char go;
	int r;

	if (recv(x->sock, &go, 1, 0) != 1)
		return runner_errf(e, -EPIPE, "the runner went away");
	if (unshare(CLONE_NEWCGROUP) < 0)
		return runner_errf(e, -errno, "cannot create a cgroup namespace");
	if (x->netns) {
		r = loopback_up();
		if (r < 0)
			return runner_errf(e, r, "cannot bring up the loopback interface");
	}
	if (sethostname(x->hostname, strlen(x->hostname)) < 0)
		return runner_errf(e, -errno, "cannot set the hostname '%s'", x->hostname);
	r = mount_prepare_root(x->rootfs_fd, &root_fd, e);
	if (r < 0)
		return r;
	r = mount_run_plan(&root_fd, x->plan, e);
	if (r < 0)
		return r;
	r = mount_pivot(root_fd, e);
	if (r < 0)
		return r;
	if (x->tty) {
		r = open_pty(x->sock, &slave, e);
		if (r < 0)
			return r;
	}
	r = caps_restrict(caps);
	if (r < 0)
		return runner_errf(e, r, "cannot drop capabilities");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return runner_errf(e, -errno, "cannot set no_new_privs");
	r = seccomp_load_default(caps);
	if (r < 0)
		return runner_errf(e, r, "cannot load the seccomp profile");
	*ret_slave = TAKE_FD(slave);
	return 0;
}

static void __attribute__((noreturn)) child_main(struct child *x)
{
	struct error e = {{0}};
	int slave = -1;
	pid_t cmd;

	/* Killing the runner kills PID 1, and with it the whole PID namespace. The runner may
	 * already be gone: then the "go" byte never comes and recv() sees end of file. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (child_setup(x, &slave, &e) < 0) {
		send_msg(x->sock, MSG_ERROR, 0, e.msg);
		_exit(RUNNER_EXIT_FAILURE);
	}
	if (x->c->no_init)
		exec_command(x, slave);
	cmd = fork();
	if (cmd < 0) {
		runner_errf(&e, -errno, "cannot start the command");
		send_msg(x->sock, MSG_ERROR, 0, e.msg);
		_exit(RUNNER_EXIT_FAILURE);
	}
	if (cmd == 0)
		exec_command(x, slave);
	init_loop(cmd);
}

/* Parent-side helpers */

static int write_proc(pid_t pid, const char *file, const char *value)
{
	char p[64];
	_cleanup_close_ int fd = -1;

	snprintf(p, sizeof(p), "/proc/%d/%s", (int)pid, file);
	fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return write_full(fd, value, strlen(value));
}

static int write_id_maps(pid_t pid, struct error *e)
{
	char buf[64];
	int r;

	/* An unprivileged process may map only its own ids, and gid_map needs setgroups denied. */
	r = write_proc(pid, "setgroups", "deny");
	if (r < 0)
		return runner_errf(e, r, "cannot write /proc/%d/setgroups", (int)pid);
	snprintf(buf, sizeof(buf), "0 %u 1\n", (unsigned)geteuid());
	r = write_proc(pid, "uid_map", buf);
	if (r < 0)
		return runner_errf(e, r, "cannot write the uid map of the user namespace");
	snprintf(buf, sizeof(buf), "0 %u 1\n", (unsigned)getegid());
	r = write_proc(pid, "gid_map", buf);
	if (r < 0)
		return runner_errf(e, r, "cannot write the gid map of the user namespace");
	return 0;
}

static void free_strv(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, free_strv);

/* The host's v1 cgroup hierarchies below /sys/fs/cgroup as "DIR OPTIONS" strings. */
static int host_cgroup_v1(char ***ret)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	_cleanup_(free_strvp) char **v = NULL;
	_cleanup_free_ char *line = NULL;
	size_t n = 0, cap = 0;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char mp[256], fstype[32], src[64], opts[256], keep[256] = "";
		const char *sep = strstr(line, " - ");
		char **nv;
		size_t k = 0;

		if (!sep || sscanf(line, "%*s %*s %*s %*s %255s", mp) != 1 ||
		    sscanf(sep + 3, "%31s %63s %255s", fstype, src, opts) != 3)
			continue;
		if (!streq(fstype, "cgroup") || !startswith(mp, "/sys/fs/cgroup/") ||
		    strchr(mp + 15, '/') || !mp[15])
			continue;
		for (char *t = strtok(opts, ","); t; t = strtok(NULL, ",")) {
			if (streq(t, "rw") || streq(t, "ro") || streq(t, "xattr") ||
			    startswith(t, "release_agent=") || streq(t, "clone_children"))
				continue;
			k += (size_t)snprintf(keep + k, sizeof(keep) - k, "%s%s", k ? "," : "", t);
			if (k >= sizeof(keep))
				break;
		}
		if (!keep[0] || k >= sizeof(keep))
			continue;
		nv = realloc(v, (n + 2) * sizeof(*v));
		if (!nv)
			return -ENOMEM;
		v = nv;
		if (asprintf(&v[n], "%s %s", mp + 15, keep) < 0)
			return -ENOMEM;
		v[++n] = NULL;
	}
	*ret = TAKE_PTR(v);
	return 0;
}

/* Looks up each --device on the host: it must be a character or block device. */
static int resolve_devices(const struct runner_config *c, struct host_device **ret, struct error *e)
{
	_cleanup_free_ struct host_device *v = NULL;

	if (c->n_devices == 0) {
		*ret = NULL;
		return 0;
	}
	v = calloc(c->n_devices, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_devices; i++) {
		const struct runner_device *d = &c->devices[i];
		struct stat st;

		if (!d->host || !d->container || d->container[0] != '/')
			return runner_errf(e, -EINVAL, "invalid --device");
		if (stat(d->host, &st) < 0)
			return runner_errf(e, -errno, "cannot use device '%s'", d->host);
		if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
			return runner_errf(
			    e, -ENODEV, "cannot use device '%s': not a character or block device",
			    d->host);
		v[i] = (struct host_device){.host = d->host,
		                            .container = d->container,
		                            .mode = st.st_mode,
		                            .rdev = st.st_rdev,
		                            .access = d->access};
	}
	*ret = TAKE_PTR(v);
	return 0;
}

static int make_hostname(const struct runner_config *c, char buf[HOST_NAME_MAX + 1])
{
	unsigned char rnd[6];

	if (c->hostname) {
		if (!*c->hostname || strlen(c->hostname) > HOST_NAME_MAX)
			return -EINVAL;
		snprintf(buf, HOST_NAME_MAX + 1, "%s", c->hostname);
		return 0;
	}
	if (c->net == RUNNER_NET_HOST && gethostname(buf, HOST_NAME_MAX + 1) == 0) {
		buf[HOST_NAME_MAX] = '\0';
		return 0;
	}
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		return -errno;
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(buf + 2 * i, 3, "%02x", rnd[i]);
	return 0;
}

struct terminal {
	int master;
	bool raw;
	struct termios saved;
};

static void terminal_resize(struct terminal *t)
{
	struct winsize ws;

	if (t->master >= 0 && ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
		ioctl(t->master, TIOCSWINSZ, &ws);
}

static void terminal_setup(struct terminal *t)
{
	struct termios raw;

	if (tcgetattr(STDIN_FILENO, &t->saved) == 0) {
		raw = t->saved;
		cfmakeraw(&raw);
		if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
			t->raw = true;
	}
	terminal_resize(t);
	fcntl(t->master, F_SETFL, fcntl(t->master, F_GETFL) | O_NONBLOCK);
}

static void terminal_restore(struct terminal *t)
{
	if (t->raw)
		tcsetattr(STDIN_FILENO, TCSADRAIN, &t->saved);
	t->raw = false;
}

/* Copies what is readable from `from` to `to`. Returns false at end of file or error. */
static bool pump(int from, int to)
{
	char buf[8192];
	ssize_t n = read(from, buf, sizeof(buf));

	if (n < 0)
		return errno == EAGAIN || errno == EINTR;
	if (n == 0)
		return false;
	return write_full(to, buf, (size_t)n) >= 0;
}

static int status_of(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return RUNNER_EXIT_FAILURE;
}

/* Waits for pid while forwarding signals and, with a terminal, copying its I/O. */
static int supervise(pid_t pid, int sfd, struct terminal *t)
{
	bool in_open = t->master >= 0, out_open = t->master >= 0;
	int status = -1, st;

	/* A SIGCHLD may have been consumed while the setup messages were read. */
	if (waitpid(pid, &st, WNOHANG) == pid)
		status = status_of(st);

	while (status < 0 || out_open) {
		struct pollfd p[3] = {
		    {.fd = sfd, .events = POLLIN},
		    {.fd = in_open ? STDIN_FILENO : -1, .events = POLLIN},
		    {.fd = out_open ? t->master : -1, .events = POLLIN},
		};

		if (status >= 0) {
			/* The command is gone: drain what it wrote, without blocking. */
			char buf[8192];
			ssize_t n;

			while ((n = read(t->master, buf, sizeof(buf))) > 0)
				if (write_full(STDOUT_FILENO, buf, (size_t)n) < 0)
					break;
			break;
		}
		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo == SIGCHLD) {
					if (waitpid(pid, &st, WNOHANG) == pid)
						status = status_of(st);
				} else if (si.ssi_signo == SIGWINCH) {
					terminal_resize(t);
				} else {
					kill(pid, (int)si.ssi_signo);
				}
			}
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR))
			in_open = pump(STDIN_FILENO, t->master);
		if (p[2].revents & (POLLIN | POLLHUP | POLLERR))
			out_open = pump(t->master, STDOUT_FILENO);
	}
	if (status < 0) {
		if (waitpid(pid, &st, 0) < 0)
			return -errno;
		status = status_of(st);
	}
	return status;
}

/* Reads the child's messages until end of file. Returns 0 when the command was executed,
 * 1 when it could not be (*ret_exec_err set, e->msg filled), or -errno for a setup error.
 * A signal that arrives meanwhile kills the half-built container. */
static int read_messages(int sock, int sfd, pid_t pid, struct terminal *t, int *ret_exec_err,
                         struct error *e)
{
	for (;;) {
		struct pollfd p[2] = {{.fd = sock, .events = POLLIN},
		                      {.fd = sfd, .events = POLLIN}};
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct msg m;
		struct iovec iov = {.iov_base = &m, .iov_len = sizeof(m)};
		struct msghdr mh = {.msg_iov = &iov,
		                    .msg_iovlen = 1,
		                    .msg_control = cbuf,
		                    .msg_controllen = sizeof(cbuf)};
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[1].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(sfd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo != SIGCHLD &&
			    si.ssi_signo != SIGWINCH) {
				kill(pid, SIGKILL);
				return runner_errf(e, -EINTR,
				                   "interrupted by signal %u while setting up "
				                   "the container",
				                   si.ssi_signo);
			}
		}
		if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return 0;
		if ((size_t)n != sizeof(m))
			continue;
		m.text[sizeof(m.text) - 1] = '\0';
		if (m.type == MSG_PTY) {
			struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

			if (cm && cm->cmsg_type == SCM_RIGHTS && t->master < 0)
				memcpy(&t->master, CMSG_DATA(cm), sizeof(int));
			continue;
		}
		if (m.type == MSG_EXEC) {
			*ret_exec_err = m.err;
			runner_errf(e, -m.err, "cannot execute '%s'", m.text);
			return 1;
		}
		if (e)
			snprintf(e->msg, sizeof(e->msg), "%s", m.text);
		return -EIO;
	}
}

int runner_run(const struct runner_config *c, int *ret_exit_status, struct error *e)
{
	_cleanup_free_ char *resolv = NULL, *hosts = NULL, *passwd = NULL, *group = NULL;
	_cleanup_(free_strvp) char **cg_v1 = NULL;
	_cleanup_(plan_freep) struct setup_plan *plan = NULL;
	_cleanup_(cgroup_destroyp) struct runner_cgroup *cg = NULL;
	_cleanup_close_ int rootfs_fd = -1, sfd = -1, sock_parent = -1, sock_child = -1;
	_cleanup_free_ struct exec_user *user = NULL;
	_cleanup_free_ struct host_device *devs = NULL;
	_cleanup_free_ struct dev_rule *rules = NULL;
	size_t n_rules = 0;
	long ncpu;
	char **env = NULL;
	char hostname[HOST_NAME_MAX + 1], cgname[32];
	struct terminal term = {.master = -1};
	struct host_facts facts = {0};
	sigset_t mask, oldmask;
	int socks[2], r, status, exec_err = 0, clone_flags;
	pid_t pid;
	bool tty;

	if (e)
		e->msg[0] = '\0';
	if (!c->rootfs || !c->argv || !c->argv[0])
		return runner_errf(e, -EINVAL, "no rootfs or command given");
	tty = c->tty < 0 ? isatty(STDIN_FILENO) : c->tty;
	rootfs_fd = open(c->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfs_fd < 0)
		return runner_errf(e, -errno, "cannot open rootfs '%s'", c->rootfs);
	r = make_hostname(c, hostname);
	if (r < 0)
		return runner_errf(e, r, "invalid hostname");

	facts.userns = geteuid() != 0;
	facts.cgroup2 = cgroup_is_unified();
	if (!facts.cgroup2 && !facts.userns) {
		r = host_cgroup_v1(&cg_v1);
		if (r < 0)
			return runner_errf(e, r, "cannot read /proc/self/mountinfo");
		facts.cgroup_v1 = (const char *const *)cg_v1;
	}
	r = read_file_full(AT_FDCWD, "/etc/resolv.conf", MAX_HOST_FILE, &resolv, NULL);
	if (r < 0 && r != -ENOENT)
		return runner_errf(e, r, "cannot read /etc/resolv.conf");
	facts.resolv_conf = resolv;
	if (c->net == RUNNER_NET_HOST) {
		r = read_file_full(AT_FDCWD, "/etc/hosts", MAX_HOST_FILE, &hosts, NULL);
		if (r < 0 && r != -ENOENT)
			return runner_errf(e, r, "cannot read /etc/hosts");
		facts.hosts = hosts;
	}

	r = resolve_devices(c, &devs, e);
	if (r < 0)
		return r;
	facts.devices = devs;
	facts.n_devices = c->n_devices;
	ncpu = sysconf(_SC_NPROCESSORS_CONF);
	facts.n_cpus = ncpu > 0 && ncpu <= 8192 ? (unsigned)ncpu : 0;
	/* As root the device cgroup is what keeps the container from opening the host's
	 * disks (it keeps CAP_MKNOD, as under Docker): without one the runner refuses to
	 * run. In a user namespace the kernel refuses mknod of devices and ignores device
	 * nodes on the namespace's own mounts (nodev), so there is no cgroup to set up. */
	if (!facts.userns) {
		r = devices_rules(devs, c->n_devices, &rules, &n_rules);
		if (r < 0)
			return runner_errf(e, r, "cannot build the device cgroup rules");
	}

	/* The user is resolved from the image's files, read inside the rootfs. */
	r = root_read_file(rootfs_fd, "/etc/passwd", MAX_ETC_FILE, &passwd);
	if (r < 0 && r != -ENOENT)
		return runner_errf(e, r, "cannot read the image's /etc/passwd");
	r = root_read_file(rootfs_fd, "/etc/group", MAX_ETC_FILE, &group);
	if (r < 0 && r != -ENOENT)
		return runner_errf(e, r, "cannot read the image's /etc/group");
	user = malloc(sizeof(*user));
	if (!user)
		return -ENOMEM;
	r = passwd_resolve(c->user, passwd, group, user);
	if (r == -ENOENT)
		return runner_errf(e, r, "unable to find user '%s' in the image's /etc/passwd",
		                   c->user);
	if (r == -ESRCH)
		return runner_errf(
		    e, r, "unable to find the group of '%s' in the image's /etc/group", c->user);
	if (r < 0)
		return runner_errf(e, r, "invalid user '%s'", c->user ? c->user : "");

	r = plan_build(c, &facts, hostname, &plan);
	if (r < 0)
		return runner_errf(e, r,
		                   "invalid configuration (working directory must be absolute)");
	r = plan_env(c, hostname, user->home, tty, getenv, &env);
	if (r < 0)
		return runner_errf(e, r, "invalid environment variable");

	snprintf(cgname, sizeof(cgname), "%d", (int)getpid());
	r = cgroup_create(c, cgname, rules, n_rules, &cg, e);
	if (r < 0)
		goto out_env;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, socks) < 0) {
		r = runner_errf(e, -errno, "cannot create a socket pair");
		goto out_env;
	}
	sock_parent = socks[0];
	sock_child = socks[1];

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGWINCH);
	for (size_t i = 0; i < ARRAY_SIZE(forwarded); i++)
		sigaddset(&mask, forwarded[i]);
	sigprocmask(SIG_BLOCK, &mask, &oldmask);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		r = runner_errf(e, -errno, "cannot create a signalfd");
		goto out_mask;
	}

	clone_flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD;
	if (c->net == RUNNER_NET_NONE)
		clone_flags |= CLONE_NEWNET;
	if (facts.userns)
		clone_flags |= CLONE_NEWUSER;
	fflush(NULL);
	pid = (pid_t)syscall(SYS_clone, clone_flags, NULL, NULL, NULL, NULL);
	if (pid < 0) {
		r = runner_errf(e, -errno, "cannot create the container's namespaces");
		goto out_mask;
	}
	if (pid == 0) {
		struct child x = {
		    .c = c,
		    .plan = plan,
		    .user = user,
		    .env = env,
		    .hostname = hostname,
		    .rootfs_fd = rootfs_fd,
		    .sock = sock_child,
		    .userns = facts.userns,
		    .netns = c->net == RUNNER_NET_NONE,
		    .tty = tty,
		};

		close(sock_parent);
		close(sfd);
		child_main(&x);
	}
	close(TAKE_FD(sock_child));

	if (facts.userns) {
		r = write_id_maps(pid, e);
		if (r < 0)
			goto out_kill;
	}
	r = cgroup_attach(cg, pid, e);
	if (r < 0)
		goto out_kill;
	/* A child that died before it could be told to go: its status tells why. */
	(void)send(sock_parent, "g", 1, MSG_NOSIGNAL);
	r = read_messages(sock_parent, sfd, pid, &term, &exec_err, e);
	if (r < 0)
		goto out_kill;
	if (r == 1) {
		waitpid(pid, NULL, 0);
		status = exec_err == ENOENT ? RUNNER_EXIT_NOT_FOUND : RUNNER_EXIT_CANNOT_EXEC;
		r = 0;
		goto out_status;
	}
	if (term.master >= 0)
		terminal_setup(&term);
	status = supervise(pid, sfd, &term);
	terminal_restore(&term);
	if (status < 0) {
		r = runner_errf(e, status, "cannot wait for the container");
		goto out_kill;
	}
	r = 0;
out_status:
	*ret_exit_status = status;
	goto out_mask;
out_kill:
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
out_mask:
	if (term.master >= 0)
		close(term.master);
	sigprocmask(SIG_SETMASK, &oldmask, NULL);
out_env:
	plan_env_free(env);
	return r;
}
