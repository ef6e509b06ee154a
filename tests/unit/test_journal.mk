test_journal_SRC := fsd/fs/journal.c tests/unit/fixture_tmpdir.c
