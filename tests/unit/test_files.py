"""The file manager on real temporary directory trees: a table of hostile paths, each with
its exact reason, and the operations (atomic writes, resumable uploads, moves, the trash,
listing, MIME and size checks, a directory swapped for a symlink). Every test checks that
nothing outside the sandbox changed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.ops import OpsContext, bind, fileio, filesandbox, filetrash, fileupload
from agent.ops.filemime import sniff
from agent.ops.filepaths import PathRefused, Reason
from agent.ops.files import listing, move_path, read_file, write_file
from agent.ops.filesandbox import Sandbox
from agent.ops.filetrash import delete, restore
from agent.ops.fileupload import receive
from agent.settings import AgentSettings
from schemas.commands import Command
from schemas.envelope import utcnow
from schemas.files import (
    FileDeleteParams,
    FileListParams,
    FileMoveParams,
    FileReadParams,
    FileRestoreParams,
    FileUploadChunkParams,
    FileWriteParams,
)

ELF = (b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + struct.pack("<H", 2) + b"\x00" * 46)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@dataclass
class Tree:
    base: Path
    root: Path
    outside: Path
    key: Path
    state: Path

    def settings(self, **changes: Any) -> AgentSettings:
        values: dict[str, Any] = {"file_roots": [self.root], "state_dir": self.state,
                                  "control_key": self.key}
        values.update(changes)
        return AgentSettings(**values)

    def sandbox(self, **changes: Any) -> Sandbox:
        return Sandbox(self.settings(**changes))


def snapshot(top: Path) -> dict[str, tuple[int, str]]:
    """Every object under ``top``: mode and content hash (or link target)."""
    seen: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                what = "-> " + os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = ""
            seen[str(path.relative_to(top))] = (info.st_mode, what)
    return seen


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tree]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("outside secret\n")
    (outside / "dir" / "x").write_text("x\n")
    keys = tmp_path / "keys"
    keys.mkdir()
    key = keys / "control.pub"
    key.write_text("-----BEGIN PUBLIC KEY-----\n")
    (root / "www" / "sub" / "deep").mkdir(parents=True)
    (root / "www" / "index.html").write_text("<html>hello</html>\n")
    (root / "www" / "sub" / "deep" / "file.txt").write_text("deep\n")
    (root / "www" / "server.pem").write_text("pem\n")
    (root / "agent-state").mkdir()
    (root / "agent-state" / "seen.log").write_text("ids\n")
    (root / "agent-state" / "control.pub").write_text("pinned key\n")
    links = {
        "esc1": "../outside", "www/esc2": "../../outside/secret.txt",
        "www/sub/esc3": "../../../outside", "www/sub/deep/esc4": str(outside / "secret.txt"),
        "shadow": "/etc/shadow", "loop1": "loop2", "loop2": "loop1", "self": "self",
        "dirout": str(outside), "www/upup": "../..", "www/up": "..",
        "www/inside": "index.html", "www/absinside": str(root / "www" / "index.html"),
        "www/sneaky": "../.fleetdeck-trash", "www/dotdotabs": f"{root}/../outside",
        "www/sub/chain": "../../www/sub/deep/esc4", "dangling": "nowhere/file",
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    os.mkfifo(root / "fifo")
    monkeypatch.chdir(root)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("sock")
    os.link(key, root / "hardkey")
    os.link(outside / "secret.txt", root / "hardout")
    (root / "twin-a").write_text("twin\n")
    os.link(root / "twin-a", root / "twin-b")
    before = snapshot(outside), snapshot(keys)
    yield Tree(tmp_path, root, outside, key, root / "agent-state")
    sock.close()
    assert (snapshot(outside), snapshot(keys)) == before, "something outside the sandbox changed"


def outcome(run: Callable[[], Any]) -> str:
    try:
        run()
    except PathRefused as exc:
        assert str(exc).startswith(f"refused ({exc.reason}): "), str(exc)
        return str(exc.reason)
    return "ok"


def read(sandbox: Sandbox, path: str, **params: Any) -> dict[str, Any]:
    return read_file(sandbox, FileReadParams(path=path, **params))


def write(sandbox: Sandbox, path: str, content: str | bytes, **params: Any) -> dict[str, Any]:
    if isinstance(content, bytes):
        params.update(content=base64.b64encode(content).decode(), encoding="base64")
    else:
        params.update(content=content)
    return write_file(sandbox, FileWriteParams(path=path, **params))


# (case, path, reason): FILE_READ against the tree's root
HOSTILE_READS = [
    ("dotdot", "../outside/secret.txt", "parent-segment"),
    ("dotdot inside", "www/../../outside/secret.txt", "parent-segment"),
    ("dotdot alone", "..", "parent-segment"),
    ("absolute outside", "/etc/passwd", "outside-root"),
    ("absolute tmp", "/tmp", "outside-root"),
    ("percent dotdot", "%2e%2e/outside/secret.txt", "percent-encoding"),
    ("percent slash", "www%2Findex.html", "percent-encoding"),
    ("double percent", "%252e%252e/outside", "percent-encoding"),
    ("percent unicode", "%u002e%u002e/outside", "percent-encoding"),
    ("fullwidth dots", "\uff0e\uff0e/outside/secret.txt", "not-normalised"),
    ("fullwidth solidus", "www\uff0findex.html", "not-normalised"),
    ("two dot leader", "\u2025/outside", "not-normalised"),
    ("ligature", "www/\ufb01le", "not-normalised"),
    ("decomposed accent", "www/e\u0301.txt", "not-normalised"),
    ("division slash", "www\u2215index.html", "look-alike"),
    ("ideographic stop", "www/index\u3002html", "look-alike"),
    ("no-break space", "www/\u00a0index.html", "look-alike"),
    ("nul byte", "www/index.html\x00.png", "nul-byte"),
    ("backslash", "www\\index.html", "backslash"),
    ("backslash dotdot", "..\\outside\\secret.txt", "backslash"),
    ("empty segment", "www//index.html", "empty-segment"),
    ("leading double slash", "//etc/passwd", "empty-segment"),
    ("dot segment", "./www/index.html", "dot-segment"),
    ("trailing dot segment", "www/.", "dot-segment"),
    ("trailing dot", "www/index.html.", "trailing-dot-or-space"),
    ("trailing space", "www/index.html ", "trailing-dot-or-space"),
    ("home", "~/.ssh/id_rsa", "home-shorthand"),
    ("other home", "~root/.ssh", "home-shorthand"),
    ("bidi override", "www/\u202elmth.xedni", "invisible-character"),
    ("zero width space", "www/\u200bindex.html", "invisible-character"),
    ("newline", "www/\nindex.html", "control-character"),
    ("long segment", "a" * 256, "too-long"),
    ("link escape depth 1", "esc1/secret.txt", "symlink-escape"),
    ("link escape depth 2", "www/esc2", "symlink-escape"),
    ("link escape depth 3", "www/sub/esc3/secret.txt", "symlink-escape"),
    ("absolute link escape depth 3", "www/sub/deep/esc4", "symlink-escape"),
    ("link to /etc/shadow", "shadow", "symlink-escape"),
    ("link loop", "loop1", "symlink-loop"),
    ("link to itself", "self", "symlink-loop"),
    ("dir link outside", "dirout/dir/x", "symlink-escape"),
    ("link to the root's parent", "www/upup/outside/secret.txt", "symlink-escape"),
    ("absolute link with dotdot", "www/dotdotabs/secret.txt", "symlink-escape"),
    ("chain of links", "www/sub/chain", "symlink-escape"),
    ("link to the trash", "www/sneaky/index.json", "reserved"),
    ("fifo", "fifo", "special-file"),
    ("socket", "sock", "special-file"),
    ("agent key", "agent-state/control.pub", "denied-path"),
    ("agent key absolute", "/STATE/control.pub", "denied-path"),
    ("agent state", "agent-state/seen.log", "denied-path"),
    ("hard link of a key", "hardkey", "denied-path"),
    ("hard link to a file outside", "hardout", "hard-link"),
    ("hard link inside the root", "twin-b", "hard-link"),
    ("trash", ".fleetdeck-trash/index.json", "reserved"),
    ("uploads", ".fleetdeck-uploads/x.part", "reserved"),
    ("missing", "nope/file", "not-found"),
    ("file as directory", "www/index.html/x", "not-a-directory"),
    ("trailing slash on a file", "www/index.html/", "not-a-directory"),
    ("trailing slash on a link to a file", "www/inside/", "not-a-directory"),
    ("trailing slash on a hard link", "hardout/", "not-a-directory"),
    ("directory", "www", "is-a-directory"),
    ("dangling link", "dangling", "not-found"),
]


#: refused to reads only: a write replaces the name (atomically, never writing through it)
#: and a delete removes the name, neither touches the other names of the file
READ_ONLY_REASONS = ("hard-link",)


@pytest.mark.parametrize(("case", "path", "reason"), HOSTILE_READS,
                         ids=[c[0] for c in HOSTILE_READS])
def test_hostile_paths_are_refused_with_their_reason(tree: Tree, case: str, path: str,
                                                     reason: str) -> None:
    path = path.replace("/STATE", str(tree.state))
    sandbox = tree.sandbox()
    assert outcome(lambda: read(sandbox, path)) == reason
    if reason not in ("is-a-directory", "not-found"):
        assert outcome(lambda: write(sandbox, path, "pwned")) == (
            "ok" if reason in READ_ONLY_REASONS else reason)
    if not os.path.islink(tree.root / path.replace("\x00", "")):  # a link itself may go
        assert outcome(lambda: delete(sandbox, FileDeleteParams(
            path=path, permanent=True, recursive=True))) == (
            "ok" if reason in ("is-a-directory", *READ_ONLY_REASONS) else reason)


# (case, root, path, reason, op): against a misconfigured root
MISCONFIGURED = [
    ("proc", "/", "/proc/self/environ", "denied-path"),
    ("proc relative", "/", "proc/1/mem", "denied-path"),
    ("dev null", "/", "/dev/null", "denied-path"),
    ("dev disk", "/", "/dev/sda", "denied-path"),
    ("sys", "/", "/sys/kernel/notes", "denied-path"),
    ("boot", "/", "/boot/vmlinuz", "denied-path"),
    ("shadow", "/", "/etc/shadow", "denied-path"),
    ("gshadow", "/", "/etc/gshadow", "denied-path"),
    ("sudoers", "/", "/etc/sudoers", "denied-path"),
    ("sudoers.d", "/", "/etc/sudoers.d/README", "denied-path"),
    ("sudoers glob", "/", "/etc/sudoers.bak", "denied-path"),
    ("root ssh", "/", "/root/.ssh/authorized_keys", "denied-path"),
    ("etc root shadow", "/etc", "shadow", "denied-path"),
    ("etc root sudoers", "/etc", "/etc/sudoers.d/x", "denied-path"),
    ("proc root", "/proc", "self/status", "denied-path"),
]


@pytest.mark.parametrize(("case", "root", "path", "reason"), MISCONFIGURED,
                         ids=[c[0] for c in MISCONFIGURED])
def test_system_paths_are_refused_even_inside_a_misconfigured_root(
        tree: Tree, case: str, root: str, path: str, reason: str) -> None:
    sandbox = tree.sandbox(file_roots=[Path(root)])
    assert outcome(lambda: read(sandbox, path)) == reason
    assert outcome(lambda: write(sandbox, path, "pwned")) == reason


def test_the_agents_own_files_and_extra_globs_are_denied(tree: Tree) -> None:
    sandbox = tree.sandbox(file_roots=[Path("/")], file_denylist=["*.pem"])
    assert outcome(lambda: read(sandbox, str(tree.root / "www/server.pem"))) == "denied-path"
    assert outcome(lambda: read(sandbox, str(tree.key))) == "denied-path"
    assert outcome(lambda: read(sandbox, str(tree.root / "hardkey"))) == "denied-path"
    assert outcome(lambda: listing(sandbox, FileListParams(path=str(tree.state)))) == \
        "denied-path"
    assert read(sandbox, str(tree.root / "www/index.html"))["content"] == "<html>hello</html>\n"


def test_roots_are_chosen_explicitly() -> None:
    assert outcome(lambda: read(Sandbox(AgentSettings()), "x")) == "disabled"
    two = Sandbox(AgentSettings(file_roots=[Path("/srv"), Path("/var/www")]))
    assert outcome(lambda: read(two, "x")) == "ambiguous-root"
    assert outcome(lambda: read(two, "x", root=5)) == "unknown-root"
    assert outcome(lambda: read(two, "/etc/passwd", root="/srv")) == "outside-root"
    assert two.root("/var/www/").index == 1 and two.root(0).index == 0
    assert outcome(lambda: two.root("0")) == "unknown-root"  # an index is a number


def test_a_tenants_policy_replaces_the_agents_roots(tree: Tree) -> None:
    other = tree.base / "tenant-b"
    other.mkdir()
    (other / "b.txt").write_text("b\n")
    settings = tree.settings(file_tenant_roots={"b": [other], "c": []})
    assert read(Sandbox(settings, "b"), "b.txt")["size"] == 2
    assert outcome(lambda: read(Sandbox(settings, "b"), "www/index.html")) == "not-found"
    assert outcome(lambda: read(Sandbox(settings, "b"), str(tree.root / "www" / "index.html"))) \
        == "outside-root"
    assert outcome(lambda: read(Sandbox(settings, "c"), "b.txt")) == "disabled"
    assert Sandbox(settings, "a").roots[0].configured == str(tree.root)
    with pytest.raises(ValueError, match="absolute"):
        tree.settings(file_tenant_roots={"b": [Path("relative")]})


def test_links_inside_the_root_are_followed(tree: Tree) -> None:
    sandbox = tree.sandbox()
    for path in ("www/inside", "www/absinside", "www/up/www/index.html"):
        got = read(sandbox, path)
        assert got["path"] == "www/index.html" and got["content"] == "<html>hello</html>\n"


def test_hard_links_are_listed_moved_and_deleted_but_never_read(tree: Tree) -> None:
    sandbox = tree.sandbox()
    names = {e["name"]: e for e in listing(sandbox, FileListParams(limit=1000))["entries"]}
    assert names["hardout"]["type"] == "file" and names["hardout"]["size"] == 15
    with pytest.raises(PathRefused) as refused:
        read(sandbox, "hardout")
    assert str(refused.value).startswith("refused (hard-link): hardout has 2 hard links")
    move_path(sandbox, FileMoveParams(path="hardout", destination="www/moved"))
    assert outcome(lambda: read(sandbox, "www/moved")) == "hard-link"
    gone = delete(sandbox, FileDeleteParams(path="www/moved"))
    restore(sandbox, FileRestoreParams(trash_id=gone["trash_id"]))
    assert outcome(lambda: read(sandbox, "www/moved")) == "hard-link"
    (tree.root / "twin-a").unlink()  # the only name left: an ordinary file again
    assert read(sandbox, "twin-b")["content"] == "twin\n"


def test_writes_over_a_hard_link_never_tell_what_it_holds(tree: Tree) -> None:
    sandbox = tree.sandbox()
    secret = hashlib.sha256((tree.outside / "secret.txt").read_bytes()).hexdigest()
    # a precondition compared with the outside file's hash would be an oracle for it
    assert outcome(lambda: write(sandbox, "hardout", "x", expected_sha256=secret)) \
        == "hard-link"
    assert outcome(lambda: write(sandbox, "hardout", "x", expected_sha256="0" * 64)) \
        == "hard-link"
    done = write(sandbox, "hardout", "replaced\n")
    assert done["before"]["sha256"] is None and "hard links" in done["before"]["sha256_omitted"]
    assert secret not in json.dumps(done)
    assert (tree.outside / "secret.txt").read_text() == "outside secret\n"  # not touched


def test_a_hard_link_made_after_the_walk_is_seen_on_the_descriptor(
        tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    original = Sandbox.resolve

    def resolve_then_link(self: Sandbox, *args: Any, **kwargs: Any) -> Any:
        res = original(self, *args, **kwargs)
        os.link(tree.root / "www/index.html", tree.base / "elsewhere")
        return res

    monkeypatch.setattr(Sandbox, "resolve", resolve_then_link)
    assert outcome(lambda: read(tree.sandbox(), "www/index.html")) == "hard-link"


def test_a_trailing_slash_names_a_directory(tree: Tree) -> None:
    sandbox = tree.sandbox()
    assert listing(sandbox, FileListParams(path="www/"))["path"] == "www"
    assert listing(sandbox, FileListParams(path="www/up/"))["path"] == ""  # a link to a dir
    assert outcome(lambda: read(sandbox, "www/")) == "is-a-directory"
    assert outcome(lambda: write(sandbox, "www/new/", "x")) == "is-a-directory"
    assert outcome(lambda: receive(sandbox, chunk("www/new/", "upload-0200", 0, b"x"))) == \
        "is-a-directory"
    assert outcome(lambda: move_path(sandbox, FileMoveParams(
        path="www/index.html", destination="www/new/"))) == "is-a-directory"
    assert outcome(lambda: move_path(sandbox, FileMoveParams(
        path="www/inside/", destination="www/new"))) == "not-a-directory"
    gone = delete(sandbox, FileDeleteParams(path="twin-a"))
    assert outcome(lambda: restore(sandbox, FileRestoreParams(
        trash_id=gone["trash_id"], path="www/new/"))) == "is-a-directory"
    assert not (tree.root / "www/new").exists()
    assert move_path(sandbox, FileMoveParams(path="www/sub/", destination="www/new/"))[
        "destination"] == "www/new"
    assert (tree.root / "www/new/deep/file.txt").is_file()
    assert delete(sandbox, FileDeleteParams(path="www/new/"))["path"] == "www/new"


# -- listing ---------------------------------------------------------------------------------

def test_listing_is_paginated_and_sorted_with_facts(tree: Tree) -> None:
    sandbox = tree.sandbox()
    for i in range(25):
        (tree.root / "www" / "sub" / f"f{i:02d}").write_text("x" * i)
    (tree.root / "www/sub/f03").chmod(0o640)
    page = listing(sandbox, FileListParams(path="www/sub", offset=10, limit=5))
    assert page["root"] == str(tree.root) and page["path"] == "www/sub"
    assert (page["total"], page["offset"], page["limit"]) == (28, 10, 5)
    assert [e["name"] for e in page["entries"]] == ["f07", "f08", "f09", "f10", "f11"]
    first = listing(sandbox, FileListParams(path="www/sub", limit=3))["entries"]
    assert [(e["name"], e["type"]) for e in first] == [("chain", "symlink"), ("deep", "dir"),
                                                         ("esc3", "symlink")]
    f03 = listing(sandbox, FileListParams(path="www/sub", offset=6, limit=1))["entries"][0]
    assert f03["name"] == "f03" and f03["mode"] == "0640" and f03["size"] == 3
    assert f03["owner"] and f03["group"] and f03["mtime"].endswith("+00:00")
    write(sandbox, "www/new.txt", "hi")
    delete(sandbox, FileDeleteParams(path="www/new.txt"))
    top = listing(sandbox, FileListParams(limit=1000))
    names = {e["name"]: e["type"] for e in top["entries"]}
    assert ".fleetdeck-trash" not in names and names["fifo"] == "other"
    assert top["path"] == ""
    assert outcome(lambda: listing(sandbox, FileListParams(path="www/index.html"))) == \
        "not-a-directory"
    assert outcome(lambda: listing(sandbox, FileListParams(path="dirout"))) == "symlink-escape"


# -- reading ---------------------------------------------------------------------------------

def test_reads_return_pieces_with_the_whole_files_hash(tree: Tree) -> None:
    sandbox = tree.sandbox(file_max_read_bytes=8)
    data = b"0123456789abcdefXYZ"
    (tree.root / "www/data.txt").write_bytes(data)
    got = read(sandbox, "www/data.txt", offset=8)
    assert got == {"path": "www/data.txt", "size": 19, "sha256": hashlib.sha256(data).hexdigest(),
                   "offset": 8, "length": 8, "encoding": "utf-8", "content": "89abcdef",
                   "mime": "text/plain", "eof": False}
    assert read(sandbox, "www/data.txt", offset=16)["eof"] is True
    assert outcome(lambda: read(sandbox, "www/data.txt", length=9)) == "too-large"
    (tree.root / "www/blob").write_bytes(b"\x00\x01\xff" * 2)
    blob = read(sandbox, "www/blob")
    assert blob["encoding"] == "base64" and base64.b64decode(blob["content"]) == b"\x00\x01\xff" * 2


def test_mime_is_detected_from_content_and_checked(tree: Tree) -> None:
    sandbox = tree.sandbox()
    (tree.root / "www/tool.txt").write_bytes(ELF)  # the name says text, the content says ELF
    assert outcome(lambda: read(sandbox, "www/tool.txt")) == "mime-denied"
    assert outcome(lambda: write(sandbox, "www/tool2.txt", ELF)) == "mime-denied"
    assert not (tree.root / "www/tool2.txt").exists()
    texts = tree.sandbox(file_mime_allow=["text/*"])
    assert outcome(lambda: write(texts, "www/pic.txt", PNG)) == "mime-denied"
    assert outcome(lambda: write(texts, "www/ok.txt", "fine")) == "ok"
    assert sniff(ELF) == "application/x-executable"
    assert sniff(b"#!/bin/sh\necho hi\n") == "text/x-shellscript"
    assert sniff(b"MZ" + b"\x00" * 58 + struct.pack("<I", 64) + b"PE\x00\x00") == \
        "application/x-dosexec"
    assert sniff(b"MZ is a postcode\n") == "text/plain"
    assert sniff(b"") == "application/x-empty"


# -- writing ---------------------------------------------------------------------------------

def test_writes_are_atomic_and_keep_mode_and_owner(tree: Tree) -> None:
    sandbox = tree.sandbox()
    target = tree.root / "www/index.html"
    target.chmod(0o640)
    os.chown(target, 1234, 4321)
    old = hashlib.sha256(target.read_bytes()).hexdigest()
    inode = target.stat().st_ino
    got = write(sandbox, "www/index.html", "new\n", expected_sha256=old)
    assert got == {"path": "www/index.html", "size": 4,
                   "sha256": hashlib.sha256(b"new\n").hexdigest(), "created": False,
                   "before": {"size": 19, "sha256": old}}
    info = target.stat()
    assert target.read_text() == "new\n" and info.st_ino != inode  # replaced, not rewritten
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 1234, 4321)
    assert not [p for p in (tree.root / "www").iterdir() if p.name.startswith(".fleetdeck")]
    made = write(sandbox, "www/new.txt", "x", mode=0o600)
    assert made["created"] is True and made["before"] is None
    assert stat.S_IMODE((tree.root / "www/new.txt").stat().st_mode) == 0o600
    linked = write(sandbox, "www/inside", "via link\n")  # a link inside: its target is written
    assert linked["path"] == "www/index.html" and (tree.root / "www/inside").is_symlink()


# (mode as sent, the mode it means or the words of the validation error)
MODES: list[tuple[Any, int | str]] = [
    ("0400", 0o400), ("444", 0o444), ("0644", 0o644), ("0o755", 0o755), ("0", 0),
    ("0777", 0o777), (420, 0o644), (0o600, 0o600), (0, 0), (None, -1),
    (True, "a number or octal text"), (False, "a number or octal text"),
    (4.0, "a number or octal text"), ([6, 4, 4], "a number or octal text"),
    ("rwx", "not 1 to 4 octal digits"), ("999", "not 1 to 4 octal digits"),
    ("0x1a4", "not 1 to 4 octal digits"), ("", "not 1 to 4 octal digits"),
    (" 644", "not 1 to 4 octal digits"), ("012345", "not 1 to 4 octal digits"),
    ("04755", "setuid, setgid or sticky"), ("1777", "setuid, setgid or sticky"),
    (644, "setuid, setgid or sticky"), (0o10000, "not a permission mode"),
    (-1, "not a permission mode"),
]


@pytest.mark.parametrize(("sent", "meant"), MODES, ids=[repr(m[0]) for m in MODES])
def test_modes_are_octal_text_or_the_numeric_mode(sent: Any, meant: int | str) -> None:
    for model in (FileWriteParams, FileUploadChunkParams):
        raw = {"path": "a", "content": "x"} if model is FileWriteParams else {
            "path": "a", "upload_id": "upload-0001", "offset": 0, "final": True,
            "sha256": "0" * 64}
        if isinstance(meant, int):
            got = model.model_validate({**raw, "mode": sent})
            assert got.mode == (None if meant == -1 else meant)
        else:
            with pytest.raises(ValidationError, match=meant) as refused:
                model.model_validate({**raw, "mode": sent})
            assert refused.value.errors()[0]["loc"] == ("mode",)


# (model, params as JSON text, the field a lenient value is refused for)
LENIENT: list[tuple[type[Any], str, str]] = [
    (FileReadParams, '{"path": "a", "root": true}', "root"),
    (FileReadParams, '{"path": "a", "root": false}', "root"),
    (FileReadParams, '{"path": "a", "root": "0"}', "root"),
    (FileReadParams, '{"path": "a", "root": 0.0}', "root"),
    (FileReadParams, '{"path": "a", "root": -1}', "root"),
    (FileReadParams, '{"path": "a", "offset": "5"}', "offset"),
    (FileReadParams, '{"path": "a", "offset": 5.0}', "offset"),
    (FileReadParams, '{"path": "a", "length": true}', "length"),
    (FileReadParams, '{"path": 5}', "path"),
    (FileListParams, '{"trash": "yes"}', "trash"),
    (FileListParams, '{"trash": 1}', "trash"),
    (FileListParams, '{"trash": "true"}', "trash"),
    (FileListParams, '{"limit": "10"}', "limit"),
    (FileWriteParams, '{"path": "a", "content": 5}', "content"),
    (FileUploadChunkParams, '{"path": "a", "upload_id": 123456789, "offset": 0}',
     "upload_id"),
    (FileUploadChunkParams, '{"path": "a", "upload_id": "upload-1", "offset": 0, '
     '"final": "1", "sha256": "' + "0" * 64 + '"}', "final"),
    (FileMoveParams, '{"path": "a", "destination": "b", "overwrite": "yes"}', "overwrite"),
    (FileMoveParams, '{"path": "a", "destination": "b", "destination_root": true}',
     "destination_root"),
    (FileDeleteParams, '{"path": "a", "permanent": "true"}', "permanent"),
    (FileDeleteParams, '{"path": "a", "recursive": 1}', "recursive"),
    (FileRestoreParams, '{"trash_id": "' + "a" * 32 + '", "overwrite": 0}', "overwrite"),
]


@pytest.mark.parametrize(("model", "text", "field"), LENIENT,
                         ids=[f"{m.__name__} {t}" for m, t, _ in LENIENT])
def test_params_are_strict_about_json_types(model: type[Any], text: str, field: str) -> None:
    for parse in (model.model_validate_json, lambda t: model.model_validate(json.loads(t))):
        with pytest.raises(ValidationError) as refused:
            parse(text)
        assert refused.value.errors()[0]["loc"][0] == field


def test_ordinary_json_params_pass_strict_models() -> None:
    texts = {
        FileListParams: '{"root": 0, "path": "www", "offset": 0, "limit": 10, "trash": false}',
        FileReadParams: '{"root": "/srv", "path": "a", "offset": 3, "length": 10, '
                        '"encoding": "base64"}',
        FileWriteParams: '{"path": "a", "content": "x", "mode": 420, "expected_sha256": "'
                         + "A" * 64 + '"}',
        FileUploadChunkParams: '{"path": "a", "upload_id": "upload-1", "offset": 0, '
                               '"data": "eA==", "final": true, "total_size": 1, "sha256": "'
                               + "0" * 64 + '", "mode": "0600"}',
        FileMoveParams: '{"path": "a", "destination": "b", "destination_root": 1, '
                        '"overwrite": true}',
        FileDeleteParams: '{"path": "a", "permanent": true, "recursive": false}',
        FileRestoreParams: '{"trash_id": "' + "a" * 32 + '", "path": null, "overwrite": true}',
    }
    for model, text in texts.items():
        from_dict = model.model_validate(json.loads(text))
        assert from_dict == model.model_validate_json(text)
        assert model.model_validate(from_dict.model_dump(mode="json")) == from_dict
    assert FileWriteParams.model_validate_json(texts[FileWriteParams]).expected_sha256 == \
        "a" * 64


def test_a_new_files_mode_given_as_octal_text(tree: Tree) -> None:
    sandbox = tree.sandbox()
    write(sandbox, "www/ro.txt", "read only\n", mode="0400")
    assert stat.S_IMODE((tree.root / "www/ro.txt").stat().st_mode) == 0o400
    listed = listing(sandbox, FileListParams(path="www", limit=1000))["entries"]
    assert {e["name"]: e["mode"] for e in listed}["ro.txt"] == "0400"


def test_a_stale_hash_refuses_the_write_and_changes_nothing(tree: Tree) -> None:
    sandbox = tree.sandbox()
    before = snapshot(tree.root)
    stale = "0" * 64
    assert outcome(lambda: write(sandbox, "www/index.html", "x", expected_sha256=stale)) == \
        "precondition-failed"
    assert outcome(lambda: write(sandbox, "www/none.txt", "x", expected_sha256=stale)) == \
        "precondition-failed"
    assert outcome(lambda: write(tree.sandbox(file_max_write_bytes=3), "www/big", "1234")) \
        == "too-large"
    assert outcome(lambda: write(sandbox, str(tree.root), "x")) == "is-a-directory"
    assert snapshot(tree.root) == before


# -- uploads ---------------------------------------------------------------------------------

def chunk(path: str, upload_id: str, offset: int, data: bytes, **more: Any
          ) -> FileUploadChunkParams:
    return FileUploadChunkParams(path=path, upload_id=upload_id, offset=offset,
                                 data=base64.b64encode(data).decode(), **more)


def test_a_refused_final_step_keeps_the_upload_for_another_try(
        tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.ops.fileio as fileio

    sandbox = tree.sandbox()
    data = b"all the uploaded bytes\n" * 100
    sha = hashlib.sha256(data).hexdigest()
    receive(sandbox, chunk("www/up.txt", "upload-0042", 0, data[:1000]))
    original = fileio._unchanged

    def changed_meanwhile(res: Any, before: Any) -> None:
        raise PathRefused(Reason.CHANGED, "www/up.txt changed meanwhile")

    monkeypatch.setattr(fileio, "_unchanged", changed_meanwhile)
    final = chunk("www/up.txt", "upload-0042", 1000, data[1000:], final=True, sha256=sha)
    assert outcome(lambda: receive(sandbox, final)) == "changed-during-operation"
    assert not (tree.root / "www" / "up.txt").exists()
    monkeypatch.setattr(fileio, "_unchanged", original)
    done = receive(sandbox, final)  # the same final chunk again
    assert done["complete"] and (tree.root / "www" / "up.txt").read_bytes() == data
    assert os.stat(tree.root / "www" / "up.txt").st_nlink == 1  # the part file is gone


def test_uploads_resume_from_the_reported_offset(tree: Tree) -> None:
    sandbox = tree.sandbox()
    data = b"".join(f"line {i}\n".encode() for i in range(3000))
    sha = hashlib.sha256(data).hexdigest()
    first = receive(sandbox, chunk("www/big.txt", "upload-0001", 0, data[:10000]))
    assert first == {"upload_id": "upload-0001", "path": "www/big.txt", "received": 10000,
                     "complete": False, "sha256": None, "before": None}
    assert receive(sandbox, chunk("www/big.txt", "upload-0001", 0, data[:10000]))[
        "received"] == 10000  # a repeated chunk is fine
    with pytest.raises(PathRefused) as wrong:
        receive(sandbox, chunk("www/big.txt", "upload-0001", 12000, data[12000:13000]))
    assert wrong.value.reason == "bad-offset" and "expected offset 10000" in str(wrong.value)
    assert outcome(lambda: receive(sandbox, chunk("www/big.txt", "upload-0001", 0, b"other"))) \
        == "bad-offset"
    assert outcome(lambda: receive(sandbox, chunk("www/other.txt", "upload-0001", 10000,
                                                  b"x"))) == "upload-mismatch"
    assert not (tree.root / "www/big.txt").exists()
    done = receive(sandbox, chunk("www/big.txt", "upload-0001", 10000, data[10000:],
                                  final=True, sha256=sha, total_size=len(data)))
    assert done["complete"] and done["sha256"] == sha and done["received"] == len(data)
    assert (tree.root / "www/big.txt").read_bytes() == data
    again = receive(sandbox, chunk("www/big.txt", "upload-0001", 10000, data[10000:],
                                   final=True, sha256=sha, total_size=len(data)))
    assert again["complete"] and again["sha256"] == sha


def test_an_upload_with_the_wrong_hash_is_discarded(tree: Tree) -> None:
    sandbox = tree.sandbox()
    receive(sandbox, chunk("www/f.bin", "upload-0002", 0, b"abc"))
    with pytest.raises(PathRefused) as bad:
        receive(sandbox, chunk("www/f.bin", "upload-0002", 3, b"def", final=True,
                               sha256=hashlib.sha256(b"abcdeX").hexdigest()))
    assert bad.value.reason == "checksum-mismatch"
    assert not (tree.root / "www/f.bin").exists()
    restart = receive(sandbox, chunk("www/f.bin", "upload-0002", 0, b"abc"))
    assert restart["received"] == 3  # the discarded bytes are gone: it starts again


def test_upload_caps_mime_and_precondition(tree: Tree) -> None:
    small = tree.sandbox(file_max_upload_bytes=5)
    assert outcome(lambda: receive(small, chunk("www/a", "upload-0003", 0, b"123456"))) == \
        "too-large"
    sandbox = tree.sandbox()
    assert outcome(lambda: receive(sandbox, chunk(
        "www/tool", "upload-0004", 0, ELF, final=True,
        sha256=hashlib.sha256(ELF).hexdigest()))) == "mime-denied"
    assert not (tree.root / "www/tool").exists()
    assert outcome(lambda: receive(sandbox, chunk(
        "www/index.html", "upload-0005", 0, b"v2", final=True,
        sha256=hashlib.sha256(b"v2").hexdigest(), expected_sha256="1" * 64))) == \
        "precondition-failed"
    assert (tree.root / "www/index.html").read_text() == "<html>hello</html>\n"
    assert outcome(lambda: receive(sandbox, chunk("www/esc2", "upload-0006", 0, b"x"))) == \
        "symlink-escape"


def staged(tree: Tree) -> set[str]:
    uploads = tree.root / ".fleetdeck-uploads"
    return {p.name for p in uploads.iterdir()} if uploads.exists() else set()


def test_a_refused_first_chunk_leaves_nothing_behind(tree: Tree) -> None:
    sandbox = tree.sandbox()
    assert outcome(lambda: receive(sandbox, chunk("www/a", "upload-0300", 10**12, b"x"))) == \
        "bad-offset"
    assert not (tree.root / ".fleetdeck-uploads").exists()
    receive(sandbox, chunk("www/b", "upload-0301", 0, b"kept"))
    refused = {
        "bad-offset": chunk("www/a", "upload-0302", 5, b"x"),
        "too-large": chunk("www/a", "upload-0303", 0, b"x" * 101),
        "mime-denied": chunk("www/a", "upload-0304", 0, ELF, final=True,
                             sha256=hashlib.sha256(ELF).hexdigest()),
        "checksum-mismatch": chunk("www/a", "upload-0305", 0, b"x", final=True,
                                   sha256="0" * 64),
        "precondition-failed": chunk("www/a", "upload-0306", 0, b"x", final=True,
                                     sha256=hashlib.sha256(b"x").hexdigest(),
                                     expected_sha256="1" * 64),
    }
    small = tree.sandbox(file_max_upload_bytes=100)
    for reason, params in refused.items():
        assert outcome(lambda p=params: receive(small, p)) == reason
        assert staged(tree) == {"upload-0301.json", "upload-0301.part"}, reason
    assert not (tree.root / "www/a").exists()


def age(tree: Tree, upload_id: str, seconds: float) -> None:
    then = time.time() - seconds
    for path in (tree.root / ".fleetdeck-uploads").glob(f"{upload_id}.*"):
        os.utime(path, (then, then))


def test_uploads_untouched_too_long_are_removed_and_refused(tree: Tree) -> None:
    sandbox = tree.sandbox()
    receive(sandbox, chunk("www/old", "upload-0400", 0, b"old"))
    receive(sandbox, chunk("www/new", "upload-0401", 0, b"new"))
    age(tree, "upload-0400", fileupload.UPLOAD_EXPIRY_S + 60)
    age(tree, "upload-0401", fileupload.UPLOAD_EXPIRY_S - 60)  # not yet
    (tree.root / ".fleetdeck-uploads/.fleetdeck-crash.tmp").write_text("{")
    age(tree, ".fleetdeck-crash", fileupload.UPLOAD_EXPIRY_S + 60)
    assert receive(sandbox, chunk("www/new", "upload-0401", 3, b"er"))["received"] == 5
    assert staged(tree) == {"upload-0400.expired", "upload-0401.json", "upload-0401.part"}
    with pytest.raises(PathRefused) as expired:
        receive(sandbox, chunk("www/old", "upload-0400", 3, b"er"))
    assert str(expired.value) == (
        "refused (upload-expired): upload upload-0400 expired: it was untouched for more than "
        "24 h and what it had was removed; start again with a new upload_id")
    assert outcome(lambda: receive(sandbox, chunk("www/old", "upload-0400", 0, b"o"))) == \
        "upload-expired"
    # the upload being touched is checked too, and marks go after as long again
    age(tree, "upload-0401", fileupload.UPLOAD_EXPIRY_S + 60)
    age(tree, "upload-0400", fileupload.UPLOAD_EXPIRY_S + 60)
    assert outcome(lambda: receive(sandbox, chunk("www/new", "upload-0401", 5, b"!"))) == \
        "upload-expired"
    assert staged(tree) == {"upload-0401.expired"}
    assert not (tree.root / "www/new").exists() and not (tree.root / "www/old").exists()


# -- moves -----------------------------------------------------------------------------------

def test_moves_never_overwrite_unless_asked(tree: Tree) -> None:
    sandbox = tree.sandbox()
    (tree.root / "www/a.txt").write_text("a")
    (tree.root / "www/b.txt").write_text("b")
    assert outcome(lambda: move_path(sandbox, FileMoveParams(
        path="www/a.txt", destination="www/b.txt"))) == "exists"
    assert (tree.root / "www/b.txt").read_text() == "b"
    assert (tree.root / "www/a.txt").read_text() == "a"
    got = move_path(sandbox, FileMoveParams(path="www/a.txt", destination="www/b.txt",
                                            overwrite=True))
    b_sha = hashlib.sha256(b"b").hexdigest()
    trash_id = got["trash_id"]
    assert got == {"path": "www/a.txt", "destination": "www/b.txt", "trash_id": trash_id,
                   "replaced": {"path": "www/b.txt", "type": "file", "size": 1,
                                "sha256": b_sha, "trash_id": trash_id},
                   "before": {"destination": "www/b.txt", "exists": True, "type": "file",
                              "size": 1, "sha256": b_sha, "mode": "0644",
                              "owner": got["before"]["owner"]}}
    assert (tree.root / "www/b.txt").read_text() == "a" and not (tree.root / "www/a.txt").exists()
    [item] = listing(sandbox, FileListParams(trash=True))["entries"]
    assert (item["trash_id"], item["original_path"]) == (trash_id, "www/b.txt")
    assert restore(sandbox, FileRestoreParams(trash_id=trash_id, path="www/b-old.txt"))[
        "path"] == "www/b-old.txt"
    assert (tree.root / "www/b-old.txt").read_text() == "b"  # the replaced file is back
    moved = move_path(sandbox, FileMoveParams(path="www/sub", destination="moved"))
    assert moved["destination"] == "moved" and (tree.root / "moved/deep/file.txt").exists()
    os.link(tree.key, tree.root / "moved/deep/k")
    refused = {
        "into itself": (FileMoveParams(path="www", destination="www/inner"), "invalid-move"),
        "out": (FileMoveParams(path="www/b.txt", destination="../b.txt"), "parent-segment"),
        "via a link": (FileMoveParams(path="www/b.txt", destination="esc1/b.txt"),
                       "symlink-escape"),
        "a key": (FileMoveParams(path="agent-state/control.pub", destination="k"),
                  "denied-path"),
        "onto a key": (FileMoveParams(path="www/b.txt", destination="agent-state/control.pub",
                                      overwrite=True), "denied-path"),
        "the state": (FileMoveParams(path="agent-state", destination="k"), "denied-path"),
        "a tree holding a key": (FileMoveParams(path="moved", destination="k"), "denied-path"),
    }
    for case, (params, reason) in refused.items():
        assert outcome(lambda p=params: move_path(sandbox, p)) == reason, case


def test_the_root_cannot_be_moved_or_deleted(tree: Tree) -> None:
    sandbox = tree.sandbox()
    assert outcome(lambda: move_path(sandbox, FileMoveParams(path=str(tree.root),
                                                             destination="x"))) == "is-root"
    assert outcome(lambda: delete(sandbox, FileDeleteParams(path=str(tree.root)))) == "is-root"


# -- deletes and the trash -----------------------------------------------------------------

def test_deletes_go_to_the_trash_and_come_back(tree: Tree) -> None:
    sandbox = tree.sandbox()
    size = sum(p.lstat().st_size for p in (tree.root / "www/sub").rglob("*")
               if not p.is_dir() or p.is_symlink())
    gone = delete(sandbox, FileDeleteParams(path="www/sub"))
    assert gone["path"] == "www/sub" and gone["permanent"] is False
    assert gone["before"] == {"type": "dir", "entries": 5, "bytes": size}
    assert not (tree.root / "www/sub").exists()
    trash = listing(sandbox, FileListParams(trash=True))
    [item] = trash["entries"]
    assert item["trash_id"] == gone["trash_id"] and item["original_path"] == "www/sub"
    assert item["type"] == "dir" and item["size"] == size and item["deleted_at"]
    assert trash["total"] == 1 and trash["path"] == ""
    (tree.root / "www/sub").mkdir()
    assert outcome(lambda: restore(sandbox, FileRestoreParams(trash_id=gone["trash_id"]))) == \
        "exists"
    (tree.root / "www/sub").rmdir()
    back = restore(sandbox, FileRestoreParams(trash_id=gone["trash_id"]))
    assert back == {"path": "www/sub", "trash_id": gone["trash_id"], "replaced": None,
                    "before": {"destination": "www/sub", "exists": False}}
    assert (tree.root / "www/sub/deep/file.txt").read_text() == "deep\n"
    assert outcome(lambda: restore(sandbox, FileRestoreParams(trash_id=gone["trash_id"]))) == \
        "not-found"
    link = delete(sandbox, FileDeleteParams(path="www/esc2"))  # the link, not its target
    assert restore(sandbox, FileRestoreParams(trash_id=link["trash_id"], path="www/esc2b"))[
        "path"] == "www/esc2b"
    assert os.readlink(tree.root / "www/esc2b") == "../../outside/secret.txt"


def test_permanent_deletes(tree: Tree) -> None:
    sandbox = tree.sandbox()
    (tree.root / "www/index.html").chmod(0o640)
    gone = delete(sandbox, FileDeleteParams(path="www/index.html", permanent=True))
    assert gone == {"path": "www/index.html", "permanent": True, "trash_id": None,
                    "before": {"type": "file", "size": 19, "mode": "0640",
                               "owner": gone["before"]["owner"],
                               "sha256": hashlib.sha256(b"<html>hello</html>\n").hexdigest()}}
    assert not (tree.root / "www/index.html").exists()
    assert outcome(lambda: delete(sandbox, FileDeleteParams(path="www/sub", permanent=True))) \
        == "not-empty"
    # the tree holds links to outside: removed as links, their targets untouched
    delete(sandbox, FileDeleteParams(path="www/sub", permanent=True, recursive=True))
    assert not (tree.root / "www/sub").exists()
    assert outcome(lambda: delete(sandbox, FileDeleteParams(path="agent-state"))) == \
        "denied-path"
    assert outcome(lambda: delete(sandbox, FileDeleteParams(path="fifo"))) == "special-file"
    assert listing(sandbox, FileListParams(trash=True))["entries"] == []


def test_deletes_describe_what_went_cheaply(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = tree.sandbox()
    monkeypatch.setattr(fileio, "BEFORE_HASH_BYTES", 10)
    big = delete(sandbox, FileDeleteParams(path="www/index.html"))["before"]
    assert big["size"] == 19 and big["sha256"] is None and "19 bytes" in big["sha256_omitted"]
    hard = delete(sandbox, FileDeleteParams(path="hardout", permanent=True))["before"]
    assert hard["sha256"] is None and "hard links" in hard["sha256_omitted"]
    link = delete(sandbox, FileDeleteParams(path="www/esc2", permanent=True))["before"]
    assert link["type"] == "symlink" and link["target"] == "../../outside/secret.txt"
    (tree.root / "empty").mkdir()
    assert delete(sandbox, FileDeleteParams(path="empty", permanent=True))["before"] == {
        "type": "dir", "entries": 0, "bytes": 0}
    whole = delete(sandbox, FileDeleteParams(path="www", permanent=True, recursive=True))
    assert whole["before"]["type"] == "dir" and whole["before"]["entries"] >= 9


def test_an_overwriting_move_keeps_what_it_replaces(tree: Tree,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = tree.sandbox()
    (tree.root / "full").mkdir()
    (tree.root / "full/x").write_text("x")
    (tree.root / "empty").mkdir()
    refused = {
        "a file over a directory": (FileMoveParams(path="twin-a", destination="empty",
                                                   overwrite=True), "is-a-directory"),
        "a directory over a file": (FileMoveParams(path="empty", destination="www/index.html",
                                                   overwrite=True), "not-a-directory"),
        "over a non-empty directory": (FileMoveParams(path="empty", destination="full",
                                                      overwrite=True), "not-empty"),
    }
    for case, (params, reason) in refused.items():
        assert outcome(lambda p=params: move_path(sandbox, p)) == reason, case
    assert listing(sandbox, FileListParams(trash=True))["entries"] == []
    (tree.root / "other").mkdir()
    moved = move_path(sandbox, FileMoveParams(path="other", destination="empty",
                                              overwrite=True))
    assert moved["before"] == {"destination": "empty", "exists": True, "type": "dir",
                               "entries": 0, "bytes": 0}
    assert moved["replaced"] == {"path": "empty", "type": "dir", "size": 0,
                                 "trash_id": moved["trash_id"]}
    # the rename fails after the destination went to the trash: it is put back
    real = filetrash.rename
    calls: list[str] = []

    def failing_second(*args: Any, **kwargs: Any) -> None:
        calls.append(args[1])
        if len(calls) == 2:
            raise PathRefused(Reason.EXISTS, "someone was faster")
        real(*args, **kwargs)

    monkeypatch.setattr(filetrash, "rename", failing_second)
    assert outcome(lambda: move_path(sandbox, FileMoveParams(
        path="www/index.html", destination="twin-a", overwrite=True))) == "exists"
    assert len(calls) == 3 and (tree.root / "twin-a").read_text() == "twin\n"
    assert (tree.root / "www/index.html").exists()
    assert [i["original_path"] for i in listing(sandbox, FileListParams(trash=True))[
        "entries"]] == ["empty"]


# -- races -------------------------------------------------------------------------------------

def swap_for_link(directory: Path, target: Path) -> None:
    directory.rename(directory.with_name(directory.name + ".away"))
    directory.symlink_to(target)


def test_a_directory_swapped_for_a_link_between_operations(tree: Tree) -> None:
    sandbox = tree.sandbox()
    assert listing(sandbox, FileListParams(path="www/sub/deep"))["total"] == 2
    swap_for_link(tree.root / "www/sub/deep", tree.outside)
    assert outcome(lambda: write(sandbox, "www/sub/deep/secret.txt", "pwned")) == \
        "symlink-escape"
    assert outcome(lambda: delete(sandbox, FileDeleteParams(
        path="www/sub/deep/secret.txt", permanent=True))) == "symlink-escape"


def test_a_directory_swapped_after_the_check_is_never_followed(
        tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap happens after the path was resolved: the write goes through the held
    descriptors into the directory that was checked (now moved aside), never outside."""
    original = Sandbox.resolve

    def resolve_then_swap(self: Sandbox, *args: Any, **kwargs: Any) -> Any:
        res = original(self, *args, **kwargs)
        swap_for_link(tree.root / "www/sub/deep", tree.outside)
        return res

    monkeypatch.setattr(Sandbox, "resolve", resolve_then_swap)
    write(tree.sandbox(), "www/sub/deep/secret.txt", "landed inside\n")
    assert (tree.root / "www/sub/deep.away/secret.txt").read_text() == "landed inside\n"


