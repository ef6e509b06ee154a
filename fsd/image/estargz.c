/* eStargz layers; see estargz.h. */
#include <jansson.h>
#include <stdio.h>
#include <time.h>
#include <zlib.h>
#include "fsd/image/estargz.h"
#include "fsd/index/layerindex.h"

#define TAR_BLOCK 512u
#define MAX_ENTRIES (4u << 20)

/* ---- the footer ---- */

int estargz_footer_parse(const void *buf, size_t len, uint64_t blob_size, uint64_t *ret_toc_off,
                         struct error *err)
{
	/* gzip header with FEXTRA (10), XLEN 26 (2), subfield "SG" with length 22 (4), 16 hex
	 * digits and "STARGZ" (22), an empty stored block (5), CRC32 and ISIZE 0 (8). */
	static const uint8_t tail[13] = {1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0};
	const uint8_t *p = buf;
	uint64_t off = 0;

	if (len != ESTARGZ_FOOTER_SIZE || blob_size < ESTARGZ_FOOTER_SIZE)
		return error_set(err, -EBADMSG, "no eStargz footer (%zu bytes)", len);
	if (p[0] != 0x1f || p[1] != 0x8b || p[2] != 8 || p[3] != 4 || p[10] != 26 || p[11] != 0 ||
	    p[12] != 'S' || p[13] != 'G' || p[14] != 22 || p[15] != 0 ||
	    memcmp(p + 32, "STARGZ", 6) != 0 || memcmp(p + 38, tail, sizeof(tail)) != 0)
		return error_set(err, -EBADMSG, "not an eStargz footer");
	for (int i = 16; i < 32; i++) {
		int c = p[i], v;

		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = c - 'A' + 10;
		else
			return error_set(err, -EBADMSG, "eStargz footer: bad TOC offset");
		off = off << 4 | (uint64_t)v;
	}
	if (off >= blob_size - ESTARGZ_FOOTER_SIZE)
		return error_set(err, -EBADMSG, "eStargz footer: TOC offset %llu is past the blob",
		                 (unsigned long long)off);
	*ret_toc_off = off;
	return 0;
}

/* ---- the TOC member: one tar entry, stargz.index.json ---- */

/* An octal tar number field; false when it is not one (base-256 included). */
static bool tar_octal(const uint8_t *f, size_t n, uint64_t *ret)
{
	uint64_t v = 0;
	size_t i = 0;

	while (i < n && f[i] == ' ')
		i++;
	if (i == n || f[i] < '0' || f[i] > '7')
		return false;
	for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return false;
		v = v << 3 | (uint64_t)(f[i] - '0');
	}
	for (; i < n; i++)
		if (f[i] != ' ' && f[i] != 0)
			return false;
	*ret = v;
	return true;
}

struct toc_file {
	const char *json;
	size_t json_len;
	uint64_t mode, uid, gid, mtime;
};

/* Inflates the member into *ret_out and finds the JSON after its tar header. */
static int toc_unpack(const void *member, size_t len, uint8_t **ret_out, struct toc_file *f,
                      struct error *err)
{
	_cleanup_free_ uint8_t *out = NULL;
	size_t max = ESTARGZ_MAX_TOC + 4 * TAR_BLOCK, cap = MIN(max, MAX(len * 8, (size_t)65536));
	size_t n = 0;
	uint64_t size;
	z_stream z = {0};
	int zr;

	if (len > ESTARGZ_MAX_TOC)
		return error_set(err, -EBADMSG, "eStargz TOC: %zu bytes is too large", len);
	out = malloc(cap);
	if (!out)
		return -ENOMEM;
	if (inflateInit2(&z, 15 + 16) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)member;
	z.avail_in = (uInt)len;
	for (;;) {
		z.next_out = out + n;
		z.avail_out = (uInt)(cap - n);
		zr = inflate(&z, Z_FINISH);
		n = cap - z.avail_out;
		if (zr != Z_BUF_ERROR || z.avail_out > 0 || cap == max)
			break;
		{
			size_t ncap = MIN(max, cap * 2);
			uint8_t *p = realloc(out, ncap);

			if (!p) {
				inflateEnd(&z);
				return -ENOMEM;
			}
			out = p;
			cap = ncap;
		}
	}
	inflateEnd(&z);
	if (zr != Z_STREAM_END)
		return error_set(err, -EBADMSG,
		                 "eStargz TOC: not one gzip member of at most %u bytes",
		                 ESTARGZ_MAX_TOC);
	if (n < TAR_BLOCK || memcmp(out, ESTARGZ_TOC_NAME, sizeof(ESTARGZ_TOC_NAME)) != 0 ||
	    (out[156] != '0' && out[156] != 0) || memcmp(out + 257, "ustar", 5) != 0)
		return error_set(err, -EBADMSG, "eStargz TOC: no plain tar entry %s",
		                 ESTARGZ_TOC_NAME);
	if (!tar_octal(out + 124, 12, &size) || !tar_octal(out + 100, 8, &f->mode) ||
	    !tar_octal(out + 108, 8, &f->uid) || !tar_octal(out + 116, 8, &f->gid) ||
	    !tar_octal(out + 136, 12, &f->mtime))
		return error_set(err, -EBADMSG, "eStargz TOC: bad tar header");
	if (size == 0 || size > n - TAR_BLOCK)
		return error_set(err, -EBADMSG, "eStargz TOC: %llu bytes of JSON do not fit",
		                 (unsigned long long)size);
	f->json = (const char *)out + TAR_BLOCK;
	f->json_len = (size_t)size;
	*ret_out = TAKE_PTR(out);
	return 0;
}

