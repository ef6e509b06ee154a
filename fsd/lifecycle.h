/* The life cycle of a mount: start its daemon, register it, stop it, clean up after a dead
 * one. Every mount, whatever serves it, goes through here; nothing else writes a state file.
 *
 * A mount owns ROOT/mounts/NAME (NAME from lifecycle_name()), which holds
 *   state   JSON {manifest, ref, mountpoint, pid, upper, upper_given, ro}, written
 *           atomically and held LOCK_SH by the daemon for its whole life: gc keeps what a
 *           locked state names (lifecycle_for_each_live());
 *   log     the daemon's log (timestamps, pid), truncated at each mount;
 *   upper/, work/  a throwaway writable layer, when the daemon makes one there.
 * The daemon holds LOCK_EX on the directory itself: that is how a second mount of the same
 * mountpoint is refused, how a stop waits for the daemon to exit, and how a dead daemon
 * (SIGKILL) is told from a live one.
 *
 * The runtime directory ($IMGFS_RUNTIME_DIR, else /run/imgfs as root or
 * $XDG_RUNTIME_DIR/imgfs) has mounts/NAME, a symlink to ROOT/mounts/NAME: it lets
 * lifecycle_stop() find a mount's store from the mountpoint alone, whatever --root it was
 * made with. It is a hint, checked against the state before it is believed.
 *
 * Not thread-safe: one lifecycle per process, as a daemon serves one mount. Errors are
 * returned as -errno; the functions that report to the user (lifecycle_start(),
 * lifecycle_stop()) log them, naming the mountpoint, the others log only at debug level. */
#pragma once

#include <sys/types.h>
#include "common/macros.h"

struct store;

#define LIFECYCLE_NAME_MAX 64

/* What a live mount serves: the content of its state file. */
struct mount_info {
	const char *manifest;   /* "sha256:…", or NULL for a daemon that serves several images
	                         * (lifecycle_set_held()) */
	const char *ref;        /* the image's canonical name */
	const char *mountpoint; /* canonical path */
	const char *upper;      /* the writable layer's directory, NULL when read-only */
	bool upper_given;       /* upper is the user's (--upper), kept at umount */
	bool ro;
	bool lazy;              /* the layers are fetched as they are read */
	const char *extra_opts; /* the user's -o options, or NULL */
};

/* ROOT/mounts/NAME for a canonical mountpoint path: the first 12 hex digits of the path's
 * sha256 (unique per path) and the sanitised last component (readable), e.g.
 * "3f2a9c01b7e4-alpine". */
void lifecycle_name(const char *mountpoint, char buf[LIFECYCLE_NAME_MAX]);

/* Canonical path of a mountpoint, also when it is a dead FUSE mount (stat fails with
 * ENOTCONN): then the parent is resolved and the last component appended. Malloc'ed. */
int lifecycle_canonical_path(const char *arg, char **ret);

/* One mount's hold on ROOT/mounts/NAME, owned by the process that serves it. */
struct lifecycle;

/* The process serving a mount, called by lifecycle_start() with the mount claimed (and
 * the store locked shared, so gc cannot remove the image before the state names it).
 * It opens what it serves, calls lifecycle_register(), makes the mount live, calls
 * lifecycle_ready(), serves until unmounted and returns 0, or -errno (logged) on failure. */
typedef int (*lifecycle_serve_fn)(struct lifecycle *lc, void *userdata);

struct lifecycle_opts {
	const char *mountpoint; /* canonical path */
	bool foreground;        /* serve in this process, logging to stderr */
	bool keep_work;         /* leave ROOT/mounts/NAME/work of a dead daemon (recovery) */
	lifecycle_serve_fn serve;
	void *userdata;
	/* The command line of a new worker (argv[0] is replaced, see below), or NULL for an
	 * unsupervised mount. Supervised mounts (not in the foreground): the process that
	 * claims the mount serves it as its first worker (o->serve), and forks at once a
	 * supervisor that keeps the claim, the state and, from lifecycle_ready() on, the
	 * connection; each time a worker dies the supervisor executes this command line as a
	 * new worker, its child, from the path of the binary that started the mount, as that
	 * path was then (an upgrade installed there is picked up). The new worker finds the
	 * connection with lifecycle_attach(). Every worker ends when the supervisor does. */
	const char *const *worker_argv;
};

/* Starts a mount: refuses a mountpoint an imgfs mount (live or dead) already covers, then
 * (in a new session, unless foreground) claims ROOT/mounts/NAME, removing what a dead
 * daemon of that mountpoint left, and calls o->serve. Returns 0 once the mount is live
 * (lifecycle_ready()) or, in the foreground, after it was served; -errno (logged) when it
 * could not start: -EBUSY when already mounted. Messages of the daemon reach stderr until
 * it is live, then ROOT/mounts/NAME/log. */
int lifecycle_start(struct store *s, const struct lifecycle_opts *o);

