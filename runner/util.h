/* Internal helpers of librunner. */
#pragma once

#include "common/macros.h"
#include "runner/runner.h"

/* Writes "fmt: strerror(-r)" into e->msg (when e is not NULL) and returns r. */
int runner_errf(struct error *e, int r, const char *fmt, ...) _printf_(3, 4);
