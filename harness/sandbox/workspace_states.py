"""The workspace as it was at a moment (its work tree, index, HEAD, branches and tags), the
files and commits between two such moments, and putting one back.

States are recorded from the host, with git configured by the harness, not by the clone:
the agent's `.git/config` (an fsmonitor that lies, a clean filter that runs a program) has
no say in what a state holds. Their objects go to a store beside the clone that the agent
cannot write (mounted read-only in the sandbox). Putting a state back writes the agent's
files, so it runs inside the sandbox, as the agent, and is checked from the host after."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import SandboxError, WorkspaceError
from harness.sandbox.layout import STATES
from harness.sandbox.workspace import (
    COMMIT_FORMAT,
    Commit,
    FileChange,
    Workspace,
    files_between,
    parse_commits,
)

if TYPE_CHECKING:
    from harness.sandbox import Sandbox


_NESTED = re.compile(r"'([^']+/)' does not have a commit checked out")
_MAX_NESTED = 50


@dataclass(frozen=True)
class WorkspaceState:
    """The workspace as it was: the tree of its work tree (untracked files included,
    ignored ones not), its index, HEAD, the branch HEAD named, and every branch and tag."""

    tree: str
    head: str | None
    symbolic: str | None
    refs: dict[str, str] = field(default_factory=dict)
    index: bytes | None = field(default=None, repr=False)
    nested: tuple[str, ...] = ()
    """Repositories nested in the work tree (left out of `tree`)."""


class WorkspaceStates:
    """Records, compares and restores states of one sandbox's workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.store = workspace.states_path

    def record(self) -> WorkspaceState:
        """The workspace's state now."""
        repo = self.workspace.path
        self.workspace.git("rev-parse", "--git-dir")  # refuses a replaced .git
        index = _read_regular(repo / ".git" / "index")
        scratch = self.store / "index"
        # Start from the clone's index: only files whose size or time changed are hashed.
        if index is not None:
            scratch.write_bytes(index)
        else:
            scratch.unlink(missing_ok=True)
        nested = self._add_all(scratch)
        tree = self._git("write-tree", index=scratch)
        refs = {}
        for line in self.workspace.git("for-each-ref", "--format=%(refname) %(objectname)",
                                       "refs/heads", "refs/tags").splitlines():
            name, _, sha = line.rpartition(" ")
            refs[name] = sha
        symbolic = self.workspace.git("symbolic-ref", "-q", "HEAD", check=False) or None
        head = self.workspace.git("rev-parse", "-q", "--verify", "HEAD^{commit}",
                                  check=False) or None
        return WorkspaceState(tree, head, symbolic, refs, index, tuple(nested))

    def _add_all(self, scratch: Path) -> list[str]:
        """Every file of the work tree into the scratch index. A repository nested in the
        work tree holds files that are not the workspace's (they cannot be committed to it
        as files): it is left out, as git leaves it out of a commit."""
        exclude = self.store / "info" / "exclude"
        exclude.parent.mkdir(exist_ok=True)
        nested: list[str] = []
        fresh = False
        while True:
            exclude.write_text("".join(f"/{path}\n" for path in nested))
            try:
                self._git("add", "-A", "--", ".", index=scratch)
                return nested
            except SandboxError as exc:
                match = _NESTED.search(str(exc))
                if match and len(nested) < _MAX_NESTED:
                    nested.append(match.group(1))
                elif not fresh:
                    fresh = True
                    scratch.unlink(missing_ok=True)  # an index git cannot read: hash all
                else:
                    raise

    def files_between(self, before: WorkspaceState, after: WorkspaceState) -> list[FileChange]:
        """The files that differ between two states' work trees."""
        if before.tree == after.tree:
            return []
        return files_between(self._git, before.tree, after.tree)

    def commits_between(self, before: WorkspaceState, after: WorkspaceState) -> list[Commit]:
        """Commits reachable from the refs after and not from those before, each with the
        branch (or tag, or a detached HEAD) it was found on."""
        fresh = [name for name, sha in sorted(after.refs.items())
                 if before.refs.get(name) != sha]
        if after.symbolic is None and after.head and after.head != before.head:
            fresh.append("HEAD")
        if not fresh:
            return []
        known = sorted({*before.refs.values(), *([before.head] if before.head else [])})
        log = self.workspace.git("log", COMMIT_FORMAT, *fresh, *(f"^{tip}" for tip in known),
                                 "--")
        return [replace(c, ref=c.ref.removeprefix("refs/heads/").removeprefix("refs/"))
                for c in parse_commits(log)]

    def restore(self, sandbox: Sandbox, state: WorkspaceState) -> bool:
        """Put the workspace back as `state` recorded it: work tree, index, HEAD, branches
        and tags (files made since are removed; ignored ones stay). True when a fresh
        record from the host shows it back; False when something kept it from being so."""
        refs = "\n".join(f"{name} {sha}" for name, sha in sorted(state.refs.items()))
        result = sandbox.exec(["bash", "-c", _RESTORE, "restore", state.tree,
                               state.head or "-", state.symbolic or "-", refs,
                               "keep" if state.index is not None else "drop",
                               "".join(f"/{path}\n" for path in state.nested)],
                              stdin=state.index or b"")
        if not result.ok:
            return False
        now = self.record()
        return (now.tree, now.head, now.symbolic, now.refs) == (
            state.tree, state.head, state.symbolic, state.refs)

    def _git(self, *args: str, index: Path | None = None) -> str:
        try:
            return self.workspace.isolated(*args, index=index, work_tree=index is not None)
        except WorkspaceError as exc:
            raise SandboxError(f"cannot record the workspace's state: {exc}") from None


def _read_regular(path: Path) -> bytes | None:
    """The bytes of a regular file the agent may have replaced (never through a link)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read()


_RESTORE = rf"""
set -e
tree=$1 head=$2 symbolic=$3 refs=$4 index=$5 nested=$6
# Neither the agent's user configuration nor its hooks or fsmonitor have a say.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
git() {{ command git -c core.hooksPath=/dev/null -c core.fsmonitor=false "$@"; }}
git for-each-ref --format='%(refname)' refs/heads refs/tags | while read -r ref; do
  printf '%s\n' "$refs" | grep -q "^$ref " || git update-ref -d "$ref"
done
printf '%s\n' "$refs" | while read -r ref sha; do
  [ -n "$ref" ] && git update-ref "$ref" "$sha"
done
if [ "$symbolic" != - ]; then git symbolic-ref HEAD "$symbolic"
elif [ "$head" != - ]; then git update-ref --no-deref HEAD "$head"; fi
# The work tree, through a repository of the harness's own (as the state was recorded):
# the clone's config, attributes' filters and info/exclude do not apply.
private=$(mktemp -d)
trap 'rm -rf "$private"' EXIT
git init -q --bare "$private/git"
{{ printf '%s\n' "$PWD/.git/objects" {STATES}/objects
   printf '%s\n' "${{GIT_ALTERNATE_OBJECT_DIRECTORIES:-}}" | tr ':' '\n'; }} \
  | grep . > "$private/git/objects/info/alternates"
mkdir -p "$private/git/info" && printf '%s' "$nested" > "$private/git/info/exclude"
# -ff: a repository the action nested in the work tree goes too; those before it stay.
GIT_DIR="$private/git" GIT_WORK_TREE="$PWD" GIT_INDEX_FILE="$private/index" \
  sh -c 'git read-tree "$1" && git checkout-index -a -f -q && git clean -ffdq' tree "$tree"
if [ "$index" = keep ]; then cat > .git/index.harness && mv -f .git/index.harness .git/index
else rm -f .git/index; fi
"""
