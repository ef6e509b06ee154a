/* runner: the command line over librunner. */
#include <getopt.h>
#include <stdarg.h>
#include <unistd.h>
#include "common/log.h"
#include "runner/runner.h"

static const char usage[] =
    "Usage: runner [OPTIONS] ROOTFS COMMAND [ARG...]\n"
    "\n"
    "Run COMMAND in a new container whose root filesystem is the directory ROOTFS\n"
    "(a plain directory or an `imgfs mount` view). The container gets its own mount, PID,\n"
    "UTS, IPC and cgroup namespaces (and network namespace with --net none; a user\n"
    "namespace when started by a non-root user), fresh /proc, /dev and read-only /sys,\n"
    "Docker's masked paths, default capabilities and default seccomp profile, and\n"
    "no_new_privs. The runner does not modify ROOTFS, which may be read-only: a missing\n"
    "mount point (/proc, /dev, /sys, /etc/hosts, the -w directory, ...) is created in the\n"
    "container only, on a tmpfs over its parent directory that holds binds of the\n"
    "directory's entries (new files directly in that directory are then the container's\n"
    "own). The command's writes elsewhere reach ROOTFS.\n"
    "\n"
    "Options:\n"
    "  -e, --env K=V          set an environment variable (repeatable); \"-e K\" copies K\n"
    "                         from the runner's environment when it is set\n"
    "  -w, --workdir DIR      working directory inside the container (created in the\n"
    "                         container if missing; default /)\n"
    "  -u, --user USER[:GROUP]\n"
    "                         user name or uid, optional group name or gid, resolved with\n"
    "                         the image's /etc/passwd and /etc/group (default root)\n"
    "      --hostname NAME    host name (default: 12 random hex digits; with --net host\n"
    "                         the host's name)\n"
    "      --net host|none    share the host's network (default) or get a private\n"
    "                         network namespace with only the loopback interface\n"
    "  -m, --memory SIZE      memory limit, e.g. 32m, 1g (swap limited to the same);\n"
    "                         the command is killed (status 137) when it goes beyond\n"
    "      --cpus N           CPU quota, e.g. 0.5 or 2\n"
    "      --pids-limit N     maximum number of processes and threads\n"
    "      --no-init          run COMMAND as PID 1 instead of under the built-in init\n"
    "                         (which reaps orphans and forwards signals)\n"
    "      --device HOST[:CONTAINER][:PERMS]\n"
    "                         make the host's device node HOST available at CONTAINER\n"
    "                         (default: the same path) with PERMS, some of r, w, m\n"
    "                         (default rwm), as docker run --device (repeatable)\n"
    "  -t, --tty              allocate a terminal (default: when stdin is a terminal)\n"
    "  -T, --no-tty           do not allocate a terminal\n"
    "  -h, --help             show this help\n"
    "\n"
    "COMMAND is looked up in the container's PATH (default\n" RUNNER_DEFAULT_PATH ").\n"
    "The environment holds PATH, HOSTNAME and HOME (from /etc/passwd), plus TERM=xterm\n"
    "with a terminal; -e adds to or overrides these.\n"
    "\n"
    "Resource limits use a cgroup imgfs/<runner pid> (cgroup v2, or the v1 memory, cpu\n"
    "and pids hierarchies on hybrid hosts) and need root.\n"
    "\n"
    "Devices: as Docker, the container may create any device node (CAP_MKNOD) but open\n"
    "only null, zero, full, random, urandom, tty, console, ptmx, pts/* and the --device\n"
    "nodes: as root this is a device cgroup (the v1 devices controller, or a BPF program\n"
    "on cgroup v2), and the runner fails (125) when it cannot set one up. Started by a\n"
    "non-root user there is none: in the container's user namespace the kernel refuses\n"
    "mknod of devices, and device nodes on the container's own mounts do not open.\n"
    "\n"
    "SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to the runner are forwarded\n"
    "to COMMAND. Killing the runner kills every process of the container.\n"
    "\n"
    "Exit status:\n"
    "  the status of COMMAND, or 128+N when it was killed by signal N\n"
    "  125  the runner failed (bad option, rootfs or setup error)\n"
    "  126  COMMAND could not be executed\n"
    "  127  COMMAND was not found\n"
    "\n"
    "Examples:\n"
    "  runner /mnt/alpine /bin/sh\n"
    "  runner --net none -u nobody -w /tmp --memory 64m ./rootfs ls -l\n";

enum {
	OPT_HOSTNAME = 256,
	OPT_NET,
	OPT_CPUS,
	OPT_PIDS,
	OPT_NO_INIT,
	OPT_DEVICE,
};

