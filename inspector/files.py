"""Reading a file that anyone with access to a shared folder may have put there: only a regular file is read (never a
named pipe, a device such as /dev/zero, a socket or a folder, also not through a link), and only up to a size limit
that is checked before reading. And an exclusive lock on a file, shared by every process that uses it."""
from __future__ import annotations

import logging
import os
import stat
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_CHUNK = 1 << 24


class NotReadable(OSError):
    """The file is not a regular file, or larger than the limit: refused before reading."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular(st: os.stat_result, path: str | Path, max_bytes: int) -> None:
    """Raise NotReadable unless `st` (of `path`) is a regular file of at most max_bytes."""
    if not stat.S_ISREG(st.st_mode):
        raise NotReadable(f"{path} is {_kind(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise NotReadable(f"{path} holds {st.st_size:,} bytes, more than the limit of {max_bytes:,}")


def read_regular(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of the regular file `path` (a link is followed), at most `max_bytes`. Raises NotReadable (an OSError)
    for anything else, before opening it; the file is opened non-blocking, so a named pipe swapped in between the
    check and the opening cannot block, and checked again once open. Other OSErrors pass through."""
    check_regular(os.stat(path), path, max_bytes)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        check_regular(st, path, max_bytes)
        chunks, size = [], 0
        while size <= max_bytes:  # a network share may return short reads: read to the end
            chunk = f.read(max(min(st.st_size + 1 - size, _CHUNK), 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    if size > max_bytes:
        raise NotReadable(f"{path} grew beyond the limit of {max_bytes:,} bytes while it was read")
    return b"".join(chunks)


def _lock(f, shared: bool = False, wait: bool = True) -> None:
    """Lock the open file `f` (its first byte on Windows, which has no shared locks) for every
    process; without `wait`, OSError when another holds it."""
    if os.name == "nt":
        import msvcrt

        f.seek(0)
        while True:
            try:
                msvcrt.locking(f.fileno(), msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
                return
            except OSError:  # LK_LOCK gives up after 10 s: keep waiting
                if not wait:
                    raise
    else:
        import fcntl

        fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))


def _unlock(f) -> None:
    if os.name == "nt":
        import msvcrt

        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def file_lock(path: Path):
    """An exclusive lock on `path` shared by every process that takes it (waits for it)."""
    try:
        f = open(path, "a+b")
    except OSError as e:  # e.g. a full disk cannot create the lock file: go on unlocked
        log.warning("cannot lock %s (%s); going on without the lock", path, e)
        yield
        return
    with f:
        _lock(f)
        try:
            yield
        finally:
            _unlock(f)


@contextmanager
def in_use(path: Path):
    """Mark `path` in use while the block runs, for every process to see (is_in_use): a shared
    lock (on Windows, which has none, one user's lock). A file that cannot be locked goes unmarked."""
    try:
        f = open(path, "a+b")
    except OSError as e:
        log.warning("cannot mark %s in use (%s); going on without the mark", path, e)
        yield
        return
    with f:  # closing the file releases its lock
        try:
            _lock(f, shared=True, wait=os.name != "nt")  # Windows: a second line would wait for the first
        except OSError as e:  # Windows: another user holds the mark already
            log.info("%s is marked in use already (%s)", path, e)
        yield


def is_in_use(path: Path) -> bool:
    """Whether a process (this one too) holds `path` marked in use (in_use)."""
    try:
        f = open(path, "rb")
    except OSError:
        return False
    with f:
        try:
            _lock(f, wait=False)
        except OSError:
            return True
        _unlock(f)
    return False
