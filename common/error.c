#include <stdio.h>
#include "error.h"
#include "log.h"

int error_setv(struct error *e, int r, const char *fmt, va_list ap)
{
	if (e && !e->msg[0])
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	return r;
}

int error_set(struct error *e, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	error_setv(e, r, fmt, ap);
	va_end(ap);
	return r;
}

int log_error(int prio, int r, const struct error *e, const char *fmt, ...)
{
	char context[1024] = "";
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(context, sizeof(context), fmt, ap);
		va_end(ap);
	}
	if (error_isset(e))
		log_msg(prio, "%s%s%s", context, context[0] ? ": " : "", e->msg);
	else if (context[0])
		log_errno(prio, r, "%s", context);
	else
		log_errno(prio, r, "error");
	return r;
}
