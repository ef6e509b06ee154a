/* imgfs pull */
#include <getopt.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include "common/error.h"
#include "common/log.h"
#include "fsd/commands.h"
#include "fsd/image/pull.h"

static const char pull_usage[] =
    "Usage: imgfs [--root DIR] pull [--platform OS/ARCH[/VARIANT]] [--insecure] [-q]\n"
    "                              [--timeout SECONDS] [--retry N] [--retry-delay SECONDS] REF\n"
    "\n"
    "Download the image REF into the store. Each layer is streamed once: its digest is\n"
    "verified, the compressed blob is kept as the registry served it, and a random-access\n"
    "index of its tar entries is built on the way, so `imgfs mount` needs no extraction.\n"
    "Layers download in parallel; an interrupted pull resumes where it stopped.\n"
    "\n"
    "Options:\n"
    "  --platform OS/ARCH[/VARIANT]  pick this platform from a multi-platform image\n"
    "                                (default: the host's, e.g. linux/amd64)\n"
    "  --insecure                    allow plain HTTP and unverified TLS for REF's registry\n"
    "                                (registries on loopback always use plain HTTP)\n"
    "  -q, --quiet                   no progress output\n"
    "  --timeout SECONDS             give up on a connection that cannot be made, or that\n"
    "                                sends nothing (headers or body), for this long\n"
    "                                (default 30)\n"
    "  --retry N                     retries of a request that failed with 429, 5xx, a\n"
    "                                timeout or a dropped connection (default 5, 0: none);\n"
    "                                a download that made progress starts a new series\n"
    "  --retry-delay SECONDS         delay before the first retry, doubled each time\n"
    "                                (default 0.25; Retry-After wins when the registry\n"
    "                                sends it)\n"
    "  -h, --help                    show this help\n"
    "\n"
    "Credentials come from $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,\n"
    "$DOCKER_CONFIG/config.json or ~/.docker/config.json (see `imgfs login`). Extra CAs\n"
    "for a registry are read from /etc/containers/certs.d/HOST[:PORT]/*.crt and\n"
    "/etc/docker/certs.d/HOST[:PORT]/*.crt.\n"
    "\n"
    "Prints the manifest digest on standard output. Exit status: 0 pulled, 1 failed\n"
    "(the reason names the image, URL or digest), 2 usage error.\n";

/* Parses REF for a subcommand, logging the reason on failure. Returns 0 or 2 (usage). */
int parse_ref_arg(const char *s, struct image_ref **ret)
{
	struct error err = {""};
	int r = ref_parse(s, ret, &err);

	if (r < 0) {
		log_error(LOG_ERR, r, &err, "invalid reference '%s'", s);
		return 2;
	}
	return 0;
}

/* Parses a decimal number of seconds in [min_s, max_s] into milliseconds (at least 1). */
static int parse_seconds(const char *s, double min_s, double max_s, unsigned *ret_ms)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= min_s && v <= max_s))
		return -EINVAL;
	*ret_ms = v * 1000 < 1 ? 1 : (unsigned)(v * 1000 + 0.5);
	return 0;
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	interrupted = sig;
}

int cmd_pull(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"platform", required_argument, NULL, 'p'},
	    {"insecure", no_argument, NULL, 'i'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"timeout", required_argument, NULL, 't'},
	    {"retry", required_argument, NULL, 'R'},
	    {"retry-delay", required_argument, NULL, 'D'},
	    {"help", no_argument, NULL, 'h'},
	    {},
	};
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	_cleanup_(store_freep) struct store *s = NULL;
	_cleanup_free_ char *digest = NULL;
	struct pull_opts po = {0};
	struct error err = {""};
	unsigned ms;
	char *end;
	unsigned long n;
	int c, r;

	while ((c = getopt_long(argc, argv, "qh", opts, NULL)) >= 0) {
		switch (c) {
		case 'p':
			po.platform = optarg;
			break;
		case 'i':
			po.insecure = true;
			break;
		case 'q':
			po.quiet = true;
			break;
		case 't':
			if (parse_seconds(optarg, 1, 86400, &ms) < 0 || ms % 1000) {
				log_msg(LOG_ERR,
				        "invalid --timeout '%s': whole seconds from 1 to 86400",
				        optarg);
				return 2;
			}
			po.reg.timeout_s = ms / 1000;
			break;
		case 'R':
			errno = 0;
			n = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || optarg[0] == '-' || n > 100) {
				log_msg(LOG_ERR, "invalid --retry '%s': a number from 0 to 100",
				        optarg);
				return 2;
			}
			po.reg.max_retries = n ? (unsigned)n : REGISTRY_RETRIES_NONE;
			break;
		case 'D':
			if (parse_seconds(optarg, 0, 3600, &ms) < 0) {
				log_msg(LOG_ERR,
				        "invalid --retry-delay '%s': seconds from 0 to 3600",
				        optarg);
				return 2;
			}
			po.reg.backoff_ms = ms;
			break;
		case 'h':
			fputs(pull_usage, stdout);
			return 0;
		default:
			fputs("Try 'imgfs pull --help'.\n", stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		log_msg(LOG_ERR, "pull needs exactly one REF; try 'imgfs pull --help'");
		return 2;
	}
	r = parse_ref_arg(argv[optind], &ref);
	if (r)
		return r;
	if (open_store(&s) < 0)
		return 1;
	/* Stop cleanly on SIGINT/SIGTERM: the partial files stay in ROOT/tmp and a new pull
	 * resumes them; nothing unverified reaches the store. */
	po.cancel = &interrupted;
	sigaction(SIGINT, &(struct sigaction){.sa_handler = on_interrupt}, NULL);
	sigaction(SIGTERM, &(struct sigaction){.sa_handler = on_interrupt}, NULL);
	/* A tag may have moved: ask the source again. A digest names fixed content. */
	r = pull_image(s, ref, &po, !ref->digest, &digest, &err);
	if (interrupted) {
		/* Whatever failed failed because of the signal: say only that. */
		log_msg(LOG_ERR, "pull of '%s' interrupted; run it again to resume", ref->name);
		return 128 + interrupted;
	}
	if (r < 0)
		return log_error(LOG_ERR, r, &err, "%s", ref->name), 1;
	printf("%s\n", digest);
	return 0;
}
