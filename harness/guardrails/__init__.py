"""Deterministic guardrails: every proposed action is judged by code before it runs."""

from harness.guardrails.decision import Decision, Finding, Span, Verdict
from harness.guardrails.policy import KNOWN_TOOLS, Approver, Context, Policy

__all__ = ["KNOWN_TOOLS", "Approver", "Context", "Decision", "Finding", "Policy", "Span", "Verdict"]
