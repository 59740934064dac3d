"""Key hashing and payload envelopes: the binding-layer pieces that make string ids durable."""

import pytest

import quiverdb
from quiverdb import _decode_payload, _encode_payload, _engine_id


def test_string_and_integer_ids_never_meet():
    assert _engine_id(5) == 5
    assert _engine_id("doc") >= 2**63
    assert _engine_id("doc") == _engine_id("doc") != _engine_id("doc2")
    for bad in (-1, 2**63, True, 1.5, None):
        with pytest.raises(quiverdb.InvalidInput):
            _engine_id(bad)


def test_payload_envelope_round_trip_and_foreign_payloads():
    for key in ("k", 7):
        for p in ({"a": 1}, b"raw", None, [1, 2]):
            assert _decode_payload(_encode_payload(key, p)) == ((key if isinstance(key, str) else None), p)
    # Payloads written by the Rust API or the CLI (no envelope).
    assert _decode_payload(b'{"title": "x"}') == (None, {"title": "x"})
    assert _decode_payload(b"\xff\x00") == (None, b"\xff\x00")
    assert _decode_payload(b"") == (None, None)
