/* imgfs login */
#include <getopt.h>
#include <stdio.h>
#include <termios.h>
#include "common/error.h"
#include "common/log.h"
#include "fsd/commands.h"
#include "fsd/image/auth.h"
#include "fsd/image/ref.h"
#include "fsd/image/registry.h"

static const char login_usage[] =
    "Usage: imgfs login [-u USER] [--password-stdin] [--insecure] REGISTRY\n"
    "\n"
    "Check credentials against REGISTRY (host[:port]) and store them in the Docker config\n"
    "file ($DOCKER_CONFIG/config.json or ~/.docker/config.json, mode 0600), where docker,\n"
    "podman and skopeo find them too.\n"
    "\n"
    "Options:\n"
    "  -u, --username USER    user name (asked for on a terminal when missing)\n"
    "  --password-stdin       read the password from standard input (one line)\n"
    "  --insecure             allow plain HTTP and unverified TLS\n"
    "  -h, --help             show this help\n";

/* Reads one line from fd into a malloc'ed string without its newline; with echo_off on a
 * terminal the typed characters are not shown. */
static int read_line(FILE *f, const char *prompt, bool echo_off, char **ret)
{
	struct termios old, raw;
	bool restore = false;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (prompt) {
		fputs(prompt, stderr);
		fflush(stderr);
	}
	if (echo_off && isatty(fileno(f)) && tcgetattr(fileno(f), &old) == 0) {
		raw = old;
		raw.c_lflag &= ~(tcflag_t)ECHO;
		restore = tcsetattr(fileno(f), TCSAFLUSH, &raw) == 0;
	}
	n = getline(&line, &cap, f);
	if (restore) {
		tcsetattr(fileno(f), TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (n < 0) {
		free(line);
		return -ENODATA;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	*ret = line;
	return 0;
}

int cmd_login(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"username", required_argument, NULL, 'u'},
	    {"password-stdin", no_argument, NULL, 'P'},
	    {"insecure", no_argument, NULL, 'i'},
	    {"help", no_argument, NULL, 'h'},
	    {},
	};
	_cleanup_(ref_freep) struct image_ref *ref = NULL;
	_cleanup_(registry_freep) struct registry *reg = NULL;
	_cleanup_free_ char *user = NULL, *password = NULL, *probe = NULL;
	struct registry_opts ro = {0};
	struct error err = {""};
	struct error store_err = {""};
	bool password_stdin = false;
	const char *host;
	int c, r;

	while ((c = getopt_long(argc, argv, "u:h", opts, NULL)) >= 0) {
		switch (c) {
		case 'u':
			free(user);
			user = strdup(optarg);
			if (!user)
				return 1;
			break;
		case 'P':
			password_stdin = true;
			break;
		case 'i':
			ro.insecure = true;
			break;
		case 'h':
			fputs(login_usage, stdout);
			return 0;
		default:
			fputs("Try 'imgfs login --help'.\n", stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fputs(login_usage, stderr);
		return 2;
	}
	host = argv[optind];
	if (startswith(host, "https://"))
		host += 8;
	else if (startswith(host, "http://"))
		host += 7;
	/* Normalise the registry name as a reference would (index.docker.io → docker.io). */
	if (asprintf(&probe, "%.*s/imgfs-login", (int)strcspn(host, "/"), host) < 0)
		return 1;
	if (parse_ref_arg(probe, &ref))
		return 2;
	if (!user && read_line(stdin, "Username: ", false, &user) < 0) {
		log_msg(LOG_ERR, "login: no user name given (use -u USER)");
		return 2;
	}
	if (read_line(stdin, password_stdin ? NULL : "Password: ", true, &password) < 0 ||
	    !password[0]) {
		log_msg(LOG_ERR, "login: no password given");
		return 2;
	}
	ro.username = user;
	ro.password = password;
	r = registry_new(ref, &ro, &reg);
	if (r >= 0)
		r = registry_ping(reg, &err);
	if (r < 0) {
		if (err.msg[0])
			log_msg(LOG_ERR, "login to %s failed: %s", ref->domain, err.msg);
		else
			log_errno(LOG_ERR, r, "login to %s failed", ref->domain);
		return 1;
	}
	r = auth_store(ref->domain, user, password, &store_err);
	if (r < 0) {
		log_error(LOG_ERR, r, &store_err, "cannot store credentials for %s", ref->domain);
		return 1;
	}
	printf("Login Succeeded\n");
	return 0;
}
