/* Layer index builder: the decompress → tar parse → index pass that runs while a layer
 * downloads. Inflating gzip and recording its access points is in layerindex_gzip.c, the
 * state both share in layerindex_build.h; the reading side is in layerindex_read.c; the
 * on-disk layout in layerindex_format.h.
 *
 * li_builder_feed() runs on the download thread and only copies bytes into a bounded ring;
 * a worker thread owned by the builder inflates them and hands the tar stream to libarchive
 * through a read callback (libarchive pulls, the download pushes: the ring joins the two
 * and keeps hashing and inflating on separate cores). Everything the worker records
 * depends only on the byte stream, never on how it was chunked, so the index of a layer is
 * the same whatever the network did. */
#include <archive.h>
#include <archive_entry.h>
#include <pthread.h>
#include <stdint.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>
#include "common/fileio.h"
#include "fsd/index/layerindex_build.h"

#define RING_SIZE (4u << 20)
#define IN_SIZE (256u << 10)
#define MAX_SPAN (64u << 20)
/* zstd re-encode level: pull time over store size (bench/NOTES.md, "The layer index on a
 * 558 MiB tar") */
#define ZSTD_FRAME_LEVEL 1

void li_limits_default(struct li_limits *ret)
{
	*ret = (struct li_limits){
	    .max_out = 64ull << 30,
	    .max_entries = 4u << 20,
	    .max_path = 4096,
	    .max_meta = 512ull << 20,
	    .max_xattrs = 1024,
	    .max_segments = 1u << 20,
	};
}

int lb_dynbuf_append(struct dynbuf *d, const void *data, size_t n)
{
	if (n > SIZE_MAX - d->len)
		return -ENOMEM;
	if (d->len + n > d->cap) {
		size_t cap = MAX(d->cap * 2, MAX(d->len + n, (size_t)4096));
		uint8_t *p = realloc(d->p, cap);

		if (!p)
			return -ENOMEM;
		d->p = p;
		d->cap = cap;
	}
	if (data && n)
		memcpy(d->p + d->len, data, n); /* data NULL: reserve only */
	d->len += n;
	return 0;
}

static void dynbuf_free(struct dynbuf *d)
{
	free(d->p);
	*d = (struct dynbuf){0};
}

/* ---- the ring between the feeding thread and the worker ---- */

/* Appends ring bytes to b->in (after discarding what was consumed); when wait, blocks until
 * there are some. Returns 1 when bytes were added (or b->in is full), 0 at the end of the
 * input, -EAGAIN (only without wait) when none are there yet, -ECANCELED. */
static int input_more_wait(struct li_builder *b, bool wait)
{
	size_t n, first;

	if (b->in_pos == b->in_len) {
		b->in_base += b->in_len;
		b->in_pos = b->in_len = 0;
	}
	if (b->in_len == IN_SIZE)
		return 1;
	pthread_mutex_lock(&b->lock);
	while (wait && b->ring_len == 0 && !b->eof && !b->cancel)
		pthread_cond_wait(&b->can_get, &b->lock);
	if (b->cancel) {
		pthread_mutex_unlock(&b->lock);
		return -ECANCELED;
	}
	if (b->ring_len == 0) {
		pthread_mutex_unlock(&b->lock);
		return b->eof ? 0 : -EAGAIN;
	}
	n = MIN(b->ring_len, IN_SIZE - b->in_len);
	first = MIN(n, RING_SIZE - b->ring_head);
	memcpy(b->in + b->in_len, b->ring + b->ring_head, first);
	memcpy(b->in + b->in_len + first, b->ring, n - first);
	b->ring_head = (b->ring_head + n) % RING_SIZE;
	b->ring_len -= n;
	pthread_cond_signal(&b->can_put);
	pthread_mutex_unlock(&b->lock);
	b->in_len += n;
	return 1;
}

int lb_input_more(struct li_builder *b)
{
	return input_more_wait(b, true);
}

/* Makes b->in hold the stream up to offset end (at most IN_SIZE past b->in_pos), moving the
 * unconsumed bytes to its start when it is full. Returns 1, 0 when the input ends first,
 * -EAGAIN (only without wait), -ECANCELED. */
int lb_input_until(struct li_builder *b, uint64_t end, bool wait)
{
	while (b->in_base + b->in_len < end) {
		int r;

		if (b->in_len == IN_SIZE) {
			memmove(b->in, b->in + b->in_pos, b->in_len - b->in_pos);
			b->in_base += b->in_pos;
			b->in_len -= b->in_pos;
			b->in_pos = 0;
		}
		r = input_more_wait(b, wait);
		if (r <= 0)
			return r;
	}
	return 1;
}

