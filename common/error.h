/* Error text: the one way a reason travels with a -errno from where a failure is found to
 * where it reaches the user. Library code fills a struct error and returns -errno; the
 * caller that reports to the user logs it once (log_error()), adding its own context.
 *
 *	struct error err = {""};
 *	r = manifest_parse(buf, len, ..., &err);
 *	if (r < 0)
 *		return log_error(LOG_ERR, r, &err, "%s: bad manifest", image);
 *
 * Every function taking a struct error * accepts NULL (the reason is dropped) and writes
 * it only on failure. The first reason set wins: the place nearest the cause knows best. */
#pragma once

#include <stdarg.h>
#include "macros.h"

#define ERROR_MSG_MAX 512

struct error {
	char msg[ERROR_MSG_MAX]; /* one line, no trailing newline; "" when nothing was said */
};

/* Sets e->msg from fmt unless e is NULL or already holds a reason. Returns r, so that
 * `return error_set(err, -EINVAL, "…");` reads as one step. */
int error_set(struct error *e, int r, const char *fmt, ...) _printf_(3, 4);
int error_setv(struct error *e, int r, const char *fmt, va_list ap) _printf_(3, 0);

/* Whether a reason was set. */
static inline bool error_isset(const struct error *e)
{
	return e && e->msg[0];
}

/* Logs "CONTEXT: REASON" (or "CONTEXT: strerror(-r)" when no reason was set) at prio and
 * returns r. fmt may be NULL: then the reason alone. */
int log_error(int prio, int r, const struct error *e, const char *fmt, ...) _printf_(4, 5);
