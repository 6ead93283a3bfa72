"""The gate's verdict: one check per concern, rendered as markdown, JUnit XML and JSON."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    """One concern of the gate: passed or not, and why."""

    name: str
    passed: bool
    summary: str
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class GateReport:
    """Every check of one pull request."""

    repo: str
    base: str
    head: str
    commits: int
    files: int
    checks: list[Check]

    @property
    def passed(self) -> bool:
        """Whether the PR fits: every check passed."""
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {**asdict(self), "passed": self.passed}

    def markdown(self) -> str:
        """A summary suited to a PR comment or a CI job summary."""
        verdict = "fits the limits" if self.passed else "does NOT fit the limits"
        lines = [f"## harness gate: {'✅' if self.passed else '❌'} this PR {verdict}", "",
                 f"`{self.base[:12]}..{self.head[:12]}`: {self.commits} commit(s), "
                 f"{self.files} file(s)", "", "| check | result | |", "|---|---|---|"]
        for check in self.checks:
            lines.append(f"| {check.name} | {'pass' if check.passed else '**FAIL**'} | "
                         f"{check.summary} |")
        for check in self.checks:
            if check.details and not check.passed:
                lines += ["", f"### {check.name}", ""]
                lines += [f"- {detail}" for detail in check.details]
        return "\n".join(lines) + "\n"

    def junit_xml(self) -> str:
        """JUnit XML, one test case per check, so every CI shows the gate natively."""
        suite = ET.Element("testsuite", name="harness gate", tests=str(len(self.checks)),
                           failures=str(sum(not c.passed for c in self.checks)), errors="0",
                           time=f"{sum(c.seconds for c in self.checks):.3f}")
        for check in self.checks:
            case = ET.SubElement(suite, "testcase", classname="harness.gate", name=check.name,
                                 time=f"{check.seconds:.3f}")
            if not check.passed:
                failure = ET.SubElement(case, "failure", message=check.summary)
                failure.text = "\n".join(check.details)
            elif check.details:
                ET.SubElement(case, "system-out").text = "\n".join(check.details)
        return str(ET.tostring(suite, encoding="unicode", xml_declaration=True))
