"""The file manager's I/O primitives, all through directory descriptors of a resolved path:
hashing, the atomic replacement of a file (temporary file, fsync, mode and owner kept, rename,
directory fsync), renames that never replace anything, the check of a directory tree
before it is moved or deleted as a whole, and the description of an object an audit record
keeps as ``before`` when the object is deleted or replaced."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import grp
import hashlib
import os
import pwd
import stat
import uuid
from dataclasses import dataclass
from typing import Any

from agent.ops.base import stop_if_cancelled
from agent.ops.filepaths import PathRefused, Reason
from agent.ops.filesandbox import (
    OPEN_SAFE,
    RESERVED_NAMES,
    Resolved,
    Sandbox,
    entry_type,
    fsync_dir,
    join,
    open_object,
    refuse_hard_link,
    same,
)

BLOCK = 1024 * 1024
#: most entries a directory moved, trashed or deleted as a whole may hold
MAX_TREE_ENTRIES = 100_000
RENAME_NOREPLACE = 1
TEMP_PREFIX = ".fleetdeck-"
#: largest regular file whose SHA-256 a ``before`` description carries (hashing stays cheap)
BEFORE_HASH_BYTES = 4 * 1024 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2: Any = getattr(_libc, "renameat2", None)  # a ctypes function (glibc >= 2.28)
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
    _renameat2.restype = ctypes.c_int


def hash_fd(fd: int) -> str:
    """SHA-256 of a whole file, read through its descriptor."""
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, BLOCK, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def read_at(fd: int, length: int, offset: int) -> bytes:
    parts = []
    while length > 0 and (block := os.pread(fd, min(length, BLOCK), offset)):
        parts.append(block)
        offset += len(block)
        length -= len(block)
    return b"".join(parts)


@dataclass(frozen=True)
class Existing:
    """The file a write replaces: its identity, mode, owner, size and hash."""

    info: os.stat_result
    sha256: str | None  # None: hard-linked, its content is never read

    def summary(self) -> dict[str, object]:
        if self.sha256 is None:
            return {"size": self.info.st_size, "sha256": None, "sha256_omitted":
                    f"the file has {self.info.st_nlink} hard links: its content is never read"}
        return {"size": self.info.st_size, "sha256": self.sha256}


def existing(res: Resolved, expected_sha256: str | None) -> Existing | None:
    """The file at ``res`` (a regular file, or nothing), checked against the precondition.
    A hard-linked file is not hashed (another of its names may lie outside the sandbox: its
    hash, or a precondition compared with it, would tell what that file holds)."""
    found = None
    if res.exists:
        fd = open_object(res, os.O_RDONLY)
        try:
            info = os.fstat(fd)
            found = Existing(info, None if info.st_nlink > 1 else hash_fd(fd))
        finally:
            os.close(fd)
    if expected_sha256 is not None:
        if found is None:
            raise PathRefused(Reason.PRECONDITION, f"{res.path} does not exist, so its "
                              f"sha256 is not {expected_sha256}; nothing was written")
        if found.sha256 is None:
            refuse_hard_link(found.info, res.path)
        if found.sha256 != expected_sha256:
            raise PathRefused(Reason.PRECONDITION, f"{res.path} changed since it was read: "
                              f"its sha256 is {found.sha256}, not the expected "
                              f"{expected_sha256}; nothing was written")
    return found


def temp_name() -> str:
    return f"{TEMP_PREFIX}{uuid.uuid4().hex}.tmp"


def create_temp(dir_fd: int) -> tuple[str, int]:
    name = temp_name()
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | OPEN_SAFE, 0o600, dir_fd=dir_fd)
    return name, fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def commit(res: Resolved, temp: str, fd: int, before: Existing | None,
           mode: int | None) -> None:
    """Put the temporary file ``temp`` (open as ``fd``, in the target's directory) in the
    place of ``res``: the replaced file's mode and owner (or ``mode``, default 0644), fsync,
    a check that the target is still what was examined, rename, directory fsync. The
    temporary file is removed if anything fails."""
    assert res.name is not None
    try:
        if before is None:
            os.fchmod(fd, 0o644 if mode is None else mode)
        else:
            _keep_owner(fd, before.info, res.path)
            os.fchmod(fd, stat.S_IMODE(before.info.st_mode))
        os.fsync(fd)
        _unchanged(res, before)
        stop_if_cancelled()
        os.rename(temp, res.name, src_dir_fd=res.parent_fd, dst_dir_fd=res.parent_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=res.parent_fd)
        raise
    fsync_dir(res.parent_fd)


def _keep_owner(fd: int, info: os.stat_result, shown: str) -> None:
    mine = os.fstat(fd)
    if (mine.st_uid, mine.st_gid) == (info.st_uid, info.st_gid):
        return
    try:
        os.fchown(fd, info.st_uid, info.st_gid)
    except PermissionError:
        raise PathRefused(Reason.PERMISSION, f"{shown} belongs to uid {info.st_uid} gid "
                          f"{info.st_gid}, which this agent cannot keep; nothing was "
                          "written") from None


def _unchanged(res: Resolved, before: Existing | None) -> None:
    assert res.name is not None
    try:
        now = os.stat(res.name, dir_fd=res.parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        now = None
    if before is None and now is not None:
        raise PathRefused(Reason.EXISTS, f"{res.path} was created meanwhile by someone else; "
                          "nothing was written")
    if before is not None and (now is None or not same(now, before.info)
                               or now.st_mtime_ns != before.info.st_mtime_ns
                               or now.st_size != before.info.st_size):
        raise PathRefused(Reason.PRECONDITION, f"{res.path} changed during the write; "
                          "nothing was written")


def rename(src_dir: int, src: str, dst_dir: int, dst: str, *, replace: bool,
           shown: str) -> None:
    """Rename through directory descriptors; unless ``replace``, never over anything
    (renameat2 RENAME_NOREPLACE, else link + unlink for files)."""
    try:
        if replace:
            os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
        else:
            _rename_noreplace(src_dir, src, dst_dir, dst)
    except FileExistsError:
        raise PathRefused(Reason.EXISTS, f"{shown} exists already: nothing is replaced "
                          "unless overwrite is set") from None
    except OSError as exc:
        raise rename_error(exc, shown) from None


def rename_error(exc: OSError, shown: str) -> PathRefused | OSError:
    reasons = {errno.EXDEV: (Reason.CROSS_DEVICE, "is on another file system: it can only "
                             "be copied, not moved"),
               errno.ENOTEMPTY: (Reason.NOT_EMPTY, "is a directory that is not empty"),
               errno.EISDIR: (Reason.IS_A_DIRECTORY, "is a directory"),
               errno.ENOTDIR: (Reason.NOT_A_DIRECTORY, "is not a directory"),
               errno.EINVAL: (Reason.INVALID_MOVE, "would move a directory into itself"),
               errno.EACCES: (Reason.PERMISSION, "is not writable by the agent"),
               errno.EPERM: (Reason.PERMISSION, "is not writable by the agent")}
    if exc.errno in reasons:
        reason, why = reasons[exc.errno]
        return PathRefused(reason, f"{shown} {why}")
    return exc


def _rename_noreplace(src_dir: int, src: str, dst_dir: int, dst: str) -> None:
    if _renameat2 is not None:
        done = _renameat2(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst),
                          RENAME_NOREPLACE)
        if done == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code))
    info = os.stat(src, dir_fd=src_dir, follow_symlinks=False)
    if stat.S_ISDIR(info.st_mode):  # no link(2) for directories: check, then rename
        if present(dst_dir, dst):
            raise FileExistsError(errno.EEXIST, "exists")
        os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
        return
    os.link(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
    os.unlink(src, dir_fd=src_dir)


def present(dir_fd: int, name: str) -> bool:
    """Whether ``name`` exists in ``dir_fd`` (a link counts, whatever it points to)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class TreeFacts:
    """What :func:`check_tree` counted: entries below a directory (all levels) and the sum of
    their sizes (a file or link: no entries, its own size)."""

    entries: int
    bytes: int


def check_tree(sandbox: Sandbox, res: Resolved) -> TreeFacts:
    """Before a directory is moved or deleted as a whole: nothing inside it may be denied,
    another root, a staging directory, or on another file system. Returns how many entries
    it holds and their size in bytes (the sum of its files')."""
    assert res.info is not None and res.name is not None
    if not stat.S_ISDIR(res.info.st_mode):
        return TreeFacts(0, res.info.st_size)
    other_roots = {r.real for r in sandbox.roots if r.real != res.root.real}
    device = res.info.st_dev
    total, count = 0, 0
    todo: list[tuple[int, str, str]] = []
    first = os.open(res.name, os.O_RDONLY | os.O_DIRECTORY | OPEN_SAFE, dir_fd=res.parent_fd)
    todo.append((first, res.real, res.path))
    try:
        while todo:
            fd, real, shown = todo.pop()
            try:
                for name in os.listdir(fd):
                    count += 1
                    if count > MAX_TREE_ENTRIES:
                        raise PathRefused(Reason.TOO_LARGE, f"{res.path} holds more than "
                                          f"{MAX_TREE_ENTRIES} entries")
                    child = join(real, [name])
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    _tree_entry_allowed(sandbox, child, f"{shown}/{name}", info, device,
                                        other_roots, name)
                    total += info.st_size if not stat.S_ISDIR(info.st_mode) else 0
                    if stat.S_ISDIR(info.st_mode):
                        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | OPEN_SAFE,
                                      dir_fd=fd)
                        todo.append((sub, child, f"{shown}/{name}"))
            finally:
                os.close(fd)
    finally:
        for fd, _, _ in todo:
            os.close(fd)
    return TreeFacts(count, total)


