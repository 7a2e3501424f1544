"""A small OTLP/HTTP receiver: takes ``POST /v1/traces`` (protobuf ``ExportTraceServiceRequest``) and keeps
the spans, each as a plain dict, for tests to look through.

``python -m tests.otlp_receiver PORT`` runs one alone (it counts what it receives and keeps nothing): a
collector to point services at while measuring the cost of tracing.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return None if which is None else getattr(value, which)


@dataclass
class OtlpReceiver:
    """The spans received so far (``keep=False``: only counted)."""

    keep: bool = True
    spans: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    count: int = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        return app

    async def _traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        self.requests += 1
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.count += len(scope_spans.spans)
                if self.keep:
                    self.spans.extend(_span(span, resource) for span in scope_spans.spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )


def _span(span: Any, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "service": resource.get("service.name"),
        "resource": resource,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "name": span.name,
        "kind": KINDS.get(span.kind, str(span.kind)),
        "attributes": {a.key: _value(a.value) for a in span.attributes},
        "events": [event.name for event in span.events],
        "links": [(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
        "status": span.status.code,
    }


async def _serve(port: int) -> None:
    receiver = OtlpReceiver(keep=False)
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"receiving OTLP/HTTP on http://127.0.0.1:{port}", flush=True)
    try:
        while True:
            await asyncio.sleep(10)
            print(f"{receiver.requests} exports, {receiver.count} spans", flush=True)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
