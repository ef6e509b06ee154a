/* SOCI zTOCs and index manifests; see soci.h. */
#include <jansson.h>
#include <stdio.h>
#include "fsd/image/estargz.h"
#include "fsd/image/soci.h"
#include "fsd/index/layerindex.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the flatbuffer reader assumes a little-endian host"
#endif

#define WINDOW 32768u
#define CHECKPOINT_REC (8 + 8 + 1 + WINDOW)
#define MAX_ENTRIES (4u << 20)

/* ---- a flatbuffer reader for hostile input: every offset is bounded ---- */

struct fb {
	const uint8_t *p;
	uint64_t len;
};

struct fbt {
	uint64_t t, vt;      /* the table and its vtable */
	uint16_t vlen, tlen; /* their sizes */
};

static bool rd(const struct fb *b, uint64_t at, void *v, size_t n)
{
	if (at > b->len || b->len - at < n)
		return false;
	memcpy(v, b->p + at, n);
	return true;
}

static bool fb_table(const struct fb *b, uint64_t t, struct fbt *ret)
{
	int32_t so;
	int64_t vt;

	if (!rd(b, t, &so, 4))
		return false;
	vt = (int64_t)t - (int64_t)so;
	if (vt < 0 || !rd(b, (uint64_t)vt, &ret->vlen, 2) ||
	    !rd(b, (uint64_t)vt + 2, &ret->tlen, 2))
		return false;
	if (ret->vlen < 4 || ret->vlen % 2 || (uint64_t)vt + ret->vlen > b->len || ret->tlen < 4 ||
	    t + ret->tlen > b->len)
		return false;
	ret->t = t;
	ret->vt = (uint64_t)vt;
	return true;
}

/* The position of field k (size bytes): 1 and *ret, 0 when absent, -1 when out of bounds. */
static int fb_field(const struct fb *b, const struct fbt *t, unsigned k, unsigned size,
                    uint64_t *ret)
{
	uint16_t fo;

	if (4u + 2u * k + 2u > t->vlen)
		return 0;
	if (!rd(b, t->vt + 4 + 2 * k, &fo, 2))
		return -1;
	if (fo == 0)
		return 0;
	if (fo < 4 || (unsigned)fo + size > t->tlen)
		return -1;
	*ret = t->t + fo;
	return 1;
}

/* Follows the uoffset at pos. */
static bool fb_follow(const struct fb *b, uint64_t pos, uint64_t *ret)
{
	uint32_t off;

	if (!rd(b, pos, &off, 4) || off == 0 || pos + off >= b->len)
		return false;
	*ret = pos + off;
	return true;
}

/* A string at pos (the uoffset to it): NUL-terminated within the buffer, no NUL inside
 * unless binary. */
static bool fb_string_at(const struct fb *b, uint64_t pos, bool binary, const char **ret,
                         size_t *ret_len)
{
	uint64_t s;
	uint32_t n;

	if (!fb_follow(b, pos, &s) || !rd(b, s, &n, 4) || b->len - s - 4 < (uint64_t)n + 1 ||
	    b->p[s + 4 + n] != 0)
		return false;
	if (!binary && memchr(b->p + s + 4, 0, n))
		return false;
	*ret = (const char *)b->p + s + 4;
	*ret_len = n;
	return true;
}

/* String field k: 1, 0 when absent (*ret NULL), -1 when bad. */
static int fb_string(const struct fb *b, const struct fbt *t, unsigned k, bool binary,
                     const char **ret, size_t *ret_len)
{
	uint64_t pos;
	int r = fb_field(b, t, k, 4, &pos);

	*ret = NULL;
	*ret_len = 0;
	if (r <= 0)
		return r;
	return fb_string_at(b, pos, binary, ret, ret_len) ? 1 : -1;
}

/* Vector field k of count elements of esize bytes from *ret_elems: 1, 0, -1. */
static int fb_vector(const struct fb *b, const struct fbt *t, unsigned k, size_t esize,
                     uint64_t *ret_elems, uint32_t *ret_count)
{
	uint64_t pos, v;
	uint32_t n;
	int r = fb_field(b, t, k, 4, &pos);

	*ret_count = 0;
	if (r <= 0)
		return r;
	if (!fb_follow(b, pos, &v) || !rd(b, v, &n, 4) || (b->len - v - 4) / esize < n)
		return -1;
	*ret_elems = v + 4;
	*ret_count = n;
	return 1;
}

