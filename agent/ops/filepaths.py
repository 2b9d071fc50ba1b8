"""The lexical half of the file manager's sandbox: which path texts are refused, and why.

Plain functions, no I/O. :func:`parse` turns a path text into its segments or raises
:class:`PathRefused` whose ``reason`` is one keyword of :class:`Reason` (the message starts
``refused (<reason>): ...``). The rules, checked in this order so each text gets one reason:

- at most 4095 bytes in all, 255 per segment (``too-long``); no NUL (``nul-byte``)
- every character printable: no control characters (``control-character``), no invisible
  formatting ones: bidi overrides, zero-width spaces and joiners (``invisible-character``),
  no surrogates, private-use or unassigned code points (``unprintable-character``)
- unchanged by Unicode NFKC normalisation (``not-normalised``): fullwidth solidus, one-dot
  leader, ligatures, decomposed accents... are refused, never silently mapped
- no look-alikes of ``/``, ``\\`` and ``.`` that NFKC keeps (division slash, fraction slash,
  ideographic full stop...), no non-ASCII spaces, no combining mark after punctuation
  (``look-alike``)
- no backslash (``backslash``), no percent-encoding ``%XX`` / ``%uXXXX`` (``percent-encoding``)
- no empty segment (``a//b``, a leading ``//``; one trailing ``/`` is allowed, and then the
  path names a directory, as in POSIX: :attr:`ParsedPath.dir_only`) (``empty-segment``),
  no ``.`` (``dot-segment``) or ``..`` (``parent-segment``) segment, no segment that ends with a
  dot or a space (``trailing-dot-or-space``), no leading ``~`` (``home-shorthand``)

The empty text and ``.`` alone mean the root itself.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from agent.ops.base import OpsError

MAX_PATH_BYTES = 4095
MAX_NAME_BYTES = 255

#: characters NFKC keeps that look like a path separator or a dot
LOOK_ALIKES = {
    "\u2215": "division slash", "\u2044": "fraction slash", "\u29f8": "big solidus",
    "\u2216": "set minus", "\u29f5": "reverse solidus operator", "\u29f9": "big reverse solidus",
    "\u3002": "ideographic full stop", "\u2e31": "word separator middle dot",
    "\u0701": "syriac supralinear full stop", "\u0702": "syriac sublinear full stop",
    "\ua60e": "vai full stop", "\u10fb": "georgian paragraph separator",
}
_PERCENT = re.compile(r"%(?:[0-9A-Fa-f]{2}|[uU][0-9A-Fa-f]{4})")


class Reason(StrEnum):
    """Why a path is refused: the keyword every refusal message starts with."""

    TOO_LONG = "too-long"
    NUL_BYTE = "nul-byte"
    CONTROL = "control-character"
    INVISIBLE = "invisible-character"
    UNPRINTABLE = "unprintable-character"
    NOT_NORMALISED = "not-normalised"
    LOOK_ALIKE = "look-alike"
    BACKSLASH = "backslash"
    PERCENT = "percent-encoding"
    EMPTY_SEGMENT = "empty-segment"
    DOT_SEGMENT = "dot-segment"
    PARENT_SEGMENT = "parent-segment"
    TRAILING = "trailing-dot-or-space"
    HOME = "home-shorthand"
    # decided against the agent's configuration and the file system (agent/ops/filesandbox.py)
    DISABLED = "disabled"
    UNKNOWN_ROOT = "unknown-root"
    AMBIGUOUS_ROOT = "ambiguous-root"
    OUTSIDE_ROOT = "outside-root"
    RESERVED = "reserved"
    DENIED = "denied-path"
    SYMLINK_ESCAPE = "symlink-escape"
    SYMLINK_LOOP = "symlink-loop"
    NOT_FOUND = "not-found"
    NOT_A_DIRECTORY = "not-a-directory"
    IS_A_DIRECTORY = "is-a-directory"
    SPECIAL_FILE = "special-file"
    HARD_LINK = "hard-link"
    IS_ROOT = "is-root"
    CHANGED = "changed-during-operation"
    PERMISSION = "permission-denied"
    # decided by the operation (agent/ops/files.py, fileupload.py, filetrash.py)
    TOO_LARGE = "too-large"
    MIME_DENIED = "mime-denied"
    EXISTS = "exists"
    NOT_EMPTY = "not-empty"
    PRECONDITION = "precondition-failed"
    BAD_OFFSET = "bad-offset"
    CHECKSUM = "checksum-mismatch"
    UPLOAD_MISMATCH = "upload-mismatch"
    UPLOAD_EXPIRED = "upload-expired"
    CROSS_DEVICE = "cross-device"
    INVALID_MOVE = "invalid-move"
    NOT_TEXT = "not-text"
    BUSY = "busy"


class PathRefused(OpsError):
    """A path the file manager will not touch; ``reason`` is a :class:`Reason`."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"refused ({reason}): {detail}")


