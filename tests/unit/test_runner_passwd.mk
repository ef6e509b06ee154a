test_runner_passwd_SRC := runner/passwd.c
