"""A corpus of realistic pull requests for `harness gate`, generated as a real git
repository (one branch per PR over a shared `main`), each labelled with the findings a
reviewer expects: secrets, destructive SQL and lock safety, by file and line. Precision
and recall per check are computed over (check, file, line).

Everything is generated (seeded): lockfiles of several ecosystems, checksum files, test
fixtures with fake keys, `.env.example` placeholders, real-looking keys of the main
providers, Django and Alembic migrations (upgrade and downgrade, proxy and unmanaged
models, `db_table`, batch operations), SQL migrations that rewrite or lock tables."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("secrets", "destructive-sql", "lock-safety")
_RANDOM = random.Random(2222)
ALNUM = string.ascii_letters + string.digits


def rand(alphabet: str, n: int) -> str:
    """`n` characters of `alphabet`, from the corpus's seeded generator."""
    return "".join(_RANDOM.choice(alphabet) for _ in range(n))


def hexes(n: int) -> str:
    return rand("0123456789abcdef", n)


def b64(n: int) -> str:
    return rand(ALNUM + "+/", n)


@dataclass(frozen=True)
class Expect:
    """A finding a reviewer expects: which check, which file, which line."""

    check: str
    path: str
    line: int


@dataclass
class Case:
    """One pull request: the files it writes, the gate config it runs under (added to the
    corpus's), and the findings expected of it."""

    name: str
    files: dict[str, str]
    expected: set[Expect] = field(default_factory=set)
    config: str = ""

    def expect(self, check: str, path: str, *needles: str) -> Case:
        """Expect a finding of `check` on each line of `path` holding one of `needles`."""
        for number, line in enumerate(self.files[path].splitlines(), start=1):
            if any(needle in line for needle in needles):
                self.expected.add(Expect(check, path, number))
        return self


# ------------------------------------------------------------------ the base


DJANGO_INITIAL = '''from django.db import migrations, models
import django.db.models.deletion


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Customer",
            fields=[
                ("id", models.BigAutoField(primary_key=True)),
                ("email", models.EmailField(max_length=254)),
            ],
        ),
        migrations.CreateModel(
            name="Tag",
            fields=[("id", models.BigAutoField(primary_key=True))],
        ),
        migrations.CreateModel(
            name="Order",
            fields=[
                ("id", models.BigAutoField(primary_key=True)),
                ("customer", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                               to="shop.customer")),
                ("legacy_code", models.CharField(max_length=20, db_column="legacy")),
                ("note", models.TextField()),
                ("tags", models.ManyToManyField(to="shop.tag")),
            ],
        ),
        migrations.CreateModel(
            name="VipCustomer",
            fields=[],
            options={"proxy": True},
            bases=("shop.customer",),
        ),
        migrations.CreateModel(
            name="LegacyReport",
            fields=[("id", models.IntegerField(primary_key=True))],
            options={"managed": False, "db_table": "legacy_report"},
        ),
        migrations.CreateModel(
            name="Invoice",
            fields=[("id", models.BigAutoField(primary_key=True))],
            options={"db_table": '"billing"."invoice"'},
        ),
    ]
'''

DCIM_INITIAL = '''from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    operations = [
        migrations.CreateModel(
            name="Module",
            fields=[("id", models.BigAutoField(primary_key=True)),
                    ("serial", models.CharField(max_length=50))],
        ),
        migrations.CreateModel(
            name="ModuleBay",
            fields=[("id", models.BigAutoField(primary_key=True))],
        ),
    ]
'''

ALEMBIC_INITIAL = '''"""init

Revision ID: 1975ea83b712
"""
import sqlalchemy as sa
from alembic import op

revision = "1975ea83b712"
down_revision = None


def upgrade():
    op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("orders")
'''

ACCEPTED_KEY = "sk_live_" + rand(ALNUM, 24)
"""A key the team accepted in the base's detect-secrets baseline (for `src/legacy.py`)."""


