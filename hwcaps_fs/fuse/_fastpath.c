/*
 * hwcaps-fs fast path: take the daemon off the exec path (see docs/fast-path.md).
 *
 * pyfuse3 offers no way to answer OPEN with ENOSYS and still serve READ (its read handler
 * gets the file handle, not the inode) and no way to ask for capabilities in INIT. This
 * library, loaded with RTLD_GLOBAL before pyfuse3's extension, provides the libfuse session
 * constructor pyfuse3 binds to. It builds the session with a copy of pyfuse3's operations in
 * which a few entries are wrapped:
 *
 *   init        asks for FUSE_CAP_CACHE_SYMLINKS (the symlink presentation) and notes
 *               whether the kernel supports no-open;
 *   open        answers ENOSYS: the kernel then opens files of this connection without
 *               asking again, so an exec sends no request at all (no OPEN, no RELEASE);
 *   read        gets fi->fh = ino, so pyfuse3's handler receives the inode as the handle
 *               (in no-open mode the kernel sends fh 0);
 *   opendir     marks the reply FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE: the kernel keeps
 *               listings until the daemon invalidates the directory. Directories are not
 *               put in no-opendir mode: fusermount3's auto_unmount only removes a mount
 *               whose root fails to open with ENOTCONN, and without OPENDIR it never fails.
 *
 * The real constructor is the one of the caller's libfuse: dladdr() on the return address
 * names the calling object (pyfuse3's extension), dlopen(RTLD_NOLOAD) + dlvsym() find the
 * function in its libfuse. This library links no libfuse: two in one process would pair a
 * session of one with the code of the other. libfuse >= 3.17 headers call
 * fuse_session_new_versioned@FUSE_3.17, older ones fuse_session_new@FUSE_3.0; >= 3.17 also
 * calls one from the other internally, through these same symbols, hence the re-entry guard.
 *
 * Everything is counted in hwcaps_fastpath_state, which the daemon reads after mounting to
 * tell whether the fast path is on. Nothing here allocates per request or blocks.
 */

#define _GNU_SOURCE
#define FUSE_USE_VERSION 31

#include <dlfcn.h>
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* libfuse >= 3.17 headers make fuse_session_new a macro around the versioned constructor. */
#undef fuse_session_new

#define EXPORT __attribute__((visibility("default")))

/* The capabilities used here, by value: older headers may lack their names. */
#define CAP_NO_OPEN_SUPPORT (1u << 17)
#define CAP_CACHE_SYMLINKS (1u << 23)

/* What the daemon reads (hwcaps_fs/fuse/fastpath.py mirrors this layout; append only). */
struct hwcaps_fastpath_state {
    uint64_t size;               /* sizeof this struct, checked by the reader */
    uint64_t disabled;           /* set by the daemon: build sessions unwrapped */
    uint64_t sessions;           /* sessions built with the wrapped operations */
    uint64_t unwrapped;          /* sessions built as asked (disabled, or no operations) */
    uint64_t lookup_failures;    /* the caller's libfuse could not be found */
    uint64_t inits;              /* INITs seen */
    uint64_t no_open;            /* the kernel supports no-open (set at INIT) */
    uint64_t cache_symlinks;     /* FUSE_CAP_CACHE_SYMLINKS was asked for (set at INIT) */
    uint64_t opens_declined;     /* OPENs answered ENOSYS */
    uint64_t reads;              /* READs passed on with fh = ino */
    uint64_t opendirs;           /* OPENDIRs passed on with the listing cached */
    uint64_t libfuse_version;    /* fuse_version() of the caller's libfuse, e.g. 314 */
};

EXPORT struct hwcaps_fastpath_state hwcaps_fastpath_state = {
    .size = sizeof(struct hwcaps_fastpath_state),
};

#define COUNT(field) __atomic_add_fetch(&hwcaps_fastpath_state.field, 1, __ATOMIC_RELAXED)
#define SET(field, value) __atomic_store_n(&hwcaps_fastpath_state.field, (value), __ATOMIC_RELAXED)
#define GET(field) __atomic_load_n(&hwcaps_fastpath_state.field, __ATOMIC_RELAXED)

typedef struct fuse_session *(*session_new_fn)(struct fuse_args *, const struct fuse_lowlevel_ops *,
                                               size_t, void *);
typedef struct fuse_session *(*session_new_versioned_fn)(struct fuse_args *,
                                                         const struct fuse_lowlevel_ops *, size_t,
                                                         void *, void *);
typedef int (*reply_err_fn)(fuse_req_t, int);
typedef int (*version_fn)(void);

/* The operations struct must reach the last entry wrapped (all are there since libfuse 3.0). */
#define WRAPPED_OPS_SIZE \
    (offsetof(struct fuse_lowlevel_ops, opendir) + sizeof(((struct fuse_lowlevel_ops *)0)->opendir))

/* pyfuse3's operations, as it passed them (one session per process in practice; a later
 * session replaces them, see docs/fast-path.md "Limits"). */
static struct fuse_lowlevel_ops original;
static reply_err_fn reply_err;

/* Depth of constructor calls on this thread: libfuse >= 3.17 calls one constructor from
 * the other, and only the outermost call wraps. */
static __thread int depth;

