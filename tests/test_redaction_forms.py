"""Redaction of what a secret becomes: each form the README claims is covered is replaced
wherever it appears, inside longer text at any base64 alignment too, and nothing else is."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from harness.redaction import REDACTED, Redactor
from tests.leaks import forms

SECRET = "Bearer tok-Zq8w3Lr1-edge-credential-5521"


@pytest.mark.parametrize("secret", [SECRET, "short-ish", "Basic " + base64.b64encode(
    b"deploy:hunter2-long-password").decode(), "p@ss/w0rd+with=odd&chars"])
def test_every_common_encoding_of_a_secret_is_redacted(secret: str) -> None:
    redact = Redactor([secret])
    exact, folded = forms(secret)
    for form in exact | folded:
        for wrapper in ("{}", "prefix {} suffix", "x{}y"):
            text = wrapper.format(form)
            assert form not in redact(text), (form, text)
    bare = secret.split(" ", 1)[-1]
    for prefix in ("", "a", "ab", "abc"):
        encoded = base64.b64encode(f"{prefix}header: {bare} end".encode()).decode()
        assert _recoverable(redact(encoded), bare) <= 3
        assert _recoverable(redact(encoded[::-1])[::-1], bare) <= 3
    assert redact("nothing secret here") == "nothing secret here"


def _recoverable(redacted: str, secret: str) -> int:
    """The longest run of the secret that base64-decoding any piece left around the ***
    reveals, at any alignment."""
    longest = 0
    for piece in redacted.split("***"):
        for start in range(4):
            chunk = piece[start:]
            chunk = chunk[:len(chunk) // 4 * 4]
            try:
                decoded = base64.b64decode(chunk).decode("latin-1")
            except ValueError:
                continue
            longest = max([longest] + [n for n in range(1, len(secret) + 1)
                                       for i in range(len(secret) - n + 1)
                                       if secret[i:i + n] in decoded])
    return longest




def test_values_shorter_than_four_characters_are_not_secrets() -> None:
    redact = Redactor(["abc", "", "abcd"])
    assert redact("abc abcd") == f"abc {REDACTED}"
    assert redact.finds("xabcdx") and not redact.finds("abc")
    assert not Redactor().finds("anything") and Redactor()("anything") == "anything"


def test_redaction_reaches_into_dicts_lists_and_tuples_and_leaves_other_values() -> None:
    redact = Redactor(["s3cr3t-value"])
    data = {"a": ["x s3cr3t-value", ("s3cr3t-value",)], "n": 5, "none": None,
            "nested": {"k": "s3cr3t-value!"}}
    assert redact(data) == {"a": [f"x {REDACTED}", [REDACTED]], "n": 5, "none": None,
                            "nested": {"k": f"{REDACTED}!"}}


def test_adding_a_secret_twice_changes_nothing_and_later_secrets_count() -> None:
    redact = Redactor(["first-secret"])
    redact.add("first-secret")
    redact.add("second-secret")
    assert redact("first-secret second-secret") == f"{REDACTED} {REDACTED}"


def test_the_longest_form_wins_where_forms_overlap() -> None:
    redact = Redactor(["Bearer overlap-token-77"])
    assert redact("Authorization: Bearer overlap-token-77") == f"Authorization: {REDACTED}"


def test_hex_and_url_forms_match_in_any_case_but_base64_only_exactly() -> None:
    secret = "Case-Sensitive-Key-99"
    redact = Redactor([secret])
    assert redact(secret.encode().hex().upper()) == REDACTED
    assert redact("Case%2dSensitive".lower()) == "case%2dsensitive", "not a form of it"
    encoded = base64.b64encode(secret.encode()).decode()
    assert redact(encoded) == REDACTED
    assert redact(encoded.swapcase()) == encoded.swapcase(), "another base64 text entirely"
    assert redact(secret.lower()) == secret.lower(), "the value itself is exact"


def test_a_basic_credential_is_redacted_decoded_too() -> None:
    token = base64.b64encode(b"deploy:p4ss-w0rd-long").decode()
    redact = Redactor([f"Basic {token}"])
    assert redact("user deploy:p4ss-w0rd-long") == f"user {REDACTED}"
    assert redact("password p4ss-w0rd-long") == f"password {REDACTED}"
    short = Redactor(["Basic " + base64.b64encode(b"me:abc").decode()])
    assert short("abc") == "abc", "a password too short to be told from text is not one"
    assert Redactor(["Basic not-base64!!"])("not-base64!!") == REDACTED


def test_forms_lists_exact_and_case_free_forms_apart() -> None:
    exact, folded = forms("Bearer abcdefgh-1")
    assert "abcdefgh-1" in exact and "Bearer abcdefgh-1" in exact
    assert base64.b64encode(b"abcdefgh-1").decode() in exact
    assert "abcdefgh-1"[::-1] in exact
    assert b"abcdefgh-1".hex() in folded and "Bearer%20abcdefgh-1" in folded
    assert all(len(f) >= 4 for f in exact | folded)


LONG = "Bearer eyJhbGciOiJIUzI1NiJ9.long-enough-to-wrap-in-base64-output.Xy7Zq"


def _wrapped(text: str, width: int) -> str:
    return "\n".join(text[i:i + width] for i in range(0, len(text), width))


def _od(data: bytes) -> str:
    lines = [data[i:i + 16] for i in range(0, len(data), 16)]
    return "\n".join("".join(f" {b:02x}" for b in line) for line in lines) + "\n"


@pytest.mark.parametrize(("name", "make"), [
    ("base64 wraps at 76", lambda s: base64.encodebytes(s.encode()).decode()),
    ("env | base64", lambda s: base64.encodebytes(
        f"HOME=/home/agent\nPATH=/usr/bin\nTOKEN={s}\nSHLVL=1\n".encode()).decode()),
    ("basenc --base16 wraps at 76", lambda s: _wrapped(s.encode().hex().upper(), 76)),
    ("od -An -tx1", lambda s: _od(s.encode())),
    ("xxd -p", lambda s: _wrapped(s.encode().hex(), 60)),
    ("colon hex", lambda s: ":".join(f"{b:02X}" for b in s.encode())),
    ("encodeURIComponent", lambda s: "".join(
        c if c.isalnum() or c in "-_.!~*'()" else "%" + c.encode().hex().upper() for c in s)),
    ("every byte escaped", lambda s: "".join(f"%{b:02x}" for b in s.encode())),
    ("base64 of the reversed value", lambda s: base64.b64encode(s[::-1].encode()).decode()),
    ("hex of the reversed value", lambda s: s[::-1].encode().hex()),
    ("reversed percent-encoding", lambda s: "".join(
        f"%{b:02X}" for b in s.encode())[::-1]),
])
def test_tools_output_of_a_secret_is_redacted(name: str, make: Any) -> None:
    for secret in (LONG, "hunter2", "p@ss w0rd/+="):
        bare = secret.removeprefix("Bearer ")
        text = f"before {make(bare)} after"
        redacted = Redactor([secret])(text)
        assert REDACTED in redacted, (name, secret)
        assert _recoverable(redacted.replace("\n", ""), bare) <= 3 or "base64" not in name


@pytest.mark.parametrize("offset", range(6))
def test_a_short_secret_inside_base64_is_redacted_at_every_offset(offset: int) -> None:
    secret = "hunter2"
    text = base64.b64encode(b"x" * offset + secret.encode() + b"tail").decode()
    redacted = Redactor([secret])(text)
    assert REDACTED in redacted
    assert _recoverable(redacted, secret) <= 2, redacted


@pytest.mark.parametrize("prefix", range(8))
@pytest.mark.parametrize("suffix", [0, 1, 2, 5])
def test_exactly_the_base64_characters_that_carry_a_bit_of_the_secret_are_redacted(
        prefix: int, suffix: int) -> None:
    import os

    secret = "k3y-R7pQ"
    before, after = os.urandom(prefix), os.urandom(suffix)
    text = base64.b64encode(before + secret.encode() + after).decode()
    first = prefix * 8 // 6
    last = -(-(prefix + len(secret)) * 8 // 6)
    assert Redactor([secret])(text) == text[:first] + REDACTED + text[last:]


def test_a_character_the_secret_cannot_have_at_a_boundary_is_not_its_encoding() -> None:
    secret = "k3y-R7pQ"
    text = base64.b64encode(b"\x00" + secret.encode()).decode()
    # The first character of the window mixes two bits of the prefix with four of the
    # secret: only four characters can stand there.
    impostors = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                 if Redactor([secret])(c + text[2:]) == c + text[2:]]
    assert len(impostors) == 60 and text[1] not in impostors


def test_percent_escapes_of_multibyte_characters_and_plus_for_space_only() -> None:
    redact = Redactor(["café au lait-9"])
    assert redact("caf%C3%A9%20au+lait-9") == REDACTED
    assert redact("caf%c3%a9+au%20lait%2D9") == REDACTED
    assert redact("café+au+lait+9") == "café+au+lait+9", "a plus stands only for a space"
    assert redact("caf%C3%A9+au+lait-9"[::-1]) == REDACTED, "read backwards"


def test_of_two_secrets_where_one_begins_the_other_the_longer_is_redacted_whole() -> None:
    redact = Redactor(["token-abc", "token-abc-more-secret"])
    assert redact("x token-abc-more-secret y") == f"x {REDACTED} y"


def test_only_short_values_make_a_redactor_that_redacts_nothing() -> None:
    assert Redactor(["abc", "xy"])("hello abc xy") == "hello abc xy"
    assert not Redactor(["abc"]).finds("abc")


def test_an_auth_scheme_is_dropped_from_a_value_of_exactly_four_characters() -> None:
    assert Redactor(["Bearer abcd"])("token abcd") == f"token {REDACTED}"
    assert Redactor(["Bearer abc"])("token abc") == "token abc"


def test_a_basic_password_may_hold_colons_and_a_malformed_token_decodes_to_nothing() -> None:
    colon = Redactor(["Basic " + base64.b64encode(b"svc:pa:ss-word").decode()])
    assert colon("pw pa:ss-word") == f"pw {REDACTED}"
    junk = base64.b64encode(b"user:password-1").decode() + "!!"
    assert Redactor([f"Basic {junk}"])("password-1") == "password-1"


def test_spaced_hex_leaves_no_three_bytes_of_the_secret() -> None:
    secret = "dk-Wq3nR8vL5pY1-secret-env"
    dump = "".join(f" {b:02x}" + ("\n" if i % 16 == 15 else "")
                   for i, b in enumerate(secret.encode()))
    kept = re.sub(r"[^0-9a-f]", "", Redactor([secret])(dump))
    hexed = secret.encode().hex()
    assert not any(hexed[i:i + 6] in kept for i in range(0, len(hexed) - 6, 2))
