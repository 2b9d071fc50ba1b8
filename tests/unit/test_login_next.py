"""Where the sign-in page sends you afterwards: only a path of this site."""

from __future__ import annotations

import pytest

from ui.app import _safe_next


@pytest.mark.parametrize("value", ["/", "/approvals", "/servers/web-1/commands?x=1#top",
                                   "/audit?action=command.*"])
def test_paths_of_this_site_are_kept(value: str) -> None:
    assert _safe_next(value) == value


@pytest.mark.parametrize("value", [None, "", "approvals", "//evil.example/", "/\\evil.example",
                                   "/\t/evil.example", "https://evil.example/",
                                   "javascript:alert(1)", "/" + "a" * 2001, "/a\nb"])
def test_anything_else_goes_home(value: str | None) -> None:
    assert _safe_next(value) == "/"