def _baseline(entries: dict[str, list[str]]) -> str:
    return json.dumps({"version": "1.5.0", "plugins_used": [], "filters_used": [],
                       "results": {path: [{"type": "Stripe Access Key", "filename": path,
                                           "hashed_secret": hashlib.sha1(s.encode()).hexdigest(),
                                           "is_verified": False, "line_number": 1}
                                          for s in secrets]
                                   for path, secrets in entries.items()}}, indent=2) + "\n"


BASE_FILES = {
    "README.md": "# shop\n",
    "shop/__init__.py": "",
    "shop/migrations/__init__.py": "",
    "shop/migrations/0001_initial.py": DJANGO_INITIAL,
    "dcim/migrations/__init__.py": "",
    "dcim/migrations/0001_initial.py": DCIM_INITIAL,
    "alembic/env.py": "from alembic import context\n",
    "alembic/versions/1975ea83b712_init.py": ALEMBIC_INITIAL,
    "migrations/001_init.sql": "CREATE TABLE orders (id bigint PRIMARY KEY, status text);\n",
    ".secrets.baseline": _baseline({"src/legacy.py": [ACCEPTED_KEY]}),
}

CONFIG = """
orchestrator:
  blast_radius: {max_commits: 100, max_files_changed: 500, max_lines_changed: 100000}
gate:
  fail_on_new_executables: false
  secrets_max_per_file: 50
"""


# ----------------------------------------------------------- secrets: negatives


def _uv_lock(packages: int) -> str:
    out = ["version = 1", 'requires-python = ">=3.11"', ""]
    for n in range(packages):
        name = f"pkg{n}"
        out += ["[[package]]", f'name = "{name}"', f'version = "1.{n}.0"',
                'source = { registry = "https://pypi.org/simple" }',
                f'sdist = {{ url = "https://files.pythonhosted.org/packages/{hexes(2)}/'
                f'{hexes(2)}/{hexes(60)}/{name}-1.{n}.0.tar.gz", hash = "sha256:{hexes(64)}", '
                f'size = {_RANDOM.randint(1000, 99999)} }}',
                "wheels = [",
                f'    {{ url = "https://files.pythonhosted.org/packages/{hexes(2)}/{hexes(2)}/'
                f'{hexes(60)}/{name}-1.{n}.0-py3-none-any.whl", hash = "sha256:{hexes(64)}", '
                f'size = {_RANDOM.randint(1000, 99999)} }},',
                "]", ""]
    return "\n".join(out)


def _go_sum(modules: int) -> str:
    return "".join(f"github.com/org{n}/mod{n} v1.{n}.0 h1:{b64(43)}=\n"
                   f"github.com/org{n}/mod{n} v1.{n}.0/go.mod h1:{b64(43)}=\n"
                   for n in range(modules))


def _package_lock(packages: int) -> str:
    entries = {f"node_modules/p{n}": {
        "version": f"2.{n}.1", "resolved": f"https://registry.npmjs.org/p{n}/-/p{n}-2.{n}.1.tgz",
        "integrity": f"sha512-{b64(86)}=="} for n in range(packages)}
    return json.dumps({"name": "web", "lockfileVersion": 3, "packages": entries}, indent=2) + "\n"


def _yarn_lock(packages: int) -> str:
    return "".join(f'p{n}@^3.{n}.0:\n  version "3.{n}.0"\n'
                   f'  resolved "https://registry.yarnpkg.com/p{n}/-/p{n}-3.{n}.0.tgz#{hexes(40)}"\n'
                   f"  integrity sha512-{b64(86)}==\n\n" for n in range(packages))


def _pnpm_lock(packages: int) -> str:
    return "lockfileVersion: '9.0'\npackages:\n" + "".join(
        f"  p{n}@4.{n}.0:\n    resolution: {{integrity: sha512-{b64(86)}==}}\n"
        for n in range(packages))


