/* The layer store's namespace (fsd/layerstore.c) over in-memory layers and a fake resolver:
 * resolution at the first lookup and its failures, the layer directories, `use` and rmdir,
 * inode numbers that keep layers apart, the roots kept from gc, the numbers and use counts
 * a store restored in another process keeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include "fsd/image/als.h"
#include "fsd/layerstore.h"
#include "tests/unit/fixture_lower.h"

#define L1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define L2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define L3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define MANIFEST "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define MANIFEST2 "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define REF "127.0.0.1:5000/img:1"

static const struct mem_node layer_nodes[] = {
    {.name = "", .parent = 0, .mode = S_IFDIR | 0755, .canonical = 0, .nlink = 2},
    {.name = "f",
     .parent = 0,
     .mode = S_IFREG | 0644,
     .data = "data\n",
     .canonical = 1,
     .nlink = 1},
};

struct fake {
	int calls, fresh_calls, served_calls;
	char served[80]; /* the manifest of the last resolution asked for one */
	bool fail;
	bool second_image; /* a fresh resolution finds L3 (a tag that moved) */
	int changes;
	struct mem_lower lowers[8];
	int n_lowers;
};

static ssize_t fake_read_blob(void *ctx, size_t layer, void *buf, size_t size, uint64_t off)
{
	static const char blob[] = "compressed bytes";

	(void)ctx;
	(void)layer;
	if (off >= sizeof(blob) - 1)
		return 0;
	size = MIN(size, sizeof(blob) - 1 - (size_t)off);
	memcpy(buf, blob + off, size);
	return (ssize_t)size;
}

static void add_layer(struct fake *f, struct ls_image *im, const char *digest)
{
	struct ls_layer_desc *d = &im->layers[im->n_layers++];
	struct mem_lower *m = &f->lowers[f->n_lowers++];

	*m = (struct mem_lower){.nodes = layer_nodes, .n = 2};
	memcpy(d->digest, digest, sizeof(d->digest));
	d->lower = mem_lower_of(m);
	assert_int_equal(
	    als_info_format(&(struct als_info){digest, 16, digest, 100, 2}, &d->info, &d->info_len),
	    0);
	d->blob_size = 16;
}

static int fake_resolve(void *userdata, const char *ref, const char *manifest, bool fresh,
                        struct ls_image *ret)
{
	struct fake *f = userdata;

	f->calls++;
	f->fresh_calls += fresh;
	if (manifest) {
		f->served_calls++;
		snprintf(f->served, sizeof(f->served), "%s", manifest);
		fresh = streq(manifest, MANIFEST2);
	}
	if (f->fail || !streq(ref, REF))
		return -ENOENT;
	*ret = (struct ls_image){.read_blob = fake_read_blob};
	ret->layers = calloc(3, sizeof(*ret->layers));
	assert_non_null(ret->layers);
	if (fresh && f->second_image) {
		memcpy(ret->manifest, MANIFEST2, sizeof(MANIFEST2));
		add_layer(f, ret, L1);
		add_layer(f, ret, L3);
	} else {
		memcpy(ret->manifest, MANIFEST, sizeof(MANIFEST));
		add_layer(f, ret, L1);
		add_layer(f, ret, L2);
	}
	return 0;
}

static void fake_changed(void *userdata)
{
	((struct fake *)userdata)->changes++;
}

static struct layerstore *new_store(struct fake *f)
{
	struct layerstore *ls = NULL;

	assert_int_equal(layerstore_new(&(struct layerstore_opts){.resolve = fake_resolve,
	                                                          .userdata = f,
	                                                          .changed = fake_changed},
	                                &ls),
	                 0);
	return ls;
}

static uint64_t ref_dir(struct layerstore *ls, const char *ref)
{
	_cleanup_free_ char *b = NULL;
	struct imgfs_entry e;

	assert_int_equal(als_ref_encode(ref, &b), 0);
	assert_int_equal(layerstore_lookup(ls, LS_ROOT_INO, b, &e), 0);
	assert_true(S_ISDIR(e.st.st_mode));
	return e.ino;
}