/* ---- the TOC's JSON ---- */

struct chunk {
	uint64_t member, inner, size;
	uint64_t file_off; /* chunkOffset */
	uint8_t digest[32];
	uint64_t vstart; /* in the described uncompressed offsets */
};

struct entry {
	json_t *j; /* borrowed from the TOC */
	enum li_type type;
	uint64_t size;
	size_t first_chunk, n_chunks;
};

struct toc {
	json_t *root;
	struct entry *entries;
	size_t n_entries;
	struct chunk *chunks;
	size_t n_chunks, cap_chunks;
};

static void toc_clear(struct toc *t)
{
	json_decref(t->root);
	free(t->entries);
	free(t->chunks);
}

static bool get_u64(json_t *o, const char *key, uint64_t *ret)
{
	json_t *v = json_object_get(o, key);

	if (!v) {
		*ret = 0;
		return true;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*ret = (uint64_t)json_integer_value(v);
	return true;
}

static const char *get_str(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static bool hex_digest(const char *s, uint8_t out[32])
{
	if (!s || !digest_valid(s))
		return false;
	for (int i = 0; i < 32; i++) {
		unsigned v;

		if (sscanf(s + 7 + 2 * i, "%2x", &v) != 1)
			return false;
		out[i] = (uint8_t)v;
	}
	return true;
}

static int add_chunk(struct toc *t, json_t *j, struct entry *e, struct error *err)
{
	struct chunk c = {0};
	uint64_t chunk_size, done = 0;

	if (!get_u64(j, "offset", &c.member) || !get_u64(j, "innerOffset", &c.inner) ||
	    !get_u64(j, "chunkOffset", &c.file_off) || !get_u64(j, "chunkSize", &chunk_size) ||
	    !hex_digest(get_str(j, "chunkDigest"), c.digest))
		return error_set(err, -EBADMSG, "eStargz TOC: a chunk of %s is malformed",
		                 get_str(e->j, "name"));
	if (e->n_chunks > 0) {
		const struct chunk *prev = &t->chunks[t->n_chunks - 1];

		done = prev->file_off + prev->size;
	}
	if (c.file_off != done || done >= e->size)
		return error_set(err, -EBADMSG, "eStargz TOC: the chunks of %s are not in order",
		                 get_str(e->j, "name"));
	c.size = chunk_size ? chunk_size : e->size - done;
	if (c.size > e->size - done)
		return error_set(err, -EBADMSG, "eStargz TOC: a chunk of %s is past its end",
		                 get_str(e->j, "name"));
	if (t->n_chunks == t->cap_chunks) {
		size_t cap = t->cap_chunks ? 2 * t->cap_chunks : 256;
		struct chunk *n =
		    cap > MAX_ENTRIES ? NULL : reallocarray(t->chunks, cap, sizeof(*n));

		if (!n)
			return error_set(err, cap > MAX_ENTRIES ? -EBADMSG : -ENOMEM,
			                 "eStargz TOC: too many chunks");
		t->chunks = n;
		t->cap_chunks = cap;
	}
	if (e->n_chunks == 0)
		e->first_chunk = t->n_chunks;
	e->n_chunks++;
	t->chunks[t->n_chunks++] = c;
	return 0;
}

static int toc_parse(const char *json, size_t len, struct toc *t, struct error *err)
{
	json_error_t je;
	json_t *entries;
	size_t n;

	t->root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (!t->root)
		return error_set(err, -EBADMSG, "eStargz TOC: not JSON: %s", je.text);
	entries = json_object_get(t->root, "entries");
	if (!json_is_array(entries))
		return error_set(err, -EBADMSG, "eStargz TOC: no entries");
	n = json_array_size(entries);
	if (n > MAX_ENTRIES)
		return error_set(err, -EBADMSG, "eStargz TOC: %zu entries", n);
	t->entries = calloc(n ? n : 1, sizeof(*t->entries));
	if (!t->entries)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *j = json_array_get(entries, i);
		const char *type = get_str(j, "type"), *name = get_str(j, "name");
		struct entry *e;
		int r;

		if (!json_is_object(j) || !type || !name)
			return error_set(err, -EBADMSG, "eStargz TOC: entry %zu is malformed", i);
		if (streq(type, "chunk")) {
			e = t->n_entries ? &t->entries[t->n_entries - 1] : NULL;
			if (!e || e->type != LI_REG || !streq(get_str(e->j, "name"), name))
				return error_set(err, -EBADMSG,
				                 "eStargz TOC: a chunk of %s follows no file",
				                 name);
			r = add_chunk(t, j, e, err);
			if (r < 0)
				return r;
			continue;
		}
		e = &t->entries[t->n_entries++];
		e->j = j;
		if (streq(type, "reg"))
			e->type = LI_REG;
		else if (streq(type, "dir"))
			e->type = LI_DIR;
		else if (streq(type, "symlink"))
			e->type = LI_SYMLINK;
		else if (streq(type, "hardlink"))
			e->type = LI_HARDLINK;
		else if (streq(type, "char"))
			e->type = LI_CHR;
		else if (streq(type, "block"))
			e->type = LI_BLK;
		else if (streq(type, "fifo"))
			e->type = LI_FIFO;
		else
			return error_set(err, -EBADMSG, "eStargz TOC: %s has type %s", name, type);
		if (e->type == LI_REG) {
			if (!get_u64(j, "size", &e->size))
				return error_set(err, -EBADMSG, "eStargz TOC: %s: bad size", name);
			if (e->size > 0) {
				r = add_chunk(t, j, e, err);
				if (r < 0)
					return r;
			}
		}
	}
	for (size_t i = 0; i < t->n_entries; i++) {
		const struct entry *e = &t->entries[i];
		const struct chunk *last =
		    e->n_chunks ? &t->chunks[e->first_chunk + e->n_chunks - 1] : NULL;

		if (e->type == LI_REG && e->size > 0 && last->file_off + last->size != e->size)
			return error_set(err, -EBADMSG, "eStargz TOC: the chunks of %s end early",
			                 get_str(e->j, "name"));
	}
	return 0;
}

bool estargz_parse_time(const char *s, int64_t *ret_sec, uint32_t *ret_nsec)
{
	struct tm tm = {0};
	const char *p = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	uint32_t nsec = 0, scale = 100000000;
	int64_t sec;

	if (!p)
		return false;
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9'; p++) {
			nsec += (uint32_t)(*p - '0') * scale;
			scale /= 10;
		}
	}
	sec = (int64_t)timegm(&tm);
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		int h = (p[1] - '0') * 10 + (p[2] - '0'), m = (p[4] - '0') * 10 + (p[5] - '0');
		int64_t o = (int64_t)(h * 3600 + m * 60);

		sec += *p == '+' ? -o : o;
		p += 6;
	}
	if (*p)
		return false;
	*ret_sec = sec;
	*ret_nsec = nsec;
	return true;
}