def test_a_directory_swapped_during_the_walk_is_refused(
        tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the lstat of a component and its open, it becomes a link: refused."""
    original = filesandbox.open_step

    def swap_then_open(name: str, parent: int, info: os.stat_result, shown: str) -> int:
        if name == "deep":
            swap_for_link(tree.root / "www/sub/deep", tree.outside)
        return original(name, parent, info, shown)

    monkeypatch.setattr(filesandbox, "open_step", swap_then_open)
    assert outcome(lambda: write(tree.sandbox(), "www/sub/deep/secret.txt", "pwned")) == \
        "changed-during-operation"


def resolve_then(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> None:
    """Make the first resolution run ``change`` (a concurrent rename...) once it is done."""
    original = Sandbox.resolve
    pending = [change]

    def resolve_then_change(self: Sandbox, *args: Any, **kwargs: Any) -> Any:
        res = original(self, *args, **kwargs)
        while pending:
            pending.pop()()
        return res

    monkeypatch.setattr(Sandbox, "resolve", resolve_then_change)


def remove_deep(root: Path) -> None:
    for name in ("file.txt", "esc4"):
        (root / "www/sub/deep" / name).unlink()
    (root / "www/sub/deep").rmdir()


def sub_made_a_file(root: Path) -> None:
    (root / "www/sub").rename(root / "www/sub.away")
    (root / "www/sub").write_text("now a file")


# (case, what changes after the resolution, the operation, its reason)
RACES: list[tuple[str, Callable[[Path], None], Callable[[Sandbox], Any], str]] = [
    ("read of a file renamed away",
     lambda root: (root / "www/index.html").rename(root / "www/moved.html"),
     lambda sb: read(sb, "www/index.html"), "not-found"),
    ("write of a file renamed away",
     lambda root: (root / "www/index.html").rename(root / "www/moved.html"),
     lambda sb: write(sb, "www/index.html", "x"), "not-found"),
    ("write into a directory removed meanwhile",
     remove_deep, lambda sb: write(sb, "www/sub/deep/new.txt", "x"), "not-found"),
    ("upload into a directory removed meanwhile",
     remove_deep, lambda sb: receive(sb, chunk(
         "www/sub/deep/new.txt", "upload-0100", 0, b"x", final=True,
         sha256=hashlib.sha256(b"x").hexdigest())), "not-found"),
    ("listing of a directory replaced by a file",
     sub_made_a_file, lambda sb: listing(sb, FileListParams(path="www/sub")),
     "changed-during-operation"),
    ("move of a file renamed away",
     lambda root: (root / "www/index.html").rename(root / "www/moved.html"),
     lambda sb: move_path(sb, FileMoveParams(path="www/index.html", destination="i.html")),
     "changed-during-operation"),
]


@pytest.mark.parametrize(("case", "change", "run", "reason"), RACES,
                         ids=[r[0] for r in RACES])
def test_a_concurrent_change_after_the_walk_is_a_refusal(
        tree: Tree, monkeypatch: pytest.MonkeyPatch, case: str, change: Callable[[Path], None],
        run: Callable[[Sandbox], Any], reason: str) -> None:
    sandbox = tree.sandbox()
    resolve_then(monkeypatch, lambda: change(tree.root))
    assert outcome(lambda: run(sandbox)) == reason


def test_a_symlink_changed_during_the_walk_is_a_refusal(
        tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the lstat of a link and its readlink, it is renamed away or made a file."""
    original = filesandbox._Walker.lstat
    changes = {"inside": lambda: (tree.root / "www/inside").rename(tree.root / "www/gone"),
               "absinside": lambda: os.replace(tree.root / "www/index.html",
                                               tree.root / "www/absinside")}

    def lstat_then_change(self: Any, name: str) -> os.stat_result | None:
        info = original(self, name)
        if name in changes:
            changes.pop(name)()
        return info

    monkeypatch.setattr(filesandbox._Walker, "lstat", lstat_then_change)
    sandbox = tree.sandbox()
    with pytest.raises(PathRefused) as gone:
        read(sandbox, "www/inside")
    assert str(gone.value) == ("refused (not-found): www/inside: the symlink www/inside was "
                               "moved or removed during the operation")
    assert outcome(lambda: read(sandbox, "www/absinside")) == "changed-during-operation"


def test_only_file_system_errors_of_a_race_become_refusals() -> None:
    gone = filesandbox.os_refusal(FileNotFoundError(2, "No such file or directory", "x"), "a/x")
    assert gone is not None and str(gone) == (
        "refused (not-found): a/x: No such file or directory (x): it changed during the "
        "operation (moved, removed or replaced)")
    denied = filesandbox.os_refusal(PermissionError(13, "Permission denied"), "a")
    assert denied is not None and denied.reason == "permission-denied"
    assert filesandbox.os_refusal(OSError(28, "No space left on device"), "a") is None


# -- through the registry ------------------------------------------------------------------

def test_the_handlers_are_registered_and_bound(tree: Tree) -> None:
    handlers = bind(OpsContext(tree.settings()))
    now = utcnow()

    async def noop(fraction: float, message: str) -> None:
        return None

    def run(kind: str, **params: Any) -> dict[str, Any]:
        cmd = Command(tenant="default", server_id="web-1", type=kind,
                      params={"type": kind, **params}, actor="olivia", reason="test files",
                      issued_at=now, expires_at=now + timedelta(minutes=1))
        return asyncio.run(handlers[kind](cmd, noop))

    assert run("FILE_WRITE", path="www/hello.txt", content="hi")["created"] is True
    assert run("FILE_READ", path="www/hello.txt")["content"] == "hi"
    assert run("FILE_LIST", path="www", limit=2)["total"] >= 2
    run("FILE_MOVE", path="www/hello.txt", destination="www/hi.txt")
    trash_id = run("FILE_DELETE", path="www/hi.txt")["trash_id"]
    assert run("FILE_RESTORE", trash_id=trash_id)["path"] == "www/hi.txt"
    sha = hashlib.sha256(b"ok").hexdigest()
    assert run("FILE_UPLOAD_CHUNK", path="www/up.txt", upload_id="upload-0009", offset=0,
               data=base64.b64encode(b"ok").decode(), final=True, sha256=sha)["complete"]


def test_a_root_held_too_long_by_another_change_is_busy(
        tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    from agent.ops import base

    holder = os.open(tree.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another process's change, stuck
        waiter = os.open(tree.root, os.O_RDONLY)
        try:
            assert not base.flock_exclusive(waiter, wait_s=0.05)
        finally:
            os.close(waiter)
        monkeypatch.setattr("agent.ops.filesandbox.flock_exclusive",
                            lambda fd: base.flock_exclusive(fd, wait_s=0.05))
        before = snapshot(tree.root)
        assert outcome(lambda: write(tree.sandbox(), "www/new.txt", "x")) == "busy"
        assert snapshot(tree.root) == before
    finally:
        os.close(holder)
    assert write(tree.sandbox(), "www/new.txt", "x")["created"]  # free again


def test_a_write_that_timed_out_while_waiting_changes_nothing_later(tree: Tree) -> None:
    import fcntl

    handlers = bind(OpsContext(tree.settings()))
    now = utcnow()
    cmd = Command(tenant="default", server_id="web-1", type="FILE_WRITE",
                  params={"type": "FILE_WRITE", "path": "www/late.txt", "content": "late"},
                  actor="olivia", reason="test files", issued_at=now,
                  expires_at=now + timedelta(minutes=1))

    async def noop(fraction: float, message: str) -> None:
        return None

    async def scenario() -> None:
        holder = os.open(tree.root, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(holder, fcntl.LOCK_EX)  # another change holds the root
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):  # the executor's timeout, in short
                    await handlers["FILE_WRITE"](cmd, noop)
        finally:
            os.close(holder)  # the thread gets the lock now, and must not write
        await asyncio.sleep(0.5)

    asyncio.run(scenario())
    assert not (tree.root / "www" / "late.txt").exists()


def test_a_missing_path_is_named_once_and_a_missing_parent_is_pointed_at(tree: Tree) -> None:
    sandbox = tree.sandbox()
    with pytest.raises(PathRefused) as missing:
        read(sandbox, "nothing.txt")
    assert str(missing.value) == "refused (not-found): nothing.txt does not exist"
    with pytest.raises(PathRefused) as parent:
        read(sandbox, "nope/file")
    assert str(parent.value) == "refused (not-found): nope/file: nope does not exist"
