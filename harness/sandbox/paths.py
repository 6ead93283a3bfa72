"""Paths as the agent's container sees them, and glob rules over them."""

from __future__ import annotations

import functools
import posixpath
import re

from harness.sandbox.layout import HOME, WORKSPACE


def resolve(path: str, cwd: str = WORKSPACE) -> str:
    """The absolute, lexically normalised form of `path` (`~` is the agent's home)."""
    if path == "~" or path.startswith("~/"):
        path = HOME + path[1:]
    if not path.startswith("/"):
        path = posixpath.join(cwd, path)
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/")  # normpath keeps a leading '//'


def inside(path: str, folder: str) -> bool:
    """Whether the resolved `path` is `folder` or below it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def relative_to_workspace(path: str) -> str | None:
    """`path` relative to the workspace root ('' for the root), or None when outside."""
    if path == WORKSPACE:
        return ""
    if inside(path, WORKSPACE):
        return path[len(WORKSPACE) + 1 :]
    return None


@functools.lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """`**` matches across folders, `*` and `?` within one; a pattern ending in `/` or
    naming a folder also matches everything below it."""
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
            continue
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char)))
        index += 1
    return re.compile("".join(out).rstrip("/") + "(?:/.*)?$")


def matches(path: str, pattern: str) -> bool:
    """Whether the resolved `path` matches `pattern`: absolute patterns match absolute
    paths, relative ones match paths relative to the workspace root."""
    if pattern.startswith("/"):
        return _glob_regex(pattern).match(path) is not None
    relative = relative_to_workspace(path)
    return relative is not None and _glob_regex(pattern.removeprefix("./")).match(relative) \
        is not None


def affects(path: str, pattern: str) -> bool:
    """Whether changing `path` recursively (deleting or moving a folder) touches something
    `pattern` matches: the path matches, or the pattern's fixed part lies below it."""
    if matches(path, pattern):
        return True
    fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0].rstrip("/")
    if not fixed:
        return inside(path, WORKSPACE) and not pattern.startswith("/")
    target = fixed if fixed.startswith("/") else posixpath.join(WORKSPACE, fixed)
    return inside(target, path)
