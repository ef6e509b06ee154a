test_lifecycle_SRC := fsd/lifecycle.c fsd/image/store.c fsd/image/manifest.c
