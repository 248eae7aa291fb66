"""The bus from Python: round trips, cursors, filters, errors and stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest

import netbus


def drain(bus: netbus.EventBus, *, limit: int = 100, filter: object = None) -> List[netbus.Event]:
    """Every event from the start, page by page."""
    events: List[netbus.Event] = []
    cursor = None
    while True:
        page = bus.poll(limit=limit, cursor=cursor, filter=filter)
        events.extend(page.events)
        cursor = page.cursor
        if not page.events and not page.has_more:
            return events


def round_trip(bus: netbus.EventBus, n: int = 300) -> None:
    """Ingests `n` events through every ingest call, then reads exactly those back."""
    third = n // 3
    for i in range(third):
        bus.ingest({"n": i, "kind": "dict"})
    for i in range(third, 2 * third):
        bus.ingest_raw(json.dumps({"n": i, "kind": "raw"}).encode())
    batch = bus.ingest_raw_batch(
        [json.dumps({"n": i, "kind": "batch"}) for i in range(2 * third, n)]
    )
    assert batch.accepted == n - 2 * third and batch.all_accepted
    bus.flush()
    events = drain(bus, limit=64)
    assert sorted(e.json()["n"] for e in events) == list(range(n))
    for e in events:
        assert isinstance(e.raw, bytes) and json.loads(e.raw) == e.json()
        assert 0 <= e.shard_id < bus.shards
        assert e.insertion_ts > 1_600_000_000 * 10**9
        assert e.id
        assert e.dedup_id
    assert len({e.dedup_id for e in events}) == n
    stats = bus.stats()
    assert stats["events_ingested"] == n
    assert stats["events_dispatched"] == n


def test_memory_round_trip() -> None:
    with netbus.EventBus(shards=4, adapter=netbus.Memory()) as bus:
        assert bus.adapter_name == "memory"
        round_trip(bus)


def test_log_round_trip_survives_a_restart(tmp_path: Path) -> None:
    with netbus.EventBus(shards=4, adapter=netbus.Log(tmp_path / "log")) as bus:
        round_trip(bus)
    # The log is durable: a new bus on the same directory reads the same events.
    with netbus.EventBus(shards=4, adapter=netbus.Log(tmp_path / "log")) as again:
        assert sorted(e.json()["n"] for e in drain(again)) == list(range(300))


def test_cursor_resumes_exactly_once_over_limited_filtered_pages() -> None:
    with netbus.EventBus(shards=8, adapter=netbus.Memory()) as bus:
        seen: List[int] = []
        cursor = None
        n = 0
        # Producing and consuming interleave; pages are cut by `limit` and thinned by a filter.
        for round_ in range(5):
            bus.ingest_batch([{"n": n + i, "even": (n + i) % 2 == 0} for i in range(200)])
            n += 200
            bus.flush()
            while True:
                page = bus.poll(limit=17, cursor=cursor, filter={"even": True})
                assert len(page.events) <= 17
                seen.extend(e.json()["n"] for e in page.events)
                cursor = page.cursor
                if not page.has_more:
                    break
        assert all(x % 2 == 0 for x in seen)
        assert sorted(seen) == list(range(0, n, 2)), "every matching event exactly once"


def test_timestamp_ordering_is_ordered() -> None:
    with netbus.EventBus(shards=4) as bus:
        bus.ingest_raw_batch([b'{"i":%d}' % i for i in range(100)])
        bus.flush()
        seen = 0
        cursor = None
        while True:
            page = bus.poll(limit=40, cursor=cursor, ordering="timestamp")
            stamps = [e.insertion_ts for e in page.events]
            assert stamps == sorted(stamps)
            seen += len(stamps)
            cursor = page.cursor
            if not page.events and not page.has_more:
                break
        assert seen == 100
        with pytest.raises(ValueError):
            bus.poll(ordering="random")  # type: ignore[arg-type]


def test_backpressure_is_an_exception_and_batches_report_refusals() -> None:
    # A mesh without peers cannot deliver: the one batch in flight waits, the ring fills.
    bus = netbus.EventBus(shards=1, ring_capacity=4, max_events=2, adapter=netbus.Mesh(),
                          shutdown_timeout_ms=200)
    accepted = 0
    with pytest.raises(netbus.BackpressureError) as raised:
        for _ in range(100):
            bus.ingest_raw(b"{}")
            accepted += 1
    assert isinstance(raised.value, netbus.IngestionError)
    assert isinstance(raised.value, netbus.NetError)
    assert 0 < accepted < 100
    result = bus.ingest_raw_batch([b"{}"] * 10)
    # The worker may take a slot or two back while the batch runs; the rest are refused.
    positions = [i for i, _ in result.refused]
    assert len(positions) >= 5 and positions == sorted(set(positions))
    assert result.accepted + len(positions) == 10 and not result.all_accepted
    assert all(isinstance(e, netbus.BackpressureError) for _, e in result.refused)
    assert bus.stats()["rejected"]["backpressure"] == 1 + len(positions)
    bus.shutdown()
    stats = bus.stats()
    assert stats["shutdown_was_lossy"]
    assert stats["events_dropped"] == accepted + result.accepted
    assert stats["events_dispatched"] + stats["events_dropped"] == stats["events_ingested"]


def test_shutdown_refuses_new_events_and_keeps_the_stats_invariant(tmp_path: Path) -> None:
    bus = netbus.EventBus(shards=4, adapter=netbus.Log(tmp_path / "log"))
    result = bus.ingest_batch([{"i": i} for i in range(5000)])
    assert result.accepted == 5000
    bus.shutdown()  # drains without a flush first
    stats = bus.stats()
    assert stats["events_ingested"] == 5000
    assert stats["events_dispatched"] + stats["events_dropped"] == stats["events_ingested"]
    assert stats["events_dropped"] == 0 and not stats["shutdown_was_lossy"]
    assert sum(stats["shard_depths"]) == 0
    with pytest.raises(netbus.ShuttingDownError):
        bus.ingest({"late": True})
    with pytest.raises(netbus.ShuttingDownError):
        bus.ingest_raw(b"{}")
    late = bus.ingest_raw_batch([b"{}", b"{}"])
    assert late.accepted == 0
    assert all(isinstance(e, netbus.ShuttingDownError) for _, e in late.refused)
    assert bus.stats()["rejected"]["shutting_down"] == 4
    bus.shutdown()  # again: harmless


def test_every_stats_counter_is_there() -> None:
    with netbus.EventBus(shards=2) as bus:
        stats = bus.stats()
    for key in ["events_ingested", "events_dropped", "events_dispatched", "batches_dispatched",
                "batches_retried", "batches_dropped", "events_evicted", "events_rejected",
                "shutdown_was_lossy", "shards_added", "shards_removed", "active_shards",
                "shard_depths"]:
        assert key in stats
    assert set(stats["rejected"]) == {"backpressure", "sampled", "unrouted", "shutting_down",
                                      "serialization", "too_large"}
    assert set(stats["adapter_errors"]) >= {"transient", "fatal", "connection", "shutdown"}
    assert stats["active_shards"] == 2 and len(stats["shard_depths"]) == 2


def test_too_large_and_not_json() -> None:
    with netbus.EventBus(shards=1, max_event_bytes=64) as bus:
        with pytest.raises(netbus.TooLargeError):
            bus.ingest_raw(b"x" * 65)
        with pytest.raises(netbus.TooLargeError):
            bus.ingest({"s": "y" * 100})
        for value in [{1: "int key"}, float("nan"), float("inf"), object(), {"s": {1, 2}},
                      2**70]:
            with pytest.raises(netbus.SerializationError):
                bus.ingest(value)
        looped: List[object] = []
        looped.append(looped)
        with pytest.raises(netbus.SerializationError):
            bus.ingest(looped)
        deep: object = 1
        for _ in range(10_000):
            deep = [deep]
        with pytest.raises(netbus.SerializationError):
            bus.ingest(deep)
        with pytest.raises(TypeError):
            bus.ingest_raw(123)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            bus.ingest_raw_batch([b"{}", 5])  # type: ignore[list-item]
        assert bus.stats()["rejected"]["too_large"] == 2
        mixed = bus.ingest_batch([{"ok": 1}, float("nan"), {"ok": 2}, {"s": "z" * 100}])
        assert mixed.accepted == 2
        assert [(i, type(e)) for i, e in mixed.refused] == [
            (1, netbus.SerializationError), (3, netbus.TooLargeError)]


HOSTILE_CURSORS = ["garbage!", "AAAA", "A" * 10_000, "\x00\xff", "AQQAAAExAQABMQIAATIDAAExaQTSak",
                   "//////////////////////////8", "🙂"]
HOSTILE_FILTERS = ["{not json", "[]", "42", '{"$or": 5}', '{"a": {"$gt": []}}', "null",
                   "[" * 5000 + "]" * 5000, '{"a": ' * 5000 + "1" + "}" * 5000,
                   '{"' + "a" * 100_000 + '": 1']


@pytest.mark.parametrize("cursor", HOSTILE_CURSORS)
def test_hostile_cursors_raise(cursor: str) -> None:
    with netbus.EventBus(shards=4) as bus:
        bus.ingest({"a": 1})
        bus.flush()
        with pytest.raises(netbus.ConsumerError):
            bus.poll(cursor=cursor)


@pytest.mark.parametrize("filter", HOSTILE_FILTERS)
def test_hostile_filters_raise(filter: str) -> None:
    with netbus.EventBus(shards=2) as bus:
        try:
            bus.poll(filter=filter)
        except netbus.InvalidFilterError:
            return
        # A filter that parses must at least be one the bus accepts as a whole.
        pytest.fail(f"filter {filter[:40]!r} was accepted")


def test_a_cursor_of_another_bus_shape_is_refused() -> None:
    with netbus.EventBus(shards=8) as wide:
        wide.ingest_raw_batch([b'{"i":%d}' % i for i in range(64)])
        wide.flush()
        cursor = wide.poll(limit=64).cursor
    with netbus.EventBus(shards=2) as narrow:
        with pytest.raises(netbus.InvalidCursorError):
            narrow.poll(cursor=cursor)


def test_bad_settings_raise() -> None:
    with pytest.raises(netbus.ConfigError):
        netbus.EventBus(shards=0)
    with pytest.raises(netbus.ConfigError):
        netbus.EventBus(ring_capacity=3)
    with pytest.raises(ValueError):
        netbus.EventBus(backpressure="sometimes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        netbus.EventBus(adapter="memory")  # type: ignore[arg-type]
    with pytest.raises(netbus.ConfigError):
        netbus.Mesh(peers=["not an address"])
