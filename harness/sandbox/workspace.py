"""The throwaway git workspace: a clone of the target repo that the agent may wreck.

The clone borrows the origin's objects through git's alternates (`clone --shared`):
it costs milliseconds however large the origin is, and it never writes into the
origin, whose object folders are mounted read-only into the container. The host
path of those folders means nothing inside the container, so the clone keeps no
alternates file: each side names them in GIT_ALTERNATE_OBJECT_DIRECTORIES instead. The
workspace is agent-controlled, so every host-side git command here runs with
hooks, fsmonitor and external diff/textconv programs switched off: a planted
`.git/config` must not run anything on the host.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import SandboxError, WorkspaceError
from harness.home import state_dir
from harness.sandbox import overlay
from harness.sandbox.layout import OBJECTS, STATES
from harness.sandbox.pristine import pristine_checkout

AGENT_UID = 1000
AGENT_GID = 1000

# Options that neutralise repository-level configuration an agent could plant.
SAFE_GIT = [
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "core.sshCommand=false",
    "-c", "safe.directory=*",
    "-c", "protocol.allow=never",
    # What the host writes from the clone (a bundle) is compressed as git's defaults say,
    # whatever the agent configured: `pack.compression 0` would make a few megabytes of
    # zeros in the sandbox hundreds on the host.
    "-c", "core.compression=-1", "-c", "pack.compression=-1", "-c", "core.bigFileThreshold=512m",
    "-c", "pack.packSizeLimit=0",
    # Paths as they are (not C-quoted), and log messages in UTF-8 whatever the agent set.
    "-c", "core.quotePath=false", "-c", "i18n.logOutputEncoding=UTF-8",
]
# External diff programs and textconv filters come from agent-writable config.
PLAIN_DIFF = ["--no-ext-diff", "--no-textconv", "--no-color", "--no-renames"]
COMMIT_FORMAT = "--format=%H%x00%an%x00%ae%x00%S%x00%B%x1e"
"""`git log` format that `parse_commits` reads."""
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Commit:
    """A commit the agent made since the base."""

    sha: str
    author: str
    email: str
    message: str
    ref: str = ""
    """The branch or tag (as `git log` was given it) the commit was found on."""


@dataclass(frozen=True)
class FileChange:
    """One file changed between two states of the workspace: lines added and removed, how
    (`A` added, `M` modified, `D` deleted, `T` type changed) and its modes before and after
    (`100644`, `100755` executable, `120000` a link; None where it did not exist)."""

    path: str
    added: int
    removed: int
    binary: bool = False
    status: str = "M"
    mode: str | None = None
    old_mode: str | None = None

    @property
    def executable(self) -> bool:
        """The file is executable after the change."""
        return self.mode == "100755"


@dataclass(frozen=True)
class WorkspaceChanges:
    """Everything committed in the workspace since the base."""

    base: str
    head: str
    commits: list[Commit] = field(default_factory=list)
    files: list[FileChange] = field(default_factory=list)
    diff: str = ""

    @property
    def commit_count(self) -> int:
        """Commits made since the base, on every branch and tag of the workspace."""
        return len(self.commits)

    @property
    def lines_added(self) -> int:
        """Lines added over all files."""
        return sum(change.added for change in self.files)

    @property
    def lines_removed(self) -> int:
        """Lines removed over all files."""
        return sum(change.removed for change in self.files)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form with the totals."""
        data = asdict(self)
        data.update(
            commit_count=self.commit_count,
            files_changed=len(self.files),
            lines_added=self.lines_added,
            lines_removed=self.lines_removed,
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkspaceChanges:
        """The inverse of `to_dict` (the totals are derived, not read)."""
        return cls(data["base"], data["head"], [Commit(**c) for c in data.get("commits", [])],
                   [FileChange(**{k: v for k, v in f.items() if k != "executable"})
                    for f in data.get("files", [])], data.get("diff", ""))


class Workspace:
    """A throwaway clone of `origin` at `ref`, removed by `remove()` (or leaving `with`)."""

    def __init__(self, origin: str | Path, ref: str | None = None, *, name: str,
                 owner: tuple[int, int] | None = None,
                 cow: Literal["auto", "off"] = "auto") -> None:
        self.origin = str(origin)
        self.cow = cow
        """`auto`: a copy-on-write view of a shared pristine checkout where the host can
        mount one; `off`: always a clone with its own checkout."""
        self.view: Literal["overlay", "clone"] = "clone"
        """How the work tree was made: `overlay` (a copy-on-write view over the pristine
        checkout of the base) or `clone` (a checkout of its own)."""
        self.view_detail = ""
        """Why `view` is what it is (which pristine checkout, or why there is none)."""
        self.pristine: Path | None = None
        """The pristine checkout's work tree under the view (the overlay's lower layer)."""
        self.owner = owner or workspace_owner()
        """The uid and gid the agent runs as, who must own the clone."""
        self.ref = ref
        self.name = name
        self.path = state_dir("workspaces") / name / "repo"
        self.base = ""
        self.branch = ""
        self._original_tips: list[str] = []
        self._object_stores: list[Path] = []
        self._isolated: IsolatedGit | None = None

    # ------------------------------------------------------------ lifecycle

    def create(self) -> Workspace:
        """Clone the origin and check out the base; the clone is owned by the agent's uid.
        The work tree is a copy-on-write view of the base's shared pristine checkout where
        the host allows it (see `view`), else a checkout of its own."""
        source = self._local_source()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        (self.path.parent / "owner.pid").write_text(str(os.getpid()))
        if self.cow == "off":
            self.view_detail = "sandbox.workspace_cow is off"
        elif not overlay.support().available:
            self.view_detail = overlay.support().detail
        else:
            try:
                self._create_view(source)
                return self
            except (WorkspaceError, SandboxError) as exc:
                self.detach()
                shutil.rmtree(self.cow_path, ignore_errors=True)
                self._object_stores, self.pristine = [], None
                self.view_detail = f"the copy-on-write view failed ({exc})"
        self._create_clone(source)
        return self

    def _create_clone(self, source: Path) -> None:
        """Today's way: a clone whose work tree is checked out file by file."""
        _plain_git(["clone", "-q", "--shared", "--no-checkout", "--", str(source),
                    str(self.path)], f"cannot clone {self.origin}")
        self.states_path.mkdir(mode=0o755, exist_ok=True)
        self._object_stores = borrowed_stores(self.path / ".git" / "objects")
        (self.path / ".git" / "objects" / "info" / "alternates").unlink(missing_ok=True)
        self.base = self._resolve_base()
        self.branch = self._branch_name()
        self._git("checkout", "-q", "-B", self.branch, self.base)
        self._original_tips = sorted(set(self._git("for-each-ref", "--format=%(objectname)").split()))
        if os.geteuid() == 0 and self.owner != (os.geteuid(), os.getegid()):
            _chown_tree(self.path, *self.owner)
        self.view = "clone"
        self.view_detail = f"a checkout of its own ({self.view_detail})" if self.view_detail \
            else "a checkout of its own"

    def _create_view(self, source: Path) -> None:
        """A clone without a work tree in the upper layer, over the base's pristine
        checkout (built once per revision) as the read-only lower layer, mounted at `path`.
        git sees an ordinary work tree: the pristine index's stat data holds through the
        overlay, so `git status` finds it clean without reading a file."""
        upper = self.cow_path / "upper"
        _plain_git(["clone", "-q", "--shared", "--no-checkout", "--", str(source), str(upper)],
                   f"cannot clone {self.origin}")
        self.states_path.mkdir(mode=0o755, exist_ok=True)
        self._object_stores = borrowed_stores(upper / ".git" / "objects")
        (upper / ".git" / "objects" / "info" / "alternates").unlink(missing_ok=True)
        self.base = self._resolve_base(upper)
        head = run_git(upper, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        self.branch = self._branch_name(upper, head=head)
        # The user's git configuration shapes a checkout (autocrlf, smudge filters): a
        # change of it makes another pristine checkout, as a fresh checkout would differ.
        settings = subprocess.run(["git", "config", "--global", "--list"], capture_output=True,
                                  text=True, env=_git_environment(None), check=False).stdout
        with pristine_checkout(source, self.base, self.owner, settings=settings,
                               build=lambda folder: self._build_pristine(source, folder)
                               ) as checkout:
            shutil.copyfile(checkout.index, upper / ".git" / "index")
            overlay.mount_view(checkout.tree, upper, self.cow_path / "work", self.path)
        self.view, self.pristine = "overlay", checkout.tree
        self.view_detail = f"a copy-on-write view of pristine checkout {checkout.key}"
        self._switch_without_checkout(head or self._git("rev-parse", "HEAD", check=False))
        if os.geteuid() == 0 and self.owner != (os.geteuid(), os.getegid()):
            os.chown(self.path, *self.owner, follow_symlinks=False)  # the upper layer's root
            _chown_tree(self.path / ".git", *self.owner)  # in the upper layer only

    def _switch_without_checkout(self, before: str) -> None:
        """What `git checkout -q -B <branch> <base>` does when the index and the work tree
        already hold the base (they are the pristine checkout's): point the branch at the
        base and HEAD at the branch, with the same reflog messages, reading no file.
        `before` is what HEAD names now (its branch, or the base it is detached at)."""
        branch = f"refs/heads/{self.branch}"
        refs: dict[str, str] = {}
        for line in self._git("for-each-ref", "--format=%(refname) %(objectname)").splitlines():
            name, target = line.split(" ", 1)
            refs[name] = target
        self._git("update-ref", "-m", f"branch: {'Reset to' if branch in refs else 'Created from'} "
                  f"{self.base}", branch, self.base)
        self._git("symbolic-ref", "-m", f"checkout: moving from {before} to {self.branch}",
                  "HEAD", branch)
        # Only the branch moved: the tips are the others' and the base.
        refs[branch] = self.base
        self._original_tips = sorted(set(refs.values()))

    def _build_pristine(self, source: Path, folder: Path) -> None:
        """Check the base out into `folder/tree`, owned by the agent, and leave its index,
        refreshed after the chown, at `folder/index` (no `.git` stays in the tree)."""
        tree, git_dir = folder / "tree", folder / "git"
        _plain_git(["clone", "-q", "--shared", "--no-checkout", f"--separate-git-dir={git_dir}",
                    "--", str(source), str(tree)], f"cannot clone {self.origin}")
        # An index that is one file: no split index or untracked cache pointing into .git.
        plain_index = ["-c", "core.splitIndex=false", "-c", "core.untrackedCache=false"]
        run_git(tree, *plain_index, "checkout", "-q", "--detach", self.base)
        if os.geteuid() == 0 and self.owner != (os.geteuid(), os.getegid()):
            _chown_tree(tree, *self.owner)
        # Written in a later second than any file, the index has no "racily clean" entry
        # that git would have to re-read in every sandbox.
        time.sleep(max(0.0, math.floor(time.time()) + 1.01 - time.time()))
        run_git(tree, *plain_index, "update-index", "-q", "--force-write-index", "--refresh")
        os.rename(git_dir / "index", folder / "index")
        (tree / ".git").unlink()
        shutil.rmtree(git_dir)

    def remove(self) -> None:
        """Delete the clone (unmounting its view first); the origin is not touched."""
        self.detach()
        shutil.rmtree(self.path.parent, ignore_errors=True)

    def detach(self) -> None:
        """Unmount the copy-on-write view, if any (before the disk under it goes)."""
        overlay.unmount_view(self.path)

    @property
    def cow_path(self) -> Path:
        """The view's upper layer and overlay work folder: beside the clone, so on the
        sandbox's own disk when it has one."""
        return self.path.parent / "cow"

    def __enter__(self) -> Workspace:
        try:
            return self.create()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    # ------------------------------------------------------------- mounting

    def container_mounts(self) -> dict[str, str]:
        """Borrowed object folders and the store of recorded states (host path -> path in
        the container), to mount read-only."""
        return {**{str(store): f"{OBJECTS}/{index}"
                   for index, store in enumerate(self._object_stores)},
                str(self.states_path): STATES}

    @property
    def states_path(self) -> Path:
        """Where recorded states of the workspace are kept: beside the clone, out of the
        agent's reach (see workspace_states)."""
        return self.path.parent / "states"

    @property
    def object_stores(self) -> list[Path]:
        """The object folders the clone borrows from."""
        return list(self._object_stores)

    def container_environment(self) -> dict[str, str]:
        """Environment that lets git inside the container find the borrowed objects."""
        if not self._object_stores:
            return {}
        return {"GIT_ALTERNATE_OBJECT_DIRECTORIES": ":".join(
            f"{OBJECTS}/{index}" for index in range(len(self._object_stores)))}

    # -------------------------------------------------------------- reading

    def head(self) -> str:
        """The commit the workspace's HEAD points at."""
        return self._git("rev-parse", "--verify", "HEAD^{commit}")

    def file_at(self, commit: str, path: str) -> bytes:
        """The bytes of `path` as `commit` holds it (b"" when it does not)."""
        self._check_layout()
        done = subprocess.run(["git", *SAFE_GIT, "-C", str(self.path), "cat-file", "blob",
                               f"{commit}:{path}"], capture_output=True, check=False,
                              env=_git_environment(self._object_stores))
        return done.stdout if done.returncode == 0 else b""

    def bundle(self, path: Path) -> bool:
        """Write the commits of HEAD since the base to a git bundle at `path` (False, and no
        file, when there are none): the change set keeps them after the clone is gone."""
        if self.head() == self.base:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        self.git("bundle", "create", str(path), "HEAD", f"^{self.base}")
        return True

    def current_branch(self) -> str | None:
        """The branch checked out now (the agent may have switched); None when detached."""
        head = self._git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return head or None

    def commit_count(self) -> int:
        """Commits made since the base on every branch and tag (cheaper than `changes()`)."""
        self._check_layout()
        exclude = [f"^{tip}" for tip in self._original_tips] or [f"^{self.base}"]
        return int(self._git("rev-list", "--count", "--branches", "--tags", "HEAD", *exclude,
                             "--"))

    def changes(self) -> WorkspaceChanges:
        """Commits, files, line counts and the unified diff since the base."""
        self._check_layout()
        head = self.head()
        exclude = [f"^{tip}" for tip in self._original_tips] or [f"^{self.base}"]
        commits = parse_commits(self._git("log", COMMIT_FORMAT, "--branches", "--tags", "HEAD",
                                          *exclude, "--"))
        if head == self.base:  # a commit against itself: no file differs
            return WorkspaceChanges(self.base, head, commits, [], "")
        files = self.files_between(self.base, head)
        diff = self.isolated("diff", *PLAIN_DIFF, self.base, head)
        return WorkspaceChanges(self.base, head, commits, files, diff)

    def files_between(self, old: str, new: str) -> list[FileChange]:
        """The files that differ between two commits or trees, with lines, status, modes."""
        self._check_layout()
        return files_between(self.isolated, old, new)

    @property
    def isolated(self) -> IsolatedGit:
        """git over the harness's own repository beside the clone (see IsolatedGit), which
        borrows the clone's objects; it keeps the recorded workspace states too."""
        if self._isolated is None:
            self._isolated = IsolatedGit(self.states_path, [self.path / ".git" / "objects",
                                                            *self._object_stores], self.path)
        return self._isolated

    # ------------------------------------------------------------- internals

    def _local_source(self) -> Path:
        """A local repository to clone from: the origin itself or a cached mirror of a URL."""
        candidate = Path(self.origin).expanduser()
        if candidate.exists():
            return _repository_at(candidate, self.origin)
        if "://" not in self.origin and not re.match(r"^[\w.-]+@[\w.-]+:", self.origin):
            raise WorkspaceError(f"repository {self.origin} does not exist")
        return _mirror(self.origin)

    def _resolve_base(self, repo: Path | None = None) -> str:
        ref = self.ref or "HEAD"
        for candidate in (ref, f"origin/{ref}", f"refs/tags/{ref}"):
            try:
                return run_git(repo or self.path, "rev-parse", "--verify", "--quiet",
                               f"{candidate}^{{commit}}", alternates=self._object_stores)
            except WorkspaceError:
                continue
        raise WorkspaceError(f"{self.origin} has no branch, tag or commit {ref!r}")

    def _branch_name(self, repo: Path | None = None, *, head: str | None = None) -> str:
        """The branch the sandbox works on: the one `ref` names, else the one checked out
        (`head`, when the caller read it already), else harness-work."""
        if self.ref and not _SHA.match(self.ref):
            try:
                run_git(repo or self.path, "rev-parse", "--verify", "--quiet",
                        f"refs/remotes/origin/{self.ref}", alternates=self._object_stores)
                return self.ref
            except WorkspaceError:
                pass
        if not self.ref:
            if head is None:
                head = run_git(repo or self.path, "symbolic-ref", "--quiet", "--short", "HEAD",
                               check=False, alternates=self._object_stores)
            if head:
                return head
        return "harness-work"

    def _check_layout(self) -> None:
        dot_git = self.path / ".git"
        if dot_git.is_symlink() or not dot_git.is_dir():
            raise WorkspaceError(
                f"the workspace's .git was replaced by the agent ({dot_git}); refusing to read it"
            )

    def git(self, *args: str, check: bool = True) -> str:
        """Run a read-only git command on the clone from the host (planted configuration
        neutralised); never use it for commands that touch the work tree."""
        self._check_layout()
        return self._git(*args, check=check)

    def _git(self, *args: str, check: bool = True) -> str:
        return run_git(self.path, *args, check=check, alternates=self._object_stores)


def parse_commits(log: str) -> list[Commit]:
    """Commits from `git log` output in COMMIT_FORMAT."""
    commits = []
    for record in log.split("\x1e"):
        record = record.strip("\n")
        if record:
            sha, author, email, ref, message = record.split("\x00", 4)
            commits.append(Commit(sha, author, email, message.strip(), ref))
    return commits


def files_between(git: Callable[..., str], old: str, new: str) -> list[FileChange]:
    """The files that differ between two commits or trees of a repository (`git` runs git
    there and returns its output): lines added and removed, status and modes. Paths come
    NUL-separated and unquoted: a name with a tab, a newline or a non-ASCII letter is
    matched against globs as it is, not as git would quote it."""
    raw = git("diff", *PLAIN_DIFF, "--raw", "-z", "--abbrev=40", old, new).split("\0")
    numstat = {change.path: change for change in
               parse_numstat(git("diff", *PLAIN_DIFF, "--numstat", "-z", old, new))}
    files = []
    for meta, path in zip(raw[0::2], raw[1::2], strict=False):
        if not meta.startswith(":"):
            continue
        old_mode, new_mode, _old, _new, status = meta.lstrip(":").split()[:5]
        counted = numstat.get(path, FileChange(path, 0, 0))
        files.append(FileChange(path, counted.added, counted.removed, counted.binary,
                                status[0], None if new_mode == "000000" else new_mode,
                                None if old_mode == "000000" else old_mode))
    return files


def parse_numstat(numstat: str) -> list[FileChange]:
    """Files from `git diff --numstat -z` output (binary files count no lines)."""
    files = []
    for entry in numstat.split("\0"):
        if entry.count("\t") < 2:
            continue
        added, removed, path = entry.lstrip("\n").split("\t", 2)
        binary = added == "-"
        files.append(FileChange(path, 0 if binary else int(added), 0 if binary else int(removed),
                                binary))
    return files


def workspace_owner() -> tuple[int, int]:
    """Who the agent runs as: the image's `agent` (uid 1000) when the harness runs as root
    (it can hand the clone over), else the harness's own user, who owns the clone already
    (a developer's laptop, where the uid is often not 1000)."""
    if os.geteuid() == 0:
        return AGENT_UID, AGENT_GID
    return os.geteuid(), os.getegid()


def run_git(
    repo: Path, *args: str, check: bool = True, alternates: list[Path] | None = None
) -> str:
    """Run git in `repo` with agent-planted configuration neutralised; return stdout."""
    done = subprocess.run(
        ["git", *SAFE_GIT, "-C", str(repo), *args],
        capture_output=True, env=_git_environment(alternates), check=False,
    )
    if check and done.returncode != 0:
        raise WorkspaceError(
            f"git {' '.join(args)} failed in {repo}: "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    return done.stdout.decode(errors="replace").strip()


class IsolatedGit:
    """git over a bare repository of the harness's own that borrows a clone's objects: no
    config, hooks, attributes (committed `.gitattributes` or `info/attributes`) or
    excludes of the clone apply, so what it says of two commits or trees (their files,
    lines and diff) is what they hold, however the agent set the clone up. With a work
    tree it reads that tree's files the same way."""

    def __init__(self, git_dir: Path, objects: list[Path], work_tree: Path | None = None
                 ) -> None:
        self.git_dir, self.objects, self.work_tree = git_dir, objects, work_tree
        self._ready = False

    def __call__(self, *args: str, index: Path | None = None, work_tree: bool = False) -> str:
        """Run git; with `work_tree`, over the clone's files (else over objects alone, where
        no `.gitattributes` of the agent's applies)."""
        self._prepare()
        env = _isolated_environment()
        if index is not None:
            env["GIT_INDEX_FILE"] = str(index)
        tree = ["--work-tree", str(self.work_tree)] if work_tree and self.work_tree else []
        done = subprocess.run(["git", *SAFE_GIT, "-c", "core.untrackedCache=false",
                               "--git-dir", str(self.git_dir), *tree, *args],
                              capture_output=True, env=env, check=False,
                              cwd=self.work_tree if tree else self.git_dir)
        if done.returncode != 0:
            raise WorkspaceError(f"git {args[0]} failed: "
                                 f"{done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode(errors="replace").strip()

    def _prepare(self) -> None:
        if self._ready:
            return
        if not (self.git_dir / "HEAD").exists():
            self.git_dir.mkdir(parents=True, exist_ok=True)
            # No template: the harness's own repository needs no hooks or samples.
            subprocess.run(["git", "init", "-q", "--bare", "--template=", str(self.git_dir)],
                           check=True, capture_output=True, env=_isolated_environment())
        (self.git_dir / "objects" / "info" / "alternates").write_text(
            "".join(f"{store}\n" for store in self.objects))
        self._ready = True


def _isolated_environment() -> dict[str, str]:
    # Neither the host's user nor system configuration: the harness's git, nothing else.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0",
            "HOME": "/nonexistent"}


def _git_environment(alternates: list[Path] | None) -> dict[str, str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
    if alternates:
        env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = ":".join(str(p) for p in alternates)
    return env


def borrowed_stores(objects: Path) -> list[Path]:
    """The object folders `objects` borrows from through alternates, transitively."""
    stores: list[Path] = []
    pending = [objects]
    while pending:
        alternates = pending.pop() / "info" / "alternates"
        if not alternates.is_file():
            continue
        for line in alternates.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                store = (alternates.parent.parent / line).resolve()
                if store not in stores:
                    stores.append(store)
                    pending.append(store)
    return stores


def _mirror(url: str) -> Path:
    """A bare mirror of a remote repository, cached by URL and fetched before each use."""
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    mirror = state_dir("mirrors") / f"{key}.git"
    if mirror.exists():
        _plain_git(["-C", str(mirror), "fetch", "-q", "--prune", "origin"], f"cannot fetch {url}")
    else:
        _plain_git(["clone", "-q", "--mirror", "--", url, str(mirror)], f"cannot fetch {url}")
    return mirror


def _plain_git(args: list[str], failure: str, env: Mapping[str, str] | None = None) -> str:
    """Run git on the user's own repositories (their configuration applies, as to any git
    command of theirs); stdout, or WorkspaceError saying `failure` and git's reason."""
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False,
                          env=dict(env) if env is not None else None)
    if done.returncode != 0:
        raise WorkspaceError(f"{failure}: {done.stderr.strip() or f'git exited {done.returncode}'}")
    return done.stdout


def _repository_at(folder: Path, origin: str) -> Path:
    """The repository whose top (work tree, or git folder of a bare one) is `folder`;
    a folder inside a repository is not one."""
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(folder.resolve().parent)}
    # One call: a bare repository answers the first two and then fails the third.
    done = subprocess.run(["git", "-C", str(folder), "rev-parse", "--is-bare-repository",
                           "--absolute-git-dir", "--show-toplevel"],
                          capture_output=True, text=True, env=env, check=False)
    answers = done.stdout.split("\n")
    bare = answers[0]
    if len(answers) < 2 or not answers[1] or (bare != "true" and (
            done.returncode != 0 or len(answers) < 3 or not answers[2])):
        raise WorkspaceError(f"{origin} is not a git repository")
    top = Path(answers[1] if bare == "true" else answers[2])
    if bare != "true" and top.resolve() != folder.resolve():
        raise WorkspaceError(f"{origin} is not a git repository (it is inside {top})")
    return top.resolve()


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give the agent's uid the clone. Never follows links (and the clone holds none of the origin)."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)
