/* imgfs mount / umount / status: the command lines; the mount's life cycle is lifecycle.c, the
 * process serving it daemon.c. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include "common/error.h"
#include "common/log.h"
#include "fsd/commands.h"
#include "fsd/daemon.h"
#include "fsd/image/lazyimage.h"
#include "fsd/image/pull.h"
#include "fsd/image/ref.h"
#include "fsd/image/registry.h"
#include "fsd/image/store.h"
#include "fsd/lifecycle.h"

static const char mount_usage[] =
    "Usage: imgfs [--root DIR] mount [-f] [--ro] [--no-lazy] [--upper DIR] [-o OPT] REF\n"
    "                               MOUNTPOINT\n"
    "\n"
    "Show the root filesystem of image REF at MOUNTPOINT, pulling the image first when it\n"
    "is not in the store. Nothing is extracted: file data is inflated when it is read.\n"
    "When the registry publishes an index of every layer (`imgfs index push`; else the\n"
    "image's eStargz tables of contents, or a SOCI index), the mount is live before the\n"
    "layers are downloaded: reads fetch the byte ranges they need, verified span by span,\n"
    "and a background fill completes the layers into the store.\n"
    "The command returns once the mount is live; a daemon serves it until `imgfs umount`.\n"
    "A supervisor process keeps the mount: when the daemon serving it dies (killed, crashed)\n"
    "a new one takes over within a second, and the processes using the mount see a pause,\n"
    "not an error. `imgfs restart` replaces the daemon with the installed imgfs binary.\n"
    "\n"
    "Options:\n"
    "  -f, --foreground   stay in the foreground, logging to standard error\n"
    "  --ro               read-only view\n"
    "  --no-lazy          pull every layer before mounting, even when indexes are published\n"
    "  --upper DIR        keep the writable layer in DIR (overlayfs format) instead of a\n"
    "                     throwaway one in the store\n"
    "  -o OPT[,OPT...]    extra FUSE/mount options\n"
    "  -h, --help         show this help\n"
    "\n"
    "As root the mount allows setuid binaries and device nodes, so it can serve as a\n"
    "container root filesystem; every user may read it (allow_other), with the image's\n"
    "permissions enforced by the kernel (default_permissions). The daemon logs to\n"
    "ROOT/mounts/NAME/log.\n"
    "\n"
    "What the mount inflates is kept in ROOT/cache, so that the next mount of the image\n"
    "reads it back instead of inflating it again. Environment: IMGFS_CACHE_MAX bounds that\n"
    "cache for the whole store (bytes, or with a K, M or G suffix; default 1G; 0 turns it\n"
    "off); the least recently used entries go first. `imgfs gc` drops the cache of\n"
    "removed images.\n";

static const char umount_usage[] =
    "Usage: imgfs umount MOUNTPOINT\n"
    "\n"
    "Unmount an imgfs mount, wait for its daemon to exit and remove its state and its\n"
    "throwaway writable layer (a layer given with --upper is kept). Also cleans up a mount\n"
    "whose daemon died. The mount's store is found from the mount, whatever --root it was\n"
    "made with.\n";

int cmd_mount(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"foreground", no_argument, NULL, 'f'}, {"ro", no_argument, NULL, 'r'},
	    {"no-lazy", no_argument, NULL, 'L'},    {"upper", required_argument, NULL, 'u'},
	    {"help", no_argument, NULL, 'h'},       {},
	};
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	_cleanup_(store_freep) struct store *s = NULL;
	_cleanup_free_ char *manifest = NULL, *mountpoint = NULL, *extra = NULL, *upper_real = NULL;
	struct mount_request req = {0};
	const char *upper = NULL;
	struct pull_opts po = {0};
	_cleanup_(lazyimage_freep) struct lazyimage *lazy = NULL;
	bool no_lazy = false;
	struct error err = {""};
	struct stat st;
	int c, r;

	while ((c = getopt_long(argc, argv, "fo:h", opts, NULL)) >= 0) {
		switch (c) {
		case 'f':
			req.foreground = true;
			break;
		case 'r':
			req.ro = true;
			break;
		case 'L':
			no_lazy = true;
			break;
		case 'u':
			upper = optarg;
			break;
		case 'o': {
			size_t len = extra ? strlen(extra) : 0;
			char *n = realloc(extra, len + strlen(optarg) + 2);

			if (!n)
				return log_errno(LOG_ERR, -ENOMEM, "mount"), 1;
			sprintf(n + len, "%s%s", len ? "," : "", optarg);
			extra = n;
			break;
		}
		case 'h':
			fputs(mount_usage, stdout);
			return 0;
		default:
			fputs("Try 'imgfs mount --help'.\n", stderr);
			return 2;
		}
	}
	if (argc - optind != 2) {
		fputs(mount_usage, stderr);
		return 2;
	}
	if (upper && req.ro) {
		log_msg(LOG_ERR, "cannot mount '%s': --upper needs a writable mount",
		        argv[optind + 1]);
		return 2;
	}
	if (upper) {
		if (mkdir(upper, 0755) < 0 && errno != EEXIST) {
			log_errno(LOG_ERR, -errno, "cannot create the upper directory '%s'", upper);
			return 1;
		}
		upper_real = realpath(upper, NULL);
		if (!upper_real) {
			log_errno(LOG_ERR, -errno, "cannot use the upper directory '%s'", upper);
			return 1;
		}
	}
	if (parse_ref_arg(argv[optind], &ref))
		return 2;
	if (stat(argv[optind + 1], &st) < 0) {
		if (errno == ENOTCONN)
			log_msg(LOG_ERR,
			        "cannot mount '%s': a dead mount is in the way; run 'imgfs umount "
			        "%s' first",
			        argv[optind + 1], argv[optind + 1]);
		else
			log_errno(LOG_ERR, -errno, "cannot mount '%s'", argv[optind + 1]);
		return 1;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_msg(LOG_ERR, "cannot mount '%s': not a directory", argv[optind + 1]);
		return 1;
	}
	mountpoint = realpath(argv[optind + 1], NULL);
	if (!mountpoint) {
		log_errno(LOG_ERR, -errno, "cannot mount '%s'", argv[optind + 1]);
		return 1;
	}
	if (open_store(&s) < 0)
		return 1;
	r = lazyimage_pull(s, ref, &po, !no_lazy, &manifest, &lazy, &err);
	if (r < 0)
		return log_error(LOG_ERR, r, &err, "%s", ref->name), 1;
	req.ref = ref->name;
	req.manifest = manifest;
	req.mountpoint = mountpoint;
	req.upper = upper_real;
	req.extra_opts = extra;
	req.lazy = lazy;
	return daemon_mount(s, &req) < 0 ? 1 : 0;
}

static const char status_usage[] =
    "Usage: imgfs status MOUNTPOINT\n"
    "\n"
    "Print the state of an imgfs mount as `key: value` lines:\n"
    "  mountpoint   the mount's canonical path\n"
    "  state        live (a daemon serves it), dead (its daemon died: `imgfs umount` it)\n"
    "               or unknown (mounted, but no state was found)\n"
    "  image        the image reference (`layer-store` for an `imgfs layer-store` DIR)\n"
    "  digest       the manifest digest (- for a layer store, which serves many)\n"
    "  read-only    yes or no\n"
    "  upper        the writable layer's directory, or - for a read-only mount\n"
    "  upper-kept   yes when the layer was given with --upper (kept at umount)\n"
    "  daemon-pid   the process serving requests, or - when none\n"
    "  supervisor-pid  the process that keeps the mount and starts a new daemon when the\n"
    "               one serving dies, or - (a mount in the foreground, or a dead one)\n"
    "  restarts     how many daemons took the mount over since it was made\n"
    "  state-dir    the mount's directory in its store (log, state)\n"
    "  lazy         yes when the layers are fetched as they are read; then, in bytes:\n"
    "  fetched-on-demand      fetched by this mount for reads (by every daemon it had)\n"
    "  fetched-in-background  fetched by its background fill (by every daemon it had)\n"
    "  lazy-bytes-present     of the lazily fetched layers, there now (by any process)\n"
    "  lazy-bytes-total       of the lazily fetched layers, in all\n"
    "and what the daemon did to read the compressed layers (counts since it started):\n"
    "  decoded-units          pieces of the layers it inflated (gzip spans, zstd frames)\n"
    "  decoded-cache-hits     pieces it read from the decoded-data cache instead\n"
    "  decoded-cache-stored   pieces it added to that cache\n"
    "  decoded-cache-corrupt  cache entries found damaged (removed, decoded again)\n"
    "Like `imgfs umount`, it finds the mount's store from the mount. Exit status 0 for a\n"
    "live mount, 1 for a dead or unknown one or no mount at all.\n";

static const char *yes_no(bool b)
{
	return b ? "yes" : "no";
}

int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {}};
	_cleanup_(store_freep) struct store *s = NULL;
	struct mount_status st;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		if (c == 'h') {
			fputs(status_usage, stdout);
			return 0;
		}
		fputs("Try 'imgfs status --help'.\n", stderr);
		return 2;
	}
	if (argc - optind != 1) {
		fputs(status_usage, stderr);
		return 2;
	}
	(void)open_existing_store(&s);
	r = lifecycle_status(s, argv[optind], &st);
	if (r == -ENOENT) {
		log_msg(LOG_ERR, "'%s' is not an imgfs mount", argv[optind]);
		return 1;
	}
	if (r < 0) {
		log_errno(LOG_ERR, r, "cannot read the state of '%s'", argv[optind]);
		return 1;
	}
	printf("mountpoint: %s\n", st.mountpoint);
	printf("state: %s\n", st.alive ? "live" : st.dir ? "dead" : "unknown");
	printf("image: %s\n", st.ref ? st.ref : "-");
	printf("digest: %s\n", st.manifest ? st.manifest : "-");
	printf("read-only: %s\n", yes_no(st.ro));
	printf("upper: %s\n", st.upper ? st.upper : "-");
	printf("upper-kept: %s\n", yes_no(st.upper_given));
	if (st.pid > 0)
		printf("daemon-pid: %d\n", (int)st.pid);
	else
		printf("daemon-pid: -\n");
	if (st.supervisor_pid > 0)
		printf("supervisor-pid: %d\n", (int)st.supervisor_pid);
	else
		printf("supervisor-pid: -\n");
	printf("restarts: %u\n", st.restarts);
	printf("state-dir: %s\n", st.dir ? st.dir : "-");
	printf("lazy: %s\n", yes_no(st.lazy));
	if (st.lazy) {
		printf("fetched-on-demand: %" PRIu64 "\n", st.demand_bytes);
		printf("fetched-in-background: %" PRIu64 "\n", st.fill_bytes);
		printf("lazy-bytes-present: %" PRIu64 "\n", st.present);
		printf("lazy-bytes-total: %" PRIu64 "\n", st.total);
	}
	if (st.decoded) {
		printf("decoded-units: %" PRIu64 "\n", st.decoded_units);
		printf("decoded-cache-hits: %" PRIu64 "\n", st.cache_hits);
		printf("decoded-cache-stored: %" PRIu64 "\n", st.cache_stored);
		printf("decoded-cache-corrupt: %" PRIu64 "\n", st.cache_corrupt);
	}
	r = st.alive ? 0 : 1;
	mount_status_done(&st);
	return r;
}

int cmd_umount(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {}};
	_cleanup_(store_freep) struct store *s = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		if (c == 'h') {
			fputs(umount_usage, stdout);
			return 0;
		}
		fputs("Try 'imgfs umount --help'.\n", stderr);
		return 2;
	}
	if (argc - optind != 1) {
		fputs(umount_usage, stderr);
		return 2;
	}
	/* The store of --root (or the default) is where a mount without a runtime link
	 * is looked for; a store that cannot be opened is no reason not to unmount. */
	(void)open_existing_store(&s);
	return lifecycle_stop(s, argv[optind]) < 0 ? 1 : 0;
}

