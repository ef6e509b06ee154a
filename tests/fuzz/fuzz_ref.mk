fuzz_ref_SRC := fsd/image/ref.c
