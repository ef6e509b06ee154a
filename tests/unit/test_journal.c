/* The journal of namespace changes in flight (fsd/fs/journal.c): a change recorded and not
 * ended is found by the next process over the same file (a takeover), once, and only for
 * the same kind, caller, directories and names; a change ended is not; a new process's own
 * changes are never mistaken for a dead one's; a full table records nothing; a file that
 * is no journal starts afresh; without a file nothing is recorded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/fileio.h"
#include "tests/unit/fixture_tmpdir.h"
#include "fsd/fs/journal.h"

static const struct journal_change mkdir_a = {
    .op = JOURNAL_MKDIR, .pid = 100, .parent = 1, .name = "a"};
static const struct journal_change rename_b = {
    .op = JOURNAL_RENAME, .pid = 101, .parent = 5, .name = "b", .newparent = 6, .newname = "c"};

static void test_takeover_finds_what_was_in_flight(void **state)
{
	struct tmpdir *f = *state;
	struct journal *dead, *j;
	struct journal_change other;
	int s1, s2, s3;

	assert_int_equal(journal_open(f->dfd, "journal", false, &dead), 0);
	s1 = journal_begin(dead, &mkdir_a);
	s2 = journal_begin(dead, &rename_b);
	s3 = journal_begin(dead,
	                   &(struct journal_change){
	                       .op = JOURNAL_UNLINK, .pid = 102, .parent = 1, .name = "answered"});
	assert_true(s1 >= 0 && s2 >= 0 && s3 >= 0);
	assert_true(s1 != s2 && s2 != s3);
	journal_end(dead, s3); /* answered before the death */
	/* The process dies: its mapping stays in the file. */
	journal_free(dead);

	assert_int_equal(journal_open(f->dfd, "journal", true, &j), 0);
	assert_int_equal(journal_prior_count(j), 2);
	/* Same op, pid, directories and names: found. Anything else differs: not found. */
	other = mkdir_a;
	other.pid = 999;
	assert_false(journal_take_prior(j, &other));
	other = mkdir_a;
	other.name = "b";
	assert_false(journal_take_prior(j, &other));
	other = mkdir_a;
	other.op = JOURNAL_MKNOD;
	assert_false(journal_take_prior(j, &other));
	other = rename_b;
	other.newname = "d";
	assert_false(journal_take_prior(j, &other));
	assert_false(journal_take_prior(
	    j, &(struct journal_change){
	           .op = JOURNAL_UNLINK, .pid = 102, .parent = 1, .name = "answered"}));
	assert_true(journal_take_prior(j, &mkdir_a));
	assert_false(journal_take_prior(j, &mkdir_a)); /* once */
	assert_true(journal_take_prior(j, &rename_b));
	assert_int_equal(journal_prior_count(j), 0);
	journal_free(j);
}

static void test_own_changes_are_not_prior(void **state)
{
	struct tmpdir *f = *state;
	struct journal *dead, *j;
	int slots[8];

	assert_int_equal(journal_open(f->dfd, "journal", false, &dead), 0);
	assert_true(journal_begin(dead, &mkdir_a) >= 0);
	journal_free(dead);
	assert_int_equal(journal_open(f->dfd, "journal", true, &j), 0);
	/* The new process records its own changes beside the dead one's record... */
	for (int i = 0; i < 8; i++) {
		slots[i] = journal_begin(j, &rename_b);
		assert_true(slots[i] >= 0);
	}
	/* ...which are not taken for a dead one's, and leave its record alone. */
	assert_false(journal_take_prior(j, &rename_b));
	assert_int_equal(journal_prior_count(j), 1);
	for (int i = 0; i < 8; i++)
		journal_end(j, slots[i]);
	assert_true(journal_take_prior(j, &mkdir_a));
	journal_free(j);
}

static void test_fresh_start_and_full_table(void **state)
{
	struct tmpdir *f = *state;
	struct journal *j;
	int n = 0, s;

	/* Not kept (a new mount): nothing of before. */
	assert_int_equal(journal_open(f->dfd, "journal", false, &j), 0);
	assert_true(journal_begin(j, &mkdir_a) >= 0);
	journal_free(j);
	assert_int_equal(journal_open(f->dfd, "journal", false, &j), 0);
	assert_int_equal(journal_prior_count(j), 0);
	assert_false(journal_take_prior(j, &mkdir_a));
	/* Full: -1, nothing recorded; ending -1 is harmless. */
	while ((s = journal_begin(j, &mkdir_a)) >= 0)
		n++;
	assert_true(n >= 64);
	journal_end(j, -1);
	journal_free(j);
}

static void test_not_a_journal_and_no_file(void **state)
{
	struct tmpdir *f = *state;
	struct journal *j;

	assert_int_equal(write_file_atomic(f->dfd, "journal", "garbage", 7, 0600), 0);
	assert_int_equal(journal_open(f->dfd, "journal", true, &j), 0);
	assert_int_equal(journal_prior_count(j), 0);
	assert_true(journal_begin(j, &mkdir_a) >= 0);
	journal_free(j);
	/* No file: nothing recorded, nothing found. */
	assert_int_equal(journal_open(-1, NULL, true, &j), 0);
	assert_int_equal(journal_begin(j, &mkdir_a), -1);
	assert_false(journal_take_prior(j, &mkdir_a));
	journal_free(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_takeover_finds_what_was_in_flight, tmpdir_setup,
	                                    tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_own_changes_are_not_prior, tmpdir_setup,
	                                    tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_fresh_start_and_full_table, tmpdir_setup,
	                                    tmpdir_teardown),
	    cmocka_unit_test_setup_teardown(test_not_a_journal_and_no_file, tmpdir_setup,
	                                    tmpdir_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