/* ---- decompression: each produce_* returns bytes of tar stream, 0 at its end (gzip:
 * lb_gzip_produce() in layerindex_gzip.c) ---- */

int lb_check_out(struct li_builder *b, size_t n)
{
	b->total_out += n;
	return b->total_out > b->lim.max_out ? -EFBIG : 0;
}

static ssize_t produce_tar(struct li_builder *b, const void **ret)
{
	size_t n;
	int r;

	if (b->in_pos == b->in_len) {
		r = lb_input_more(b);
		if (r <= 0)
			return r;
	}
	n = b->in_len - b->in_pos;
	*ret = b->in + b->in_pos;
	b->in_pos = b->in_len;
	r = lb_check_out(b, n);
	return r < 0 ? r : (ssize_t)n;
}

int lb_append_point(struct li_builder *b, const struct lix_point *p)
{
	int r;

	if (b->n_points == UINT32_MAX)
		return -EFBIG;
	r = lb_dynbuf_append(&b->points, p, sizeof(*p));
	if (r < 0)
		return r;
	b->n_points++;
	return 0;
}

static int flush_frame(struct li_builder *b)
{
	struct lix_point p = {.out_off = b->frame_start, .in_off = b->zst_size};
	size_t n;
	int r;

	if (b->frame_len == 0)
		return 0;
	n = ZSTD_compressCCtx(b->zc, b->frame_out, b->frame_out_cap, b->frame, b->frame_len,
	                      ZSTD_FRAME_LEVEL);
	if (ZSTD_isError(n))
		return -ENOMEM;
	r = write_full(b->data_fd, b->frame_out, n);
	if (r < 0)
		return r;
	p.window_len = (uint32_t)n;
	r = lb_append_point(b, &p);
	if (r < 0)
		return r;
	b->zst_size += n;
	b->frame_start += b->frame_len;
	b->frame_len = 0;
	return 0;
}

/* Decodes the zstd layer and re-encodes the tar stream as independent frames of span bytes
 * (a zstd frame cannot be entered in the middle), written in order to data_fd. */
static ssize_t produce_zstd(struct li_builder *b, const void **ret)
{
	ZSTD_outBuffer ob = {.dst = b->out, .size = OUT_SIZE, .pos = 0};
	int r;

	while (ob.pos == 0) {
		ZSTD_inBuffer ib;
		size_t hint;

		if (b->in_pos == b->in_len) {
			r = lb_input_more(b);
			if (r < 0)
				return r;
			if (r == 0) {
				if (b->zstd_pending || !b->zstd_seen)
					return -EBADMSG;
				return 0;
			}
		}
		b->zstd_seen = true;
		ib = (ZSTD_inBuffer){.src = b->in, .size = b->in_len, .pos = b->in_pos};
		hint = ZSTD_decompressStream(b->zd, &ob, &ib);
		if (ZSTD_isError(hint))
			return ZSTD_getErrorCode(hint) == ZSTD_error_memory_allocation ? -ENOMEM
			                                                               : -EBADMSG;
		b->in_pos = ib.pos;
		b->zstd_pending = hint;
	}
	r = lb_check_out(b, ob.pos);
	if (r < 0)
		return r;
	for (size_t done = 0; done < ob.pos;) {
		size_t n = MIN(ob.pos - done, b->span - b->frame_len);

		memcpy(b->frame + b->frame_len, b->out + done, n);
		b->frame_len += n;
		done += n;
		if (b->frame_len == b->span) {
			r = flush_frame(b);
			if (r < 0)
				return r;
		}
	}
	*ret = b->out;
	return (ssize_t)ob.pos;
}

static ssize_t produce(struct li_builder *b, const void **ret)
{
	switch (b->comp) {
	case LI_GZIP:
		return lb_gzip_produce(b, ret);
	case LI_ZSTD:
		return produce_zstd(b, ret);
	default:
		return produce_tar(b, ret);
	}
}

static la_ssize_t read_cb(struct archive *a, void *userdata, const void **ret)
{
	struct li_builder *b = userdata;
	ssize_t n = produce(b, ret);

	if (n < 0) {
		if (!b->err)
			b->err = (int)n;
		archive_set_error(a, EIO, "layer stream: %s", strerror((int)-n));
		return -1;
	}
	return n;
}

/* ---- entries ---- */

static int add_string(struct li_builder *b, const void *s, size_t len, uint32_t *ret)
{
	size_t at = b->strings.len;
	int r;

	if (at + len + 1 > UINT32_MAX)
		return -EFBIG;
	r = lb_dynbuf_append(&b->strings, s, len);
	if (r < 0)
		return r;
	r = lb_dynbuf_append(&b->strings, "", 1);
	if (r < 0)
		return r;
	*ret = (uint32_t)at;
	return 0;
}

