/* Command-line value parsers of the runner: sizes, CPU counts, counts. Pure. */
#include <ctype.h>
#include <stdint.h>
#include "runner/runner.h"
#include "common/macros.h"

int runner_parse_uint(const char *s, uint64_t max, uint64_t *ret)
{
	uint64_t v = 0;

	if (!s || !*s)
		return -EINVAL;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return -EINVAL;
		if (v > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (v == 0)
		return -EINVAL;
	if (v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

/* Parses "INT[.FRAC]" into value * 10^scale_digits, rejecting more fraction digits than
 * scale_digits unless truncate is set. Returns a pointer past the number, or NULL. */
static const char *parse_fixed(const char *s, unsigned scale_digits, bool truncate, uint64_t *ret)
{
	uint64_t v = 0;
	unsigned frac = 0;
	bool any = false;

	for (; isdigit((unsigned char)*s); s++) {
		if (v > UINT64_MAX / 100000)
			return NULL;
		v = v * 10 + (uint64_t)(*s - '0');
		any = true;
	}
	if (*s == '.') {
		s++;
		for (; isdigit((unsigned char)*s); s++) {
			any = true;
			if (frac == scale_digits) {
				if (!truncate)
					return NULL;
				continue;
			}
			v = v * 10 + (uint64_t)(*s - '0');
			frac++;
		}
	}
	if (!any)
		return NULL;
	for (; frac < scale_digits; frac++) {
		if (v > UINT64_MAX / 10)
			return NULL;
		v *= 10;
	}
	*ret = v;
	return s;
}

int runner_parse_size(const char *s, uint64_t *ret)
{
	static const char units[] = "bkmgtp";
	const char *p, *u;
	uint64_t milli, mult = 1;
	unsigned __int128 bytes;

	if (!s)
		return -EINVAL;
	/* Three decimals are plenty for "1.5g"; more are truncated, as go-units rounds. */
	p = parse_fixed(s, 3, true, &milli);
	if (!p)
		return -EINVAL;
	if (*p) {
		u = strchr(units, tolower((unsigned char)*p));
		if (!u)
			return -EINVAL;
		for (size_t i = 0; i < (size_t)(u - units); i++)
			mult *= 1024;
		p++;
		if (u != units) {
			if (*p == 'i' || *p == 'I')
				p++;
			if (*p == 'b' || *p == 'B')
				p++;
		}
		if (*p)
			return -EINVAL;
	}
	bytes = (unsigned __int128)milli * mult / 1000;
	if (bytes == 0)
		return -EINVAL;
	if (bytes > INT64_MAX)
		return -ERANGE;
	*ret = (uint64_t)bytes;
	return 0;
}

int runner_parse_cpus(const char *s, uint64_t *ret)
{
	const char *p;
	uint64_t milli;

	if (!s)
		return -EINVAL;
	p = parse_fixed(s, 3, false, &milli);
	if (!p || *p)
		return -EINVAL;
	if (milli == 0)
		return -EINVAL;
	if (milli > 1000000)
		return -ERANGE;
	*ret = milli;
	return 0;
}

/* Docker's validDeviceMode: r, w and m, each at most once. */
static int parse_access(const char *s, unsigned *ret)
{
	unsigned a = 0, bit;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		switch (*s) {
		case 'r':
			bit = RUNNER_DEV_READ;
			break;
		case 'w':
			bit = RUNNER_DEV_WRITE;
			break;
		case 'm':
			bit = RUNNER_DEV_MKNOD;
			break;
		default:
			return -EINVAL;
		}
		if (a & bit)
			return -EINVAL;
		a |= bit;
	}
	*ret = a;
	return 0;
}

int runner_parse_device(char *spec, struct runner_device *ret)
{
	char *parts[3], *p = spec;
	size_t n = 0;
	struct runner_device d = {.access = RUNNER_DEV_READ | RUNNER_DEV_WRITE | RUNNER_DEV_MKNOD};

	if (!spec)
		return -EINVAL;
	for (;;) {
		char *colon = strchr(p, ':');

		if (n == ARRAY_SIZE(parts))
			return -EINVAL;
		parts[n++] = p;
		if (!colon)
			break;
		*colon = '\0';
		p = colon + 1;
	}
	d.host = parts[0];
	d.container = parts[0];
	if (n == 2 && parse_access(parts[1], &d.access) < 0)
		d.container = parts[1];
	if (n == 3) {
		d.container = parts[1];
		if (parse_access(parts[2], &d.access) < 0)
			return -EINVAL;
	}
	if (d.host[0] != '/' || d.container[0] != '/')
		return -EINVAL;
	*ret = d;
	return 0;
}
