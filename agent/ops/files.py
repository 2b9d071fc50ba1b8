"""FILE_LIST, FILE_READ, FILE_WRITE, FILE_UPLOAD_CHUNK, FILE_MOVE, FILE_DELETE, FILE_RESTORE:
the file manager's handlers.

Every path goes through the sandbox (:mod:`agent.ops.filesandbox`) before any I/O, and every
operation then works through the descriptors the walk holds. A refusal raises
:class:`~agent.ops.filepaths.PathRefused` whose message starts ``refused (<reason>): ``.
Reads and writes check the size caps and the MIME policy (:mod:`agent.ops.filemime`, from the
content); writes are atomic and keep the mode and owner of the file they replace
(:mod:`agent.ops.fileio`); uploads are in :mod:`agent.ops.fileupload`, the trash in
:mod:`agent.ops.filetrash`. Mutations of one root are serialised by a lock on the root.

Results name paths relative to their root; mutations carry what an audit needs to see the
change (sizes and hashes before and after, where things went): the control plane keeps a
result's ``before`` as the audit record's before. A move with ``overwrite`` puts what it
replaces in the trash first (``replaced`` names it, with its ``trash_id``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from agent.ops import filetrash, fileupload
from agent.ops.base import OpsContext, Report, in_thread
from agent.ops.fileio import (
    check_tree,
    commit,
    create_temp,
    current,
    existing,
    group_name,
    hash_fd,
    read_at,
    user_name,
    write_all,
)
from agent.ops.filemime import HEAD_BYTES, check, sniff
from agent.ops.filepaths import PathRefused, Reason
from agent.ops.filesandbox import (
    RESERVED_NAMES,
    Resolved,
    Sandbox,
    entry_type,
    locked,
    open_object,
    refuse_hard_link,
    refuse_new_directory,
    refuses_os_errors,
)
from schemas.commands import Command
from schemas.files import (
    FileDeleteParams,
    FileListParams,
    FileMoveParams,
    FileReadParams,
    FileRestoreParams,
    FileUploadChunkParams,
    FileWriteParams,
)

# -- handlers -------------------------------------------------------------------------------

P = TypeVar("P", bound=BaseModel)
Handler = Callable[[OpsContext, Command, Report], Awaitable[dict[str, Any]]]


def file_handler(params_type: type[P],
                 work: Callable[[Sandbox, P], dict[str, Any]]) -> Handler:
    """A handler that checks the command's params type and runs ``work`` (blocking file I/O)
    on a worker thread against a sandbox of the agent's roots."""

    async def handler(context: OpsContext, command: Command, report: Report) -> dict[str, Any]:
        params = command.params
        if not isinstance(params, params_type):
            raise TypeError(f"{command.type} expects {params_type.__name__}")
        # the sandbox resolves its roots and denylist on disk too: all of it off the loop
        return await in_thread(lambda: work(Sandbox(context.settings, command.tenant), params))

    handler.__name__ = work.__name__
    return handler


# -- listing ---------------------------------------------------------------------------------

@refuses_os_errors
def listing(sandbox: Sandbox, params: FileListParams) -> dict[str, Any]:
    if params.trash:
        return filetrash.listing(sandbox, params)
    with sandbox.resolve(params.root, params.path) as res:
        fd = open_object(res, os.O_RDONLY, want_dir=True)
        try:
            names = sorted(n for n in os.listdir(fd) if n not in RESERVED_NAMES)
            page = names[params.offset:params.offset + params.limit]
            entries = [e for e in (entry(fd, name) for name in page) if e is not None]
        finally:
            os.close(fd)
        return {"root": res.root.configured, "path": res.path, "entries": entries,
                "total": len(names), "offset": params.offset, "limit": params.limit,
                "roots": [{"index": r.index, "path": r.configured} for r in sandbox.roots]}


def entry(dir_fd: int, name: str) -> dict[str, Any] | None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None  # removed since the directory was read
    return {"name": name, "type": entry_type(info.st_mode), "size": info.st_size,
            "mode": f"{stat.S_IMODE(info.st_mode):04o}", "owner": user_name(info.st_uid),
            "group": group_name(info.st_gid), "mtime": iso(info.st_mtime)}


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


# -- reading ---------------------------------------------------------------------------------

