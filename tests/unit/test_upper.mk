test_upper_SRC := fsd/fs/upper.c fsd/fs/upper_pending.c
