test_unitcache_SRC := fsd/index/unitcache.c
