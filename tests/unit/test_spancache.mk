test_spancache_SRC := fsd/index/spancache.c
