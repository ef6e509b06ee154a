/* Internal helpers of librunner. */
#include <stdarg.h>
#include "runner/util.h"

int runner_errf(struct error *e, int r, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!e)
		return r;
	va_start(ap, fmt);
	n = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(e->msg) && r < 0)
		snprintf(e->msg + n, sizeof(e->msg) - (size_t)n, ": %s", strerror(-r));
	return r;
}
