/* The Additional Layer Store protocol's names and info file; see als.h. */
#include <inttypes.h>
#include <stdio.h>
#include "common/digest.h"
#include "fsd/image/als.h"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int als_ref_encode(const char *s, char **ret)
{
	size_t len = strlen(s), o = 0;
	char *out = malloc((len + 2) / 3 * 4 + 1);

	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)(uint8_t)s[i] << 16;
		size_t n = MIN(len - i, (size_t)3);

		if (n > 1)
			v |= (uint32_t)(uint8_t)s[i + 1] << 8;
		if (n > 2)
			v |= (uint8_t)s[i + 2];
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = n > 1 ? b64[(v >> 6) & 63] : '=';
		out[o++] = n > 2 ? b64[v & 63] : '=';
	}
	out[o] = '\0';
	*ret = out;
	return 0;
}

static int b64_value(char c)
{
	const char *p = c ? strchr(b64, c) : NULL;

	return p ? (int)(p - b64) : -1;
}

int als_ref_decode(const char *name, char **ret)
{
	_cleanup_free_ char *out = NULL, *again = NULL;
	size_t len = strlen(name), o = 0;

	if (len == 0 || len % 4 || len / 4 * 3 > ALS_REF_MAX + 2)
		return -EINVAL;
	out = malloc(len / 4 * 3 + 1);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		bool last = i + 4 == len;

		for (int k = 0; k < 4; k++) {
			v[k] = b64_value(name[i + k]);
			/* '=' only as the last one or two characters */
			if (v[k] < 0 && !(name[i + k] == '=' && last && k >= 2))
				return -EINVAL;
		}
		if (v[2] < 0 && v[3] >= 0)
			return -EINVAL;
		out[o++] = (char)((v[0] << 2) | (v[1] >> 4));
		if (v[2] >= 0)
			out[o++] = (char)(((v[1] & 15) << 4) | (v[2] >> 2));
		if (v[3] >= 0)
			out[o++] = (char)(((v[2] & 3) << 6) | v[3]);
	}
	out[o] = '\0';
	if (o == 0 || o > ALS_REF_MAX)
		return -EINVAL;
	for (size_t i = 0; i < o; i++)
		if ((uint8_t)out[i] <= ' ' || (uint8_t)out[i] >= 127)
			return -EINVAL;
	/* One spelling per reference: the unused bits of the last group must be zero. */
	if (als_ref_encode(out, &again) < 0)
		return -ENOMEM;
	if (!streq(again, name))
		return -EINVAL;
	*ret = TAKE_PTR(out);
	return 0;
}

enum als_entry als_entry_of(const char *name)
{
	if (streq(name, "diff"))
		return ALS_DIFF;
	if (streq(name, "info"))
		return ALS_INFO;
	if (streq(name, "blob"))
		return ALS_BLOB;
	if (streq(name, "use"))
		return ALS_USE;
	return ALS_NONE;
}

int als_info_format(const struct als_info *in, char **ret, size_t *ret_len)
{
	char *s;
	int n;

	if (!digest_valid(in->compressed_digest) || !digest_valid(in->diff_digest))
		return -EINVAL;
	n = asprintf(&s,
	             "{\"compressed-diff-digest\":\"%s\",\"compressed-size\":%" PRIu64
	             ",\"diff-digest\":\"%s\",\"diff-size\":%" PRIu64 ",\"compression\":%d}\n",
	             in->compressed_digest, in->compressed_size, in->diff_digest, in->diff_size,
	             in->compression);
	if (n < 0)
		return -ENOMEM;
	*ret = s;
	*ret_len = (size_t)n;
	return 0;
}
