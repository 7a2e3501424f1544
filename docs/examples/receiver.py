"""A downstream receiver that verifies merlin's signature (pip install standardwebhooks starlette uvicorn)."""

from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

webhook = Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")  # the endpoint's secret
seen: set[str] = set()


async def receive(request: Request) -> Response:
    body = await request.body()
    try:
        event = webhook.verify(body, dict(request.headers))  # checks signature and timestamp
    except WebhookVerificationError:
        return Response(status_code=401)
    if event["event_id"] in seen:  # at-least-once: a retry may repeat an event
        return Response(status_code=200)
    seen.add(event["event_id"])
    print(event["event_type"], event["room_id"], event["payload"]["body"])
    return Response(status_code=200)


app = Starlette(routes=[Route("/hooks/search-indexer", receive, methods=["POST"])])