static void wrapped_init(void *userdata, struct fuse_conn_info *conn)
{
    /* Noted before pyfuse3's init runs, so that Operations.init can already read them. */
    SET(no_open, (conn->capable & CAP_NO_OPEN_SUPPORT) != 0);
    if (conn->capable & CAP_CACHE_SYMLINKS) {
        conn->want |= CAP_CACHE_SYMLINKS;
        SET(cache_symlinks, 1);
    }
    COUNT(inits);
    if (original.init)
        original.init(userdata, conn);
}

static void wrapped_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    /* Without the kernel's no-open support ENOSYS would fail the open: pyfuse3 answers it,
     * with the inode as the handle (Operations.open). */
    if (GET(no_open)) {
        COUNT(opens_declined);
        reply_err(req, ENOSYS);
        return;
    }
    original.open(req, ino, fi);
}

static void wrapped_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    /* pyfuse3 copies fi into its reply: the kernel caches the listing across opens. */
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    COUNT(opendirs);
    original.opendir(req, ino, fi);
}

static void wrapped_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                         struct fuse_file_info *fi)
{
    fi->fh = ino;
    COUNT(reads);
    original.read(req, ino, size, off, fi);
}

/* The caller's libfuse: the library the object at `caller` (a return address) binds to. */
static void *caller_handle(const void *caller)
{
    Dl_info info;
    if (!dladdr(caller, &info) || !info.dli_fname)
        return NULL;
    return dlopen(info.dli_fname, RTLD_NOLOAD | RTLD_LAZY);
}

static void *lookup(void *handle, const char *name, const char *version)
{
    return handle ? dlvsym(handle, name, version) : NULL;
}

/*
 * The operations to build the session with: a copy of `op` (op_size bytes, kept as the caller
 * passed them: fields sit at the same place since libfuse 3.0) with the wrapped entries, or
 * `op` itself when the fast path is off or the caller's libfuse lacks fuse_reply_err.
 */
static const struct fuse_lowlevel_ops *wrap(const struct fuse_lowlevel_ops *op, size_t op_size,
                                            void *handle)
{
    if (GET(disabled) || !op || op_size < WRAPPED_OPS_SIZE) {
        COUNT(unwrapped);
        return op;
    }
    reply_err = (reply_err_fn)lookup(handle, "fuse_reply_err", "FUSE_3.0");
    version_fn version = (version_fn)lookup(handle, "fuse_version", "FUSE_3.0");
    if (!reply_err) {
        COUNT(lookup_failures);
        return op;
    }
    if (version)
        SET(libfuse_version, (uint64_t)version());
    struct fuse_lowlevel_ops *ops = malloc(op_size);
    if (!ops) {
        COUNT(unwrapped);
        return op;
    }
    memcpy(ops, op, op_size);
    memset(&original, 0, sizeof(original));
    memcpy(&original, op, op_size < sizeof(original) ? op_size : sizeof(original));
    ops->init = wrapped_init;
    if (op->open)
        ops->open = wrapped_open;
    if (op->opendir)
        ops->opendir = wrapped_opendir;
    if (op->read)
        ops->read = wrapped_read;
    COUNT(sessions);
    return ops; /* lives as long as the process: libfuse keeps its own copy anyway */
}

/*
 * The real constructor `name`@`version` of the libfuse the code at `caller` binds to, and in
 * *ops the operations to build the session with (wrapped, unless this is a nested call);
 * NULL, errno ENOSYS, when it cannot be found.
 */
static void *resolve(const void *caller, const char *name, const char *version,
                     const struct fuse_lowlevel_ops *op, size_t op_size,
                     const struct fuse_lowlevel_ops **ops)
{
    void *handle = caller_handle(caller);
    void *real = lookup(handle, name, version);
    if (real) {
        *ops = depth ? op : wrap(op, op_size, handle);
    } else {
        COUNT(lookup_failures);
        errno = ENOSYS;
    }
    if (handle)
        dlclose(handle); /* the caller, and its libfuse, stay loaded */
    return real;
}

EXPORT struct fuse_session *fuse_session_new(struct fuse_args *args,
                                             const struct fuse_lowlevel_ops *op, size_t op_size,
                                             void *userdata)
{
    const struct fuse_lowlevel_ops *ops;
    session_new_fn real = (session_new_fn)resolve(__builtin_return_address(0),
                                                  "fuse_session_new", "FUSE_3.0", op, op_size,
                                                  &ops);
    if (!real)
        return NULL;
    depth++;
    struct fuse_session *session = real(args, ops, op_size, userdata);
    depth--;
    return session;
}

EXPORT struct fuse_session *fuse_session_new_versioned(struct fuse_args *args,
                                                       const struct fuse_lowlevel_ops *op,
                                                       size_t op_size, void *version,
                                                       void *userdata)
{
    const struct fuse_lowlevel_ops *ops;
    session_new_versioned_fn real = (session_new_versioned_fn)resolve(
        __builtin_return_address(0), "fuse_session_new_versioned", "FUSE_3.17", op, op_size,
        &ops);
    if (!real)
        return NULL;
    depth++;
    struct fuse_session *session = real(args, ops, op_size, version, userdata);
    depth--;
    return session;
}
