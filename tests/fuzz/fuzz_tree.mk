fuzz_tree_SRC := tests/fuzz/layerfixture.c fsd/index/tree.c fsd/index/deflate_refs.c fsd/index/layerindex.c fsd/index/layerindex_read.c fsd/index/spancache.c tests/unit/fixture_layerdir.c
