/* imgfs index push: publish an image's layer indexes in its registry. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include "common/log.h"
#include "fsd/commands.h"
#include "fsd/image/indexpush.h"
#include "fsd/image/pull.h"

static const char index_usage[] =
    "Usage: imgfs [--root DIR] index push [--insecure] [-q] REF\n"
    "\n"
    "Publish the layer indexes of image REF in REF's repository, so that `imgfs mount` and\n"
    "`imgfs run` on other machines start it before its layers are downloaded. REF is pulled\n"
    "into the store first when it is not there. Each layer gets its index and a table of\n"
    "the sha256 of every 64 KiB of its compressed blob (reads over the network are\n"
    "verified against it); they are pushed as one OCI artifact whose subject is the image\n"
    "manifest, found through the referrers API or, where the registry has none, the tag\n"
    "sha256-HEX of the manifest, into which other tools' referrers are kept.\n"
    "Pushing the same image twice changes nothing. Needs push access to the repository.\n"
    "\n"
    "Options:\n"
    "  --insecure         allow plain HTTP and unverified TLS for REF's registry\n"
    "  -q, --quiet        no progress output\n"
    "  -h, --help         show this help\n"
    "\n"
    "Prints the artifact's digest on standard output. Layers compressed with zstd cannot\n"
    "be published (their index reads a re-encoded copy the registry does not have).\n"
    "Exit status: 0 published, 1 failed, 2 usage error.\n";

static int index_push_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"insecure", no_argument, NULL, 'i'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},
	    {},
	};
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	_cleanup_(store_freep) struct store *s = NULL;
	_cleanup_(registry_freep) struct registry *reg = NULL;
	_cleanup_free_ char *manifest = NULL, *artifact = NULL;
	struct pull_opts po = {0};
	struct error err = {""};
	uint64_t sent = 0;
	int c, r;

	while ((c = getopt_long(argc, argv, "qh", opts, NULL)) >= 0) {
		switch (c) {
		case 'i':
			po.insecure = po.reg.insecure = true;
			break;
		case 'q':
			po.quiet = true;
			break;
		case 'h':
			fputs(index_usage, stdout);
			return 0;
		default:
			fputs("Try 'imgfs index --help'.\n", stderr);
			return 2;
		}
	}
	if (argc - optind != 1) {
		fputs(index_usage, stderr);
		return 2;
	}
	if (parse_ref_arg(argv[optind], &ref))
		return 2;
	if (ref->transport != REF_REGISTRY) {
		log_msg(LOG_ERR, "cannot push the indexes of '%s': not a registry reference",
		        ref->name);
		return 2;
	}
	if (open_store(&s) < 0)
		return 1;
	r = pull_image(s, ref, &po, false, &manifest, &err);
	if (r < 0)
		return log_error(LOG_ERR, r, &err, "%s", ref->name), 1;
	po.reg.push = true;
	r = registry_new(ref, &po.reg, &reg);
	if (r < 0)
		return log_errno(LOG_ERR, r, "%s: cannot set up the registry client", ref->name), 1;
	r = index_push(s, reg, manifest, &artifact, &sent, &err);
	if (r < 0)
		return log_error(LOG_ERR, r, &err, "%s: cannot push its layer indexes", ref->name),
		       1;
	if (!po.quiet) {
		if (sent)
			fprintf(stderr,
			        "%s: layer indexes published as %s (%" PRIu64 " bytes sent)\n",
			        ref->name, artifact, sent);
		else
			fprintf(stderr, "%s: layer indexes already published as %s\n", ref->name,
			        artifact);
	}
	printf("%s\n", artifact);
	return 0;
}

int cmd_index(int argc, char **argv)
{
	if (argc >= 2 && (streq(argv[1], "-h") || streq(argv[1], "--help"))) {
		fputs(index_usage, stdout);
		return 0;
	}
	if (argc < 2 || !streq(argv[1], "push")) {
		fputs(index_usage, stderr);
		return 2;
	}
	return index_push_cmd(argc - 1, argv + 1);
}
