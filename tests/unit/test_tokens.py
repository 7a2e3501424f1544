"""``merlin token``: development tokens the APIs accept, and clear errors."""

from __future__ import annotations

import jwt
import pytest

from merlin.cli import main

SECRET = "a-development-secret-of-at-least-32-chars"


def test_a_minted_token_carries_subject_rooms_scope_and_lifetime(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_AUTH_JWT_SECRET", SECRET)
    assert (
        main(["token", "bob", "--rooms", "lobby, support", "--scope", "messages:read", "--ttl", "90s"]) == 0
    )
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="merlin", issuer="merlin")
    assert (claims["sub"], claims["rooms"], claims["scope"]) == ("bob", ["lobby", "support"], "messages:read")
    assert claims["exp"] - claims["iat"] == 90


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--ttl", "soon"], "--ttl 'soon'"),
        (["--ttl", "0h"], "--ttl '0h'"),
        (["--scope", "messages:write root"], "unknown root"),
    ],
)
def test_bad_options_are_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], arguments: list[str], error: str
) -> None:
    monkeypatch.setenv("MERLIN_AUTH_JWT_SECRET", SECRET)
    assert main(["token", "bob", *arguments]) == 2
    assert error in capsys.readouterr().err


def test_a_bad_setting_is_one_line_naming_its_variable_and_never_echoing_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_AUTH_JWT_SECRET", "too-short-but-secret")
    assert main(["token", "bob"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "MERLIN_AUTH_JWT_SECRET must be at least 32 characters" in error
    assert "too-short-but-secret" not in error
