"""The policy: precedence, approvals, configured rules, overrides, fail-closed."""

from __future__ import annotations

import re

import pytest

from harness.config import ConfigError, parse_config
from harness.guardrails import Context, Decision, Policy, Verdict
from harness.tools import ToolAction


def policy(yaml_text: str = "", **kwargs: object) -> Policy:
    return Policy(parse_config(yaml_text).guardrails, **kwargs)  # type: ignore[arg-type]


def shell(command: str) -> ToolAction:
    return ToolAction("shell_exec", {"command": command})


def sql(text: str, tool: str = "db_mutate") -> ToolAction:
    return ToolAction(tool, {"sql": text})


def test_the_reference_rules_block_what_they_name_but_not_mentions() -> None:
    p = policy("guardrails:\n  builtin: {shell.recursive-delete: off, sql.drop-database: off,"
               " path.outside-workspace: off, path.runs-later: off}\n"
               "  rules:\n    - {pattern: 'rm -rf /', action: block}\n"
               "    - {pattern: 'DROP DATABASE', action: block}\n")
    blocked = p.evaluate(shell("sudo rm -rf /"))
    assert (blocked.verdict, blocked.rule_id) == (Verdict.BLOCK, "config.rules[0]")
    assert p.evaluate(sql("drop   database prod")).rule_id == "config.rules[1]"
    assert p.evaluate(shell("psql -c 'DROP DATABASE prod'")).rule_id == "config.rules[1]"
    assert p.evaluate(shell("echo 'rm -rf /'")).allowed
    assert p.evaluate(sql("SELECT 'DROP DATABASE x' -- DROP DATABASE y")).allowed


def test_the_most_severe_finding_wins_and_all_are_kept() -> None:
    p = policy("guardrails:\n  rules:\n    - {kind: shell, program: rm, action: warn, id: no-rm}\n")
    decision = p.evaluate(shell("rm -rf / && rm x"))
    assert decision.verdict == Verdict.BLOCK
    assert decision.rule_id == "shell.recursive-delete"
    assert {f.rule_id for f in decision.findings} == {"shell.recursive-delete", "no-rm"}
    warned = p.evaluate(shell("rm x"))
    assert (warned.verdict, warned.rule_id, warned.allowed) == (Verdict.WARN, "no-rm", True)


def test_decision_names_rule_span_and_reason() -> None:
    text = "ls -la; psql -c 'TRUNCATE orders'"
    decision = Policy().evaluate(shell(text))
    assert decision.rule_id == "sql.truncate"
    assert decision.span is not None
    assert decision.span.text == "psql -c 'TRUNCATE orders'"
    assert "TRUNCATE orders" in decision.reason
    assert decision.to_dict()["decision"] == "block"


def test_require_approval_is_denied_without_an_approver() -> None:
    yaml_text = "guardrails:\n  rules:\n    - {kind: tool, deny: [http_request], action: require_approval}\n"
    action = ToolAction("http_request", {"url": "https://api.example.com"})
    raw = policy(yaml_text).evaluate(action)
    assert raw.verdict == Verdict.REQUIRE_APPROVAL and not raw.allowed
    denied = policy(yaml_text).authorize(action)
    assert (denied.verdict, denied.approval) == (Verdict.BLOCK, "no-approver")


@pytest.mark.parametrize(("answer", "verdict", "approval"), [
    (True, Verdict.WARN, "approved"), (False, Verdict.BLOCK, "denied")])
def test_require_approval_asks_the_approver(answer: bool, verdict: Verdict, approval: str) -> None:
    asked: list[tuple[ToolAction, Decision]] = []

    def approver(action: ToolAction, decision: Decision) -> bool:
        asked.append((action, decision))
        return answer

    p = policy("guardrails:\n  rules:\n    - {kind: sql, statements: [ALTER], action: require_approval}\n",
               approver=approver)
    decision = p.authorize(sql("ALTER TABLE orders ADD COLUMN x int"))
    assert (decision.verdict, decision.approval) == (verdict, approval)
    assert len(asked) == 1 and asked[0][1].verdict == Verdict.REQUIRE_APPROVAL