def _poetry_lock(packages: int) -> str:
    return "".join(f'[[package]]\nname = "p{n}"\nversion = "0.{n}"\nfiles = [\n'
                   f'    {{file = "p{n}-0.{n}.tar.gz", hash = "sha256:{hexes(64)}"}},\n]\n\n'
                   for n in range(packages))


def _cargo_lock(packages: int) -> str:
    return "version = 3\n\n" + "".join(
        f'[[package]]\nname = "c{n}"\nversion = "0.{n}.0"\n'
        f'source = "registry+https://github.com/rust-lang/crates.io-index"\n'
        f'checksum = "{hexes(64)}"\n\n' for n in range(packages))


def negatives() -> list[Case]:
    """Pull requests that hold no secret, though a naive scanner sees many."""
    cases = [
        Case("lockfiles", {"uv.lock": _uv_lock(40), "go.sum": _go_sum(40),
                           "web/package-lock.json": _package_lock(40),
                           "web/yarn.lock": _yarn_lock(30), "web/pnpm-lock.yaml": _pnpm_lock(30),
                           "poetry.lock": _poetry_lock(30), "Cargo.lock": _cargo_lock(30)}),
        Case("checksum files", {
            "dist/SHA256SUMS": "".join(f"{hexes(64)}  app-{n}.tar.gz\n" for n in range(20)),
            "dist/app.tar.gz.sha256": f"{hexes(64)}  app.tar.gz\n",
            "requirements.txt": "".join(
                f"pkg{n}==1.{n} \\\n    --hash=sha256:{hexes(64)} \\\n"
                f"    --hash=sha256:{hexes(64)}\n" for n in range(10))}),
        Case("hashes inside URLs", {
            "tools/fetch.py": (
                "SOURCES = {\n"
                f'    "lib": "https://github.com/org/lib/archive/{hexes(40)}.tar.gz",\n'
                f'    "script": "https://raw.githubusercontent.com/org/repo/{hexes(40)}/i.sh",\n'
                f'    "asset": "https://cdn.shop.test/assets/app.{rand(ALNUM, 24)}.js",\n'
                f'    "gist": "https://gist.github.com/someone/{hexes(32)}",\n'
                "}\n"
                f"# pinned to https://github.com/org/lib/commit/{hexes(40)}\n"),
            "web/templates/base.html": (
                f'<script src="https://cdn.jsdelivr.net/npm/x@1/x.min.js" '
                f'integrity="sha384-{b64(64)}" crossorigin="anonymous"></script>\n'),
            "web/static/logo.py": f'LOGO = "data:image/png;base64,iVBORw0KGgo{b64(120)}"\n'}),
        Case(".env.example placeholders", {
            ".env.example": (
                "SECRET_KEY=changeme\n"
                "DATABASE_URL=postgres://{user}:{password}@localhost:5432/shop\n"
                "API_KEY=<your-key>\n"
                "GITHUB_TOKEN=${GITHUB_TOKEN}\n"
                "STRIPE_SECRET_KEY=sk_live_xxxxxxxxxxxxxxxxxxxxxxxx\n"
                "AWS_SECRET_ACCESS_KEY=your-secret-access-key\n"
                "REDIS_PASSWORD=\n"
                "SMTP_PASSWORD=replace-me-with-the-smtp-password\n"
                "DEBUG=true\nPORT=8000\n")}),
        Case("templates and references", {
            "shop/settings.py": (
                "import os\n\n"
                'SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]\n'
                'DB_PASSWORD = os.getenv("DB_PASSWORD", "")\n'
                'DATABASE_URL = "postgres://{user}:{password}@{host}/{name}"\n'
                'BROKER_URL = f"amqp://{user}:{password}@rabbit:5672//"\n'
                'API_TOKEN = settings.API_TOKEN\n'
                'PASSWORD_RESET_TIMEOUT = 259200\n'
                'AUTH_TOKEN_HEADER = "X-Auth-Token"\n'
                'SECRET_KEY_FALLBACKS = []\n'),
            ".github/workflows/deploy.yml": (
                "jobs:\n  deploy:\n    steps:\n      - run: ./deploy\n        env:\n"
                "          TOKEN: ${{ secrets.DEPLOY_TOKEN }}\n"
                "          password: ${{ secrets.DB_PASSWORD }}\n")}),
        Case("test code with passwords", {
            "tests/test_login.py": (
                "def test_login(client, django_user_model):\n"
                '    django_user_model.objects.create_user("bob", password="hunter2")\n'
                '    assert client.login(username="bob", password="correct-horse")\n'
                '    token = client.post("/api/token").json()["token"]\n'
                '    assert token != ""\n')}),
        Case("ids and hashes in code", {
            "shop/constants.py": (
                f'COMMIT = "{hexes(40)}"\n'
                'REQUEST_ID = "550e8400-e29b-41d4-a716-446655440000"\n'
                f'CACHE_VERSION = "{hexes(32)}"\n'
                f'ETAG = "W/{hexes(24)}"\n'
                'ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"\n')}),
        Case("fake keys in a scanner's fixtures, allowed by path", {
            "tests/fixtures/keys.py": (
                f'AWS = "AKIA{rand(string.ascii_uppercase + string.digits, 16)}"\n'
                f'GITHUB = "ghp_{rand(ALNUM, 36)}"\n'
                f'STRIPE = "sk_live_{rand(ALNUM, 24)}"\n'
                "PEM = '''-----BEGIN RSA PRIVATE KEY-----\n"
                f"{b64(64)}\n-----END RSA PRIVATE KEY-----'''\n")},
             config="  secrets_allow_paths: ['tests/fixtures/**']\n"),
        Case("keys allowed inline", {
            "docs/conf.py": (
                f'STRIPE_KEY = "sk_live_{rand(ALNUM, 24)}"  # pragma: allowlist secret\n'
                f'GITHUB_TOKEN = "ghp_{rand(ALNUM, 36)}"  # harness: allow-secret\n')}),
        Case("a key the base's baseline accepted", {
            "src/legacy.py": f'# accepted in 2023\nLEGACY_KEY = "{ACCEPTED_KEY}"\n'}),
    ]
    return cases


