/* See fixture_layerdir.h. */
#include <fcntl.h>
#include <stdio.h>
#include "common/digest.h"
#include "common/fileio.h"
#include "tests/unit/fixture_layerdir.h"

/* DIGEST_HEX.suffix in buf; -EINVAL for a malformed digest. */
static int layer_file(const char *digest, const char *suffix, char *buf, size_t size)
{
	if (!digest_valid(digest))
		return -EINVAL;
	snprintf(buf, size, "%s.%s", digest_hex(digest), suffix);
	return 0;
}

int layerdir_open_data(int dir_fd, const char *digest, int *ret_fd)
{
	char name[DIGEST_HEX_LEN + 8];
	int fd, r;

	r = layer_file(digest, "data", name, sizeof(name));
	if (r < 0)
		return r;
	fd = openat(dir_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

int layerdir_put(int dir_fd, const char *digest, const void *index, size_t index_len,
                 const void *data, size_t data_len)
{
	char name[DIGEST_HEX_LEN + 8];
	int r;

	r = layer_file(digest, "idx", name, sizeof(name));
	if (r < 0)
		return r;
	r = write_file_atomic(dir_fd, name, index, index_len, 0644);
	if (r < 0 || !data)
		return r;
	layer_file(digest, "data", name, sizeof(name));
	return write_file_atomic(dir_fd, name, data, data_len, 0644);
}

static int open_layer(void *ctx, const char *digest, unsigned flags, struct li_index **ret)
{
	const int *dir_fd = ctx;
	_cleanup_close_ int ifd = -1, dfd = -1;
	char name[DIGEST_HEX_LEN + 8];
	int r;

	r = layer_file(digest, "idx", name, sizeof(name));
	if (r < 0)
		return r;
	ifd = openat(*dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (ifd < 0)
		return -errno;
	if (!(flags & LI_OPEN_NO_DATA)) {
		layer_file(digest, "data", name, sizeof(name));
		dfd = openat(*dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (dfd < 0)
			return -errno;
	}
	return li_open_flags(ifd, dfd, flags, ret);
}

struct li_opener layerdir_opener(const int *dir_fd)
{
	return (struct li_opener){.open = open_layer, .ctx = (void *)dir_fd};
}
