test_handles_SRC := fsd/fs/handles.c tests/unit/fixture_tmpdir.c
