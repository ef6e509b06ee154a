fuzz_soci_SRC := fsd/image/soci.c fsd/image/estargz.c fsd/image/spans.c fsd/index/deflate_refs.c fsd/index/layerindex.c fsd/index/layerindex_gzip.c fsd/index/layerindex_read.c fsd/index/spancache.c