/* Scalar field k into v (size bytes), default def when absent: false when bad. */
static bool fb_scalar(const struct fb *b, const struct fbt *t, unsigned k, void *v, unsigned size)
{
	uint64_t pos;
	int r = fb_field(b, t, k, size, &pos);

	if (r < 0)
		return false;
	return r == 0 || rd(b, pos, v, size);
}

/* Sub-table field k: 1, 0, -1. */
static int fb_subtable(const struct fb *b, const struct fbt *t, unsigned k, struct fbt *ret)
{
	uint64_t pos, s;
	int r = fb_field(b, t, k, 4, &pos);

	if (r <= 0)
		return r;
	return fb_follow(b, pos, &s) && fb_table(b, s, ret) ? 1 : -1;
}

/* ---- the zTOC ---- */

/* Field numbers of ztoc.fbs. */
enum { ZTOC_VERSION, ZTOC_TOOL, ZTOC_COMPRESSED, ZTOC_UNCOMPRESSED, ZTOC_TOC, ZTOC_COMPRESSION };
enum { CI_ALGORITHM, CI_MAX_SPAN_ID, CI_SPAN_DIGESTS, CI_CHECKPOINTS };
enum {
	FM_NAME,
	FM_TYPE,
	FM_OFFSET,
	FM_SIZE,
	FM_LINKNAME,
	FM_MODE,
	FM_UID,
	FM_GID,
	FM_UNAME,
	FM_GNAME,
	FM_MODTIME,
	FM_DEVMAJOR,
	FM_DEVMINOR,
	FM_XATTRS,
};

struct checkpoint {
	uint64_t in, out;
	uint8_t bits;
	const uint8_t *window; /* NULL: zeros (v1's implicit first checkpoint) */
};

static int parse_checkpoints(const uint8_t *p, uint64_t len, struct checkpoint **ret,
                             uint32_t *ret_n, struct error *err)
{
	struct checkpoint *c;
	uint32_t n, first = 0;
	uint64_t rec;

	if (len < 12)
		return error_set(err, -EBADMSG, "zTOC: no checkpoints");
	memcpy(&n, p, 4);
	if (n == 0 || n > len / CHECKPOINT_REC + 1)
		return error_set(err, -EBADMSG, "zTOC: %u checkpoints do not fit", n);
	/* v2 has every checkpoint; v1 leaves out the first (after a 10-byte gzip header). */
	if (len == 12 + (uint64_t)n * CHECKPOINT_REC)
		first = 0;
	else if (len == 12 + (uint64_t)(n - 1) * CHECKPOINT_REC)
		first = 1;
	else
		return error_set(err, -EBADMSG, "zTOC: %u checkpoints do not fit", n);
	c = calloc(n, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (first)
		c[0] = (struct checkpoint){.in = 10};
	rec = 12;
	for (uint32_t i = first; i < n; i++, rec += CHECKPOINT_REC) {
		memcpy(&c[i].in, p + rec, 8);
		memcpy(&c[i].out, p + rec + 8, 8);
		c[i].bits = p[rec + 16];
		c[i].window = p + rec + 17;
	}
	*ret = c;
	*ret_n = n;
	return 0;
}

/* The xattrs of a file: PAX records SCHILY.xattr.NAME. */
static int entry_xattrs(const struct fb *b, const struct fbt *fm, struct li_desc_entry *d,
                        const char ***names, const void ***values, size_t **lens)
{
	uint64_t elems;
	uint32_t n;
	int r = fb_vector(b, fm, FM_XATTRS, 4, &elems, &n);

	if (r < 0)
		return -EBADMSG;
	if (r == 0 || n == 0)
		return 0;
	if (n > 4096)
		return -EBADMSG;
	*names = calloc(n, sizeof(**names));
	*values = calloc(n, sizeof(**values));
	*lens = calloc(n, sizeof(**lens));
	if (!*names || !*values || !*lens)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		struct fbt x;
		uint64_t s;
		const char *key, *value;
		size_t klen, vlen;

		if (!fb_follow(b, elems + 4 * (uint64_t)i, &s) || !fb_table(b, s, &x) ||
		    fb_string(b, &x, 0, false, &key, &klen) <= 0 ||
		    fb_string(b, &x, 1, true, &value, &vlen) < 0)
			return -EBADMSG;
		if (strncmp(key, "SCHILY.xattr.", 13) != 0 || !key[13])
			continue;
		(*names)[d->n_xattrs] = key + 13;
		(*values)[d->n_xattrs] = value ? value : "";
		(*lens)[d->n_xattrs] = vlen;
		d->n_xattrs++;
	}
	d->xattr_names = *names;
	d->xattr_values = *values;
	d->xattr_lens = *lens;
	return 0;
}

