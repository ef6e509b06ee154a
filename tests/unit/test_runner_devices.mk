test_runner_devices_SRC := runner/devices.c
