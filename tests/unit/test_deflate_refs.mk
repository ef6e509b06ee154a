test_deflate_refs_SRC := fsd/index/deflate_refs.c