/* Normalises a tar path into out (at least strlen(in) + 1 bytes): relative to the layer
 * root, without empty, "." or trailing components. Returns false when a component is "..":
 * such an entry would land outside the root when extracted naively, and no layer built by
 * a sane tool contains one, so it is dropped rather than cleaned lexically. */
static bool normalise_path(const char *in, char *out)
{
	size_t o = 0;

	while (*in) {
		const char *end = strchrnul(in, '/');
		size_t n = (size_t)(end - in);

		if (n == 2 && in[0] == '.' && in[1] == '.')
			return false;
		if (n > 0 && !(n == 1 && in[0] == '.')) {
			if (o > 0)
				out[o++] = '/';
			memcpy(out + o, in, n);
			o += n;
		}
		in = *end ? end + 1 : end;
	}
	out[o] = 0;
	return true;
}

static uint32_t clamp_id(la_int64_t id)
{
	/* Out-of-range ids cannot be chowned to; show them as the overflow id, as the kernel
	 * does for unmapped ids. */
	return id < 0 || id >= UINT32_MAX ? 65534u : (uint32_t)id;
}

static size_t meta_bytes(const struct li_builder *b)
{
	return b->strings.len + b->xattrs.len + b->segments.len + b->entries.len;
}

static struct lix_xattr *find_xattr(struct li_builder *b, const struct lix_entry *e,
                                    const char *name)
{
	struct lix_xattr *x;

	if (e->n_xattrs == 0)
		return NULL; /* the table may not be allocated yet */
	x = (struct lix_xattr *)b->xattrs.p + e->xattr_first;
	for (uint32_t k = 0; k < e->n_xattrs; k++)
		if (streq((const char *)b->strings.p + x[k].name, name))
			return &x[k];
	return NULL;
}

static int add_xattrs(struct li_builder *b, struct archive_entry *ae, struct lix_entry *e)
{
	struct lix_xattr *old;
	const char *name;
	const void *value;
	size_t size;
	int r;

	e->xattr_first = b->n_xattrs;
	archive_entry_xattr_reset(ae);
	while (archive_entry_xattr_next(ae, &name, &value, &size) == ARCHIVE_OK) {
		struct lix_xattr x = {0};

		if (!name || !*name || strlen(name) > 255 || size > 65536 || (!value && size))
			return -EBADMSG; /* the kernel's XATTR_NAME_MAX and XATTR_SIZE_MAX */
		r = add_string(b, value, size, &x.value);
		if (r < 0)
			return r;
		x.value_len = (uint32_t)size;
		/* libarchive's pax writer stores each xattr twice (LIBARCHIVE.xattr and
		 * SCHILY.xattr) and the reader returns both: one name, the last value. */
		old = find_xattr(b, e, name);
		if (old) {
			old->value = x.value;
			old->value_len = x.value_len;
			continue;
		}
		if (e->n_xattrs >= b->lim.max_xattrs || b->n_xattrs == UINT32_MAX)
			return -EFBIG;
		r = add_string(b, name, strlen(name), &x.name);
		if (r < 0)
			return r;
		r = lb_dynbuf_append(&b->xattrs, &x, sizeof(x));
		if (r < 0)
			return r;
		b->n_xattrs++;
		e->n_xattrs++;
	}
	return 0;
}

static int add_segments(struct li_builder *b, struct archive_entry *ae, struct lix_entry *e)
{
	la_int64_t off, len;
	uint64_t end = 0, stored = 0;
	int r;

	e->seg_first = b->n_segments;
	if (archive_entry_sparse_reset(ae) == 0) {
		e->stored = e->size;
		return 0;
	}
	e->flags |= LIX_F_SPARSE;
	while (archive_entry_sparse_next(ae, &off, &len) == ARCHIVE_OK) {
		struct lix_segment s;

		if (off < 0 || len < 0 || (uint64_t)off < end || (uint64_t)len > e->size ||
		    (uint64_t)off > e->size - (uint64_t)len)
			return -EBADMSG;
		if (len == 0)
			continue;
		if (e->n_segments >= b->lim.max_segments || b->n_segments == UINT32_MAX)
			return -EFBIG;
		s = (struct lix_segment){
		    .file_off = (uint64_t)off, .len = (uint64_t)len, .stored_off = stored};
		r = lb_dynbuf_append(&b->segments, &s, sizeof(s));
		if (r < 0)
			return r;
		b->n_segments++;
		e->n_segments++;
		end = (uint64_t)off + (uint64_t)len;
		stored += (uint64_t)len;
	}
	e->stored = stored;
	return 0;
}

