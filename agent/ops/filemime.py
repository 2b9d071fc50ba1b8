"""The MIME type of some bytes, from their content (never the file name), and the policy check.

libmagic is not a dependency of the agent, so :func:`sniff` knows a small table of signatures:
native executables in detail (ELF executables, PIE executables, shared libraries and objects,
Mach-O, PE/DOS), common archives, images and documents, shebang scripts, and UTF-8 / UTF-16
text; anything else is ``application/octet-stream``. The names follow libmagic's where it has
one, so a policy written for ``file --mime-type`` reads the same.
"""

from __future__ import annotations

import fnmatch
import struct

from agent.ops.filepaths import PathRefused, Reason

#: how many leading bytes sniff() looks at
HEAD_BYTES = 8192

_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"\x28\xb5\x2f\xfd", "application/zstd"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"SQLite format 3\x00", "application/vnd.sqlite3"),
    (b"\x00asm", "application/wasm"),
    (b"\xfe\xed\xfa\xce", "application/x-mach-binary"),
    (b"\xfe\xed\xfa\xcf", "application/x-mach-binary"),
    (b"\xce\xfa\xed\xfe", "application/x-mach-binary"),
    (b"\xcf\xfa\xed\xfe", "application/x-mach-binary"),
)
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\b\x1b\x07\x0b")
_ELF_TYPES = {1: "application/x-object", 2: "application/x-executable",
              3: "application/x-sharedlib", 4: "application/x-coredump"}
_PT_INTERP = 3


def sniff(data: bytes) -> str:
    """The MIME type of content starting with ``data`` (its first HEAD_BYTES are enough)."""
    head = data[:HEAD_BYTES]
    if not head:
        return "application/x-empty"
    if head.startswith(b"\x7fELF"):
        return _elf(head)
    for prefix, mime in _PREFIXES:
        if head.startswith(prefix):
            return mime
    if head.startswith(b"\xca\xfe\xba\xbe") and len(head) >= 8:
        # Mach-O universal binaries count their architectures, Java classes their version
        count = struct.unpack(">I", head[4:8])[0]
        return "application/x-mach-binary" if count < 40 else "application/x-java-applet"
    if head.startswith(b"MZ") and (_pe(head) or not _is_text(head)):
        return "application/x-dosexec"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "application/x-tar"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "text/plain"
    if _is_text(head):
        return _text_kind(head)
    return "application/octet-stream"


def _elf(head: bytes) -> str:
    if len(head) < 20 or head[5] not in (1, 2):
        return "application/x-executable"
    order = "<" if head[5] == 1 else ">"
    kind = struct.unpack(order + "H", head[16:18])[0]
    if kind == 3 and _has_interpreter(head, order):
        return "application/x-pie-executable"
    return _ELF_TYPES.get(kind, "application/x-executable")


def _has_interpreter(head: bytes, order: str) -> bool:
    """Whether a (head of an) ELF file has a PT_INTERP program header: a PIE executable."""
    wide = head[4] == 2
    try:
        if wide:
            phoff = struct.unpack(order + "Q", head[32:40])[0]
            size, count = struct.unpack(order + "HH", head[54:58])
        else:
            phoff = struct.unpack(order + "I", head[28:32])[0]
            size, count = struct.unpack(order + "HH", head[42:46])
    except struct.error:
        return False
    for i in range(min(count, 64)):
        at = phoff + i * size
        if at + 4 > len(head):
            return False
        if struct.unpack(order + "I", head[at:at + 4])[0] == _PT_INTERP:
            return True
    return False


def _pe(head: bytes) -> bool:
    if len(head) < 64:
        return False
    at = struct.unpack("<I", head[60:64])[0]
    return head[at:at + 4] == b"PE\x00\x00"


def _is_text(head: bytes) -> bool:
    """UTF-8 without control characters other than the usual whitespace (a multi-byte
    character cut at the end of the head is fine)."""
    if any((b < 0x20 and b not in _TEXT_CONTROLS) or b == 0x7F for b in head):
        return False
    for cut in range(4):
        try:
            head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return True
    return False


def _text_kind(head: bytes) -> str:
    if head.startswith(b"#!"):
        line = head.split(b"\n", 1)[0]
        return "text/x-script.python" if b"python" in line else "text/x-shellscript"
    start = head.lstrip()[:64].lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    if start.startswith(b"<?xml"):
        return "text/xml"
    return "text/plain"


def check(mime: str, allow: list[str], deny: list[str], *, what: str) -> None:
    """PathRefused (mime-denied) unless ``mime`` passes the policy: no ``deny`` glob matches
    it and, when ``allow`` is not empty, an ``allow`` glob does."""
    for pattern in deny:
        if fnmatch.fnmatchcase(mime, pattern.lower()):
            raise PathRefused(Reason.MIME_DENIED, f"{what} is {mime}, a type this agent "
                              f"never reads or writes (file_mime_deny: {pattern})")
    if allow and not any(fnmatch.fnmatchcase(mime, p.lower()) for p in allow):
        raise PathRefused(Reason.MIME_DENIED, f"{what} is {mime}, not a type this agent "
                          f"reads or writes (file_mime_allow: {', '.join(allow)})")
