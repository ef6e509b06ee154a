/* A temporary directory for a unit test; see fixture_tmpdir.h. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/fileio.h"
#include "tests/unit/fixture_tmpdir.h"

int tmpdir_setup(void **state)
{
	struct tmpdir *t = calloc(1, sizeof(*t));

	if (!t)
		return -1;
	strcpy(t->path, "/tmp/imgfs-unit.XXXXXX");
	if (!mkdtemp(t->path)) {
		free(t);
		return -1;
	}
	t->dfd = open(t->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	*state = t;
	return t->dfd < 0 ? -1 : 0;
}

int tmpdir_teardown(void **state)
{
	struct tmpdir *t = *state;

	if (t->dfd >= 0)
		close(t->dfd);
	(void)rm_rf_at(AT_FDCWD, t->path);
	free(t);
	return 0;
}