static uint64_t must_lookup(struct layerstore *ls, uint64_t dir, const char *name,
                            struct imgfs_entry *ret)
{
	struct imgfs_entry e;

	if (layerstore_lookup(ls, dir, name, &e) != 0)
		fail_msg("'%s' is missing", name);
	if (ret)
		*ret = e;
	return e.ino;
}

static void test_resolution_and_layers(void **state)
{
	struct fake f = {0};
	_cleanup_(layerstore_freep) struct layerstore *ls = new_store(&f);
	struct imgfs_entry e1, e2, info, blob;
	struct ls_file *file;
	uint64_t rd, l1, l2;
	char buf[256];
	ssize_t n;

	(void)state;
	rd = ref_dir(ls, REF);
	assert_int_equal(ref_dir(ls, REF), rd);
	assert_int_equal(f.calls, 1); /* once, at the first lookup */
	l1 = must_lookup(ls, rd, L1, NULL);
	l2 = must_lookup(ls, rd, L2, NULL);
	assert_true(l1 != l2);
	/* diff/, info, blob of each layer */
	must_lookup(ls, must_lookup(ls, l1, "diff", NULL), "f", &e1);
	must_lookup(ls, must_lookup(ls, l2, "diff", NULL), "f", &e2);
	assert_true(e1.ino != e2.ino);
	assert_true(e1.st.st_ino != e2.st.st_ino); /* never hardlinks across layers */
	must_lookup(ls, l1, "info", &info);
	assert_true(S_ISREG(info.st.st_mode));
	assert_int_equal(layerstore_open(ls, info.ino, O_RDONLY, &file), 0);
	n = layerstore_read(ls, file, buf, sizeof(buf), 0);
	layerstore_release(ls, file);
	assert_int_equal(n, info.st.st_size);
	assert_memory_equal(buf, "{\"compressed-diff-digest\":\"" L1 "\"", 27 + strlen(L1) + 1);
	must_lookup(ls, l1, "blob", &blob);
	assert_int_equal(blob.st.st_size, 16);
	assert_int_equal(layerstore_open(ls, blob.ino, O_RDONLY, &file), 0);
	assert_int_equal(layerstore_read(ls, file, buf, sizeof(buf), 11), 5);
	assert_memory_equal(buf, "bytes", 5);
	layerstore_release(ls, file);
	assert_int_equal(layerstore_open(ls, blob.ino, O_RDWR, &file), -EROFS);
	/* getattr of a diff file through its number */
	assert_int_equal(layerstore_getattr(ls, e2.ino, &e1.st), 0);
	assert_int_equal(e1.st.st_ino, e2.st.st_ino);
	/* nothing else exists */
	assert_int_equal(layerstore_lookup(ls, l1, "use", &e1), -ENOENT);
	assert_int_equal(layerstore_lookup(ls, l1, "other", &e1), -ENOENT);
	assert_int_equal(layerstore_lookup(ls, LS_ROOT_INO, "not base64!", &e1), -ENOENT);
	assert_int_equal(layerstore_getattr(ls, (7ull << 32) | 1, &e1.st), -ESTALE);
}

static void test_failures_are_remembered(void **state)
{
	struct fake f = {.fail = true};
	_cleanup_(layerstore_freep) struct layerstore *ls = new_store(&f);
	_cleanup_free_ char *b = NULL;
	struct imgfs_entry e;

	(void)state;
	assert_int_equal(als_ref_encode(REF, &b), 0);
	assert_int_equal(layerstore_lookup(ls, LS_ROOT_INO, b, &e), -ENOENT);
	assert_int_equal(layerstore_lookup(ls, LS_ROOT_INO, b, &e), -ENOENT);
	assert_int_equal(f.calls, 1); /* podman's stats of diff, info, blob: one attempt */
	assert_int_equal(layerstore_lookup(ls, LS_ROOT_INO, "not base64!", &e), -ENOENT);
	assert_int_equal(f.calls, 1);
}

