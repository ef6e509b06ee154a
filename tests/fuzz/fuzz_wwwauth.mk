fuzz_wwwauth_SRC := fsd/image/auth.c
