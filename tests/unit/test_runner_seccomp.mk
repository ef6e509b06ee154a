test_runner_seccomp_SRC := runner/security.c runner/seccomp_profile.c runner/plan.c