static int add_entry(struct li_builder *b, struct archive_entry *ae, uint64_t data_off)
{
	struct lix_entry e = {.link = LIX_NONE, .data_off = data_off};
	const char *path, *hardlink, *symlink = NULL;
	int r;

	path = archive_entry_pathname(ae);
	if (!path)
		path = archive_entry_pathname_utf8(ae);
	if (!path)
		return -EBADMSG;
	if (strlen(path) > b->lim.max_path)
		return -EFBIG;
	if (!normalise_path(path, b->pathbuf))
		goto drop;

	hardlink = archive_entry_hardlink(ae);
	if (!hardlink)
		hardlink = archive_entry_hardlink_utf8(ae);
	if (hardlink) {
		if (strlen(hardlink) > b->lim.max_path)
			return -EFBIG;
		if (!normalise_path(hardlink, b->linkbuf) || !b->linkbuf[0])
			goto drop;
		e.type = LI_HARDLINK;
	} else {
		switch (archive_entry_filetype(ae)) {
		case AE_IFREG:
			e.type = LI_REG;
			break;
		case AE_IFDIR:
			e.type = LI_DIR;
			break;
		case AE_IFLNK:
			e.type = LI_SYMLINK;
			symlink = archive_entry_symlink(ae);
			if (!symlink)
				symlink = archive_entry_symlink_utf8(ae);
			if (!symlink || !*symlink)
				goto drop; /* the kernel refuses empty targets */
			if (strlen(symlink) > b->lim.max_path)
				return -EFBIG;
			break;
		case AE_IFCHR:
			e.type = LI_CHR;
			break;
		case AE_IFBLK:
			e.type = LI_BLK;
			break;
		case AE_IFIFO:
			e.type = LI_FIFO;
			break;
		default:
			goto drop; /* sockets and unknown types cannot be extracted either */
		}
	}
	if (!b->pathbuf[0] && e.type != LI_DIR)
		goto drop; /* only a directory can describe the root */
	if (b->n_entries >= b->lim.max_entries)
		return -EFBIG;

	e.mode = (uint32_t)archive_entry_perm(ae) & 07777;
	e.uid = clamp_id(archive_entry_uid(ae));
	e.gid = clamp_id(archive_entry_gid(ae));
	if (archive_entry_mtime_is_set(ae)) {
		e.mtime_sec = archive_entry_mtime(ae);
		e.mtime_nsec = (uint32_t)MIN(MAX(archive_entry_mtime_nsec(ae), 0L), 999999999L);
	}
	if (e.type == LI_CHR || e.type == LI_BLK) {
		e.rdev_major = (uint32_t)archive_entry_rdevmajor(ae);
		e.rdev_minor = (uint32_t)archive_entry_rdevminor(ae);
	}
	r = add_string(b, b->pathbuf, strlen(b->pathbuf), &e.path);
	if (r < 0)
		return r;
	if (hardlink)
		r = add_string(b, b->linkbuf, strlen(b->linkbuf), &e.link);
	else if (symlink)
		r = add_string(b, symlink, strlen(symlink), &e.link);
	if (r < 0)
		return r;
	r = add_xattrs(b, ae, &e);
	if (r < 0)
		return r;
	if (e.type == LI_REG) {
		la_int64_t size = archive_entry_size_is_set(ae) ? archive_entry_size(ae) : 0;

		if (size < 0)
			return -EBADMSG;
		e.size = (uint64_t)size;
		r = add_segments(b, ae, &e);
		if (r < 0)
			return r;
	}
	r = lb_dynbuf_append(&b->entries, &e, sizeof(e));
	if (r < 0)
		return r;
	b->n_entries++;
	if (meta_bytes(b) > b->lim.max_meta)
		return -EFBIG;
	return 0;
drop:
	b->dropped++;
	return 0;
}

/* ---- the worker ---- */

static int detect(struct li_builder *b)
{
	static const uint8_t zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
	const uint8_t *p;
	int r;

	while (b->in_len < 4) {
		r = lb_input_more(b);
		if (r < 0)
			return r;
		if (r == 0)
			break;
	}
	p = b->in;
	if (b->in_len >= 2 && p[0] == 0x1f && p[1] == 0x8b)
		b->comp = LI_GZIP;
	else if (b->in_len >= 4 && (memcmp(p, zstd_magic, 4) == 0 ||
	                            ((p[0] & 0xf0) == 0x50 && p[1] == 0x2a && p[2] == 0x4d &&
	                             p[3] == 0x18))) /* a skippable frame first */
		b->comp = LI_ZSTD;
	else
		b->comp = LI_TAR;
	return 0;
}

