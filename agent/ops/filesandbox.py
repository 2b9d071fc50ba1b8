"""The file manager's sandbox: which object a path names, found safely under a root.

A path is first checked lexically (:mod:`agent.ops.filepaths`), then matched to a root, then
walked one component at a time from the root's directory file descriptor: every directory is
opened with ``O_PATH | O_NOFOLLOW | O_DIRECTORY`` relative to its parent's descriptor and
checked to be the very object that was examined (device and inode), so a directory swapped for
a symlink between the check and the use is refused, never followed. A symlink met on the way
is read and its target walked the same way, from the root for an absolute target (which must
lie under the root) or from the link's directory for a relative one; a ``..`` above the root
is an escape, wherever it comes from, and more than :data:`MAX_LINKS` links is a loop. The
root's own path is opened the same way from ``/`` (after ``realpath`` of the configured text),
so even the root cannot be swapped under the walk.

What the walk gives back (:class:`Resolved`) holds the descriptors: every later operation
works through them (``dir_fd=``), never by resolving a path string again.

Refused at every step, whatever the root: the denylist (:class:`Denylist`: system paths, the
agent's own state and key, the configured extra globs, matched on the real path and on the
identity of the objects they name, so a hard link or a bind mount of one is refused too, and
anything on the /proc, /sys and /dev file systems); the names of the roots' staging
directories (``.fleetdeck-uploads``, ``.fleetdeck-trash``); device files, FIFOs and sockets
as the final object.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from agent.ops.base import LOCK_WAIT_S, file_kind, flock_exclusive, stop_if_cancelled
from agent.ops.filepaths import ParsedPath, PathRefused, Reason, parse
from agent.settings import AgentSettings

#: most symlinks one resolution follows
MAX_LINKS = 40
UPLOADS_DIR = ".fleetdeck-uploads"
TRASH_DIR = ".fleetdeck-trash"
RESERVED_NAMES = frozenset({UPLOADS_DIR, TRASH_DIR})
#: refused inside any root; a glob without '/' matches any path component
SYSTEM_DENYLIST = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
                   "/etc/sudoers", "/etc/sudoers.d", "/etc/sudoers*", "/root/.ssh", "/proc",
                   "/sys", "/dev", "/boot")
#: pseudo file systems: nothing on them is ever read or written
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
WALK_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_GLOB_CHARS = frozenset("*?[")

P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Root:
    """One sandbox root: as configured (shown in results) and its real path."""

    index: int
    configured: str
    real: str

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in self.real.split("/") if p)

    @property
    def configured_parts(self) -> tuple[str, ...]:
        return tuple(p for p in os.path.normpath(self.configured).split("/") if p)


@dataclass(frozen=True)
class Denylist:
    """Paths (globs) and object identities the file manager never touches."""

    globs: tuple[str, ...]
    identities: frozenset[tuple[int, int]]
    devices: frozenset[int]

    @classmethod
    def build(cls, settings: AgentSettings) -> Denylist:
        own = [settings.state_dir]
        if settings.control_key is not None:
            own.append(settings.control_key)
        globs = [*SYSTEM_DENYLIST, *settings.file_denylist]
        for path in own:
            globs.append(os.path.abspath(path))
        literal = [g for g in globs if g.startswith("/") and not _GLOB_CHARS & set(g)]
        globs.extend(os.path.realpath(g) for g in literal)
        return cls(tuple(dict.fromkeys(globs)), frozenset(_identities(literal)),
                   frozenset(_pseudo_devices()))

    def path_match(self, real: str) -> str | None:
        """The glob that denies ``real`` (or one of its ancestors), or None."""
        parts = [p for p in real.split("/") if p]
        for pattern in self.globs:
            if "/" in pattern:
                for depth in range(len(parts) + 1):
                    if fnmatch.fnmatchcase("/" + "/".join(parts[:depth]), pattern):
                        return pattern
            elif any(fnmatch.fnmatchcase(part, pattern) for part in parts):
                return pattern
        return None

    def check(self, real: str, info: os.stat_result) -> None:
        """PathRefused (denied-path) if the object at ``real`` with ``info`` is denied."""
        pattern = self.path_match(real)
        if pattern is not None:
            raise PathRefused(Reason.DENIED, f"{real} is on the agent's denylist ({pattern})")
        if (info.st_dev, info.st_ino) in self.identities:
            raise PathRefused(Reason.DENIED, f"{real} is the same file as a path on the "
                              "agent's denylist (a hard link or bind mount of it)")
        if info.st_dev in self.devices:
            raise PathRefused(Reason.DENIED, f"{real} is on a pseudo file system "
                              "(/proc, /sys or /dev)")


def _identities(paths: Iterable[str]) -> Iterator[tuple[int, int]]:
    """(device, inode) of each path and, for a directory, of its direct children."""
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue
        yield info.st_dev, info.st_ino
        if stat.S_ISDIR(info.st_mode) and path not in PSEUDO_FILESYSTEMS:
            with contextlib.suppress(OSError), os.scandir(path) as entries:
                for n, entry in enumerate(entries):
                    if n >= 1000:
                        break
                    with contextlib.suppress(OSError):
                        child = entry.stat(follow_symlinks=False)
                        yield child.st_dev, child.st_ino


def _pseudo_devices() -> Iterator[int]:
    """The devices of /proc, /sys and /dev where they are mount points of their own."""
    try:
        top = os.stat("/").st_dev
    except OSError:
        return
    for path in PSEUDO_FILESYSTEMS:
        with contextlib.suppress(OSError):
            device = os.stat(path).st_dev
            if device != top:
                yield device


@dataclass
class Resolved:
    """The object a path names, reached through descriptors that this holds (close it).

    ``parent_fd`` is the directory holding it and ``name`` its name there (None for the root
    itself, then ``parent_fd`` is the root); ``info`` is its lstat, None if it does not exist.
    ``dir_only``: the path ended with '/', so it names a directory (an existing object that
    is not one was refused by the walk; a missing one may only become a directory).
    """

    root: Root
    root_fd: int
    parent_fd: int
    name: str | None
    rel: tuple[str, ...]
    info: os.stat_result | None
    fds: list[int] = field(default_factory=list)
    dir_only: bool = False

    @property
    def path(self) -> str:
        """Its path relative to the root ('' for the root itself)."""
        return "/".join(self.rel)

    @property
    def real(self) -> str:
        return join(self.root.real, self.rel)

    @property
    def exists(self) -> bool:
        return self.info is not None

    def close(self) -> None:
        for fd in reversed(self.fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()

    def __enter__(self) -> Resolved:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def join(base: str, rel: Iterable[str]) -> str:
    return "/".join([base.rstrip("/"), *rel]) if tuple(rel) else base


class Sandbox:
    """The roots (of one tenant's commands) and the denylist of one agent; :meth:`resolve`
    walks a path."""

    def __init__(self, settings: AgentSettings, tenant: str | None = None) -> None:
        self.settings = settings
        self.roots = [Root(i, str(path), os.path.realpath(path))
                      for i, path in enumerate(settings.file_roots_for(tenant))]
        self.denylist = Denylist.build(settings)

    def root(self, ref: int | str | None) -> Root:
        """The root ``ref`` names (or the only one)."""
        if not self.roots:
            raise PathRefused(Reason.DISABLED, "the file manager is off on this agent: no "
                              "sandbox roots are configured (agent settings file_roots, "
                              "file_tenant_roots)")
        if ref is None:
            if len(self.roots) > 1:
                raise PathRefused(Reason.AMBIGUOUS_ROOT, "this agent has "
                                  f"{len(self.roots)} sandbox roots: name one (root)")
            return self.roots[0]
        for root in self.roots:
            if ref in (root.index, root.configured, root.real) or (
                    isinstance(ref, str) and os.path.normpath(ref) == root.configured):
                return root
        known = ", ".join(f"{r.index}: {r.configured}" for r in self.roots)
        raise PathRefused(Reason.UNKNOWN_ROOT, f"no sandbox root {ref!r} (roots: {known})")

    def locate(self, ref: int | str | None, parsed: ParsedPath) -> tuple[Root, tuple[str, ...]]:
        """The root of a parsed path and the segments under it."""
        if not parsed.absolute:
            return self.root(ref), parsed.segments
        if not self.roots:
            self.root(None)
        candidates = [self.root(ref)] if ref is not None else self.roots
        best: tuple[Root, tuple[str, ...]] | None = None
        for root in candidates:
            for prefix in (root.configured_parts, root.parts):
                if parsed.segments[:len(prefix)] == prefix:
                    rest = parsed.segments[len(prefix):]
                    if best is None or len(rest) < len(best[1]):
                        best = root, rest
        if best is None:
            where = "the root " + candidates[0].configured if ref is not None else \
                "any sandbox root"
            raise PathRefused(Reason.OUTSIDE_ROOT, f"/{'/'.join(parsed.segments)} is not "
                              f"under {where}")
        return best

    def resolve(self, ref: int | str | None, text: str, *, follow: bool = True,
                must_exist: bool = True) -> Resolved:
        """Walk ``text`` under its root. ``follow``: a symlink as the final component is
        followed (else it is the object); ``must_exist``: a missing final object is
        not-found (else the result names it with ``info`` None; its directory must exist)."""
        parsed = parse(text)
        root, segments = self.locate(ref, parsed)
        shown = text or "the root"
        real = join(root.real, segments)
        pattern = self.denylist.path_match(real)
        if pattern is not None:  # refused as spelled, whether or not it exists
            raise PathRefused(Reason.DENIED, f"{real} is on the agent's denylist ({pattern})")
        root_fd = open_root(root)
        walk = Resolved(root, root_fd, root_fd, None, (), None, [root_fd],
                        dir_only=parsed.dir_only)
        try:
            _Walker(self, walk, shown).run(segments, follow=follow, must_exist=must_exist)
        except BaseException:
            walk.close()
            raise
        return walk


class _Walker:
    """One resolution: the stack of directory descriptors from the root down."""

    def __init__(self, sandbox: Sandbox, walk: Resolved, shown: str) -> None:
        self.sandbox = sandbox
        self.walk = walk
        self.shown = shown
        self.rel: list[str] = []
        self.stack = [walk.root_fd]
        self.links = 0

    def run(self, segments: tuple[str, ...], *, follow: bool, must_exist: bool) -> None:
        pending = deque(segments)
        self.sandbox.denylist.check(self.walk.root.real, os.fstat(self.walk.root_fd))
        while pending:
            name = pending.popleft()
            last = not pending
            if name in ("", "."):
                continue
            if name == "..":
                self.up()
                continue
            if name in RESERVED_NAMES:
                raise PathRefused(Reason.RESERVED, f"{name} holds the file manager's own "
                                  "data and is not reachable through it")
            info = self.lstat(name)
            if info is None:
                if last and not must_exist:
                    real = join(self.walk.root.real, [*self.rel, name])
                    pattern = self.sandbox.denylist.path_match(real)
                    if pattern is not None:
                        raise PathRefused(Reason.DENIED, f"{real} is on the agent's denylist "
                                          f"({pattern})")
                    self.finish(name, None)
                    return
                missing = "/".join([*self.rel, name])
                raise PathRefused(Reason.NOT_FOUND, f"{missing} does not exist"
                                  if missing == self.shown.strip("/")
                                  else f"{self.shown}: {missing} does not exist")
            if stat.S_ISLNK(info.st_mode) and (follow or not last):
                pending.extendleft(reversed(self.link(name)))
                continue
            self.sandbox.denylist.check(join(self.walk.root.real, [*self.rel, name]), info)
            if last:
                self.finish(name, info)
                return
            self.down(name, info)
        self.finish_here()

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.stack[-1], follow_symlinks=False)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise PathRefused(Reason.PERMISSION, f"{self.shown}: the agent may not look "
                              f"into {'/'.join(self.rel) or 'the root'}") from None

    def link(self, name: str) -> list[str]:
        """The segments of the symlink ``name``'s target, the walk moved to where it starts."""
        self.links += 1
        if self.links > MAX_LINKS:
            raise PathRefused(Reason.SYMLINK_LOOP, f"{self.shown}: more than {MAX_LINKS} "
                              "symlinks (a loop)")
        where = "/".join([*self.rel, name])
        try:
            target = os.readlink(name, dir_fd=self.stack[-1])
        except FileNotFoundError:
            raise PathRefused(Reason.NOT_FOUND, f"{self.shown}: the symlink {where} was moved "
                              "or removed during the operation") from None
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            raise PathRefused(Reason.CHANGED, f"{self.shown}: {where} is no longer a symlink "
                              "(changed during the operation)") from None
        parts = target.split("/")
        if not target.startswith("/"):
            return parts
        inside = self.walk.root.parts
        absolute = tuple(p for p in parts if p)
        if absolute[:len(inside)] != inside or ".." in absolute[:len(inside)]:
            raise PathRefused(Reason.SYMLINK_ESCAPE, f"{self.shown}: the symlink {where} "
                              f"points outside the root ({target})")
        while len(self.stack) > 1:
            self.up()
        return list(absolute[len(inside):])

    def up(self) -> None:
        if not self.rel:
            raise PathRefused(Reason.SYMLINK_ESCAPE, f"{self.shown}: a symlink leads above "
                              "the root")
        self.rel.pop()
        fd = self.stack.pop()
        self.walk.fds.remove(fd)
        os.close(fd)

    def down(self, name: str, info: os.stat_result) -> None:
        if not stat.S_ISDIR(info.st_mode):
            raise PathRefused(Reason.NOT_A_DIRECTORY, f"{self.shown}: "
                              f"{'/'.join([*self.rel, name])} is not a directory")
        fd = open_step(name, self.stack[-1], info, self.shown)
        self.walk.fds.append(fd)
        self.stack.append(fd)
        self.rel.append(name)

    def finish(self, name: str, info: os.stat_result | None) -> None:
        if info is not None and not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)
                                     or stat.S_ISLNK(info.st_mode)):
            raise PathRefused(Reason.SPECIAL_FILE, f"{self.shown} is a "
                              f"{file_kind(info.st_mode)}: device files, FIFOs and sockets "
                              "are never read or written")
        if self.walk.dir_only and info is not None and not stat.S_ISDIR(info.st_mode):
            raise PathRefused(Reason.NOT_A_DIRECTORY, f"{self.shown} ends with '/' but "
                              f"{'/'.join([*self.rel, name])} is a "
                              f"{file_kind(info.st_mode)}, not a directory")
        self.walk.parent_fd = self.stack[-1]
        self.walk.name = name
        self.walk.rel = (*self.rel, name)
        self.walk.info = info

    def finish_here(self) -> None:
        """The walk ended on a directory it holds (a link to '.', a trailing '/'...)."""
        if not self.rel:
            self.walk.info = os.fstat(self.walk.root_fd)
            return
        name = self.rel.pop()
        held = self.stack.pop()
        self.walk.fds.remove(held)
        info = os.fstat(held)
        os.close(held)
        self.finish(name, info)


