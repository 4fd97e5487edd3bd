"""The SSE parser against the event-stream rules upstreams rely on, split at every boundary."""

from __future__ import annotations

import random

import pytest
from llmgate_sidecar.wire.sse import DONE, Event, SSEError, SSEParser, encode

STREAM = (b": keep-alive comment\r\n\r\n"
          b"event: message_start\r\ndata: {\"a\": 1}\r\n\r\n"
          b"data: line one\ndata: line two\n\n"
          b"data:no-space\n\n"
          b"data: caf\xc3\xa9 \xe2\x82\xac\n\n"
          b"event: ping\ndata: {}\n\n"
          b"data: [DONE]\n\n")
EXPECTED = [Event('{"a": 1}', "message_start"), Event("line one\nline two"),
            Event("no-space"), Event("café €"), Event("{}", "ping"), Event("[DONE]")]


def parse(chunks: list[bytes]) -> list[Event]:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events + parser.close()


def test_whole_stream() -> None:
    assert parse([STREAM]) == EXPECTED


def test_every_single_split_point_gives_the_same_events() -> None:
    for cut in range(len(STREAM) + 1):
        assert parse([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_random_fragmentation_including_inside_utf8_sequences() -> None:
    rng = random.Random(7)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 20)))
        chunks = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
        assert parse(chunks) == EXPECTED


def test_a_final_event_without_its_blank_line_still_counts() -> None:
    assert parse([b"data: last"]) == [Event("last")]
    assert parse([b"event: x\ndata: y\n"]) == [Event("y", "x")]


def test_encode_round_trips_through_the_parser() -> None:
    raw = encode({"k": "v\nw"}, event="delta") + DONE
    assert parse([raw]) == [Event('{"k":"v\\nw"}', "delta"), Event("[DONE]")]


def test_a_line_that_never_ends_is_cut_at_the_bound() -> None:
    parser = SSEParser(max_event=1024)
    assert parser.feed(b"data: " + b"a" * 1000) == []
    with pytest.raises(SSEError, match="line is longer than 1024"):
        parser.feed(b"a" * 100)


def test_an_event_that_never_ends_is_cut_at_the_bound() -> None:
    """Short data lines without the blank line that ends the event: bounded too."""
    parser = SSEParser(max_event=1024)
    with pytest.raises(SSEError, match="event is larger than 1024"):
        for _ in range(200):
            parser.feed(b"data: xxxxxxxxxx\n")


def test_events_under_the_bound_pass_whole() -> None:
    parser = SSEParser(max_event=1024)
    events = parser.feed(b"data: " + b"a" * 1000 + b"\n\n" + b"data: b\n\n")
    assert [len(e.data) for e in events] == [1000, 1]