static void count_uses(const char *ref, const char *digest, uint64_t uses, void *userdata)
{
	uint64_t *sum = userdata;

	assert_string_equal(ref, REF);
	assert_true(digest_valid(digest));
	*sum += uses;
}

static uint64_t total_uses(struct layerstore *ls)
{
	uint64_t sum = 0;

	layerstore_for_each_layer(ls, count_uses, &sum);
	return sum;
}

static size_t held(struct layerstore *ls)
{
	char **m = NULL;
	size_t n = 0;

	assert_int_equal(layerstore_held_manifests(ls, &m, &n), 0);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(m[i], MANIFEST);
		free(m[i]);
	}
	free(m);
	return n;
}

static void test_use_and_rmdir(void **state)
{
	struct fake f = {0};
	_cleanup_(layerstore_freep) struct layerstore *ls = new_store(&f);
	uint64_t rd, l1;

	(void)state;
	rd = ref_dir(ls, REF);
	l1 = must_lookup(ls, rd, L1, NULL);
	assert_int_equal(held(ls), 1); /* resolved, not used yet: a pull in progress */
	f.changes = 0;
	assert_int_equal(layerstore_create(ls, l1, "use"), -ENOENT);
	assert_int_equal(layerstore_create(ls, l1, "use"), -ENOENT);
	assert_int_equal(f.changes, 2);
	assert_int_equal(total_uses(ls), 2);
	assert_int_equal(layerstore_create(ls, l1, "other"), -EROFS);
	assert_int_equal(layerstore_create(ls, rd, "use"), -EROFS);
	assert_int_equal(layerstore_rmdir(ls, rd, L1), -ENOENT);
	assert_int_equal(total_uses(ls), 1);
	assert_int_equal(held(ls), 1);
	assert_int_equal(layerstore_rmdir(ls, rd, L1), -ENOENT);
	assert_int_equal(layerstore_rmdir(ls, rd, L1), -ENOENT); /* never below zero */
	assert_int_equal(total_uses(ls), 0);
	assert_int_equal(held(ls), 0); /* released: gc may take it */
	assert_int_equal(layerstore_rmdir(ls, LS_ROOT_INO, "x"), -EROFS);
	/* the layer is still served */
	must_lookup(ls, must_lookup(ls, l1, "diff", NULL), "f", NULL);
}

static void test_moved_tag(void **state)
{
	struct fake f = {.second_image = true};
	_cleanup_(layerstore_freep) struct layerstore *ls = new_store(&f);
	struct imgfs_entry e;
	uint64_t rd;

	(void)state;
	rd = ref_dir(ls, REF);
	must_lookup(ls, rd, L2, NULL);
	/* L3 is not in the image resolved first: one fresh resolution finds it */
	must_lookup(ls, rd, L3, NULL);
	assert_int_equal(f.fresh_calls, 1);
	must_lookup(ls, rd, L2, NULL); /* the first image's layers stay */
	assert_int_equal(layerstore_lookup(ls, rd, L1 "0", &e), -ENOENT);
	assert_int_equal(layerstore_lookup(ls, rd, MANIFEST, &e), -ENOENT);
	assert_int_equal(f.fresh_calls, 1); /* at most one per LS_FAILURE_TTL_MS */
}

struct names {
	char list[512];
};

static int collect(const char *name, const struct imgfs_entry *ent, uint64_t next_off,
                   void *userdata)
{
	struct names *n = userdata;

	(void)ent;
	(void)next_off;
	snprintf(n->list + strlen(n->list), sizeof(n->list) - strlen(n->list), "%s%s",
	         n->list[0] ? " " : "", name);
	return 0;
}

