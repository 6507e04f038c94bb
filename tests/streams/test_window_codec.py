"""Windows records: every malformed window is a CodecError that names what is wrong (the scorer
dead-letters it with that reason), including the cases the C-level checks of streams.codec._window
must not let through (bools as ints, a negative id among good ones, a missing or extra field)."""

from __future__ import annotations

import orjson
import pytest

from logad.records import Window
from streams.codec import CodecError, decode_windows, encode_windows, window_dict

W = Window("hdfs", "blk_1", 4, (3, 4, 1, 5), 2, 1.5, None, "idle", True, 2)
DOC = window_dict(W)
TAG = "ab" * 8


def one(doc) -> Window | CodecError:
    """The window of a one-window bundle holding `doc`."""
    (out,) = decode_windows(orjson.dumps({"w": [doc], "vocab": TAG}))
    return out

BAD = [
    ({**DOC, "extra": 1}, "fields"),
    ({k: v for k, v in DOC.items() if k != "n_lines"}, "fields"),
    ([DOC], "fields list"),
    ({**DOC, "ids": []}, "ids must be"),
    ({**DOC, "ids": "34"}, "ids must be"),
    ({**DOC, "ids": [3, -1, 4]}, "ids must be"),
    ({**DOC, "ids": [3, True, 4]}, "ids must be"),
    ({**DOC, "ids": [3, 4.0]}, "ids must be"),
    ({**DOC, "ids": [3, "4"]}, "ids must be"),
    ({**DOC, "ids": [3, None]}, "ids must be"),
    ({**DOC, "start": -1}, "start must be a non-negative int"),
    ({**DOC, "start": True}, "start must be a non-negative int"),
    ({**DOC, "n_context": 1.0}, "n_context must be a non-negative int"),
    ({**DOC, "n_lines": "2"}, "n_lines must be a non-negative int"),
    ({**DOC, "n_context": 2, "n_lines": -3}, "n_lines must be a non-negative int"),
    ({**DOC, "start": "x", "n_lines": -3}, "start must be"),  # the first bad field is named
    ({**DOC, "n_context": 4}, "n_context leaves nothing to score"),
    ({**DOC, "first_ts": "1.5"}, "first_ts must be a number or null"),
    ({**DOC, "last_ts": [1]}, "last_ts must be a number or null"),
    ({**DOC, "source": 1}, "must be strings"),
    ({**DOC, "session_id": None}, "must be strings"),
    ({**DOC, "reason": ["idle"]}, "must be strings"),
    ({**DOC, "final": 1}, "final must be a bool"),
]


@pytest.mark.parametrize(("doc", "message"), BAD)
def test_bad_windows_are_codec_errors_naming_the_fault(doc, message) -> None:
    bad = one(doc)
    assert isinstance(bad, CodecError) and message in str(bad)
    good = orjson.loads(encode_windows([W, W], vocab=TAG)[0])["w"][0]
    out = decode_windows(orjson.dumps({"w": [good, doc, good]}))  # in a bundle: that window only
    assert out[0] == out[2] == W and isinstance(out[1], CodecError) and message.split()[0] in str(out[1])


def test_good_windows_round_trip() -> None:
    assert decode_windows(encode_windows([W], vocab=TAG)[0]) == [W]
    for w in (Window("o", "s", 0, (0,), 0, None, 2, "end", False, 0),  # an int time reads as a float
              Window("o", "s", 7, (5, 0, 9), 2, 1e9, 1e9 + 1, "gap", True, 12)):
        got = one(window_dict(w))
        assert got == w and all(t is None or type(t) is float for t in (got.first_ts, got.last_ts))


def test_only_bundles_are_windows_records() -> None:
    for record in (orjson.dumps(DOC), b"[]", b'{"w": []}', b'{"w": 3}', b"nope"):
        with pytest.raises(CodecError):
            decode_windows(record)
