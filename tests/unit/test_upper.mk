test_upper_SRC := fsd/core/upper.c fsd/core/upper_pending.c