static int describe_entry(const struct fb *b, const struct fbt *fm, struct li_builder *lb,
                          uint32_t i, struct error *err)
{
	_cleanup_free_ const char **names = NULL;
	_cleanup_free_ const void **values = NULL;
	_cleanup_free_ size_t *lens = NULL;
	struct li_desc_entry d = {0};
	const char *name, *type, *link, *mtime;
	size_t n;
	int64_t off = 0, size = 0, mode = 0, major = 0, minor = 0;
	uint32_t uid = 0, gid = 0;
	int r;

	if (fb_string(b, fm, FM_NAME, false, &name, &n) <= 0 ||
	    fb_string(b, fm, FM_TYPE, false, &type, &n) <= 0 ||
	    fb_string(b, fm, FM_LINKNAME, false, &link, &n) < 0 ||
	    fb_string(b, fm, FM_MODTIME, false, &mtime, &n) < 0 ||
	    !fb_scalar(b, fm, FM_OFFSET, &off, 8) || !fb_scalar(b, fm, FM_SIZE, &size, 8) ||
	    !fb_scalar(b, fm, FM_MODE, &mode, 8) || !fb_scalar(b, fm, FM_UID, &uid, 4) ||
	    !fb_scalar(b, fm, FM_GID, &gid, 4) || !fb_scalar(b, fm, FM_DEVMAJOR, &major, 8) ||
	    !fb_scalar(b, fm, FM_DEVMINOR, &minor, 8))
		return error_set(err, -EBADMSG, "zTOC: file %u is malformed", i);
	if (off < 0 || size < 0 || major < 0 || minor < 0 || major > UINT32_MAX ||
	    minor > UINT32_MAX)
		return error_set(err, -EBADMSG, "zTOC: %s: bad offset, size or device", name);
	if (streq(type, "reg"))
		d.type = LI_REG;
	else if (streq(type, "dir"))
		d.type = LI_DIR;
	else if (streq(type, "symlink"))
		d.type = LI_SYMLINK;
	else if (streq(type, "hardlink"))
		d.type = LI_HARDLINK;
	else if (streq(type, "char"))
		d.type = LI_CHR;
	else if (streq(type, "block"))
		d.type = LI_BLK;
	else if (streq(type, "fifo"))
		d.type = LI_FIFO;
	else
		return error_set(err, -EBADMSG, "zTOC: %s has type %s", name, type);
	d.path = name;
	d.link = link;
	d.mode = (uint32_t)(mode & 07777);
	d.uid = uid;
	d.gid = gid;
	d.rdev_major = (uint32_t)major;
	d.rdev_minor = (uint32_t)minor;
	if (d.type == LI_REG) {
		d.size = (uint64_t)size;
		d.data_off = (uint64_t)off;
	}
	if (mtime && !estargz_parse_time(mtime, &d.mtime_sec, &d.mtime_nsec))
		return error_set(err, -EBADMSG, "zTOC: %s: bad time", name);
	r = entry_xattrs(b, fm, &d, &names, &values, &lens);
	if (r < 0)
		return error_set(err, r, "zTOC: %s: bad xattrs", name);
	r = li_builder_describe_entry(lb, &d);
	if (r < 0)
		return error_set(err, r == -ENOMEM ? r : -EBADMSG, "zTOC: %s: %s", name,
		                 strerror(-r));
	return 0;
}

