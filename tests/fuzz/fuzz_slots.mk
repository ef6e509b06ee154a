fuzz_slots_SRC := fsd/layerstore.c fsd/image/als.c fsd/fs/fs.c fsd/fs/fs_merge.c fsd/fs/fs_write.c fsd/fs/upper.c fsd/fs/upper_pending.c
