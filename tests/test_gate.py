"""The CI gate on real git repositories (and real PostgreSQL for the rehearsal)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.config import parse_config
from harness.gate import GateError, run_gate
from harness.gate.secrets import scan_secrets
from harness.sandbox.postgres import ServerAddress
from tests.fix_git import git

CONFIG = """
orchestrator:
  blast_radius: {max_commits: 3, max_database_rows: 100, max_files_changed: 5,
                 max_lines_changed: 200, allow_ddl: true}
guardrails:
  protected_tables: [audit]
  protected_paths: ["deploy/**"]
gate:
  migrate: "for f in migrations/*.sql; do psql -v ON_ERROR_STOP=1 -q -f $f || exit 1; done"
"""


@pytest.fixture()
def pr_repo(shop_repo: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(shop_repo), str(repo)], check=True)
    git(repo, "checkout", "-q", "-b", "agent/pr")
    git(repo, "config", "user.name", "agent")
    git(repo, "config", "user.email", "agent@example.com")
    return repo


def commit(repo: Path, files: dict[str, str], message: str = "change",
           executable: tuple[str, ...] = ()) -> None:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if name in executable:
            path.chmod(0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def gate(repo: Path, *extra: str, config: str = CONFIG, tmp: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    config_file = (tmp or repo.parent) / "harness.yaml"
    config_file.write_text(config)
    return subprocess.run([sys.executable, "-m", "harness.cli", "gate", "--repo", str(repo),
                           "--base", "main", "--head", "agent/pr", "--config", str(config_file),
                           *extra], capture_output=True, text=True, check=False)


def failing(done: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    report = json.loads(done.stdout)
    return {c["name"]: c["details"] for c in report["checks"] if not c["passed"]}


def test_a_pr_within_limits_passes(pr_repo: Path) -> None:
    commit(pr_repo, {"shop/orders.py": "RATE = 2\n", "docs/notes.md": "notes\n"})
    done = gate(pr_repo, "--json")
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["passed"] is True


@pytest.mark.parametrize(("setup", "limit"), [
    ("commits", "max_commits"), ("files", "max_files_changed"), ("lines", "max_lines_changed"),
    ("protected", "protected_paths"),
])
def test_a_pr_over_a_limit_fails_naming_it(pr_repo: Path, setup: str, limit: str) -> None:
    if setup == "commits":
        for n in range(4):
            commit(pr_repo, {f"f{n}.txt": "x\n"}, f"commit {n}")
    elif setup == "files":
        commit(pr_repo, {f"f{n}.txt": "x\n" for n in range(6)})
    elif setup == "lines":
        commit(pr_repo, {"big.txt": "line\n" * 300})
    else:
        commit(pr_repo, {"deploy/prod.yaml": "replicas: 0\n"})
    done = gate(pr_repo, "--json")
    assert done.returncode == 1
    assert any(detail.startswith(f"{limit}:") for detail in failing(done)["limits"])


def test_effect_policies_over_files_and_commits_judge_the_pr(pr_repo: Path) -> None:
    policies = CONFIG + """
effects:
  - id: no-wip
    commits: {message: "^WIP", branch: "^agent/"}
  - id: scripts-stay-plain
    files: {path: "scripts/**", executable: true}
  - id: any-script
    decision: warn
    files: {path: "scripts/**"}
