/* The OCI-layout store in a temporary directory: layout, refs (also under concurrent
 * writers), verified blobs, partial downloads, gc, and leftovers of a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "fsd/image/spans.h"
#include "fsd/image/store.h"

struct fixture {
	char dir[64];
	struct store *s;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	strcpy(f->dir, "/tmp/test_store.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	if (store_open(f->dir, &f->s) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	store_free(f->s);
	rm_rf_at(AT_FDCWD, f->dir);
	free(f);
	return 0;
}

static bool exists(struct fixture *f, const char *rel)
{
	struct stat st;

	return fstatat(f->s->root_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static unsigned count_entries(struct fixture *f, const char *rel)
{
	_cleanup_close_ int fd = openat(f->s->root_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	unsigned n = 0;

	assert_true(fd >= 0);
	d = fdopendir(TAKE_FD(fd));
	assert_non_null(d);
	while ((de = readdir(d)))
		if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static json_t *load_index(struct fixture *f)
{
	_cleanup_free_ char *buf = NULL;
	json_error_t err;

	assert_int_equal(read_file_full(f->s->root_fd, "index.json", 1 << 20, &buf, NULL), 0);
	return json_loads(buf, JSON_REJECT_DUPLICATES, &err);
}

/* Stores buf as a blob and returns its digest in out. */
static void put(struct fixture *f, const char *buf, char out[DIGEST_STR_LEN + 1])
{
	sha256_buf(buf, strlen(buf), out);
	assert_int_equal(store_put_blob(f->s, out, buf, strlen(buf)), 0);
}

static struct descriptor desc_of(const char *digest, size_t size)
{
	return (struct descriptor){
	    .media_type = (char *)MT_OCI_MANIFEST, .digest = (char *)digest, .size = size};
}

static void test_layout(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *layout = NULL;
	json_auto_t *idx = load_index(f);
	struct store *again = NULL;

	assert_int_equal(read_file_full(f->s->root_fd, "oci-layout", 4096, &layout, NULL), 0);
	assert_string_equal(layout, "{\"imageLayoutVersion\":\"1.0.0\"}");
	assert_non_null(idx);
	assert_int_equal(json_integer_value(json_object_get(idx, "schemaVersion")), 2);
	assert_string_equal(json_string_value(json_object_get(idx, "mediaType")), MT_OCI_INDEX);
	assert_int_equal(json_array_size(json_object_get(idx, "manifests")), 0);
	assert_true(exists(f, "blobs/sha256"));
	assert_true(exists(f, "idx/sha256"));
	assert_true(exists(f, "trees/sha256"));
	assert_true(exists(f, "mounts"));
	assert_true(exists(f, "tmp"));
	/* Reopening keeps what is there. */
	assert_int_equal(store_open(f->dir, &again), 0);
	store_free(again);
}

