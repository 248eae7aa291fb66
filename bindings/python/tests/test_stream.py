"""EventBus.stream(): an async iterator with dedup and a saved cursor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import List

import pytest

import netbus


async def take(stream: netbus.EventStream) -> List[int]:
    return [event.json()["n"] async for event in stream]


def test_the_stream_resumes_from_its_cursor_file_without_loss_or_repeats(tmp_path: Path) -> None:
    cursor_file = tmp_path / "orders.cursor"

    async def main() -> None:
        bus = netbus.EventBus(shards=4, adapter=netbus.Log(tmp_path / "log"))
        bus.ingest_batch([{"n": n} for n in range(250)])
        await bus.flush_async()
        first = await take(bus.stream(cursor_file=cursor_file, page_size=40, max_events=100))
        assert len(first) == 100
        assert cursor_file.read_text().strip()
        # More events arrive while no consumer runs.
        bus.ingest_batch([{"n": n} for n in range(250, 300)])
        await bus.flush_async()
        second = await take(bus.stream(cursor_file=cursor_file, page_size=40))
        assert len(second) == 200
        assert sorted(first + second) == list(range(300))
        # Nothing left: a third run from the saved cursor gets nothing.
        assert await take(bus.stream(cursor_file=cursor_file)) == []
        # from_start ignores the saved cursor.
        assert len(await take(bus.stream(cursor_file=cursor_file, from_start=True))) == 300
        await bus.shutdown_async()

    asyncio.run(main())


def test_the_stream_resumes_across_a_restart_of_the_bus(tmp_path: Path) -> None:
    cursor_file = tmp_path / "c"

    async def run(produce: range, expect: int) -> List[int]:
        async with netbus.EventBus(shards=2, adapter=netbus.Log(tmp_path / "log")) as bus:
            bus.ingest_batch([{"n": n} for n in produce])
            await bus.flush_async()
            got = await take(bus.stream(cursor_file=cursor_file, page_size=7))
            assert len(got) == expect
            return got

    a = asyncio.run(run(range(0, 30), 30))
    b = asyncio.run(run(range(30, 45), 15))
    assert sorted(a + b) == list(range(45))


def test_a_damaged_cursor_file_raises_instead_of_starting_over(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cursor"
    bad.write_bytes(b"\x00\x01 not a cursor\n\n")
    with netbus.EventBus(shards=2) as bus:
        with pytest.raises(netbus.CursorStoreError):
            bus.stream(cursor_file=bad)
        garbage = tmp_path / "garbage.cursor"
        garbage.write_text("not-a-real-cursor!\n")
        stream = bus.stream(cursor_file=garbage)

        async def first() -> None:
            with pytest.raises(netbus.InvalidCursorError):
                await stream.__anext__()

        asyncio.run(first())


def test_the_stream_filters_and_iterates_synchronously_too() -> None:
    with netbus.EventBus(shards=3) as bus:
        bus.ingest_batch([{"n": n, "even": n % 2 == 0} for n in range(40)])
        bus.flush()
        got = [e.json()["n"] for e in bus.stream(filter={"even": True}, page_size=6)]
        assert sorted(got) == list(range(0, 40, 2))
