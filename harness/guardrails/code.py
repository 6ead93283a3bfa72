"""What inline code does to the machine: the shell commands it starts, the files it
deletes and writes, code it decodes and runs. For Python, Perl, Ruby, Node.js, PHP, awk,
and the command languages of vim and gdb.

The reading is deliberately literal: a call whose argument is a string literal is turned
into the command it amounts to (`shutil.rmtree("/etc")` is `rm -rf /etc`), so the shell
rules judge it; a call whose argument is built at run time cannot be judged and is
reported as unverifiable. Code that calls none of these is harmless to the host."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_STRING = r"""(?P<q>['"`])(?P<s>(?:\\.|(?!(?P=q)).)*)(?P=q)"""
_SECOND_STRING = r"""(?P<q2>['"`])(?P<s2>(?:\\.|(?!(?P=q2)).)*)(?P=q2)"""


@dataclass
class CodeEffects:
    """What a piece of code would do."""

    shell: list[str] = field(default_factory=list)
    """Shell command lines it runs."""
    argv: list[tuple[str, ...]] = field(default_factory=list)
    """Commands it runs or amounts to (a deletion is an `rm`, a write a `tee`)."""
    unverifiable: list[str] = field(default_factory=list)
    """Calls whose effect depends on values only known at run time."""
    decode_exec: bool = False
    """It decodes data and runs it."""
    nested: list[tuple[str, str]] = field(default_factory=list)
    """(language, code) it evaluates from a literal."""
    sql: list[str] = field(default_factory=list)
    """SQL it sends to a database (a driver's execute with a literal)."""
    fork_loop: bool = False
    """It forks in a loop (a fork bomb)."""


@dataclass(frozen=True)
class _Call:
    pattern: str
    """A regular expression that ends just before the call's first argument."""
    effect: str
    """shell (the argument is a command line), argv (a list of words), rm, rm-r, write,
    eval (code in the same language), spawn (a program name, then arguments)."""


def _calls(*pairs: tuple[str, str]) -> list[_Call]:
    return [_Call(pattern, effect) for pattern, effect in pairs]


_LANGUAGES: dict[str, list[_Call]] = {
    "python": _calls(
        (r"\bos\.(?:system|popen)\s*\(", "shell"),
        (r"\b(?:__import__\s*\(\s*['\"]os['\"]\s*\))\.(?:system|popen)\s*\(", "shell"),
        (r"\bsubprocess\.(?:run|call|Popen|check_output|check_call|getoutput|"
         r"getstatusoutput)\s*\(", "shell-or-argv"),
        (r"\bcommands\.getoutput\s*\(", "shell"),
        (r"\bos\.(?:exec[lv]p?e?|spawn[lv]p?e?|posix_spawnp?)\s*\(", "spawn"),
        (r"\bpty\.spawn\s*\(", "shell-or-argv"),
        (r"\bshutil\.rmtree\s*\(", "rm-r"),
        (r"\bos\.(?:remove|unlink|rmdir|removedirs)\s*\(", "rm"),
        (r"\b(?:pathlib\.)?Path\s*\(", "path"),
        (r"\bopen\s*\(", "open"),
        (r"\bos\.(?:truncate|chmod|chown)\s*\(", "write"),
        (r"\b(?:os\.(?:rename|replace)|shutil\.(?:move|copy|copyfile|copy2|copytree))\s*\(",
         "write2"),
        (r"\b(?:exec|eval|compile)\s*\(", "eval"),
        (r"\.(?:execute(?:many)?|executescript|exec_driver_sql)\s*\(", "sql"),
        (r"\b(?:sqlalchemy|sa)\.text\s*\(", "sql"),
        (r"\bgetattr\s*\(\s*(?:os|subprocess|shutil|pty|posix)\b", "dynamic-attribute"),
    ),
    "perl": _calls(
        (r"\b(?:system|exec)\s*\(?\s*(?=qw)", "qw"),
        (r"\b(?:system|exec)\s*\(?", "shell-or-list"),
        (r"\bqx\s*", "shell"),
        (r"\b(?:remove_tree|rmtree)\s*\(?", "rm-r"),
        (r"\bunlink\s*\(?\s*glob\s*\(?", "rm"),
        (r"\b(?:unlink|rmdir)\s*\(?", "rm"),
        (r"\bopen\s*\(?[^,]*,\s*(?=['\"]>)", "perl-open"),
        (r"\beval\s*\(?", "eval"),
        (r"->(?:do|prepare|selectall_arrayref)\s*\(", "sql-maybe"),
    ),
    "ruby": _calls(
        (r"\b(?:system|exec|spawn)\s*\(?", "shell-or-list"),
        (r"(?<![.\w])sh(?:\s*\(|\s+(?=['\"]))", "shell-or-list"),  # rake's sh
        (r"%x", "shell"),
        (r"\bFileUtils\.(?:rm_rf|rm_r|remove_dir|remove_entry|rmtree)\s*\(?", "rm-r"),
        (r"\bFileUtils\.(?:rm|rm_f|remove)\s*\(?", "rm"),
        (r"\b(?:File\.(?:delete|unlink)|Dir\.(?:rmdir|delete|unlink))\s*\(?", "rm"),
        (r"\bFile\.(?:write|open)\s*\(?", "write"),
        (r"\beval\s*\(?", "eval"),
        (r"\.(?:exec|execute|query|exec_query|exec_params|run)\s*\(?", "sql-maybe"),
    ),
    "deno": _calls(
        (r"\bDeno\.(?:removeSync|remove)\s*\(", "rm-r"),
        (r"\bDeno\.(?:writeTextFileSync|writeTextFile|writeFileSync|writeFile)\s*\(",
         "write"),
        (r"\bnew\s+Deno\.Command\s*\(", "spawn-list"),
        (r"\bDeno\.run\s*\(", "dynamic-shell"),
        (r"\b(?:eval|Function)\s*\(", "eval"),
    ),
    "node": _calls(
        (r"\b(?:execSync|exec)\s*\(", "shell"),
        (r"\b(?:spawnSync|spawn|execFileSync|execFile)\s*\(", "spawn-list"),
        (r"\b(?:rmSync|rmdirSync|rm|rmdir|promises\.rm)\s*\(", "rm-r"),
        (r"\b(?:unlinkSync|unlink)\s*\(", "rm"),
        (r"\b(?:writeFileSync|writeFile|appendFileSync|appendFile|createWriteStream|"
         r"truncateSync|chmodSync|renameSync)\s*\(", "write"),
        (r"\b(?:eval|Function)\s*\(", "eval"),
        (r"\.(?:query|execute|exec|raw|unsafe|none|any|one|many)\s*\(", "sql-maybe"),
        (r"\bsql\s*`", "sql-template"),
    ),
    "php": _calls(
        (r"['\"](?:unlink|rmdir|system|exec|shell_exec|passthru|popen)['\"]", "callback"),
        (r"\b(?:system|exec|shell_exec|passthru|popen|proc_open|pcntl_exec)\s*\(", "shell"),
        (r"\b(?:unlink|rmdir)\s*\(", "rm"),
        (r"\b(?:file_put_contents|fopen|rename|chmod)\s*\(", "write"),
        (r"\beval\s*\(", "eval"),
        (r"->(?:query|exec|prepare)\s*\(", "sql-maybe"),
    ),
    "awk": _calls(
        (r"\bprint(?:f)?\s+(?=['\"][^'\"]*['\"]\s*\|\s*['\"](?:sh|bash|dash|zsh)['\"])",
         "shell"),
        (r"\bsystem\s*\(", "shell"),
        (r"\|\s*(?=['\"])", "shell"),
        (r"['\"]\s*\|\s*getline", "getline"),
        (r">>?\s*(?=['\"])", "write"),
    ),
    "sed": _calls((r"(?:^|[;\n{}]|[0-9$/])\s*e\s+", "shell-rest"),
                  (r"s(.).*?\1.*?\1[gpiImM0-9]*e", "dynamic-shell")),
    "ed": _calls((r"(?:^|\n)\s*!", "shell-rest"),),
    "sqlite": _calls((r"(?:^|\n|;)\s*\.(?:shell|system)\s+", "shell-rest"),),
    "make": _calls((r"(?:^|\n)\t", "shell-rest"),),
    "just": _calls((r"(?:^|\n)[ \t]+@?-?(?=\S)", "shell-rest"),),
    "tcl": _calls((r"\b(?:exec|spawn|system)\s+", "words-rest"),),
    "lua": _calls((r"\b(?:os\.execute|io\.popen)\s*\(", "shell"),
                  (r"\bos\.remove\s*\(", "rm")),
    "r": _calls((r"\bsystem\s*\(", "shell"), (r"\bsystem2\s*\(", "spawn-list"),
                (r"\bunlink\s*\(", "rm-r"), (r"\bfile\.remove\s*\(", "rm")),
    "vim": _calls((r"(?:^|[:|]\s*)!", "shell-rest"), (r"\bsystem\s*\(", "shell"),
                  (r"\b(?:call\s+)?delete\s*\(", "rm")),
    "gdb": _calls((r"(?:^|\s)(?:shell|!)\s*", "shell-rest"),
                  (r"\bpython\s+", "python-rest")),
}

_SQL_START = re.compile(r"\s*(?:SELECT|INSERT|UPDATE|DELETE|DROP|TRUNCATE|ALTER|CREATE|GRANT|"
                        r"REVOKE|COPY|DO|CALL|WITH|MERGE|VACUUM|REINDEX|CLUSTER|LOCK|SET|"
                        r"COMMENT|EXPLAIN|REFRESH)\b", re.IGNORECASE)
"""The start of a SQL statement."""

_FORK_LOOP = re.compile(r"fork\s+while\s+fork|while\b[^\n]*:\s*(?:\n\s*)?[^\n]*\bfork\s*\(|"
                        r"\bfork\s*\(\s*\)[^\n]*\bwhile\b|for\s*\(\s*;;\s*\)\s*fork|"
                        r"loop\s*\{?\s*fork", re.IGNORECASE)
_DECODERS = re.compile(r"b64decode|base64|codecs\.decode|bytes\.fromhex|unhexlify|"
                       r"fromCharCode|Buffer\.from\([^)]*['\"](?:base64|hex)|decode_base64|"
                       r"unpack\s*\(\s*['\"][mH]|base64_decode|hex2bin|str_rot13|"
                       r"decode\(\s*['\"](?:hex|rot)", re.IGNORECASE)
_RUNNERS = re.compile(r"\b(?:exec|eval|system|popen|spawn|Popen|run|call|check_output|"
                      r"execSync|spawnSync|passthru|shell_exec)\b|`|qx")


def scan(language: str, code: str, *, depth: int = 0) -> CodeEffects:
    """The effects of `code` written in `language`."""
    effects = CodeEffects()
    calls = _LANGUAGES.get(language)
    if calls is None:
        return effects
    if _DECODERS.search(code) and _RUNNERS.search(code):
        effects.decode_exec = True
    if _FORK_LOOP.search(code):
        effects.fork_loop = True
    if language == "python":
        code = _unalias(code)
    if language in ("perl", "ruby", "php") and re.search(r"`[^`]+`", code):
        for match in re.finditer(r"`([^`]+)`", code):
            _literal_shell(effects, match.group(1), language)
    for call in calls:
        for match in re.finditer(call.pattern, code, re.MULTILINE):
            _apply(effects, call.effect, code[match.end():], language, depth)
    return effects


def _unalias(code: str) -> str:
    """`import shutil as s; s.rmtree(...)` and `from shutil import rmtree; rmtree(...)`
    written out with the module's own name."""
    for module, alias in re.findall(r"\bimport\s+([\w.]+)\s+as\s+(\w+)", code):
        code = re.sub(rf"\b{re.escape(alias)}\.", f"{module}.", code)
    for module, names in re.findall(r"\bfrom\s+([\w.]+)\s+import\s+([\w ,]+)", code):
        for name in names.split(","):
            original, _, alias = name.strip().partition(" as ")
            alias = alias.strip() or original
            if original:
                code = re.sub(rf"(?<![\w.]){re.escape(alias)}\s*\(", f"{module}.{original}(",
                              code)
    return code


def _literal_shell(effects: CodeEffects, text: str, language: str) -> None:
    if re.search(r"[#$]\{|\$\w", text) and language in ("perl", "ruby", "php"):
        effects.unverifiable.append(f"a command built at run time: {text[:60]}")
    else:
        effects.shell.append(text)


def _apply(effects: CodeEffects, effect: str, rest: str, language: str, depth: int) -> None:
    """Read the first argument in `rest` for a call of kind `effect`."""
    if effect == "shell-rest":
        effects.shell.append(rest.split("\n", 1)[0].split("|", 1)[0] if language == "vim"
                             else rest.split("\n", 1)[0])
        return
    if effect == "python-rest":
        effects.nested.append(("python", rest.split("\n", 1)[0]))
        return
    if effect == "words-rest":
        words = re.findall(r"\{[^}]*\}|\"[^\"]*\"|\S+", rest.split("\n", 1)[0].split("]", 1)[0])
        effects.argv.append(tuple(w.strip("{}\"") for w in words))
        return
    if effect in ("dynamic-shell", "dynamic-attribute", "callback", "getline"):
        effects.unverifiable.append({
            "dynamic-shell": "a command built at run time",
            "dynamic-attribute": "a function of os/subprocess looked up by a computed name",
            "callback": "a deleting or command-running function passed by name",
            "getline": "a command whose output is read and used at run time"}[effect])
        return
    if effect == "qw":
        match = re.match(r"qw\s*[(\[{/<]([^)\]}/>]*)", rest)
        if match:
            effects.argv.append(tuple(match.group(1).split()))
        return
    arguments = _arguments(rest)
    if effect in ("shell-or-list", "shell-or-argv") and arguments is not None and \
            len(arguments) > 1 and not rest.lstrip().startswith("["):
        # `system("rm", "-rf", "/var")`: a list of words, not a command line.
        if all(a is not None for a in arguments):
            effects.argv.append(tuple(a for a in arguments if a is not None))
        else:
            effects.unverifiable.append("a command whose words are built at run time")
        return
    if effect == "write2" and arguments and len(arguments) > 1:
        for argument in arguments[:2]:
            if argument is None:
                effects.unverifiable.append("a file moved or copied to a path built at run time")
            else:
                effects.argv.append(("tee", argument))
        return
    if effect == "sql":
        if arguments and arguments[0] is not None:
            effects.sql.append(arguments[0])
        elif arguments:
            effects.unverifiable.append("SQL built at run time")
        return
    if effect == "sql-maybe":
        # A method of that name on a database client: its first argument, when a literal
        # that reads as SQL (other objects have methods of these names too).
        if arguments and arguments[0] is not None and _SQL_START.match(arguments[0]):
            effects.sql.append(arguments[0])
        return
    if effect == "sql-template":
        template = re.match(r"([^`]*)`", rest)
        if template and _SQL_START.match(template.group(1)):
            if "${" in template.group(1):
                effects.unverifiable.append("SQL built at run time")
            else:
                effects.sql.append(template.group(1))
        return
    literal, dynamic = _first_argument(rest, language)
    if effect in ("shell-or-argv", "shell-or-list", "spawn-list", "spawn"):
        items = _list_literal(rest)
        if items is not None:
            if effect == "spawn-list" and items:
                effects.argv.append(tuple(items))
            else:
                effects.argv.append(tuple(items))
            return
        if effect == "spawn-list" and literal is not None:
            more = _list_literal(rest[rest.find(",") + 1:]) if "," in rest else []
            effects.argv.append((literal, *(more or [])))
            return
        if effect == "spawn" and literal is not None:
            words = re.findall(_STRING, rest.split(")", 1)[0])
            effects.argv.append(tuple(m[1] for m in words[1:]) or (literal,))
            return
    if literal is None:
        if dynamic and effect not in ("path", "open", "eval"):
            effects.unverifiable.append(f"a {effect} call with an argument built at run time")
        elif dynamic and effect == "eval" and not rest.lstrip().startswith(("'", '"')):
            effects.unverifiable.append("code evaluated from a value built at run time")
        return
    if effect in ("shell", "shell-or-argv", "shell-or-list", "spawn", "spawn-list"):
        _literal_shell(effects, literal, language) if effect != "spawn-list" else \
            effects.argv.append((literal,))
    elif effect == "rm-r":
        recursive = language != "node" or re.search(r"recursive\s*:\s*true",
                                                    rest.split(")", 1)[0]) is not None
        effects.argv.append(("rm", "-rf" if recursive else "-f", literal))
    elif effect == "rm":
        effects.argv.append(("rm", "-f", literal))
    elif effect == "write":
        effects.argv.append(("tee", literal))
    elif effect == "perl-open":
        effects.argv.append(("tee", literal.lstrip(">+ ")))
    elif effect == "open":
        mode = re.match(r"\s*" + _STRING + r"\s*,\s*" + _SECOND_STRING, rest)
        if mode and any(c in mode.group("s2") for c in "wax+"):
            effects.argv.append(("tee", literal))
    elif effect == "path":
        call = re.match(r"\s*" + _STRING + r"\s*\)\s*\.\s*(?P<method>\w+)", rest)
        if call is None:
            return
        method = call.group("method")
        if method in ("unlink", "rmdir"):
            effects.argv.append(("rm", "-f", literal))
        elif method in ("write_text", "write_bytes", "touch", "chmod", "rename", "replace"):
            effects.argv.append(("tee", literal))
    elif effect == "eval" and depth < 4:
        effects.nested.append((language, literal))


def _first_argument(rest: str, language: str) -> tuple[str | None, bool]:
    """The first argument as a literal (None if it is not one), and whether there is a
    non-literal first argument."""
    stripped = rest.lstrip()
    if not stripped or stripped[0] in ")];":
        return None, False
    prefix = re.match(r"(?:[rRbBuU]{1,2})?(?=['\"])", stripped) if language == "python" else None
    if prefix:
        stripped = stripped[prefix.end():]
    elif language == "python" and re.match(r"[fF][rR]?['\"]", stripped):
        return None, True  # an f-string is built at run time
    match = re.match(_STRING, stripped, re.DOTALL)
    if match is None:
        if language == "ruby" and stripped.startswith("{"):
            inner = re.match(r"\{([^}]*)\}", stripped)
            return (inner.group(1), False) if inner else (None, True)
        return None, True
    value = _unescape(match.group("s"))
    after = stripped[match.end():].lstrip()
    if language == "awk" and after and after[0] not in ",)":
        return None, True  # awk concatenates by juxtaposition
    if after.startswith(("+", ".", "%", "||")) or (language == "python"
                                                   and after.startswith(".format")):
        return None, True  # concatenated or formatted: built at run time
    if match.group("q") == "`" or (match.group("q") == '"' and language in ("perl", "ruby",
                                                                            "php")
                                   and re.search(r"[#$]\{|\$\w", value)):
        return None, True  # interpolated
    return value, False


def _list_literal(rest: str) -> list[str] | None:
    """`["rm", "-rf", "/"]` as words, if the first argument is a list of literals only."""
    match = re.match(r"\s*[\[(]([^\])]*)[\])]", rest)
    if match is None:
        return None
    body = match.group(1)
    items = [m.group("s") for m in re.finditer(_STRING, body)]
    remainder = re.sub(_STRING, "", body)
    if not items or re.search(r"[A-Za-z_]", remainder):
        return None
    return [_unescape(item) for item in items]


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _arguments(rest: str) -> list[str | None] | None:
    """The arguments of a call whose opening parenthesis (or none, perl/ruby style) is
    just behind: each a literal, or None when built at run time; None when unreadable."""
    text = rest.lstrip()
    closing = ")"
    if text.startswith("("):
        text = text[1:]
    elif text.startswith("["):
        return None
    else:
        closing = ";\n"
    items: list[str | None] = []
    depth = 0
    current = ""
    index = 0
    while index < len(text):
        char = text[index]
        quoted = re.match(_STRING, text[index:], re.DOTALL)
        if quoted and char in "'\"":
            current += quoted.group(0)
            index += quoted.end()
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and (char == "," or char in closing):
            items.append(_literal_item(current))
            current = ""
            if char != ",":
                return items
            index += 1
            continue
        current += char
        index += 1
    if current.strip():
        items.append(_literal_item(current))
    return items or None


def _literal_item(text: str) -> str | None:
    match = re.fullmatch(r"\s*" + _STRING + r"\s*", text, re.DOTALL)
    return _unescape(match.group("s")) if match else None
