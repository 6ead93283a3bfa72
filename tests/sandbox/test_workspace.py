"""The throwaway workspace: exact commit accounting, and an origin that never changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import WorkspaceError
from harness.sandbox import Sandbox, Workspace
from tests.fix_git import fingerprint, git

pytestmark = pytest.mark.docker


def test_commits_made_inside_are_counted_exactly(shop_repo: Path) -> None:
    with Sandbox(shop_repo) as sb:
        for n in range(3):
            assert sb.exec(f"echo {n} >> notes.txt && git add notes.txt && git commit -qm 'note {n}'").ok
        assert sb.exec("git checkout -qb side && git commit -q --allow-empty -m side && git checkout -q -").ok
        changes = sb.changes()
    assert changes.commit_count == 4
    assert sorted(c.message for c in changes.commits) == ["note 0", "note 1", "note 2", "side"]
    assert {c.author for c in changes.commits} == {"harness agent"}
    assert [(f.path, f.added, f.removed) for f in changes.files] == [("notes.txt", 3, 0)]
    assert "+++ b/notes.txt" in changes.diff


def test_no_commits_means_an_empty_change(shop_repo: Path) -> None:
    with Sandbox(shop_repo) as sb:
        assert sb.exec("echo scratch > scratch.txt").ok  # uncommitted work is not a commit
        changes = sb.changes()
    assert changes.commit_count == 0
    assert changes.files == []
    assert changes.head == changes.base


def test_reset_below_the_base_counts_nothing_new(shop_repo: Path) -> None:
    with Sandbox(shop_repo) as sb:
        assert sb.exec("git reset -q --hard HEAD~2").ok
        changes = sb.changes()
    assert changes.commit_count == 0
    assert changes.lines_removed > 0


def test_the_origin_is_byte_for_byte_unchanged_after_hostile_work(shop_repo: Path) -> None:
    before = fingerprint(shop_repo)
    hostile = " ; ".join([
        "git commit -q --allow-empty -m one",
        "git gc -q --prune=now --aggressive",
        "git push origin HEAD:main --force",
        "git remote set-url origin /harness/objects/0 ; git push -f origin HEAD:main",
        "touch /harness/objects/0/probe",
        "find /harness/objects -type f -exec chmod 777 {} +",
        "rm -rf /harness/objects/0/*",
        "git config core.fsmonitor 'touch /tmp/host-pwned'",
        "git config diff.external 'touch /tmp/host-pwned'",
    ])
    with Sandbox(shop_repo) as sb:
        sb.exec(hostile, timeout=60)
        expected = int(git(shop_repo, "rev-list", "--count", "HEAD")) + 1
        assert sb.exec("git log --oneline | wc -l").stdout.strip() == str(expected)
        changes = sb.changes()  # host-side git must not run planted config
    assert changes.commit_count == 1
    assert not Path("/tmp/host-pwned").exists()
    assert fingerprint(shop_repo) == before


@pytest.mark.parametrize("ref_kind", ["branch", "tag", "commit"])
def test_base_can_be_a_branch_tag_or_commit(shop_repo: Path, ref_kind: str) -> None:
    first = git(shop_repo, "rev-list", "--max-parents=0", "HEAD")
    if ref_kind == "tag":
        git(shop_repo, "tag", "-f", "v-first", first)
    ref = {"branch": "main", "tag": "v-first", "commit": first}[ref_kind]
    expected = first if ref_kind != "branch" else git(shop_repo, "rev-parse", "main")
    with Workspace(shop_repo, ref, name=f"ref-{ref_kind}") as ws:
        assert ws.base == expected
        assert ws.head() == expected
        assert ws.changes().commit_count == 0


def test_a_url_origin_is_cloned_through_a_cached_mirror(shop_repo: Path) -> None:
    with Workspace(f"file://{shop_repo}", "main", name="by-url") as ws:
        assert ws.base == git(shop_repo, "rev-parse", "main")
        assert ws.branch == "main"


def test_unknown_ref_and_missing_repo_are_clear_errors(shop_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="no branch, tag or commit 'nope'"):
        Workspace(shop_repo, "nope", name="bad-ref").__enter__()
    with pytest.raises(WorkspaceError, match="does not exist"):
        Workspace(tmp_path / "absent", name="absent").__enter__()
    with pytest.raises(WorkspaceError, match="not a git repository"):
        Workspace(tmp_path, name="plain-dir").__enter__()


def test_a_bare_repository_or_a_linked_work_tree_is_an_origin_and_a_subfolder_is_not(
        shop_repo: Path, tmp_path: Path) -> None:
    import subprocess

    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(bare)], check=True)
    linked = tmp_path / "linked"
    git(shop_repo, "worktree", "add", "-q", "--detach", str(linked), "HEAD~1")
    try:
        for origin, base in ((bare, git(shop_repo, "rev-parse", "HEAD")),
                             (linked, git(shop_repo, "rev-parse", "HEAD~1"))):
            with Workspace(origin, name=f"origin-{origin.name}") as ws:
                assert ws.base == base
                assert (ws.path / "README.md").exists()
        with pytest.raises(WorkspaceError, match="not a git repository"):
            Workspace(shop_repo / "shop", name="subfolder").__enter__()
        with pytest.raises(WorkspaceError, match="not a git repository"):
            Workspace(bare / "refs", name="bare-subfolder").__enter__()
    finally:
        git(shop_repo, "worktree", "remove", "--force", str(linked))


def test_clone_borrows_objects_instead_of_copying_them(shop_repo: Path) -> None:
    with Workspace(shop_repo, name="borrow") as ws:
        own_objects = [p for p in (ws.path / ".git" / "objects").rglob("*") if p.is_file()]
        assert not [p for p in own_objects if len(p.parent.name) == 2], "loose objects were copied"
        assert list(ws.container_mounts()) == [str((shop_repo / ".git" / "objects").resolve()),
                                               str(ws.states_path)]


def test_the_host_compresses_a_bundle_whatever_the_agent_configured(shop_repo: Path,
                                                                    tmp_path: Path) -> None:
    from harness.sandbox import Sandbox

    with Sandbox(shop_repo) as sandbox:
        done = sandbox.exec("git config pack.compression 0 && git config core.compression 0 "
                            "&& head -c 30000000 /dev/zero > zeros.bin && git add zeros.bin && "
                            "git -c user.name=a -c user.email=a@b commit -qm zeros")
        assert done.ok, done.stderr
        bundle = tmp_path / "change.bundle"
        assert sandbox.workspace.bundle(bundle)
        assert bundle.stat().st_size < 1 << 20, "30 MB of zeros stay a few kilobytes"
