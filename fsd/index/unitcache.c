/* The decoded-data cache on disk. See unitcache.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <isa-l/crc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "common/fileio.h"
#include "common/macros.h"
#include "fsd/index/unitcache.h"

#define UC_MAGIC "IMGFSDU2"
#define UC_HEADER 40u
#define UC_BLOCK (64u << 10) /* each block of the data has its own crc32 */
#define UC_TMP_PREFIX ".tmp-"
#define UC_TMP_MAX_AGE 3600 /* seconds */

/* An entry: this header, a crc32 per UC_BLOCK of the data (little endian), the data. */
struct uc_header {
	char magic[8];
	uint64_t start; /* little endian, as every field */
	uint64_t len;
	uint32_t block;     /* UC_BLOCK */
	uint32_t nblocks;   /* ceil(len / block) */
	uint32_t table_crc; /* crc32 of the crc table */
	uint32_t zero;
};

struct unitcache {
	int dirfd;
	uint64_t max;
	pthread_mutex_t lock;
	bool counted;                 /* bytes holds a scan's figure plus what was added since */
	uint64_t bytes;               /* protected by lock */
	struct unitcache_stats stats; /* protected by lock */
};

static uint64_t le64(uint64_t v)
{
	return htole64(v);
}

int unitcache_open(int dirfd, uint64_t max_bytes, struct unitcache **ret)
{
	struct unitcache *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->dirfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
	if (c->dirfd < 0) {
		int r = -errno;

		free(c);
		return r;
	}
	c->max = max_bytes;
	pthread_mutex_init(&c->lock, NULL);
	*ret = c;
	return 0;
}