int soci_build(const char *layer, uint64_t blob_size, const void *ztoc, size_t len,
               void **ret_index, size_t *ret_index_len, struct spans **ret_spans, struct error *err)
{
	_cleanup_free_ struct checkpoint *cp = NULL;
	_cleanup_(li_builder_freep) struct li_builder *lb = NULL;
	_cleanup_(spans_freep) struct spans *sp = NULL;
	const struct fb b = {ztoc, len};
	struct fbt root, toc, ci;
	uint64_t root_off, files, digests, cps;
	uint32_t n_files, n_digests, n_cps = 0, n_cp = 0;
	int64_t comp = 0, uncomp = 0;
	int32_t max_span = 0;
	int8_t algo = 1;
	uint64_t prefix;
	int r;

	if (len > SOCI_MAX_ZTOC || !fb_follow(&b, 0, &root_off) || !fb_table(&b, root_off, &root))
		return error_set(err, -EBADMSG, "not a zTOC");
	if (!fb_scalar(&b, &root, ZTOC_COMPRESSED, &comp, 8) ||
	    !fb_scalar(&b, &root, ZTOC_UNCOMPRESSED, &uncomp, 8) ||
	    fb_subtable(&b, &root, ZTOC_TOC, &toc) <= 0 ||
	    fb_subtable(&b, &root, ZTOC_COMPRESSION, &ci) <= 0 ||
	    !fb_scalar(&b, &ci, CI_ALGORITHM, &algo, 1) ||
	    !fb_scalar(&b, &ci, CI_MAX_SPAN_ID, &max_span, 4) ||
	    fb_vector(&b, &ci, CI_SPAN_DIGESTS, 4, &digests, &n_digests) < 0 ||
	    fb_vector(&b, &ci, CI_CHECKPOINTS, 1, &cps, &n_cps) <= 0 ||
	    fb_vector(&b, &toc, 0, 4, &files, &n_files) < 0)
		return error_set(err, -EBADMSG, "zTOC: malformed");
	if (algo != 1)
		return error_set(err, -EBADMSG, "zTOC: the layer is not gzip");
	if (comp < 0 || (uint64_t)comp != blob_size || uncomp <= 0)
		return error_set(err, -EBADMSG, "zTOC: for %lld bytes, the layer has %llu",
		                 (long long)comp, (unsigned long long)blob_size);
	if (n_files > MAX_ENTRIES)
		return error_set(err, -EBADMSG, "zTOC: %u files", n_files);
	r = parse_checkpoints(b.p + cps, n_cps, &cp, &n_cp, err);
	if (r < 0)
		return r;
	if (max_span < 0 || (uint32_t)max_span + 1 != n_cp || n_digests != n_cp)
		return error_set(err, -EBADMSG, "zTOC: %u checkpoints, %u span digests", n_cp,
		                 n_digests);
	/* Checkpoints: the first at the start of the output, both offsets increasing, every
	 * one inside the layer. */
	for (uint32_t i = 0; i < n_cp; i++) {
		if (i == 0 ? cp[0].out != 0
		           : cp[i].in <= cp[i - 1].in || cp[i].out <= cp[i - 1].out)
			return error_set(err, -EBADMSG, "zTOC: checkpoint %u is out of order", i);
		if (cp[i].bits > 7 || cp[i].in >= blob_size || cp[i].in < (cp[i].bits ? 1u : 0u) ||
		    cp[i].out >= (uint64_t)uncomp)
			return error_set(err, -EBADMSG, "zTOC: checkpoint %u is out of bounds", i);
	}

	/* Spans: span i from checkpoint i's first byte (the one it starts inside of, if any)
	 * to checkpoint i + 1's offset; before them, the gzip header (unchecked). */
	prefix = cp[0].in - (cp[0].bits ? 1 : 0);
	r = spans_new_chunked(layer, blob_size, n_cp + (prefix > 0), n_cp, &sp);
	if (r < 0)
		return error_set(err, r == -ENOMEM ? r : -EBADMSG, "zTOC: %s", strerror(-r));
	sp->check = SPANS_COMPRESSED;
	for (uint32_t i = 0; i < n_cp; i++) {
		uint32_t k = i + (prefix > 0);
		uint64_t start = cp[i].in - (cp[i].bits ? 1 : 0);
		uint64_t end = i + 1 < n_cp ? cp[i + 1].in : blob_size;
		const char *d;
		size_t dlen;
		char hex[DIGEST_STR_LEN + 1];

		if (!fb_string_at(&b, digests + 4 * (uint64_t)i, false, &d, &dlen) ||
		    dlen != DIGEST_STR_LEN || !digest_valid(d))
			return error_set(err, -EBADMSG, "zTOC: span digest %u is malformed", i);
		memcpy(hex, d, DIGEST_STR_LEN + 1);
		sp->off[k] = start;
		sp->first[k] = i;
		sp->count[k] = 1;
		sp->chunks[i].inner = 0;
		sp->chunks[i].size = end > start ? end - start : 0;
		for (int j = 0; j < 32; j++) {
			unsigned v;

			if (sscanf(hex + 7 + 2 * j, "%2x", &v) != 1)
				return error_set(err, -EBADMSG, "zTOC: span digest %u", i);
			sp->chunks[i].digest[j] = (uint8_t)v;
		}
	}
	r = spans_chunked_check(sp, err);
	if (r < 0)
		return r;

	/* The layer index: the files at their offsets in the tar stream, a point per
	 * checkpoint. */
	r = li_builder_new_described(LI_GZIP_SPAN, blob_size, (uint64_t)uncomp, &lb);
	if (r < 0)
		return error_set(err, r == -ENOMEM ? r : -EBADMSG, "zTOC: %s", strerror(-r));
	for (uint32_t i = 0; i < n_files; i++) {
		struct fbt fm;
		uint64_t s;

		if (!fb_follow(&b, files + 4 * (uint64_t)i, &s) || !fb_table(&b, s, &fm))
			return error_set(err, -EBADMSG, "zTOC: file %u is malformed", i);
		r = describe_entry(&b, &fm, lb, i, err);
		if (r < 0)
			return r;
	}
	for (uint32_t i = 0; i < n_cp; i++) {
		static const uint8_t zeros[WINDOW];
		size_t wlen = (size_t)MIN(cp[i].out, (uint64_t)WINDOW);
		const uint8_t *w = cp[i].window ? cp[i].window + (WINDOW - wlen) : zeros;

		r = li_builder_describe_point(lb, cp[i].in, cp[i].out, cp[i].bits, w, wlen);
		if (r < 0)
			return error_set(err, r == -ENOMEM ? r : -EBADMSG,
			                 "zTOC: checkpoint %u: %s", i, strerror(-r));
	}
	r = li_builder_finish(lb, layer, ret_index, ret_index_len);
	if (r < 0)
		return error_set(err, r == -ENOMEM ? r : -EBADMSG, "zTOC: %s", strerror(-r));
	*ret_spans = TAKE_PTR(sp);
	return 0;
}

