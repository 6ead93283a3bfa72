"""harness's own rules inside detect-secrets: a plugin for secrets named by what they are
assigned to, and the filters real repositories need (lockfiles and checksum files, hashes
in URLs and integrity fields, placeholders and templates, an inline allow comment).

detect-secrets loads the plugin from this file's path and the filters by their dotted
names (`harness.gate.secret_rules.is_lockfile`), so this module imports nothing of harness.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections import Counter
from collections.abc import Generator
from typing import Any

from detect_secrets.plugins.base import BasePlugin

LOCKFILES = frozenset({
    "package-lock.json", "npm-shrinkwrap.json", "pnpm-lock.yaml", "packages.lock.json",
    "go.sum", "go.work.sum", ".terraform.lock.hcl", "gradle.lockfile", "Package.resolved",
    "Cartfile.resolved", "Brewfile.lock.json", "SHA256SUMS", "SHA512SUMS", "SHA1SUMS", "MD5SUMS",
    "checksums.txt", "CHECKSUMS", "requirements.lock",
})
"""Files of pinned versions and checksums, by name (and any `*.lock`, `*.sum`, `*.sha256`)."""
_LOCK_SUFFIXES = (".lock", ".lockfile", ".sum", ".sha1", ".sha256", ".sha512", ".md5",
                  ".lock.json", ".lock.yaml")

# A name that says its value is a secret; and names that say it is about one, not one.
SECRET_NAME = re.compile(
    r"(?i)(secret|passw(?:or)?d|passwd|\bpwd|token|api[_-]?key|apikey|access[_-]?key|"
    r"private[_-]?key|auth[_-]?key|signing[_-]?key|encryption[_-]?key|credentials?\b|"
    r"client[_-]?secret|\bsalt\b|_salt\b|dsn\b)")
_NOT_A_SECRET_NAME = re.compile(
    r"(?i)(_(file|path|dir|name|names|env|var|field|fields|length|len|header|type|url|uri|"
    r"endpoint|id|ids|expiry|expires|ttl|timeout|age|backend|class|prefix|suffix|policy|"
    r"regex|pattern|format|label|hint|message|count|min|max|enabled|required|validators?)$"
    r"|^(is|has|use|get|set|show|reset|forgot|confirm|new|old)_)")
_ASSIGNMENT = re.compile(
    r"""(?P<name>[A-Za-z_][\w.-]*|"[A-Za-z_][\w.-]*"|'[A-Za-z_][\w.-]*')"""
    r"""\s*(?::\s*[A-Za-z_][\w\[\], .|]*?\s*)?(?P<op>:=|=>|==|!=|=|:)\s*"""
    r"""(?:(?P<q>["'`])(?P<quoted>(?:\\.|(?!(?P=q)).)*)(?P=q)|(?P<bare>[^\s'"`#;,]+))""")
_BARE_VALUES = (".env", ".ini", ".cfg", ".conf", ".properties", ".yaml", ".yml", ".sh",
                ".bash", ".zsh", ".envrc", ".toml")
"""Files where `KEY=value` holds a literal without quotes (elsewhere it is an expression)."""

MIN_LENGTH = 12
MIN_ENTROPY = 3.0

_PLACEHOLDER = re.compile(
    r"(?i)^(?:\$\{.*\}|\$\(.*\)|\$[A-Z_][A-Z0-9_]*|\{\{.*\}\}|\{[^{}]*\}|<[^<>]*>|\[[^\[\]]*\]"
    r"|%\(\w+\)s|%s|\*+|x+|\.+|-+|#+|_+|0+|null|none|nil|true|false|undefined)$")
_PLACEHOLDER_WORDS = re.compile(
    r"(?i)(changeme|change[_-]me|change[_-]?this|placeholder|your[_-]|\byour\b|yourkey|"
    r"example|dummy|fake|redacted|replace[_-]?me|replace[_-]?with|todo|fixme|sample|"
    r"not[_-]?a[_-]?(real[_-]?)?secret|xxxx|\*\*\*\*|\.\.\.|<[a-z_-]{3,}>|\{[a-z_]{3,}\}|\$\{)")
_TRIVIAL = frozenset({"password", "passwd", "secret", "pass", "pwd", "changeme", "admin",
                      "root", "postgres", "user", "username", "test", "token", "key", "mysql",
                      "guest", "default", "hunter2"})
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+")
_DIGEST = re.compile(r"(?i)(sha(?:1|224|256|384|512)[-:=]|md5[-:=]|\bh1:|--hash=|integrity|;base64,|"
                     r"checksum|digest|\bhash\b|\betag\b|\bnonce\b|\brevision\b|\bcommit\b)")
_ALLOW_COMMENT = re.compile(r"harness:\s*allow-secret")
_ENTROPY_PLUGINS = frozenset({"Base64HighEntropyString", "HexHighEntropyString"})


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def is_placeholder(secret: str) -> bool:
    """Whether a value is a stand-in for a secret: a template (`${VAR}`, `{password}`,
    `<your-key>`), a marker word (`changeme`, `example`, `xxxx`) or a trivial word."""
    value = secret.strip()
    return (not value or bool(_PLACEHOLDER.match(value)) or
            bool(_PLACEHOLDER_WORDS.search(value)) or value.lower() in _TRIVIAL
            or len(set(value.lower())) <= 2)


def is_lockfile(filename: str) -> bool:
    """detect-secrets filter: lockfiles and checksum files hold hashes and URLs, not secrets."""
    name = posixpath.basename(filename)
    return name in LOCKFILES or name.endswith(_LOCK_SUFFIXES)


def is_placeholder_secret(secret: str, line: str) -> bool:
    """detect-secrets filter: placeholders and templates (judged on the whole token: a
    provider plugin may report only its prefix, `ghp` of `ghp_xxxx...`)."""
    return is_placeholder(secret) or is_placeholder(token_around(line, secret))


def token_around(line: str, secret: str) -> str:
    """The token of `line` that holds `secret`, grown to its word characters."""
    start = line.find(secret)
    if start < 0:
        return secret
    end = start + len(secret)
    while start > 0 and re.match(r"[\w+/.-]", line[start - 1]):
        start -= 1
    while end < len(line) and re.match(r"[\w+/=.-]", line[end]):
        end += 1
    return line[start:end]


def is_encoded_text(secret: str, plugin: Any) -> bool:
    """detect-secrets filter: a base64 string that decodes to readable text (test data, an
    encoded message) is not a key; keys decode to random bytes."""
    if type(plugin).__name__ != "Base64HighEntropyString":
        return False
    import base64
    import binascii

    try:
        decoded = base64.b64decode(secret + "=" * (-len(secret) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    printable = sum(32 <= byte < 127 or byte in (9, 10, 13) for byte in decoded)
    return len(decoded) >= 8 and printable / len(decoded) > 0.95 and b" " in decoded


def is_allowed_inline(line: str) -> bool:
    """detect-secrets filter: a line carrying `harness: allow-secret` (detect-secrets' own
    `pragma: allowlist secret` is honoured by its filter)."""
    return bool(_ALLOW_COMMENT.search(line))


_QUOTED = re.compile(r"""(["'`])(?:\\.|(?!\1).)*\1""")
_REFERENCE = re.compile(r"(:=?|[!=]{1,3})\s*[\w.-]+[\[(]")


def is_indirect_reference(line: str) -> bool:
    """detect-secrets filter: `secret = get_secret()` or `key = request.headers["k"]`.
    Its own version of this filter also reads inside string literals, so a punctuated
    key (`'k=o-p[a]...'`) passes for a lookup; quoted text is blanked here first."""
    return len(line) <= 1000 and bool(_REFERENCE.search(_QUOTED.sub('""', line)))


def is_hash_in_url_or_digest(secret: str, line: str, plugin: Any) -> bool:
    """detect-secrets filter: a random-looking string that is part of a URL's path, query or
    fragment (a commit hash, a download's digest), or a checksum or integrity value. Only
    for the entropy plugins: a provider's key format found in a URL is still a key."""
    if type(plugin).__name__ not in _ENTROPY_PLUGINS:
        return False
    for url in _URL.finditer(line):
        scheme, _, rest = url.group().partition("://")
        host, _, tail = rest.partition("/")
        if secret in tail or (secret in scheme + "://" + rest and "@" not in host):
            return True
    index = line.find(secret)
    before = line[max(0, index - 40):index] if index >= 0 else line
    return bool(_DIGEST.search(before))


class SecretAssignmentDetector(BasePlugin):
    """A literal of at least 12 characters assigned to a name that says it is a secret
    (`SECRET_KEY`, `DB_PASSWORD`, `api_token`, `"client_secret":`), punctuation and all; the
    name and the value are split before the value's randomness is judged."""

    secret_type = "Secret Assignment"

    def analyze_line(self, filename: str, line: str, line_number: int = 0,
                     context: Any = None, **kwargs: Any) -> set[Any]:
        """The secrets on one line, as detect-secrets' PotentialSecret objects."""
        from detect_secrets.core.potential_secret import PotentialSecret

        return {PotentialSecret(type=self.secret_type, filename=filename, secret=value,
                                line_number=line_number)
                for value in secret_assignments(filename, line)}

    def analyze_string(self, string: str) -> Generator[str, None, None]:
        """Values of `string` read as one line of an unknown file."""
        yield from secret_assignments("", string)


def secret_assignments(filename: str, line: str) -> list[str]:
    """The literal values `line` assigns to secret-sounding names."""
    bare_allowed = posixpath.basename(filename).startswith(".env") or \
        filename.endswith(_BARE_VALUES) or posixpath.basename(filename) == "Dockerfile"
    found = []
    for match in _ASSIGNMENT.finditer(line):
        if match.group("op") in ("==", "!="):
            continue
        name = match.group("name").strip("'\"")
        if not SECRET_NAME.search(name) or _NOT_A_SECRET_NAME.search(name):
            continue
        value = match.group("quoted")
        if value is None:
            if not bare_allowed:
                continue
            value = match.group("bare")
        if _looks_secret(value):
            found.append(value)
    return found


def _looks_secret(value: str) -> bool:
    if len(value) < MIN_LENGTH or " " in value or is_placeholder(value):
        return False
    if "://" in value or value.startswith(("/", "./", "~/")):
        return False  # a URL (credentials in it are another plugin's) or a path
    if re.fullmatch(r"[a-z]+(?:[_.:-][a-z]+)+|[A-Z]+(?:_[A-Z]+)+|[a-z]+(?:[A-Z][a-z]+)+", value):
        return False  # an identifier: a setting's name, a key into a vault
    if re.fullmatch(r"[\w.]+\(.*\)?|[\w.]+\[.*\]", value):
        return False  # a call or a lookup
    return entropy(value) >= MIN_ENTROPY