def _tree_entry_allowed(sandbox: Sandbox, real: str, shown: str, info: os.stat_result,
                        device: int, other_roots: set[str], name: str) -> None:
    sandbox.denylist.check(real, info)
    if name in RESERVED_NAMES or real in other_roots:
        raise PathRefused(Reason.RESERVED, f"{shown} holds another sandbox root or the file "
                          "manager's own data")
    if info.st_dev != device:
        raise PathRefused(Reason.CROSS_DEVICE, f"{shown} is another file system mounted "
                          "inside")


def current(res: Resolved) -> None:
    """PathRefused (changed) unless the object at ``res`` is still the one resolved."""
    assert res.name is not None and res.info is not None
    try:
        now = os.stat(res.name, dir_fd=res.parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        now = None
    if now is None or not same(now, res.info):
        raise PathRefused(Reason.CHANGED, f"{res.path} changed during the operation")


def replaceable(src: os.stat_result, dst: Resolved) -> None:
    """PathRefused unless ``src`` may take the place of the existing ``dst`` as rename(2)
    would allow: a directory only over an empty directory, anything else only over a
    non-directory. Checked before the destination is moved aside."""
    assert dst.info is not None and dst.name is not None
    if stat.S_ISDIR(src.st_mode) and not stat.S_ISDIR(dst.info.st_mode):
        raise PathRefused(Reason.NOT_A_DIRECTORY, f"{dst.path} is not a directory: a "
                          "directory only replaces an empty directory")
    if not stat.S_ISDIR(src.st_mode) and stat.S_ISDIR(dst.info.st_mode):
        raise PathRefused(Reason.IS_A_DIRECTORY, f"{dst.path} is a directory")
    if stat.S_ISDIR(dst.info.st_mode):
        fd = os.open(dst.name, os.O_RDONLY | os.O_DIRECTORY | OPEN_SAFE, dir_fd=dst.parent_fd)
        try:
            if os.listdir(fd):
                raise PathRefused(Reason.NOT_EMPTY, f"{dst.path} is a directory that is not "
                                  "empty")
        finally:
            os.close(fd)


def describe(res: Resolved, facts: TreeFacts) -> dict[str, Any]:
    """What an audit record keeps as ``before`` of the object at ``res`` (about to be deleted
    or replaced): a directory's type, entries (all levels) and bytes (from ``facts``); a file's
    or link's type, size, mode and owner, a link's target, and a file's SHA-256 unless that
    would be costly or read what must not be read (``sha256`` None and ``sha256_omitted``
    says why)."""
    assert res.info is not None and res.name is not None
    info = res.info
    if stat.S_ISDIR(info.st_mode):
        return {"type": "dir", "entries": facts.entries, "bytes": facts.bytes}
    found: dict[str, Any] = {"type": entry_type(info.st_mode), "size": info.st_size,
                             "mode": f"{stat.S_IMODE(info.st_mode):04o}",
                             "owner": user_name(info.st_uid)}
    if stat.S_ISLNK(info.st_mode):
        found["target"] = os.readlink(res.name, dir_fd=res.parent_fd)
        return found
    found["sha256"], omitted = _before_hash(res)
    if omitted is not None:
        found["sha256_omitted"] = omitted
    return found


def _before_hash(res: Resolved) -> tuple[str | None, str | None]:
    """(sha256, None), or (None, why it is omitted) for a large, hard-linked or unreadable
    file; checked on the opened descriptor."""
    try:
        fd = open_object(res, os.O_RDONLY)
    except PermissionError:
        return None, "the agent may not read the file"
    try:
        info = os.fstat(fd)
        if info.st_nlink > 1:
            return None, f"the file has {info.st_nlink} hard links: its content is never read"
        if info.st_size > BEFORE_HASH_BYTES:
            return None, (f"the file is {info.st_size} bytes, more than the "
                          f"{BEFORE_HASH_BYTES} hashed for a record")
        return hash_fd(fd), None
    finally:
        os.close(fd)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
