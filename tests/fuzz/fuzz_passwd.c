/* Fuzzes passwd_resolve(): a "-u" spec against an image's /etc/passwd and /etc/group, all
 * three hostile. A spec is either rejected with one of the documented errors or resolved to
 * ids within range, supplementary groups without duplicates and within the bound, and a
 * NUL-terminated home; a numeric user and group that resolve keep the ids the spec names
 * when the files do not list them.
 *
 * Input: spec, passwd and group separated by NUL bytes; a missing part is a missing file
 * (NULL). */
#include <stdint.h>
#include "runner/passwd.h"
#include "common/macros.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool numeric(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_free_ char *buf = NULL;
	_cleanup_free_ struct exec_user *u = NULL;
	const char *spec, *passwd = NULL, *group = NULL;
	char *p, *end;
	int r;

	if (size > (1u << 20))
		return 0;
	buf = malloc(size + 1);
	u = malloc(sizeof(*u));
	if (!buf || !u)
		return 0;
	memcpy(buf, data, size);
	buf[size] = 0;
	end = buf + size;
	spec = buf;
	p = buf + strlen(buf);
	if (p < end) {
		passwd = ++p;
		p += strlen(p);
		if (p < end)
			group = p + 1;
	}
	memset(u, 0xa5, sizeof(*u));
	r = passwd_resolve(spec, passwd, group, u);
	if (r < 0) {
		if (r != -EINVAL && r != -ENOENT && r != -ESRCH && r != -ERANGE && r != -ENOMEM)
			abort();
		return 0;
	}
	if (u->uid > PASSWD_MAX_ID || u->gid > PASSWD_MAX_ID || u->n_groups > PASSWD_MAX_GROUPS ||
	    !memchr(u->home, 0, sizeof(u->home)) || !u->home[0])
		abort();
	for (size_t i = 0; i < u->n_groups; i++)
		for (size_t j = i + 1; j < u->n_groups; j++)
			if (u->groups[i] == u->groups[j] || u->groups[i] > PASSWD_MAX_ID)
				abort();
	/* Spec "UID:GID" with neither in the files: exactly those ids. */
	{
		const char *colon = strchr(spec, ':');
		char user[32];

		if (colon && (size_t)(colon - spec) < sizeof(user) && numeric(colon + 1) &&
		    !passwd && !group) {
			memcpy(user, spec, (size_t)(colon - spec));
			user[colon - spec] = 0;
			if (numeric(user) && (u->uid != strtoul(user, NULL, 10) ||
			                      u->gid != strtoul(colon + 1, NULL, 10)))
				abort();
		}
		if (!*spec && !passwd && (u->uid != 0 || u->gid != 0))
			abort();
	}
	return 0;
}