static const char restart_usage[] =
    "Usage: imgfs restart MOUNTPOINT\n"
    "\n"
    "Replace the daemon serving an imgfs mount (or an `imgfs layer-store` DIR) with a new\n"
    "one, started from the imgfs binary installed where the mount's was (an upgrade\n"
    "installed over it is picked up), without unmounting: the new daemon takes the FUSE\n"
    "connection over, with the same inode numbers and open files, and answers the requests\n"
    "the old one had not. Processes using the mount see a pause. Returns once the new\n"
    "daemon serves. Sending SIGHUP to the mount's supervisor (`supervisor-pid` in `imgfs\n"
    "status`) does the same without waiting.\n"
    "Like `imgfs umount`, it finds the mount's store from the mount.\n";

int cmd_restart(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {}};
	_cleanup_(store_freep) struct store *s = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		if (c == 'h') {
			fputs(restart_usage, stdout);
			return 0;
		}
		fputs("Try 'imgfs restart --help'.\n", stderr);
		return 2;
	}
	if (argc - optind != 1) {
		fputs(restart_usage, stderr);
		return 2;
	}
	(void)open_existing_store(&s);
	return lifecycle_restart(s, argv[optind]) < 0 ? 1 : 0;
}

static const char serve_worker_usage[] =
    "Usage: imgfs --root DIR serve-worker MOUNTPOINT\n"
    "\n"
    "Internal: run by the supervisor of the mount at MOUNTPOINT (with the FUSE connection\n"
    "and a control socket) to take the mount over from a daemon that died or is being\n"
    "replaced. It reads what to serve from the mount's state in DIR/mounts/NAME. Not for\n"
    "use by hand: without the supervisor's descriptors it exits with an error.\n";

