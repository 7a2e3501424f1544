"""The endpoints file: TOML or YAML, validated, with errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kernel.errors import InfrastructureError
from tests import PROJECT_ROOT
from webhooks.endpoints import MAX_BUFFER, EndpointSpec, load_endpoints


def test_the_documented_example_loads() -> None:
    (endpoint,) = load_endpoints(PROJECT_ROOT / "docs" / "examples" / "endpoints.toml")
    assert endpoint.name == "search-indexer"
    assert endpoint.retry.max_attempts == 10
    assert endpoint.on_failure == "dead-letter"


def test_yaml_works_too(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.yaml"
    path.write_text(
        "endpoints:\n"
        "  - name: audit\n"
        "    url: http://127.0.0.1:9000/audit\n"
        "    event_types: [MessageUpdated]\n"
        "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
        "    on_failure: block\n"
    )
    (endpoint,) = load_endpoints(path)
    assert endpoint.event_types == frozenset({"MessageUpdated"})
    assert endpoint.on_failure == "block"


GOOD_SECRET = 'secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n'
HEAD = '[[endpoints]]\nname = "a"\nurl = "http://x/"\n'


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[[endpoints]]\nname = "a"\nurl = "not a url"\n' + GOOD_SECRET, "url"),
        (HEAD + 'secret = "short"', "secret"),
        (HEAD + GOOD_SECRET + 'on_failure = "ignore"', "on_failure"),
        ("[[endpoints]\n", "endpoints.toml"),
    ],
)  # fmt: skip
def test_a_bad_file_is_a_clear_error(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "endpoints.toml"
    path.write_text(text)
    with pytest.raises(InfrastructureError, match=complaint):
        load_endpoints(path)


def test_names_must_be_unique(tmp_path: Path) -> None:
    entry = (
        '[[endpoints]]\nname = "a"\nurl = "http://x/"\nsecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n'
    )
    path = tmp_path / "endpoints.toml"
    path.write_text(entry * 2)
    with pytest.raises(InfrastructureError, match="unique"):
        load_endpoints(path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "endpoints.toml",
            '[[endpoints]]\nname = "a"\nurl = "http://x/"\nsecret = "whsec_not!base64-hunter2"\n',
        ),
        ("endpoints.toml", '[[endpoints]]\nname = "a"\nurl = "ftp://u:hunter2@x/"\n' + GOOD_SECRET),
        ("endpoints.yaml", "endpoints:\n  - name: a\n    secret: 'hunter2\n    url: http://x/\n"),
    ],
)
def test_errors_never_echo_what_was_given(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InfrastructureError) as caught:
        load_endpoints(path)
    assert "hunter2" not in str(caught.value)
    assert str(path) in str(caught.value)


def test_an_endpoints_url_is_shown_without_credentials_or_query(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.toml"
    path.write_text(
        '[[endpoints]]\nname = "a"\nurl = "https://user:hunter2@hooks.example:8443/in?token=hunter2"\n'
        + GOOD_SECRET
    )
    (endpoint,) = load_endpoints(path)
    assert endpoint.shown_url == "https://hooks.example:8443/in?…"


@pytest.mark.parametrize("buffer", [0, MAX_BUFFER + 1, 10**12])
def test_a_buffer_is_bounded_as_it_bounds_memory(buffer: int) -> None:
    with pytest.raises(ValidationError):
        EndpointSpec(url="https://hooks.example/in", buffer=buffer)
    assert EndpointSpec(url="https://hooks.example/in", buffer=MAX_BUFFER).buffer == MAX_BUFFER