/* ---- the SOCI index manifest ---- */

int soci_index_parse(const char *json, size_t len, const char *manifest_digest,
                     struct soci_ztoc **ret, size_t *ret_n, struct error *err)
{
	json_auto_t *doc = NULL;
	json_error_t je;
	json_t *layers, *l, *subject;
	struct soci_ztoc *z;
	size_t i, n = 0;
	const char *s;

	doc = json_loadb(json, len, 0, &je);
	if (!doc || !json_is_object(doc))
		return error_set(err, -EBADMSG, "SOCI index: not JSON");
	s = json_string_value(json_object_get(json_object_get(doc, "config"), "mediaType"));
	if (!s || (!streq(s, SOCI_TYPE_V1) && !streq(s, SOCI_TYPE_V2)))
		return error_set(err, -EBADMSG, "SOCI index: config type %s", s ? s : "missing");
	subject = json_object_get(doc, "subject");
	s = json_string_value(json_object_get(subject, "digest"));
	if (manifest_digest && subject && (!s || !streq(s, manifest_digest)))
		return error_set(err, -EBADMSG, "SOCI index: for another image (%s)", s ? s : "?");
	layers = json_object_get(doc, "layers");
	if (!json_is_array(layers) || json_array_size(layers) > 4096)
		return error_set(err, -EBADMSG, "SOCI index: no layers");
	z = calloc(json_array_size(layers) + 1, sizeof(*z));
	if (!z)
		return -ENOMEM;
	json_array_foreach(layers, i, l)
	{
		const char *d = json_string_value(json_object_get(l, "digest"));
		const char *layer = json_string_value(
		    json_object_get(json_object_get(l, "annotations"), SOCI_ANN_LAYER_DIGEST));
		json_t *size = json_object_get(l, "size");

		if (!d || !layer)
			continue; /* a prefetch artifact or the like */
		if (!digest_valid(d) || !digest_valid(layer) || !json_is_integer(size) ||
		    json_integer_value(size) < 0 || json_integer_value(size) > SOCI_MAX_ZTOC) {
			free(z);
			return error_set(err, -EBADMSG, "SOCI index: layer %zu is malformed", i);
		}
		memcpy(z[n].layer, layer, DIGEST_STR_LEN + 1);
		memcpy(z[n].digest, d, DIGEST_STR_LEN + 1);
		z[n].size = (uint64_t)json_integer_value(size);
		n++;
	}
	*ret = z;
	*ret_n = n;
	return 0;
}
