/* Fuzzes layerstore_restore, the reader of a layer store's slot table
 * (ROOT/mounts/NAME/slots): any input is refused whole, or restores a store whose table,
 * saved, restores again to the very same table; asking for its nodes (whose images
 * cannot be resolved here) fails cleanly. */
#include <stdint.h>
#include <sys/stat.h>
#include "fsd/layerstore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int no_resolve(void *userdata, const char *ref, const char *manifest, bool fresh,
                      struct ls_image *ret)
{
	(void)userdata, (void)ref, (void)manifest, (void)fresh, (void)ret;
	return -ENOENT;
}

static struct layerstore *new_store(void)
{
	struct layerstore *ls = NULL;

	if (layerstore_new(&(struct layerstore_opts){.resolve = no_resolve}, &ls) < 0)
		abort();
	return ls;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(layerstore_freep) struct layerstore *ls = new_store(), *again = new_store();
	_cleanup_free_ char *text = NULL, *text2 = NULL;
	size_t len = 0, len2 = 0;
	struct stat st;
	int r;

	if (size > 65536)
		return 0;
	r = layerstore_restore(ls, (const char *)data, size);
	if (r < 0) {
		if (r != -EBADMSG && r != -ENOMEM)
			abort();
		return 0;
	}
	if (layerstore_save(ls, &text, &len) < 0)
		abort();
	if (layerstore_restore(again, text, len) < 0 || layerstore_save(again, &text2, &len2) < 0)
		abort();
	if (len2 != len || memcmp(text, text2, len) != 0)
		abort();
	/* the nodes a kernel could ask for: none can be resolved, none may crash */
	for (uint64_t slot = 0; slot < 4; slot++)
		for (uint64_t n = 0; n < 4; n++) {
			uint64_t ino = slot << 32 | (n + 1);

			(void)layerstore_getattr(ls, ino, &st);
			layerstore_forget(ls, ino, 1);
		}
	(void)layerstore_getattr(ls, 2, &st);
	(void)layerstore_getattr(ls, LS_LAYER_BASE, &st);
	return 0;
}
