/* probe: run inside a container, reports what the container looks like from inside, one
 * "key: value" line each, in a fixed order, so that two runtimes can be diffed.
 *
 *   probe            the report (namespaces, ids, caps, seccomp, mounts, masks, fds, env)
 *   probe hog        allocates and touches memory until killed
 *   probe forks N    forks up to N sleeping children; prints how many it got; exit 0
 *   probe zombies    prints the number of zombie processes it can see
 *   probe open PATH [r|w|rw]
 *                    opens PATH (read-only by default); prints "open: ok" or the error
 *   probe devnode b|c MAJOR MINOR
 *                    mknods /dev/probe-node, opens it read-only, removes it; prints
 *                    "mknod: ok" or the error, then "open: ok" or the error
 *
 * Static, no dependencies: it must run in any rootfs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *const namespaces[] = {"cgroup", "ipc", "mnt", "net", "pid", "user", "uts"};
static const char *const masked[] = {
    "/proc/asound",      "/proc/acpi",          "/proc/interrupts", "/proc/kcore",
    "/proc/keys",        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
    "/proc/sched_debug", "/proc/scsi",          "/sys/firmware",    "/sys/devices/virtual/powercap",
};
static const char *const readonly[] = {
    "/proc/bus",           "/proc/fs", "/proc/irq",     "/proc/sys",
    "/proc/sysrq-trigger", "/sys",     "/sys/fs/cgroup"};

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void status_fields(void)
{
	static const char *const keys[] = {
	    "Uid:",    "Gid:",    "Groups:", "CapInh:",     "CapPrm:",
	    "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:", "Seccomp:"};
	char line[512];
	FILE *f = fopen("/proc/self/status", "r");

	if (!f) {
		printf("status: error %s\n", strerror(errno));
		return;
	}
	while (fgets(line, sizeof(line), f))
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (strncmp(line, keys[i], strlen(keys[i])) == 0) {
				char *v = line + strlen(keys[i]);

				v += strspn(v, " \t");
				v[strcspn(v, "\n")] = '\0';
				for (char *t = v; *t; t++)
					if (*t == '\t')
						*t = ' ';
				for (size_t l = strlen(v); l > 0 && v[l - 1] == ' '; l--)
					v[l - 1] = '\0';
				printf("status.%.*s: %s\n", (int)strlen(keys[i]) - 1, keys[i], v);
			}
	fclose(f);
}

/* Mount table without ids, device numbers and sources: mountpoint, fstype, mount options
 * and the relevant superblock options, sorted. */
static void mounts(void)
{
	char *lines[512], line[4096];
	size_t n = 0;
	FILE *f = fopen("/proc/self/mountinfo", "r");

	if (!f)
		return;
	while (n < 512 && fgets(line, sizeof(line), f)) {
		char mp[1024], opts[512], fstype[64], src[512], sopts[1024];
		const char *sep = strstr(line, " - ");
		char *out;

		if (!sep || sscanf(line, "%*s %*s %*s %*s %1023s %511s", mp, opts) != 2 ||
		    sscanf(sep + 3, "%63s %511s %1023s", fstype, src, sopts) != 3)
			continue;
		/* Only the options that say what a mount allows; size and the like vary. */
		char keep[256] = "";
		for (char *t = strtok(sopts, ","); t; t = strtok(NULL, ","))
			if (!strncmp(t, "mode=", 5) || !strncmp(t, "gid=", 4) ||
			    !strncmp(t, "ptmxmode=", 9) || !strcmp(t, "ro"))
				snprintf(keep + strlen(keep), sizeof(keep) - strlen(keep), ",%s",
				         t);
		if (asprintf(&out, "mount: %s %s %s%s", mp, fstype, opts, keep) < 0)
			break;
		lines[n++] = out;
	}
	fclose(f);
	qsort(lines, n, sizeof(*lines), cmp);
	for (size_t i = 0; i < n; i++) {
		puts(lines[i]);
		free(lines[i]);
	}
}

static void masks(void)
{
	for (size_t i = 0; i < sizeof(masked) / sizeof(masked[0]); i++) {
		struct stat st;
		const char *p = masked[i];

		if (lstat(p, &st) < 0) {
			printf("masked %s: absent\n", p);
		} else if (S_ISDIR(st.st_mode)) {
			DIR *d = opendir(p);
			int entries = 0;
			struct dirent *de;

			while (d && (de = readdir(d)))
				if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
					entries++;
			if (d)
				closedir(d);
			printf("masked %s: %s\n", p, d && !entries ? "empty" : "VISIBLE");
		} else {
			char buf[16];
			int fd = open(p, O_RDONLY);
			ssize_t r = fd < 0 ? -1 : read(fd, buf, sizeof(buf));

			if (fd >= 0)
				close(fd);
			printf("masked %s: %s\n", p, r > 0 ? "READABLE" : "empty");
		}
	}
	for (size_t i = 0; i < sizeof(readonly) / sizeof(readonly[0]); i++) {
		struct statvfs sv;

		if (statvfs(readonly[i], &sv) < 0)
			printf("readonly %s: absent\n", readonly[i]);
		else
			printf("readonly %s: %s\n", readonly[i],
			       sv.f_flag & ST_RDONLY ? "yes" : "NO");
	}
}

