"""FILE_UPLOAD_CHUNK: resumable uploads, assembled atomically.

The bytes of an upload are kept in the root's hidden staging directory
(``<root>/.fleetdeck-uploads/<upload_id>.part``, with ``<upload_id>.json`` naming the target),
which no path reaches through the file manager. A chunk's ``offset`` must be the number of
bytes received so far; a chunk repeated with the same bytes is accepted, any other offset is
refused (bad-offset) with the expected offset in the message, so a client can resume. The
final chunk checks the size and the SHA-256 of the whole (a mismatch discards the upload),
the MIME policy and the replaced file's hash (``expected_sha256``), then moves the bytes into
place as FILE_WRITE does: temporary file in the target's directory, fsync, mode and owner of
the replaced file kept, rename.

A first chunk that is refused leaves nothing behind (no staging files, no staging directory
it made). Uploads untouched for :data:`UPLOAD_EXPIRY_S` are removed whenever any upload of
the same root is touched; a mark (``<upload_id>.expired``, itself removed after as long
again) makes a later chunk of an expired upload a clear refusal (upload-expired) instead of
the start of a new one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from typing import Any

from agent.ops.fileio import (
    Existing,
    commit,
    create_temp,
    existing,
    hash_fd,
    present,
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
    refuse_new_directory,
    refuses_os_errors,
    staging_dir,
)
from schemas.files import FileUploadChunkParams

#: uploads untouched for this long are removed (and a chunk of one is refused)
UPLOAD_EXPIRY_S = 24 * 3600.0
BLOCK = 1024 * 1024
#: the staging files of an upload: its bytes, its metadata, the mark of its expiry
PART, META, EXPIRED = "part", "json", "expired"

log = logging.getLogger(__name__)


@refuses_os_errors
def receive(sandbox: Sandbox, params: FileUploadChunkParams) -> dict[str, Any]:
    """Take one chunk; the final one places the file."""
    cap = sandbox.settings.file_max_upload_bytes
    if params.total_size is not None and params.total_size > cap:
        raise PathRefused(Reason.TOO_LARGE, f"the file is {params.total_size} bytes, more "
                          f"than an upload may be ({cap} bytes, file_max_upload_bytes)")
    with sandbox.resolve(params.root, params.path, must_exist=False) as res:
        if res.name is None:
            raise PathRefused(Reason.IS_A_DIRECTORY, "the root is a directory")
        refuse_new_directory(res)
        with locked(res.root_fd):
            made = not present(res.root_fd, UPLOADS_DIR)
            staging = staging_dir(res.root_fd, UPLOADS_DIR)
            try:
                prune(staging)
                return Upload(sandbox, res, staging, params).run()
            except BaseException:
                if made:
                    _drop_empty_staging(res.root_fd)
                raise
            finally:
                os.close(staging)


def _drop_empty_staging(root_fd: int) -> None:
    """Remove the staging directory a refused first chunk made (it is empty by then)."""
    try:
        os.rmdir(UPLOADS_DIR, dir_fd=root_fd)
    except OSError as exc:  # the refusal being raised matters more than this
        log.warning("the staging directory %s made for a refused upload stays: %s",
                    UPLOADS_DIR, exc.strerror)


class Upload:
    """One chunk of one upload, with the staging directory held."""

    def __init__(self, sandbox: Sandbox, res: Resolved, staging: int,
                 params: FileUploadChunkParams) -> None:
        self.sandbox = sandbox
        self.res = res
        self.staging = staging
        self.params = params
        self.part = f"{params.upload_id}.{PART}"
        self.meta = f"{params.upload_id}.{META}"

    def result(self, received: int, *, sha256: str | None = None,
               before: Existing | None = None) -> dict[str, Any]:
        return {"upload_id": self.params.upload_id, "path": self.res.path,
                "received": received, "complete": sha256 is not None, "sha256": sha256,
                "before": before and before.summary()}

    def run(self) -> dict[str, Any]:
        """Take the chunk; a refused first chunk of an upload leaves nothing behind."""
        if present(self.staging, f"{self.params.upload_id}.{EXPIRED}"):
            raise PathRefused(Reason.UPLOAD_EXPIRED, f"upload {self.params.upload_id} "
                              f"expired: it was untouched for more than "
                              f"{UPLOAD_EXPIRY_S / 3600:g} h and what it had was removed; "
                              "start again with a new upload_id")
        fresh = not present(self.staging, self.meta)
        try:
            return self.take()
        except BaseException:
            if fresh:
                self.discard()
            raise

    def take(self) -> dict[str, Any]:
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
        """The assembled bytes as a temporary file in the target's directory: a second name
        of the part file there, or a copy where the directory is on another file system.
        The part file stays until the file is in place, so a final step that is refused
        (the target changed meanwhile...) loses nothing: the final chunk can be sent again."""
        temp = temp_name()
        try:
            os.link(self.part, temp, src_dir_fd=self.staging, dst_dir_fd=self.res.parent_fd,
                    follow_symlinks=False)
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


def prune(staging: int) -> None:
    """Remove the uploads untouched for UPLOAD_EXPIRY_S (the one being touched too: its chunk
    is then refused), leaving a mark of each; marks and stray files that old go too."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=staging)
    try:
        names = os.listdir(fd)
    finally:
        os.close(fd)
    cutoff = time.time() - UPLOAD_EXPIRY_S
    touched: dict[str, float] = {}
    for name in names:
        upload_id, _, kind = name.rpartition(".")
        try:
            mtime = os.stat(name, dir_fd=staging, follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        if upload_id and kind in (PART, META):
            touched[upload_id] = max(touched.get(upload_id, mtime), mtime)
        elif mtime < cutoff:  # an old mark, or a temporary file left by a crash
            _unlink(staging, name)
    for upload_id, last in touched.items():
        if last < cutoff:
            os.close(os.open(f"{upload_id}.{EXPIRED}", os.O_WRONLY | os.O_CREAT | OPEN_SAFE,
                             0o600, dir_fd=staging))
            for kind in (PART, META):
                _unlink(staging, f"{upload_id}.{kind}")
            log.info("upload %s expired and was removed", upload_id)


def _unlink(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # gone already: what was wanted
        os.unlink(name, dir_fd=dir_fd)
