fuzz_layerindex_SRC := fsd/index/deflate_refs.c fsd/index/layerindex.c fsd/index/layerindex_gzip.c fsd/index/layerindex_read.c fsd/index/spancache.c fsd/index/unitcache.c
