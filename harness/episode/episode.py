"""The episode: one agent's run in one sandbox. Every action passes the same pipeline:
guardrails decide -> budget pre-check -> execute in the sandbox -> measure the effect
(rows from the capture, commits from git) -> update counters -> record a trace span.
A refused action returns a structured refusal the agent can read; the episode goes on."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from harness.changeset import ChangeSet
from harness.config import Config, DbSchemaSource, FileSource
from harness.episode.attribution import ActionWindow, attribute
from harness.episode.state import (
    InjectedState,
    auth_headers,
    database_schema,
    environment,
    file_state,
    sources_of,
)
from harness.errors import HarnessError, SandboxError, SandboxFileTooLarge
from harness.guardrails import Context, Decision, Policy
from harness.guardrails.decision import Verdict
from harness.guardrails.policy import Approver
from harness.home import state_dir
from harness.limits import Budget, Violation
from harness.limits.effects import Breach, Effects, evaluate
from harness.promote.promotion import PromotionResult
from harness.redaction import Redactor
from harness.sandbox import Sandbox
from harness.sandbox.capture import Mark, RowDelta
from harness.sandbox.pool import SandboxPool
from harness.sandbox.workspace import WorkspaceChanges
from harness.sandbox.workspace_states import WorkspaceState, WorkspaceStates
from harness.tools import (
    TOOLS,
    ActionError,
    Effect,
    Judged,
    Refusal,
    Status,
    Tool,
    ToolAction,
    in_workspace,
    parameter_problem,
)
from harness.trace.writer import Span, Tracer

_LOG = logging.getLogger("harness.episode")


@dataclass(frozen=True)
class _Before:
    """What an action's effects are measured from."""

    mark: Mark | None
    state: WorkspaceState | None
    unrecorded: str | None = None
    """Why the workspace could not be recorded before the action (its files and commits
    then go unjudged by this action's policies; promotion still judges them)."""


@dataclass(frozen=True)
class ActionResult:
    """The outcome of one action, as the agent reads it and the trace records it."""

    index: int
    tool: str
    status: Status
    output: dict[str, Any] = field(default_factory=dict)
    refusal: Refusal | None = None
    decision: dict[str, Any] | None = None
    counters: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    span_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)

    def observation(self) -> str:
        """What an agent sees: the output, or the refusal and how to go on."""
        if self.refusal is not None:
            what = ("The statement ran in a transaction that was rolled back: nothing it "
                    "changed was kept" if self.output.get("rolled_back")
                    else "The action did not run")
            return (f"REFUSED by the harness ({self.refusal.kind} {self.refusal.rule}): "
                    f"{self.refusal.reason}. {what}; try something else.")
        return json.dumps(self.output, default=str)


