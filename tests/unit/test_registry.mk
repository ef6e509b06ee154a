test_registry_SRC := fsd/image/registry.c fsd/image/auth.c fsd/image/ref.c
