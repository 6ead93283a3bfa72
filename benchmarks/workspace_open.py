"""Opening a workspace on a generated 10k-commit, 5k-file repository: a copy-on-write view
over the revision's pristine checkout (sandbox.workspace_cow: auto) against a checkout of
its own (off, the path before it), measured in the same run, interleaved.

Reports the workspace alone (clone + work tree, then removal), a whole sandbox (container
and 64 MiB disk included), the one-off build of the pristine checkout, and the first
`git status` in the fresh workspace (which would re-read every file if the index's stat
data did not hold through the view).
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed

from harness.fixtures import generated_repo
from harness.sandbox import Sandbox, Workspace, overlay
from harness.sandbox.settings import SandboxSettings

MODES: tuple[Literal["auto", "off"], ...] = ("auto", "off")


def workspace_rounds(repo: Path, runs: int) -> dict[str, object]:
    samples: dict[str, dict[str, list[float]]] = {
        mode: {"open": [], "first_git_status": [], "remove": []} for mode in MODES}
    views: dict[str, str] = {}
    for _ in range(runs):
        for mode in MODES:  # interleaved: both see the same machine state
            workspace = Workspace(repo, name=f"bench-{uuid.uuid4().hex[:8]}", cow=mode)
            try:
                samples[mode]["open"].append(timed(workspace.create))
                views[mode] = workspace.view
                status = functools.partial(workspace.git, "status", "--porcelain")
                samples[mode]["first_git_status"].append(timed(status))
            finally:
                samples[mode]["remove"].append(timed(workspace.remove))
    result: dict[str, object] = {
        mode: {"view": views[mode], **{name: summary(values) for name, values in found.items()}}
        for mode, found in samples.items()}
    return result


def sandbox_rounds(repo: Path, runs: int) -> dict[str, object]:
    samples: dict[str, list[float]] = {"auto": [], "off": []}
    for _ in range(runs):
        for mode in MODES:
            sandbox = Sandbox(repo, settings=SandboxSettings(disk_limit="64m",
                                                             workspace_cow=mode))
            try:
                samples[mode].append(timed(sandbox.open))
            finally:
                sandbox.close()
    return {mode: summary(values) for mode, values in samples.items()}


def ratio(slow: dict[str, object], fast: dict[str, object], field: str) -> float:
    return round(float(slow[field]) / float(fast[field]), 2)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=5_000)
    parser.add_argument("--no-sandbox", action="store_true",
                        help="measure the workspace alone (no Docker)")
    args = parser.parse_args()
    generated = generated_repo(args.commits, args.files)
    with tempfile.TemporaryDirectory(prefix="workspace-open-") as scratch:
        # A repository of this run's own (objects hard-linked): its pristine checkout is
        # built here, measured, and removed at the end.
        repo = Path(scratch) / "repo"
        subprocess.run(["git", "clone", "-q", "--no-checkout", str(generated), str(repo)],
                       check=True)
        subprocess.run(["git", "-C", str(repo), "checkout", "-q", "main"], check=True)
        first = Workspace(repo, name=f"bench-{uuid.uuid4().hex[:8]}")
        build = timed(first.create)
        pristine = first.pristine
        first.remove()
        try:
            workspaces = workspace_rounds(repo, args.runs)
            sandboxes = None if args.no_sandbox else sandbox_rounds(repo, args.runs)
        finally:
            if pristine is not None:
                shutil.rmtree(pristine.parent, ignore_errors=True)
    cow, clone = workspaces["auto"], workspaces["off"]
    assert isinstance(cow, dict) and isinstance(clone, dict)
    results: dict[str, object] = {
        "repository": {"commits": args.commits, "files": args.files},
        "copy_on_write": overlay.support().detail if overlay.support().available
        else f"unavailable: {overlay.support().detail}",
        "first_open_with_pristine_build_ms": round(build * 1000, 1),
        "workspace_open": {
            "cow": cow["open"], "clone": clone["open"],
            "ratio_clone_over_cow": ratio(clone["open"], cow["open"], "median_ms"),
            "ratio_clone_over_cow_p95": ratio(clone["open"], cow["open"], "p95_ms")},
        "first_git_status": {"cow": cow["first_git_status"], "clone": clone["first_git_status"]},
        "workspace_remove": {"cow": cow["remove"], "clone": clone["remove"]},
        "views": {"auto": cow["view"], "off": clone["view"]},
    }
    if sandboxes is not None:
        results["sandbox_open"] = {**sandboxes, "ratio_clone_over_cow": ratio(
            sandboxes["off"], sandboxes["auto"], "median_ms")}  # type: ignore[arg-type]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
