"""FILE_UPLOAD_CHUNK: resumable uploads, assembled atomically.

The bytes of an upload are kept in the root's hidden staging directory
(``<root>/.fleetdeck-uploads/<upload_id>.part``, with ``<upload_id>.json`` naming the target),
which no path reaches through the file manager. A chunk's ``offset`` must be the number of
bytes received so far; a chunk repeated with the same bytes is accepted, any other offset is
refused (bad-offset) with the expected offset in the message, so a client can resume. The
final chunk checks the size and the SHA-256 of the whole (a mismatch discards the upload),
the MIME policy and the replaced file's hash (``expected_sha256``), then moves the bytes into
place as FILE_WRITE does: temporary file in the target's directory, fsync, mode and owner of
the replaced file kept, rename. Uploads untouched for a day are removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from typing import Any

from agent.ops.fileio import (
    Existing,
    commit,
    create_temp,
    existing,
    hash_fd,
    read_at,
    temp_name,
    write_all,
)
from agent.ops.filemime import HEAD_BYTES, check, sniff
from agent.ops.filepaths import PathRefused, Reason
from agent.ops.filesandbox import (
    OPEN_SAFE,
    UPLOADS_DIR,
    Resolved,
    Sandbox,
    locked,
    staging_dir,
)
from schemas.files import FileUploadChunkParams

#: uploads untouched for this long are removed
STALE_S = 24 * 3600.0
BLOCK = 1024 * 1024


def receive(sandbox: Sandbox, params: FileUploadChunkParams) -> dict[str, Any]:
    """Take one chunk; the final one places the file."""
    cap = sandbox.settings.file_max_upload_bytes
    if params.total_size is not None and params.total_size > cap:
        raise PathRefused(Reason.TOO_LARGE, f"the file is {params.total_size} bytes, more "
                          f"than an upload may be ({cap} bytes, file_max_upload_bytes)")
    with sandbox.resolve(params.root, params.path, must_exist=False) as res:
        if res.name is None:
            raise PathRefused(Reason.IS_A_DIRECTORY, "the root is a directory")
        with locked(res.root_fd):
            staging = staging_dir(res.root_fd, UPLOADS_DIR)
            try:
                prune(staging, keep=params.upload_id)
                return Upload(sandbox, res, staging, params).run()
            finally:
                os.close(staging)


class Upload:
    """One chunk of one upload, with the staging directory held."""

    def __init__(self, sandbox: Sandbox, res: Resolved, staging: int,
                 params: FileUploadChunkParams) -> None:
        self.sandbox = sandbox
        self.res = res
        self.staging = staging
        self.params = params
        self.part = f"{params.upload_id}.part"
        self.meta = f"{params.upload_id}.json"

    def result(self, received: int, *, sha256: str | None = None,
               before: Existing | None = None) -> dict[str, Any]:
        return {"upload_id": self.params.upload_id, "path": self.res.path,
                "received": received, "complete": sha256 is not None, "sha256": sha256,
                "before": before and before.summary()}

    def run(self) -> dict[str, Any]:
        meta = self.load_meta()
        if meta.get("complete"):
            return self.repeated_final(meta)
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT | OPEN_SAFE, 0o600, dir_fd=self.staging)
        try:
            received = self.append(fd)
            if not self.params.final:
                return self.result(received)
            return self.finish(fd, received)
        finally:
            os.close(fd)

    def load_meta(self) -> dict[str, Any]:
        try:
            fd = os.open(self.meta, os.O_RDONLY | OPEN_SAFE, dir_fd=self.staging)
        except FileNotFoundError:
            meta = {"path": self.res.path, "root": self.res.root.real}
            self.save_meta(meta)
            return meta
        with os.fdopen(fd, "rb") as f:
            meta = json.loads(f.read(65536) or b"{}")
        if (meta.get("path"), meta.get("root")) != (self.res.path, self.res.root.real):
            raise PathRefused(Reason.UPLOAD_MISMATCH, f"upload {self.params.upload_id} is for "
                              f"{meta.get('path')!r}, not {self.res.path!r}: use a new "
                              "upload_id")
        return dict(meta)

    def save_meta(self, meta: dict[str, Any]) -> None:
        temp, fd = create_temp(self.staging)
        try:
            write_all(fd, json.dumps(meta).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, self.meta, src_dir_fd=self.staging, dst_dir_fd=self.staging)

    def append(self, fd: int) -> int:
        """Write the chunk at its offset; the number of bytes received."""
        chunk = self.params.chunk()
        offset = self.params.offset
        received = os.fstat(fd).st_size
        if offset == received and chunk:
            cap = self.sandbox.settings.file_max_upload_bytes
            if received + len(chunk) > cap:
                raise PathRefused(Reason.TOO_LARGE, f"the upload would grow past {cap} bytes "
                                  "(file_max_upload_bytes)")
            os.pwrite(fd, chunk, offset)
            os.fsync(fd)
            return received + len(chunk)
        if offset == received or (offset + len(chunk) <= received
                                  and read_at(fd, len(chunk), offset) == chunk):
            return received  # an empty chunk, or one received already
        raise PathRefused(Reason.BAD_OFFSET, f"upload {self.params.upload_id}: a chunk at "
                          f"offset {offset} does not follow what was received; expected "
                          f"offset {received} ({received} bytes received so far)")

    def finish(self, fd: int, size: int) -> dict[str, Any]:
        params = self.params
        if params.total_size is not None and params.total_size != size:
            raise PathRefused(Reason.BAD_OFFSET, f"upload {params.upload_id} has {size} "
                              f"bytes, not total_size {params.total_size}: expected offset "
                              f"{size}")
        sha = hash_fd(fd)
        if sha != params.sha256:
            self.discard()
            raise PathRefused(Reason.CHECKSUM, f"the {size} uploaded bytes have sha256 {sha}, "
                              f"not {params.sha256}: the upload is discarded, start it again")
        settings = self.sandbox.settings
        check(sniff(os.pread(fd, HEAD_BYTES, 0)), settings.file_mime_allow,
              settings.file_mime_deny, what=self.res.path)
        before = existing(self.res, params.expected_sha256)
        temp, placed = self.into_place(fd)
        try:
            commit(self.res, temp, placed, before, params.mode)
        finally:
            if placed != fd:
                os.close(placed)
        self.save_meta({"path": self.res.path, "root": self.res.root.real, "complete": True,
                        "sha256": sha, "size": size})
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.part, dir_fd=self.staging)
        return self.result(size, sha256=sha, before=before)

    def into_place(self, fd: int) -> tuple[str, int]:
        """The assembled bytes as a temporary file in the target's directory: the part file
        renamed there, or copied where the directory is on another file system."""
        temp = temp_name()
        try:
            os.rename(self.part, temp, src_dir_fd=self.staging, dst_dir_fd=self.res.parent_fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        else:
            return temp, fd
        temp, copy = create_temp(self.res.parent_fd)
        try:
            offset = 0
            while block := os.pread(fd, BLOCK, offset):
                write_all(copy, block)
                offset += len(block)
        except BaseException:
            os.close(copy)
            os.unlink(temp, dir_fd=self.res.parent_fd)
            raise
        return temp, copy

    def repeated_final(self, meta: dict[str, Any]) -> dict[str, Any]:
        """A chunk of an upload that completed: the final one again gets the same answer."""
        if self.params.final and self.params.sha256 == meta.get("sha256"):
            return self.result(int(meta.get("size", 0)), sha256=str(meta["sha256"]))
        raise PathRefused(Reason.UPLOAD_MISMATCH, f"upload {self.params.upload_id} is "
                          "complete already: use a new upload_id")

    def discard(self) -> None:
        for name in (self.part, self.meta):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self.staging)


def prune(staging: int, *, keep: str) -> None:
    """Remove uploads untouched for STALE_S (but ``keep``'s)."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=staging)
    try:
        names = os.listdir(fd)
    finally:
        os.close(fd)
    cutoff = time.time() - STALE_S
    for name in names:
        if name.split(".", 1)[0] == keep:
            continue
        with contextlib.suppress(OSError):
            info = os.stat(name, dir_fd=staging, follow_symlinks=False)
            if info.st_mtime < cutoff:
                os.unlink(name, dir_fd=staging)
