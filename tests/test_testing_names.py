"""harness.testing reads a table by name as the limits match names (quoted or not, any
schema), refuses an ambiguous bare name rather than reading zeros, and the plugin's ini
option is a path from the ini file's folder (found by a red team)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.fixtures import fixture_repo
from harness.sandbox import Sandbox
from harness.sandbox.settings import SandboxSettings
from harness.testing import assert_untouched, changes

SEED = """
CREATE SCHEMA a; CREATE SCHEMA b;
CREATE TABLE a.items (id int PRIMARY KEY); CREATE TABLE b.items (id int PRIMARY KEY);
CREATE TABLE "Mixed" (id int PRIMARY KEY);
"""


@pytest.mark.docker
def test_a_bare_name_never_reads_a_changed_table_as_untouched(tmp_path: Path) -> None:
    seed = tmp_path / "rt.sql"
    seed.write_text(SEED)
    with Sandbox(str(fixture_repo()), settings=SandboxSettings(disk_limit=None),
                 database=str(seed)) as sandbox:
        assert sandbox.database is not None
        with sandbox.database.connect_as_owner() as conn:
            conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public, a, b TO "
                         f"{sandbox.database.role}")
        done = sandbox.exec(["psql", "-v", "ON_ERROR_STOP=1", "-qc",
                             "INSERT INTO a.items VALUES (1); INSERT INTO b.items VALUES (1); "
                             "INSERT INTO \"Mixed\" VALUES (1)"])
        assert done.ok, done.stderr
        change = changes(sandbox)
    for name in ("items", "Mixed"):  # ambiguous; a quoted name by its own spelling
        with pytest.raises((AssertionError, KeyError, LookupError)):
            assert_untouched(change, name)


def test_the_ini_options_path_is_relative_to_the_ini_file() -> None:
    project = Path(tempfile.mkdtemp())
    (project / "conf").mkdir()
    (project / "tests").mkdir()
    (project / "pytest.ini").write_text("[pytest]\nharness_config = conf/harness.yaml\n")
    (project / "conf" / "harness.yaml").write_text(f"target: {{repo: {fixture_repo()}}}\n")
    (project / "tests" / "test_cfg.py").write_text(
        "def test_config(harness_config):\n    assert harness_config.target.repo\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_cfg.py"], cwd=project / "tests", capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout[-800:]
