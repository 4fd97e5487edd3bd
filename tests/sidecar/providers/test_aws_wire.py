"""The AWS pieces Bedrock needs: SigV4 against AWS's published example, and the
event-stream frame parser (frames split anywhere, exceptions, corruption)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from llmgate_sidecar.upstream.sigv4 import AwsCredentials, sign
from llmgate_sidecar.wire.eventstream import EventStreamError, EventStreamParser, encode_frame

EXAMPLE = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def test_sigv4_matches_the_aws_documentation_example() -> None:
    # The IAM ListUsers example of AWS's "Signature Version 4 signing process" guide.
    headers = sign("GET", "https://iam.amazonaws.com/?Version=2010-05-08&Action=ListUsers",
                   {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}, b"",
                   credentials=EXAMPLE, region="us-east-1", service="iam",
                   now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC))
    assert headers["x-amz-date"] == "20150830T123600Z"
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")


def test_sigv4_signs_the_session_token_and_hides_secrets_in_repr() -> None:
    creds = AwsCredentials("AKID", "secret", "session-token")
    headers = sign("POST", "https://h.example/model/a%3A1/converse", {}, b"{}",
                   credentials=creds, region="eu-west-1", service="bedrock",
                   now=datetime(2025, 1, 1, tzinfo=UTC))
    assert headers["x-amz-security-token"] == "session-token"
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token" in headers["authorization"]
    assert "secret" not in repr(creds)


def frame(event_type: str, payload: bytes) -> bytes:
    return encode_frame({":event-type": event_type, ":message-type": "event",
                         ":content-type": "application/json"}, payload)


def test_frames_split_at_every_byte_boundary_come_out_whole() -> None:
    raw = frame("messageStart", b'{"role":"assistant"}') + frame("metadata", b'{"usage":{}}')
    for cut in range(len(raw) + 1):
        parser = EventStreamParser()
        events = parser.feed(raw[:cut]) + parser.feed(raw[cut:]) + parser.close()
        assert [(e.event, e.data) for e in events] == [
            ("messageStart", '{"role":"assistant"}'), ("metadata", '{"usage":{}}')]


def test_exception_frames_are_named_exception() -> None:
    raw = encode_frame({":message-type": "exception",
                        ":exception-type": "throttlingException"}, b'{"message":"slow"}')
    (event,) = EventStreamParser().feed(raw)
    assert event.event == "exception:throttlingException" and event.data == '{"message":"slow"}'


@pytest.mark.parametrize("damage", ["prelude", "payload"])
def test_corrupt_frames_raise(damage: str) -> None:
    raw = bytearray(frame("messageStart", b'{"role":"assistant"}'))
    raw[5 if damage == "prelude" else -6] ^= 0xFF
    with pytest.raises(EventStreamError):
        EventStreamParser().feed(bytes(raw))


def test_stream_ending_inside_a_frame_raises() -> None:
    parser = EventStreamParser()
    parser.feed(frame("messageStart", b"{}")[:20])
    with pytest.raises(EventStreamError):
        parser.close()