static void fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	char buf[256] = "";

	if (!d)
		return;
	while ((de = readdir(d)) && strlen(buf) < 200)
		if (de->d_name[0] != '.' && atoi(de->d_name) != dirfd(d))
			snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), " %.20s",
			         de->d_name);
	closedir(d);
	printf("fds:%s\n", buf);
}

static void report(void)
{
	char buf[4096];
	char *env[256];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(namespaces) / sizeof(namespaces[0]); i++) {
		char p[64];
		ssize_t l;

		snprintf(p, sizeof(p), "/proc/self/ns/%s", namespaces[i]);
		l = readlink(p, buf, sizeof(buf) - 1);
		buf[l < 0 ? 0 : l] = '\0';
		printf("ns.%s: %s\n", namespaces[i], buf);
	}
	printf("pid: %d\n", (int)getpid());
	gethostname(buf, sizeof(buf));
	printf("hostname: %s\n", buf);
	printf("cwd: %s\n", getcwd(buf, sizeof(buf)) ? buf : "?");
	printf("ids: uid=%d gid=%d euid=%d egid=%d\n", (int)getuid(), (int)getgid(), (int)geteuid(),
	       (int)getegid());
	status_fields();
	errno = 0;
	printf("seccomp.keyctl: %s\n",
	       syscall(SYS_keyctl, 0, 0, 0, 0, 0) < 0 ? strerror(errno) : "allowed");
	errno = 0;
	printf("seccomp.clone3: %s\n",
	       syscall(SYS_clone3, NULL, 0) < 0 ? strerror(errno) : "allowed");
	/* Docker's profile denies io_uring (EPERM); allowed, a NULL params gives EFAULT. */
	errno = 0;
	printf("seccomp.io_uring_setup: %s\n",
	       syscall(SYS_io_uring_setup, 1, NULL) < 0 ? strerror(errno) : "allowed");
	errno = 0;
	printf("seccomp.io_uring_enter: %s\n",
	       syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0) < 0 ? strerror(errno) : "allowed");
	errno = 0;
	printf("seccomp.io_uring_register: %s\n",
	       syscall(SYS_io_uring_register, -1, 0, NULL, 0) < 0 ? strerror(errno) : "allowed");
	for (char **e = environ; *e && n < 256; e++)
		env[n++] = *e;
	qsort(env, n, sizeof(*env), cmp);
	for (size_t i = 0; i < n; i++)
		printf("env: %s\n", env[i]);
	masks();
	fds();
	mounts();
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	if (argc > 1 && !strcmp(argv[1], "hog")) {
		for (;;) {
			char *p = malloc(1 << 20);

			if (!p)
				return 2;
			memset(p, 1, 1 << 20);
		}
	}
	if (argc > 2 && !strcmp(argv[1], "forks")) {
		static pid_t kids[4096];
		int want = atoi(argv[2]), got = 0;

		for (; got < want && got < 4096; got++) {
			pid_t p = fork();

			if (p < 0)
				break;
			if (p == 0) {
				pause();
				_exit(0);
			}
			kids[got] = p;
		}
		printf("forked: %d\n", got);
		for (int i = 0; i < got; i++) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
		}
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "zombies")) {
		DIR *d = opendir("/proc");
		struct dirent *de;
		int z = 0;

		while (d && (de = readdir(d))) {
			char p[300], st[512];
			FILE *f;

			if (!atoi(de->d_name))
				continue;
			snprintf(p, sizeof(p), "/proc/%s/stat", de->d_name);
			f = fopen(p, "r");
			if (f && fgets(st, sizeof(st), f)) {
				char *rp = strrchr(st, ')');
				if (rp && rp[1] == ' ' && rp[2] == 'Z')
					z++;
			}
			if (f)
				fclose(f);
		}
		printf("zombies: %d\n", z);
		return 0;
	}
	if (argc > 2 && !strcmp(argv[1], "open")) {
		const char *m = argc > 3 ? argv[3] : "r";
		int flags = !strcmp(m, "rw") ? O_RDWR : !strcmp(m, "w") ? O_WRONLY : O_RDONLY;
		int fd = open(argv[2], flags | O_NONBLOCK | O_NOCTTY);

		printf("open: %s\n", fd < 0 ? strerror(errno) : "ok");
		return 0;
	}
	if (argc > 4 && !strcmp(argv[1], "devnode")) {
		const char *node = "/dev/probe-node";
		mode_t type = argv[2][0] == 'b' ? S_IFBLK : S_IFCHR;
		int fd;

		unlink(node);
		if (mknod(node, type | 0600, makedev(atoi(argv[3]), atoi(argv[4]))) < 0) {
			printf("mknod: %s\n", strerror(errno));
			return 0;
		}
		printf("mknod: ok\n");
		fd = open(node, O_RDONLY | O_NONBLOCK | O_NOCTTY);
		printf("open: %s\n", fd < 0 ? strerror(errno) : "ok");
		unlink(node);
		return 0;
	}
	report();
	return 0;
}