class Episode:
    """An agent's run: `with Episode(config) as episode: episode.act(action)`; `close()`
    returns the ChangeSet. Sync API; one action at a time."""

    def __init__(self, config: Config, *, trace_path: Path | None = None,
                 approver: Approver | None = None, host_env: Mapping[str, str] | None = None,
                 config_source: str | None = None,
                 hidden_env: Mapping[str, str] | None = None,
                 pool: SandboxPool | None = None) -> None:
        if not config.target.repo:
            raise HarnessError("the config names no target repository (target.repo)")
        self.config = config
        self.config_source = config_source
        _LOG.setLevel(config.observability.logging.level.upper())
        self.policy = Policy(config.guardrails, approver=approver)
        self.budget = Budget(config.orchestrator.blast_radius, config.orchestrator.limits)
        self._env = environment(config.state_injection, host_env)
        self._secret_env = environment(config.state_injection, host_env, secret=True)
        self._headers = auth_headers(config.state_injection, host_env)
        credentials = [v for v in self._headers.values() if v] + list(self._secret_env.values())
        self.redactor = Redactor(credentials)
        self._credentials = Redactor(credentials)
        """The credentials alone (not the sandbox's own password): a change set that
        carries one must not reach the real systems."""
        self.tracer = Tracer(None, redactor=self.redactor, root="episode")
        self.trace_path = trace_path or Path(config.observability.tracing.path or
                                             state_dir("traces")) / f"{self.tracer.trace_id}.jsonl"
        sandbox_env = {**(hidden_env or {}), **self._env}  # hidden: set, but never told
        if config.observability.tracing.propagate_trace_id:
            sandbox_env["HARNESS_TRACE_ID"] = self.tracer.trace_id
            sandbox_env["TRACEPARENT"] = f"00-{self.tracer.trace_id}-{self._root_id}-01"
        self.sandbox = Sandbox(config.target.repo, ref=config.target.branch,
                               settings=config.sandbox, environment=sandbox_env,
                               database=config.target.database)
        self._pool = pool
        """Where the sandbox comes from ready-made (else it is opened here)."""
        self._sandbox_env = sandbox_env
        self.state = InjectedState()
        self.results: list[ActionResult] = []
        self._db: psycopg.Connection[Any] | None = None
        self._closed: ChangeSet | None = None
        self._windows: list[ActionWindow] = []
        """Which captured statements each action ran: every changed row names its action."""
        self._states = WorkspaceStates(self.sandbox.workspace)
        """The workspace before an action, to judge its files and commits and undo them."""
        self._last_state: WorkspaceState | None = None
        """The workspace after the last action, when nothing has changed it since."""

    # ------------------------------------------------------------ lifecycle

    def open(self) -> Episode:
        """Open the sandbox, inject the state and start the trace."""
        try:
            if self._pool is not None:
                target = self.config.target
                self.sandbox = self._pool.acquire(
                    target.repo or "", ref=target.branch, settings=self.config.sandbox,
                    database=target.database, environment=self._sandbox_env)
                self._states = WorkspaceStates(self.sandbox.workspace)
            else:
                self.sandbox.open()
            if self.sandbox.database is not None:
                for secret in self.sandbox.database.secrets():
                    self.redactor.add(secret)
            tracing = self.config.observability.tracing
            self.tracer = Tracer(self.trace_path if tracing.enabled else None,
                                 redactor=self.redactor, trace_id=self.tracer.trace_id,
                                 otlp_endpoint=tracing.otlp_endpoint if tracing.enabled else None,
                                 root="episode", root_id=self._root_id,
                                 tool_io=self.config.observability.logging.include_tool_io)
            self.state = self._inject()
            self.tracer.event("episode.start", sandbox=self.sandbox.id,
                              config=self.config.model_dump(mode="json"),
                              config_source=self.config_source,
                              hardening_overrides=self.sandbox.hardening_overrides,
                              base=self.sandbox.workspace.base, state=self.state.to_dict(),
                              **self._made_how())
        except BaseException:
            self.sandbox.close()
            raise
        return self

    def _made_how(self) -> dict[str, Any]:
        """How the sandbox's workspace and database were made (which path ran, and why)."""
        workspace = self.sandbox.workspace
        made: dict[str, Any] = {"workspace_view": {"view": workspace.view,
                                                   "detail": workspace.view_detail}}
        database = self.sandbox.database
        if database is not None:
            made["database_clone"] = {"method": database.clone_method,
                                      "seconds": round(database.clone_seconds, 4),
                                      "detail": database.clone_detail}
            made["database_server"] = {"version": database.server.version,
                                       "chosen_because": database.server.chosen_because}
        return made

    def interrupt(self) -> None:
        """Stop the action running now, from another thread (its caller gave up on it): its
        commands are killed and its SQL cancelled; it still ends, measured and traced."""
        self.sandbox.interrupt()
        if self._db is not None and not self._db.closed:
            self._db.cancel_safe()

    def close(self) -> ChangeSet:
        """Measure the whole change, end the trace and remove the sandbox."""
        if self._closed is not None:
            return self._closed
        try:
            changes = self.changes(keep=True)
            self.tracer.event("episode.end", counters=self.budget.counters.to_dict(),
                              changeset=changes.summary(),
                              files=[{"path": f.path, "status": f.status, "added": f.added,
                                      "removed": f.removed} for f in changes.workspace.files],
                              commits=[{"sha": c.sha, "message": c.message.splitlines()[0]
                                        if c.message else ""}
                                       for c in changes.workspace.commits])
            self._closed = changes
            return changes
        finally:
            if self._db is not None:
                self._db.close()
            self.tracer.close(sandbox=self.sandbox.id, actions=len(self.results))
            self.sandbox.close()

    def changes(self, *, keep: bool = False) -> ChangeSet:
        """The change set as it stands now (the episode goes on); with `keep`, its commits
        are kept in a bundle for promotion (as `close` does)."""
        workspace, rows = self.sandbox.changes(), self.sandbox.row_delta()
        carried = self._credentials_in(workspace, rows)
        # A change that carries a credential is never promoted: its commits are not kept
        # either, and what is shown of it is redacted (the row images stay exact).
        bundle = state_dir("changesets") / f"{self.tracer.trace_id}.bundle"
        kept = keep and not carried and self.sandbox.workspace.bundle(bundle)
        shown = replace(workspace, diff=self.redactor(workspace.diff), commits=[
            replace(c, message=self.redactor(c.message)) for c in workspace.commits])
        return ChangeSet(self.tracer.trace_id, shown, rows, bundle if kept else None, carried,
                         attribute(rows, self._windows) if self._attributing else {})

    def _credentials_in(self, workspace: WorkspaceChanges, rows: RowDelta | None) -> list[str]:
        """Where the change carries a credential the episode held (the agent can print a
        secret variable into a file, a commit message or a row)."""
        found: list[str] = []
        # The files themselves, not their diff: a binary file (or one marked -diff) shows
        # no lines in a diff, and a credential may sit in it all the same.
        for change in workspace.files:
            content = self.sandbox.workspace.file_at(workspace.head, change.path)
            if self._credentials.finds(content.decode("utf-8", "surrogateescape")):
                found.append(change.path)
        if any(self._credentials.finds(c.message) for c in workspace.commits):
            found.append("commit message")
        for name, table in (rows.tables.items() if rows is not None else []):
            images = json.dumps([table.inserted, [u.after for u in table.updated]], default=str)
            if self._credentials.finds(images):
                found.append(name)
        return found

    def promote(self, *, dry_run: bool | None = None) -> PromotionResult:
        """Close the episode (if open) and hand its change set to the diff-and-commit stage;
        with dry_run (default: the config's) only the plan and its conflicts are shown."""
        from harness.promote import promote

        return promote(self.close(), self.config, dry_run=dry_run)

    def __enter__(self) -> Episode:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def _root_id(self) -> str:
        """The episode span's id: every action's span is under it."""
        assert self.tracer.root is not None
        return self.tracer.root.span_id

    @property
    def trace_id(self) -> str:
        """The id every span of this episode carries."""
        return self.tracer.trace_id

    @staticmethod
    def tool_schemas() -> list[dict[str, Any]]:
        """The built-in tools in the Chat Completions `tools` format."""
        return [spec.openai_schema() for spec in TOOLS.values() if spec.offered]

    # ------------------------------------------------------------ acting

    def act(self, action: ToolAction | Mapping[str, Any] | str) -> ActionResult:
        """Run one action through the whole pipeline; never raises for the agent's mistakes."""
        index = len(self.results)
        started = time.monotonic()
        with self.tracer.span("action", index=index) as span:
            result = self._act(action, index, span)
            result = ActionResult(**{**asdict(result), "refusal": result.refusal,
                                     "duration_s": round(time.monotonic() - started, 6),
                                     "span_id": span.span_id,
                                     "counters": self.budget.counters.to_dict()})
            result = self._redacted(result)
            logging_config = self.config.observability.logging
            span.set(status=result.status, counters=result.counters,
                     refusal=asdict(result.refusal) if result.refusal else None,
                     result=_summary(result.output))
            if logging_config.include_tool_io:
                span.set(output=result.output)  # redacted when written, like every attribute
        self.results.append(result)
        self._log(result, span)
        return result

    def _redacted(self, result: ActionResult) -> ActionResult:
        """The result as the agent may see it: every secret the harness holds, in every form
        it redacts, replaced (a command can print a secret variable; a server can echo a
        header)."""
        refusal = result.refusal
        if refusal is not None:
            refusal = Refusal(refusal.kind, refusal.rule, self.redactor(refusal.reason))
        return replace(result, output=self.redactor(result.output), refusal=refusal,
                       decision=self.redactor(result.decision))

    def _log(self, result: ActionResult, span: Span) -> None:
        if result.refusal is not None:
            _LOG.info("#%d %s refused by %s %s: %s", result.index, result.tool,
                      result.refusal.kind, result.refusal.rule, result.refusal.reason)
        else:
            _LOG.info("#%d %s %s in %.0f ms", result.index, result.tool, result.status,
                      result.duration_s * 1000)
        if self.config.observability.logging.include_tool_io:
            _LOG.debug("#%d parameters %s output %s", result.index,
                       json.dumps(span.attributes.get("parameters"), default=str),
                       json.dumps(self.redactor(result.output), default=str)[:4000])

    def _act(self, raw: ToolAction | Mapping[str, Any] | str, index: int, span: Span
             ) -> ActionResult:
        counters = self.budget.counters
        try:
            action = raw if isinstance(raw, ToolAction) else (
                ToolAction.from_json(raw) if isinstance(raw, str) else ToolAction.from_dict(raw))
        except ActionError as exc:
            counters.refused += 1
            span.set(tool=None, parameters=None)
            return ActionResult(index, "?", "refused", refusal=Refusal("invalid", "bad-action",
                                                                       str(exc)))
        span.set(tool=action.tool, parameters=recorded_parameters(action.parameters))
        problem = parameter_problem(action)
        if problem is not None:
            counters.refused += 1
            return ActionResult(index, action.tool, "refused",
                                refusal=Refusal("invalid", "bad-parameters", problem))
        tool = TOOLS[action.tool]
        with self.tracer.span("guardrail", span) as check:
            # A command line may switch branches; other tools judge against the episode's.
            branch = self.sandbox.workspace.current_branch() if tool.judged is Judged.SHELL \
                else self.sandbox.workspace.branch
            decision = self.policy.authorize(action, Context(branch=branch))
            check.set(decision=decision.verdict.label, rule_id=decision.rule_id,
                      reason=decision.reason, approval=decision.approval)
        if not decision.allowed:
            counters.refused += 1
            return ActionResult(index, action.tool, "refused", decision=decision.to_dict(),
                                refusal=Refusal("guardrail", decision.rule_id or "?",
                                                decision.reason))
        overrun = self.budget.before(tool.needs)
        if overrun is not None:
            counters.refused += 1
            return self._over(index, action, decision, overrun)
        counters.actions += 1
        before = self._before(tool)
        with self.tracer.span("execute", span) as execution:
            status, output, stop = self._execute(tool, action)
            execution.set(status=status)
        if isinstance(stop, Refusal):
            counters.refused += 1
            return ActionResult(index, action.tool, "refused", output, refusal=stop,
                                decision=decision.to_dict() if decision.findings else None)
        with self.tracer.span("measure", span) as measure:
            notes = self._measure(tool)
            measure.set(commits=counters.commits, rows=counters.rows, **notes)
            output.update(notes)
        if stop is not None:
            counters.refused += 1
            return self._over(index, action, decision, stop, output)
        with self.tracer.span("effects", span) as judged:
            refusal = self._judge_effects(tool, action, index, span, before, output)
            judged.set(refused=refusal.rule if refusal else None,
                       undone=output.get("undone"))
        if refusal is not None:
            counters.refused += 1
            return ActionResult(index, action.tool, "refused", output, refusal=refusal,
                                decision=decision.to_dict() if decision.findings else None)
        return ActionResult(index, action.tool, status, output, decision=decision.to_dict()
                            if decision.findings else None)

    # ------------------------------------------------------------ effects

    @property
    def _attributing(self) -> bool:
        return self.config.observability.attribute_rows or bool(self.config.effects)

    def _before(self, tool: Tool) -> _Before:
        """What the action's effects are measured from: the capture's mark (rows), and the
        workspace's state (files, commits) when effect policies may need to undo them."""
        database = self.sandbox.database
        mark = database.mark() if self._attributing and database is not None \
            and Effect.ROWS in tool.affects else None
        # With effect policies to judge them, or a trace to show them in.
        recording = bool(self.config.effects) or self.config.observability.tracing.enabled
        if not (recording and tool.affects & {Effect.FILES, Effect.COMMITS}):
            return _Before(mark, None)
        last, self._last_state = self._last_state, None
        if last is not None and not self.config.effects:
            # For the trace alone, the state after the last action will do (effect
            # policies judge from a state recorded now: a background process may have
            # written since).
            return _Before(mark, last)
        try:
            return _Before(mark, self._states.record())
        except SandboxError as exc:
            return _Before(mark, None, str(exc))

    def _settle(self, tool: Tool, output: dict[str, Any]) -> None:
        """With effect policies, what an action did must be done when it returns: its
        processes left running (`cmd &`, `setsid`, `nohup`) are killed and its database
        sessions left open are ended, so nothing changes after it has been judged."""
        if not self.config.effects or not tool.affects & {Effect.FILES, Effect.COMMITS,
                                                          Effect.ROWS}:
            return
        killed = self.sandbox.exec(["bash", "-c", _END_BACKGROUND], timeout=30)
        ended = _count(killed.stdout)
        if self.config.sandbox.hardening.exec_users:
            # Programs may have run as other users: each one's processes are ended by a
            # process of theirs (without capabilities, not even root may kill another's).
            others = self.sandbox.container.exec(["bash", "-c", _OTHER_USERS], timeout=30)
            for uid in others.stdout.split():
                ended += _count(self.sandbox.container.exec(
                    ["bash", "-c", _END_BACKGROUND], timeout=30, user=uid).stdout)
        if ended:
            output["background_ended"] = ended
        database = self.sandbox.database
        if database is not None:
            keep = [self._db.info.backend_pid] if self._db is not None and not \
                self._db.closed else []
            ended = database.end_other_sessions(keep)
            if ended:
                output["sessions_ended"] = ended

    def _judge_effects(self, tool: Tool, action: ToolAction, index: int, span: Span,
                       before: _Before, output: dict[str, Any]) -> Refusal | None:
        """Attribute the action's rows to it, judge what it did against the effect
        policies, and undo it when one blocks (or needs an approval that is not given)."""
        self._settle(tool, output)
        database = self.sandbox.database
        rows = None
        if before.mark is not None and database is not None:
            after = database.mark()
            self._windows.append(ActionWindow(index, span.span_id,
                                                      before.mark.statement, after.statement))
            if after != before.mark:
                rows = database.delta(between=(before.mark, after))
                summary = rows.summary()
                span.set(rows=summary["tables"], ddl=summary["ddl"] or None)
        files, commits = [], []
        unrecorded: list[Breach] = []
        if before.state is not None:
            try:
                now = self._states.record()
                files = self._states.files_between(before.state, now)
                commits = self._states.commits_between(before.state, now)
                self._last_state = now
            except SandboxError as exc:
                # What cannot be measured cannot be let stand.
                unrecorded.append(Breach("workspace-unrecorded", "block", 0, 1,
                                         f"the workspace could not be recorded after the "
                                         f"action, so its files and commits cannot be judged "
                                         f"({exc})"))
            if files or commits:  # the trace shows what each action changed
                span.set(files=[{"path": f.path, "status": f.status, "added": f.added,
                                 "removed": f.removed} for f in files] or None,
                         commits=[{"sha": c.sha, "message": c.message.splitlines()[0]
                                   if c.message else ""} for c in commits] or None)
        if not self.config.effects:
            return None
        if before.unrecorded is not None:
            output["workspace_unrecorded"] = before.unrecorded
        breaches = unrecorded + evaluate(self.config.effects, Effects(files, commits, rows))
        warned = [b.to_dict() for b in breaches if b.decision == "warn"]
        if warned:
            output["effects_warned"] = warned
        stopping = [b for b in breaches if b.decision == "block" or (
            b.decision == "require_approval" and not self._approved(action, b))]
        if not stopping:
            return None
        output["effects"] = [b.to_dict() for b in stopping]
        started = time.monotonic()
        output["undone"] = self._undo(before, rows)
        output["undone"]["duration_s"] = round(time.monotonic() - started, 6)
        if "rows_error" not in output["undone"]:
            # Its rows are back: no row names it any more.
            self._windows = [w for w in self._windows if w.index != index]
        self._measure(tool)
        first = stopping[0]
        undone = output["undone"]
        kept = []
        if "rows_error" in undone:
            kept.append("its rows (" + "; ".join(undone["rows_error"]) + ")")
        if undone.get("workspace") == "not restored":
            kept.append("its files and commits (the workspace did not come back as it was)")
        said = "the action's effects were undone" if not kept else \
            "the action's effects could not all be undone: " + " and ".join(kept) + " remain"
        if "schema_changes" in undone:
            said += " (its schema changes stay: only rows, files and commits are undone)"
        return Refusal("effect", first.policy, f"{first.detail}; {said}")

    def _approved(self, action: ToolAction, breach: Breach) -> bool:
        approver = self.policy.approver
        if approver is None:
            return False
        return approver(action, Decision(Verdict.REQUIRE_APPROVAL, breach.policy,
                                         breach.detail))

    def _undo(self, before: _Before, rows: RowDelta | None) -> dict[str, Any]:
        """Put back what one action changed: its rows (their inverse, applied with the
        target's own triggers silent), its files, commits and refs."""
        undone: dict[str, Any] = {}
        database = self.sandbox.database
        if rows is not None and rows.rows and database is not None:
            from harness.promote.rows import apply_delta, invert

            # Everything back, masked columns too: this is the sandbox, not the target.
            inverse = invert(rows)
            inverse = replace(inverse, tables={name: replace(table, masked=[])
                                               for name, table in inverse.tables.items()})
            try:
                # As the undo role, never a superuser: a CHECK or trigger the agent planted
                # runs during the undo with no more rights than the agent's.
                with database.connect_to_undo(autocommit=False) as conn:
                    _, conflicts, _ = apply_delta(conn, inverse, ddl=False, triggers="sandbox")
                    if conflicts:
                        conn.rollback()
                        undone["rows_error"] = [
                            f"{c.table}: {c.reason.replace('the target', 'the sandbox')}"
                            for c in conflicts][:5]
                    else:
                        conn.commit()
                        undone["rows"] = rows.rows
            except (HarnessError, psycopg.Error) as exc:
                undone["rows_error"] = [f"the sandbox database refused the undo: {exc}"
                                        .strip()[:500]]
        if rows is not None and rows.ddl:
            undone["schema_changes"] = [d.query or d.command_tag for d in rows.ddl]
        if before.state is not None:
            undone["workspace"] = "restored" if self._states.restore(
                self.sandbox, before.state) else "not restored"
        return undone

    def _over(self, index: int, action: ToolAction, decision: Decision, overrun: Violation,
              output: dict[str, Any] | None = None) -> ActionResult:
        return ActionResult(index, action.tool, "refused", output or {},
                            refusal=Refusal("budget", overrun.limit, overrun.reason),
                            decision=decision.to_dict() if decision.findings else None)

    # ------------------------------------------------------------ tools

    def _execute(self, tool: Tool, action: ToolAction
                 ) -> tuple[Status, dict[str, Any], Violation | Refusal | None]:
        try:
            result = tool.handler(self, action.parameters)
        except OSError as exc:  # a file missing, a folder, no permission: typed for callers
            kind = next(k for k in type(exc).__mro__ if k.__module__ == "builtins")
            return "error", {"error": f"{kind.__name__}: {exc}",
                             "error_kind": _ERROR_KINDS.get(kind, "os")}, None
        except SandboxFileTooLarge as exc:
            return "error", {"error": str(exc), "error_kind": "too_large", "bytes": exc.size,
                             "limit": exc.limit}, None
        except psycopg.Error as exc:
            return "error", {"error": _pg_error(exc)}, None
        except HarnessError as exc:
            return "error", {"error": str(exc)}, None
        except Exception as exc:  # an agent's input must never end the episode
            message = self.redactor(f"{type(exc).__name__}: {exc}")
            _LOG.error("#%s %s failed: %s", len(self.results), action.tool, message)
            return "error", {"error": message}, None
        return result.status, result.output, result.stop

    # What a tool's handler may use (harness.tools.ToolContext).

    @property
    def edge_headers(self) -> dict[str, str]:
        """The auth headers added at the edge that have a value."""
        return {k: v for k, v in self._headers.items() if v}

    def shell(self, command: str | list[str], timeout: float | None = None, *,
              cwd: str | None = None, env: Mapping[str, str] | None = None,
              stdin: bytes | None = None, user: str | None = None) -> dict[str, Any]:
        """Run a command in the sandbox within the shell budget (and counted)."""
        settings = self.config.sandbox
        timeout = min(timeout or settings.exec_timeout_s, settings.max_exec_timeout_s)
        remaining = self.budget.remaining_shell_seconds()
        if remaining is not None:
            timeout = min(timeout or remaining, remaining)
        result = self.sandbox.exec(command, timeout=timeout, cwd=cwd, env=env, stdin=stdin,
                                   user=user)
        counters = self.budget.counters
        counters.shell_seconds += result.duration_s
        counters.output_bytes += len(result.stdout.encode()) + len(result.stderr.encode())
        return result.to_dict()

    def connection(self) -> psycopg.Connection[Any]:
        """The episode's connection to its sandbox database, as the agent's role."""
        database = self.sandbox.database
        if database is None:
            raise HarnessError("this episode has no database (target.database is not set)")
        if self._db is None or self._db.closed:
            self._db = database.connect(autocommit=False)
        return self._db

    def weigh_rows(self, projected: int) -> Violation | None:
        """Whether `projected` changed rows break the row budget."""
        return self.budget.weigh(projected)

    def rows_counted(self) -> int:
        """Rows changed so far, as last measured."""
        return self.budget.counters.rows

    def count_output(self, size: int) -> None:
        """Count bytes an action returned."""
        self.budget.counters.output_bytes += size

    # ------------------------------------------------------------ measuring

    def _measure(self, tool: Tool) -> dict[str, Any]:
        """Commits from git and rows from the capture, after the tools that can change them.
        Commits past the budget made through the shell are reset away (their changes stay,
        uncommitted)."""
        notes: dict[str, Any] = {}
        counters = self.budget.counters
        if Effect.COMMITS in tool.affects:
            workspace = self.sandbox.workspace
            counters.commits = workspace.commit_count()
            allowed = self.config.orchestrator.blast_radius.max_commits
            if counters.commits > allowed:
                notes["commits_reset"] = self._reset_commits(allowed)
                counters.commits = workspace.commit_count()
        if Effect.ROWS in tool.affects and self.sandbox.database is not None:
            counters.rows = self.sandbox.database.delta().rows
            if counters.rows > self.config.orchestrator.blast_radius.max_database_rows:
                notes["rows_over_budget"] = counters.rows
        return notes

    def _reset_commits(self, allowed: int) -> list[str]:
        workspace = self.sandbox.workspace
        new = workspace.git("rev-list", "--reverse", f"{workspace.base}..HEAD").split()
        keep = new[allowed - 1] if allowed > 0 and len(new) >= allowed else workspace.base
        self.shell(["git", "reset", "-q", "--soft", keep])
        return new[allowed:] if allowed > 0 else new

    # ------------------------------------------------------------ state

    def _inject(self) -> InjectedState:
        schema: dict[str, Any] = {}
        database = self.sandbox.database
        db_sources = sources_of(self.config.state_injection, DbSchemaSource)
        if database is not None and db_sources:
            tables = [t for source in db_sources for t in source.tables]
            with database.connect_as_owner() as conn:
                schema = database_schema(conn, tables)
        files = []
        for source in sources_of(self.config.state_injection, FileSource):
            path = in_workspace(source.path)
            relative = path.removeprefix("/workspace/")
            try:
                content = self.sandbox.read_file(path)
            except FileNotFoundError:
                continue
            stamp = self.sandbox.workspace.git("log", "-1", "--format=%ct", "--", relative)
            # `git status` reads the work tree (and so filters): run it inside, not on the host.
            status = self.sandbox.exec(["git", "status", "--porcelain", "--", relative])
            dirty = bool(status.stdout.strip())
            files.append(file_state(relative, content, int(stamp) if stamp else None, dirty))
        return InjectedState(env={k: v for k, v in self._env.items()
                                  if k not in self._secret_env},
                             secret_env=sorted(self._secret_env), schema=schema,
                             auth_headers={k: v is not None for k, v in self._headers.items()},
                             files=files)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pg_error(exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [diag.message_primary or str(exc).strip()]
    if diag.message_detail:
        parts.append(f"DETAIL: {diag.message_detail}")
    if diag.sqlstate:
        parts.append(f"(SQLSTATE {diag.sqlstate})")
    return " ".join(parts)


_END_BACKGROUND = r"""
keep=" 1 $$ " p=$$
while [ "$p" -gt 1 ]; do read -r _ _ _ p _ < /proc/$p/stat || break; keep="$keep$p "; done
n=0
for _ in 1 2 3; do
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    case $keep in *" $pid "*) continue;; esac
    [ -O "$d" ] && kill -KILL "$pid" 2>/dev/null && n=$((n + 1))
  done
done
echo $n
"""
"""Kill every process of the agent's user but this script and its launcher (three passes:
a process may fork while the first runs)."""

_OTHER_USERS = r"""
me=$(id -u) seen=" "
for d in /proc/[0-9]*; do
  while read -r k v _; do
    if [ "$k" = "Uid:" ]; then
      case $seen in *" $v "*) ;; *) [ "$v" != "$me" ] && seen="$seen$v ";; esac
      break
    fi
  done < "$d/status" 2>/dev/null
done
echo $seen
"""
"""The uids, other than the caller's, that own a process in the sandbox."""


def _count(text: str) -> int:
    return int(text.strip()) if text.strip().isdigit() else 0


_ERROR_KINDS: dict[type, str] = {
    FileNotFoundError: "not_found", IsADirectoryError: "is_a_directory",
    NotADirectoryError: "not_a_directory", PermissionError: "permission",
    TimeoutError: "timeout"}
"""`error_kind` of a tool's error result, by the builtin error it stands for."""

RECORDED_CHARS = 1 << 16
"""A parameter longer than this is recorded in the trace by its length and digest."""


def recorded_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as the trace keeps them: a long text (a file's content, a large
    input) by its length and sha256, so that traces stay readable and small."""
    return {name: {"omitted_chars": len(value),
                   "sha256": hashlib.sha256(value.encode(errors="replace")).hexdigest()}
            if isinstance(value, str) and len(value) > RECORDED_CHARS else value
            for name, value in parameters.items()}


def _summary(output: dict[str, Any]) -> dict[str, Any]:
    """What the trace keeps of an output: short values whole, long text by size and digest."""
    summary: dict[str, Any] = {}
    if isinstance(output.get("stdout"), str):
        summary["stdout_sha256"] = _sha(output["stdout"].encode())
    for key, value in output.items():
        if isinstance(value, str) and len(value) > 512:
            summary[key] = {"bytes": len(value.encode()), "sha256": _sha(value.encode()),
                            "head": value[:200]}
        elif key == "results":
            summary[key] = [{k: v for k, v in r.items() if k != "rows"} | (
                {"rows_sha256": _sha(json.dumps(r["rows"], default=str).encode())}
                if "rows" in r else {}) for r in value]
        elif key == "entries":
            summary[key] = len(value)
        else:
            summary[key] = value
    return summary