static void test_refs(void **state)
{
	struct fixture *f = *state;
	char d1[DIGEST_STR_LEN + 1], d2[DIGEST_STR_LEN + 1];
	struct descriptor got = {0};
	struct store_ref *refs = NULL;
	size_t n = 0;

	put(f, "{\"one\":1}", d1);
	put(f, "{\"two\":2}", d2);
	assert_int_equal(store_ref_get(f->s, "docker.io/library/busybox:latest", &got), -ENOENT);
	assert_int_equal(
	    store_ref_set(f->s, "docker.io/library/busybox:latest",
	                  &(struct descriptor){
	                      .media_type = (char *)MT_DOCKER_MANIFEST, .digest = d1, .size = 9}),
	    0);
	assert_int_equal(store_ref_set(f->s, "127.0.0.1:5000/test/busybox:latest",
	                               &(struct descriptor){.media_type = (char *)MT_OCI_MANIFEST,
	                                                    .digest = d2,
	                                                    .size = 9}),
	                 0);
	assert_int_equal(store_ref_get(f->s, "docker.io/library/busybox:latest", &got), 0);
	assert_string_equal(got.digest, d1);
	assert_string_equal(got.media_type, MT_DOCKER_MANIFEST);
	assert_int_equal(got.size, 9);
	descriptor_clear(&got);

	/* Replacing a ref keeps one entry, in its place. */
	assert_int_equal(store_ref_set(f->s, "docker.io/library/busybox:latest",
	                               &(struct descriptor){.media_type = (char *)MT_OCI_MANIFEST,
	                                                    .digest = d2,
	                                                    .size = 9}),
	                 0);
	assert_int_equal(store_ref_list(f->s, &refs, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(refs[0].name, "docker.io/library/busybox:latest");
	assert_string_equal(refs[0].desc.digest, d2);
	assert_string_equal(refs[1].name, "127.0.0.1:5000/test/busybox:latest");
	store_refs_free(refs, n);

	{
		json_auto_t *idx = load_index(f);
		json_t *e = json_array_get(json_object_get(idx, "manifests"), 1);
		json_t *ann = json_object_get(e, "annotations");

		assert_string_equal(
		    json_string_value(json_object_get(ann, "org.opencontainers.image.ref.name")),
		    "127.0.0.1:5000/test/busybox:latest");
		assert_null(json_object_get(ann, "io.imgfs.ref.name"));
		assert_string_equal(json_string_value(json_object_get(e, "digest")), d2);
	}

	assert_int_equal(store_ref_remove(f->s, "docker.io/library/busybox:latest"), 0);
	assert_int_equal(store_ref_remove(f->s, "docker.io/library/busybox:latest"), -ENOENT);
	assert_int_equal(store_ref_get(f->s, "docker.io/library/busybox:latest", &got), -ENOENT);
	assert_int_equal(store_ref_list(f->s, &refs, &n), 0);
	assert_int_equal(n, 1);
	store_refs_free(refs, n);

	/* Invalid input changes nothing. */
	assert_int_equal(store_ref_set(f->s, "",
	                               &(struct descriptor){.media_type = (char *)MT_OCI_MANIFEST,
	                                                    .digest = d1,
	                                                    .size = 1}),
	                 -EINVAL);
	assert_int_equal(store_ref_set(f->s, "x",
	                               &(struct descriptor){.media_type = (char *)MT_OCI_MANIFEST,
	                                                    .digest = (char *)"sha512:00",
	                                                    .size = 1}),
	                 -EINVAL);
	assert_int_equal(store_ref_set(f->s, "a\nb",
	                               &(struct descriptor){.media_type = (char *)MT_OCI_MANIFEST,
	                                                    .digest = d1,
	                                                    .size = 1}),
	                 -EINVAL);
}

/* Names that cannot be an OCI ref.name are stored under an alias and found by name. */
static void test_ref_alias(void **state)
{
	struct fixture *f = *state;
	char d1[DIGEST_STR_LEN + 1];
	struct descriptor got = {0};
	_cleanup_free_ char *alias = NULL;
	const char *name = "/srv/images/alpine-minirootfs.tar.gz";

	put(f, "{\"x\":1}", d1);
	assert_int_equal(store_ref_set(f->s, name,
	                               &(struct descriptor){.media_type = (char *)MT_OCI_MANIFEST,
	                                                    .digest = d1,
	                                                    .size = 7}),
	                 0);
	assert_int_equal(store_ref_get(f->s, name, &got), 0);
	assert_string_equal(got.digest, d1);
	descriptor_clear(&got);
	assert_int_equal(store_ref_annotation(name, &alias), 0);
	assert_true(store_ref_name_valid(alias));
	assert_true(startswith(alias, "srv-images-alpine-minirootfs-tar-gz-"));
	assert_int_equal(strlen(alias), strlen("srv-images-alpine-minirootfs-tar-gz-") + 16);
	{
		json_auto_t *idx = load_index(f);
		json_t *ann = json_object_get(json_array_get(json_object_get(idx, "manifests"), 0),
		                              "annotations");

		assert_string_equal(
		    json_string_value(json_object_get(ann, "org.opencontainers.image.ref.name")),
		    alias);
		assert_string_equal(json_string_value(json_object_get(ann, "io.imgfs.ref.name")),
		                    name);
	}
	/* The alias itself is not the name. */
	assert_int_equal(store_ref_get(f->s, alias, &got), -ENOENT);
	assert_int_equal(store_ref_remove(f->s, name), 0);
}

static void test_ref_name_grammar(void **state)
{
	static const char *const ok[] = {"docker.io/library/busybox:latest",
	                                 "127.0.0.1:5000/test/busybox:latest",
	                                 "localhost:5000/a/b@sha256:0123",
	                                 "a--b",
	                                 "x+y",
	                                 "latest",
	                                 "A/B"};
	static const char *const bad[] = {"",
	                                  "[::1]:5000/x:latest",
	                                  "docker.io/a__b/c:1",
	                                  "oci:/abs:tag",
	                                  "/abs/path",
	                                  "a..b",
	                                  "-a",
	                                  ".a",
	                                  "a/",
	                                  "a//b",
	                                  "a---b",
	                                  "a b",
	                                  "a_"};
	_cleanup_free_ char *a1 = NULL, *a2 = NULL, *a3 = NULL;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(ok); i++)
		if (!store_ref_name_valid(ok[i]))
			fail_msg("'%s' rejected", ok[i]);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (store_ref_name_valid(bad[i]))
			fail_msg("'%s' accepted", bad[i]);
	assert_int_equal(store_ref_annotation("docker.io/library/busybox:latest", &a1), 0);
	assert_string_equal(a1, "docker.io/library/busybox:latest");
	/* Names that differ only in punctuation get different aliases. */
	assert_int_equal(store_ref_annotation("/a/b.tar", &a2), 0);
	assert_int_equal(store_ref_annotation("/a.b/tar", &a3), 0);
	assert_string_not_equal(a2, a3);
	assert_true(store_ref_name_valid(a2));
	assert_true(store_ref_name_valid(a3));
	free(a1);
	a1 = NULL;
	assert_int_equal(store_ref_annotation("///", &a1), 0);
	assert_true(store_ref_name_valid(a1));
	assert_int_equal(strlen(a1), 16);
}

/* Entries of other tools: kept, known by their ref.name, replaced when a ref of ours
 * claims the same ref.name. */
static void test_foreign_entries(void **state)
{
	struct fixture *f = *state;
	char d1[DIGEST_STR_LEN + 1], d2[DIGEST_STR_LEN + 1];
	_cleanup_free_ char *idx = NULL;
	struct store_ref *refs = NULL;
	size_t n = 0;

	put(f, "{\"a\":1}", d1);
	put(f, "{\"b\":2}", d2);
	assert_true(asprintf(&idx,
	                     "{\"schemaVersion\":2,\"manifests\":["
	                     "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":7},"
	                     "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":7,\"annotations\":{"
	                     "\"org.opencontainers.image.ref.name\":\"v1\"}},"
	                     "{\"mediaType\":\"%s\",\"digest\":\"sha512:00\",\"size\":7,"
	                     "\"annotations\":{\"org.opencontainers.image.ref.name\":\"odd\"}}]}",
	                     MT_OCI_MANIFEST, d1, MT_OCI_MANIFEST, d2, MT_OCI_MANIFEST) > 0);
	assert_int_equal(write_file_atomic(f->s->root_fd, "index.json", idx, strlen(idx), 0644), 0);
	assert_int_equal(store_ref_list(f->s, &refs, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(refs[0].name, "v1");
	store_refs_free(refs, n);
	assert_int_equal(store_ref_set(f->s, "v1",
	                               &(struct descriptor){.media_type = (char *)MT_OCI_MANIFEST,
	                                                    .digest = d1,
	                                                    .size = 7}),
	                 0);
	{
		json_auto_t *j = load_index(f);
		json_t *m = json_object_get(j, "manifests");

		assert_int_equal(json_array_size(m), 3);
		assert_string_equal(
		    json_string_value(json_object_get(json_array_get(m, 1), "digest")), d1);
		assert_string_equal(
		    json_string_value(json_object_get(json_array_get(m, 2), "digest")),
		    "sha512:00");
	}
}

#define N_PROCS 6
#define N_REFS 15

static void test_concurrent_refs(void **state)
{
	struct fixture *f = *state;
	char d1[DIGEST_STR_LEN + 1];
	struct store_ref *refs = NULL;
	size_t n = 0;
	pid_t pids[N_PROCS];

	put(f, "{\"c\":1}", d1);
	for (int p = 0; p < N_PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] == 0) {
			struct store *s = NULL;

			/* Each child has its own store handle, as separate imgfs processes do. */
			if (store_open(f->dir, &s) < 0)
				_exit(1);
			for (int i = 0; i < N_REFS; i++) {
				char name[64];
				struct descriptor d = desc_of(d1, 7);

				snprintf(name, sizeof(name), "example.com/p%d/img:t%d", p, i);
				if (store_ref_set(s, name, &d) < 0)
					_exit(2);
			}
			store_free(s);
			_exit(0);
		}
	}
	for (int p = 0; p < N_PROCS; p++) {
		int status;

		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(store_ref_list(f->s, &refs, &n), 0);
	assert_int_equal(n, N_PROCS * N_REFS);
	store_refs_free(refs, n);
	for (int p = 0; p < N_PROCS; p++)
		for (int i = 0; i < N_REFS; i++) {
			char name[64];
			struct descriptor got = {0};

			snprintf(name, sizeof(name), "example.com/p%d/img:t%d", p, i);
			assert_int_equal(store_ref_get(f->s, name, &got), 0);
			descriptor_clear(&got);
		}
}

static void test_blobs(void **state)
{
	struct fixture *f = *state;
	static const char body[] = "{\"schemaVersion\":2}";
	char d[DIGEST_STR_LEN + 1], other[DIGEST_STR_LEN + 1], path[128];
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	int fd = -1;

	sha256_buf(body, strlen(body), d);
	sha256_buf("something else", 14, other);
	/* A mismatch stores nothing, not even a temporary file. */
	assert_int_equal(store_put_blob(f->s, other, body, strlen(body)), -EBADMSG);
	assert_false(store_has_blob(f->s, other));
	assert_int_equal(count_entries(f, "blobs/sha256"), 0);
	assert_int_equal(store_put_blob(f->s, "sha256:abc", body, strlen(body)), -EINVAL);
	assert_int_equal(store_put_blob(f->s, d, body, strlen(body)), 0);
	assert_int_equal(store_put_blob(f->s, d, body, strlen(body)), 0);
	assert_true(store_has_blob(f->s, d));
	assert_int_equal(count_entries(f, "blobs/sha256"), 1);
	assert_int_equal(store_read_blob(f->s, d, 1024, &buf, &len), 0);
	assert_int_equal(len, strlen(body));
	assert_memory_equal(buf, body, len);
	free(buf);
	buf = NULL;
	assert_int_equal(store_read_blob(f->s, d, 4, &buf, &len), -EFBIG);
	assert_int_equal(store_read_blob(f->s, other, 1024, &buf, &len), -ENOENT);
	assert_int_equal(store_open_blob(f->s, d, &fd), 0);
	assert_true(fd >= 0);
	close(fd);
	/* Corruption on disk is noticed when the blob is read. */
	assert_non_null(store_path("blobs", d, path, sizeof(path)));
	assert_string_equal(path + 13, d + 7);
	assert_int_equal(write_file_atomic(f->s->root_fd, path, "{\"schemaVersion\":3}", 19, 0644),
	                 0);
	assert_int_equal(store_read_blob(f->s, d, 1024, &buf, &len), -EBADMSG);
	assert_null(buf);
	assert_null(store_path("blobs", "sha256:xyz", path, sizeof(path)));
	assert_string_equal(path, "");
}

/* What a lazy mount needs of a layer: its index and span table stored together; either
 * the blob or the table makes the index enough. */
static void test_lazy_index(void **state)
{
	struct fixture *f = *state;
	static const char index[] = "an index of the layer";
	const size_t size = 2 * SPANS_MIN_SIZE + 100;
	_cleanup_(spans_freep) struct spans *sp = NULL, *back = NULL;
	_cleanup_free_ void *table = NULL, *stored = NULL;
	_cleanup_free_ char *layer = malloc(size), *got = NULL;
	_cleanup_close_ int fd = -1;
	char d[DIGEST_STR_LEN + 1], path[160];
	size_t table_len = 0, stored_len = 0, got_len = 0;
	struct error err = {""};

	assert_non_null(layer);
	for (size_t i = 0; i < size; i++)
		layer[i] = (char)(i * 7 + i / 251);
	sha256_buf(layer, size, d);
	fd = memfd_create("layer", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, layer, size), (ssize_t)size);
	assert_int_equal(spans_compute(fd, d, size, SPANS_MIN_SIZE, &sp), 0);
	assert_int_equal(sp->n_spans, 3);
	assert_false(store_has_lazy_index(f->s, d));

	assert_int_equal(store_put_lazy_index(f->s, d, index, strlen(index), sp, &err), 0);
	assert_string_equal(err.msg, "");
	assert_true(store_has_lazy_index(f->s, d));
	assert_false(store_has_blob(f->s, d));
	assert_int_equal(store_read_index(f->s, d, 1024, &got, &got_len), 0);
	assert_int_equal(got_len, strlen(index));
	assert_memory_equal(got, index, got_len);
	assert_int_equal(store_read_spans(f->s, d, &stored, &stored_len), 0);
	assert_int_equal(spans_parse(stored, stored_len, d, size, &back, NULL), 0);
	assert_int_equal(back->n_spans, 3);
	assert_true(spans_check(back, 1, layer + SPANS_MIN_SIZE, SPANS_MIN_SIZE));
	assert_false(spans_check(back, 1, layer, SPANS_MIN_SIZE));

	/* The index alone is not enough; with the blob it is. */
	assert_non_null(store_path("idx", d, path, sizeof(path)));
	strcat(path, ".spans");
	assert_int_equal(unlinkat(f->s->root_fd, path, 0), 0);
	assert_false(store_has_lazy_index(f->s, d));
	assert_int_equal(store_put_blob(f->s, d, layer, size), 0);
	assert_true(store_has_lazy_index(f->s, d));

	/* The encoded form is stored as given; a failure names the layer. */
	assert_int_equal(spans_encode(sp, &table, &table_len), 0);
	assert_int_equal(
	    store_put_lazy_index_encoded(f->s, d, index, strlen(index), table, table_len, &err), 0);
	free(stored);
	stored = NULL;
	assert_int_equal(store_read_spans(f->s, d, &stored, &stored_len), 0);
	assert_int_equal(stored_len, table_len);
	assert_memory_equal(stored, table, table_len);
	assert_int_equal(store_put_lazy_index_encoded(f->s, "sha256:abc", index, strlen(index),
	                                              table, table_len, &err),
	                 -EINVAL);
	assert_non_null(strstr(err.msg, "cannot store the index of sha256:abc"));
}

