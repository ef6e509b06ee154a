/* One function per subcommand (fsd/cmd_*.c). Each parses its own options from argv
 * (argv[0] is the subcommand name), reports errors itself and returns the process exit
 * status: 0 success, 1 failure, 2 usage error. */
#pragma once

#include "common/macros.h"

/* Global options, parsed by main() before the subcommand. */
extern const char *arg_root; /* --root, or NULL for the default store root */

int cmd_pull(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_umount(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_restart(int argc, char **argv);
int cmd_serve_worker(int argc, char **argv);
int cmd_images(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_rmi(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_login(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_index(int argc, char **argv);
int cmd_layer_store(int argc, char **argv);

/* Opens the store at arg_root or the default root, logging the failure. */
struct store;
int open_store(struct store **ret);
/* open_store() of a store that exists, without logging: -ENOENT when there is none. */
int open_existing_store(struct store **ret);

/* Parses REF for a subcommand, logging the reason on failure. Returns 0, or 2 (usage). */
struct image_ref;
int parse_ref_arg(const char *s, struct image_ref **ret);
