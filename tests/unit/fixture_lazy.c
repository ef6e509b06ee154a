/* See fixture_lazy.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common/fileio.h"
#include "tests/unit/fixture_lazy.h"

int lazyfix_memfd(const void *buf, size_t len)
{
	int fd = memfd_create("t", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, buf, len), 0);
	return fd;
}

int lazyfix_record(void *ctx, uint64_t off, uint64_t len)
{
	struct lazyfix_range *h = ctx;

	h->lo = off < h->lo ? off : h->lo;
	h->hi = off + len > h->hi ? off + len : h->hi;
	return 0;
}

void lazyfix_entry_pair(struct li_index *idx, struct li_index *ref, size_t i, struct li_entry *a,
                        struct li_entry *e)
{
	assert_int_equal(li_entry_get(idx, i, a), 0);
	assert_int_equal(li_entry_get(ref, i, e), 0);
	assert_string_equal(a->path, e->path);
	assert_int_equal(a->type, e->type);
	assert_int_equal(a->mode, e->mode);
	assert_int_equal(a->size, e->size);
}

struct li_index *lazyfix_stream_index(const void *blob, size_t len, const char *layer, int data_fd)
{
	struct li_builder *b = NULL;
	struct li_index *idx = NULL;
	void *buf = NULL;
	size_t buf_len = 0;
	int fd;

	assert_int_equal(li_builder_new(LI_GZIP, 0, -1, &b), 0);
	assert_int_equal(li_builder_feed(b, blob, len), 0);
	assert_int_equal(li_builder_finish(b, layer, &buf, &buf_len), 0);
	li_builder_free(b);
	fd = lazyfix_memfd(buf, buf_len);
	assert_int_equal(li_open_flags(fd, data_fd, LI_OPEN_VERIFY, &idx), 0);
	close(fd);
	free(buf);
	return idx;
}
