/* A temporary directory for a unit test: cmocka setup and teardown functions that make it
 * and remove it with all it holds; *state is then a struct tmpdir. */
#pragma once

struct tmpdir {
	char path[64];
	int dfd; /* open on path */
};

int tmpdir_setup(void **state);
int tmpdir_teardown(void **state);