static int base64_value(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Standard base64 (as Go encodes []byte in JSON) into a malloc'ed buffer. */
static int base64_decode(const char *s, uint8_t **ret, size_t *ret_len)
{
	size_t n = strlen(s), o = 0;
	uint32_t acc = 0;
	int bits = 0;
	uint8_t *out = malloc(n / 4 * 3 + 3);

	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int v = base64_value((unsigned char)s[i]);

		if (s[i] == '=')
			break;
		if (v < 0) {
			free(out);
			return -EBADMSG;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	*ret = out;
	*ret_len = o;
	return 0;
}

/* The xattrs of a described entry, decoded. */
struct xattrs {
	const char **names;
	void **values;
	size_t *lens;
	size_t n;
};

static void xattrs_clear(struct xattrs *x)
{
	for (size_t k = 0; k < x->n; k++)
		free(x->values[k]);
	free(x->names);
	free(x->values);
	free(x->lens);
	*x = (struct xattrs){0};
}

/* The description of TOC entry e, for li_builder_describe_entry() (data_off set by the
 * caller); its xattrs in x. */
static int describe(const struct entry *e, struct li_desc_entry *d, struct xattrs *x,
                    struct error *err)
{
	const char *name = get_str(e->j, "name");
	uint64_t mode, major, minor;
	json_t *xj = json_object_get(e->j, "xattrs");
	const char *key;
	json_t *v;
	size_t n;

	*d = (struct li_desc_entry){
	    .path = name, .link = get_str(e->j, "linkName"), .type = e->type};
	if (!get_u64(e->j, "mode", &mode) || !get_u64(e->j, "uid", &d->uid) ||
	    !get_u64(e->j, "gid", &d->gid) || !get_u64(e->j, "devMajor", &major) ||
	    !get_u64(e->j, "devMinor", &minor) || major > UINT32_MAX || minor > UINT32_MAX)
		return error_set(err, -EBADMSG, "eStargz TOC: %s: bad mode, owner or device", name);
	d->mode = (uint32_t)(mode & 07777);
	d->rdev_major = (uint32_t)major;
	d->rdev_minor = (uint32_t)minor;
	if (json_object_get(e->j, "modtime") &&
	    !estargz_parse_time(get_str(e->j, "modtime"), &d->mtime_sec, &d->mtime_nsec))
		return error_set(err, -EBADMSG, "eStargz TOC: %s: bad modtime", name);
	if (e->type == LI_REG)
		d->size = e->size;
	if (!xj)
		return 0;
	if (!json_is_object(xj) || json_object_size(xj) > 1024)
		return error_set(err, -EBADMSG, "eStargz TOC: %s: bad xattrs", name);
	n = json_object_size(xj);
	x->names = calloc(n + 1, sizeof(*x->names));
	x->values = calloc(n + 1, sizeof(*x->values));
	x->lens = calloc(n + 1, sizeof(*x->lens));
	if (!x->names || !x->values || !x->lens)
		return -ENOMEM;
	json_object_foreach(xj, key, v)
	{
		uint8_t *val = NULL;

		if (!json_is_string(v) ||
		    base64_decode(json_string_value(v), &val, &x->lens[x->n]) < 0)
			return error_set(err, -EBADMSG, "eStargz TOC: %s: bad xattr %s", name, key);
		x->names[x->n] = key;
		x->values[x->n++] = val;
	}
	d->n_xattrs = x->n;
	d->xattr_names = x->names;
	d->xattr_values = (const void *const *)x->values;
	d->xattr_lens = x->lens;
	return 0;
}

/* ---- the layer index and the span table ---- */

int estargz_build(const char *layer, uint64_t blob_size, uint64_t toc_off, const void *member,
                  size_t len, const char *toc_digest, void **ret_index, size_t *ret_index_len,
                  struct spans **ret_spans, struct error *err)
{
	_cleanup_free_ uint8_t *unpacked = NULL;
	_cleanup_(li_builder_freep) struct li_builder *b = NULL;
	_cleanup_(spans_freep) struct spans *sp = NULL;
	struct toc t = {0};
	struct toc_file f = {0};
	struct chunk tc = {0};
	uint64_t n_members = 0, vout = 0, extent = 0, cur = UINT64_MAX;
	char got[DIGEST_STR_LEN + 1];
	size_t k = 0, m = 0;
	int r;

	if (toc_off >= blob_size || blob_size - toc_off < ESTARGZ_FOOTER_SIZE ||
	    len != blob_size - toc_off - ESTARGZ_FOOTER_SIZE)
		return error_set(err, -EBADMSG, "eStargz TOC: bad offset");
	r = toc_unpack(member, len, &unpacked, &f, err);
	if (r < 0)
		return r;
	sha256_buf(f.json, f.json_len, got);
	if (toc_digest && !streq(got, toc_digest))
		return error_set(err, -EBADMSG, "eStargz TOC has digest %s, the layer says %s", got,
		                 toc_digest);
	r = toc_parse(f.json, f.json_len, &t, err);
	if (r < 0)
		goto out;
	/* The TOC's own entry: a file of the tar stream like any other. */
	if (t.n_chunks == t.cap_chunks) {
		struct chunk *n = reallocarray(t.chunks, t.n_chunks + 1, sizeof(*n));

		if (!n) {
			r = -ENOMEM;
			goto out;
		}
		t.chunks = n;
		t.cap_chunks = t.n_chunks + 1;
	}
	tc = (struct chunk){.member = toc_off, .inner = TAR_BLOCK, .size = f.json_len};
	sha256_raw(f.json, f.json_len, tc.digest);
	t.chunks[t.n_chunks++] = tc;

	/* Chunks in the order of the blob, not overlapping; each member's output laid out
	 * after the previous one's (estargz.h). */
	for (k = 0; k < t.n_chunks; k++) {
		struct chunk *c = &t.chunks[k];

		if (k > 0) {
			const struct chunk *p = &t.chunks[k - 1];

			if (c->member < p->member ||
			    (c->member == p->member && c->inner < p->inner + p->size)) {
				r = error_set(err, -EBADMSG, "eStargz TOC: chunks out of order");
				goto out;
			}
		}
		if (c->member > toc_off || (c->member == toc_off && k + 1 < t.n_chunks) ||
		    c->inner > SPANS_MAX_OUT || c->size > SPANS_MAX_OUT - c->inner) {
			r = error_set(err, -EBADMSG, "eStargz TOC: a chunk is out of bounds");
			goto out;
		}
		if (c->member != cur) {
			vout += extent;
			extent = 0;
			cur = c->member;
			n_members++;
		}
		c->vstart = vout + c->inner;
		extent = c->inner + c->size;
	}
	vout += extent;
	for (size_t i = 0; i < t.n_entries; i++) {
		const struct entry *e = &t.entries[i];

		for (size_t j = 1; j < e->n_chunks; j++) {
			const struct chunk *a = &t.chunks[e->first_chunk + j - 1];

			if (a->vstart + a->size != t.chunks[e->first_chunk + j].vstart) {
				r = error_set(err, -EBADMSG,
				              "eStargz TOC: the chunks of %s are not contiguous",
				              get_str(e->j, "name"));
				goto out;
			}
		}
	}

	/* The span table: [0, first member) if there is such a range, then a span per
	 * member with its chunks. */
	r = spans_new_chunked(layer, blob_size, n_members + (t.chunks[0].member > 0), t.n_chunks,
	                      &sp);
	if (r < 0) {
		r = error_set(err, r == -ENOMEM ? r : -EBADMSG, "eStargz TOC: %s", strerror(-r));
		goto out;
	}
	m = t.chunks[0].member > 0 ? 1 : 0;
	cur = UINT64_MAX;
	for (k = 0; k < t.n_chunks; k++) {
		const struct chunk *c = &t.chunks[k];

		if (c->member != cur) {
			if (cur != UINT64_MAX)
				m++;
			cur = c->member;
			sp->off[m] = c->member;
			sp->first[m] = (uint32_t)k;
		}
		sp->count[m]++;
		sp->chunks[k] = (struct spans_chunk){.inner = c->inner, .size = c->size};
		memcpy(sp->chunks[k].digest, c->digest, 32);
	}
	r = spans_chunked_check(sp, err);
	if (r < 0)
		goto out;

	/* The layer index: the TOC's entries, then its own, and a point per member. */
	r = li_builder_new_described(LI_GZIP_SPAN, blob_size, vout, &b);
	if (r < 0) {
		r = error_set(err, r == -ENOMEM ? r : -EBADMSG, "eStargz TOC: %s", strerror(-r));
		goto out;
	}
	for (size_t i = 0; i <= t.n_entries; i++) {
		struct li_desc_entry d;
		struct xattrs x = {0};

		if (i < t.n_entries) {
			r = describe(&t.entries[i], &d, &x, err);
			if (t.entries[i].n_chunks)
				d.data_off = t.chunks[t.entries[i].first_chunk].vstart;
		} else {
			d = (struct li_desc_entry){.path = ESTARGZ_TOC_NAME,
			                           .type = LI_REG,
			                           .mode = (uint32_t)(f.mode & 07777),
			                           .uid = f.uid,
			                           .gid = f.gid,
			                           .mtime_sec =
			                               (int64_t)MIN(f.mtime, (uint64_t)INT64_MAX),
			                           .size = f.json_len,
			                           .data_off = t.chunks[t.n_chunks - 1].vstart};
			r = 0;
		}
		if (r >= 0) {
			r = li_builder_describe_entry(b, &d);
			if (r < 0)
				r = error_set(err, r == -ENOMEM ? r : -EBADMSG,
				              "eStargz TOC: entry %zu: %s", i, strerror(-r));
		}
		xattrs_clear(&x);
		if (r < 0)
			goto out;
	}
	cur = UINT64_MAX;
	for (k = 0; k < t.n_chunks; k++) {
		const struct chunk *c = &t.chunks[k];

		if (c->member == cur)
			continue;
		cur = c->member;
		r = li_builder_describe_member(b, c->member, c->vstart - c->inner);
		if (r < 0)
			goto out;
	}
	r = li_builder_finish(b, layer, ret_index, ret_index_len);
	if (r < 0) {
		r = error_set(err, r == -ENOMEM ? r : -EBADMSG, "eStargz TOC: %s", strerror(-r));
		goto out;
	}
	*ret_spans = TAKE_PTR(sp);
out:
	toc_clear(&t);
	return r;
}