def open_root(root: Root) -> int:
    """An O_PATH descriptor of the root's directory, its real path walked from '/' without
    following any symlink (a component swapped for a link since realpath is refused)."""
    fd = os.open("/", WALK_DIR)
    try:
        for part in root.parts:
            try:
                step = os.open(part, WALK_DIR, dir_fd=fd)
            except FileNotFoundError:
                raise PathRefused(Reason.NOT_FOUND, f"the sandbox root {root.configured} "
                                  "does not exist") from None
            except (NotADirectoryError, OSError) as exc:
                raise PathRefused(Reason.CHANGED, f"the sandbox root {root.configured} "
                                  f"changed while it was opened ({exc.strerror})") from None
            os.close(fd)
            fd = step
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_step(name: str, parent: int, info: os.stat_result, shown: str) -> int:
    """An O_PATH descriptor of the directory ``name`` that was examined as ``info``."""
    try:
        fd = os.open(name, WALK_DIR, dir_fd=parent)
    except OSError as exc:
        raise PathRefused(Reason.CHANGED, f"{shown}: {name} changed during the operation "
                          f"({exc.strerror})") from None
    if not same(os.fstat(fd), info):
        os.close(fd)
        raise PathRefused(Reason.CHANGED, f"{shown}: {name} changed during the operation")
    return fd


