/* A directory of layer indexes for the tests of the merged tree (unit tests and fuzz
 * targets alike: no cmocka here), and the struct li_opener that reads it. Each layer is two
 * files named by the hex of its digest: HEX.idx, the index, and HEX.data, what the index
 * reads from (the layer itself, or the seekable zstd copy of a zstd layer). This is the
 * fixture's own layout, not the store's: tree_build() and tree_open() only see the opener.
 *
 * Not thread-safe; the tests call it from one thread. Everything returns 0 or -errno. */
#pragma once

#include <stddef.h>
#include "fsd/index/layerindex.h"

/* Opens (creating, truncating) the data file of layer digest in dir_fd for writing, so
 * that the index builder writes the seekable zstd copy of a zstd layer straight into it. */
int layerdir_open_data(int dir_fd, const char *digest, int *ret_fd);
/* Writes the index of layer digest into dir_fd, and data (unless NULL: written through
 * layerdir_open_data()) as its data file. */
int layerdir_put(int dir_fd, const char *digest, const void *index, size_t index_len,
                 const void *data, size_t data_len);
/* An opener of the layers in *dir_fd (read at each open), honouring LI_OPEN_NO_DATA.
 * dir_fd is borrowed: it must outlive every use of the opener. */
struct li_opener layerdir_opener(const int *dir_fd);
