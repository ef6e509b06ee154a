/* Resolution of a Docker "-u user[:group]" spec against an image's /etc/passwd and
 * /etc/group, with the semantics of runc's GetExecUser. Pure: the files' contents are
 * passed in; both are hostile input (bounded lines, counts and ids). */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#define PASSWD_MAX_LINE 4096  /* longer lines are ignored */
#define PASSWD_MAX_GROUPS 256 /* supplementary groups kept at most */
#define PASSWD_MAX_ID 2147483647u

struct exec_user {
	uid_t uid;
	gid_t gid;
	size_t n_groups;
	gid_t groups[PASSWD_MAX_GROUPS]; /* supplementary groups, file order, no duplicates */
	char home[PASSWD_MAX_LINE];      /* "/" when unknown */
};

/* Resolves spec ("name", "uid", "name:group", "uid:gid", ...; NULL or "" = root) with the
 * contents of passwd and group (NUL-terminated, NULL when the file is missing).
 * A user named in passwd gets its uid, gid and home; a numeric user not in passwd gets that
 * uid, gid 0 and home "/". Without an explicit group, the supplementary groups are the
 * groups that list the user's name as a member. Returns 0 and fills *ret, -EINVAL for a
 * malformed spec, -ENOENT (user) or -ESRCH (group) when a name is not found, -ERANGE
 * for an id out of range. *ret is untouched on failure. */
int passwd_resolve(const char *spec, const char *passwd, const char *group, struct exec_user *ret);