def same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def entry_type(mode: int) -> str:
    """How a listing names an object's type."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "symlink" if stat.S_ISLNK(mode) else "other"


def open_object(res: Resolved, flags: int, *, want_dir: bool = False) -> int:
    """A real descriptor of the resolved object, opened through its directory's descriptor
    (never following a link, never blocking on a FIFO) and checked to be the object the walk
    examined; a regular file, or with ``want_dir`` a directory."""
    if res.name is None:
        fd = os.open(".", flags | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=res.root_fd)
    else:
        try:
            fd = os.open(res.name, flags | OPEN_SAFE, dir_fd=res.parent_fd)
        except FileNotFoundError:
            raise PathRefused(Reason.NOT_FOUND, f"{res.path} was moved or removed during the "
                              "operation") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink now
                raise PathRefused(Reason.CHANGED, f"{res.path} changed during the "
                                  "operation") from None
            if isinstance(exc, IsADirectoryError):
                raise PathRefused(Reason.IS_A_DIRECTORY, f"{res.path} is a directory") \
                    from None
            raise
    info = os.fstat(fd)
    problem = None
    if res.info is not None and not same(info, res.info):
        problem = PathRefused(Reason.CHANGED, f"{res.path} changed during the operation")
    elif want_dir and not stat.S_ISDIR(info.st_mode):
        problem = PathRefused(Reason.NOT_A_DIRECTORY, f"{res.path or 'the root'} is not a "
                              "directory")
    elif not want_dir and stat.S_ISDIR(info.st_mode):
        problem = PathRefused(Reason.IS_A_DIRECTORY, f"{res.path or 'the root'} is a "
                              "directory")
    elif not want_dir and not stat.S_ISREG(info.st_mode):
        problem = PathRefused(Reason.SPECIAL_FILE, f"{res.path} is a {file_kind(info.st_mode)}")
    if problem is not None:
        os.close(fd)
        raise problem
    return fd


def refuse_new_directory(res: Resolved) -> None:
    """PathRefused (is-a-directory) for a missing object named with a trailing '/' where a
    file would be made: such a path names a directory (POSIX open(2) says EISDIR)."""
    if res.dir_only and not res.exists:
        raise PathRefused(Reason.IS_A_DIRECTORY, f"{res.path}/ ends with '/', so it names a "
                          "directory: a file cannot be made there (drop the '/')")


def refuse_hard_link(info: os.stat_result, shown: str) -> None:
    """PathRefused (hard-link) for a regular file with more than one name: another of its
    names may lie outside the sandbox (a key, /etc/shadow before it was rewritten...), and
    the denylist only knows the identities of the paths it names. Checked on the opened
    descriptor's fstat, so the file cannot be swapped after the check."""
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        raise PathRefused(Reason.HARD_LINK, f"{shown} has {info.st_nlink} hard links: another "
                          "name of the same file may lie outside the sandbox, so its content "
                          "is never read or copied (it can still be listed, moved, deleted or "
                          "replaced by a write)")


