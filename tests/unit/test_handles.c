/* The handle table (fsd/fs/handles.c): handles given out, looked up, freed and reused, and
 * a second table over the same file (a process taking a mount over) that finds every
 * record without the open objects and does not give out again what the dead process freed
 * (unless full); a full table, bad handles, a file that is no table; a table sized for a
 * million handles whose file grows with the handles given out, not before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/fileio.h"
#include "tests/unit/fixture_tmpdir.h"
#include "fsd/fs/handles.h"

static void test_add_get_remove(void **state)
{
	struct tmpdir *f = *state;
	struct handles *h;
	struct handle_rec rec;
	int a, b, c;
	uint64_t fa, fb, fc, fd2;

	assert_int_equal(handles_open(f->dfd, "handles", false, 64, &h), 0);
	assert_int_equal(handles_add(h, 10, O_RDONLY, HANDLE_FILE, &a, &fa), 0);
	assert_int_equal(handles_add(h, 20, O_WRONLY | O_APPEND, HANDLE_FILE, &b, &fb), 0);
	assert_int_equal(handles_add(h, 30, O_RDONLY | O_DIRECTORY, HANDLE_DIR, &c, &fc), 0);
	/* 0 means "no handle" to FUSE: never given out. */
	assert_true(fa != 0 && fb != 0 && fc != 0);
	assert_true(fa != fb && fb != fc && fa != fc);
	assert_ptr_equal(handles_get(h, fa), &a);
	assert_ptr_equal(handles_get(h, fb), &b);
	assert_ptr_equal(handles_get(h, fc), &c);
	assert_int_equal(handles_rec(h, fb, &rec), 0);
	assert_int_equal(rec.ino, 20);
	assert_int_equal(rec.flags, O_WRONLY | O_APPEND);
	assert_int_equal(rec.kind, HANDLE_FILE);
	assert_int_equal(handles_count(h), 3);
	assert_ptr_equal(handles_remove(h, fb), &b);
	assert_null(handles_get(h, fb));
	assert_int_equal(handles_rec(h, fb, &rec), -EBADF);
	assert_null(handles_remove(h, fb));
	/* A freed handle is given out again. */
	assert_int_equal(handles_add(h, 40, O_RDONLY, HANDLE_FILE, &b, &fd2), 0);
	assert_int_equal(fd2, fb);
	/* Handles never given out. */
	assert_null(handles_get(h, 0));
	assert_null(handles_get(h, 63));
	assert_null(handles_get(h, UINT64_MAX));
	assert_int_equal(handles_rec(h, 0, &rec), -EBADF);
	assert_int_equal(handles_rec(h, 1000, &rec), -EBADF);
	assert_int_equal(handles_add(h, 1, 0, HANDLE_FREE, &a, &fd2), -EINVAL);
	handles_free(h);
}

static void test_taken_over(void **state)
{
	struct tmpdir *f = *state;
	struct handles *h, *h2;
	struct handle_rec rec;
	int a, b, c, mine, theirs;
	uint64_t fa, fb, fc, fn;

	assert_int_equal(handles_open(f->dfd, "handles", false, 64, &h), 0);
	assert_int_equal(handles_add(h, 10, O_RDONLY, HANDLE_FILE, &a, &fa), 0);
	assert_int_equal(handles_add(h, 20, O_RDWR, HANDLE_FILE, &b, &fb), 0);
	assert_int_equal(handles_add(h, 30, O_RDONLY, HANDLE_DIR, &c, &fc), 0);
	assert_ptr_equal(handles_remove(h, fa), &a);
	/* The process dies here (h is never freed before the second table opens). */
	assert_int_equal(handles_open(f->dfd, "handles", true, 64, &h2), 0);
	assert_int_equal(handles_end(h2), fc + 1);
	assert_int_equal(handles_count(h2), 2);
	/* The records are there, the open objects are not. */
	assert_null(handles_get(h2, fb));
	assert_int_equal(handles_rec(h2, fb, &rec), 0);
	assert_int_equal(rec.ino, 20);
	assert_int_equal(rec.flags, O_RDWR);
	assert_int_equal(rec.kind, HANDLE_FILE);
	assert_int_equal(handles_rec(h2, fc, &rec), 0);
	assert_int_equal(rec.kind, HANDLE_DIR);
	assert_int_equal(handles_rec(h2, fa, &rec), -EBADF);
	/* Opened again: the first to install wins, the other is told. */
	assert_ptr_equal(handles_set(h2, fb, &mine), &mine);
	assert_ptr_equal(handles_set(h2, fb, &theirs), &mine);
	assert_ptr_equal(handles_get(h2, fb), &mine);
	assert_null(handles_set(h2, fa, &theirs));
	/* The slot the dead process freed is not given out again: the kernel sends again the
	 * RELEASE it carried out without answering, which must not free the new handle. */
	assert_int_equal(handles_add(h2, 50, O_RDONLY, HANDLE_FILE, &a, &fn), 0);
	assert_int_not_equal(fn, fa);
	assert_null(handles_remove(h2, fa));
	assert_ptr_equal(handles_get(h2, fn), &a);
	assert_int_equal(handles_rec(h2, fn, &rec), 0);
	assert_int_equal(rec.ino, 50);
	/* A slot this process freed is given out again. */
	assert_ptr_equal(handles_remove(h2, fn), &a);
	assert_int_equal(handles_add(h2, 60, O_RDONLY, HANDLE_FILE, &a, &fa), 0);
	assert_int_equal(fa, fn);
	handles_free(h2);
	handles_free(h);
	/* A new mount starts empty. */
	assert_int_equal(handles_open(f->dfd, "handles", false, 64, &h), 0);
	assert_int_equal(handles_count(h), 0);
	assert_int_equal(handles_rec(h, fb, &rec), -EBADF);
	handles_free(h);
}

