"""The documentation site: its reference pages are what the code says, and its strict build fails on a
broken link (decision 0024)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from merlin.docs_reference import (
    DECISIONS,
    REFRESH,
    metrics_of,
    render,
    render_decisions,
    render_http_api,
    render_webhooks,
)
from tests import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"


def test_the_generated_pages_are_current() -> None:
    stale = [
        str(relative)
        for relative, text in render(DOCS).items()
        if not (DOCS / relative).is_file() or (DOCS / relative).read_text() != text
    ]
    assert stale == [], f"stale in docs/: run `{REFRESH}` (or `make docs-reference`)"


def _record(folder: Path, name: str, first_line: str) -> None:
    (folder / name).write_text(f"{first_line}\n\n## Context\n")


def test_a_new_decision_record_is_listed_with_its_title(tmp_path: Path) -> None:
    _record(tmp_path, "0001-first.md", "# 0001 — The first")
    _record(tmp_path, "0002-second.md", "# 0002: The second | with a bar")
    (tmp_path / "index.md").write_text("# not a record\n")
    page = render_decisions(tmp_path)
    assert "| [0001](0001-first.md) | The first |" in page
    assert "| [0002](0002-second.md) | The second \\| with a bar |" in page
    assert "index.md" not in page.split("| --- | --- |")[1]


@pytest.mark.parametrize("first_line", ["Status: accepted", "# 0003 — Its number is not the file's"])
def test_a_record_without_a_numbered_title_is_refused(tmp_path: Path, first_line: str) -> None:
    _record(tmp_path, "0002-untitled.md", first_line)
    with pytest.raises(ValueError, match=r"0002-untitled\.md"):
        render_decisions(tmp_path)


def test_the_index_lists_every_record_in_the_folder() -> None:
    index = (DOCS / DECISIONS).read_text()
    records = sorted(path.name for path in (DOCS / DECISIONS.parent).glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert records
    assert [name for name in records if f"]({name})" not in index] == []


def test_a_metric_is_listed_with_its_labels_before_it_has_a_series() -> None:
    registry = CollectorRegistry()
    Counter("merlin_things", "Things done", ["endpoint", "outcome"], registry=registry)
    Histogram("merlin_thing_seconds", "Time per thing", registry=registry)
    listed = {metric.name: metric for metric in metrics_of(registry)}
    assert set(listed) == {"merlin_things_total", "merlin_thing_seconds"}
    assert listed["merlin_things_total"].labels == ("endpoint", "outcome")
    assert (listed["merlin_things_total"].kind, listed["merlin_things_total"].help) == (
        "counter",
        "Things done",
    )
    assert listed["merlin_thing_seconds"].labels == ()  # not `le`: every histogram's bucket label


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "merlin test API", "version": "1"},
    "paths": {
        "/v1/things/{name}": {
            "put": {
                "operationId": "put_thing",
                "summary": "Put a thing",
                "security": [{"bearer": ["admin"]}],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}},
                },
                "responses": {"200": {"description": "Done"}, "404": {"description": "No | such thing"}},
            }
        }
    },
    "webhooks": {
        "thing.created": {
            "post": {
                "summary": "A thing was created",
                "parameters": [
                    {"name": "webhook-id", "in": "header", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Created"}}}
                },
                "responses": {"204": {"description": "Taken"}},
            }
        }
    },
    "components": {
        "schemas": {
            "Created": {"type": "object", "properties": {"thing": {"$ref": "#/components/schemas/Thing"}}},
            "Thing": {"type": "object", "properties": {"colour": {"type": "string"}}},
            "Unrelated": {"type": "string"},
        },
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}


def test_an_operation_is_rendered_with_what_the_document_says_of_it() -> None:
    page = render_http_api({"test-api": _DOCUMENT})
    assert "### `PUT /v1/things/{name}` {#test-api-put_thing}" in page
    assert "- Operation id: `put_thing`" in page
    assert "- Security: `bearer` (admin)" in page
    assert "| `name` | path | `string` | yes |  |" in page
    assert "Request body (required): `application/json`: [`Thing`](#test-api-schema-thing)" in page
    assert "| `404` | No \\| such thing |  |" in page
    assert "#### `Thing` {#test-api-schema-thing}" in page
    assert "[openapi/test-api.json](openapi/test-api.json)" in page


def test_a_webhook_is_rendered_with_its_headers_and_its_payloads_schemas() -> None:
    page = render_webhooks({"test-api": _DOCUMENT})
    assert "## `thing.created`" in page
    assert "| `webhook-id` | header | `string` | yes |  |" in page
    payload, referred = page.split("The schemas it refers to:")
    assert '"$ref": "#/components/schemas/Created"' in payload
    assert "`Created`:" in referred
    assert "`Thing`:" in referred  # through Created
    assert "Unrelated" not in page
    assert "No API's OpenAPI document declares webhooks." not in page


def test_without_webhooks_the_page_says_so() -> None:
    document = {key: value for key, value in _DOCUMENT.items() if key != "webhooks"}
    assert "No API's OpenAPI document declares webhooks." in render_webhooks({"test-api": document})


def test_the_benchmark_results_are_in_the_docs_by_a_link() -> None:
    link = DOCS / "bench-results"
    assert link.is_symlink()
    assert os.readlink(link) == "../bench/results"  # relative: the same in every checkout


def test_the_strict_build_fails_on_a_broken_link_a_missing_anchor_or_a_page_left_out(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs", symlinks=True)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results").symlink_to(PROJECT_ROOT / "bench" / "results")
    with (tmp_path / "docs" / "performance.md").open("a") as page:
        page.write("\n[gone](no-such-page.md) [no anchor](settings.md#no-such-heading)\n")
    (tmp_path / "docs" / "stray.md").write_text("# In no nav\n")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=120,
        check=False,
    )
    said = built.stdout + built.stderr
    assert built.returncode != 0, said
    for planted in ("'no-such-page.md'", "'#no-such-heading'", "stray.md"):
        assert planted in said, said
    assert "Aborted with 3 warnings in strict mode!" in said  # these three and nothing else
