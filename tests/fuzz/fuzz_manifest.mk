fuzz_manifest_SRC := fsd/image/manifest.c
