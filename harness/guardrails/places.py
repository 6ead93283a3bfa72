"""Where an action runs: the sandbox's own layout, or a real host's project, home and
temporary folder seen as that layout.

The rules judge paths in the sandbox's terms (`/workspace`, `/home/agent`, `/tmp`). In a
sandbox those are the real folders. A pre-tool hook on a real machine runs commands in
the user's project, with `~` meaning the user's home: the shell is read there (its `cd`,
`~`, `$HOME`, `$PWD` are the host's), and each path it names is mapped onto the layout
before it is judged, so the project is the workspace and the user's home is the home.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from harness.sandbox.layout import HOME, TMP, WORKSPACE
from harness.sandbox.paths import inside


@dataclass(frozen=True)
class Places:
    """The folders commands run among, in the space they run in."""

    workspace: str = WORKSPACE
    home: str = HOME
    tmp: str = TMP
    user: str = "agent"
    on_host: bool = False
    """A real machine: the home holds the user's own files, not a throwaway sandbox's."""

    @classmethod
    def host(cls, project: str, home: str, *, tmp: str | None = None, user: str | None = None
             ) -> Places:
        """A real machine whose project folder is `project` and whose user's home is
        `home`. A project that holds the home (the home itself, or `/`) is no workspace:
        the home keeps its protections and nothing is mapped onto the workspace."""
        project, home = _normal(project), _normal(home or "/")
        if inside(home, project):
            project = _NOWHERE
        return cls(workspace=project, home=home, tmp=_normal(tmp or TMP),
                   user=user or posixpath.basename(home) or "user", on_host=True)

    def view(self, path: str) -> str:
        """The absolute `path` in the sandbox's terms (the same path in a sandbox). On a
        host, a path that merely shares the workspace's name is elsewhere."""
        if not self.on_host:
            return path
        for real, seen in ((self.workspace, WORKSPACE), (self.home, HOME), (self.tmp, TMP)):
            if real != "/" and inside(path, real):
                return seen + path[len(real):]
        return _ELSEWHERE + path if inside(path, WORKSPACE) else path

    def show(self, text: str) -> str:
        """A reason written in the sandbox's terms, in the host's (the same text in a
        sandbox)."""
        if not self.on_host:
            return text
        real = {WORKSPACE: self.workspace, HOME: self.home, TMP: self.tmp}

        def swap(match: re.Match[str]) -> str:
            return match.group(2) if match.group(1) else real[match.group(2)]

        return _SANDBOX_NAMES.sub(swap, text).replace("the agent home", "the home")

    def user_home(self, user: str) -> str:
        """The home of `user` (`~user`): this user's own, or the conventional folder."""
        if user == self.user:
            return self.home
        if user == "root":
            return "/root"
        return posixpath.join(posixpath.dirname(self.home.rstrip("/")) or "/home", user)


_ELSEWHERE = "/.host"
"""Prefixes a host's path named like the sandbox's workspace, which is not the project."""
_SANDBOX_NAMES = re.compile(f"({re.escape(_ELSEWHERE)})?({re.escape(WORKSPACE)}|"
                            f"{re.escape(HOME)}|{re.escape(TMP)})(?![\\w.-])")
_NOWHERE = "/nonexistent/harness-workspace"
"""Stands for the workspace of a host whose project folder holds the home: no path is in it."""

SANDBOX = Places()
"""The sandbox's own layout: every path is judged as it is."""


def _normal(path: str) -> str:
    return "/" + posixpath.normpath(path).lstrip("/") if path else "/"
