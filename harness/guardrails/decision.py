"""What the guardrails say about an action: a verdict, the rule that decided, and why."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Verdict(enum.IntEnum):
    """The possible outcomes, ordered by severity: the most severe finding wins."""

    ALLOW = 0
    WARN = 1
    REQUIRE_APPROVAL = 2
    BLOCK = 3

    @property
    def label(self) -> str:
        """The config and JSON spelling: allow, warn, require_approval, block."""
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Verdict:
        """The verdict spelt `label`."""
        return cls[label.upper()]


@dataclass(frozen=True)
class Span:
    """Where in the action's input a finding points: [start, end) in characters."""

    start: int
    end: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"start": self.start, "end": self.end, "text": self.text}


@dataclass(frozen=True)
class Finding:
    """One rule that matched."""

    rule_id: str
    verdict: Verdict
    reason: str
    span: Span | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "rule_id": self.rule_id,
            "decision": self.verdict.label,
            "reason": self.reason,
            "span": self.span.to_dict() if self.span else None,
        }


@dataclass(frozen=True)
class Decision:
    """The guardrails' answer for one action: the most severe finding, and all of them."""

    verdict: Verdict
    rule_id: str | None
    reason: str
    span: Span | None = None
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    approval: str | None = None
    """For a require_approval finding resolved by `Policy.authorize`: approved, denied or
    no-approver (denied because none is configured)."""

    @property
    def allowed(self) -> bool:
        """Whether the action may run (allow or warn)."""
        return self.verdict <= Verdict.WARN

    @classmethod
    def from_findings(cls, findings: list[Finding]) -> Decision:
        """The decision of the most severe finding (the first of equals), or allow."""
        if not findings:
            return cls(Verdict.ALLOW, None, "no rule matched")
        worst = max(findings, key=lambda f: f.verdict)  # max keeps the first of equals
        return cls(worst.verdict, worst.rule_id, worst.reason, worst.span, tuple(findings))

    def to_dict(self) -> dict[str, Any]:
        """The JSON that `harness check` prints."""
        data: dict[str, Any] = {
            "decision": self.verdict.label,
            "rule_id": self.rule_id,
            "reason": self.reason,
            "span": self.span.to_dict() if self.span else None,
            "findings": [finding.to_dict() for finding in self.findings],
        }
        if self.approval:
            data["approval"] = self.approval
        return data