# ----------------------------------------------------------- secrets: positives


def positives() -> list[Case]:
    """Pull requests that add real-looking credentials of the main providers."""
    django_chars = string.ascii_lowercase + string.digits + "!@#$%^&*(-_=+)"
    keys = {
        "AWS_ACCESS_KEY_ID": "AKIA" + rand(string.ascii_uppercase + string.digits, 16),
        "AWS_SECRET_ACCESS_KEY": rand(ALNUM + "+/", 40),
        "GITHUB_TOKEN": "ghp_" + rand(ALNUM, 36),
        "GITLAB_TOKEN": "glpat-" + rand(ALNUM, 20),
        "STRIPE_SECRET_KEY": "sk_live_" + rand(ALNUM, 24),
        "SLACK_BOT_TOKEN": f"xoxb-{rand(string.digits, 12)}-{rand(string.digits, 13)}-"
                           f"{rand(ALNUM, 24)}",
        "SENDGRID_API_KEY": f"SG.{rand(ALNUM, 22)}.{rand(ALNUM, 43)}",
        "OPENAI_API_KEY": f"sk-{rand(ALNUM, 20)}T3BlbkFJ{rand(ALNUM, 20)}",
        "GOOGLE_API_KEY": "AIza" + rand(ALNUM + "-_", 35),
        "NPM_TOKEN": "npm_" + rand(ALNUM, 36),
        "TWILIO_API_KEY": "SK" + hexes(32),
    }
    settings = "".join(f'{name} = "{value}"\n' for name, value in keys.items())
    webhook = (f"https://hooks.slack.com/services/T{rand(string.ascii_uppercase, 8)}/"
               f"B{rand(string.ascii_uppercase, 8)}/{rand(ALNUM, 24)}")
    pem = ("-----BEGIN RSA PRIVATE KEY-----\n" + "".join(b64(64) + "\n" for _ in range(8))
           + "-----END RSA PRIVATE KEY-----\n")
    new_key = "sk_live_" + rand(ALNUM, 24)
    cases = [
        Case("provider keys in settings", {"shop/prod_settings.py": "import os\n\n" + settings}
             ).expect("secrets", "shop/prod_settings.py", *keys),
        Case("a Slack webhook in code", {"ops/notify.py": f'WEBHOOK = "{webhook}"\n'}
             ).expect("secrets", "ops/notify.py", "WEBHOOK"),
        Case("a private key", {"deploy/id_rsa": pem}).expect("secrets", "deploy/id_rsa", "BEGIN"),
        Case("a Django SECRET_KEY full of punctuation", {
            "shop/settings.py": "DEBUG = False\n"
                                f"SECRET_KEY = 'django-insecure-{rand(django_chars, 50)}'\n"
                                "ALLOWED_HOSTS = ['shop.test']\n"}
             ).expect("secrets", "shop/settings.py", "SECRET_KEY"),
        Case("a committed .env", {
            ".env": "DEBUG=false\nPORT=8000\nBUILD_ID=2024.11.3\n"
                    f"DB_PASSWORD={rand(ALNUM, 20)}\n"
                    f"DATABASE_URL=postgres://app:{rand(ALNUM, 16)}@db.prod.internal:5432/app\n"
                    f"STRIPE_KEY={'sk_live_' + rand(ALNUM, 24)}\n"}
             ).expect("secrets", ".env", "DB_PASSWORD", "DATABASE_URL", "STRIPE_KEY"),
        Case("a Kubernetes secret in YAML", {
            "deploy/secret.yaml": "apiVersion: v1\nkind: Secret\nstringData:\n"
                                  f"  password: {rand(ALNUM, 18)}\n  username: shop\n"}
             ).expect("secrets", "deploy/secret.yaml", "password"),
        Case("an npm token in .npmrc", {
            ".npmrc": f"//registry.npmjs.org/:_authToken=npm_{rand(ALNUM, 36)}\n"}
             ).expect("secrets", ".npmrc", "_authToken"),
        Case("a registry password in a lockfile", {
            "web/yarn.lock": _yarn_lock(3) + 'p9@^1.0.0:\n  version "1.0.0"\n  resolved '
            f'"https://ci:{rand(ALNUM, 20)}@npm.internal.test/p9/-/p9-1.0.0.tgz"\n'}
             ).expect("secrets", "web/yarn.lock", "npm.internal.test"),
        Case("a key the PR's own baseline tries to allow", {
            ".secrets.baseline": _baseline({"src/legacy.py": [ACCEPTED_KEY],
                                            "src/new.py": [new_key]}),
            "src/new.py": f'NEW_KEY = "{new_key}"\n'}).expect("secrets", "src/new.py", "NEW_KEY"),
    ]
    return cases


