/* imgfs run: pull if needed, mount with a throwaway writable layer (plus the init layer),
 * run the image's command in a container on it, unmount and drop the layer. */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <sys/stat.h>
#include "common/fileio.h"
#include "common/error.h"
#include "common/log.h"
#include "fsd/commands.h"
#include "fsd/daemon.h"
#include "fsd/initlayer.h"
#include "fsd/index/tree.h"
#include "fsd/image/lazyimage.h"
#include "fsd/image/pull.h"
#include "fsd/lifecycle.h"
#include "runner/runner.h"

#define MAX_ENV 4096
#define MAX_DEVICES 64

static const char run_usage[] =
    "Usage: imgfs [--root DIR] run [OPTIONS] REF [CMD [ARGS...]]\n"
    "\n"
    "Run a container from image REF: pull it when it is not in the store, mount it with a\n"
    "throwaway writable layer, run the image's Entrypoint and Cmd (CMD replaces Cmd) with\n"
    "its Env, WorkingDir and User, then unmount and remove the layer. Missing mountpoints\n"
    "(/proc, /sys, /dev, /etc/hostname, /etc/hosts, /etc/resolv.conf) are supplied by an\n"
    "init layer, as Docker does; with --upper DIR, by the runner, so that DIR holds only\n"
    "what the container changed.\n"
    "\n"
    "Options:\n"
    "  --rm                   remove the writable layer afterwards (always done unless\n"
    "                         --upper is given; accepted for docker compatibility)\n"
    "  -e, --env K=V          set an environment variable (K alone: take it from here)\n"
    "  -w, --workdir DIR      working directory inside the container\n"
    "  -u, --user U[:G]       user and group, names or ids\n"
    "  --entrypoint CMD       replace the image's Entrypoint (\"\" clears it)\n"
    "  --hostname H           container host name\n"
    "  --net host|none        network: the host's, or a namespace with only loopback\n"
    "                         (default: none)\n"
    "  --memory N             memory limit (e.g. 64m, 1g); the command is killed beyond it\n"
    "  --cpus N               CPU limit (e.g. 0.5)\n"
    "  --pids-limit N         maximum number of processes\n"
    "  --no-init              run the command as PID 1, without the built-in init\n"
    "  --device HOST[:CONTAINER][:PERMS]\n"
    "                         add the host's device HOST to the container (PERMS: some\n"
    "                         of r, w, m; default rwm); other devices cannot be opened\n"
    "  --upper DIR            keep the writable layer in DIR (overlayfs format)\n"
    "  --platform OS/ARCH     platform to pull when the image is missing\n"
    "  --no-lazy              pull every layer first, even when the registry publishes\n"
    "                         layer indexes (imgfs's, eStargz or SOCI; by default the\n"
    "                         container starts at once and reads fetch what they need)\n"
    "  -q, --quiet            no pull progress\n"
    "  -h, --help             show this help\n"
    "\n"
    "Exit status: the command's; 125 when imgfs or the runner failed, 126 when the\n"
    "command cannot be executed, 127 when it is not found, 128+N when killed by signal N.\n"
    "\n"
    "What the mount inflates is kept in ROOT/cache for the next run of the image, bounded by\n"
    "$IMGFS_CACHE_MAX (see `imgfs mount --help`).\n";

struct run_args {
	const char *env[MAX_ENV];
	size_t n_env;
	struct runner_device devices[MAX_DEVICES];
	size_t n_devices;
	const char *workdir, *user, *hostname, *upper, *entrypoint;
	bool entrypoint_set, no_lazy;
	struct runner_config rc;
	struct pull_opts po;
};

