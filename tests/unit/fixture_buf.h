/* A growable byte buffer for unit-test fixtures, and a libarchive write callback that
 * appends to one. An allocation failure fails the running test (cmocka); the caller frees
 * b->p. */
#pragma once

#include <archive.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *p;
	size_t len, cap;
};

/* Appends n bytes of data; with data NULL, grows len by n and leaves those bytes as the
 * allocator gave them (the caller fills them). */
void buf_put(struct buf *b, const void *data, size_t n);

/* archive_write_open() callback: userdata is the struct buf the archive is written to. */
la_ssize_t buf_write_cb(struct archive *a, void *userdata, const void *p, size_t n);