def test_builtin_rules_can_be_switched_off_or_softened_one_by_one() -> None:
    assert not Policy().evaluate(sql("TRUNCATE t")).allowed
    off = policy("guardrails:\n  builtin: {sql.truncate: 'off'}\n").evaluate(sql("TRUNCATE t"))
    assert off.verdict == Verdict.ALLOW
    soft = policy("guardrails:\n  builtin: {sql.truncate: warn}\n").evaluate(sql("TRUNCATE t"))
    assert (soft.verdict, soft.rule_id) == (Verdict.WARN, "sql.truncate")
    assert not policy("guardrails:\n  builtin: {sql.truncate: 'off'}\n").evaluate(
        sql("DELETE FROM t")).allowed, "other rules stay on"


def test_fail_closed_blocks_unparseable_input_unless_configured_otherwise() -> None:
    assert Policy().evaluate(shell("echo 'oops")).verdict == Verdict.BLOCK
    assert Policy().evaluate(sql("SELECT 'oops")).rule_id == "sql.unparseable"
    open_policy = policy("guardrails:\n  fail_closed: false\n")
    assert open_policy.evaluate(shell("echo 'oops")).verdict == Verdict.WARN


def test_protected_tables_block_every_write_but_allow_reads() -> None:
    p = policy("guardrails:\n  protected_tables: [users, billing.payments]\n")
    for text in ["INSERT INTO users (email) VALUES ('a')", "UPDATE public.users SET a = 1 WHERE id = 1",
                 "DELETE FROM users WHERE id = 1",
                 "MERGE INTO users USING s ON true WHEN MATCHED THEN DELETE",
                 "ALTER TABLE users ADD COLUMN x int", "COPY users FROM STDIN",
                 "UPDATE billing.payments SET a = 1 WHERE id = 1",
                 "WITH x AS (DELETE FROM users WHERE id = 1 RETURNING *) SELECT * FROM x"]:
        decision = p.evaluate(sql(text))
        assert decision.rule_id == "sql.protected-table", text
    for text in ["SELECT * FROM users", "SELECT * FROM users u JOIN orders o ON o.user_id = u.id",
                 "UPDATE payments SET a = 1 WHERE id = 1", "UPDATE other.users_log SET a = 1 WHERE id = 1"]:
        assert p.evaluate(sql(text)).allowed, text


def test_db_query_is_read_only() -> None:
    assert Policy().evaluate(sql("SELECT * FROM t", "db_query")).allowed
    decision = Policy().evaluate(sql("UPDATE t SET a = 1 WHERE id = 1", "db_query"))
    assert decision.rule_id == "tool.read-only"


def test_file_writes_are_judged_by_path() -> None:
    p = policy("guardrails:\n  protected_paths: ['.github/workflows/**', '/etc/**']\n")
    assert p.evaluate(ToolAction("write_file", {"path": "src/app.py"})).allowed
    assert p.evaluate(ToolAction("write_file", {"path": "/tmp/scratch.txt"})).allowed
    for path, rule in [(".github/workflows/ci.yml", "path.protected"),
                       ("./.github/workflows/x/../ci.yml", "path.protected"),
                       ("../outside.txt", "path.outside-workspace"),
                       ("/home/agent/.bashrc", "path.runs-later"),
                       ("/etc/cron.d/x", "path.runs-later"),
                       (".git/hooks/pre-commit", "path.git-internals")]:
        assert p.evaluate(ToolAction("write_file", {"path": path})).rule_id == rule, path
    assert p.evaluate(ToolAction("read_file", {"path": ".github/workflows/ci.yml"})).allowed


def test_configured_rule_kinds() -> None:
    p = policy("""guardrails:
  rules:
    - {id: no-curl, kind: shell, program: curl, action: block}
    - {id: no-secrets-read, kind: path, glob: 'secrets/**', access: read}
    - {id: no-push-release, kind: git, subcommand: push, branches: [release]}
    - {id: one-statement, kind: sql, multi_statement: true}
    - {id: warn-vacuum, kind: sql, statements: [VACUUM], action: warn}
    - {id: only-shell, kind: tool, allow: [shell_exec, db_mutate, read_file]}
    - {id: no-sudo-regex, pattern: '^sudo ', regex: true}
""")
    assert p.evaluate(shell("curl -s http://localhost")).rule_id == "no-curl"
    assert p.evaluate(ToolAction("read_file", {"path": "secrets/key.pem"})).rule_id == "no-secrets-read"
    assert p.evaluate(shell("git push origin release")).rule_id == "no-push-release"
    assert p.evaluate(shell("git push origin feature")).allowed
    assert p.evaluate(sql("SELECT 1; SELECT 2")).rule_id == "one-statement"
    assert p.evaluate(sql("VACUUM t")).verdict == Verdict.WARN
    assert p.evaluate(sql("VACUUM t")).rule_id == "warn-vacuum"
    assert p.evaluate(ToolAction("git_diff", {})).rule_id == "only-shell"
    assert p.evaluate(shell("sudo ls")).rule_id == "no-sudo-regex"


