/* See fixture_buf.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "common/macros.h"
#include "tests/unit/fixture_buf.h"

void buf_put(struct buf *b, const void *data, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = MAX(b->cap * 2, b->len + n + 4096);
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	if (data && n)
		memcpy(b->p + b->len, data, n);
	b->len += n;
}

la_ssize_t buf_write_cb(struct archive *a, void *userdata, const void *p, size_t n)
{
	(void)a;
	buf_put(userdata, p, n);
	return (la_ssize_t)n;
}