"""
    commit(pr_repo, {"scripts/run.sh": "echo hi\n"}, "WIP: try", executable=("scripts/run.sh",))
    done = gate(pr_repo, "--json", config=policies)
    assert done.returncode == 1
    broken = sorted(d.split(":")[0] for d in failing(done)["limits"])
    assert broken == ["effects[no-wip]", "effects[scripts-stay-plain]", "warning"]
    # The same file, not executable, in a commit that is no WIP: only a warning, it passes.
    git(pr_repo, "reset", "-q", "--hard", "main")
    commit(pr_repo, {"scripts/run.sh": "echo hi\n"}, "Add run.sh")
    passed = gate(pr_repo, "--json", config=policies)
    assert passed.returncode == 0, passed.stdout
    checks = {c["name"]: c for c in json.loads(passed.stdout)["checks"]}
    assert [d.split(" (")[0] for d in checks["limits"]["details"]] == [
        "warning: effects[any-script]: more than 0 file(s) matching the policy"]


def test_a_secret_in_the_diff_fails_with_file_and_line(pr_repo: Path) -> None:
    commit(pr_repo, {"shop/settings.py": "DEBUG = False\nAPI_TOKEN = 'ghp_" + "a1B2" * 9 + "'\n"})
    done = gate(pr_repo, "--json")
    assert done.returncode == 1
    assert failing(done)["secrets"] == ["shop/settings.py:2: GitHub Token (ghp_...B2)"]


def test_destructive_sql_ci_changes_and_new_executables_fail(pr_repo: Path, tmp_path: Path
                                                             ) -> None:
    commit(pr_repo, {"migrations/002_cleanup.sql": "-- tidy up\nTRUNCATE orders;\n",
                     ".github/workflows/ci.yml": "on: push\n",
                     "scripts/deploy.sh": "#!/bin/sh\necho deploy\n"},
           executable=("scripts/deploy.sh",))
    junit = tmp_path / "gate.xml"
    done = gate(pr_repo, "--json", "--junit", str(junit))
    assert done.returncode == 1
    failed = failing(done)
    assert failed["destructive-sql"] == [
        "migrations/002_cleanup.sql:2: sql.truncate: TRUNCATE orders"]
    assert failed["ci-config"] == [".github/workflows/ci.yml: is CI configuration"]
    assert failed["new-executables"] == ["scripts/deploy.sh: is a new executable file"]
    suites = ET.parse(junit).getroot()
    assert suites.tag == "testsuites" and suites.get("timestamp")
    cases = {case.get("name"): case for case in suites.iter("testcase")}
    assert set(cases) == {"limits", "secrets", "migrations/002_cleanup.sql:2: sql.truncate: "
                          "TRUNCATE orders", "lock-safety", ".github/workflows/ci.yml: is CI "
                          "configuration", "scripts/deploy.sh: is a new executable file",
                          "database-rehearsal"}
    assert cases["limits"].find("failure") is None
    assert cases["database-rehearsal"].find("skipped") is not None
    truncate = cases["migrations/002_cleanup.sql:2: sql.truncate: TRUNCATE orders"]
    assert (truncate.get("file"), truncate.get("line")) == ("migrations/002_cleanup.sql", "2")
    assert suites.get("failures") == "3" and suites.get("skipped") == "1"


ALEMBIC = '''"""drop the legacy columns"""
import sqlalchemy as sa
from alembic import op

revision = "0002"


def upgrade():
    op.add_column("orders", sa.Column("note", sa.Text()))
    op.drop_column("orders", "legacy_code")
    op.execute(
        "DELETE FROM order_lines"
    )
    op.execute(sa.text("UPDATE orders SET status = 'paid' WHERE id = 1"))
    op.get_bind().execute(sa.text(f"TRUNCATE {TABLE}"))
    op.execute(statement)


def downgrade():
    op.drop_table("orders_archive")
'''

DJANGO = '''from django.db import migrations


class Migration(migrations.Migration):
    operations = [
        migrations.RemoveField(model_name="order", name="coupon"),
        migrations.DeleteModel(name="Coupon"),
        migrations.RunSQL(sql=["UPDATE shop_order SET total = 0"],
                          reverse_sql="SELECT 1"),
        migrations.RunSQL("CREATE INDEX orders_status ON shop_order (status)"),
    ]
'''


def test_python_migrations_are_judged_by_the_sql_they_run(pr_repo: Path) -> None:
    commit(pr_repo, {"alembic/versions/0002_cleanup.py": ALEMBIC,
                     "shop/migrations/0007_coupons.py": DJANGO})
    failed = failing(gate(pr_repo, "--json"))["destructive-sql"]
    assert failed == [
        "alembic/versions/0002_cleanup.py:10: sql.drop-column: "
        'ALTER TABLE orders drops a column and its data (runs ALTER TABLE "orders" DROP COLUMN '
        '"legacy_code")',
        "alembic/versions/0002_cleanup.py:11: sql.delete-without-where: "
        "DELETE on order_lines has no WHERE clause",
        "alembic/versions/0002_cleanup.py:15: sql.truncate: TRUNCATE _",
        "alembic/versions/0002_cleanup.py:16: execute(...) runs SQL known only at run time; "
        "rehearse the migration with --db",
        "shop/migrations/0007_coupons.py:6: sql.drop-column: ALTER TABLE shop_order drops a "
        'column and its data (runs ALTER TABLE "shop_order" DROP COLUMN "coupon")',
        'shop/migrations/0007_coupons.py:7: sql.drop-table: DROP TABLE shop_coupon (runs DROP '
        'TABLE "shop_coupon")',
        "shop/migrations/0007_coupons.py:8: sql.update-without-where: "
        "UPDATE on shop_order has no WHERE clause",
    ], failed


def test_a_changed_python_migration_is_judged_by_what_the_pr_adds(pr_repo: Path) -> None:
    git(pr_repo, "checkout", "-q", "main")
    commit(pr_repo, {"migrations/0001.py": "from alembic import op\n\n\ndef upgrade():\n"
                                           "    op.drop_table('old')\n"}, "an old migration")
    git(pr_repo, "checkout", "-q", "agent/pr")
    git(pr_repo, "merge", "-q", "main")
    commit(pr_repo, {"migrations/0001.py": "from alembic import op\n\n\ndef upgrade():\n"
                                           "    op.drop_table('old')\n"
                                           "    op.create_table('new')\n"})
    done = gate(pr_repo, "--json")
    assert "destructive-sql" not in failing(done), done.stdout
    commit(pr_repo, {"migrations/0001.py": "from alembic import op\n\n\ndef upgrade(:\n"})
    broken = failing(gate(pr_repo, "--json"))["destructive-sql"]
    assert broken == ["migrations/0001.py:4: not valid Python (invalid syntax), so the SQL it "
                      "runs cannot be read"], broken


@pytest.mark.docker
@pytest.mark.postgres
def test_a_migration_deleting_500_rows_of_a_protected_table_fails_with_the_count(
        pr_repo: Path, target_server: ServerAddress) -> None:
    dsn = target_server.fresh_database("gate_rehearsal", """
        CREATE TABLE audit (id int PRIMARY KEY, message text);
        INSERT INTO audit SELECT g, 'm' FROM generate_series(1, 800) g;""")
    commit(pr_repo, {"migrations/003_prune.sql": "DELETE FROM audit WHERE id <= 500;\n"})
    done = gate(pr_repo, "--json", "--db", dsn)
    assert done.returncode == 1, done.stderr
    rehearsal = failing(done)["database-rehearsal"]
    assert "protected_tables: 500 rows changed in the protected table public.audit " \
           "(allowed audit)" in rehearsal
    assert "public.audit: +0 ~0 -500" in rehearsal


@pytest.mark.docker
@pytest.mark.postgres
def test_a_harmless_migration_passes_the_rehearsal(pr_repo: Path,
                                                   target_server: ServerAddress) -> None:
    dsn = target_server.fresh_database("gate_ok", "CREATE TABLE items (id int PRIMARY KEY);")
    commit(pr_repo, {"migrations/004_add.sql": "ALTER TABLE items ADD COLUMN name text;\n"
                                                 "INSERT INTO items VALUES (1, 'a');\n"})
    done = gate(pr_repo, "--json", "--db", dsn)
    assert done.returncode == 0, done.stdout
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    rehearsal = checks["database-rehearsal"]
    assert rehearsal["summary"].startswith("rows +1 ~0 -0")
    assert "DDL: ALTER TABLE items ADD COLUMN name text;" in rehearsal["details"]


@pytest.mark.docker
@pytest.mark.postgres
def test_the_ddl_a_rehearsal_captures_is_judged_by_squawk(pr_repo: Path,
                                                          target_server: ServerAddress) -> None:
    dsn = target_server.fresh_database("gate_locks", "CREATE TABLE items (id int PRIMARY KEY);")
    # Built by a script the static checks cannot read: only the rehearsal sees the SQL.
    commit(pr_repo, {"migrations/005_index.sh": "#!/bin/sh\npsql -c 'CREATE INDEX items_id "
                                                 "ON items (id)'\n"})
    config = CONFIG.replace("for f in migrations/*.sql; do psql -v ON_ERROR_STOP=1 -q -f $f "
                            "|| exit 1; done", "sh migrations/005_index.sh")
    done = gate(pr_repo, "--json", "--db", dsn, config=config)
    assert done.returncode == 1, done.stdout + done.stderr
    rehearsal = failing(done)["database-rehearsal"]
    assert any(d.startswith("require_approval: squawk.require-concurrent-index-creation")
               for d in rehearsal), rehearsal
    assert "lock-safety" not in failing(done)


def test_a_broken_repo_or_unknown_ref_exits_2(tmp_path: Path, pr_repo: Path) -> None:
    missing = gate(tmp_path / "nowhere", tmp=tmp_path)
    assert missing.returncode == 2 and "not a git repository" in missing.stderr
    config_file = tmp_path / "h.yaml"
    config_file.write_text(CONFIG)
    done = subprocess.run([sys.executable, "-m", "harness.cli", "gate", "--repo", str(pr_repo),
                           "--base", "main", "--head", "no-such-branch", "--config",
                           str(config_file)], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "unknown head ref 'no-such-branch'" in done.stderr
    with pytest.raises(GateError):
        run_gate(pr_repo, "nope", "agent/pr", parse_config(CONFIG))


def kinds(line: str, path: str = "x.py") -> list[str]:
    return [f.kind for f in scan_secrets({path: line + "\n"}, {path: {1}}, min_entropy=4.5)]


@pytest.mark.parametrize(("line", "kind"), [
    ("aws = 'AKIA2E0A8F3B244C9986'", "AWS Access Key"),
    ("-----BEGIN RSA PRIVATE KEY-----", "Private Key"),
    ("url = 'postgresql://app:hunter2hunter2@db.internal/app'", "Basic Auth Credentials"),
    ("SECRET_KEY = 'q8Zr2LmX9vT4bN7kP1sW6yJ3dF0hG5cE'", "Secret Assignment, Base64 High Entropy String"),
    ("SECRET_KEY = 'django-insecure-9#x!k@p$z^w&q*8r(t)y_u+i=o-p[a]s{d}f'", "Secret Assignment"),
])
def test_secret_formats(line: str, kind: str) -> None:
    assert kinds(line) == [kind]


@pytest.mark.parametrize("line", [
    "commit = 'e0a358d050c9ba5d1a917fde86595e9dee90556e'",
    "def test_total_includes_tax_and_rounds_half_up(self):",
    "integrity = 'sha512-Q8Zr2LmX9vT4bN7kP1sW6yJ3dF0hG5cEaaa'",
    "path = 'src/harness/sandbox/workspace_changes.py'",
    "SECRET_KEY = os.environ['SECRET_KEY']",
    "aws = 'AKIAIOSFODNN7EXAMPLE'",
    "client.login(username='admin', password='hunter2')",
])
def test_ordinary_code_is_not_a_secret(line: str) -> None:
    assert kinds(line) == []
