"""Write a model folder whole or not at all (docs/model-folder.md, "Writing a folder").

The Python twin of training/model_dir.c: a writer fills a temporary folder
beside the final one, ``.NAME.tmp-PID`` (the daemon never loads a name that
starts with '.'), every file and the folder are synced, and one rename puts it
in the final one's place (``renameat2(RENAME_EXCHANGE)`` when a folder is
there already, then the old one is removed). A kill at any moment leaves the
old folder or the new one, whole; a failure (a full disk) leaves the old one
and removes the temporary folder::

    with model_folder.staged("models/vgg") as tmp:
        model_folder.write_bytes(os.path.join(tmp, "model.ts"), data)

Standard library only (ctypes for renameat2).
"""

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil

RENAME_EXCHANGE = 2
AT_FDCWD = -100


class FolderError(OSError):
    """A model folder could not be written; the message names the folder and
    the reason, and the folder is as it was."""

    def __str__(self):
        return self.args[0]


def _renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        f = libc.renameat2
    except (OSError, AttributeError):  # a libc without it (glibc < 2.28)
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                  ctypes.c_uint]
    return f


def exchange(a, b):
    """Swap the folders a and b in one step. Raises OSError (ENOSYS, EINVAL on
    a file system without the exchange, ENOENT when b does not exist)."""
    f = _renameat2()
    if f is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), a)
    if f(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), b)


def _split(out):
    out = os.path.normpath(out)
    parent, base = os.path.split(out)
    if base in ("", ".", "..") or base.startswith("/"):
        raise FolderError("cannot write a model folder at %r" % out)
    return parent or ".", base


def staging_path(out):
    """PARENT/.NAME.tmp-PID: where the folder out is written before the rename."""
    parent, base = _split(out)
    return os.path.join(parent, ".%s.tmp-%d" % (base, os.getpid()))


def write_bytes(path, data):
    """Write data to path; an OSError names the path (a bare ENOSPC from
    write() does not)."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


def write_json(path, obj):
    write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def _sync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(path):
    """fsync every regular file and folder under path (links not followed)."""
    for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p) and not os.path.islink(p):
                _sync(p)
        _sync(root)


def commit(tmp, out, carry=()):
    """Put the folder tmp, written whole, in out's place. carry: names of
    entries of an old out to move (a folder) or hard-link (a file; copied
    when a link is refused) into tmp first, unless tmp has its own. Raises
    OSError; out is then as it was (tmp is left for the caller to remove)."""
    if os.path.islink(out):
        out = os.path.realpath(out)  # the folder the link points to is replaced
    parent, base = _split(out)
    exists = os.path.lexists(out)
    if exists and not os.path.isdir(out):
        raise OSError(errno.ENOTDIR, "exists and is not a folder", out)
    moved = []
    try:
        for name in carry if exists else ():
            src, dst = os.path.join(out, name), os.path.join(tmp, name)
            if not os.path.lexists(src) or os.path.lexists(dst):
                continue
            if os.path.isdir(src) and not os.path.islink(src):
                os.rename(src, dst)
                moved.append(name)
            else:
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
        sync_tree(tmp)
        if not exists:
            os.rename(tmp, out)
        else:
            try:
                exchange(tmp, out)
                shutil.rmtree(tmp, ignore_errors=True)  # the old folder now
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                # No exchange here: old aside, new in, old removed. A crash
                # between the renames leaves the old folder at .NAME.old-PID.
                aside = os.path.join(parent, ".%s.old-%d" % (base, os.getpid()))
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(out, aside)
                try:
                    os.rename(tmp, out)
                except OSError:
                    os.rename(aside, out)
                    raise
                shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        for name in moved:
            with contextlib.suppress(OSError):
                os.rename(os.path.join(tmp, name), os.path.join(out, name))
        raise
    with contextlib.suppress(OSError):
        _sync(parent)


@contextlib.contextmanager
def staged(out, carry=()):
    """Yield the temporary folder of out; when the block ends without an
    exception, commit it (see commit). On any failure the temporary folder is
    removed and out is left as it was; an OSError comes out as FolderError,
    whose message names out and the reason (e.g. "No space left on device")."""
    if os.path.islink(out):
        out = os.path.realpath(out)  # the folder the link points to is replaced
    tmp = staging_path(out)
    try:
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a killed writer's, same pid
        os.mkdir(tmp)
        yield tmp
        commit(tmp, out, carry)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, FolderError):
            raise
        raise FolderError("writing the model folder %s: %s (the folder was "
                          "left as it was)" % (out, e)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
