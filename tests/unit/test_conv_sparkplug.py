"""Sparkplug B: births, aliases, seq and bdSeq, deaths, rebirth requests and writes, with payloads
built by the specification's own protobuf schema (Eclipse Tahu's sparkplug_b.proto).

Source: Eclipse Sparkplug 3.0.0, chapter 4 (topics and messages: NBIRTH seq 0 and bdSeq,
`Node Control/Rebirth`, seq 0 to 255 on every later message, NDEATH carrying only bdSeq) and
chapter 6 (payloads, datatypes, aliases, properties); the example metrics follow its NBIRTH
example (`Node Control/Rebirth`, `bdSeq`, a Float with an alias).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.conventions.sparkplug import SparkplugConvention
from gateway.conventions.tahu.sparkplug_b_pb2 import Payload
from gateway.errors import CommandError, DecodeError
from gateway.models import (
    CommandResult,
    DeviceEvent,
    DeviceMeta,
    MetaChange,
    Publish,
    Rejected,
    StatusChange,
    Telemetry,
)
from tests.support.conventions import refusal

NOW = 1_764_090_000.0
NODE = "spb.Plant1:Edge01"
PLC = "spb.Plant1:Edge01:PLC1"
INT8, INT16, INT32, INT64, UINT32, UINT64 = 1, 2, 3, 4, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME = 9, 10, 11, 12, 13


def metric(name: str | None, datatype: int | None, value: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "value": value, **extra}


def payload(seq: int | None, *metrics: dict[str, Any], timestamp: int = 1_764_090_000_000) -> bytes:
    message = Payload(timestamp=timestamp)
    if seq is not None:
        message.seq = seq
    for m in metrics:
        entry = message.metrics.add()
        if m["name"] is not None:
            entry.name = m["name"]
        if m["datatype"] is not None:
            entry.datatype = m["datatype"]
        if "alias" in m:
            entry.alias = m["alias"]
        if "timestamp" in m:
            entry.timestamp = m["timestamp"]
        if "properties" in m:
            for key, prop in m["properties"].items():
                entry.properties.keys.append(key)
                value = entry.properties.values.add()
                if isinstance(prop, bool):
                    value.type, value.boolean_value = BOOLEAN, prop
                else:
                    value.type, value.string_value = STRING, prop
        v, t = m["value"], m.get("wire", m["datatype"])
        if v is None:
            continue
        if t is None:  # DATA names no datatype: the field its birth's datatype uses
            t = (
                BOOLEAN
                if isinstance(v, bool)
                else FLOAT
                if isinstance(v, float)
                else (STRING if isinstance(v, str) else INT32)
            )
        if t in (INT8, INT16, INT32, UINT32):
            entry.int_value = v & 0xFFFFFFFF
        elif t in (INT64, UINT64, DATETIME):
            entry.long_value = v & 0xFFFFFFFFFFFFFFFF
        elif t == FLOAT:
            entry.float_value = v
        elif t == DOUBLE:
            entry.double_value = v
        elif t == BOOLEAN:
            entry.boolean_value = v
        else:
            entry.string_value = v
    return message.SerializeToString()


NBIRTH = payload(
    0,
    metric("bdSeq", INT64, 3),
    metric("Node Control/Rebirth", BOOLEAN, False),
    metric("Temperature", FLOAT, 21.4, alias=1, properties={"engUnit": "°C"}),
    metric("Setpoint", DOUBLE, 20.0, alias=2, properties={"engUnit": "°C", "readOnly": False}),
    metric("Running", BOOLEAN, True, alias=3, properties={"readOnly": True}),
    metric("Offset", INT8, -3, alias=4, properties={"readOnly": False}),
)
DBIRTH = payload(
    1,
    metric("Inputs/Pressure", FLOAT, 1.5, alias=10, properties={"engUnit": "bar"}),
    metric("Outputs/Valve", BOOLEAN, False, alias=11, properties={"readOnly": False}),
)


@pytest.fixture
def spb() -> SparkplugConvention:
    return SparkplugConvention(rebirth_interval_s=10.0, clock=lambda: NOW)


def send(conv: SparkplugConvention, topic: str, body: bytes, at: float = NOW) -> list[DeviceEvent]:
    return conv.decode(f"spBv1.0/{topic}", body, at)


def readings(events: list[DeviceEvent]) -> dict[tuple[str, str], Any]:
    return {(e.device, m): v for e in events if isinstance(e, Telemetry) for m, _, v in e.samples}


def metas(events: list[DeviceEvent]) -> dict[str, DeviceMeta]:
    return {e.device: e.meta for e in events if isinstance(e, MetaChange) and e.meta}


def reasons(events: list[DeviceEvent]) -> list[str]:
    return [e.reason for e in events if isinstance(e, Rejected)]


def rebirths(events: list[DeviceEvent]) -> list[Publish]:
    return [e for e in events if isinstance(e, Publish)]


def born(spb: SparkplugConvention) -> list[DeviceEvent]:
    return send(spb, "Plant1/NBIRTH/Edge01", NBIRTH) + send(
        spb, "Plant1/DBIRTH/Edge01/PLC1", DBIRTH
    )


def test_nbirth_defines_the_edge_nodes_metrics_units_and_writable_commands(
    spb: SparkplugConvention,
) -> None:
    """NBIRTH: the node online, its values read (bdSeq and Node Control are no readings), units
    from engUnit, a command for each metric whose readOnly is false."""
    events = send(spb, "Plant1/NBIRTH/Edge01", NBIRTH)
    assert StatusChange(NODE, True) in events
    assert readings(events) == {
        (NODE, "Temperature"): 21.4,
        (NODE, "Setpoint"): 20.0,
        (NODE, "Running"): True,
        (NODE, "Offset"): -3,
    }
    meta = metas(events)[NODE]
    assert (meta.name, meta.type) == ("Plant1/Edge01", "sparkplug edge node")
    assert meta.units == {"Temperature": "°C", "Setpoint": "°C"}
    assert meta.raw["commands"] == {
        "set_Setpoint": {"params": {"value": {"type": "number"}}},
        "set_Offset": {"params": {"value": {"type": "integer", "min": -128, "max": 127}}},
    }


@pytest.mark.parametrize(
    ("datatype", "wire", "shown"),
    [
        (INT8, -5, -5),
        (INT16, -30000, -30000),
        (INT32, -2, -2),
        (INT64, -(2**40), -(2**40)),
        (UINT32, 4_000_000_000, 4_000_000_000),
        (FLOAT, 21.4, 21.4),
        (DOUBLE, 0.1, 0.1),
        (BOOLEAN, False, False),
        (STRING, "RUN", "RUN"),
        (DATETIME, 1_764_090_000_123, 1_764_090_000_123),
    ],
)
def test_data_by_alias_takes_the_births_name_and_datatype(
    spb: SparkplugConvention, datatype: int, wire: Any, shown: Any
) -> None:
    """NDATA names metrics by alias only: the birth's name and datatype read the value (signed
    integers from two's complement, 32-bit floats at their 7 digits)."""
    birth = payload(0, metric("bdSeq", INT64, 0), metric("m", datatype, wire, alias=7))
    send(spb, "Plant1/NBIRTH/Edge01", birth)
    data = payload(1, metric(None, None, wire, alias=7, wire=datatype))
    events = send(spb, "Plant1/NDATA/Edge01", data)
    assert readings(events) == {(NODE, "m"): shown}
    assert not reasons(events)


