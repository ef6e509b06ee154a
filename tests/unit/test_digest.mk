test_digest_SRC :=
