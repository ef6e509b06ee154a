test_lifecycle_SRC := fsd/lifecycle.c fsd/image/store.c fsd/image/spans.c fsd/image/manifest.c fsd/index/layerindex_read.c fsd/index/spancache.c fsd/index/unitcache.c
