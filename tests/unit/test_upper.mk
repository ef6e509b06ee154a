test_upper_SRC := fsd/core/upper.c
