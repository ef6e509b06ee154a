test_store_SRC := fsd/image/store.c fsd/image/spans.c fsd/image/store_gc.c fsd/image/manifest.c fsd/index/layerindex_read.c fsd/index/spancache.c fsd/index/unitcache.c