void unitcache_free(struct unitcache *c)
{
	if (!c)
		return;
	close(c->dirfd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static bool valid_hex(const char *hex)
{
	size_t n = strlen(hex);

	if (n != 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
			return false;
	return true;
}

static void entry_name(const char *hex, uint64_t start, size_t len, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%" PRIx64 "-%zx", hex, start, len);
}

static void count(struct unitcache *c, uint64_t *field)
{
	pthread_mutex_lock(&c->lock);
	(*field)++;
	pthread_mutex_unlock(&c->lock);
}

static size_t nblocks_of(size_t len)
{
	return (len + UC_BLOCK - 1) / UC_BLOCK;
}

int unitcache_read(struct unitcache *c, const char *hex, uint64_t start, size_t len, size_t off,
                   void *buf, size_t n)
{
	/* The first and last blocks of a range that starts or ends inside them are read
	 * here (no allocation per read: freeing would hand the pages back, and the next read
	 * would fault them in again). */
	static __thread uint8_t edge[UC_BLOCK];
	uint32_t table[UNITCACHE_MAX_UNIT / UC_BLOCK];
	char name[160];
	struct uc_header h;
	size_t nb, first, last;
	_cleanup_close_ int fd = -1;
	bool ok;

	if (!c || !valid_hex(hex) || len == 0 || len > UNITCACHE_MAX_UNIT || off > len ||
	    n > len - off)
		return -ENOENT;
	if (n == 0)
		return 0;
	entry_name(hex, start, len, name, sizeof(name));
	fd = openat(c->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		count(c, &c->stats.misses);
		return -ENOENT;
	}
	nb = nblocks_of(len);
	first = off / UC_BLOCK;
	last = (off + n - 1) / UC_BLOCK;
	{
		struct iovec iov[2] = {{&h, sizeof(h)}, {table, nb * 4}};

		ok = preadv(fd, iov, 2, 0) == (ssize_t)(sizeof(h) + nb * 4) &&
		     memcmp(h.magic, UC_MAGIC, 8) == 0 && h.start == le64(start) &&
		     h.len == le64(len) && h.block == htole32(UC_BLOCK) &&
		     h.nblocks == htole32((uint32_t)nb) && h.zero == 0 &&
		     h.table_crc == htole32(crc32_gzip_refl(0, (void *)table, nb * 4));
	}
	/* Each block that holds part of [off, off + n) is read whole and its crc checked
	 * before a byte of it is used. */
	for (size_t k = first; ok && k <= last; k++) {
		size_t ka = k * UC_BLOCK, kb = MIN(len, ka + UC_BLOCK);
		bool inside = ka >= off && kb <= off + n;
		uint8_t *dst = inside ? (uint8_t *)buf + (ka - off) : edge;

		ok = pread_full(fd, dst, kb - ka, (off_t)(UC_HEADER + nb * 4 + ka)) ==
		         (ssize_t)(kb - ka) &&
		     table[k] == htole32(crc32_gzip_refl(0, dst, kb - ka));
		if (ok && !inside) {
			size_t a = MAX(ka, off), b = MIN(kb, off + n);

			memcpy((uint8_t *)buf + (a - off), edge + (a - ka), b - a);
		}
	}
	if (!ok) {
		/* Torn by a crash, or not ours: never served, and out of the way. */
		(void)unlinkat(c->dirfd, name, 0);
		count(c, &c->stats.corrupt);
		return -ENOENT;
	}
	/* Recently used: eviction goes by mtime. Once a second is enough. */
	{
		struct stat st;
		time_t now = time(NULL);

		if (fstat(fd, &st) == 0 && st.st_mtime != now)
			(void)futimens(fd, (struct timespec[]){{.tv_nsec = UTIME_OMIT},
			                                       {.tv_nsec = UTIME_NOW}});
	}
	count(c, &c->stats.hits);
	return 0;
}

int unitcache_get(struct unitcache *c, const char *hex, uint64_t start, void *buf, size_t len)
{
	return unitcache_read(c, hex, start, len, 0, buf, len);
}

struct uc_file {
	char path[160]; /* HEX/NAME */
	uint64_t bytes;
	struct timespec mtime;
};

static int cmp_mtime(const void *a, const void *b)
{
	const struct uc_file *x = a, *y = b;

	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : x->mtime.tv_nsec > y->mtime.tv_nsec;
}

/* Every file under dirfd (one level of layer directories); temporary files older than
 * an hour are removed on the way (counted in *ret_removed). */
static int scan(int dirfd, struct uc_file **ret, size_t *ret_n, uint64_t *ret_bytes,
                uint64_t *ret_removed)
{
	DIR *top;
	struct dirent *de;
	struct uc_file *v = NULL;
	size_t n = 0, cap = 0;
	uint64_t bytes = 0;
	time_t now = time(NULL);
	int r;

	r = opendir_fd(dirfd, &top);
	if (r < 0)
		return r;
	while ((de = readdir(top))) {
		_cleanup_close_ int lfd = -1;
		DIR *ld;
		struct dirent *le;

		if (de->d_name[0] == '.')
			continue;
		lfd = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (lfd < 0 || opendir_fd(lfd, &ld) < 0)
			continue;
		while ((le = readdir(ld))) {
			struct stat st;

			if (streq(le->d_name, ".") || streq(le->d_name, ".."))
				continue;
			if (fstatat(lfd, le->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			    !S_ISREG(st.st_mode))
				continue;
			if (startswith(le->d_name, UC_TMP_PREFIX)) {
				if (now - st.st_mtime > UC_TMP_MAX_AGE &&
				    unlinkat(lfd, le->d_name, 0) == 0) {
					if (ret_removed)
						*ret_removed += (uint64_t)st.st_blocks * 512;
					continue;
				}
			}
			bytes += (uint64_t)st.st_blocks * 512;
			if (!ret || startswith(le->d_name, UC_TMP_PREFIX))
				continue;
			if (n == cap) {
				size_t ncap = cap ? cap * 2 : 256;
				struct uc_file *nv = realloc(v, ncap * sizeof(*v));

				if (!nv) {
					closedir(ld);
					closedir(top);
					free(v);
					return -ENOMEM;
				}
				v = nv;
				cap = ncap;
			}
			if ((size_t)snprintf(v[n].path, sizeof(v[n].path), "%.64s/%.80s",
			                     de->d_name, le->d_name) >= sizeof(v[n].path))
				continue;
			v[n].bytes = (uint64_t)st.st_blocks * 512;
			v[n].mtime = st.st_mtim;
			n++;
		}
		closedir(ld);
		/* An emptied layer directory goes (it fails while another process adds). */
		(void)unlinkat(dirfd, de->d_name, AT_REMOVEDIR);
	}
	closedir(top);
	if (ret) {
		*ret = v;
		*ret_n = n;
	}
	*ret_bytes = bytes;
	return 0;
}

uint64_t unitcache_dir_bytes(int dirfd)
{
	uint64_t bytes = 0;

	return scan(dirfd, NULL, NULL, &bytes, NULL) < 0 ? 0 : bytes;
}

uint64_t unitcache_trim(struct unitcache *c, uint64_t target)
{
	struct uc_file *v = NULL;
	size_t n = 0;
	uint64_t bytes = 0, removed = 0, evicted = 0;

	if (scan(c->dirfd, &v, &n, &bytes, &removed) < 0)
		return 0;
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_mtime);
	for (size_t i = 0; i < n && bytes > target; i++) {
		if (unlinkat(c->dirfd, v[i].path, 0) < 0)
			continue;
		bytes -= MIN(bytes, v[i].bytes);
		removed += v[i].bytes;
		evicted++;
	}
	free(v);
	pthread_mutex_lock(&c->lock);
	c->bytes = bytes;
	c->counted = true;
	c->stats.evicted += evicted;
	pthread_mutex_unlock(&c->lock);
	return removed;
}

/* Makes room for need more bytes of data in layer hex, whose entries may hold limit bytes
 * of data in all (the lengths in their names): the least recently used go first. */
static void layer_trim(struct unitcache *c, const char *hex, uint64_t need, uint64_t limit)
{
	_cleanup_close_ int lfd = -1;
	struct uc_file *v = NULL;
	size_t n = 0, cap = 0;
	uint64_t data = 0;
	DIR *d;
	struct dirent *de;

	lfd = openat(c->dirfd, hex, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (lfd < 0 || opendir_fd(lfd, &d) < 0)
		return;
	while ((de = readdir(d))) {
		unsigned long long s, l;
		struct stat st;
		char tail;

		if (de->d_name[0] == '.' || sscanf(de->d_name, "%llx-%llx%c", &s, &l, &tail) != 2 ||
		    fstatat(lfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct uc_file *nv = realloc(v, ncap * sizeof(*v));

			if (!nv)
				break;
			v = nv;
			cap = ncap;
		}
		snprintf(v[n].path, sizeof(v[n].path), "%.80s", de->d_name);
		v[n].bytes = l;
		v[n].mtime = st.st_mtim;
		data += l;
		n++;
	}
	closedir(d);
	if (data + need > limit && n > 1)
		qsort(v, n, sizeof(*v), cmp_mtime);
	for (size_t i = 0; i < n && data + need > limit; i++) {
		if (unlinkat(lfd, v[i].path, 0) < 0)
			continue;
		data -= MIN(data, v[i].bytes);
		pthread_mutex_lock(&c->lock);
		c->bytes -= MIN(c->bytes, v[i].bytes);
		c->stats.evicted++;
		pthread_mutex_unlock(&c->lock);
	}
	free(v);
}

void unitcache_put(struct unitcache *c, const char *hex, uint64_t start, const void *buf,
                   size_t len, uint64_t layer_size)
{
	char name[160], tmp[160];
	size_t nb = nblocks_of(len);
	uint32_t table[UNITCACHE_MAX_UNIT / UC_BLOCK];
	struct uc_header h = {.start = le64(start),
	                      .len = le64(len),
	                      .block = htole32(UC_BLOCK),
	                      .nblocks = htole32((uint32_t)nb)};
	struct iovec iov[3] = {{&h, sizeof(h)}, {table, nb * 4}, {(void *)buf, len}};
	uint64_t need = UC_HEADER + nb * 4 + len, rnd = 0, bytes;
	bool trim;
	int fd;

	if (!c || !valid_hex(hex) || len == 0 || len > UNITCACHE_MAX_UNIT || need > c->max ||
	    (layer_size && len > layer_size))
		return;
	entry_name(hex, start, len, name, sizeof(name));
	if (faccessat(c->dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return; /* there already (a damaged one is removed by the read that finds it) */
	if (layer_size)
		layer_trim(c, hex, len, layer_size);
	pthread_mutex_lock(&c->lock);
	bytes = c->bytes;
	trim = !c->counted || bytes + need > c->max;
	pthread_mutex_unlock(&c->lock);
	if (trim)
		unitcache_trim(c, bytes + need > c->max ? c->max / 4 * 3 : c->max);
	pthread_mutex_lock(&c->lock);
	if (c->bytes + need > c->max) {
		/* Still full (another process's entries are newer): not stored. */
		pthread_mutex_unlock(&c->lock);
		return;
	}
	c->bytes += need;
	pthread_mutex_unlock(&c->lock);

	memcpy(h.magic, UC_MAGIC, 8);
	for (size_t k = 0; k < nb; k++)
		table[k] = htole32(crc32_gzip_refl(0, (const uint8_t *)buf + k * UC_BLOCK,
		                                   MIN(len - k * UC_BLOCK, (size_t)UC_BLOCK)));
	h.table_crc = htole32(crc32_gzip_refl(0, (void *)table, nb * 4));
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&rnd;
	snprintf(tmp, sizeof(tmp), "%s/" UC_TMP_PREFIX "%d-%016" PRIx64, hex, (int)getpid(), rnd);
	fd = openat(c->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0 && errno == ENOENT && mkdirat(c->dirfd, hex, 0755) >= 0)
		fd = openat(c->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		            0644);
	if (fd < 0)
		goto fail;
	if (pwritev(fd, iov, 3, 0) != (ssize_t)need) {
		close(fd);
		(void)unlinkat(c->dirfd, tmp, 0);
		goto fail;
	}
	close(fd);
	if (renameat(c->dirfd, tmp, c->dirfd, name) < 0) {
		(void)unlinkat(c->dirfd, tmp, 0);
		goto fail;
	}
	count(c, &c->stats.stored);
	return;
fail:
	pthread_mutex_lock(&c->lock);
	c->bytes -= MIN(c->bytes, need);
	pthread_mutex_unlock(&c->lock);
}

void unitcache_get_stats(struct unitcache *c, struct unitcache_stats *ret)
{
	if (!c) {
		*ret = (struct unitcache_stats){0};
		return;
	}
	pthread_mutex_lock(&c->lock);
	*ret = c->stats;
	pthread_mutex_unlock(&c->lock);
}
