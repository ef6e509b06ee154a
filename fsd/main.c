/* imgfs: the command line. Global options, then one subcommand (fsd/cmd_*.c). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include "common/log.h"
#include "fsd/commands.h"
#include "fsd/image/store.h"

#define IMGFS_VERSION "0.1.0"

const char *arg_root;

static const char usage[] =
    "Usage: imgfs [--root DIR] [--debug] COMMAND [OPTIONS] [ARGS...]\n"
    "\n"
    "Run containers straight from OCI/Docker images: pull indexes each layer while it\n"
    "downloads, mount shows the image as a rootfs at once, reading file data lazily.\n"
    "\n"
    "Commands:\n"
    "  pull [--platform OS/ARCH[/VARIANT]] [--insecure] [-q] REF\n"
    "                         download REF into the store and index its layers\n"
    "  mount [-f] [--ro] [--no-lazy] [--upper DIR] [-o OPT] REF MOUNTPOINT\n"
    "                         show REF's rootfs at MOUNTPOINT (pulls it if missing)\n"
    "  umount MOUNTPOINT      unmount, stop the daemon, drop a throwaway writable layer\n"
    "  status MOUNTPOINT      the state of a mount: image, upper, daemon (key: value)\n"
    "  layer-store [-f] DIR   serve image layers to podman and CRI-O at DIR (their\n"
    "                         additional layer store)\n"
    "  restart MOUNTPOINT     replace a mount's daemon with the installed binary, in place\n"
    "  index push [--insecure] REF\n"
    "                         publish REF's layer indexes, for lazy mounts elsewhere\n"
    "  images                 list the images in the store\n"
    "  inspect REF            print the manifest and config of an image (JSON)\n"
    "  rmi REF                remove an image reference (gc frees its blobs)\n"
    "  gc                     remove blobs, indexes and trees no image or mount uses\n"
    "  login [-u USER] [--password-stdin] REGISTRY\n"
    "                         store credentials in the Docker config file\n"
    "  run [OPTIONS] REF [CMD [ARGS...]]\n"
    "                         pull, mount, run a container, unmount\n"
    "\n"
    "Global options:\n"
    "  --root DIR             store root (default: $IMGFS_ROOT, else /var/lib/imgfs for\n"
    "                         root or $XDG_DATA_HOME/imgfs)\n"
    "  --debug                verbose logging\n"
    "  -h, --help             show this help; COMMAND --help shows a command's help\n"
    "  --version              print the version\n"
    "\n"
    "REF is a registry reference (alpine, alpine:3.20, host:port/name:tag,\n"
    "name@sha256:HEX, normalised as Docker does), oci:DIR[:TAG] (an OCI image layout),\n"
    "docker-archive:FILE[:REF] (a `docker save` archive) or the path of a rootfs tarball\n"
    "(gzip, zstd or plain tar).\n"
    "\n"
    "Exit status: 0 on success, 1 on failure, 2 on a usage error; `run` returns the\n"
    "command's status (125 runner failure, 126 not executable, 127 not found, 128+N for\n"
    "signal N).\n";

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
    {"pull", cmd_pull},       {"mount", cmd_mount},
    {"umount", cmd_umount},   {"images", cmd_images},
    {"inspect", cmd_inspect}, {"rmi", cmd_rmi},
    {"gc", cmd_gc},           {"login", cmd_login},
    {"run", cmd_run},         {"status", cmd_status},
    {"index", cmd_index},     {"layer-store", cmd_layer_store},
    {"restart", cmd_restart}, {"serve-worker", cmd_serve_worker},
};

/* The store root of --root, $IMGFS_ROOT or the default. */
static int store_root(char **ret)
{
	char *root;

	if (!arg_root)
		return store_default_root(ret);
	root = strdup(arg_root);
	if (!root)
		return -ENOMEM;
	*ret = root;
	return 0;
}

int open_store(struct store **ret)
{
	_cleanup_free_ char *root = NULL;
	int r;

	r = store_root(&root);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot find the store root");
	r = store_open(root, ret);
	if (r < 0)
		return log_errno(LOG_ERR, r, "cannot open the store '%s'", root);
	return 0;
}

int open_existing_store(struct store **ret)
{
	_cleanup_free_ char *root = NULL;
	struct stat st;
	int r;

	r = store_root(&root);
	if (r < 0)
		return r;
	if (stat(root, &st) < 0)
		return -errno;
	return store_open(root, ret);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"root", required_argument, NULL, 'r'},
	    {"debug", no_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {},
	};
	int c;

	log_set_ident("imgfs");
	/* libcurl runs with CURLOPT_NOSIGNAL (threads), so a peer closing a connection must
	 * not kill us with SIGPIPE; writes see EPIPE instead. The runner resets every signal
	 * disposition before it execs the container's command. */
	signal(SIGPIPE, SIG_IGN);
	/* '+': stop at the first non-option, the subcommand parses the rest. */
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) >= 0) {
		switch (c) {
		case 'r':
			arg_root = optarg;
			break;
		case 'd':
			log_max_level = LOG_DEBUG;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		case 'V':
			puts("imgfs " IMGFS_VERSION);
			return 0;
		default:
			fputs("Try 'imgfs --help'.\n", stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		fputs(usage, stderr);
		return 2;
	}
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		if (streq(argv[optind], commands[i].name)) {
			argc -= optind;
			argv += optind;
			optind = 0; /* reset getopt for the subcommand */
			return commands[i].fn(argc, argv);
		}
	}
	log_msg(LOG_ERR, "unknown command '%s'; try 'imgfs --help'", argv[optind]);
	return 2;
}