@dataclass(frozen=True)
class ParsedPath:
    """A path text that passed every lexical rule."""

    absolute: bool
    segments: tuple[str, ...]
    #: it ended with '/': it names a directory (a file there is refused, not-a-directory)
    dir_only: bool = False


def parse(text: str) -> ParsedPath:
    """The segments of ``text``; :class:`PathRefused` names the first rule it breaks."""
    problem = text_problem(text)
    if problem is not None:
        raise PathRefused(*problem)
    absolute = text.startswith("/")
    body = text[1:] if absolute else text
    if body == "" or (body == "." and not absolute):
        return ParsedPath(absolute, ())
    dir_only = body.endswith("/")
    if dir_only:
        body = body[:-1]
    segments = tuple(body.split("/"))
    for index, segment in enumerate(segments):
        problem = segment_problem(segment, first=index == 0 and not absolute)
        if problem is not None:
            raise PathRefused(*problem)
    return ParsedPath(absolute, segments, dir_only)


def text_problem(text: str) -> tuple[Reason, str] | None:
    """The first whole-text rule ``text`` breaks, or None."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_PATH_BYTES:
        return Reason.TOO_LONG, f"the path is {size} bytes long, at most {MAX_PATH_BYTES} allowed"
    if "\x00" in text:
        return Reason.NUL_BYTE, "the path contains a NUL byte"
    for previous, ch in zip((" " + text)[:len(text)], text, strict=True):
        problem = char_problem(ch, previous)
        if problem is not None:
            return problem
    if unicodedata.normalize("NFKC", text) != text:
        return Reason.NOT_NORMALISED, ("the path changes under Unicode NFKC normalisation "
                                       f"({_shown(text)}): compatibility characters and "
                                       "decomposed accents are refused")
    if "\\" in text:
        return Reason.BACKSLASH, "the path contains a backslash; segments are separated by '/'"
    encoded = _PERCENT.search(text)
    if encoded:
        return Reason.PERCENT, (f"the path contains percent-encoding ({encoded.group()!r}); "
                                "send the characters themselves")
    if "//" in text:
        return Reason.EMPTY_SEGMENT, "the path has an empty segment ('//')"
    return None


def char_problem(ch: str, previous: str) -> tuple[Reason, str] | None:
    """Why ``ch`` (after ``previous``) may not appear in a path, or None."""
    if ch in LOOK_ALIKES:
        return Reason.LOOK_ALIKE, (f"U+{ord(ch):04X} ({LOOK_ALIKES[ch]}) looks like a path "
                                   "separator or a dot")
    if ch.isprintable():
        if unicodedata.category(ch).startswith("M") and not previous.isalnum() \
                and not unicodedata.category(previous).startswith("M"):
            return Reason.LOOK_ALIKE, (f"combining mark U+{ord(ch):04X} after {previous!r} "
                                       "changes how the path looks")
        return None
    category = unicodedata.category(ch)
    name = unicodedata.name(ch, f"U+{ord(ch):04X}")
    if category in ("Cc", "Zl", "Zp"):
        return Reason.CONTROL, f"the path contains the control character {ch!r}"
    if category == "Cf":
        return Reason.INVISIBLE, (f"the path contains U+{ord(ch):04X} ({name}), an invisible "
                                  "formatting (bidi or zero-width) character")
    if category == "Zs":
        return Reason.LOOK_ALIKE, f"U+{ord(ch):04X} ({name}) looks like a space"
    return Reason.UNPRINTABLE, (f"the path contains U+{ord(ch):04X}, a surrogate, private-use "
                                "or unassigned code point")


def segment_problem(segment: str, *, first: bool) -> tuple[Reason, str] | None:
    """The first rule one segment of a path breaks, or None."""
    if segment == "":
        return Reason.EMPTY_SEGMENT, "the path has an empty segment ('//')"
    if segment == "..":
        return Reason.PARENT_SEGMENT, "the path contains '..', a step up to the parent directory"
    if segment == ".":
        return Reason.DOT_SEGMENT, "the path contains a '.' segment"
    if segment.endswith((".", " ")):
        return Reason.TRAILING, f"segment {segment!r} ends with a dot or a space"
    size = len(segment.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        return Reason.TOO_LONG, (f"a segment is {size} bytes long, at most {MAX_NAME_BYTES} "
                                 "allowed")
    if first and segment.startswith("~"):
        return Reason.HOME, ("'~' is not expanded to a home directory: give the path under "
                             "the root")
    return None


def _shown(text: str, limit: int = 80) -> str:
    shown = ascii(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."