#: errors of the file system that a concurrent change (a rename, a removal, a new link...)
#: can cause after a path was resolved, and the reason each is refused with
RACE_REASONS = {errno.ENOENT: Reason.NOT_FOUND, errno.ENOTDIR: Reason.NOT_A_DIRECTORY,
                errno.EISDIR: Reason.IS_A_DIRECTORY, errno.EEXIST: Reason.EXISTS,
                errno.ENOTEMPTY: Reason.NOT_EMPTY, errno.ELOOP: Reason.CHANGED,
                errno.EXDEV: Reason.CROSS_DEVICE, errno.EACCES: Reason.PERMISSION,
                errno.EPERM: Reason.PERMISSION}


def os_refusal(exc: OSError, shown: str) -> PathRefused | None:
    """The refusal an OSError from the file system stands for, or None for a real failure
    (no space, an I/O error...)."""
    reason = RACE_REASONS.get(exc.errno or 0)
    if reason is None:
        return None
    which = f" ({exc.filename})" if exc.filename not in (None, shown) else ""
    why = ("the agent may not do this" if reason == Reason.PERMISSION else
           "it changed during the operation (moved, removed or replaced)")
    return PathRefused(reason, f"{shown}: {exc.strerror}{which}: {why}")


def refuses_os_errors(work: Callable[[Sandbox, P], R]) -> Callable[[Sandbox, P], R]:
    """``work`` (a handler's body) with the file system's errors that a concurrent change
    causes after resolution turned into refusals naming the params' path, so a race never
    ends a command as a bare handler error."""

    @functools.wraps(work)
    def guarded(sandbox: Sandbox, params: P) -> R:
        try:
            return work(sandbox, params)
        except OSError as exc:
            path = getattr(params, "path", None)
            problem = os_refusal(exc, path or ("the root" if path == "" else "the item"))
            if problem is None:
                raise
            raise problem from exc

    return guarded


def fsync_dir(dir_fd: int) -> None:
    """fsync a directory held by an O_PATH descriptor."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(root_fd: int) -> Iterator[None]:
    """One mutation at a time per root (threads and processes alike): flock on the root."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
    try:
        if not flock_exclusive(fd):
            raise PathRefused(Reason.BUSY, f"another change in this root has held its lock "
                              f"for {LOCK_WAIT_S:.0f} s; nothing was done, try again")
        stop_if_cancelled()
        yield
    finally:
        os.close(fd)


def staging_dir(root_fd: int, name: str) -> int:
    """An O_PATH descriptor of the root's hidden directory ``name`` (made 0700 if missing);
    a link or anything but a directory there is refused."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=root_fd)
    try:
        return os.open(name, WALK_DIR, dir_fd=root_fd)
    except OSError as exc:
        raise PathRefused(Reason.CHANGED, f"the root's {name} is not a plain directory "
                          f"({exc.strerror})") from None

