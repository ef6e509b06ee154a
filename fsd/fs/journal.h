/* Namespace changes in flight, where a process taking a mount over finds them.
 *
 * When a worker dies, the kernel sends the requests it had read and not answered to the
 * next one (FUSE_NOTIFY_RESEND). A read, a write at an offset, a setattr are simply done
 * again; a MKDIR the dead worker had made is not: done again, it fails with EEXIST, an
 * UNLINK with ENOENT, and the process that asked sees an error for a change that was made.
 * So each change of the namespace is recorded here (its kind, the caller's pid, the
 * directories and the names) from before it is made until it is answered, in a shared file
 * mapping, ROOT/mounts/NAME/journal. A new worker keeps the records of the dead one for a
 * while (JOURNAL_PRIOR_MS); a request that matches one of them is a request sent again,
 * and when the change it asks for is already in place it is answered as done
 * (journal_take_prior()). The caller checks that end state: a record alone proves nothing
 * (the dead worker may have died before making the change, or after answering).
 *
 * Thread-safe. A full table (more changes in flight than slots) just records nothing. */
#pragma once

#include <stdint.h>
#include "common/macros.h"

enum journal_op {
	JOURNAL_MKNOD = 1,
	JOURNAL_MKDIR,
	JOURNAL_SYMLINK,
	JOURNAL_LINK,
	JOURNAL_UNLINK,
	JOURNAL_RMDIR,
	JOURNAL_RENAME,
	JOURNAL_CREATE,
};

/* How long the records of a dead worker are believed after a takeover. */
#define JOURNAL_PRIOR_MS 30000

/* What a change is: its kind, who asked, where. newparent/newname: the second name of a
 * LINK or RENAME (else 0 and NULL). */
struct journal_change {
	enum journal_op op;
	uint32_t pid;
	uint64_t parent;
	const char *name;
	uint64_t newparent;
	const char *newname;
};

struct journal;

/* Opens the journal in dirfd/name; with keep, the records there are those of a dead
 * worker (a file that is not a journal is started afresh). dirfd -1: no file, a journal
 * that records nothing (an unsupervised mount has nobody to take it over). */
int journal_open(int dirfd, const char *name, bool keep, struct journal **ret);
void journal_free(struct journal *j);

/* Records a change about to be made; returns the slot to pass to journal_end(), or -1
 * when nothing was recorded. */
int journal_begin(struct journal *j, const struct journal_change *c);

/* The change of slot was answered (or failed): forgets it. slot -1 is ignored. */
void journal_end(struct journal *j, int slot);

/* Whether a dead worker's record names the same change (then the record is consumed):
 * the request is probably one the kernel sent again. Fast (one atomic load) when no
 * record of a dead worker is left. */
bool journal_take_prior(struct journal *j, const struct journal_change *c);

/* How many records of a dead worker are left (for tests and logs). */
unsigned journal_prior_count(struct journal *j);