static void test_partial_resume(void **state)
{
	struct fixture *f = *state;
	char d[DIGEST_STR_LEN + 1];
	uint64_t size = 99;
	int fd = -1;
	static const char data[] = "0123456789abcdef";

	sha256_buf(data, 16, d);
	assert_int_equal(store_open_partial(f->s, d, &fd, &size), 0);
	assert_int_equal(size, 0);
	assert_int_equal(write_full(fd, data, 10), 0);
	close(fd); /* an interrupted pull */
	assert_true(exists(f, "tmp/") && count_entries(f, "tmp") == 1);
	assert_false(store_has_blob(f->s, d));

	assert_int_equal(store_open_partial(f->s, d, &fd, &size), 0);
	assert_int_equal(size, 10);
	assert_true(lseek(fd, (off_t)size, SEEK_SET) == 10);
	assert_int_equal(write_full(fd, data + 10, 6), 0);
	assert_int_equal(store_commit_partial(f->s, d, fd), 0);
	close(fd);
	assert_true(store_has_blob(f->s, d));
	assert_int_equal(count_entries(f, "tmp"), 0);

	/* Discarding after a mismatch. */
	assert_int_equal(store_open_partial(f->s, d, &fd, &size), 0);
	assert_int_equal(size, 0);
	assert_int_equal(store_discard_partial(f->s, d), 0);
	assert_int_equal(store_discard_partial(f->s, d), 0);
	close(fd);
	assert_int_equal(count_entries(f, "tmp"), 0);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Two pulls of the same blob: the second waits for the first, then sees the blob. */
static void test_partial_serialised(void **state)
{
	struct fixture *f = *state;
	static const char data[] = "layer bytes";
	char d[DIGEST_STR_LEN + 1], c;
	int pfd[2], fd = -1, status;
	uint64_t size = 0;
	double t0;
	pid_t pid;

	sha256_buf(data, strlen(data), d);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct store *s = NULL;
		int cfd = -1;
		uint64_t have;

		if (store_open(f->dir, &s) < 0 || store_open_partial(s, d, &cfd, &have) < 0)
			_exit(1);
		if (write(pfd[1], "x", 1) != 1)
			_exit(2);
		usleep(300 * 1000);
		if (write_full(cfd, data, strlen(data)) < 0 || store_commit_partial(s, d, cfd) < 0)
			_exit(3);
		store_free(s);
		_exit(0);
	}
	close(pfd[1]);
	assert_int_equal(read(pfd[0], &c, 1), 1);
	close(pfd[0]);
	t0 = now();
	assert_int_equal(store_open_partial(f->s, d, &fd, &size), 0);
	assert_true(now() - t0 > 0.2);
	assert_true(store_has_blob(f->s, d));
	assert_int_equal(size, 0);
	assert_int_equal(store_discard_partial(f->s, d), 0);
	close(fd);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(count_entries(f, "tmp"), 0);
}

