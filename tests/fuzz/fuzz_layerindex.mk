fuzz_layerindex_SRC := fsd/core/deflate_refs.c fsd/core/layerindex.c fsd/core/layerindex_read.c fsd/core/spancache.c