# ------------------------------------------------------------------- migrations


def migrations() -> list[Case]:
    """Migrations that destroy data or lock a live table, and ones that do neither."""
    alembic_drop = f'''"""drop legacy

Revision ID: {hexes(12)}
"""
import sqlalchemy as sa
from alembic import op

revision = "{hexes(12)}"
down_revision = "1975ea83b712"


def upgrade():
    op.drop_column("orders", "legacy_code")
    op.drop_table("invoice", schema="billing")
    op.execute("DELETE FROM order_lines")
    with op.batch_alter_table("customers") as batch_op:
        batch_op.add_column(sa.Column("tier", sa.Text(), nullable=True))
        batch_op.drop_column("fax")
    _cleanup()


def _cleanup():
    op.execute("UPDATE orders SET status = 'void'")


def downgrade():
    op.drop_table("orders_archive")
    op.drop_column("orders", "tier")
'''
    alembic_create = f'''"""add archive

Revision ID: {hexes(12)}
"""
import sqlalchemy as sa
from alembic import op

revision = "{hexes(12)}"
down_revision = "1975ea83b712"


def upgrade():
    op.create_table(
        "orders_archive",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
    )
    op.create_index("orders_archive_status", "orders_archive", ["status"])
    op.add_column("orders", sa.Column("note", sa.Text(), nullable=True))
    op.create_index("orders_note", "orders", ["note"], postgresql_concurrently=True)


def downgrade():
    op.drop_index("orders_note", table_name="orders")
    op.drop_column("orders", "note")
    op.drop_table("orders_archive")
'''
    alembic_lock = f'''"""tighten orders

Revision ID: {hexes(12)}
"""
import sqlalchemy as sa
from alembic import op

revision = "{hexes(12)}"
down_revision = "1975ea83b712"


def upgrade():
    op.create_index("orders_status", "orders", ["status"])
    op.alter_column("orders", "total", type_=sa.Numeric(12, 2))
    op.add_column("orders", sa.Column("region", sa.Text(), nullable=False))
    op.create_foreign_key("orders_customer_fk", "orders", "customers", ["customer_id"], ["id"])


def downgrade():
    op.drop_constraint("orders_customer_fk", "orders")
    op.drop_column("orders", "region")
    op.drop_index("orders_status")
'''
    django_drop = '''from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [
        migrations.RemoveField(model_name="order", name="customer"),
        migrations.RemoveField(model_name="order", name="legacy_code"),
        migrations.RemoveField(model_name="order", name="tags"),
        migrations.DeleteModel(name="Invoice"),
        migrations.RunSQL("TRUNCATE shop_tag", reverse_sql=migrations.RunSQL.noop),
    ]
'''
    django_safe = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [
        migrations.DeleteModel(name="VipCustomer"),
        migrations.DeleteModel(name="LegacyReport"),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Tag")],
            database_operations=[],
        ),
        migrations.AddField(model_name="customer", name="nickname",
                            field=models.CharField(max_length=30, null=True)),
        migrations.CreateModel(
            name="Coupon",
            fields=[("id", models.BigAutoField(primary_key=True)),
                    ("code", models.CharField(max_length=20))],
        ),
        migrations.AddIndex(model_name="coupon",
                            index=models.Index(fields=["code"], name="coupon_code")),
        migrations.RunSQL("SELECT 1", reverse_sql="DROP TABLE shop_customer"),
    ]
