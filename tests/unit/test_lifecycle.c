/* The mount life cycle without FUSE or root: a daemon that serves nothing is started,
 * registered, found live by gc's walk, refused a second time, stopped (also through the
 * runtime link alone, as `imgfs umount` without --root does), killed and reaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "fsd/image/store.h"
#include "fsd/lifecycle.h"

struct fixture {
	char dir[64];
	char *mountpoint, *runtime, *root;
	struct store *s;
	char manifest[DIGEST_STR_LEN + 1];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/test_lifecycle.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->mountpoint = path_join(f->dir, "mnt");
	f->runtime = path_join(f->dir, "run");
	f->root = path_join(f->dir, "store");
	if (!f->mountpoint || !f->runtime || !f->root || mkdir(f->mountpoint, 0755) < 0)
		return -1;
	setenv("IMGFS_RUNTIME_DIR", f->runtime, 1);
	if (store_open(f->root, &f->s) < 0)
		return -1;
	sha256_buf("manifest", 8, f->manifest);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	store_free(f->s);
	rm_rf_at(AT_FDCWD, f->dir);
	free(f->mountpoint);
	free(f->runtime);
	free(f->root);
	free(f);
	return 0;
}

struct serve_args {
	struct fixture *f;
	bool upper_given;
	bool fail; /* return an error before registering */
};

/* A daemon that registers, says it is live and waits for a signal. */
static int serve(struct lifecycle *lc, void *userdata)
{
	struct serve_args *a = userdata;
	int r;

	if (a->fail)
		return -EIO;
	r = lifecycle_register(lc, &(struct mount_info){
	                               .manifest = a->f->manifest,
	                               .ref = "example.com/test:1",
	                               .mountpoint = a->f->mountpoint,
	                               .upper = a->upper_given ? "/nonexistent/upper" : NULL,
	                               .upper_given = a->upper_given,
	                               .ro = !a->upper_given,
	                           });
	if (r < 0)
		return r;
	lifecycle_ready(lc, -1);
	for (;;)
		pause();
}

static int start(struct fixture *f, struct serve_args *a)
{
	return lifecycle_start(f->s, &(struct lifecycle_opts){
	                                 .mountpoint = f->mountpoint,
	                                 .keep_work = a->upper_given,
	                                 .serve = serve,
	                                 .userdata = a,
	                             });
}

static char *mount_dir(struct fixture *f, const char *file)
{
	char name[LIFECYCLE_NAME_MAX], *p = NULL;

	lifecycle_name(f->mountpoint, name);
	assert_true(asprintf(&p, "mounts/%s%s%s", name, file ? "/" : "", file ? file : "") > 0);
	return p;
}

static bool exists_at(int dirfd, const char *rel)
{
	struct stat st;

	return fstatat(dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static pid_t daemon_pid(struct fixture *f)
{
	_cleanup_free_ char *state = mount_dir(f, "state"), *text = NULL;
	json_t *j;
	pid_t pid;

	assert_int_equal(read_file_full(f->s->root_fd, state, 1 << 16, &text, NULL), 0);
	j = json_loads(text, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "manifest")), f->manifest);
	assert_string_equal(json_string_value(json_object_get(j, "mountpoint")), f->mountpoint);
	pid = (pid_t)json_integer_value(json_object_get(j, "pid"));
	json_decref(j);
	assert_true(pid > 0);
	return pid;
}

static int count_live(const char *manifest, void *userdata)
{
	int *n = userdata;

	(void)manifest;
	(*n)++;
	return 0;
}

static int live_mounts(struct fixture *f)
{
	int n = 0;

	assert_int_equal(lifecycle_for_each_live(f->s, count_live, &n), 0);
	return n;
}

static bool alive(pid_t pid)
{
	/* Reap it if it is our zombie; a zombie still answers kill(0). */
	(void)waitpid(pid, NULL, WNOHANG);
	return kill(pid, 0) == 0;
}

static void test_name(void **state)
{
	char a[LIFECYCLE_NAME_MAX], b[LIFECYCLE_NAME_MAX], c[LIFECYCLE_NAME_MAX];

	(void)state;
	lifecycle_name("/srv/a b/rootfs", a);
	lifecycle_name("/srv/ab/rootfs", b);
	lifecycle_name("/", c);
	assert_string_not_equal(a, b);
	assert_int_equal(strlen(a), 12 + 1 + strlen("rootfs"));
	assert_string_equal(a + 13, "rootfs");
	assert_string_equal(c + 13, "root");
	lifecycle_name("/x/\n../..", a);
	assert_null(strchr(a, '/'));
	assert_null(strchr(a, '\n'));
}

