"""The copy-on-write workspace: each sandbox sees an ordinary git work tree that is an
overlay over one pristine checkout per (repository, revision). Sandboxes never see each
other's writes, the pristine checkout never changes, what harness measures is the same as
with a checkout of its own, the disk limit holds, and gc leaves nothing of a killed run."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import docker
import pytest

from harness.home import state_dir
from harness.sandbox import Sandbox, Workspace, overlay, pristine
from harness.sandbox.cleanup import collect_garbage
from harness.sandbox.engine import Engine
from harness.sandbox.settings import SandboxSettings
from harness.sandbox.workspace_states import WorkspaceStates
from tests.fix_git import git

pytestmark = pytest.mark.docker

COW = SandboxSettings(disk_limit="64m")
OFF = SandboxSettings(disk_limit="64m", workspace_cow="off")
# Fixed names and dates: the same work makes the same commits on either path.
FIXED = {"GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z"}
HOSTILE_WORK = """
set -e
echo changed >> README.md
echo new > added.txt
mkdir -p deep/er && echo x > deep/er/file.txt
git add -A && git commit -qm 'first'
git mv shop shop-moved
mv migrations/001_init.sql migrations/001_renamed.sql
chmod +x added.txt tests/__init__.py
chmod 700 deep
ln -s README.md link.md
git rm -q tests/test_orders.py
git add -A && git commit -qm 'second'
git checkout -qb side && echo side > side.txt && git add side.txt && git commit -qm side
git checkout -q - && git tag done
echo untracked > scratch.txt && mkdir -p build && echo o > build/out.o
git clean -qfdx
echo dirty >> README.md && git reset -q --hard
git status --porcelain
"""


@pytest.fixture()
def origin(shop_repo: Path, tmp_path: Path) -> Path:
    """A repository of the test's own: its pristine checkout is the test's alone."""
    copy = tmp_path / "origin"
    subprocess.run(["git", "clone", "-q", str(shop_repo), str(copy)], check=True)
    return copy


def _snapshot(folder: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under `folder`: mode, owner, size, times, inode and bytes (or target)."""
    entries: dict[str, tuple[object, ...]] = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        info = path.lstat()
        if path.is_symlink():
            content = os.readlink(path)
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = ""
        entries[str(path.relative_to(folder))] = (info.st_mode, info.st_uid, info.st_gid,
                                                  info.st_size, info.st_mtime_ns,
                                                  info.st_ino, content)
    return entries


def _lower(workspace: Workspace) -> Path:
    assert workspace.view == "overlay" and workspace.pristine, workspace.view_detail
    return workspace.pristine


def _mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path)
               for line in Path("/proc/mounts").read_text().splitlines())


def test_this_host_mounts_copy_on_write_views() -> None:
    assert overlay.support().available, overlay.support().detail


def test_two_sandboxes_over_one_pristine_checkout_never_see_each_others_writes(
        origin: Path) -> None:
    with Sandbox(origin, settings=COW) as one, Sandbox(origin, settings=COW) as two:
        assert _lower(one.workspace) == _lower(two.workspace)
        readme = two.exec("cat README.md").stdout
        assert one.exec("echo mine >> README.md && echo new > only-one.txt && rm -r "
                        "$(git ls-files | grep / | head -1) && git add -A && "
                        "git commit -qm one").ok
        assert two.exec("cat README.md").stdout == readme
        assert two.exec("test ! -e only-one.txt && git status --porcelain").stdout == ""
        assert two.exec("echo theirs > only-two.txt").ok
        assert one.exec("test ! -e only-two.txt").ok
        assert one.changes().commit_count == 1 and two.changes().commit_count == 0


def test_the_pristine_checkout_never_changes_whatever_the_sandbox_does(origin: Path) -> None:
    with Sandbox(origin, settings=COW) as sandbox:
        lower = _lower(sandbox.workspace)
        before = _snapshot(lower.parent / "tree"), (lower.parent / "index").read_bytes()
        result = sandbox.exec(["bash", "-c", HOSTILE_WORK], env=FIXED)
        assert result.ok, result.stderr
        assert result.stdout == ""  # clean after reset --hard
        assert sandbox.changes().commit_count == 3
        # Through the view, and then through the host's own git (as harness reads it).
        assert sandbox.exec("test -L link.md && test -x added.txt").ok
        assert sandbox.workspace.git("status", "--porcelain") == ""
        assert (_snapshot(lower.parent / "tree"), (lower.parent / "index").read_bytes()) \
            == before
        # A host user with the agent's uid cannot reach it either.
        host_user = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups",
                                    "touch", str(lower / "README.md")],
                                   capture_output=True, text=True, check=False)
        assert host_user.returncode != 0 and "Permission denied" in host_user.stderr