'''
    dcim = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("dcim", "0001_initial")]

    operations = [
        migrations.DeleteModel(name="ModuleBay"),
        migrations.AddIndex(model_name="module",
                            index=models.Index(fields=["serial"], name="dcim_module_serial")),
    ]
'''
    sql_destructive = ("-- prune\nDELETE FROM audit_log;\n"
                       "UPDATE orders SET status = 'x' WHERE id = 3;\n"
                       "DROP TABLE legacy_orders;\n"
                       "UPDATE customers\n   SET tier = 'gold';\n")
    sql_lock = ("CREATE INDEX orders_created ON orders (created_at);\n"
                "ALTER TABLE orders ADD COLUMN region text NOT NULL;\n"
                "ALTER TABLE orders ALTER COLUMN total TYPE numeric(12, 2);\n"
                "ALTER TABLE orders ADD CONSTRAINT orders_code UNIQUE (code);\n"
                "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id)"
                " REFERENCES customers (id);\n")
    sql_safe = ("CREATE TABLE regions (id bigint PRIMARY KEY, name text);\n"
                "CREATE INDEX regions_name ON regions (name);\n"
                "CREATE INDEX CONCURRENTLY orders_status ON orders (status);\n"
                "ALTER TABLE orders ADD COLUMN note text;\n"
                "ALTER TABLE orders ADD COLUMN flag boolean NOT NULL DEFAULT false;\n"
                "ALTER TABLE orders ADD CONSTRAINT orders_region_fk FOREIGN KEY (region_id) "
                "REFERENCES regions (id) NOT VALID;\n"
                "ALTER TABLE orders VALIDATE CONSTRAINT orders_region_fk;\n"
                "DELETE FROM orders WHERE status = 'test';\n")
    library = '''"""Alembic's own operations: library code in a folder named alembic, not a migration."""


def drop_table(operations, operation):
    operations.impl.drop_table(operation.to_table())
    operations.execute("DELETE FROM alembic_version")


def drop_column(operations, operation):
    operations.impl.drop_column(operation.table_name, operation.column_name)
'''
    cases = [
        Case("alembic upgrade that destroys data", {
            "alembic/versions/a1_drop_legacy.py": alembic_drop}
             ).expect("destructive-sql", "alembic/versions/a1_drop_legacy.py",
                      'drop_column("orders", "legacy_code")', "drop_table(\"invoice\"", "DELETE FROM",
                      'drop_column("fax")', "SET status = 'void'"),
        Case("alembic create with its downgrade", {
            "alembic/versions/a2_archive.py": alembic_create}),
        Case("alembic migration that locks orders", {"alembic/versions/a3_lock.py": alembic_lock}
             ).expect("lock-safety", "alembic/versions/a3_lock.py", 'create_index("orders_status"',
                      "alter_column", 'sa.Column("region"', "create_foreign_key("),
        Case("django migration that drops columns and tables", {
            "shop/migrations/0002_drop.py": django_drop}
             ).expect("destructive-sql", "shop/migrations/0002_drop.py", "RemoveField",
                      "DeleteModel", "TRUNCATE"),
        Case("django proxy, unmanaged and state-only deletes", {
            "shop/migrations/0002_safe.py": django_safe}),
        Case("a NetBox-like app's migration", {"dcim/migrations/0002_bays.py": dcim}
             ).expect("destructive-sql", "dcim/migrations/0002_bays.py", "DeleteModel"
             ).expect("lock-safety", "dcim/migrations/0002_bays.py", "AddIndex"),
        Case("SQL migration that destroys data", {"migrations/002_prune.sql": sql_destructive}
             ).expect("destructive-sql", "migrations/002_prune.sql", "DELETE FROM audit_log",
                      "DROP TABLE", "UPDATE customers"),
        Case("SQL migration that locks", {"migrations/003_lock.sql": sql_lock}
             ).expect("lock-safety", "migrations/003_lock.sql", "CREATE INDEX", "ADD COLUMN",
                      "TYPE numeric", "UNIQUE", "FOREIGN KEY"),
        Case("SQL migration done safely", {"migrations/004_safe.sql": sql_safe}),
        Case("a migration tool's library code", {
            "alembic/operations/toimpl.py": library,
            "sql/reports/cleanup.sql": "DELETE FROM report_cache;\n"}),
    ]
    return cases


