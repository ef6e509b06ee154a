#include <stdarg.h>
#include <time.h>
#include "log.h"

int log_max_level = LOG_INFO;
static int log_fd = -1;
static bool log_timestamps;
static const char *log_ident = "imgfs";

void log_set_fd(int fd, bool timestamps)
{
	log_fd = fd;
	log_timestamps = timestamps;
}

void log_set_ident(const char *ident)
{
	log_ident = ident;
}

static void log_write(int prio, int err, const char *fmt, va_list ap)
{
	char line[4096];
	size_t n = 0;
	int fd = log_fd >= 0 ? log_fd : STDERR_FILENO;
	int k;

	if (prio > log_max_level)
		return;
	if (log_timestamps) {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		k = snprintf(line + n, sizeof(line) - n, ".%03ldZ [%d] ", ts.tv_nsec / 1000000,
		             (int)getpid());
		if (k > 0)
			n += (size_t)k;
	} else {
		k = snprintf(line, sizeof(line), "%s: ", log_ident);
		if (k > 0)
			n = (size_t)k;
	}
	if (prio <= LOG_WARNING && prio > LOG_ERR && n < sizeof(line)) {
		k = snprintf(line + n, sizeof(line) - n, "warning: ");
		if (k > 0)
			n += (size_t)k;
	}
	if (n < sizeof(line)) {
		k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		if (k > 0)
			n += (size_t)k;
	}
	if (err && n < sizeof(line)) {
		k = snprintf(line + n, sizeof(line) - n, ": %s", strerror(err));
		if (k > 0)
			n += (size_t)k;
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t _unused_ w = write(fd, line, n);
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_write(prio, 0, fmt, ap);
	va_end(ap);
	errno = saved;
}

int log_errno(int prio, int r, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	log_write(prio, r < 0 ? -r : r, fmt, ap);
	va_end(ap);
	errno = saved;
	return r;
}