/* ROOT/mounts/NAME, open (O_DIRECTORY), and its path; borrowed from lc. */
int lifecycle_dir_fd(const struct lifecycle *lc);
const char *lifecycle_dir_path(const struct lifecycle *lc);

/* Writes the state file (atomically, LOCK_SH held until the process exits) and the runtime
 * link, then releases the store lock taken for the start. */
int lifecycle_register(struct lifecycle *lc, const struct mount_info *info);

/* For a daemon that serves several images (the layer store): the image manifests it holds
 * now, written atomically to ROOT/mounts/NAME/held, one digest a line. While the daemon
 * lives, gc keeps them as it keeps a state's manifest (lifecycle_for_each_live()). */
int lifecycle_set_held(struct lifecycle *lc, const char *const *manifests, size_t n);

/* Tells the supervisor (passing it conn_fd, the connection it keeps across workers, from
 * the first worker; else -1), then the waiting parent, that the mount is live; from now on
 * messages go to the log. Once only. */
void lifecycle_ready(struct lifecycle *lc, int conn_fd);

/* Whether lc is a worker of a supervised mount, and whether it took over from a dead or
 * replaced one (lifecycle_attach()). */
bool lifecycle_supervised(const struct lifecycle *lc);
bool lifecycle_is_takeover(const struct lifecycle *lc);

struct mount_status;

/* In a worker executed by the supervisor of the mount at mountpoint (canonical): opens
 * ROOT/mounts/NAME (the claim stays with the supervisor), sends messages to its log, sets
 * *ret_conn_fd to the connection the supervisor kept and *ret_state to the mount's state
 * (its manifest NULL for a daemon that serves several images). Errors are logged. Free lc with
 * lifecycle_detach(), which removes nothing. */
int lifecycle_attach(struct store *s, const char *mountpoint, struct lifecycle **ret,
                     int *ret_conn_fd, struct mount_status *ret_state);
void lifecycle_detach(struct lifecycle *lc);

/* The figures the mount's daemons wrote last in ROOT/mounts/NAME (lazy, decoded), as
 * lifecycle_status() reads them; nothing else of *ret is set. A new worker counts on from
 * them. */
void lifecycle_figures(struct lifecycle *lc, struct mount_status *ret);

/* Asks the supervisor of the mount at mountpoint (an argument as the user gave it) to
 * replace its worker with a new one started from the installed binary, without unmounting,
 * and waits until the new worker serves (up to 30 s). Returns 0 or -errno (logged). */
int lifecycle_restart(struct store *s, const char *mountpoint);

/* Stops the mount at mountpoint (an argument as the user gave it): unmounts it (detached
 * when its daemon is dead), waits for the daemon to exit, removes ROOT/mounts/NAME and the
 * runtime link. The store is found through the runtime link, else s (may be NULL).
 * Returns 0, or -errno (logged): -EBUSY when the mount is in use, -ENOENT when there is
 * no such mount, -EINVAL for another filesystem's mount. */
int lifecycle_stop(struct store *s, const char *mountpoint);

/* What lifecycle_status() finds of a mount; strings malloc'ed (NULL when unknown). */
struct mount_status {
	char *dir;        /* ROOT/mounts/NAME */
	char *mountpoint; /* canonical */
	char *ref, *manifest, *upper;
	bool ro, upper_given;
	bool alive;           /* a daemon holds the mount */
	bool mounted;         /* an imgfs mount is at the mountpoint (in this mount namespace) */
	pid_t pid;            /* the daemon serving requests, 0 when dead */
	pid_t supervisor_pid; /* the process keeping the mount, 0 when none (or dead) */
	unsigned restarts;    /* workers started after the first (supervised mounts) */
	char *extra_opts;     /* the user's -o options, NULL when none */
	bool lazy;            /* the layers are fetched as they are read; then the bytes: */
	uint64_t demand_bytes, fill_bytes, present, total;
	bool decoded; /* the daemon reported what it decoded: */
	uint64_t decoded_units, cache_hits, cache_stored, cache_corrupt, cache_evicted;
};
void mount_status_done(struct mount_status *st);

/* The state of the mount at mountpoint (an argument as the user gave it), found as
 * lifecycle_stop() finds it. -ENOENT when no imgfs mount is there and none has a state. */
int lifecycle_status(struct store *s, const char *mountpoint, struct mount_status *ret);

/* Calls fn with the manifest of every mount below s whose daemon is alive (and each one it
 * holds: lifecycle_set_held()); stops at and
 * returns fn's first negative result. */
int lifecycle_for_each_live(struct store *s, int (*fn)(const char *manifest, void *userdata),
                            void *userdata);

/* Removes what dead daemons left below s: ROOT/mounts/NAME of every mount whose daemon is
 * gone and whose mountpoint is no longer mounted (a dead mount that is still mounted is
 * left for lifecycle_stop(), which can detach it). Counts them in *ret_removed (may be
 * NULL). */
int lifecycle_reap(struct store *s, unsigned *ret_removed);