static int setup_zstd(struct li_builder *b)
{
	if (b->data_fd < 0)
		return -EINVAL;
	b->zd = ZSTD_createDCtx();
	b->zc = ZSTD_createCCtx();
	b->frame = malloc(b->span);
	b->frame_out_cap = ZSTD_compressBound(b->span);
	b->frame_out = malloc(b->frame_out_cap);
	if (!b->zd || !b->zc || !b->frame || !b->frame_out)
		return -ENOMEM;
	return 0;
}

static int parse(struct li_builder *b)
{
	struct archive *a = archive_read_new();
	struct archive_entry *ae;
	int r = 0, ar;

	if (!a)
		return -ENOMEM;
	archive_read_support_format_tar(a);
	ar = archive_read_open(a, b, NULL, read_cb, NULL);
	while (ar == ARCHIVE_OK) {
		ar = archive_read_next_header(a, &ae);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
			break; /* ARCHIVE_RETRY is a damaged header: not retried */
		/* With no filter, the client stream position right after the header is where
		 * the entry's data (after the in-data map of a pax 1.0 sparse file) begins. */
		r = add_entry(b, ae, (uint64_t)archive_filter_bytes(a, 0));
		if (r < 0)
			break;
		ar = ARCHIVE_OK;
	}
	if (r == 0 && ar != ARCHIVE_EOF && ar != ARCHIVE_OK) {
		if (b->err)
			r = b->err;
		else if (b->total_out == 0)
			r = 0; /* an empty stream is an empty layer */
		else
			r = -EBADMSG;
	}
	archive_read_free(a);
	return r;
}

static int run(struct li_builder *b)
{
	const void *p;
	ssize_t n;
	int r;

	if (b->comp == LI_AUTO) {
		r = detect(b);
		if (r < 0)
			return r;
	}
	if (b->default_span)
		b->span = b->comp == LI_GZIP ? LI_GZIP_SPAN : LI_DEFAULT_SPAN;
	if (b->comp == LI_ZSTD) {
		r = setup_zstd(b);
		if (r < 0)
			return r;
	}
	r = parse(b);
	if (r < 0)
		return r;
	/* libarchive stops at the end-of-archive blocks; the rest of the stream must still
	 * decompress cleanly (checksums, truncation) and counts against the limits. */
	while ((n = produce(b, &p)) > 0)
		;
	if (n < 0)
		return (int)n;
	r = lb_gzip_finish(b);
	if (r < 0)
		return r;
	if (b->comp == LI_ZSTD)
		return flush_frame(b);
	return 0;
}

static void *worker(void *userdata)
{
	struct li_builder *b = userdata;
	int r = run(b);

	pthread_mutex_lock(&b->lock);
	b->worker_done = true;
	b->worker_err = r;
	pthread_cond_broadcast(&b->can_put);
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

/* ---- API ---- */

int li_builder_new(enum li_compression comp, uint32_t span, int data_fd, struct li_builder **ret)
{
	_cleanup_(li_builder_freep) struct li_builder *b = NULL;
	bool default_span = span == 0;
	int r;

	if (span == 0)
		span = comp == LI_GZIP ? LI_GZIP_SPAN : LI_DEFAULT_SPAN;
	if (span < MIN_SPAN || span > MAX_SPAN || comp > LI_ZSTD)
		return -EINVAL;
	if (comp == LI_ZSTD && data_fd < 0)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->comp = comp;
	b->span = span;
	b->default_span = default_span;
	b->data_fd = data_fd;
	li_limits_default(&b->lim);
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->can_put, NULL);
	pthread_cond_init(&b->can_get, NULL);
	b->ring = malloc(RING_SIZE);
	b->in = malloc(IN_SIZE);
	b->out = malloc(WINDOW_SIZE + OUT_SIZE); /* history for gzip windows, then output */
	b->pathbuf = malloc(2 * (size_t)b->lim.max_path + 2);
	b->linkbuf = malloc(2 * (size_t)b->lim.max_path + 2);
	if (!b->ring || !b->in || !b->out || !b->pathbuf || !b->linkbuf)
		return -ENOMEM;
	r = -pthread_create(&b->thread, NULL, worker, b);
	if (r < 0)
		return r;
	b->thread_running = true;
	*ret = TAKE_PTR(b);
	return 0;
}