def hard_cases() -> list[Case]:
    """Cases at the edge of what reading a diff can tell, labelled as a reviewer would:
    some are known misses or false alarms, kept so the figures stay honest."""
    claims = json.dumps({"sub": rand(string.digits, 10), "name": "shop-service",
                         "iat": 1732924800}).encode()
    jwt = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
           f"{base64.urlsafe_b64encode(claims).decode().rstrip('=')}.{rand(ALNUM + '-_', 43)}")
    purge = ("from django.db import migrations\n\n\n"
             "def purge(apps, schema_editor):\n"
             '    apps.get_model("shop", "Order").objects.all().delete()\n'
             '    schema_editor.execute("DELETE FROM shop_customer")\n\n\n'
             "class Migration(migrations.Migration):\n"
             '    dependencies = [("shop", "0001_initial")]\n'
             "    operations = [migrations.RunPython(purge, migrations.RunPython.noop)]\n")
    return [
        Case("keys under names that say nothing", {
            "shop/integrations.py": (
                f'MAPS = "AIza{rand(ALNUM + "-_", 35)}"\n'
                f'DATADOG = "{hexes(32)}"\n'
                f'STORAGE = "DefaultEndpointsProtocol=https;AccountName=shop;AccountKey='
                f'{b64(86)}==;EndpointSuffix=core.windows.net"\n'
                f'SESSION = "{jwt}"\n')}
             ).expect("secrets", "shop/integrations.py", "MAPS", "DATADOG", "STORAGE",
                      "SESSION"),
        Case("a short real password and a secret in JSON", {
            "shop/db.py": f'DB_PASSWORD = "{rand(ALNUM, 9)}"\n',
            "config/app.json": json.dumps({"auth": {"client_secret": rand(ALNUM, 32),
                                                    "client_id": "shop-web"}}, indent=2)}
             ).expect("secrets", "shop/db.py", "DB_PASSWORD"
             ).expect("secrets", "config/app.json", "client_secret"),
        Case("base64 test data, pinned images, docs", {
            "tests/test_codec.py": 'EXPECTED = "SGVsbG8gV29ybGQhIFRoaXMgaXMgYSB0ZXN0IG9mIHRo'
                                   'ZSBjb2RlYy4="\n',
            "Dockerfile": f"FROM python:3.12-slim@sha256:{hexes(64)}\nRUN pip install .\n",
            "docs/setup.md": "```sh\nexport AWS_SECRET_ACCESS_KEY=<your secret key>\n"
                             "export GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
                             "```\n"}),
        Case("a data migration through the ORM", {"shop/migrations/0003_purge.py": purge}
             ).expect("destructive-sql", "shop/migrations/0003_purge.py", ".delete()",
                      "DELETE FROM shop_customer"),
        Case("SET NOT NULL on a live table", {
            "migrations/005_not_null.sql": "ALTER TABLE orders ALTER COLUMN status SET NOT NULL;\n"}
             ).expect("lock-safety", "migrations/005_not_null.sql", "SET NOT NULL"),
    ]


