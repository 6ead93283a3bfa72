"""A real headless browser for the tests of harness's HTML pages: Debian's `chromium`
(installed by ./setup), driven from the command line (`--screenshot`, `--dump-dom`), with
no network: every page must be self-contained."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
          "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
          "--disable-background-networking", "--disable-sync", "--mute-audio",
          # Nothing outside the page's own file may load: a request to the network fails.
          "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]


def chromium() -> str:
    """The browser binary; a missing one fails the test (./setup installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is missing: run ./setup (it installs Debian's chromium package)"
    return found


def _run(args: list[str], page: Path) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="harness-chromium-") as profile:
        return subprocess.run([chromium(), *_FLAGS, f"--user-data-dir={profile}", *args,
                               page.resolve().as_uri()], capture_output=True, text=True,
                              timeout=120, check=False)


def screenshot(page: Path, png: Path, *, width: int = 1400, height: int = 1800) -> Path:
    """A screenshot of `page` as the browser renders it."""
    done = _run([f"--screenshot={png}", f"--window-size={width},{height}"], page)
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", done.stderr[-2000:]
    return png


@dataclass
class Element:
    """One element of the rendered DOM: its tag, attributes and text."""

    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find_all(self, tag: str | None = None, *, cls: str | None = None,
                 **attrs: str) -> list[Element]:
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and (cls is None or cls in child.classes()) \
                    and all(child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                found.append(child)
            found += child.find_all(tag, cls=cls, **attrs)
        return found

    def by_id(self, element_id: str) -> Element:
        found = self.find_all(id=element_id)
        assert len(found) == 1, f"no single element with id {element_id!r}"
        return found[0]

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
         "source", "track", "wbr"}


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in _VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(Element("#text", {}, data))


def dom(page: Path) -> Element:
    """The DOM of `page` after the browser loaded and rendered it."""
    done = _run(["--dump-dom"], page)
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-2000:]
    tree = _Tree()
    tree.feed(done.stdout)
    return tree.root