int li_builder_set_limits(struct li_builder *b, const struct li_limits *lim)
{
	char *p, *l;

	if (b->fed || lim->max_path == 0 || lim->max_path > (1u << 20) || lim->max_meta == 0 ||
	    lim->max_meta >= UINT32_MAX)
		return -EINVAL;
	if (lim->max_path > b->lim.max_path) {
		/* The worker touches pathbuf only once data arrives, and none has yet. */
		p = realloc(b->pathbuf, 2 * (size_t)lim->max_path + 2);
		if (!p)
			return -ENOMEM;
		b->pathbuf = p;
		l = realloc(b->linkbuf, 2 * (size_t)lim->max_path + 2);
		if (!l)
			return -ENOMEM;
		b->linkbuf = l;
	}
	b->lim = *lim;
	return 0;
}

int li_builder_feed(struct li_builder *b, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (b->finished || !b->thread_running)
		return -EINVAL;
	b->fed = true;
	while (len > 0) {
		size_t tail, n, first;

		pthread_mutex_lock(&b->lock);
		while (b->ring_len == RING_SIZE && !b->worker_done)
			pthread_cond_wait(&b->can_put, &b->lock);
		if (b->worker_done) {
			/* The worker stops early only on an error. */
			int r = b->worker_err < 0 ? b->worker_err : -EBADMSG;

			pthread_mutex_unlock(&b->lock);
			return r;
		}
		tail = (b->ring_head + b->ring_len) % RING_SIZE;
		n = MIN(len, RING_SIZE - b->ring_len);
		first = MIN(n, RING_SIZE - tail);
		memcpy(b->ring + tail, p, first);
		memcpy(b->ring, p + first, n - first);
		b->ring_len += n;
		pthread_cond_signal(&b->can_get);
		pthread_mutex_unlock(&b->lock);
		p += n;
		len -= n;
	}
	return 0;
}

static size_t align8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static int serialise(struct li_builder *b, const char *digest, void **ret_buf, size_t *ret_len)
{
	struct lix_header h = {
	    .magic = LIX_MAGIC,
	    .version = LIX_VERSION,
	    .header_size = sizeof(struct lix_header),
	    .compression = b->comp,
	    .span = b->span,
	    .dropped = b->dropped,
	    .total_in = b->in_base + b->in_len,
	    .total_out = b->total_out,
	    .zst_size = b->zst_size,
	    .n_entries = b->n_entries,
	    .n_xattrs = b->n_xattrs,
	    .n_segments = b->n_segments,
	    .n_points = b->n_points,
	    .windows_len = b->windows.len,
	    .strings_len = b->strings.len,
	};
	size_t off = align8(sizeof(h));
	uint8_t *buf;

	if (strlen(digest) >= sizeof(h.digest))
		return -EINVAL;
	strncpy(h.digest, digest, sizeof(h.digest));
	h.entries_off = off;
	off = align8(off + b->entries.len);
	h.xattrs_off = off;
	off = align8(off + b->xattrs.len);
	h.segments_off = off;
	off = align8(off + b->segments.len);
	h.points_off = off;
	off = align8(off + b->points.len);
	h.windows_off = off;
	off = align8(off + b->windows.len);
	h.strings_off = off;
	off = align8(off + b->strings.len);
	h.file_size = off;

	buf = calloc(1, off);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	if (b->entries.len)
		memcpy(buf + h.entries_off, b->entries.p, b->entries.len);
	if (b->xattrs.len)
		memcpy(buf + h.xattrs_off, b->xattrs.p, b->xattrs.len);
	if (b->segments.len)
		memcpy(buf + h.segments_off, b->segments.p, b->segments.len);
	if (b->points.len)
		memcpy(buf + h.points_off, b->points.p, b->points.len);
	if (b->windows.len)
		memcpy(buf + h.windows_off, b->windows.p, b->windows.len);
	if (b->strings.len)
		memcpy(buf + h.strings_off, b->strings.p, b->strings.len);
	h.crc = (uint32_t)crc32_z(0, buf, off); /* over the file with crc still 0 */
	memcpy(buf + offsetof(struct lix_header, crc), &h.crc, sizeof(h.crc));
	*ret_buf = buf;
	*ret_len = off;
	return 0;
}

static void stop_worker(struct li_builder *b, bool cancel)
{
	if (!b->thread_running)
		return;
	pthread_mutex_lock(&b->lock);
	b->eof = true;
	b->cancel = cancel;
	pthread_cond_broadcast(&b->can_get);
	pthread_mutex_unlock(&b->lock);
	pthread_join(b->thread, NULL);
	b->thread_running = false;
}

static int check_described_points(struct li_builder *b);

