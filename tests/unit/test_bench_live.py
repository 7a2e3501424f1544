"""The live scenario's pure parts: the event stream, what a delivery tells, the figures and rows,
Centrifugo's config and build, and how its rows are charted. The subscribers' client is driven against a
stream served here.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from urllib.parse import parse_qs, urlsplit

import jwt
import orjson
import pytest
from matplotlib.patches import Rectangle

from bench.charts import LATENCY_LIVE_ONLY, figure
from bench.harness import PEERS, Row
from bench.live import centrifugo
from bench.live.accounting import (
    BODY_CHARACTERS,
    CONNECTED,
    PER_CORE,
    Message,
    Side,
    Subscriber,
    Tally,
    centrifugo_message,
    comparison_row,
    expected_deliveries,
    idle_rows,
    merlin_message,
    prime_body,
    sent_at,
    split,
    stamp,
    subscriber_rooms,
)
from bench.live.scenario import FULL, PEER, QUICK
from bench.live.sender import message
from bench.live.sse import Event, EventStream
from bench.live.subscribers import Stream, Streams, request
from bench.live.usage import descendants, parse_rss_kb, parse_stat, usage
from tests import PROJECT_ROOT
from tests.unit.test_bench_charts import legend_labels, peers_rows, texts, titled

# -- the event stream ------------------------------------------------------------------------------


def test_events_split_anywhere_come_out_whole_with_crlf_lf_or_cr_line_ends() -> None:
    sent = (
        b': hi\r\nid: 0-1\r\nevent: message.created\r\ndata: {"a": 1}\r\n\r\n'
        b"data: x\ndata: y\n\ndata: z\r\rdata: w\n\n"
    )
    for cut in range(len(sent) + 1):
        stream = EventStream()
        events = stream.feed(sent[:cut]) + stream.feed(sent[cut:])
        assert events == [
            Event(b'{"a": 1}', "message.created", "0-1"),
            Event(b"x\ny"),
            Event(b"z"),
            Event(b"w"),
        ], cut
        assert stream.comments == 1


def test_an_event_is_only_given_once_its_blank_line_arrives() -> None:
    stream = EventStream()
    assert stream.feed(b"data: half") == []
    assert stream.feed(b" of it\r\n") == []
    assert stream.feed(b"\r\n") == [Event(b"half of it")]
    assert stream.feed(b"\r\n: heartbeat\r\n\r\n") == []  # a blank line without data, a comment: no event
    assert stream.comments == 1


# -- what a delivery tells -------------------------------------------------------------------------


def test_a_body_carries_its_send_time_at_the_scenarios_length() -> None:
    body = stamp(1765156000.123456)
    assert len(body) == BODY_CHARACTERS
    assert sent_at(body) == pytest.approx(1765156000.123456, abs=1e-6)
    assert sent_at(prime_body(1765156000.0)) is None
    with pytest.raises(ValueError, match="could not convert"):
        sent_at("hello there")
    with pytest.raises(ValueError, match="no send time"):
        sent_at("nan xxx")


def _merlin_event(room: str, seq: int, body: str) -> Event:
    data = {"message_id": "m", "room_id": room, "sender_id": "bench", "body": body, "version": 1, "seq": seq,
            "created_at": "t", "updated_at": "t", "event_id": "e", "position": "0-1"}  # fmt: skip
    return Event(orjson.dumps(data), "message.created", "0-1")


def test_merlin_and_centrifugo_events_give_the_same_message() -> None:
    body = stamp(1.0)
    assert merlin_message(_merlin_event("room-1", 3, body)) == Message("room-1", 3, body)
    assert merlin_message(Event(b"{}", "something.else")) is None
    publication = {"channel": "room-1", "pub": {"data": message("room-1", 3, body), "offset": 7}}
    assert centrifugo_message(Event(orjson.dumps(publication))) == Message("room-1", 3, body)
    connected = b'{"connect":{"client":"c","version":"6.9.1","subs":{"room-1":{}}}}'
    assert centrifugo_message(Event(connected)) is CONNECTED
    assert centrifugo_message(Event(b"{}")) is None  # Centrifugo's ping on a unidirectional stream


def test_centrifugo_is_given_the_message_merlins_stream_shows() -> None:
    shown = {"message_id", "room_id", "sender_id", "body", "version", "seq", "created_at", "updated_at",
             "event_id", "position"}  # fmt: skip
    assert set(message("room-1", 1, "b")) == shown


def test_a_tally_counts_deliveries_once_with_their_latency_and_priming_apart() -> None:
    tally, first, second = Tally(), Subscriber("room-1"), Subscriber("room-1")
    tally.received(first, Message("room-1", 1, prime_body(99.0)), 100.0)
    tally.received(first, Message("room-1", 1, prime_body(99.0)), 100.0)  # the same again: repeated
    tally.received(second, Message("room-1", 1, prime_body(99.0)), 100.0)
    tally.received(first, Message("room-1", 2, stamp(100.0)), 100.25)
    tally.received(first, Message("room-1", 4, stamp(101.0)), 101.5)
    tally.received(first, Message("room-1", 3, stamp(100.5)), 101.6)  # behind the last seen: repeated
    assert (tally.primed, tally.delivered, tally.repeated) == (2, 2, 2)
    assert list(tally.latencies) == pytest.approx([0.25, 0.5])
    assert (tally.first_at, tally.last_at) == (100.25, 101.5)


def test_every_subscriber_expects_each_message_of_its_room() -> None:
    rooms = subscriber_rooms(7, 3)
    assert rooms == ["room-0", "room-1", "room-2", "room-0", "room-1", "room-2", "room-0"]
    assert expected_deliveries({"room-0": 10, "room-1": 5}, rooms) == 3 * 10 + 2 * 5
    assert split(rooms, 3) == [rooms[0:3], rooms[3:6], rooms[6:]]


def test_the_plans_offer_the_same_deliveries_whatever_the_fan_out() -> None:
    assert FULL.sizes == (1_000, 10_000)
    assert FULL.workers == (1, 2)
    assert FULL.rooms == 100
    assert FULL.rate(1_000) * 10 == FULL.rate(10_000) * 100 == FULL.offered
    assert QUICK.sizes[0] <= 50
    assert QUICK.idle_subscribers <= 50


def _side(latencies: list[float] | None = None) -> Side:
    given = [0.01] * 98 + [0.2, 0.3] if latencies is None else latencies
    return Side(2_000, 1_000, 990, 0, 10.0, 0.5, 150.0, 100.0, given, 100.0)


def test_a_sides_figures_are_per_cpu_second_of_its_server_and_per_1000_subscribers() -> None:
    figures = _side().figures()
    assert figures["deliveries_per_s"] == 99.0
    assert figures["per_core"] == 1_980.0  # 990 deliveries in 0.5 s of CPU
    assert figures["cores"] == 0.05
    assert figures["missing"] == 10.0
    assert figures["mb_per_1000"] == 25.0  # 50 MB more for 2,000 subscribers
    assert (figures["p50_ms"], figures["p99_ms"]) == (10.0, 200.0)
    assert math.isnan(_side(latencies=[]).figures()["p99_ms"])


def test_a_comparison_row_puts_merlin_beside_its_peer_named() -> None:
    merlin = {"per_core": 3_000.0, "p50_ms": 5.0, "p99_ms": 30.0, "deliveries_per_s": 5_000.0}
    other = {"per_core": 6_000.0, "p50_ms": 2.0, "p99_ms": 20.0, "deliveries_per_s": 5_000.0}
    row = comparison_row(PEERS, PEER, 10_000, 100, 2, merlin, other)
    assert (row.merlin, row.limit, row.ratio, row.unit) == (3_000.0, 6_000.0, 0.5, PER_CORE)
    assert row.peer == PEER == "Centrifugo 6.9.1 uni_sse"
    assert row.measure.endswith(", N = 2")
    assert row.measure.startswith("10,000 subscribers over 100 rooms")
    assert row.extra is not None
    assert (row.p99_ms, row.extra["peer_p99_ms"], row.extra["p99_ratio"]) == (30.0, 20.0, 1.5)


def test_the_idle_rows_are_each_beside_the_same_without_subscribers() -> None:
    alone = {"requests_per_second": 2_000.0, "events_per_second": 20_000.0, "p50_ms": 20.0, "p99_ms": 80.0}
    beside = {"requests_per_second": 1_800.0, "events_per_second": 19_000.0, "p50_ms": 22.0, "p99_ms": 90.0}
    write, projection = idle_rows("live", 10_000, 100_000, alone, beside)
    assert (write.ratio, projection.ratio) == (0.9, 0.95)
    assert write.limit_name == projection.limit_name == "the same without subscribers"
    assert "10,000 idle subscribers" in write.measure
    assert write.peer is None


# -- Centrifugo ------------------------------------------------------------------------------------


def test_centrifugos_config_has_no_insecure_mode_and_only_what_is_measured() -> None:
    document = centrifugo.config(8123, "s" * 48, "k" * 32)
    assert document["engine"] == {"type": "memory"}
    assert document["uni_sse"] == {"enabled": True}
    assert document["websocket"] == {"disabled": True}
    assert document["http_api"]["key"] == "k" * 32
    assert document["client"]["token"]["hmac_secret_key"] == "s" * 48
    assert document["http_server"] == {"address": "127.0.0.1", "port": 8123}
    assert document["usage_stats"] == {"disabled": True}
    assert "insecure" not in json.dumps(document)


def test_a_connection_token_subscribes_to_its_channels_and_goes_into_the_url() -> None:
    token = centrifugo.connection_token("s" * 48, "reader-room-1", ["room-1"])
    claims = jwt.decode(token, "s" * 48, algorithms=["HS256"], audience=centrifugo.AUDIENCE,
                        issuer=centrifugo.ISSUER)  # fmt: skip
    assert (claims["sub"], claims["channels"]) == ("reader-room-1", ["room-1"])
    path = urlsplit(centrifugo.stream_path(token))
    assert path.path == "/connection/uni_sse"
    assert json.loads(parse_qs(path.query)["cf_connect"][0]) == {"token": token}


def test_the_makefile_builds_the_version_the_benchmark_runs() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    [version] = re.findall(r"^CENTRIFUGO_VERSION := (\S+)$", makefile, re.MULTILINE)
    [module] = re.findall(r"^CENTRIFUGO_MODULE := (\S+)$", makefile, re.MULTILINE)
    assert (module, version) == (centrifugo.MODULE, centrifugo.VERSION)
    assert ".cache/go/bin/centrifugo-$(CENTRIFUGO_VERSION)/centrifugo" in makefile
    built = centrifugo.BINARY.relative_to(PROJECT_ROOT)
    assert str(built) == f".cache/go/bin/centrifugo-{version}/centrifugo"
    command = centrifugo.build_command("go")
    assert command[-1] == f"{module}@{version}"
    assert command[2].endswith(f"internal/build.Version={version.removeprefix('v')}")
    assert centrifugo.build_env({})["CGO_ENABLED"] == "0"


# -- a server's usage ------------------------------------------------------------------------------


def test_proc_stat_is_read_past_a_command_holding_spaces_and_parentheses() -> None:
    line = "4242 (uvicorn (worker) 1) S 4200 4242 4242 0 -1 4194560 9 0 0 0 150 25 0 0 20 0 3 0 1 2 3"
    assert parse_stat(line) == parse_stat(line + "\n")
    stat = parse_stat(line)
    assert (stat.pid, stat.ppid, stat.cpu_ticks) == (4242, 4200, 175)
    assert parse_rss_kb("Name:\tx\nVmRSS:\t  20480 kB\nThreads: 3\n") == 20480
    assert parse_rss_kb("Name:\tkthreadd\n") == 0


def test_a_servers_tree_is_itself_and_every_process_below_it() -> None:
    from bench.live.usage import Stat

    stats = [Stat(1, 0, 0), Stat(10, 1, 0), Stat(11, 10, 0), Stat(12, 10, 0), Stat(13, 12, 0), Stat(20, 1, 0)]
    assert sorted(descendants(10, stats)) == [10, 11, 12, 13]
    assert descendants(13, stats) == [13]


def test_this_process_uses_some_cpu_and_memory() -> None:
    sum(range(200_000))  # some CPU time, however little the run has used before
    mine = usage(os.getpid())
    assert mine.cpu_s > 0
    assert 10 < mine.rss_mb < 10_000


# -- the subscribers' client -----------------------------------------------------------------------


async def test_a_subscriber_reads_a_chunked_stream_and_tallies_what_it_says() -> None:
    """A server answering as merlin's read API does (chunked, CRLF, heartbeats); every piece small."""
    events = [_merlin_event("room-1", 1, prime_body(1.0)), _merlin_event("room-1", 2, stamp(2.0)),
              _merlin_event("room-1", 2, stamp(2.0)), _merlin_event("room-1", 3, stamp(3.0))]  # fmt: skip
    payload = b": hello\r\n\r\n" + b"".join(
        b"id: %s\r\nevent: %s\r\ndata: %s\r\n\r\n" % (e.id.encode(), e.event.encode(), e.data)  # type: ignore[union-attr]
        for e in events
    )
    asked: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n")
        for start in range(0, len(payload), 7):
            piece = payload[start : start + 7]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    streams = Streams("merlin")
    stream = Stream(streams, Subscriber("room-1"), request("/v1/rooms/room-1/live", "127.0.0.1", port,
                                                           {"Authorization": "Bearer t"}))  # fmt: skip
    loop = asyncio.get_running_loop()
    async with server:
        await loop.create_connection(lambda: stream, "127.0.0.1", port)
        assert await stream.ready
        for _ in range(200):
            if stream.transport is None:
                break
            await asyncio.sleep(0.01)
    assert asked[0].startswith(b"GET /v1/rooms/room-1/live HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t\r\n" in asked[0]
    tally = streams.tally
    assert (tally.primed, tally.delivered, tally.repeated, stream.events.comments) == (1, 2, 1, 1)
    assert streams.progress()["open"] == 1


async def test_a_refused_stream_is_a_failure_not_a_subscriber() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    streams = Streams("merlin")
    stream = Stream(streams, Subscriber("room-1"), request("/nowhere", "127.0.0.1", port, {}))
    async with server:
        await asyncio.get_running_loop().create_connection(lambda: stream, "127.0.0.1", port)
        assert not await stream.ready
    assert (streams.failed, streams.ready, streams.errors) == (1, 0, {"HTTP 404": 1})


# -- the charts ------------------------------------------------------------------------------------


def _live(scenario: str) -> list[Row]:
    merlin = {"per_core": 9_000.0, "p50_ms": 8.0, "p99_ms": 40.0, "missing": 0.0}
    peer = {"per_core": 12_000.0, "p50_ms": 3.0, "p99_ms": 20.0, "missing": 0.0}
    return [comparison_row(scenario, PEER, 1_000, 100, n, merlin, peer) for n in (1, 2)]


def test_the_peers_chart_draws_live_rooms_beside_centrifugo_with_both_p99s() -> None:
    chart = figure([*peers_rows(), *_live(PEERS)])
    assert "Centrifugo 6.9.1 uni_sse" in legend_labels(chart)
    assert [text for text in texts(chart) if "limit" in text.lower()] == []
    [p99] = titled(chart, "p99")
    heights = sorted(round(patch.get_height(), 1) for patch in p99.patches if isinstance(patch, Rectangle))
    assert heights == [20.0, 20.0, 40.0, 40.0]
    [live] = titled(chart, "subscribers")
    assert "read API --workers" in live.get_xlabel()
    for axes in chart.axes:
        assert (axes.get_xscale(), axes.get_yscale(), axes.get_ylim()[0]) == ("linear", "linear", 0)
    assert LATENCY_LIVE_ONLY in texts(chart)
    assert "12,000\n133% of merlin" in texts(chart)
    assert "Centrifugo" in chart.get_suptitle()
    assert "Kafka Connect" in chart.get_suptitle()


def test_a_scenarios_row_beside_a_peer_is_a_bar_of_its_own_not_a_limit() -> None:
    chart = figure(_live("live"))
    [beside] = titled(chart, "beside Centrifugo 6.9.1 uni_sse")
    bars = [patch for patch in beside.patches if isinstance(patch, Rectangle)]
    assert all(bar.get_fill() for bar in bars)  # no dashed outline: a peer is not a limit
    assert sorted(round(bar.get_width()) for bar in bars) == [9_000, 9_000, 12_000, 12_000]
    assert (beside.get_xscale(), beside.get_xlim()[0]) == ("linear", 0)
    assert "Centrifugo 6.9.1 uni_sse" in legend_labels(chart)
    assert "12,000, p99 20.0 ms, 133% of merlin" in texts(chart)
    assert len(titled(chart, "latency")) == 1
