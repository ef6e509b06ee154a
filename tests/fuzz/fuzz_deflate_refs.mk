fuzz_deflate_refs_SRC := fsd/core/deflate_refs.c
