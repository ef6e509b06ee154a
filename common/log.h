/* Logging: one sink (stderr by default, or a file), syslog priorities.
 * Library code logs only at LOG_DEBUG; errors are logged once, where they reach the user.
 * Thread-safe: each message is written with a single write(2). */
#pragma once

#include <syslog.h>
#include "macros.h"

extern int log_max_level; /* messages above this priority are dropped; default LOG_INFO */

/* Sends further messages to fd (not closed by the logger); -1 restores stderr.
 * With timestamps true, each line starts with the time and pid (for daemon logs). */
void log_set_fd(int fd, bool timestamps);

/* Sets the program name printed before each line ("imgfs: ..."). */
void log_set_ident(const char *ident);

void log_msg(int prio, const char *fmt, ...) _printf_(2, 3);

/* Logs fmt followed by ": strerror(-r)" and returns r (a negative errno). */
int log_errno(int prio, int r, const char *fmt, ...) _printf_(3, 4);

#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_max_level >= LOG_DEBUG)                                                    \
			log_msg(LOG_DEBUG, __VA_ARGS__);                                           \
	} while (0)
