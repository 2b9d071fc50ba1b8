"""FILE_DELETE, FILE_RESTORE and the trash listing.

A deletion moves the object into its root's trash (``<root>/.fleetdeck-trash/<trash_id>``,
unreachable through the file manager) and records it in ``index.json`` there (trash id,
original path, when, type and size); FILE_RESTORE renames it back, never over anything unless
asked. ``permanent`` deletes for good instead: a file or link, an empty directory, or with
``recursive`` a whole tree (removed through descriptors, never following a link). A directory
is checked as a whole first (nothing denied, no other root, no mount point inside).

Whatever goes is described in the result's ``before`` (what the audit record keeps):
:func:`~agent.ops.fileio.describe`. A move or restore with ``overwrite`` puts the object it
replaces in the trash first (:func:`put_in_place`), so nothing is destroyed without trace.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from agent.ops.fileio import (
    TreeFacts,
    check_tree,
    create_temp,
    current,
    describe,
    rename,
    rename_error,
    replaceable,
    write_all,
)
from agent.ops.filepaths import PathRefused, Reason, parse
from agent.ops.filesandbox import (
    OPEN_SAFE,
    TRASH_DIR,
    Resolved,
    Sandbox,
    entry_type,
    locked,
    refuse_new_directory,
    refuses_os_errors,
    staging_dir,
)
from schemas.files import FileDeleteParams, FileListParams, FileRestoreParams

INDEX = "index.json"
MAX_INDEX_BYTES = 64 * 1024 * 1024

log = logging.getLogger(__name__)


@refuses_os_errors
def delete(sandbox: Sandbox, params: FileDeleteParams) -> dict[str, Any]:
    with sandbox.resolve(params.root, params.path, follow=False) as res:
        if res.name is None or res.info is None:
            raise PathRefused(Reason.IS_ROOT, "a sandbox root cannot be deleted")
        with locked(res.root_fd):
            trash_id = None
            if params.permanent:
                before = remove(sandbox, res, recursive=params.recursive)
            else:
                trash_id, before = to_trash(sandbox, res)
        return {"path": res.path, "permanent": params.permanent, "trash_id": trash_id,
                "before": before}


def remove(sandbox: Sandbox, res: Resolved, *, recursive: bool) -> dict[str, Any]:
    """Delete for good; the description of what was deleted."""
    assert res.name is not None and res.info is not None
    is_dir = stat.S_ISDIR(res.info.st_mode)
    # without recursive only an empty directory can go: rmdir refuses any other
    facts = check_tree(sandbox, res) if recursive or not is_dir else TreeFacts(0, 0)
    before = describe(res, facts)
    current(res)
    try:
        if not is_dir:
            os.unlink(res.name, dir_fd=res.parent_fd)
        elif recursive:
            shutil.rmtree(res.name, dir_fd=res.parent_fd)
        else:
            os.rmdir(res.name, dir_fd=res.parent_fd)
    except OSError as exc:
        problem = rename_error(exc, res.path)
        if isinstance(problem, PathRefused) and problem.reason == Reason.NOT_EMPTY:
            raise PathRefused(Reason.NOT_EMPTY, f"{res.path} is a directory that is not "
                              "empty: delete it with recursive (or to the trash)") from None
        raise problem from None
    return before


def to_trash(sandbox: Sandbox, res: Resolved) -> tuple[str, dict[str, Any]]:
    """Move into the root's trash; its trash id and the description of what went."""
    assert res.name is not None and res.info is not None
    facts = check_tree(sandbox, res)
    before = describe(res, facts)
    current(res)
    trash = staging_dir(res.root_fd, TRASH_DIR)
    try:
        trash_id = uuid.uuid4().hex
        rename(res.parent_fd, res.name, trash, trash_id, replace=False, shown=res.path)
        item = {"trash_id": trash_id, "original_path": res.path,
                "deleted_at": datetime.now(UTC).isoformat(),
                "type": entry_type(res.info.st_mode), "size": facts.bytes}
        try:
            save_index(trash, [*load_index(trash), item])
        except BaseException:
            os.rename(trash_id, res.name, src_dir_fd=trash, dst_dir_fd=res.parent_fd)
            raise
        return trash_id, before
    finally:
        os.close(trash)


def untrash(res: Resolved, trash_id: str) -> None:
    """Undo :func:`to_trash` of ``res`` (never over anything that took its place)."""
    assert res.name is not None
    with trash_of(res) as trash:
        rename(trash, trash_id, res.parent_fd, res.name, replace=False, shown=res.path)
        save_index(trash, [i for i in load_index(trash) if i["trash_id"] != trash_id])