def test_git_history_rewrites_depend_on_the_current_branch() -> None:
    p = Policy()
    on_main, on_feature = Context(branch="main"), Context(branch="feature")
    assert p.evaluate(shell("git rebase -i HEAD~3"), on_main).rule_id == "git.rewrite-history"
    assert p.evaluate(shell("git commit --amend -m x"), on_main).rule_id == "git.rewrite-history"
    assert p.evaluate(shell("git rebase -i HEAD~3"), on_feature).allowed
    assert p.evaluate(shell("git push --force"), on_main).rule_id == "git.force-push"
    assert p.evaluate(shell("git push --force"), on_feature).allowed


@pytest.mark.parametrize("action", [ToolAction("launch_missiles", {}),
                                    ToolAction("shell_exec", {"command": 42}),
                                    ToolAction("db_mutate", {})])
def test_unknown_tools_and_bad_parameters_are_refused(action: ToolAction) -> None:
    decision = Policy().evaluate(action)
    assert decision.rule_id in ("tool.unknown", "tool.bad-parameters")
    assert not decision.allowed


def test_oversized_input_is_refused_without_being_parsed() -> None:
    huge = "echo " + "a" * (1 << 20)
    decision = Policy().evaluate(shell(huge))
    assert decision.rule_id == "input.too-large"


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("guardrails:\n  rules:\n    - {kind: shel, program: x}\n", "rules[0]: unknown kind 'shel'"),
    ("guardrails:\n  rules:\n    - {pattern: '(', regex: true}\n", "bad regular expression"),
    ("guardrails:\n  builtin: {sql.truncate: maybe}\n", "guardrails.builtin.sql.truncate"),
])
def test_config_errors_in_rules_name_the_rule(yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(yaml_text)


def test_an_unknown_builtin_rule_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown rules ['sql.trunacte']")):
        policy("guardrails:\n  builtin: {sql.trunacte: 'off'}\n")


def test_a_long_command_chain_is_analysed_to_its_end() -> None:
    chain = " && ".join(["true"] * 5000 + ["rm -rf /"])
    assert Policy().evaluate(shell(chain)).rule_id == "shell.recursive-delete"


@pytest.mark.parametrize("action", [
    shell("(" * 3000 + "ls" + ")" * 3000),
    sql("DELETE FROM t WHERE " + "(a OR " * 3000 + "b" + ")" * 3000),
])
def test_input_nested_too_deeply_fails_closed(action: ToolAction) -> None:
    decision = Policy().evaluate(action)
    assert decision.verdict == Verdict.BLOCK
    assert "nested too deeply" in decision.reason


@pytest.mark.parametrize(("text", "drops"), [
    ("ALTER TABLE orders DROP COLUMN email", True),
    ("alter table orders drop email", True),
    ("ALTER TABLE orders DROP IF EXISTS note, ADD COLUMN d int", True),
    ("psql -c 'ALTER TABLE orders DROP COLUMN email'", True),
    ("ALTER TABLE orders ALTER COLUMN status DROP DEFAULT", False),
    ("ALTER TABLE orders ALTER status DROP NOT NULL", False),
    ("ALTER TABLE orders DROP CONSTRAINT orders_user_fk", False),
    ("ALTER TABLE orders ALTER COLUMN id DROP IDENTITY IF EXISTS", False),
    ("ALTER TABLE orders ADD COLUMN note text", False),
])
def test_dropping_a_column_asks_for_approval(text: str, drops: bool) -> None:
    action = shell(text) if text.startswith("psql") else sql(text)
    decision = Policy().evaluate(action)
    if drops:
        assert (decision.verdict, decision.rule_id) == (Verdict.REQUIRE_APPROVAL, "sql.drop-column")
        assert "drops a column" in decision.reason
    else:
        assert decision.allowed, decision.reason


@pytest.mark.parametrize(("command", "verdict", "rule"), [
    ("psql -c \"UPDATE users SET email = '$KEY@x.y' WHERE id = 1\"", Verdict.REQUIRE_APPROVAL,
     "sql.unknown-effect"),
    ("psql -c \"DELETE FROM orders WHERE id = $(cat ids.txt)\"", Verdict.REQUIRE_APPROVAL,
     "sql.unknown-effect"),
    ("psql -c \"$QUERY\"", Verdict.REQUIRE_APPROVAL, "sql.unknown-effect"),
    ("psql -c \"DROP TABLE $NAME\"", Verdict.BLOCK, "sql.drop-table"),
    ("psql -c \"DELETE FROM orders -- $NOTE\"", Verdict.BLOCK, "sql.delete-without-where"),
])
def test_sql_built_from_shell_values_asks_unless_its_known_parts_already_block(
        command: str, verdict: Verdict, rule: str) -> None:
    decision = policy().evaluate(shell(command))
    assert (decision.verdict, decision.rule_id) == (verdict, rule), decision.reason


def test_decisions_and_findings_serialise_every_field() -> None:
    from harness.guardrails.decision import Finding, Span

    span = Span(3, 7, "rm -rf")
    finding = Finding("shell.recursive-delete", Verdict.BLOCK, "deletes /etc", span)
    assert finding.to_dict() == {"rule_id": "shell.recursive-delete", "decision": "block",
                                 "reason": "deletes /etc",
                                 "span": {"start": 3, "end": 7, "text": "rm -rf"}}
    assert Finding("x", Verdict.WARN, "r").to_dict()["span"] is None
    decision = Decision.from_findings([finding, Finding("y", Verdict.WARN, "w")])
    assert decision.to_dict() == {"decision": "block", "rule_id": "shell.recursive-delete",
                                  "reason": "deletes /etc", "span": span.to_dict(),
                                  "findings": [finding.to_dict(),
                                               {"rule_id": "y", "decision": "warn",
                                                "reason": "w", "span": None}]}
    approved = Decision(Verdict.REQUIRE_APPROVAL, "r", "why", None, (), "approved")
    assert approved.to_dict() == {"decision": "require_approval", "rule_id": "r",
                                  "reason": "why", "span": None, "findings": [],
                                  "approval": "approved"}
    assert Decision.from_findings([]).to_dict() == {"decision": "allow", "rule_id": None,
                                                    "reason": "no rule matched", "span": None,
                                                    "findings": []}


def guarded(yaml_text: str = "", **kwargs: object) -> Policy:
    """A policy from the lines of a `guardrails:` section."""
    indented = "".join(f"  {line}\n" for line in yaml_text.strip().splitlines())
    return policy(f"guardrails:\n{indented}" if indented else "", **kwargs)


def _decide(yaml_text: str, action: ToolAction, **context: object) -> Decision:
    return guarded(yaml_text).evaluate(action, Context(**context))  # type: ignore[arg-type]


@pytest.mark.parametrize(("command", "rule_id"), [
    ("git push -f origin main", "no-force"), ("git push --force origin x", "no-force"),
    ("git push --force-with-lease origin x", "no-force"), ("git push origin +x:x", "no-force"),
    ("git push origin feature", None), ("git push origin release", "release-only"),
    ("git push origin HEAD:refs/heads/release", "release-only"),
    ("git push origin +HEAD:release", "no-force"), ("git -C . push origin release", "release-only"),
    ("git fetch -f origin", None), ("git push origin releases", None),
])
def test_git_rules_match_forced_pushes_and_named_branches(command: str, rule_id: str | None
                                                          ) -> None:
    yaml_text = """
rules:
  - {kind: git, subcommand: push, force: true, id: no-force}
  - {kind: git, subcommand: push, branches: [release], id: release-only, action: warn}
builtin: {git.force-push: "off"}
"""
    decision = _decide(yaml_text, shell(command))
    fired = [f.rule_id for f in decision.findings if not f.rule_id.startswith(("git.", "shell."))]
    assert (fired[0] if fired else None) == rule_id, decision.findings
    if rule_id is not None:
        finding = next(f for f in decision.findings if f.rule_id == rule_id)
        assert finding.reason == "git push is restricted by a rule"
        assert finding.span is not None and finding.span.text == command


@pytest.mark.parametrize(("sql_text", "fired"), [
    ("DELETE FROM orders WHERE id = 1", []),
    ("DELETE FROM orders", ["orders-unfiltered"]),
    ("UPDATE orders SET total = 0 WHERE true", ["orders-unfiltered"]),
    ("UPDATE public.orders SET total = 0 WHERE 1 = 1", ["orders-unfiltered"]),
    ("DELETE FROM users", []),
    ("INSERT INTO orders (id) VALUES (1)", ["orders-insert"]),
    ("SELECT * FROM orders", []),
])
def test_sql_rules_match_kind_table_and_a_missing_where(sql_text: str, fired: list[str]) -> None:
    yaml_text = """
rules:
  - {kind: sql, tables: [orders], without_where: true, id: orders-unfiltered, action: warn}
  - {kind: sql, statements: [insert], tables: [public.orders], id: orders-insert, action: warn}
builtin: {sql.delete-without-where: "off", sql.update-without-where: "off"}
"""
    decision = _decide(yaml_text, sql(sql_text))
    mine = [f for f in decision.findings if f.rule_id in ("orders-unfiltered", "orders-insert")]
    assert [f.rule_id for f in mine] == fired
    for finding in mine:
        assert finding.reason.endswith("is restricted by a rule")
        assert "orders" in finding.reason and finding.span is not None


@pytest.mark.parametrize(("tool", "path", "fired"), [
    ("write_file", "secrets/key.pem", ["secrets-any", "secrets-write"]),
    ("read_file", "secrets/key.pem", ["secrets-any"]),
    ("write_file", "docs/readme.md", []),
    ("write_file", "/workspace/config/prod.yaml", ["prod-config"]),
    ("list_files", "secrets", ["secrets-any"]),
])
def test_path_rules_match_their_access_and_any_of_their_globs(tool: str, path: str,
                                                              fired: list[str]) -> None:
    yaml_text = """
rules:
  - {kind: path, glob: "secrets/**", access: any, id: secrets-any, action: warn}
  - {kind: path, glob: ["secrets/*", "vault/*"], id: secrets-write, action: warn}
  - {kind: path, glob: config/prod.yaml, id: prod-config, action: warn}
"""
    decision = _decide(yaml_text, ToolAction(tool, {"path": path}))
    mine = [f for f in decision.findings if f.rule_id in ("secrets-any", "secrets-write",
                                                           "prod-config")]
    assert sorted(f.rule_id for f in mine) == sorted(fired)
    for finding in mine:
        access = "write" if tool == "write_file" else "read"
        assert finding.reason.startswith(f"{access} of /workspace/")
        assert finding.span is not None and finding.span.text == path


def test_a_write_outside_the_workspace_or_to_a_protected_path_names_the_path() -> None:
    decision = _decide("protected_paths: ['.github/**']",
                       ToolAction("write_file", {"path": "/etc/hosts", "content": "x"}))
    outside = next(f for f in decision.findings if f.rule_id == "path.outside-workspace")
    assert outside.reason == "/etc/hosts is outside the workspace and /tmp"
    assert outside.span is not None and (outside.span.start, outside.span.end) == (0, 10)
    protected = _decide("protected_paths: ['.github/**', '.github/workflows/**']",
                        ToolAction("write_file", {"path": ".github/workflows/ci.yml",
                                                  "content": "x"}), cwd="/workspace")
    hits = [f for f in protected.findings if f.rule_id == "path.protected"]
    assert [f.reason for f in hits] == [
        "/workspace/.github/workflows/ci.yml is protected by '.github/**'"], "one finding"
    off = _decide("protected_paths: ['.github/**']\nbuiltin: {path.protected: 'off', "
                  "path.outside-workspace: 'off'}",
                  ToolAction("write_file", {"path": ".github/x", "content": "x"}))
    assert {f.rule_id for f in off.findings}.isdisjoint({"path.protected"})
    assert _decide("builtin: {path.outside-workspace: 'off'}", ToolAction(
        "write_file", {"path": "/srv/data.txt", "content": "x"})).allowed


def test_a_relative_write_resolves_from_the_current_folder() -> None:
    decision = _decide("protected_paths: ['deploy/**']",
                       ToolAction("write_file", {"path": "x.yaml", "content": "x"}),
                       cwd="/workspace/deploy")
    assert decision.rule_id == "path.protected"


def test_approval_is_asked_with_the_action_and_its_answer_is_recorded() -> None:
    asked: list[tuple[str, str]] = []

    def approver(action: ToolAction, decision: Decision) -> bool:
        asked.append((action.tool, decision.rule_id or ""))
        return action.parameters.get("sql", "").startswith("GRANT SELECT")

    guard = guarded(approver=approver)
    approved = guard.authorize(sql("GRANT SELECT ON orders TO app"))
    denied = guard.authorize(sql("GRANT ALL ON orders TO app"))
    assert asked == [("db_mutate", "sql.privileges"), ("db_mutate", "sql.privileges")]
    assert (approved.verdict, approved.approval, approved.rule_id) == (
        Verdict.WARN, "approved", "sql.privileges")
    assert approved.reason.endswith(" (approved)") and approved.findings
    assert approved.span is not None and approved.span.text == "GRANT SELECT ON orders TO app"
    assert (denied.verdict, denied.approval) == (Verdict.BLOCK, "denied")
    assert denied.reason.endswith(" (approval denied)")
    unanswered = guarded().authorize(sql("GRANT ALL ON t TO x"))
    assert (unanswered.verdict, unanswered.approval) == (Verdict.BLOCK, "no-approver")
    assert unanswered.reason.endswith(" (needs approval; no approver is configured, so it is "
                                      "denied)")
    plain = guard.authorize(sql("SELECT 1"), Context(branch="main"))
    assert plain.allowed and plain.approval is None


def test_the_context_reaches_the_decision_through_authorize() -> None:
    guard = guarded("protected_branches: [main]")
    assert guard.authorize(shell("git push -f origin HEAD"), Context(branch="main")).rule_id \
        == "git.force-push"
    assert guard.authorize(shell("git push -f origin HEAD"), Context(branch="feature")).allowed


def test_shell_built_sql_names_the_unknown_effect_and_judges_the_known_parts() -> None:
    decision = policy().evaluate(shell('psql -c "DELETE FROM orders WHERE id = $ID"'))
    finding = next(f for f in decision.findings if f.rule_id == "sql.unknown-effect")
    assert finding.reason == ("the SQL is built from shell values only known at run time, "
                              "which can change what it does")
    assert finding.span is not None and finding.span.text.startswith("psql -c")
    readonly = guarded("protected_tables: [harness_unknown]").evaluate(
        shell('psql -c "SELECT * FROM orders WHERE id = $ID"'))
    assert "sql.protected-table" not in {f.rule_id for f in readonly.findings}


def test_an_unknown_builtin_rule_is_refused_naming_every_known_one() -> None:
    with pytest.raises(ConfigError) as refused:
        guarded("builtin: {shell.nope: block}")
    message = str(refused.value)
    assert "guardrails.builtin names unknown rules ['shell.nope']" in message
    assert "shell.recursive-delete, " in message


def test_write_file_findings_name_the_tool_and_point_at_the_whole_path() -> None:
    decision = _decide("", ToolAction("write_file", {"path": ".git/hooks/pre-commit",
                                                     "content": "x"}))
    finding = next(f for f in decision.findings if f.rule_id == "path.git-internals")
    assert finding.reason.startswith("write_file changes /workspace/.git/hooks/pre-commit")
    assert finding.span is not None and finding.span.text == ".git/hooks/pre-commit"
    protected = _decide("protected_paths: ['deploy/**']\nrules:\n"
                        "  - {kind: path, glob: 'deploy/**', action: warn}",
                        ToolAction("write_file", {"path": "deploy/x", "content": "x"}))
    hits = {f.rule_id: f for f in protected.findings}
    assert set(hits) == {"path.protected", "config.rules[0]"}, "a protection does not hide " \
        "the configured rules"
    assert hits["path.protected"].span is not None
    assert hits["path.protected"].span.text == "deploy/x"
    assert hits["config.rules[0]"].reason == "write of /workspace/deploy/x is restricted by a rule"


def test_rules_without_an_id_are_named_by_their_place() -> None:
    yaml_text = """
rules:
  - {kind: git, subcommand: branch, branches: [release], action: warn}
  - {kind: path, glob: "vault/**", access: read, action: warn}
"""
    assert _decide(yaml_text, shell("git branch -D release")).rule_id == "config.rules[0]"
    assert _decide(yaml_text, ToolAction("read_file", {"path": "vault/k"})).rule_id == \
        "config.rules[1]"


def test_a_branch_rule_reads_a_forced_refspec_as_its_branch() -> None:
    yaml_text = "rules:\n  - {kind: git, subcommand: push, branches: [release], id: rel, " \
                "action: warn}\nbuiltin: {git.force-push: 'off'}"
    assert _decide(yaml_text, shell("git push origin +release")).rule_id == "rel"
    assert _decide(yaml_text, shell("git push origin +releases")).rule_id is None


def test_what_sql_built_from_shell_values_is_found_to_do_points_at_the_command() -> None:
    decision = policy().evaluate(shell('ls; psql -c "DROP TABLE $NAME"'))
    dropped = next(f for f in decision.findings if f.rule_id == "sql.drop-table")
    assert dropped.span is not None and dropped.span.text == 'psql -c "DROP TABLE $NAME"'


def test_what_an_unmodelled_program_may_run_asks_instead_of_blocking() -> None:
    guessed = policy().evaluate(shell("some-new-wrapper --fast rm -rf /etc"))
    assert (guessed.verdict, guessed.rule_id) == (Verdict.REQUIRE_APPROVAL,
                                                   "shell.code-in-argument")
    assert "rm -r -f /etc" in guessed.reason
    known = policy().evaluate(shell("gosu root rm -rf /etc"))
    assert (known.verdict, known.rule_id) == (Verdict.BLOCK, "shell.recursive-delete")
    sql_guessed = policy().evaluate(shell("some-new-wrapper psql -c 'DROP TABLE orders'"))
    assert sql_guessed.verdict == Verdict.REQUIRE_APPROVAL
    assert policy("guardrails:\n  builtin: {shell.code-in-argument: off}\n").evaluate(
        shell("some-new-wrapper rm -rf /etc")).allowed


@pytest.mark.parametrize(("command", "rule_id"), [
    ("rm -rf \"$OUT_DIR\"", "shell.unknown-target"),
    ("rm -rf $DIR/", "shell.unknown-target"),
    ("rm -rf ${TMPDIR:-/}", "shell.unknown-target"),
    ("rm -rf \"$TMPDIR/pytest-of-$USER\"", None),
    ("rm -rf \"${XDG_CACHE_HOME}/myapp\"", None),
])
def test_a_delete_of_a_path_only_known_at_run_time_asks_and_a_conventional_one_is_judged(
        command: str, rule_id: str | None) -> None:
    decision = policy().evaluate(shell(command))
    assert decision.rule_id == rule_id, decision.reason
    assert decision.verdict == (Verdict.REQUIRE_APPROVAL if rule_id else Verdict.ALLOW)


@pytest.mark.parametrize(("command", "allowed"), [
    ("find . -name '*' -delete", False), ("find . -mtime -100000 -delete", False),
    ("find . ! -name keep.txt -delete", False), ("find . -name x -prune -o -delete", False),
    ("find . -size +0 -delete", False), ("rm -rf ./?*", False), ("rm -rf .*", False),
    ("find . -name '*.pyc' -delete", True), ("find . -mtime +30 -name '*.log' -delete", True),
    ("find . \\( -name '*.orig' -o -name '*.rej' \\) -delete", True),
    ("rm -rf .[!.]*.swp", True), ("rm -rf build-*", True),
])
def test_a_delete_that_selects_everything_by_a_pattern_or_test_is_a_wipe(
        command: str, allowed: bool) -> None:
    assert policy().evaluate(shell(command)).allowed is allowed


@pytest.mark.parametrize(("command", "rule_id"), [
    ("killall5 -9", "shell.destructive-program"),
    ("redis-cli -n 0 FLUSHDB", "shell.destructive-program"),
    ("alembic downgrade -1", "shell.database-reset"),
    ("python manage.py flush --noinput", "shell.database-reset"),
    ("bundle exec rails db:drop", "shell.database-reset"),
    ("terraform apply -destroy", "shell.infrastructure-change"),
    ("aws rds delete-db-instance --db-instance-identifier prod", "shell.infrastructure-change"),
    ("alembic upgrade head", None), ("redis-cli GET k", None), ("terraform plan", None),
])
def test_application_commands_that_destroy_data_are_known_by_name(
        command: str, rule_id: str | None) -> None:
    assert policy().evaluate(shell(command)).rule_id == rule_id


def test_every_program_a_rule_names_can_be_found_in_another_programs_arguments() -> None:
    from harness.guardrails import programs, rules

    named = rules._ALL_OPERANDS | rules._AFTER_FIRST | rules._DESTINATION | rules._POWER
    missing = {n for n in named if n not in programs.JUDGED and n not in programs.PROGRAMS}
    assert not missing, f"add to programs.JUDGED: {sorted(missing)}"
    guessed = policy().evaluate(shell("some-new-wrapper yarn prisma migrate reset"))
    assert guessed.verdict == Verdict.REQUIRE_APPROVAL


@pytest.mark.parametrize(("text", "rule_id"), [
    ("DELETE FROM pg_catalog.pg_proc WHERE proname = 'f'", "sql.system-catalog"),
    ("UPDATE pg_class SET relname = 'x' WHERE oid = 1", "sql.system-catalog"),
    ("ALTER TABLE orders RENAME COLUMN total TO amount", "sql.rename"),
    ("ALTER DATABASE app RENAME TO app_old", "sql.rename"),
    ("SELECT * FROM pg_catalog.pg_class", None),
    ("ALTER INDEX orders_idx RENAME TO orders_created_idx", None),
])
def test_catalogue_writes_are_blocked_and_renames_readers_see_ask(
        text: str, rule_id: str | None) -> None:
    assert policy().evaluate(sql(text)).rule_id == rule_id


def test_on_a_host_the_project_is_the_workspace_and_the_home_is_the_users() -> None:
    from harness.guardrails.places import Places

    host = Context(cwd="/home/alice/proj/src", places=Places.host("/home/alice/proj",
                                                                  "/home/alice"))
    p = policy()
    for allowed in ("sed -i s/a/b/ /home/alice/proj/src/app.py", "rm -rf ../build",
                    "echo hi > ~/proj/notes.txt", "rm -rf ~/.cache/pip", "ls ~/Documents"):
        assert p.evaluate(shell(allowed), host).allowed, allowed
    for stopped in ("rm -rf ~/Documents", "rm -rf ~/proj", "rm -rf ..", "rm -rf ~",
                    "cd ~ && rm -rf proj", "echo x >> ~/.bashrc", "echo x > /workspace/y"):
        assert not p.evaluate(shell(stopped), host).allowed, stopped
    assert p.evaluate(ToolAction("write_file", {"path": "/home/alice/proj/a.py"}),
                      host).allowed
    assert not p.evaluate(ToolAction("write_file", {"path": "/home/alice/.profile"}),
                          host).allowed


def test_a_host_project_that_holds_the_home_is_no_workspace() -> None:
    from harness.guardrails.places import Places

    home_as_project = Context(cwd="/home/alice", places=Places.host("/home/alice",
                                                                    "/home/alice"))
    assert not policy().evaluate(shell("rm -rf Documents"), home_as_project).allowed
    root_as_project = Context(cwd="/", places=Places.host("/", "/home/alice"))
    assert not policy().evaluate(shell("rm -rf /etc"), root_as_project).allowed


@pytest.mark.parametrize(("command", "rule_id"), [
    ("docker compose exec app rm -rf /tmp/cache", None),
    ("docker compose run --rm app rm -rf /etc", "shell.recursive-delete"),
    ("docker compose -f dev.yml exec -T db psql -c 'DROP TABLE orders'", "sql.drop-table"),
    ("docker compose down -v", "shell.infrastructure-change"),
    ("docker volume rm data", "shell.infrastructure-change"),
])
def test_a_command_run_in_a_container_is_judged_as_itself_not_as_the_container_cli(
        command: str, rule_id: str | None) -> None:
    assert policy().evaluate(shell(command)).rule_id == rule_id
