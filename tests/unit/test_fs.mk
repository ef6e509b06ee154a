test_fs_SRC := fsd/core/fs.c
