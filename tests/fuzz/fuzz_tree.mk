fuzz_tree_SRC := tests/fuzz/layerfixture.c fsd/core/tree.c fsd/core/deflate_refs.c fsd/core/layerindex.c fsd/core/layerindex_read.c fsd/core/spancache.c
