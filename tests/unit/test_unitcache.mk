test_unitcache_SRC := fsd/index/unitcache.c tests/unit/fixture_tmpdir.c
