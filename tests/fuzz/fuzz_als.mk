fuzz_als_SRC := fsd/image/als.c
