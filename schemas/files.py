"""File manager commands: FILE_LIST, FILE_READ, FILE_WRITE, FILE_UPLOAD_CHUNK, FILE_MOVE,
FILE_DELETE and FILE_RESTORE.

A path is text of at most :data:`MAX_PATH` characters. Either it is absolute and lies under
one of the agent's sandbox roots, or it is relative to the root named by ``root`` (the root's
index in the agent's ``file_roots`` as a number, or its path as configured, absolute text); a
relative path needs no ``root`` when the agent has a single root. The models are strict: a
value must have its JSON type (``"5"`` is no offset, ``true`` no root, ``"yes"`` no flag); a
``mode`` alone may be octal text, as listings show modes. The models bound sizes only:
whether a path is acceptable (no ``..``, no percent-encoding, no look-alike characters, no
symlink escape, not on the denylist...) is decided by the agent, which reports the reason in
the command's message, so a hostile path leaves a failed command in the record instead of
vanishing at the API.

Content travels as UTF-8 text or base64; one command carries at most :data:`MAX_CHUNK_BYTES`
of it (a signed command is at most 256 KiB), bigger files go up as FILE_UPLOAD_CHUNKs.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

#: longest path text (Linux PATH_MAX)
MAX_PATH = 4096
#: most content bytes one FILE_WRITE or FILE_UPLOAD_CHUNK carries
MAX_CHUNK_BYTES = 128 * 1024
#: base64 text of MAX_CHUNK_BYTES
MAX_CHUNK_BASE64 = 4 * ((MAX_CHUNK_BYTES + 2) // 3)
#: most entries one FILE_LIST returns
MAX_LIST_LIMIT = 1000
#: the largest file an upload may build (the agent's own cap is usually lower)
MAX_UPLOAD_SIZE = 1 << 40


def _lower(value: str) -> str:
    return value.lower()


PathText = Annotated[str, Field(max_length=MAX_PATH, description="Absolute path under a "
                                "sandbox root, or a path relative to the root named by `root`")]
def _root(value: object) -> object:
    """A root's index as a JSON number or its configured path as absolute text; a boolean,
    a number as text ("0") or anything else is refused with the reason."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("root is a root's index (a number) or its path as configured "
                         "(absolute text)")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"root {value} is not an index (0 or more)")
    if isinstance(value, str) and not value.startswith("/"):
        raise ValueError(f"root {value[:40]!r} is not an absolute path: a root's index is a "
                         "number, not text")
    return value


RootRef = Annotated[
    int | Annotated[str, Field(max_length=MAX_PATH)] | None, BeforeValidator(_root),
    Field(description="Which sandbox root: its index in the agent's file_roots (a number) or "
          "its path as configured (absolute text); None: the root the absolute path lies "
          "under, or the only root")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256, hex"),
                   AfterValidator(_lower)]
TrashId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="Trash entry id")]
UploadId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,64}$",
                                description="Client-chosen id shared by an upload's chunks")]
#: permission bits a new file may get: no setuid, setgid or sticky bit
MAX_MODE = 0o777
_OCTAL_MODE = re.compile(r"(?:0o?)?([0-7]{1,4})")


def _mode(value: object) -> object:
    """A mode as a JSON number (the numeric mode: 420 is 0o644) or as octal text as
    listings show it ("0644", "644", "0o644"); anything else is refused with the reason."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("mode is a number or octal text such as \"0644\"")
    if isinstance(value, str):
        match = _OCTAL_MODE.fullmatch(value)
        if match is None:
            raise ValueError(f"mode {value[:20]!r} is not 1 to 4 octal digits (such as "
                             "\"0644\")")
        value = int(match.group(1), 8)
    if not 0 <= value <= 0o7777:
        raise ValueError(f"mode {value} is not a permission mode (0 to 0o7777)")
    if value > MAX_MODE:
        raise ValueError(f"mode {value:#o} sets the setuid, setgid or sticky bit, which a new "
                         "file never gets (at most 0o777; a JSON number is the numeric mode, "
                         "so send octal as text: \"0644\")")
    return value


NewMode = Annotated[int | None, BeforeValidator(_mode), Field(
    None, description="Permission bits of a file that does not exist yet "
    "(default 0644): octal text (\"0644\", \"644\", \"0o644\") or a number (the numeric "
    "mode, 420 = 0644); an existing file keeps its mode and owner"),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_MODE},
                              {"type": "string", "pattern": r"^(0o?)?[0-7]{1,4}$"},
                              {"type": "null"}]})]


class _FileParams(BaseModel):
    """Strict: every value has its JSON type (a number is not text, true is not 1 nor
    "yes"), whether the params come as JSON text or as a dict parsed from it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    root: RootRef = None


def _decoded(text: str, encoding: str) -> bytes:
    """The bytes ``text`` stands for; ValueError names the problem."""
    if encoding == "utf-8":
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("content is not valid UTF-8 text") from exc
    else:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("content is not valid base64") from exc
    if len(data) > MAX_CHUNK_BYTES:
        raise ValueError(f"content is larger than {MAX_CHUNK_BYTES} bytes: "
                         "send it as FILE_UPLOAD_CHUNKs")
    return data