/* The slots free at a takeover are set aside, not lost: given out once the table is full. */
static void test_taken_over_full(void **state)
{
	struct tmpdir *f = *state;
	struct handles *h, *h2;
	uint64_t fh[3], a, b;
	int x;

	assert_int_equal(handles_open(f->dfd, "handles", false, 5, &h), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(handles_add(h, (uint64_t)i, 0, HANDLE_FILE, &x, &fh[i]), 0);
	assert_ptr_equal(handles_remove(h, fh[0]), &x);
	assert_ptr_equal(handles_remove(h, fh[1]), &x);
	assert_int_equal(handles_open(f->dfd, "handles", true, 5, &h2), 0);
	/* The last slot never used, then those set aside. */
	assert_int_equal(handles_add(h2, 10, 0, HANDLE_FILE, &x, &a), 0);
	assert_int_equal(a, 4);
	assert_int_equal(handles_add(h2, 11, 0, HANDLE_FILE, &x, &a), 0);
	assert_int_equal(handles_add(h2, 12, 0, HANDLE_FILE, &x, &b), 0);
	assert_true((a == fh[0] && b == fh[1]) || (a == fh[1] && b == fh[0]));
	assert_int_equal(handles_add(h2, 13, 0, HANDLE_FILE, &x, &a), -ENFILE);
	assert_int_equal(handles_count(h2), 4);
	handles_free(h2);
	handles_free(h);
}

static void test_full_and_bad(void **state)
{
	struct tmpdir *f = *state;
	struct handles *h;
	uint64_t fh;
	int x;

	assert_int_equal(handles_open(-1, NULL, false, 4, &h), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(handles_add(h, (uint64_t)i, 0, HANDLE_FILE, &x, &fh), 0);
	assert_int_equal(handles_add(h, 9, 0, HANDLE_FILE, &x, &fh), -ENFILE);
	assert_ptr_equal(handles_remove(h, 2), &x);
	assert_int_equal(handles_add(h, 9, 0, HANDLE_FILE, &x, &fh), 0);
	assert_int_equal(fh, 2);
	handles_free(h);

	/* Not a table, or one of another size. */
	assert_int_equal(write_file_atomic(f->dfd, "junk", "not a table", 11, 0600), 0);
	assert_int_equal(handles_open(f->dfd, "junk", true, 4, &h), -EBADMSG);
	assert_int_equal(handles_open(f->dfd, "handles", false, 8, &h), 0);
	handles_free(h);
	assert_int_equal(handles_open(f->dfd, "handles", true, 16, &h), -EBADMSG);
	assert_int_equal(handles_open(f->dfd, "handles", false, 1, &h), -EINVAL);
}

static void test_file_grows(void **state)
{
	struct tmpdir *f = *state;
	struct handles *h, *t;
	struct handle_rec rec;
	struct stat st;
	static int objs[5000];
	uint64_t fh[5000];

	assert_int_equal(handles_open(f->dfd, "handles", false, 1u << 20, &h), 0);
	/* A new table's file is small: what a mount that opens nothing leaves on disk. */
	assert_int_equal(fstatat(f->dfd, "handles", &st, 0), 0);
	assert_true(st.st_size <= 64 << 10);
	for (int i = 0; i < 5000; i++)
		assert_int_equal(
		    handles_add(h, 100 + (uint64_t)i, O_RDONLY, HANDLE_FILE, &objs[i], &fh[i]), 0);
	assert_int_equal(fstatat(f->dfd, "handles", &st, 0), 0);
	assert_true(st.st_size >= 5001 * 16 && st.st_size <= 256 << 10);
	/* A process taking over finds every record, the last ones past the first size too. */
	assert_int_equal(handles_open(f->dfd, "handles", true, 1u << 20, &t), 0);
	for (int i = 0; i < 5000; i += 499) {
		assert_int_equal(handles_rec(t, fh[i], &rec), 0);
		assert_int_equal(rec.ino, 100 + (uint64_t)i);
	}
	assert_int_equal(handles_rec(t, fh[4999], &rec), 0);
	assert_int_equal(rec.ino, 5099);
	handles_free(t);
	handles_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_add_get_remove, tmpdir_setup, tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_taken_over, tmpdir_setup, tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_taken_over_full, tmpdir_setup, tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_full_and_bad, tmpdir_setup, tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_file_grows, tmpdir_setup, tmpdir_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
