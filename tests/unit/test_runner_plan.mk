test_runner_plan_SRC := runner/plan.c