def corpus() -> list[Case]:
    """Every case of the corpus."""
    return negatives() + positives() + migrations() + hard_cases()


# ------------------------------------------------------------------ building


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=corpus", "-c",
                    "user.email=corpus@example.com", *args], check=True, capture_output=True)


def _write(repo: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def build(root: Path, cases: Iterable[Case]) -> Path:
    """A repository with `main` and one branch per case (`pr/<index>`)."""
    repo = root / "corpus"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _write(repo, BASE_FILES)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    for index, case in enumerate(cases):
        _git(repo, "checkout", "-q", "-b", f"pr/{index}", "main")
        _write(repo, case.files)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", case.name)
    _git(repo, "checkout", "-q", "main")
    return repo


@dataclass
class Score:
    """Findings of one check over the corpus, against the labels."""

    true_positives: int = 0
    false_positives: list[str] = field(default_factory=list)
    false_negatives: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        found = self.true_positives + len(self.false_positives)
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + len(self.false_negatives)
        return self.true_positives / expected if expected else 1.0

    def to_dict(self) -> dict[str, object]:
        return {"precision": round(self.precision, 3), "recall": round(self.recall, 3),
                "true_positives": self.true_positives,
                "false_positives": self.false_positives, "false_negatives": self.false_negatives}


def score(repo: Path, cases: list[Case]) -> dict[str, Score]:
    """Run the gate on every case and score each check kind over (file, line)."""
    from harness.config import parse_config
    from harness.gate import run_gate

    scores = {kind: Score() for kind in KINDS}
    for index, case in enumerate(cases):
        config = parse_config(CONFIG + case.config)
        report = run_gate(repo, "main", f"pr/{index}", config)
        found = {Expect(check.name, f.path, f.line) for check in report.checks
                 if check.name in KINDS for f in check.findings if f.path and f.line}
        for expect in found & case.expected:
            scores[expect.check].true_positives += 1
        for expect in found - case.expected:
            scores[expect.check].false_positives.append(
                f"{case.name}: {expect.path}:{expect.line}")
        for expect in case.expected - found:
            scores[expect.check].false_negatives.append(
                f"{case.name}: {expect.path}:{expect.line}")
    return scores