static int parse_run_args(int argc, char **argv, struct run_args *a)
{
	enum {
		OPT_RM = 256,
		OPT_ENTRYPOINT,
		OPT_HOSTNAME,
		OPT_NET,
		OPT_MEMORY,
		OPT_CPUS,
		OPT_PIDS,
		OPT_NO_INIT,
		OPT_UPPER,
		OPT_PLATFORM,
		OPT_NO_LAZY,
		OPT_DEVICE
	};
	static const struct option opts[] = {
	    {"rm", no_argument, NULL, OPT_RM},
	    {"env", required_argument, NULL, 'e'},
	    {"workdir", required_argument, NULL, 'w'},
	    {"user", required_argument, NULL, 'u'},
	    {"entrypoint", required_argument, NULL, OPT_ENTRYPOINT},
	    {"hostname", required_argument, NULL, OPT_HOSTNAME},
	    {"net", required_argument, NULL, OPT_NET},
	    {"memory", required_argument, NULL, OPT_MEMORY},
	    {"cpus", required_argument, NULL, OPT_CPUS},
	    {"pids-limit", required_argument, NULL, OPT_PIDS},
	    {"no-init", no_argument, NULL, OPT_NO_INIT},
	    {"upper", required_argument, NULL, OPT_UPPER},
	    {"platform", required_argument, NULL, OPT_PLATFORM},
	    {"no-lazy", no_argument, NULL, OPT_NO_LAZY},
	    {"device", required_argument, NULL, OPT_DEVICE},
	    {"quiet", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},
	    {},
	};
	int c, r;

	a->rc.net = RUNNER_NET_NONE;
	a->rc.tty = -1;
	/* '+': options end at REF; what follows is the container's command line. */
	while ((c = getopt_long(argc, argv, "+e:w:u:qh", opts, NULL)) >= 0) {
		switch (c) {
		case OPT_RM:
			break;
		case 'e':
			if (a->n_env == MAX_ENV) {
				log_msg(LOG_ERR, "run: more than %d -e options", MAX_ENV);
				return 2;
			}
			a->env[a->n_env++] = optarg;
			break;
		case 'w':
			a->workdir = optarg;
			break;
		case 'u':
			a->user = optarg;
			break;
		case OPT_ENTRYPOINT:
			a->entrypoint = optarg;
			a->entrypoint_set = true;
			break;
		case OPT_HOSTNAME:
			a->hostname = optarg;
			break;
		case OPT_NET:
			if (streq(optarg, "host"))
				a->rc.net = RUNNER_NET_HOST;
			else if (streq(optarg, "none"))
				a->rc.net = RUNNER_NET_NONE;
			else {
				log_msg(LOG_ERR, "run: --net must be 'host' or 'none', not '%s'",
				        optarg);
				return 2;
			}
			break;
		case OPT_MEMORY:
			r = runner_parse_size(optarg, &a->rc.memory);
			if (r < 0) {
				log_msg(LOG_ERR, "run: invalid --memory '%s' (e.g. 64m, 1g)",
				        optarg);
				return 2;
			}
			break;
		case OPT_CPUS:
			r = runner_parse_cpus(optarg, &a->rc.cpus_milli);
			if (r < 0) {
				log_msg(LOG_ERR, "run: invalid --cpus '%s' (e.g. 0.5, 2)", optarg);
				return 2;
			}
			break;
		case OPT_PIDS:
			r = runner_parse_uint(optarg, 1u << 22, &a->rc.pids);
			if (r < 0) {
				log_msg(LOG_ERR, "run: invalid --pids-limit '%s'", optarg);
				return 2;
			}
			break;
		case OPT_NO_INIT:
			a->rc.no_init = true;
			break;
		case OPT_UPPER:
			a->upper = optarg;
			break;
		case OPT_NO_LAZY:
			a->no_lazy = true;
			break;
		case OPT_PLATFORM:
			a->po.platform = optarg;
			break;
		case OPT_DEVICE: {
			_cleanup_free_ char *spec = strdup(optarg);

			if (!spec || a->n_devices == MAX_DEVICES ||
			    runner_parse_device(optarg, &a->devices[a->n_devices]) < 0) {
				log_msg(LOG_ERR,
				        "run: invalid --device '%s' (HOST[:CONTAINER][:PERMS], at "
				        "most %d)",
				        spec ? spec : optarg, MAX_DEVICES);
				return 2;
			}
			a->n_devices++;
			break;
		}
		case 'q':
			a->po.quiet = true;
			break;
		case 'h':
			fputs(run_usage, stdout);
			return 0;
		default:
			fputs("Try 'imgfs run --help'.\n", stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		log_msg(LOG_ERR, "run needs an image; try 'imgfs run --help'");
		return 2;
	}
	return -1;
}

/* Appends the strings of a NULL-terminated list to v (capacity cap). */
static int append(const char **v, size_t *n, size_t cap, char *const *list)
{
	for (; list && *list; list++) {
		if (*n + 1 >= cap)
			return -E2BIG;
		v[(*n)++] = *list;
	}
	return 0;
}

/* Image Env, then -e options replacing variables of the same name. */
static int build_env(const struct image_config *cfg, const struct run_args *a, const char **env,
                     size_t cap)
{
	size_t n = 0;
	int r = append(env, &n, cap, cfg->env);

	if (r < 0)
		return r;
	for (size_t i = 0; i < a->n_env; i++) {
		size_t klen = strcspn(a->env[i], "=");
		size_t j;

		for (j = 0; j < n; j++)
			if (strncmp(env[j], a->env[i], klen) == 0 &&
			    (env[j][klen] == '=' || env[j][klen] == '\0'))
				break;
		if (j == n) {
			if (n + 1 >= cap)
				return -E2BIG;
			n++;
		}
		env[j] = a->env[i];
	}
	env[n] = NULL;
	return 0;
}

/* Entrypoint (or --entrypoint), then CMD from the command line or the image's Cmd. */
static int build_argv(const struct image_config *cfg, const struct run_args *a, int argc,
                      char **argv, const char **out, size_t cap)
{
	size_t n = 0;
	int r = 0;

	if (a->entrypoint_set) {
		if (a->entrypoint[0])
			out[n++] = a->entrypoint;
	} else {
		r = append(out, &n, cap, cfg->entrypoint);
	}
	if (r >= 0 && argc > 0)
		r = append(out, &n, cap, argv);
	else if (r >= 0 && !a->entrypoint_set)
		r = append(out, &n, cap, cfg->cmd);
	if (r < 0)
		return r;
	out[n] = NULL;
	return n > 0 ? 0 : -ENOEXEC;
}

static int load_config(struct store *s, const char *manifest, struct image_config **ret,
                       struct error *err)
{
	_cleanup_free_ char *cbody = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	size_t clen = 0;
	int r;

	r = store_read_image_manifest(s, manifest, &m, NULL, err);
	if (r < 0)
		return r;
	r = store_read_blob(s, m->config.digest, CONFIG_MAX_SIZE, &cbody, &clen);
	if (r < 0)
		return r;
	return image_config_parse(cbody, clen, ret, err);
}

/* Writes the init layer into upper, reading the image's tree. */
static int prepare_upper(struct store *s, const char *manifest, struct lazyimage *lazy,
                         const char *upper)
{
	_cleanup_(tree_closep) struct tree *t = NULL;
	_cleanup_close_ int tree_fd = -1, upper_fd = -1;
	char path[128];
	int r;

	store_path("trees", manifest, path, sizeof(path));
	tree_fd = openat(s->root_fd, path, O_RDONLY | O_CLOEXEC);
	if (tree_fd < 0)
		return -errno;
	r = tree_open_flags(lazy ? lazyimage_opener(lazy) : store_layer_opener(s), tree_fd, 0, &t);
	if (r < 0)
		return r;
	upper_fd = open(upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (upper_fd < 0)
		return -errno;
	r = initlayer_populate(t, upper_fd);
	return r < 0 ? r : 0;
}

/* A private directory for this run's mountpoint and layer. */
static int make_run_dir(char **ret)
{
	_cleanup_free_ char *base = NULL, *dir = NULL;
	const char *rt = getenv("XDG_RUNTIME_DIR");
	int r;

	if (geteuid() == 0 || !rt)
		base = strdup(geteuid() == 0 ? "/run/imgfs" : "/tmp/imgfs-run");
	else
		base = path_join(rt, "imgfs");
	if (!base)
		return -ENOMEM;
	r = mkdir_p_at(AT_FDCWD, base, 0700);
	if (r < 0)
		return r;
	dir = path_join(base, "run-XXXXXX");
	if (!dir)
		return -ENOMEM;
	if (!mkdtemp(dir))
		return -errno;
	*ret = TAKE_PTR(dir);
	return 0;
}

int cmd_run(int argc, char **argv)
{
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	_cleanup_(store_freep) struct store *s = NULL;
	_cleanup_(image_config_freep) struct image_config *cfg = NULL;
	_cleanup_(lazyimage_freep) struct lazyimage *lazy = NULL;
	_cleanup_free_ char *manifest = NULL, *dir = NULL, *rootfs = NULL, *upper = NULL;
	_cleanup_free_ char *upper_real = NULL, *rootfs_real = NULL;
	_cleanup_free_ const char **env = NULL, **cargv = NULL;
	struct run_args a = {0};
	struct error err = {""};
	struct error why = {""};
	int status = RUNNER_EXIT_FAILURE, r;

	r = parse_run_args(argc, argv, &a);
	if (r >= 0)
		return r == 2 ? RUNNER_EXIT_FAILURE : r;
	if (parse_ref_arg(argv[optind], &ref))
		return RUNNER_EXIT_FAILURE;
	argc -= optind + 1;
	argv += optind + 1;
	if (open_store(&s) < 0)
		return RUNNER_EXIT_FAILURE;
	r = lazyimage_pull(s, ref, &a.po, !a.no_lazy, &manifest, &lazy, &why);
	if (r < 0)
		return log_error(LOG_ERR, r, &why, "%s", ref->name), RUNNER_EXIT_FAILURE;
	r = load_config(s, manifest, &cfg, &why);
	if (r < 0) {
		log_error(LOG_ERR, r, &why, "cannot read the config of '%s'", ref->name);
		return RUNNER_EXIT_FAILURE;
	}
	env = calloc(MAX_ENV * 2 + 1, sizeof(*env));
	cargv = calloc((size_t)argc + 2 * CONFIG_MAX_ARGS + 2, sizeof(*cargv));
	if (!env || !cargv)
		return RUNNER_EXIT_FAILURE;
	r = build_env(cfg, &a, env, MAX_ENV * 2);
	if (r >= 0)
		r = build_argv(cfg, &a, argc, argv, cargv, (size_t)argc + 2 * CONFIG_MAX_ARGS + 1);
	if (r < 0) {
		if (r == -ENOEXEC)
			log_msg(LOG_ERR, "'%s' has no Entrypoint or Cmd: give a command",
			        ref->name);
		else
			log_errno(LOG_ERR, r, "run '%s'", ref->name);
		return RUNNER_EXIT_FAILURE;
	}

	r = make_run_dir(&dir);
	if (r < 0) {
		log_errno(LOG_ERR, r, "cannot create a run directory");
		return RUNNER_EXIT_FAILURE;
	}
	rootfs = path_join(dir, "rootfs");
	upper = a.upper ? strdup(a.upper) : path_join(dir, "upper");
	if (!rootfs || !upper || mkdir(rootfs, 0755) < 0 ||
	    (mkdir(upper, 0755) < 0 && !(a.upper && errno == EEXIST))) {
		log_errno(LOG_ERR, -errno, "cannot create the run directory '%s'", dir);
		goto out;
	}
	/* The init layer saves the runner its shadows of missing mount points, but only in
	 * a throwaway upper: a user's --upper holds what the container did, nothing else. */
	r = a.upper ? 0 : prepare_upper(s, manifest, lazy, upper);
	if (r < 0) {
		log_errno(LOG_ERR, r, "cannot write the init layer into '%s'", upper);
		goto out;
	}
	upper_real = realpath(upper, NULL);
	rootfs_real = realpath(rootfs, NULL);
	if (!upper_real || !rootfs_real) {
		log_errno(LOG_ERR, -errno, "cannot use the upper directory '%s'", upper);
		goto out;
	}
	r = daemon_mount(s, &(struct mount_request){
	                        .ref = ref->name,
	                        .manifest = manifest,
	                        .mountpoint = rootfs_real,
	                        .lazy = lazy,
	                        .upper = upper_real,
	                    });
	if (r < 0)
		goto out; /* logged */

	a.rc.rootfs = rootfs;
	a.rc.argv = (char *const *)cargv;
	a.rc.env = (char *const *)env;
	a.rc.cwd = a.workdir ? a.workdir
	                     : (cfg->working_dir && *cfg->working_dir ? cfg->working_dir : NULL);
	a.rc.user = a.user ? a.user : (cfg->user && *cfg->user ? cfg->user : NULL);
	a.rc.hostname = a.hostname;
	a.rc.devices = a.devices;
	a.rc.n_devices = a.n_devices;
	r = runner_run(&a.rc, &status, &err);
	if (err.msg[0])
		log_msg(r < 0 ? LOG_ERR : LOG_NOTICE, "%s", err.msg);
	else if (r < 0)
		log_errno(LOG_ERR, r, "cannot run '%s'", ref->name);
	if (r < 0)
		status = RUNNER_EXIT_FAILURE;
	if (lifecycle_stop(s, rootfs_real) < 0 && status == 0)
		status = RUNNER_EXIT_FAILURE;
out:
	if (!a.upper && upper)
		(void)rm_rf_at(AT_FDCWD, upper);
	if (rootfs)
		(void)rmdir(rootfs);
	(void)rmdir(dir);
	return status;
}
