test_digest_SRC := common/digest.c
