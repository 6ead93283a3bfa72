"""The gate's verdict: one check per concern, each with its findings (file and line where
they have them), rendered as markdown, JUnit XML and JSON."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Finding:
    """One thing a check found: where (`path`, `line`, when it has them), what, and the
    rule that says so. `message` may hold `code spans` for paths and globs."""

    message: str
    path: str | None = None
    line: int | None = None
    rule: str | None = None

    @property
    def where(self) -> str:
        """`path:line` or `path` to put before the message; empty when there is no path
        or the message already names it."""
        if not self.path or (not self.line and f"`{self.path}`" in self.message):
            return ""
        return f"{self.path}:{self.line}" if self.line else self.path

    def __str__(self) -> str:
        return (f"{self.where}: " if self.where else "") + self.message.replace("`", "")


@dataclass(frozen=True)
class Check:
    """One concern of the gate: passed or not, why, and what it found (warnings on a
    passed check). A skipped check passes and says why it did not run."""

    name: str
    passed: bool
    summary: str
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    skipped: bool = False

    @property
    def details(self) -> list[str]:
        """The findings as text, one line each."""
        return [str(finding) for finding in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"name": self.name, "passed": self.passed, "skipped": self.skipped,
                "summary": self.summary.replace("`", ""), "details": self.details,
                "findings": [asdict(f) for f in self.findings], "seconds": self.seconds}


@dataclass(frozen=True)
class GateReport:
    """Every check of one pull request."""

    repo: str
    base: str
    head: str
    commits: int
    files: int
    checks: list[Check]
    timestamp: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        """Whether the PR fits: every check passed."""
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"repo": self.repo, "base": self.base, "head": self.head,
                "commits": self.commits, "files": self.files, "timestamp": self.timestamp,
                "checks": [check.to_dict() for check in self.checks], "passed": self.passed}

    def markdown(self) -> str:
        """A summary suited to a PR comment or a CI job summary."""
        verdict = "fits the limits" if self.passed else "does NOT fit the limits"
        lines = [f"## harness gate: {'✅' if self.passed else '❌'} this PR {verdict}", "",
                 f"`{self.base[:12]}..{self.head[:12]}`: {self.commits} commit(s), "
                 f"{self.files} file(s)", "", "| check | result | |", "|---|---|---|"]
        for check in self.checks:
            result = "skipped" if check.skipped else "pass" if check.passed else "**FAIL**"
            lines.append(f"| {check.name} | {result} | "
                         f"{_markdown_text(check.summary).replace('|', '&#124;')} |")
        for check in self.checks:
            if check.findings and not check.skipped:
                heading = check.name if not check.passed else f"{check.name} (warnings)"
                lines += ["", f"### {heading}", ""]
                lines += [f"- {_markdown_finding(finding)}" for finding in check.findings]
        return "\n".join(lines) + "\n"

    def junit_xml(self) -> str:
        """JUnit XML: a `<testsuites>` root, one suite per check, one test case per finding
        of a failing check (with `file` and `line` where it has them, so a CI annotates the
        line), a skipped case for a check that did not run."""
        root = ET.Element("testsuites", name="harness gate", timestamp=self.timestamp,
                          time=f"{sum(c.seconds for c in self.checks):.3f}")
        totals = {"tests": 0, "failures": 0, "skipped": 0}
        for check in self.checks:
            suite = ET.SubElement(root, "testsuite", name=f"harness gate: {check.name}",
                                  timestamp=self.timestamp, time=f"{check.seconds:.3f}")
            counts = {"tests": 0, "failures": 0, "skipped": 0}
            if check.skipped:
                case = _case(suite, check, check.name, None)
                ET.SubElement(case, "skipped", message=_plain(check.summary))
                counts["skipped"] += 1
            elif check.passed or not check.findings:
                case = _case(suite, check, check.name, None)
                if not check.passed:
                    ET.SubElement(case, "failure", message=_plain(check.summary))
                    counts["failures"] += 1
                elif check.findings:
                    ET.SubElement(case, "system-out").text = "\n".join(check.details)
            else:
                for finding in check.findings:
                    case = _case(suite, check, str(finding)[:200], finding)
                    failure = ET.SubElement(case, "failure", message=str(finding),
                                            type=finding.rule or check.name)
                    failure.text = _plain(check.summary)
                    counts["failures"] += 1
            counts["tests"] = len(suite.findall("testcase"))
            suite.set("tests", str(counts["tests"]))
            suite.set("failures", str(counts["failures"]))
            suite.set("errors", "0")
            suite.set("skipped", str(counts["skipped"]))
            for key in totals:
                totals[key] += counts[key]
        root.set("tests", str(totals["tests"]))
        root.set("failures", str(totals["failures"]))
        root.set("errors", "0")
        root.set("skipped", str(totals["skipped"]))
        return str(ET.tostring(root, encoding="unicode", xml_declaration=True))


def error_junit_xml(message: str) -> str:
    """JUnit XML for a gate that could not run (exit 2): one test case in error with the
    message, so a CI that uploads the file `if: always()` shows why."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    root = ET.Element("testsuites", name="harness gate", tests="1", failures="0", errors="1",
                      skipped="0", timestamp=stamp, time="0.000")
    suite = ET.SubElement(root, "testsuite", name="harness gate", tests="1", failures="0",
                          errors="1", skipped="0", timestamp=stamp, time="0.000")
    case = ET.SubElement(suite, "testcase", classname="harness.gate", name="gate", time="0.000")
    ET.SubElement(case, "error", message=message, type="GateError").text = message
    return str(ET.tostring(root, encoding="unicode", xml_declaration=True))


def _case(suite: ET.Element, check: Check, name: str, finding: Finding | None) -> ET.Element:
    attributes = {"classname": f"harness.gate.{check.name}", "name": name,
                  "time": f"{check.seconds:.3f}" if finding is None else "0.000"}
    if finding is not None and finding.path:
        attributes["file"] = finding.path
        if finding.line:
            attributes["line"] = str(finding.line)
    return ET.SubElement(suite, "testcase", attributes)


def _plain(text: str) -> str:
    return text.replace("`", "")


_SPECIAL = re.compile(r"([\\*_\[\]<>|#~!])")


def _markdown_text(text: str) -> str:
    """`text` for markdown: spans in backticks stay code, everything else is escaped (a
    glob like `deploy/**` must not turn bold)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: nothing is code
        return _SPECIAL.sub(r"\\\1", text.replace("`", "'"))
    return "".join(f"`{part}`" if index % 2 else _SPECIAL.sub(r"\\\1", part)
                   for index, part in enumerate(parts))


def _markdown_finding(finding: Finding) -> str:
    return (f"`{finding.where}`: " if finding.where else "") + _markdown_text(finding.message)