def put_in_place(sandbox: Sandbox, src_dir: int, src_name: str, dst: Resolved, *,
                 overwrite: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Rename ``src_name`` (in ``src_dir``) to ``dst``. Only with ``overwrite`` may an object
    be there: it goes to its root's trash first (put back if the rename then fails), so it
    can be restored. Returns ``before`` (the destination as it was) and ``replaced`` (what
    went to the trash: path, type, size, sha256 of a file, trash id; None if nothing)."""
    assert dst.name is not None
    before: dict[str, Any] = {"destination": dst.path, "exists": dst.exists}
    if not (overwrite and dst.exists):
        rename(src_dir, src_name, dst.parent_fd, dst.name, replace=False, shown=dst.path)
        return before, None
    replaceable(os.stat(src_name, dir_fd=src_dir, follow_symlinks=False), dst)
    trash_id, described = to_trash(sandbox, dst)
    try:
        rename(src_dir, src_name, dst.parent_fd, dst.name, replace=False, shown=dst.path)
    except BaseException:
        try:
            untrash(dst, trash_id)
        except (PathRefused, OSError) as exc:
            log.warning("%s stays in the trash as %s: it could not be put back (%s)",
                        dst.path, trash_id, exc)
        raise
    before.update(described)
    replaced = {"path": dst.path, "type": described["type"],
                "size": described.get("size", described.get("bytes")), "trash_id": trash_id}
    if described["type"] == "file":
        replaced["sha256"] = described["sha256"]
    return before, replaced


@refuses_os_errors
def restore(sandbox: Sandbox, params: FileRestoreParams) -> dict[str, Any]:
    ref = params.root
    if ref is None and params.path is not None and parse(params.path).absolute:
        ref = sandbox.locate(None, parse(params.path))[0].index
    with sandbox.resolve(ref, "") as top, locked(top.root_fd), trash_of(top) as trash:
        items = load_index(trash)
        item = next((i for i in items if i["trash_id"] == params.trash_id), None)
        if item is None:
            raise PathRefused(Reason.NOT_FOUND, f"no item {params.trash_id} in the trash of "
                              f"{top.root.configured}")
        target = params.path if params.path is not None else str(item["original_path"])
        dest_ref = None if target.startswith("/") else top.root.index
        with sandbox.resolve(dest_ref, target, follow=False, must_exist=False) as dst:
            if dst.name is None:
                raise PathRefused(Reason.EXISTS, "the destination is a sandbox root")
            if dst.root.index != top.root.index:
                raise PathRefused(Reason.OUTSIDE_ROOT, f"{target} is not under "
                                  f"{top.root.configured}: an item is restored within the "
                                  "root whose trash holds it")
            if item.get("type") != "dir":
                refuse_new_directory(dst)  # a file cannot become 'name/'
            before, replaced = put_in_place(sandbox, trash, params.trash_id, dst,
                                            overwrite=params.overwrite)
            left = load_index(trash)  # the replaced object may have joined it
            save_index(trash, [i for i in left if i["trash_id"] != params.trash_id])
            return {"path": dst.path, "trash_id": params.trash_id, "before": before,
                    "replaced": replaced}


@contextlib.contextmanager
def trash_of(top: Resolved) -> Iterator[int]:
    trash = staging_dir(top.root_fd, TRASH_DIR)
    try:
        yield trash
    finally:
        os.close(trash)


@refuses_os_errors
def listing(sandbox: Sandbox, params: FileListParams) -> dict[str, Any]:
    with sandbox.resolve(params.root, "") as top, trash_of(top) as trash:
        items = sorted(load_index(trash), key=lambda i: str(i["deleted_at"]), reverse=True)
    page = items[params.offset:params.offset + params.limit]
    return {"root": top.root.configured, "path": "", "entries": page, "total": len(items),
            "offset": params.offset, "limit": params.limit}


def load_index(trash: int) -> list[dict[str, Any]]:
    try:
        fd = os.open(INDEX, os.O_RDONLY | OPEN_SAFE, dir_fd=trash)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_INDEX_BYTES)
    try:
        items = json.loads(raw or b"[]")
    except ValueError:
        raise PathRefused(Reason.CHANGED, "the trash index is not valid JSON") from None
    return [dict(i) for i in items if isinstance(i, dict) and "trash_id" in i]


def save_index(trash: int, items: list[dict[str, Any]]) -> None:
    temp, fd = create_temp(trash)
    try:
        write_all(fd, json.dumps(items, indent=1).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, INDEX, src_dir_fd=trash, dst_dir_fd=trash)