def test_git_status_is_clean_at_open_without_reading_a_file(origin: Path) -> None:
    with Sandbox(origin, settings=COW) as sandbox:
        assert sandbox.workspace.view == "overlay"
        # diff-files trusts the index's stat data and does not refresh it: it is silent only
        # when every file's stat matches what the index recorded.
        result = sandbox.exec("git diff-files --quiet && git status --porcelain && "
                              "stat -c %u:%g . .git .git/index README.md && id -u")
        assert result.ok, result.stdout + result.stderr
        assert result.stdout.split() == ["1000:1000"] * 4 + ["1000"]
        index = sandbox.exec("stat -c %Y.%y .git/index").stdout
        assert sandbox.exec("git status --porcelain").stdout == ""
        assert sandbox.exec("stat -c %Y.%y .git/index").stdout == index  # nothing to refresh


def test_changes_diff_states_and_bundles_are_the_same_as_with_a_checkout_of_its_own(
        origin: Path, tmp_path: Path) -> None:
    seen = {}
    for settings in (COW, OFF):
        with Sandbox(origin, settings=settings) as sandbox:
            states = WorkspaceStates(sandbox.workspace)
            start = states.record()
            result = sandbox.exec(["bash", "-c", HOSTILE_WORK.replace("git clean -qfdx", "")
                                   .replace("git reset -q --hard", "echo")], env=FIXED)
            assert result.ok, result.stderr
            end = states.record()
            bundle = tmp_path / f"{settings.workspace_cow}.bundle"
            assert sandbox.workspace.bundle(bundle)
            seen[settings.workspace_cow] = (
                sandbox.workspace.view, sandbox.changes().to_dict(),
                (start.tree, start.head, start.symbolic, start.refs),
                (end.tree, end.head, end.symbolic, end.refs, end.nested),
                states.files_between(start, end), states.commits_between(start, end),
                git(origin, "bundle", "list-heads", str(bundle)).split()[0],
                sorted(git(origin, "bundle", "verify", str(bundle)).splitlines()),
                result.stdout)
    cow, off = seen["auto"], seen["off"]
    assert (cow[0], off[0]) == ("overlay", "clone")
    assert cow[1:] == off[1:]
    assert cow[1]["commit_count"] == 3 and cow[4]


@pytest.mark.parametrize("ref_kind", ["default", "branch", "older commit", "annotated tag",
                                      "other branch", "origin detached", "tip shared by a tag"])
def test_refs_reflogs_and_index_at_open_match_a_checkout_of_its_own(
        origin: Path, ref_kind: str) -> None:
    older = git(origin, "rev-parse", "HEAD~1")
    git(origin, "tag", "-a", "-m", "release", "v1", older)
    git(origin, "tag", "light", "HEAD")
    git(origin, "branch", "feature", older)
    if ref_kind == "origin detached":
        git(origin, "checkout", "-q", "--detach", older)
    ref = {"default": None, "branch": "main", "older commit": older, "annotated tag": "v1",
           "other branch": "feature", "origin detached": None, "tip shared by a tag": "light",
           }[ref_kind]
    seen = []
    for cow in ("auto", "off"):
        with Workspace(origin, ref, name=f"refs-{cow}", cow=cow) as workspace:  # type: ignore[arg-type]
            seen.append((workspace.base, workspace.branch, workspace.git("for-each-ref"),
                         workspace.git("reflog", "--format=%gs", "HEAD"),
                         workspace.git("reflog", "--format=%gs", workspace.branch),
                         workspace.git("ls-files", "-s"), workspace.git("status", "--porcelain"),
                         workspace.commit_count()))
            assert workspace.view == {"auto": "overlay", "off": "clone"}[cow]
    assert seen[0] == seen[1]