def test_metric_timestamps_are_the_readings_time(spb: SparkplugConvention) -> None:
    """A metric's own timestamp (ms) is its time; without one, the payload's."""
    send(spb, "Plant1/NBIRTH/Edge01", NBIRTH)
    data = payload(1, metric(None, None, 22.0, alias=1, timestamp=1_764_089_999_500),
                   metric(None, None, False, alias=3), timestamp=1_764_090_000_250)  # fmt: skip
    (telemetry,) = [e for e in send(spb, "Plant1/NDATA/Edge01", data) if isinstance(e, Telemetry)]
    assert telemetry.samples == [("Temperature", 1_764_089_999.5, 22.0),
                                 ("Running", 1_764_090_000.25, False)]  # fmt: skip


def test_a_seq_gap_is_counted_and_asks_for_a_rebirth_at_a_limited_rate(
    spb: SparkplugConvention,
) -> None:
    """seq 1 then 3: counted (seq_gap) and an NCMD `Node Control/Rebirth` = true goes out; another
    gap within rebirth_interval_s is counted but asks nothing more; after it, it asks again."""
    send(spb, "Plant1/NBIRTH/Edge01", NBIRTH)
    assert not reasons(send(spb, "Plant1/NDATA/Edge01", payload(1)))
    gap = send(spb, "Plant1/NDATA/Edge01", payload(3, metric(None, None, 1.0, alias=1)))
    assert reasons(gap) == ["seq_gap"]
    assert readings(gap) == {(NODE, "Temperature"): 1.0}  # what arrived is still true
    (request,) = rebirths(gap)
    assert request.topic == "spBv1.0/Plant1/NCMD/Edge01"
    asked = Payload.FromString(request.payload)
    assert [(m.name, m.datatype, m.boolean_value) for m in asked.metrics] == [
        ("Node Control/Rebirth", BOOLEAN, True)
    ]
    again = send(spb, "Plant1/NDATA/Edge01", payload(9), at=NOW + 5)
    assert (reasons(again), rebirths(again)) == (["seq_gap"], [])
    later = send(spb, "Plant1/NDATA/Edge01", payload(20), at=NOW + 11)
    assert len(rebirths(later)) == 1