static void test_start_stop(void **state)
{
	struct fixture *f = *state;
	struct serve_args a = {.f = f};
	_cleanup_free_ char *dir = mount_dir(f, NULL), *log = mount_dir(f, "log");
	char name[LIFECYCLE_NAME_MAX], link[512];
	pid_t pid;

	assert_int_equal(start(f, &a), 0);
	pid = daemon_pid(f);
	assert_true(alive(pid));
	assert_true(exists_at(f->s->root_fd, log));
	assert_int_equal(live_mounts(f), 1);
	lifecycle_name(f->mountpoint, name);
	snprintf(link, sizeof(link), "%s/mounts/%s", f->runtime, name);
	assert_true(exists_at(AT_FDCWD, link));

	/* A second daemon for the same mountpoint is refused; the first keeps its state. */
	assert_true(start(f, &a) < 0);
	assert_int_equal(daemon_pid(f), pid);
	assert_true(alive(pid));

	/* Not mounted (no FUSE here), so the stop ends the daemon with SIGTERM. */
	assert_int_equal(lifecycle_stop(f->s, f->mountpoint), 0);
	assert_false(alive(pid));
	assert_false(exists_at(f->s->root_fd, dir));
	assert_false(exists_at(AT_FDCWD, link));
	assert_int_equal(live_mounts(f), 0);
	assert_int_equal(lifecycle_stop(f->s, f->mountpoint), -ENOENT);
}

/* `imgfs umount` with no --root, or another one: the runtime link leads to the store. */
static void test_stop_without_store(void **state)
{
	struct fixture *f = *state;
	struct serve_args a = {.f = f};
	_cleanup_free_ char *dir = mount_dir(f, NULL);
	pid_t pid;

	assert_int_equal(start(f, &a), 0);
	pid = daemon_pid(f);
	assert_int_equal(lifecycle_stop(NULL, f->mountpoint), 0);
	assert_false(alive(pid));
	assert_false(exists_at(f->s->root_fd, dir));
}

/* A daemon that fails before it registers leaves nothing behind. */
static void test_start_fails(void **state)
{
	struct fixture *f = *state;
	struct serve_args a = {.f = f, .fail = true};
	_cleanup_free_ char *dir = mount_dir(f, NULL);

	assert_true(start(f, &a) < 0);
	assert_false(exists_at(f->s->root_fd, dir));
	assert_int_equal(live_mounts(f), 0);
}

/* A killed daemon: nothing it used is live any more; gc's reap removes its directory, but
 * keeps one whose kept upper has copy-ups pending in work/. */
static void test_dead_daemon_reaped(void **state)
{
	struct fixture *f = *state;
	struct serve_args a = {.f = f};
	_cleanup_free_ char *dir = mount_dir(f, NULL), *work = mount_dir(f, "work/pending");
	unsigned removed = 0;
	pid_t pid;

	assert_int_equal(start(f, &a), 0);
	pid = daemon_pid(f);
	assert_int_equal(kill(pid, SIGKILL), 0);
	while (alive(pid))
		usleep(1000);
	assert_int_equal(live_mounts(f), 0);
	assert_int_equal(lifecycle_reap(f->s, &removed), 0);
	assert_int_equal(removed, 1);
	assert_false(exists_at(f->s->root_fd, dir));

	a.upper_given = true;
	assert_int_equal(start(f, &a), 0);
	pid = daemon_pid(f);
	assert_int_equal(mkdir_p_at(f->s->root_fd, work, 0700), 0);
	/* Alive: not reaped. */
	assert_int_equal(lifecycle_reap(f->s, &removed), 0);
	assert_int_equal(removed, 0);
	assert_int_equal(kill(pid, SIGKILL), 0);
	while (alive(pid))
		usleep(1000);
	assert_int_equal(lifecycle_reap(f->s, &removed), 0);
	assert_int_equal(removed, 0);
	assert_true(exists_at(f->s->root_fd, work));
	/* The next mount of that upper takes the directory over, work/ included. */
	assert_int_equal(start(f, &a), 0);
	assert_true(exists_at(f->s->root_fd, work));
	assert_int_equal(lifecycle_stop(f->s, f->mountpoint), 0);
	assert_false(exists_at(f->s->root_fd, dir));
}

/* What `imgfs status` shows: live with the daemon's pid, then dead, then nothing. */
static void test_status(void **state)
{
	struct fixture *f = *state;
	struct serve_args a = {.f = f};
	struct mount_status st;
	pid_t pid;

	assert_int_equal(lifecycle_status(f->s, f->mountpoint, &st), -ENOENT);
	assert_int_equal(start(f, &a), 0);
	pid = daemon_pid(f);
	/* Found through the runtime link alone, as for umount. */
	assert_int_equal(lifecycle_status(NULL, f->mountpoint, &st), 0);
	assert_true(st.alive);
	assert_false(st.mounted);
	assert_int_equal(st.pid, pid);
	assert_string_equal(st.manifest, f->manifest);
	assert_string_equal(st.ref, "example.com/test:1");
	assert_string_equal(st.mountpoint, f->mountpoint);
	assert_null(st.upper);
	assert_true(st.ro);
	mount_status_done(&st);

	assert_int_equal(kill(pid, SIGKILL), 0);
	while (alive(pid))
		usleep(1000);
	assert_int_equal(lifecycle_status(f->s, f->mountpoint, &st), 0);
	assert_false(st.alive);
	assert_int_equal(st.pid, 0);
	assert_string_equal(st.manifest, f->manifest);
	mount_status_done(&st);
	assert_int_equal(lifecycle_stop(f->s, f->mountpoint), 0);
	assert_int_equal(lifecycle_status(f->s, f->mountpoint, &st), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_name),
	    cmocka_unit_test_setup_teardown(test_start_stop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stop_without_store, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_start_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dead_daemon_reaped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_status, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
