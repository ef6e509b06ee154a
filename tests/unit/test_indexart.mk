test_indexart_SRC := fsd/image/indexart.c