int li_builder_finish(struct li_builder *b, const char *layer_digest, void **ret_buf,
                      size_t *ret_len)
{
	const struct lix_entry *e;
	int r;

	if (b->described) {
		if (b->finished)
			return -EINVAL;
		b->finished = true;
		r = check_described_points(b);
		if (r < 0)
			return r;
	} else {
		if (b->finished || !b->thread_running)
			return -EINVAL;
		b->finished = true;
		stop_worker(b, false);
		r = b->worker_err;
		if (r < 0)
			return r;
	}
	/* libarchive checked that every entry's data was there; this guards the format. */
	e = (const struct lix_entry *)b->entries.p;
	for (uint32_t i = 0; i < b->n_entries; i++)
		if (e[i].data_off > b->total_out || e[i].stored > b->total_out - e[i].data_off)
			return -EBADMSG;
	return serialise(b, layer_digest ? layer_digest : "", ret_buf, ret_len);
}

/* ---- an index described instead of built from the stream ---- */

int li_builder_new_described(uint32_t span, uint64_t total_in, uint64_t total_out,
                             struct li_builder **ret)
{
	_cleanup_(li_builder_freep) struct li_builder *b = NULL;

	if (span < MIN_SPAN || span > MAX_SPAN)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->comp = LI_GZIP;
	b->span = span;
	b->described = true;
	b->data_fd = -1;
	b->in_base = total_in; /* serialise() records in_base + in_len */
	b->total_out = total_out;
	li_limits_default(&b->lim);
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->can_put, NULL);
	pthread_cond_init(&b->can_get, NULL);
	b->pathbuf = malloc(2 * (size_t)b->lim.max_path + 2);
	b->linkbuf = malloc(2 * (size_t)b->lim.max_path + 2);
	if (!b->pathbuf || !b->linkbuf)
		return -ENOMEM;
	if (total_out > b->lim.max_out)
		return -EFBIG;
	*ret = TAKE_PTR(b);
	return 0;
}

/* add_entry() for a described entry: the same checks, the same records. */
int li_builder_describe_entry(struct li_builder *b, const struct li_desc_entry *d)
{
	struct lix_entry e = {.link = LIX_NONE, .data_off = d->data_off, .type = d->type};
	bool link = d->type == LI_HARDLINK || d->type == LI_SYMLINK;
	int r;

	if (!b->described || b->finished)
		return -EINVAL;
	if (!d->path || d->type < LI_REG || d->type > LI_FIFO)
		return -EINVAL;
	if (strlen(d->path) > b->lim.max_path || (d->link && strlen(d->link) > b->lim.max_path))
		return -EFBIG;
	if (!normalise_path(d->path, b->pathbuf))
		goto drop;
	if (link && (!d->link || !*d->link))
		goto drop; /* the kernel refuses empty targets; a hardlink needs one */
	if (d->type == LI_HARDLINK && (!normalise_path(d->link, b->linkbuf) || !b->linkbuf[0]))
		goto drop;
	if (!b->pathbuf[0] && e.type != LI_DIR)
		goto drop; /* only a directory can describe the root */
	if (b->n_entries >= b->lim.max_entries || d->n_xattrs > b->lim.max_xattrs)
		return -EFBIG;
	e.mode = d->mode & 07777;
	e.uid = clamp_id((la_int64_t)MIN(d->uid, (uint64_t)INT64_MAX));
	e.gid = clamp_id((la_int64_t)MIN(d->gid, (uint64_t)INT64_MAX));
	e.mtime_sec = d->mtime_sec;
	e.mtime_nsec = MIN(d->mtime_nsec, 999999999u);
	if (e.type == LI_CHR || e.type == LI_BLK) {
		e.rdev_major = d->rdev_major;
		e.rdev_minor = d->rdev_minor;
	}
	r = add_string(b, b->pathbuf, strlen(b->pathbuf), &e.path);
	if (r >= 0 && d->type == LI_HARDLINK)
		r = add_string(b, b->linkbuf, strlen(b->linkbuf), &e.link);
	else if (r >= 0 && d->type == LI_SYMLINK)
		r = add_string(b, d->link, strlen(d->link), &e.link);
	if (r < 0)
		return r;
	e.xattr_first = b->n_xattrs;
	for (size_t k = 0; k < d->n_xattrs; k++) {
		const char *name = d->xattr_names[k];
		size_t size = d->xattr_lens[k];
		struct lix_xattr x = {0}, *old;

		if (!name || !*name || strlen(name) > 255 || size > 65536 ||
		    (!d->xattr_values[k] && size))
			return -EBADMSG;
		r = add_string(b, d->xattr_values[k], size, &x.value);
		if (r < 0)
			return r;
		x.value_len = (uint32_t)size;
		old = find_xattr(b, &e, name);
		if (old) {
			old->value = x.value;
			old->value_len = x.value_len;
			continue;
		}
		if (b->n_xattrs == UINT32_MAX)
			return -EFBIG;
		r = add_string(b, name, strlen(name), &x.name);
		if (r >= 0)
			r = lb_dynbuf_append(&b->xattrs, &x, sizeof(x));
		if (r < 0)
			return r;
		b->n_xattrs++;
		e.n_xattrs++;
	}
	e.seg_first = b->n_segments;
	if (e.type == LI_REG) {
		e.size = d->size;
		e.stored = d->size;
	}
	r = lb_dynbuf_append(&b->entries, &e, sizeof(e));
	if (r < 0)
		return r;
	b->n_entries++;
	if (meta_bytes(b) > b->lim.max_meta)
		return -EFBIG;
	return 0;
drop:
	b->dropped++;
	return 0;
}

