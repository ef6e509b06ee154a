fuzz_passwd_SRC := runner/passwd.c
