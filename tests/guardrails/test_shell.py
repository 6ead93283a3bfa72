"""Shell analysis normalises commands the way bash would before they are judged."""

from __future__ import annotations

import pytest

from harness.guardrails.shell import DYNAMIC, analyse


def argvs(text: str) -> list[tuple[str, ...]]:
    return [c.argv for c in analyse(text).commands]


@pytest.mark.parametrize("text", [
    "r''m -rf /", '"rm" -rf /', "\\rm -rf /", "rm$IFS-rf$IFS/", "rm${IFS}-rf${IFS}/",
    "$'\\x72\\x6d' -rf /", "$(echo rm) -rf /", "`echo rm` -rf /", "X=rm; $X -rf /",
    "C='rm -rf'; $C /", "r\u200bm -rf /",
])
def test_obfuscated_rm_normalises_to_rm(text: str) -> None:
    assert ("rm", "-rf", "/") in argvs(text)


@pytest.mark.parametrize(("text", "via"), [
    ("sudo rm -rf /", ("sudo",)),
    ("env -i A=1 rm -rf /", ("env",)),
    ("timeout 5 nice -n 3 rm -rf /", ("timeout", "nice")),
    ("bash -c \"sh -c 'rm -rf /'\"", ("bash -c", "sh -c")),
    ("eval 'rm -rf /'", ("eval",)),
    ("echo 'rm -rf /' | sh", ("sh reading stdin",)),
    ("sh <<EOF\nrm -rf /\nEOF\n", ("sh reading stdin",)),
    ("find . -exec rm -rf / \\;", ("find -exec",)),
    ("xargs rm -rf /", ("xargs",)),
])
def test_wrappers_are_looked_through(text: str, via: tuple[str, ...]) -> None:
    # (xargs adds what it reads on stdin, unknown here, after the words it was given.)
    found = [c for c in analyse(text).commands if c.argv[:3] == ("rm", "-rf", "/")]
    assert found, argvs(text)
    assert found[0].via == via


def test_arguments_of_echo_grep_and_commit_are_data_not_commands() -> None:
    assert argvs("echo 'rm -rf /'") == [("echo", "rm -rf /")]
    assert argvs("grep -r 'DROP DATABASE' .") == [("grep", "-r", "DROP DATABASE", ".")]
    assert argvs("git commit -m 'rm -rf /'") == [("git", "commit", "-m", "rm -rf /")]


def test_sql_sent_to_psql_is_extracted() -> None:
    for text in ["psql -c 'DELETE FROM t'", "echo 'DELETE FROM t' | psql",
                 "psql <<< 'DELETE FROM t'", "psql --command='DELETE FROM t'",
                 "cat <<EOF | psql\nDELETE FROM t\nEOF\n"]:
        sql = [s.strip() for s, _, _, _ in analyse(text).sql]
        assert sql == ["DELETE FROM t"], text


def test_decoded_bytes_into_a_shell_are_unverifiable() -> None:
    problems = analyse("echo cm0= | base64 -d | bash").problems
    assert [p.rule_id for p in problems] == ["shell.decode-exec"]


def test_unknown_program_is_dynamic() -> None:
    analysis = analyse("$TOOL --version")
    assert analysis.commands[0].argv[0] == DYNAMIC
    assert [p.rule_id for p in analysis.problems] == ["shell.dynamic-command"]


def test_unbalanced_quotes_are_a_parse_problem_with_a_span() -> None:
    analysis = analyse("echo 'oops")
    assert analysis.problems[0].rule_id == "shell.unparseable"
    start, end = analysis.problems[0].span
    assert 0 <= start < end <= len("echo 'oops")


def test_spans_point_into_the_original_text() -> None:
    text = "ls && rm -rf / && pwd"
    rm = next(c for c in analyse(text).commands if c.program == "rm")
    assert text[rm.span[0] : rm.span[1]] == "rm -rf /"


def test_non_ascii_text_keeps_character_spans() -> None:
    text = "echo 'héllo wörld' && rm -rf /"
    rm = next(c for c in analyse(text).commands if c.program == "rm")
    assert text[rm.span[0] : rm.span[1]] == "rm -rf /"


def test_brace_and_tilde_expansion() -> None:
    assert argvs("mkdir -p src/{a,b}") == [("mkdir", "-p", "src/a", "src/b")]
    assert argvs("ls ~/x") == [("ls", "/home/agent/x")]


def test_fork_bomb_function_is_recorded() -> None:
    analysis = analyse(":(){ :|:& };:")
    assert [c.argv for c in analysis.functions[":"]] == [(":",), (":",)]


def test_a_wrapper_runs_its_command_in_the_folder_the_line_moved_to() -> None:
    rm = [c for c in analyse("cd /tmp/x && sudo timeout 5 rm -rf ./*").commands
          if c.program == "rm"]
    assert rm and rm[0].path("./*") == "/tmp/x/*"


@pytest.mark.parametrize(("text", "argv"), [
    ("gosu root rm -rf /etc", ("rm", "-rf", "/etc")),
    ("bwrap --bind / / --dev /dev rm -rf /etc", ("rm", "-rf", "/etc")),
    ("numactl -C 0 rm -rf /usr", ("rm", "-rf", "/usr")),
    ("perf stat -e cycles -- rm -rf /etc", ("rm", "-rf", "/etc")),
    ("ip netns exec blue rm -rf /etc", ("rm", "-rf", "/etc")),
    ("direnv exec . rm -rf /etc", ("rm", "-rf", "/etc")),
])
def test_known_wrappers_run_their_command_as_judged_not_guessed(
        text: str, argv: tuple[str, ...]) -> None:
    found = [c for c in analyse(text).commands if c.argv == argv]
    assert found and not found[0].guessed


@pytest.mark.parametrize("text", ["some-new-wrapper --opt x rm -rf /etc",
                                  "start-stop-daemon --exec /bin/rm -- -rf /etc"])
def test_a_command_in_the_arguments_of_an_unmodelled_program_is_read_as_guessed(
        text: str) -> None:
    found = [c for c in analyse(text).commands if c.program == "rm" and "/etc" in c.argv]
    assert found and all(c.guessed for c in found)


@pytest.mark.parametrize("text", ["echo rm -rf /", "grep -r 'rm -rf' .", "man rm",
                                  "printf '%s\\n' rm -rf /", "tldr rm"])
def test_arguments_of_programs_that_only_print_them_are_not_guessed(text: str) -> None:
    assert not [c for c in analyse(text).commands if c.guessed and c.args]


@pytest.mark.parametrize(("word", "expanded"), [
    ("~+/x", "/workspace/x"), ("~root", "/root"), ("~agent/x", "/home/agent/x"),
    ("~nobody", "/home/nobody"), ("$TMPDIR/x", "/tmp/x"),
    ("${XDG_CACHE_HOME}/app", "/home/agent/.cache/app"), ("${TMPDIR:-/tmp}", "/tmp"),
])
def test_tildes_and_well_known_variables_expand_to_their_conventional_folders(
        word: str, expanded: str) -> None:
    assert argvs(f"ls {word}") == [("ls", expanded)]


def test_a_well_known_variable_with_another_default_is_only_known_at_run_time() -> None:
    assert argvs("ls ${TMPDIR:-/}") == [("ls", DYNAMIC)]


def test_tilde_minus_is_the_previous_folder_only_once_the_line_moved() -> None:
    assert argvs("ls ~-") == [("ls", "~-")]
    assert argvs("cd /etc && ls ~-")[-1] == ("ls", "/workspace")
