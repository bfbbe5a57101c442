"""The SSE parser against the WHATWG event-stream rules, including every way a
network can split a stream into chunks."""

from __future__ import annotations

import pytest

from sessctl.providers.sse import SSEDecoder, SSEEvent, parse_sse


def test_multiline_data_is_joined_with_newlines_and_one_leading_space_dropped() -> None:
    raw = 'data: {\ndata:  "a": 1,\ndata:"b": 2\ndata: }\n\n'
    assert parse_sse(raw) == [SSEEvent("message", '{\n "a": 1,\n"b": 2\n}')]


def test_event_field_names_the_event_and_resets_after_dispatch() -> None:
    raw = "event: message_start\ndata: 1\n\ndata: 2\n\n"
    assert [(e.event, e.data) for e in parse_sse(raw)] == [("message_start", "1"), ("message", "2")]


def test_comments_and_keepalives_dispatch_nothing() -> None:
    raw = ": hello\n\n:\n\nevent: ping\n: inside an event\ndata: x\n\n: OPENROUTER PROCESSING\n\n"
    assert parse_sse(raw) == [SSEEvent("ping", "x")]


def test_an_event_without_data_is_not_dispatched() -> None:
    assert parse_sse("event: lonely\n\nid: 7\n\n") == []


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_every_line_ending(eol: str) -> None:
    raw = eol.join(["event: a", "data: one", "data: two", "", "data: [DONE]", "", ""])
    assert [(e.event, e.data) for e in parse_sse(raw)] == [("a", "one\ntwo"), ("message", "[DONE]")]


def test_fields_without_colon_id_retry_unknown_and_bom() -> None:
    raw = "\ufeffdata\nid: 42\nretry: 1500\nretry: soon\nfoo: bar\n\n"
    assert parse_sse(raw) == [SSEEvent("message", "", id="42", retry=1500)]


def test_an_unfinished_event_at_end_of_stream_is_discarded() -> None:
    # What makes a cut stream detectable: no blank line, no event.
    assert parse_sse("data: one\n\ndata: two\n") == [SSEEvent("message", "one")]
    assert parse_sse("data: one\n\ndata: tw") == [SSEEvent("message", "one")]


def test_a_final_cr_is_a_line_end_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r\r") == []  # the last CR might be the start of a CRLF
    assert decoder.close() == [SSEEvent("message", "x")]


def test_byte_by_byte_feeding_gives_the_same_events() -> None:
    raw = (
        "event: content_block_delta\r\ndata: {\"text\": \"h\u00e9llo \u2713 \U0001f600\"}\r\n\r\n"
        ": keep-alive\r\n\r\ndata: a\r\ndata: b\r\n\r\ndata: [DONE]\r\n\r\n"
    ).encode()
    whole = parse_sse(raw)
    decoder = SSEDecoder()
    pieces: list[SSEEvent] = []
    for i in range(len(raw)):
        pieces += decoder.feed(raw[i : i + 1])  # splits CRLFs and UTF-8 sequences
    pieces += decoder.close()
    assert pieces == whole
    assert [e.data for e in whole] == ['{"text": "h\u00e9llo \u2713 \U0001f600"}', "a\nb", "[DONE]"]