static void test_readdir(void **state)
{
	struct fake f = {0};
	_cleanup_(layerstore_freep) struct layerstore *ls = new_store(&f);
	_cleanup_free_ char *b = NULL;
	struct names n = {""};
	struct ls_dir *d;
	uint64_t rd;

	(void)state;
	assert_int_equal(als_ref_encode(REF, &b), 0);
	rd = ref_dir(ls, REF);
	assert_int_equal(layerstore_opendir(ls, LS_ROOT_INO, &d), 0);
	assert_int_equal(layerstore_readdir(ls, d, 0, collect, &n), 0);
	layerstore_releasedir(ls, d);
	assert_int_equal(strncmp(n.list, ". .. ", 5), 0);
	assert_string_equal(n.list + 5, b);
	n.list[0] = 0;
	assert_int_equal(layerstore_opendir(ls, rd, &d), 0);
	assert_int_equal(layerstore_readdir(ls, d, 2, collect, &n), 0);
	layerstore_releasedir(ls, d);
	assert_string_equal(n.list, L1 " " L2);
	n.list[0] = 0;
	assert_int_equal(layerstore_opendir(ls, must_lookup(ls, rd, L1, NULL), &d), 0);
	assert_int_equal(layerstore_readdir(ls, d, 0, collect, &n), 0);
	layerstore_releasedir(ls, d);
	assert_string_equal(n.list, ". .. blob diff info");
}

static void test_restored_numbers(void **state)
{
	struct fake f = {.second_image = true}, g = {.second_image = true};
	_cleanup_(layerstore_freep) struct layerstore *ls = new_store(&f);
	_cleanup_(layerstore_freep) struct layerstore *ls2 = NULL;
	_cleanup_free_ char *text = NULL, *text2 = NULL;
	struct imgfs_entry e, e3, e4;
	struct stat st;
	struct ls_file *file;
	size_t len, len2;
	uint64_t rd, l1, l2, l3;
	char buf[64];

	(void)state;
	rd = ref_dir(ls, REF);
	l1 = must_lookup(ls, rd, L1, NULL);
	l2 = must_lookup(ls, rd, L2, NULL);
	must_lookup(ls, must_lookup(ls, l2, "diff", NULL), "f", &e);
	l3 = must_lookup(ls, rd, L3, NULL); /* a moved tag: a second image */
	must_lookup(ls, must_lookup(ls, l3, "diff", NULL), "f", &e3);
	must_lookup(ls, l3, "info", &e4);
	assert_int_equal(layerstore_create(ls, l1, "use"), -ENOENT);
	assert_int_equal(layerstore_create(ls, l1, "use"), -ENOENT);
	assert_int_equal(layerstore_save(ls, &text, &len), 0);

	/* another process: the same numbers, nothing resolved until asked for */
	ls2 = new_store(&g);
	assert_int_equal(layerstore_restore(ls2, text, len), 0);
	assert_int_equal(g.calls, 0);
	assert_int_equal(total_uses(ls2), 2);
	{
		char **m = NULL;
		size_t n = 0;

		/* both images are kept from gc before they are resolved again */
		assert_int_equal(layerstore_held_manifests(ls2, &m, &n), 0);
		assert_int_equal(n, 2);
		for (size_t i = 0; i < n; i++)
			free(m[i]);
		free(m);
	}
	assert_int_equal(layerstore_save(ls2, &text2, &len2), 0);
	assert_int_equal(len2, len);
	assert_memory_equal(text2, text, len); /* saved again as it was */
	layerstore_forget(ls2, e.ino, 1);      /* forgetting resolves nothing */
	assert_int_equal(g.calls, 0);
	/* a file of L3 (of the second image) by its number: that image is resolved */
	assert_int_equal(layerstore_getattr(ls2, e3.ino, &st), 0);
	assert_int_equal(st.st_ino, e3.st.st_ino);
	assert_int_equal(g.served_calls, 1);
	assert_string_equal(g.served, MANIFEST2);
	assert_int_equal(layerstore_open(ls2, e4.ino, O_RDONLY, &file), 0);
	assert_true(layerstore_read(ls2, file, buf, sizeof(buf), 0) > 0);
	layerstore_release(ls2, file);
	/* a file of L2 (of the first image) */
	assert_int_equal(layerstore_getattr(ls2, e.ino, &st), 0);
	assert_int_equal(st.st_ino, e.st.st_ino);
	assert_int_equal(g.served_calls, 2);
	assert_string_equal(g.served, MANIFEST);
	/* names resolve to the same numbers, without asking the registry again */
	assert_int_equal(ref_dir(ls2, REF), rd);
	assert_int_equal(must_lookup(ls2, rd, L1, NULL), l1);
	assert_int_equal(must_lookup(ls2, rd, L3, NULL), l3);
	assert_int_equal(g.calls, 2);
	assert_int_equal(g.fresh_calls, 0);
	/* use counts go on from where they were */
	assert_int_equal(layerstore_rmdir(ls2, rd, L1), -ENOENT);
	assert_int_equal(total_uses(ls2), 1);
}

