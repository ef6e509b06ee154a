test_journal_SRC := fsd/fs/journal.c
