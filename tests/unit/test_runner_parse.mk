test_runner_parse_SRC := runner/parse.c
