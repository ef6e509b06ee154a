/* imgfs run: pull + mount + runner + umount. */
#include <stdio.h>
#include "common/log.h"
#include "fsd/commands.h"

int cmd_run(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	log_msg(LOG_ERR, "run: not available in this build yet; use 'imgfs mount' and 'runner'");
	return 125;
}
