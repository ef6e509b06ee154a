/* User and group resolution for "-u user[:group]" (runc's GetExecUser semantics). */
#include <ctype.h>
#include "runner/passwd.h"
#include "common/macros.h"

#define MAX_FIELDS 8

/* Parses a decimal id no larger than PASSWD_MAX_ID. Returns 0, -EINVAL or -ERANGE. */
static int parse_id(const char *s, unsigned *ret)
{
	unsigned long v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return -EINVAL;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > PASSWD_MAX_ID)
			return -ERANGE;
	}
	*ret = (unsigned)v;
	return 0;
}

static bool is_numeric(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

/* Iterates over the lines of a file's contents: copies the next line into buf (without the
 * newline) and splits it at ':' into fields. Lines longer than PASSWD_MAX_LINE, empty lines
 * and comments are skipped. Returns the number of fields, or 0 at the end. */
static size_t next_entry(const char **pos, char buf[PASSWD_MAX_LINE], char *fields[MAX_FIELDS])
{
	while (*pos && **pos) {
		const char *line = *pos, *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		size_t n = 0;
		char *p;

		*pos = nl ? nl + 1 : line + len;
		if (len >= PASSWD_MAX_LINE)
			continue;
		memcpy(buf, line, len);
		buf[len] = '\0';
		while (len > 0 && isspace((unsigned char)buf[len - 1]))
			buf[--len] = '\0';
		p = buf;
		while (isspace((unsigned char)*p))
			p++;
		if (!*p || *p == '#')
			continue;
		fields[n++] = p;
		while ((p = strchr(p, ':')) && n < MAX_FIELDS) {
			*p++ = '\0';
			fields[n++] = p;
		}
		for (size_t i = n; i < MAX_FIELDS; i++)
			fields[i] = NULL;
		return n;
	}
	return 0;
}

static bool list_contains(const char *list, const char *name)
{
	size_t len = strlen(name);

	while (list && *list) {
		const char *comma = strchr(list, ',');
		size_t n = comma ? (size_t)(comma - list) : strlen(list);

		if (n == len && strncmp(list, name, n) == 0)
			return true;
		list = comma ? comma + 1 : NULL;
	}
	return false;
}

static void add_group(struct exec_user *u, gid_t gid)
{
	for (size_t i = 0; i < u->n_groups; i++)
		if (u->groups[i] == gid)
			return;
	if (u->n_groups < PASSWD_MAX_GROUPS)
		u->groups[u->n_groups++] = gid;
}

int passwd_resolve(const char *spec, const char *passwd, const char *group, struct exec_user *ret)
{
	_cleanup_free_ struct exec_user *u = NULL;
	_cleanup_free_ char *buf = NULL, *line = NULL;
	char *user_arg, *group_arg = NULL, *fields[MAX_FIELDS];
	char name[PASSWD_MAX_LINE] = "";
	const char *pos;
	size_t n;
	unsigned id;
	int r;

	u = calloc(1, sizeof(*u));
	line = malloc(PASSWD_MAX_LINE);
	if (!u || !line)
		return -ENOMEM;
	strcpy(u->home, "/");
	if (!spec || !*spec)
		spec = "0";
	if (strlen(spec) >= PASSWD_MAX_LINE)
		return -EINVAL;
	buf = strdup(spec);
	if (!buf)
		return -ENOMEM;
	user_arg = buf;
	group_arg = strchr(buf, ':');
	if (group_arg) {
		*group_arg++ = '\0';
		if (!*group_arg || strchr(group_arg, ':'))
			return -EINVAL;
	}
	if (!*user_arg)
		return -EINVAL;

	bool found = false;
	pos = passwd;
	while ((n = next_entry(&pos, line, fields)) > 0) {
		unsigned uid, gid;

		if (n < 4 || parse_id(fields[2], &uid) < 0 || parse_id(fields[3], &gid) < 0)
			continue;
		if (!streq(fields[0], user_arg) &&
		    !(is_numeric(user_arg) && streq(fields[2], user_arg)))
			continue;
		u->uid = uid;
		u->gid = gid;
		if (n >= 6 && fields[5][0])
			snprintf(u->home, sizeof(u->home), "%s", fields[5]);
		snprintf(name, sizeof(name), "%s", fields[0]);
		found = true;
		break;
	}
	if (!found) {
		if (!is_numeric(user_arg))
			return -ENOENT;
		r = parse_id(user_arg, &id);
		if (r < 0)
			return r;
		u->uid = id;
	}

	if (group_arg || name[0]) {
		bool gfound = false;

		pos = group;
		while ((n = next_entry(&pos, line, fields)) > 0) {
			unsigned gid;

			if (n < 3 || parse_id(fields[2], &gid) < 0)
				continue;
			if (!group_arg) {
				if (n >= 4 && list_contains(fields[3], name))
					add_group(u, gid);
				continue;
			}
			if (streq(fields[0], group_arg) ||
			    (is_numeric(group_arg) && streq(fields[2], group_arg))) {
				u->gid = gid;
				gfound = true;
				break;
			}
		}
		if (group_arg && !gfound) {
			if (!is_numeric(group_arg))
				return -ESRCH;
			r = parse_id(group_arg, &id);
			if (r < 0)
				return r;
			u->gid = id;
		}
	}
	*ret = *u;
	return 0;
}
