test_fs_SRC := fsd/core/fs.c fsd/core/fs_merge.c fsd/core/fs_write.c fsd/core/upper.c fsd/core/upper_pending.c
