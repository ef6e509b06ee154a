test_auth_SRC := fsd/image/auth.c