/* The lazy layers of a mount taken over: what the dead daemon fetched and verified is in
 * the store's partial blobs; the rest is fetched from the registry of its image. */
static int reopen_lazy(struct store *s, const struct mount_status *st, struct lazyimage **ret)
{
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	struct registry *reg = NULL;
	struct error err = {""};
	int r;

	r = ref_parse(st->ref, &ref, &err);
	if (r >= 0)
		r = registry_new(ref, &(struct registry_opts){0}, &reg);
	if (r >= 0)
		r = lazyimage_open_image(s, st->manifest, ref->name, reg, ret, &err);
	if (r < 0)
		return log_error(LOG_ERR, r, &err, "cannot take over the lazy mount of %s",
		                 st->ref);
	return 0;
}

int cmd_serve_worker(int argc, char **argv)
{
	_cleanup_(store_freep) struct store *s = NULL;
	_cleanup_(lazyimage_freep) struct lazyimage *lazy = NULL;
	_cleanup_free_ char *mountpoint = NULL;
	struct mount_status st = {0};
	struct lifecycle *lc = NULL;
	int conn_fd = -1, r;

	if (argc != 2 || argv[1][0] == '-') {
		fputs(serve_worker_usage, argc == 2 && streq(argv[1], "--help") ? stdout : stderr);
		return argc == 2 && streq(argv[1], "--help") ? 0 : 2;
	}
	mountpoint = strdup(argv[1]);
	if (!mountpoint || open_store(&s) < 0)
		return 1;
	r = lifecycle_attach(s, mountpoint, &lc, &conn_fd, &st);
	if (r < 0)
		return 1;
	if (!st.manifest)
		r = log_errno(LOG_ERR, -EBADMSG, "cannot serve '%s': %s names no image", mountpoint,
		              st.dir);
	else if (st.lazy)
		r = reopen_lazy(s, &st, &lazy);
	if (r >= 0)
		r = daemon_take_over(s, lc,
		                     &(struct mount_request){
		                         .ref = st.ref,
		                         .manifest = st.manifest,
		                         .mountpoint = st.mountpoint,
		                         .upper = st.upper_given ? st.upper : NULL,
		                         .extra_opts = st.extra_opts,
		                         .lazy = lazy,
		                         .ro = st.ro,
		                     },
		                     conn_fd);
	lazyimage_free(TAKE_PTR(lazy));
	mount_status_done(&st);
	lifecycle_detach(lc);
	return r < 0 ? 1 : 0;
}
