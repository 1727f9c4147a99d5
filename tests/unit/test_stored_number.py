"""The online read's direct decoding of stored values equals parsing them with Feast."""

from __future__ import annotations

import math

import pytest
from feast.protos.feast.types.Value_pb2 import Null
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from driftline.serving.lookup import _proto_number, _stored_number

DOUBLES = [0.0, -0.0, 1.5, -2.25, 1e-310, 1.7976931348623157e308, math.inf, -math.inf]
INT64S = [0, 1, 127, 128, 300, 2**31, 2**53 + 1, 2**63 - 1, -1, -128, -(2**63)]


@pytest.mark.parametrize(
    "value",
    [ValueProto(double_val=d) for d in DOUBLES]
    + [ValueProto(int64_val=i) for i in INT64S]
    + [
        ValueProto(),  # no value stored
        ValueProto(null_val=Null.NULL),
        ValueProto(float_val=0.5),
        ValueProto(int32_val=-7),
        ValueProto(bool_val=True),
    ],
    ids=repr,
)
def test_stored_number_equals_the_parsed_proto(value: ValueProto) -> None:
    expected = _proto_number(value)
    got = _stored_number(value.SerializeToString())
    assert got == expected or (math.isnan(got) and math.isnan(expected))
    assert math.copysign(1.0, got) == math.copysign(1.0, expected)


def test_stored_nan_double_stays_nan() -> None:
    assert math.isnan(_stored_number(ValueProto(double_val=math.nan).SerializeToString()))


def test_a_value_followed_by_more_bytes_is_parsed_by_feast() -> None:
    """A varint that does not end the bytes is not taken as the value (Feast parses it)."""
    raw = ValueProto(int64_val=5).SerializeToString() + ValueProto(int64_val=9).SerializeToString()
    assert _stored_number(raw) == _proto_number(ValueProto.FromString(raw)) == 9.0
