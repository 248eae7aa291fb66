"""Round trips through the broker backends and a mesh node, on private servers."""

from __future__ import annotations

import json
import time
import uuid
from typing import List

import netbus

from conftest import MeshNode, Server


def round_trip(bus: netbus.EventBus, n: int = 120) -> None:
    bus.ingest_batch([{"n": i} for i in range(n // 2)])
    for i in range(n // 2, n):
        bus.ingest_raw(json.dumps({"n": i}))
    bus.flush()
    got: List[int] = []
    cursor = None
    while True:
        page = bus.poll(limit=25, cursor=cursor)
        got.extend(e.json()["n"] for e in page.events)
        for e in page.events:
            assert e.id and e.dedup_id
        cursor = page.cursor
        if not page.events and not page.has_more:
            break
    assert sorted(got) == list(range(n))
    bus.shutdown()
    stats = bus.stats()
    assert stats["events_dispatched"] == stats["events_ingested"] == n


def test_redis_round_trip(redis_server: Server) -> None:
    stream = f"netbus-{uuid.uuid4().hex[:8]}"
    round_trip(netbus.EventBus(shards=4, adapter=netbus.Redis(redis_server.url, stream)))


def test_jetstream_round_trip(nats_server: Server) -> None:
    stream = f"NETBUS_{uuid.uuid4().hex[:8]}"
    round_trip(netbus.EventBus(shards=4, adapter=netbus.JetStream(nats_server.url, stream)))


def test_mesh_node_round_trip(mesh_node: MeshNode) -> None:
    bus = netbus.EventBus(
        shards=4,
        adapter=netbus.Mesh(peers=[mesh_node.addr], psk_file=mesh_node.psk_file),
    )
    # The node is dialed in the background; the first polls may find it not yet connected.
    deadline = time.monotonic() + 15
    while True:
        try:
            bus.poll(limit=1)
            break
        except netbus.AdapterError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    round_trip(bus)


def test_a_wrong_pre_shared_key_never_delivers(mesh_node: MeshNode, tmp_path) -> None:  # type: ignore[no-untyped-def]
    wrong = tmp_path / "wrong.psk"
    wrong.write_text("ab" * 32 + "\n")
    wrong.chmod(0o600)
    bus = netbus.EventBus(shards=1, adapter=netbus.Mesh(peers=[mesh_node.addr], psk_file=wrong),
                          shutdown_timeout_ms=200)
    try:
        bus.poll(limit=1)
        raise AssertionError("a poll through a node that refused the handshake succeeded")
    except netbus.AdapterError as e:
        assert e.args[1] in {"connection", "fatal", "transient"}
    bus.ingest({"secret": True})
    bus.shutdown()
    stats = bus.stats()
    assert stats["events_dispatched"] == 0 and stats["events_dropped"] == 1