def test_seq_wraps_from_255_to_0(spb: SparkplugConvention) -> None:
    """255 is followed by 0: no gap."""
    send(spb, "Plant1/NBIRTH/Edge01", NBIRTH)
    for seq in [*range(1, 256), 0, 1]:
        assert not reasons(send(spb, "Plant1/NDATA/Edge01", payload(seq)))


@pytest.mark.parametrize(
    ("topic", "body"),
    [
        ("Plant1/NDATA/Edge01", payload(1, metric(None, None, 1.0, alias=1))),
        ("Plant1/DBIRTH/Edge01/PLC1", DBIRTH),
        ("Plant1/DDATA/Edge01/PLC1", payload(2)),
    ],
)
def test_data_before_birth_is_counted_and_asks_for_a_rebirth(
    spb: SparkplugConvention, topic: str, body: bytes
) -> None:
    """A gateway started after the births sees DATA it cannot place: counted, no readings, and
    one rebirth request."""
    events = send(spb, topic, body)
    assert reasons(events) == ["data_before_birth"]
    assert not readings(events)
    assert len(rebirths(events)) == 1


def test_an_alias_no_birth_defined_asks_for_a_rebirth(spb: SparkplugConvention) -> None:
    """DATA naming an unknown alias: counted (unknown_alias) and a rebirth requested."""
    send(spb, "Plant1/NBIRTH/Edge01", NBIRTH)
    events = send(spb, "Plant1/NDATA/Edge01", payload(1, metric(None, None, 5, alias=99)))
    assert reasons(events) == ["unknown_alias"]
    assert len(rebirths(events)) == 1


def test_devices_birth_report_and_die(spb: SparkplugConvention) -> None:
    """DBIRTH: the device online with its meta; DDATA its values; DDEATH offline."""
    events = born(spb)
    assert StatusChange(PLC, True) in events
    assert metas(events)[PLC].units == {"Inputs/Pressure": "bar"}
    data = send(spb, "Plant1/DDATA/Edge01/PLC1", payload(2, metric(None, None, 2.25, alias=10)))
    assert readings(data) == {(PLC, "Inputs/Pressure"): 2.25}
    assert StatusChange(PLC, False) in send(spb, "Plant1/DDEATH/Edge01/PLC1", payload(3))


def test_ndeath_takes_the_node_and_its_devices_offline_unless_it_is_an_old_sessions(
    spb: SparkplugConvention,
) -> None:
    """NDEATH with the NBIRTH's bdSeq: node and devices offline. One with another bdSeq is the
    will of an earlier session, delivered late: ignored."""
    born(spb)
    assert send(spb, "Plant1/NDEATH/Edge01", payload(None, metric("bdSeq", INT64, 2))) == []
    dead = send(spb, "Plant1/NDEATH/Edge01", payload(None, metric("bdSeq", INT64, 3)))
    assert dead == [StatusChange(NODE, False), StatusChange(PLC, False)]
    # The session is over: data now asks for a rebirth.
    assert reasons(send(spb, "Plant1/NDATA/Edge01", payload(0))) == ["data_before_birth"]