int li_builder_describe_member(struct li_builder *b, uint64_t in_off, uint64_t out_off)
{
	struct lix_point p = {.out_off = out_off, .in_off = in_off, .flags = LIX_P_MEMBER};

	if (!b->described || b->finished)
		return -EINVAL;
	return lb_append_point(b, &p);
}

int li_builder_describe_point(struct li_builder *b, uint64_t in_off, uint64_t out_off, uint8_t bits,
                              const void *window, size_t window_len)
{
	struct lix_point p = {.out_off = out_off, .in_off = in_off, .bits = bits};
	uLongf clen;
	int r;

	if (!b->described || b->finished)
		return -EINVAL;
	if (bits > 7 || (bits && in_off == 0) || window_len > WINDOW_SIZE)
		return -EBADMSG;
	if (bits)
		p.flags = LIX_P_PRIME_DATA;
	if (window_len > 0) {
		clen = compressBound((uLong)window_len);
		p.window_off = b->windows.len;
		r = lb_dynbuf_append(&b->windows, NULL, clen);
		if (r < 0)
			return r;
		if (compress2(b->windows.p + p.window_off, &clen, window, (uLong)window_len, 6) !=
		    Z_OK)
			return -ENOMEM;
		b->windows.len = p.window_off + clen;
		p.window_len = (uint32_t)clen;
	}
	return lb_append_point(b, &p);
}

/* The described points must be what the reader assumes of any index: the first at 0, both
 * offsets strictly increasing, all within the layer. */
static int check_described_points(struct li_builder *b)
{
	const struct lix_point *p = (const struct lix_point *)b->points.p;
	uint64_t total_in = b->in_base + b->in_len;

	for (uint32_t k = 0; k < b->n_points; k++) {
		if (k == 0 ? p[k].out_off != 0
		           : p[k].out_off <= p[k - 1].out_off || p[k].in_off <= p[k - 1].in_off)
			return -EBADMSG;
		if (p[k].in_off >= total_in || p[k].out_off >= b->total_out)
			return -EBADMSG;
	}
	return 0;
}

int li_builder_stats(const struct li_builder *b, struct li_build_stats *ret)
{
	if (!b->finished || b->thread_running || b->worker_err < 0)
		return -EINVAL;
	*ret = (struct li_build_stats){
	    .points = b->n_points,
	    .windows_whole = b->sparse_kept,
	    .window_bytes = b->windows.len,
	    .entry_bytes = b->entries.len + b->xattrs.len + b->segments.len,
	    .string_bytes = b->strings.len,
	};
	return 0;
}

void li_builder_free(struct li_builder *b)
{
	if (!b)
		return;
	stop_worker(b, true);
	free(b->isal);
	free(b->deflate_buf);
	dynbuf_free(&b->zin);
	dynbuf_free(&b->zout);
	free(b->used);
	free(b->sparse);
	free(b->check);
	free(b->check_out);
	ZSTD_freeDCtx(b->zd);
	ZSTD_freeCCtx(b->zc);
	free(b->frame);
	free(b->frame_out);
	dynbuf_free(&b->entries);
	dynbuf_free(&b->xattrs);
	dynbuf_free(&b->segments);
	dynbuf_free(&b->points);
	dynbuf_free(&b->windows);
	dynbuf_free(&b->strings);
	free(b->ring);
	free(b->in);
	free(b->out);
	free(b->pathbuf);
	free(b->linkbuf);
	pthread_cond_destroy(&b->can_put);
	pthread_cond_destroy(&b->can_get);
	pthread_mutex_destroy(&b->lock);
	free(b);
}