struct image {
	char config[DIGEST_STR_LEN + 1];
	char layer[DIGEST_STR_LEN + 1];
	char manifest[DIGEST_STR_LEN + 1];
};

/* A manifest with a config and one (fake) layer blob, its idx files and tree. */
static void make_image(struct fixture *f, const char *tag, struct image *img)
{
	_cleanup_free_ char *config = NULL, *layer = NULL, *manifest = NULL;
	char path[160];

	assert_true(asprintf(&config,
	                     "{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"%s\"}",
	                     tag) > 0);
	assert_true(asprintf(&layer, "\x1f\x8b layer of %s", tag) > 0);
	put(f, config, img->config);
	put(f, layer, img->layer);
	assert_true(
	    asprintf(&manifest,
	             "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\","
	             "\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":\"application/"
	             "vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"%s\",\"size\":%zu}]}",
	             MT_OCI_MANIFEST, MT_OCI_CONFIG, img->config, strlen(config), img->layer,
	             strlen(layer)) > 0);
	put(f, manifest, img->manifest);
	store_path("idx", img->layer, path, sizeof(path));
	assert_int_equal(write_file_atomic(f->s->root_fd, path, "idx", 3, 0644), 0);
	strcat(path, ".zst");
	assert_int_equal(write_file_atomic(f->s->root_fd, path, "zst", 3, 0644), 0);
	store_path("trees", img->manifest, path, sizeof(path));
	assert_int_equal(write_file_atomic(f->s->root_fd, path, "tree", 4, 0644), 0);
}