static int usage_error(const char *fmt, ...) _printf_(1, 2);
static int usage_error(const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_msg(LOG_ERR, "%s (see 'runner --help')", buf);
	return RUNNER_EXIT_FAILURE;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"env", required_argument, NULL, 'e'},
	    {"workdir", required_argument, NULL, 'w'},
	    {"user", required_argument, NULL, 'u'},
	    {"hostname", required_argument, NULL, OPT_HOSTNAME},
	    {"net", required_argument, NULL, OPT_NET},
	    {"network", required_argument, NULL, OPT_NET},
	    {"memory", required_argument, NULL, 'm'},
	    {"cpus", required_argument, NULL, OPT_CPUS},
	    {"pids-limit", required_argument, NULL, OPT_PIDS},
	    {"no-init", no_argument, NULL, OPT_NO_INIT},
	    {"device", required_argument, NULL, OPT_DEVICE},
	    {"tty", no_argument, NULL, 't'},
	    {"no-tty", no_argument, NULL, 'T'},
	    {"help", no_argument, NULL, 'h'},
	    {},
	};
	struct runner_config c = {.net = RUNNER_NET_HOST, .tty = -1};
	struct error err;
	_cleanup_free_ char **env = NULL;
	_cleanup_free_ struct runner_device *devs = NULL;
	size_t n_env = 0, n_devs = 0;
	long ncpu;
	int opt, r, status;

	log_set_ident("runner");
	env = calloc((size_t)argc + 1, sizeof(*env));
	devs = calloc((size_t)argc + 1, sizeof(*devs));
	if (!env || !devs) {
		log_msg(LOG_ERR, "out of memory");
		return RUNNER_EXIT_FAILURE;
	}
	opterr = 0;
	/* "+": options end at ROOTFS, so COMMAND's own options stay its own. */
	while ((opt = getopt_long(argc, argv, "+e:w:u:m:tTh", opts, NULL)) != -1) {
		switch (opt) {
		case 'e':
			if (!optarg[0] || optarg[0] == '=')
				return usage_error("invalid environment variable '%s'", optarg);
			env[n_env++] = optarg;
			break;
		case 'w':
			if (optarg[0] != '/')
				return usage_error("the working directory '%s' must be absolute",
				                   optarg);
			c.cwd = optarg;
			break;
		case 'u':
			if (!optarg[0])
				return usage_error("empty user");
			c.user = optarg;
			break;
		case OPT_HOSTNAME:
			if (!optarg[0] || strlen(optarg) > 64)
				return usage_error("invalid hostname '%s' (1 to 64 characters)",
				                   optarg);
			c.hostname = optarg;
			break;
		case OPT_NET:
			if (streq(optarg, "host"))
				c.net = RUNNER_NET_HOST;
			else if (streq(optarg, "none"))
				c.net = RUNNER_NET_NONE;
			else
				return usage_error("unknown network mode '%s' (use host or none)",
				                   optarg);
			break;
		case 'm':
			r = runner_parse_size(optarg, &c.memory);
			if (r < 0)
				return usage_error("invalid memory size '%s' (e.g. 32m, 1g)",
				                   optarg);
			if (c.memory < 4u << 20)
				return usage_error("memory limit '%s' is below the minimum of 4m",
				                   optarg);
			break;
		case OPT_CPUS:
			r = runner_parse_cpus(optarg, &c.cpus_milli);
			ncpu = sysconf(_SC_NPROCESSORS_ONLN);
			if (r < 0 || c.cpus_milli < 10)
				return usage_error("invalid CPU count '%s' (e.g. 0.5, 2)", optarg);
			if (ncpu > 0 && c.cpus_milli > (uint64_t)ncpu * 1000)
				return usage_error("--cpus %s: the range is 0.01 to %ld, the CPUs "
				                   "available",
				                   optarg, ncpu);
			break;
		case OPT_PIDS:
			r = runner_parse_uint(optarg, 4194304, &c.pids);
			if (r < 0)
				return usage_error("invalid pids limit '%s' (a positive number)",
				                   optarg);
			break;
		case OPT_NO_INIT:
			c.no_init = true;
			break;
		case OPT_DEVICE: {
			_cleanup_free_ char *spec = strdup(optarg);

			if (!spec)
				return usage_error("out of memory");
			if (runner_parse_device(optarg, &devs[n_devs]) < 0)
				return usage_error(
				    "invalid --device '%s' (HOST[:CONTAINER][:PERMS], "
				    "absolute paths, PERMS some of rwm)",
				    spec);
			n_devs++;
			break;
		}
		case 't':
			c.tty = 1;
			break;
		case 'T':
			c.tty = 0;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			if (optopt && optopt < 256)
				return usage_error("invalid or incomplete option '-%c'", optopt);
			return usage_error("invalid or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (argc - optind < 1)
		return usage_error("missing ROOTFS");
	if (argc - optind < 2)
		return usage_error("missing COMMAND");
	c.rootfs = argv[optind];
	c.argv = &argv[optind + 1];
	c.env = env;
	c.devices = devs;
	c.n_devices = n_devs;

	r = runner_run(&c, &status, &err);
	if (r < 0) {
		log_msg(LOG_ERR, "%s", err.msg[0] ? err.msg : strerror(-r));
		return RUNNER_EXIT_FAILURE;
	}
	if (err.msg[0])
		log_msg(LOG_ERR, "%s", err.msg);
	return status;
}
