test_als_SRC := fsd/image/als.c