static bool image_present(struct fixture *f, const struct image *img)
{
	char path[160];
	bool all = true;

	all &= store_has_blob(f->s, img->config) && store_has_blob(f->s, img->layer) &&
	       store_has_blob(f->s, img->manifest);
	store_path("idx", img->layer, path, sizeof(path));
	all &= exists(f, path);
	strcat(path, ".zst");
	all &= exists(f, path);
	store_path("trees", img->manifest, path, sizeof(path));
	all &= exists(f, path);
	return all;
}

static bool image_gone(struct fixture *f, const struct image *img)
{
	char path[160];
	bool none = true;

	none &= !store_has_blob(f->s, img->config) && !store_has_blob(f->s, img->layer) &&
	        !store_has_blob(f->s, img->manifest);
	store_path("idx", img->layer, path, sizeof(path));
	none &= !exists(f, path);
	strcat(path, ".zst");
	none &= !exists(f, path);
	store_path("trees", img->manifest, path, sizeof(path));
	none &= !exists(f, path);
	return none;
}

/* The manifest a live mount uses in test_gc, or NULL. */
static const char *live_root;

static int live_roots(struct store *s, int (*keep)(const char *digest, void *ctx), void *ctx)
{
	(void)s;
	return live_root ? keep(live_root, ctx) : 0;
}