/* t with every '@' replaced by b (malloc'ed). */
static char *with_ref(const char *t, const char *b)
{
	char *out = malloc(strlen(t) * (strlen(b) + 1) + 1), *p = out;

	assert_non_null(out);
	for (; *t; t++) {
		if (*t == '@') {
			strcpy(p, b);
			p += strlen(b);
		} else {
			*p++ = *t;
		}
	}
	*p = '\0';
	return out;
}

static void test_restore_refuses_bad_tables(void **state)
{
	struct fake f = {0};
	_cleanup_(layerstore_freep) struct layerstore *ls = new_store(&f);
	_cleanup_free_ char *b = NULL;
	static const char *const bad[] = {
	    "",
	    "imgfs-layer-store 2\n",
	    "imgfs-layer-store 1\nref 0 !!\n",
	    "imgfs-layer-store 1\nlayer 0 " MANIFEST " " L1 " 0\n", /* no such reference */
	    "imgfs-layer-store 1\nref 2 @\n",
	    "imgfs-layer-store 1\nref 0 @\nref 0 @\n", /* twice */
	    "imgfs-layer-store 1\nref 0 @\nlayer 0 " MANIFEST " " L1 " -1\n",
	    "imgfs-layer-store 1\nref 0 @\nlayer 0 " MANIFEST " " L1 " 1 x\n",
	    "imgfs-layer-store 1\nref 0 @\nlayer 0 " MANIFEST " sha256:12 1\n",
	    "imgfs-layer-store 1\nref 0 @\nlayer 0 " MANIFEST " " L1 " 1\nlayer 0 " MANIFEST " " L1
	    " 1\n",                                                        /* twice */
	    "imgfs-layer-store 1\nref 0 @\nlayer 0 " MANIFEST " " L1 " 1", /* cut short */
	};
	struct imgfs_entry e;

	(void)state;
	assert_int_equal(als_ref_encode(REF, &b), 0);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		_cleanup_free_ char *t = with_ref(bad[i], b);

		assert_int_equal(layerstore_restore(ls, t, strlen(t)), -EBADMSG);
	}
	/* nothing was kept of them: the reference is resolved at its first lookup */
	assert_int_equal(layerstore_getattr(ls, 2, &e.st), -ESTALE);
	ref_dir(ls, REF);
	assert_int_equal(f.calls, 1);
	assert_int_equal(f.served_calls, 0);
	assert_int_equal(layerstore_restore(ls, "imgfs-layer-store 1\n", 20), -EBUSY);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_resolution_and_layers),
	    cmocka_unit_test(test_failures_are_remembered),
	    cmocka_unit_test(test_use_and_rmdir),
	    cmocka_unit_test(test_moved_tag),
	    cmocka_unit_test(test_readdir),
	    cmocka_unit_test(test_restored_numbers),
	    cmocka_unit_test(test_restore_refuses_bad_tables),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
