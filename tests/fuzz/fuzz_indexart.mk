fuzz_indexart_SRC := fsd/image/indexart.c fsd/image/spans.c