class FileListParams(_FileParams):
    """The entries of a directory (symlinks shown as links), a page at a time; or, with
    ``trash``, what the root's trash holds."""

    type: Literal["FILE_LIST"] = "FILE_LIST"
    path: PathText = Field("", description="The directory ('' or '.': the root itself)")
    offset: int = Field(0, ge=0, le=10_000_000, description="Entries to skip (sorted by name)")
    limit: int = Field(100, ge=1, le=MAX_LIST_LIMIT, description="Most entries returned")
    trash: bool = Field(False, description="List the root's trash instead of a directory")


class FileReadParams(_FileParams):
    """Up to ``length`` bytes of a regular file from ``offset`` (capped by the agent)."""

    type: Literal["FILE_READ"] = "FILE_READ"
    path: PathText = Field(min_length=1)
    offset: int = Field(0, ge=0, le=MAX_UPLOAD_SIZE)
    length: int | None = Field(None, ge=1, le=64 * 1024 * 1024,
                               description="Most bytes returned (None: the agent's cap)")
    encoding: Literal["auto", "utf-8", "base64"] = Field(
        "auto", description="auto: UTF-8 text when the bytes are valid UTF-8, else base64")


class FileWriteParams(_FileParams):
    """Replace (or create) a file atomically, keeping an existing file's mode and owner."""

    type: Literal["FILE_WRITE"] = "FILE_WRITE"
    path: PathText = Field(min_length=1)
    content: str = Field(max_length=MAX_CHUNK_BASE64)
    encoding: Literal["utf-8", "base64"] = "utf-8"
    expected_sha256: Sha256 | None = Field(None, description="Refuse unless the file exists "
                                           "and its current content has this hash")
    mode: NewMode = None

    @model_validator(mode="after")
    def _content_decodes(self) -> FileWriteParams:
        _decoded(self.content, self.encoding)
        return self

    def data(self) -> bytes:
        return _decoded(self.content, self.encoding)


class FileUploadChunkParams(_FileParams):
    """One chunk of a resumable upload: ``offset`` must be the number of bytes received so
    far (a repeated chunk that matches what was received is accepted); the ``final`` chunk
    carries the whole file's ``sha256`` and places the file atomically, as FILE_WRITE does."""

    type: Literal["FILE_UPLOAD_CHUNK"] = "FILE_UPLOAD_CHUNK"
    path: PathText = Field(min_length=1)
    upload_id: UploadId
    offset: int = Field(ge=0, le=MAX_UPLOAD_SIZE)
    data: str = Field("", max_length=MAX_CHUNK_BASE64, description="The chunk, base64")
    final: bool = False
    sha256: Sha256 | None = Field(None, description="Of the whole file (final chunk only)")
    total_size: int | None = Field(None, ge=0, le=MAX_UPLOAD_SIZE,
                                   description="Of the whole file (final chunk, optional)")
    expected_sha256: Sha256 | None = Field(None, description="Final chunk: refuse unless the "
                                           "file being replaced has this hash")
    mode: NewMode = None

    @model_validator(mode="after")
    def _consistent(self) -> FileUploadChunkParams:
        _decoded(self.data, "base64")
        if self.final and self.sha256 is None:
            raise ValueError("the final chunk needs the sha256 of the whole file")
        if not self.final and (self.sha256 or self.total_size is not None
                               or self.expected_sha256):
            raise ValueError("sha256, total_size and expected_sha256 belong to the final chunk")
        return self

    def chunk(self) -> bytes:
        return _decoded(self.data, "base64")


class FileMoveParams(_FileParams):
    """Move or rename a file, link or directory; never replaces anything unless ``overwrite``."""

    type: Literal["FILE_MOVE"] = "FILE_MOVE"
    path: PathText = Field(min_length=1, description="What to move")
    destination: PathText = Field(min_length=1, description="Its new path")
    destination_root: RootRef = None
    overwrite: bool = Field(False, description="Replace a file (or empty directory) there")


class FileDeleteParams(_FileParams):
    """Move a file, link or directory to the root's trash (restorable), or delete it for good
    with ``permanent``."""

    type: Literal["FILE_DELETE"] = "FILE_DELETE"
    path: PathText = Field(min_length=1)
    permanent: bool = Field(False, description="Delete for good instead of to the trash")
    recursive: bool = Field(False, description="With permanent: delete a non-empty directory")


class FileRestoreParams(_FileParams):
    """Put a trashed item back where it was (or at ``path``); never replaces anything unless
    ``overwrite``."""

    type: Literal["FILE_RESTORE"] = "FILE_RESTORE"
    trash_id: TrashId
    path: PathText | None = Field(None, description="Where to restore (None: where it was)")
    overwrite: bool = False


FILE_PARAMS = (FileListParams, FileReadParams, FileWriteParams, FileUploadChunkParams,
               FileMoveParams, FileDeleteParams, FileRestoreParams)

__all__ = ["FILE_PARAMS", "MAX_CHUNK_BYTES", "MAX_PATH", "FileDeleteParams", "FileListParams",
           "FileMoveParams", "FileReadParams", "FileRestoreParams", "FileUploadChunkParams",
           "FileWriteParams"]