@refuses_os_errors
def read_file(sandbox: Sandbox, params: FileReadParams) -> dict[str, Any]:
    cap = sandbox.settings.file_max_read_bytes
    if params.length is not None and params.length > cap:
        raise PathRefused(Reason.TOO_LARGE, f"a read returns at most {cap} bytes "
                          f"(file_max_read_bytes), not {params.length}: read in pieces")
    with sandbox.resolve(params.root, params.path) as res, opened(res) as fd:
        info = os.fstat(fd)
        refuse_hard_link(info, res.path)
        size = info.st_size
        mime = mime_checked(sandbox, os.pread(fd, HEAD_BYTES, 0), res.path)
        data = read_at(fd, params.length or cap, params.offset)
        encoding, content = encode(data, params.encoding)
        return {"path": res.path, "size": size, "sha256": hash_fd(fd),
                "offset": params.offset, "length": len(data), "encoding": encoding,
                "content": content, "mime": mime, "eof": params.offset + len(data) >= size}


@contextlib.contextmanager
def opened(res: Resolved) -> Iterator[int]:
    fd = open_object(res, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def mime_checked(sandbox: Sandbox, head: bytes, shown: str) -> str:
    mime = sniff(head)
    settings = sandbox.settings
    check(mime, settings.file_mime_allow, settings.file_mime_deny, what=shown or "the content")
    return mime


def encode(data: bytes, wanted: str) -> tuple[str, str]:
    if wanted != "base64":
        try:
            return "utf-8", data.decode("utf-8")
        except UnicodeDecodeError:
            if wanted == "utf-8":
                raise PathRefused(Reason.NOT_TEXT, "the bytes read are not valid UTF-8: "
                                  "ask for base64") from None
    return "base64", base64.b64encode(data).decode("ascii")


# -- writing ---------------------------------------------------------------------------------

@refuses_os_errors
def write_file(sandbox: Sandbox, params: FileWriteParams) -> dict[str, Any]:
    data = params.data()
    cap = sandbox.settings.file_max_write_bytes
    if len(data) > cap:
        raise PathRefused(Reason.TOO_LARGE, f"{len(data)} bytes is more than a write may "
                          f"put in a file ({cap} bytes, file_max_write_bytes)")
    with sandbox.resolve(params.root, params.path, must_exist=False) as res:
        if res.name is None:
            raise PathRefused(Reason.IS_A_DIRECTORY, "the root is a directory")
        refuse_new_directory(res)
        mime_checked(sandbox, data, res.path)
        with locked(res.root_fd):
            before = existing(res, params.expected_sha256)
            temp, fd = create_temp(res.parent_fd)
            try:
                try:
                    write_all(fd, data)
                except BaseException:
                    os.unlink(temp, dir_fd=res.parent_fd)
                    raise
                commit(res, temp, fd, before, params.mode)
            finally:
                os.close(fd)
        return {"path": res.path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "created": before is None, "before": before and before.summary()}


# -- moving ----------------------------------------------------------------------------------

@refuses_os_errors
def move_path(sandbox: Sandbox, params: FileMoveParams) -> dict[str, Any]:
    dest_ref = params.destination_root
    if dest_ref is None and not params.destination.startswith("/"):
        dest_ref = params.root
    with sandbox.resolve(params.root, params.path, follow=False) as src, \
            sandbox.resolve(dest_ref, params.destination, follow=False,
                            must_exist=False) as dst:
        if src.name is None:
            raise PathRefused(Reason.IS_ROOT, "a sandbox root cannot be moved")
        if dst.name is None:
            raise PathRefused(Reason.EXISTS, "the destination is a sandbox root")
        if src.root.real == dst.root.real and dst.rel[:len(src.rel)] == src.rel:
            raise PathRefused(Reason.INVALID_MOVE, f"{dst.path} is {src.path} or inside it")
        assert src.info is not None
        if not stat.S_ISDIR(src.info.st_mode):
            refuse_new_directory(dst)  # a file cannot become 'new/'
        with both_locked(src, dst):
            check_tree(sandbox, src)
            current(src)
            before, replaced = filetrash.put_in_place(sandbox, src.parent_fd, src.name, dst,
                                                      overwrite=params.overwrite)
        return {"path": src.path, "destination": dst.path, "before": before,
                "replaced": replaced, "trash_id": replaced and replaced["trash_id"]}


@contextlib.contextmanager
def both_locked(a: Resolved, b: Resolved) -> Iterator[None]:
    first, second = sorted((a, b), key=lambda r: r.root.index)
    with locked(first.root_fd):
        if second.root.index == first.root.index:
            yield
        else:
            with locked(second.root_fd):
                yield


list_dir = file_handler(FileListParams, listing)
read = file_handler(FileReadParams, read_file)
write = file_handler(FileWriteParams, write_file)
upload_chunk = file_handler(FileUploadChunkParams, fileupload.receive)
move = file_handler(FileMoveParams, move_path)
delete = file_handler(FileDeleteParams, filetrash.delete)
restore = file_handler(FileRestoreParams, filetrash.restore)