static void test_gc(void **state)
{
	struct fixture *f = *state;
	struct image ref_img, lone, live, dead, child;
	char index_digest[DIGEST_STR_LEN + 1], part_locked[DIGEST_STR_LEN + 1],
	    part_free[DIGEST_STR_LEN + 1];
	_cleanup_free_ char *index = NULL;
	struct descriptor d;
	int pfd = -1, pfd2 = -1;
	unsigned removed = 0;
	uint64_t bytes = 0, size;

	make_image(f, "ref", &ref_img);
	make_image(f, "lone", &lone);
	make_image(f, "live", &live);
	make_image(f, "dead", &dead);
	make_image(f, "child", &child);
	/* An index ref keeps its child manifests. */
	assert_true(asprintf(&index,
	                     "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":[{"
	                     "\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":1,\"platform\":{"
	                     "\"os\":\"linux\",\"architecture\":\"amd64\"}}]}",
	                     MT_OCI_INDEX, MT_OCI_MANIFEST, child.manifest) > 0);
	put(f, index, index_digest);

	d = desc_of(ref_img.manifest, 1);
	assert_int_equal(store_ref_set(f->s, "docker.io/library/ref:latest", &d), 0);
	d = (struct descriptor){
	    .media_type = (char *)MT_OCI_INDEX, .digest = index_digest, .size = strlen(index)};
	assert_int_equal(store_ref_set(f->s, "docker.io/library/multi:latest", &d), 0);
	/* A live mount's manifest reaches gc through the roots callback; a mount's state
	 * in mounts/ is not gc's business. */
	assert_int_equal(write_file_atomic(f->s->root_fd, "mounts/m2", "{}", 2, 0644), 0);
	live_root = live.manifest;
	sha256_buf("p1", 2, part_locked);
	sha256_buf("p2", 2, part_free);
	assert_int_equal(store_open_partial(f->s, part_locked, &pfd, &size), 0);
	assert_int_equal(store_open_partial(f->s, part_free, &pfd2, &size), 0);
	close(pfd2);
	assert_int_equal(write_file_atomic(f->s->root_fd, "tmp/junk.zst.123", "z", 1, 0644), 0);
	assert_int_equal(
	    write_file_atomic(f->s->root_fd, "blobs/sha256/.stray.tmp-1-2", "s", 1, 0644), 0);

	assert_int_equal(store_gc(f->s, live_roots, &removed, &bytes), 0);
	assert_true(image_present(f, &ref_img));
	assert_true(image_present(f, &child));
	assert_true(store_has_blob(f->s, index_digest));
	assert_true(image_present(f, &live));
	assert_true(image_gone(f, &lone));
	assert_true(image_gone(f, &dead));
	assert_true(exists(f, "mounts/m2")); /* gc never touches mounts/ */
	assert_true(exists(f, "tmp/"
	                      "") &&
	            count_entries(f, "tmp") == 1);
	{
		char path[128];

		snprintf(path, sizeof(path), "tmp/%s.partial", part_locked + 7);
		assert_true(exists(f, path));
	}
	assert_false(exists(f, "blobs/sha256/.stray.tmp-1-2"));
	/* lone and dead: 3 blobs + 2 idx + 1 tree each; a partial, junk and a stray tmp. */
	assert_int_equal(removed, 2 * 6 + 3);
	assert_true(bytes > 0);

	/* Once the mount ends its image goes too, unless a ref holds it. */
	live_root = NULL;
	close(pfd);
	assert_int_equal(store_gc(f->s, live_roots, &removed, NULL), 0);
	assert_true(image_gone(f, &live));
	assert_true(image_present(f, &ref_img));
	assert_int_equal(count_entries(f, "tmp"), 0);
	assert_int_equal(removed, 6 + 1);
	/* A second gc finds nothing. */
	assert_int_equal(store_gc(f->s, NULL, &removed, &bytes), 0);
	assert_int_equal(removed, 0);
	assert_int_equal(bytes, 0);
}

/* A crash leaves temporary files; readers ignore them. */
static void test_crash_leftovers(void **state)
{
	struct fixture *f = *state;
	char d1[DIGEST_STR_LEN + 1], stray[160];
	struct store_ref *refs = NULL;
	struct descriptor got = {0};
	struct descriptor d;
	size_t n = 0;
	uint64_t size = 1;
	int fd = -1;

	put(f, "{\"k\":1}", d1);
	d = desc_of(d1, 7);
	assert_int_equal(store_ref_set(f->s, "docker.io/library/k:1", &d), 0);
	/* An index.json rewrite and a blob write that never reached their rename. */
	assert_int_equal(
	    write_file_atomic(f->s->root_fd, ".index.json.tmp-999-1", "{\"manifests\":[", 14, 0644),
	    0);
	snprintf(stray, sizeof(stray), "blobs/sha256/.%s.tmp-999-2",
	         "0000000000000000000000000000000000000000000000000000000000000000");
	assert_int_equal(write_file_atomic(f->s->root_fd, stray, "half", 4, 0644), 0);
	assert_int_equal(write_file_atomic(f->s->root_fd, "tmp/leftover.tmp", "x", 1, 0644), 0);

	assert_false(store_has_blob(
	    f->s, "sha256:0000000000000000000000000000000000000000000000000000000000000000"));
	assert_int_equal(store_ref_list(f->s, &refs, &n), 0);
	assert_int_equal(n, 1);
	store_refs_free(refs, n);
	assert_int_equal(store_ref_get(f->s, "docker.io/library/k:1", &got), 0);
	descriptor_clear(&got);
	assert_int_equal(store_open_partial(f->s, d1, &fd, &size), 0);
	assert_int_equal(size, 0);
	assert_int_equal(store_discard_partial(f->s, d1), 0);
	close(fd);
	{
		struct store *again = NULL;

		assert_int_equal(store_open(f->dir, &again), 0);
		store_free(again);
	}
}

static void test_default_root(void **state)
{
	_cleanup_free_ char *saved_root =
	    getenv("IMGFS_ROOT") ? strdup(getenv("IMGFS_ROOT")) : NULL;
	char *r = NULL;

	(void)state;
	setenv("IMGFS_ROOT", "/x/y", 1);
	assert_int_equal(store_default_root(&r), 0);
	assert_string_equal(r, "/x/y");
	free(r);
	unsetenv("IMGFS_ROOT");
	setenv("XDG_DATA_HOME", "/data", 1);
	assert_int_equal(store_default_root(&r), 0);
	assert_string_equal(r, geteuid() == 0 ? "/var/lib/imgfs" : "/data/imgfs");
	free(r);
	unsetenv("XDG_DATA_HOME");
	setenv("HOME", "/home/u", 1);
	assert_int_equal(store_default_root(&r), 0);
	assert_string_equal(r, geteuid() == 0 ? "/var/lib/imgfs" : "/home/u/.local/share/imgfs");
	free(r);
	if (saved_root)
		setenv("IMGFS_ROOT", saved_root, 1);
}

static void test_bad_layout(void **state)
{
	char dir[] = "/tmp/test_store.XXXXXX";
	struct store *s = NULL;
	int dfd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(
	    write_file_atomic(dfd, "oci-layout", "{\"imageLayoutVersion\":\"2.0.0\"}", 30, 0644),
	    0);
	assert_int_equal(store_open(dir, &s), -EPROTONOSUPPORT);
	assert_null(s);
	close(dfd);
	rm_rf_at(AT_FDCWD, dir);
}

/* Copies blob digest of an OCI layout (dirfd) into the store the way a pull does: through a
 * partial file, verified, committed. */
static void import_blob(struct store *s, int src, const char *digest)
{
	_cleanup_(sha256_freep) struct sha256 *h = sha256_new();
	_cleanup_close_ int in = -1, out = -1;
	char path[128], got[DIGEST_STR_LEN + 1], buf[65536];
	uint64_t have = 0;
	ssize_t n;

	assert_non_null(h);
	if (store_has_blob(s, digest))
		return;
	assert_non_null(store_path("blobs", digest, path, sizeof(path)));
	in = openat(src, path, O_RDONLY | O_CLOEXEC);
	assert_true(in >= 0);
	assert_int_equal(store_open_partial(s, digest, &out, &have), 0);
	assert_int_equal(ftruncate(out, 0), 0);
	while ((n = read(in, buf, sizeof(buf))) > 0) {
		sha256_update(h, buf, (size_t)n);
		assert_int_equal(write_full(out, buf, (size_t)n), 0);
	}
	assert_int_equal(n, 0);
	sha256_final(h, got);
	assert_string_equal(got, digest);
	assert_int_equal(store_commit_partial(s, digest, out), 0);
}

/* Not a unit test: with STORE_IMPORT_SRC=LAYOUT:TAG and STORE_IMPORT_DST=DIR, imports that
 * image into a store at DIR under each name of STORE_IMPORT_REFS (space-separated), so
 * that tests/integration/test_store_oci.sh can read the store with skopeo and umoci. */
static void test_import_layout(void **state)
{
	const char *src = getenv("STORE_IMPORT_SRC"), *dst = getenv("STORE_IMPORT_DST");
	const char *refs = getenv("STORE_IMPORT_REFS"), *colon;
	_cleanup_(store_freep) struct store *s = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_free_ char *dir = NULL, *index = NULL, *body = NULL, *names = NULL;
	_cleanup_close_ int sfd = -1;
	json_auto_t *j = NULL;
	json_t *e = NULL, *v;
	const char *tag;
	struct descriptor d = {0};
	unsigned removed = 1;
	size_t i, len = 0;

	(void)state;
	assert_non_null(src);
	assert_non_null(dst);
	assert_non_null(refs);
	colon = strrchr(src, ':');
	assert_non_null(colon);
	dir = strndup(src, (size_t)(colon - src));
	tag = colon + 1;
	sfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(sfd >= 0);
	assert_int_equal(read_file_full(sfd, "index.json", 1 << 20, &index, NULL), 0);
	j = json_loads(index, 0, NULL);
	assert_non_null(j);
	json_array_foreach(json_object_get(j, "manifests"), i, v)
	{
		json_t *name = json_object_get(json_object_get(v, "annotations"),
		                               "org.opencontainers.image.ref.name");

		if (json_is_string(name) && streq(json_string_value(name), tag))
			e = v;
	}
	assert_non_null(e);
	d.media_type = (char *)json_string_value(json_object_get(e, "mediaType"));
	d.digest = (char *)json_string_value(json_object_get(e, "digest"));
	d.size = (uint64_t)json_integer_value(json_object_get(e, "size"));

	assert_int_equal(store_open(dst, &s), 0);
	assert_int_equal(store_lock_shared(s), 0);
	import_blob(s, sfd, d.digest);
	assert_int_equal(store_read_blob(s, d.digest, MANIFEST_MAX_SIZE, &body, &len), 0);
	assert_int_equal(manifest_parse(body, len, d.media_type, &m, NULL), 0);
	assert_int_equal(m->kind, MANIFEST_IMAGE);
	import_blob(s, sfd, m->config.digest);
	for (i = 0; i < m->n_layers; i++)
		import_blob(s, sfd, m->layers[i].digest);
	names = strdup(refs);
	assert_non_null(names);
	for (char *save = NULL, *n = strtok_r(names, " ", &save); n; n = strtok_r(NULL, " ", &save))
		assert_int_equal(store_ref_set(s, n, &d), 0);
	store_free(TAKE_PTR(s));
	/* A gc right after keeps every blob of the image. */
	assert_int_equal(store_open(dst, &s), 0);
	assert_int_equal(store_gc(s, NULL, &removed, NULL), 0);
	assert_int_equal(removed, 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_layout),
	    T(test_refs),
	    T(test_ref_alias),
	    cmocka_unit_test(test_ref_name_grammar),
	    T(test_foreign_entries),
	    T(test_concurrent_refs),
	    T(test_blobs),
	    T(test_lazy_index),
	    T(test_partial_resume),
	    T(test_partial_serialised),
	    T(test_gc),
	    T(test_crash_leftovers),
	    cmocka_unit_test(test_default_root),
	    cmocka_unit_test(test_bad_layout),
	};

	const struct CMUnitTest import[] = {cmocka_unit_test(test_import_layout)};

	if (getenv("STORE_IMPORT_DST"))
		return cmocka_run_group_tests(import, NULL, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
