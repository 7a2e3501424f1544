"""The delivery client against a scripted server on a real socket: what it sends, reads, keeps and refuses."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from webhooks.calls import ANSWER_BODY_CAP, CallFailed, HttpSend
from webhooks.url_safety import LOOPBACK

pytestmark = pytest.mark.every_loop

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
HEADERS = {"content-type": "application/json", "webhook-id": "e1"}


@dataclass
class Request:
    head: str
    body: bytes
    connection: int  # which accepted connection it came on, counted from 0


# What the server does with a request: the bytes to answer with, or None to close the connection.
Answer = Callable[[Request], Awaitable[bytes | None]]


@dataclass
class Server:
    port: int
    requests: list[Request] = field(default_factory=list)
    connections: int = 0


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    length = next(
        (
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        ),
        0,
    )
    return head, await reader.readexactly(length)


@asynccontextmanager
async def serving(answer: Answer, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server_state = Server(0)

    writers: list[asyncio.StreamWriter] = []
    handlers: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = server_state.connections
        server_state.connections += 1
        writers.append(writer)
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                try:
                    head, body = await _read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request = Request(head, body, number)
                server_state.requests.append(request)
                reply = await answer(request)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
                if reply.startswith(b"HTTP/1.0") or b"\r\nconnection: close\r\n" in reply.lower():
                    return  # as the answer said: it ends with the connection
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    server_state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield server_state
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)


@pytest.fixture
async def send() -> AsyncIterator[HttpSend]:
    """A client that may call this machine, closed after the test."""
    client = HttpSend(allowed=LOOPBACK)
    yield client
    await client.close()


async def statuses(send: HttpSend, server: Server, calls: int = 2) -> list[int]:
    """The statuses of ``calls`` calls in a row to ``server``."""
    url = f"http://127.0.0.1:{server.port}/"
    return [(await send(url, b"{}", {}, 5.0)).status for _ in range(calls)]


def always(reply: bytes | None) -> Answer:
    async def answer(_: Request) -> bytes | None:
        return reply

    return answer


async def test_a_call_is_one_post_with_its_headers_and_body_and_the_connection_is_kept(
    send: HttpSend,
) -> None:
    async with serving(always(OK)) as server:
        url = f"http://127.0.0.1:{server.port}/hooks/a?x=1"
        first = await send(url, b'{"n": 1}', HEADERS, 5.0)
        second = await send(url, b'{"n": 2}', HEADERS, 5.0)
    assert (first.status, second.status) == (200, 200)
    assert server.connections == 1
    head = server.requests[0].head
    assert head.startswith("POST /hooks/a?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head
    assert "content-type: application/json\r\n" in head
    assert "webhook-id: e1\r\n" in head
    assert "Content-Length: 8\r\n" in head
    assert [r.body for r in server.requests] == [b'{"n": 1}', b'{"n": 2}']


async def test_credentials_in_the_url_become_basic_authorization(send: HttpSend) -> None:
    async with serving(always(OK)) as server:
        await send(f"http://us%40er:p%3Ass@127.0.0.1:{server.port}/", b"{}", {}, 5.0)
    token = base64.b64encode(b"us@er:p:ss").decode()
    assert f"Authorization: Basic {token}\r\n" in server.requests[0].head


async def test_the_status_and_retry_after_are_answered(send: HttpSend) -> None:
    busy = b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n"
    async with serving(always(busy)) as server:
        answer = await send(f"http://127.0.0.1:{server.port}/", b"{}", {}, 5.0)
    assert (answer.status, answer.retry_after) == (503, "7")


async def test_a_chunked_answer_is_read_to_its_end_and_an_interim_one_passed_over(send: HttpSend) -> None:
    replies = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    ]

    async def answer(_: Request) -> bytes:
        return replies.pop(0)

    async with serving(answer) as server:
        answered = await statuses(send, server)
    assert answered == [200, 204]
    assert server.connections == 1


async def test_an_answer_ending_with_its_connection_is_read_and_the_connection_not_kept(
    send: HttpSend,
) -> None:

    async def answer(request: Request) -> bytes | None:
        return b"HTTP/1.0 202 Accepted\r\n\r\nno length" if request.connection == 0 else OK

    async with serving(answer) as server:
        answered = await statuses(send, server)
    assert answered == [202, 200]
    assert server.connections == 2


async def test_an_answer_past_the_cap_is_not_read_and_its_connection_is_closed(send: HttpSend) -> None:
    big = ANSWER_BODY_CAP * 4
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big + b"x" * big
    async with serving(always(reply)) as server:
        answered = await statuses(send, server)
    assert answered == [200, 200]
    assert server.connections == 2


async def test_a_kept_connection_the_server_dropped_is_replaced_once_without_a_failure(
    send: HttpSend,
) -> None:

    async def answer(request: Request) -> bytes | None:
        # The first connection answers once, then drops the next request unanswered.
        first_on_it = sum(r.connection == request.connection for r in server.requests) == 1
        return OK if request.connection > 0 or first_on_it else None

    async with serving(answer) as server:
        url = f"http://127.0.0.1:{server.port}/"
        answered = [(await send(url, f'{{"n": {n}}}'.encode(), {}, 5.0)).status for n in range(2)]
    assert answered == [200, 200]
    assert [(r.connection, r.body) for r in server.requests] == [
        (0, b'{"n": 0}'), (0, b'{"n": 1}'), (1, b'{"n": 1}'),
    ]  # fmt: skip


async def test_a_new_connection_closed_without_an_answer_fails_the_call(send: HttpSend) -> None:
    async with serving(always(None)) as server:
        with pytest.raises(CallFailed, match="connection closed before an answer") as failed:
            await send(f"http://127.0.0.1:{server.port}/", b"{}", {}, 5.0)
    assert not failed.value.timed_out
    assert len(server.requests) == 1


async def test_a_slow_answer_times_out_and_its_connection_is_not_used_again(send: HttpSend) -> None:
    release = asyncio.Event()

    async def answer(request: Request) -> bytes:
        if request.connection == 0:
            await release.wait()
        return OK

    async with serving(answer) as server:
        url = f"http://127.0.0.1:{server.port}/"
        with pytest.raises(CallFailed, match=r"timeout after 0\.2 s") as failed:
            await send(url, b"{}", {}, 0.2)
        release.set()
        assert (await send(url, b"{}", {}, 5.0)).status == 200
    assert failed.value.timed_out
    assert server.connections == 2


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"SMTP ready\r\n\r\n", "malformed answer"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"p" * 70_000 + b"\r\n\r\n", "answer's head longer than"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"p" * 300_000, "answer's head longer than"),  # no end
    ],
)
async def test_an_answer_that_is_not_http_fails_the_call(reply: bytes, reason: str, send: HttpSend) -> None:
    async with serving(always(reply)) as server:
        with pytest.raises(CallFailed, match=reason):
            await send(f"http://127.0.0.1:{server.port}/", b"{}", {}, 5.0)


async def test_a_refused_connection_fails_the_call(send: HttpSend) -> None:
    async with serving(always(OK)) as server:
        port = server.port
    with pytest.raises(CallFailed, match=f"cannot connect to 127.0.0.1:{port}"):
        await send(f"http://127.0.0.1:{port}/", b"{}", {}, 5.0)


async def test_inner_addresses_are_refused_before_connecting_unless_allowed() -> None:
    send = HttpSend()
    async with serving(always(OK)) as server:
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(CallFailed, match=r"refused: .*loopback"):
                await send(f"http://{host}:{server.port}/", b"{}", {}, 5.0)
    await send.close()
    assert server.connections == 0


async def test_calls_beyond_the_connection_bound_wait_for_one() -> None:
    send = HttpSend(connections=1, allowed=LOOPBACK)
    async with serving(always(OK)) as server:
        url = f"http://127.0.0.1:{server.port}/"
        answers = await asyncio.gather(*(send(url, b"{}", {}, 5.0) for _ in range(5)))
    await send.close()
    assert [a.status for a in answers] == [200] * 5
    assert server.connections == 1


async def test_a_header_value_with_a_line_break_is_never_sent(send: HttpSend) -> None:
    with pytest.raises(ValueError, match="line break"):
        await send("http://127.0.0.1:9/", b"{}", {"x-evil": "a\r\nInjected: yes"}, 5.0)


# -- TLS ------------------------------------------------------------------------------------------


def _certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the name localhost (not for 127.0.0.1), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_tls_calls_check_the_certificate_and_the_host_name(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with serving(always(OK), tls=served) as server:
        untrusted = HttpSend(allowed=LOOPBACK)
        with pytest.raises(CallFailed, match="certificate verify failed"):
            await untrusted(f"https://localhost:{server.port}/", b"{}", {}, 5.0)
        await untrusted.close()
        trusted = HttpSend(allowed=LOOPBACK, tls=trusting)
        answer = await trusted(f"https://localhost:{server.port}/hooks", b"{}", {}, 5.0)
        again = await trusted(f"https://localhost:{server.port}/hooks", b"{}", {}, 5.0)
        with pytest.raises(CallFailed, match="certificate verify failed"):
            await trusted(f"https://127.0.0.1:{server.port}/", b"{}", {}, 5.0)  # not a name it holds
        await trusted.close()
    assert (answer.status, again.status) == (200, 200)
    assert server.requests[0].head.startswith("POST /hooks HTTP/1.1\r\n")
    assert f"Host: localhost:{server.port}\r\n" in server.requests[0].head