def test_a_change_of_the_users_git_configuration_makes_another_pristine_checkout(
        origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Workspace(origin, name="plain-config") as plain:
        plain_lower = _lower(plain)
    settings = tmp_path / "gitconfig"
    settings.write_text("[core]\n\tautocrlf = true\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(settings))
    with Workspace(origin, name="crlf-view") as view, \
            Workspace(origin, name="crlf-clone", cow="off") as clone:
        assert _lower(view) != plain_lower
        assert (view.path / "README.md").read_bytes() == (clone.path / "README.md").read_bytes()
        assert b"\r\n" in (view.path / "README.md").read_bytes()
        assert view.git("status", "--porcelain") == ""


def test_writing_past_the_disk_limit_gets_enospc_in_the_view(origin: Path) -> None:
    with Sandbox(origin, settings=COW) as sandbox:
        assert sandbox.workspace.view == "overlay" and sandbox.disk is not None
        upper = sandbox.workspace.cow_path / "upper"
        assert os.stat(upper).st_dev == os.stat(sandbox.disk.path).st_dev  # on the disk
        result = sandbox.exec("dd if=/dev/zero of=/workspace/fill bs=1M count=200 status=none")
        assert result.exit_code != 0 and "No space left on device" in result.stderr
        assert result.disk_limit_hit
        # A copied-up file counts too, and after freeing the space git works again.
        assert sandbox.exec("rm fill && echo ok >> README.md && git commit -qam ok").ok
        assert sandbox.changes().commit_count == 1
        view = sandbox.workspace.path
    assert not _mounted(view) and not view.parent.exists()


def test_with_the_setting_off_each_sandbox_checks_out_its_own(origin: Path) -> None:
    with Sandbox(origin, settings=OFF) as sandbox:
        assert sandbox.workspace.view == "clone"
        assert "sandbox.workspace_cow is off" in sandbox.workspace.view_detail
        assert not _mounted(sandbox.workspace.path)
        assert sandbox.exec("git status --porcelain && echo x >> README.md && "
                            "git commit -qam x").ok
        assert sandbox.changes().commit_count == 1


_OPEN_AS_A_USER = """
import sys
from harness.sandbox import Workspace
workspace = Workspace(sys.argv[1], name="plain-user").create()
try:
    print(workspace.view, "|", workspace.view_detail)
    print(workspace.git("status", "--porcelain") == "" and workspace.head() == workspace.base)
finally:
    workspace.remove()
"""


def test_without_root_the_workspace_falls_back_to_a_checkout_of_its_own(
        shop_repo: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="cow-plain-user-") as scratch:
        folder = Path(scratch)
        os.chmod(folder, 0o755)
        subprocess.run(["git", "clone", "-q", str(shop_repo), str(folder / "origin")],
                       check=True)
        (folder / "home").mkdir()
        subprocess.run(["chown", "-R", "1000:1000", str(folder)], check=True)
        done = subprocess.run(
            ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", sys.executable,
             "-c", _OPEN_AS_A_USER, str(folder / "origin")],
            capture_output=True, text=True, check=False, cwd=folder,
            env={"PATH": os.environ["PATH"], "HOME": str(folder),
                 "HARNESS_HOME": str(folder / "home")})
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "clone | a checkout of its own (mounting an overlay needs root (running as uid "
            "1000))", "True"]
        assert not list((folder / "home" / "workspaces").iterdir())


def test_concurrent_opens_of_one_revision_build_its_pristine_checkout_once(
        origin: Path) -> None:
    workspaces = [Workspace(origin, name=f"cow-race-{n}") for n in range(4)]
    errors: list[BaseException] = []

    def open_one(workspace: Workspace) -> None:
        try:
            workspace.create()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(w,)) for w in workspaces]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        lowers = {_lower(w) for w in workspaces}
        assert len(lowers) == 1
        key = lowers.pop().parent.name
        assert {p.name for p in state_dir("pristine").iterdir() if p.name.startswith(key)} \
            == {key, f"{key}.lock"}  # no second build, no half-built folder
        # In use: not pruned however idle; once no view mounts it, pruned.
        assert key not in pristine.prune(idle_s=0)
    finally:
        for workspace in workspaces:
            workspace.remove()
    assert key in pristine.prune(idle_s=0)
    assert not (state_dir("pristine") / key).exists()


_OPEN_AND_WAIT = """
import sys, time
from harness.sandbox.settings import SandboxSettings
from harness.sandbox import Sandbox
sandbox = Sandbox(sys.argv[1], settings=SandboxSettings(disk_limit=sys.argv[2] or None)).open()
sandbox.exec("echo mine >> README.md")
print(sandbox.workspace.path, sandbox.workspace.pristine.parent.name, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("disk_limit", ["64m", ""], ids=["own disk", "no disk"])
def test_gc_after_a_sigkill_leaves_no_mount_upper_layer_or_stale_pristine_checkout(engine_client: Engine,
        origin: Path, docker_client: docker.DockerClient, disk_limit: str) -> None:
    process = subprocess.Popen([sys.executable, "-c", _OPEN_AND_WAIT, str(origin), disk_limit],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout is not None
    with process.stdout:
        line = process.stdout.readline().split()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert len(line) == 2, "the sandbox did not open"
    view, key = Path(line[0]), line[1]
    assert _mounted(view) and (view.parent / "cow" / "upper").is_dir()
    # A builder killed half way leaves a half-built checkout.
    half_built = state_dir("pristine") / f"{key}.building-{process.pid}"
    (half_built / "tree").mkdir(parents=True)

    report = collect_garbage(engine_client)  # the default age: the checkout is kept
    assert view.parent.name in report.workspaces and f"{key}.building-{process.pid}" \
        in report.pristine
    assert not _mounted(view) and not _mounted(view.parent) and not view.parent.exists()
    assert (state_dir("pristine") / key / "tree").is_dir()
    report = collect_garbage(engine_client, pristine_idle_s=0)
    assert key in report.pristine and not (state_dir("pristine") / key).exists()
    assert not any(str(state_dir("pristine")) in line or str(view) in line
                   for line in Path("/proc/mounts").read_text().splitlines())
