fuzz_authfile_SRC := fsd/image/auth.c