def test_writes_go_out_as_ncmd_and_dcmd_and_the_next_data_confirms_them(
    spb: SparkplugConvention,
) -> None:
    """A writable metric's command is an NCMD (node) or DCMD (device) carrying the metric's name,
    alias, datatype and value, timestamped; once armed, DATA showing the value answers ok."""
    meta = metas(born(spb))
    topic, body = spb.encode_command(NODE, meta[NODE], "set_Offset", "c-1", {"value": -7})
    assert topic == "spBv1.0/Plant1/NCMD/Edge01"
    write = Payload.FromString(body)
    assert write.timestamp == NOW * 1000
    (entry,) = write.metrics
    assert (entry.name, entry.alias, entry.datatype, entry.int_value) == (
        "Offset",
        4,
        INT8,
        (-7) & 0xFF,
    )
    topic, body = spb.encode_command(PLC, meta[PLC], "set_Outputs_Valve", "c-2", {"value": True})
    assert topic == "spBv1.0/Plant1/DCMD/Edge01/PLC1"
    assert Payload.FromString(body).metrics[0].boolean_value is True
    assert spb.owns_command_topic(PLC, topic)
    assert not spb.owns_command_topic(NODE, topic)
    assert spb.arm(PLC, "c-2", {"Outputs/Valve": (NOW, False)})
    echo = send(spb, "Plant1/DDATA/Edge01/PLC1", payload(2, metric(None, None, True, alias=11)))
    assert CommandResult(PLC, "c-2", "ok", {"Outputs/Valve": True}) in echo


def test_read_only_metrics_cannot_be_written(spb: SparkplugConvention) -> None:
    """Only metrics the birth declared writable (readOnly false) have commands."""
    meta = metas(born(spb))
    with pytest.raises(CommandError) as caught:
        spb.encode_command(NODE, meta[NODE], "set_Running", "c-1", {"value": False})
    assert caught.value.code == "not_found"


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        ("spBv1.0/Plant1/NDATA/Edge01", b"\xff\xff\xff", "bad_payload"),
        ("spBv1.0/Plant1/NDATA", b"", "unknown_topic"),
        ("spBv1.0/Plant1/NBIRTH/Edge01/PLC1", b"", "unknown_topic"),
        ("spBv1.0/Plant1/DDATA/Edge01", b"", "unknown_topic"),
        ("spBv1.0/Plant1/XDATA/Edge01", b"", "unknown_topic"),
    ],
)
def test_malformed_messages_raise_decode_errors(
    spb: SparkplugConvention, topic: str, body: bytes, reason: str
) -> None:
    """Payloads protobuf cannot read, and topics outside the namespace's shape, are refused."""
    assert refusal(spb, topic, body, NOW) == reason


def test_commands_and_host_state_are_not_device_data(spb: SparkplugConvention) -> None:
    """NCMD/DCMD (the gateway's own among them) and a host's STATE decode to nothing."""
    for topic in ("spBv1.0/Plant1/NCMD/Edge01", "spBv1.0/Plant1/DCMD/Edge01/PLC1",
                  "spBv1.0/STATE/scada-1"):  # fmt: skip
        assert spb.decode(topic, b'{"online": true}', NOW) == []


def test_metrics_per_birth_are_bounded(spb: SparkplugConvention) -> None:
    """A birth defining more than 512 metrics keeps 512 and counts the rest."""
    many = payload(0, *(metric(f"m{i}", INT32, i, alias=i) for i in range(600)))
    events = send(spb, "Plant1/NBIRTH/Edge01", many)
    assert "too_many_metrics" in reasons(events)
    assert len(metas(events)[NODE].raw["metrics"]) == 512


@given(
    kind=st.sampled_from(["NBIRTH/E", "NDATA/E", "NDEATH/E", "DBIRTH/E/D", "DDATA/E/D"]),
    body=st.binary(max_size=64),
)
def test_arbitrary_input_raises_nothing_but_decode_errors(kind: str, body: bytes) -> None:
    """Untrusted payloads never raise anything but DecodeError."""
    spb = SparkplugConvention()
    with contextlib.suppress(DecodeError):
        assert all(isinstance(e, DeviceEvent) for e in spb.decode(f"spBv1.0/G/{kind}", body, NOW))
