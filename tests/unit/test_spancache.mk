test_spancache_SRC := fsd/core/spancache.c
