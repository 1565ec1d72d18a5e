"""Viewer links and CSRF tokens: what the bridge signed opens, anything else does not."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from bridge.mapping.links.signing import (
    LinkClaim,
    LinkProblem,
    check_link,
    csrf_token,
    sign_link,
)

SECRET = b"k" * 32
STUDY = "1.2.826.0.1.3680043.10.1137.77.42"


def test_a_signed_link_opens_its_study_until_it_expires() -> None:
    token = sign_link(SECRET, STUDY, 2_000)
    assert token.startswith("brl_")
    assert check_link(SECRET, token, 1_999.9) == LinkClaim(STUDY, 2_000)
    assert check_link(SECRET, token, 2_000) == LinkProblem("expired")
    assert "expired" in LinkProblem("expired").message


def test_another_secret_or_any_changed_character_is_invalid() -> None:
    token = sign_link(SECRET, STUDY, 2_000)
    assert check_link(b"x" * 32, token, 0) == LinkProblem("invalid")
    for index in range(4, len(token)):
        if token[index] == ".":
            continue
        for replacement in ("A", "_", "="):
            if token[index] == replacement:
                continue
            altered = token[:index] + replacement + token[index + 1:]
            assert isinstance(check_link(SECRET, altered, 0), LinkProblem), (index, altered)


def test_a_longer_expiry_cannot_be_grafted_onto_a_signature() -> None:
    short = sign_link(SECRET, STUDY, 2_000)
    long = sign_link(SECRET, STUDY, 9_999_999)
    grafted = long.split(".")[0] + "." + short.split(".")[1]
    assert check_link(SECRET, grafted, 0) == LinkProblem("invalid")


@given(st.text(alphabet=string.printable + "é—", max_size=300))
def test_anything_else_is_invalid_and_never_raises(text: str) -> None:
    assert isinstance(check_link(SECRET, text, 0), LinkProblem)
    assert isinstance(check_link(SECRET, "brl_" + text, 0), LinkProblem)


def test_csrf_tokens_are_bound_to_their_login() -> None:
    assert csrf_token(SECRET, "brs_a") == csrf_token(SECRET, "brs_a")
    assert csrf_token(SECRET, "brs_a") != csrf_token(SECRET, "brs_b")
    assert csrf_token(SECRET, "brs_a") != csrf_token(b"y" * 32, "brs_a")
