test_handles_SRC := fsd/fs/handles.c
