test_store_SRC := fsd/image/store.c fsd/image/manifest.c
