"""Waiting in Rust never stops Python: other threads run, the event loop keeps turning."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import netbus


def test_other_threads_run_while_one_is_inside_flush() -> None:
    # A mesh without peers cannot deliver, so flush() waits until the events are dropped by
    # the shutdown below. If flush held the GIL, this thread could neither count nor shut the
    # bus down until the retries ran out, several seconds later.
    bus = netbus.EventBus(shards=1, adapter=netbus.Mesh(), shutdown_timeout_ms=100)
    bus.ingest({"n": 1})
    inside = threading.Event()
    done = threading.Event()

    def flusher() -> None:
        inside.set()
        try:
            bus.flush()
        except netbus.NetError:
            pass
        done.set()

    thread = threading.Thread(target=flusher)
    thread.start()
    assert inside.wait(5)
    ticks = 0
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        ticks += 1
    assert not done.is_set(), "flush returned while its events could not be delivered"
    assert ticks > 1000
    bus.shutdown()  # drops the undeliverable event: the flush returns
    thread.join(10)
    assert done.is_set()
    stats = bus.stats()
    assert stats["events_dropped"] == 1 and stats["shutdown_was_lossy"]


def test_event_loop_runs_while_a_follow_stream_waits_on_an_empty_bus() -> None:
    async def main() -> None:
        bus = netbus.EventBus(shards=2)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        stream = bus.stream(follow=True, min_backoff_ms=5, max_backoff_ms=20)
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(stream.__anext__(), 0.5)
        assert time.monotonic() - started < 2
        assert ticks >= 20, f"the loop ticked {ticks} times in 0.5 s"
        # The waiting stream still gets the next event once there is one.
        bus.ingest({"late": True})
        await bus.flush_async()
        event = await asyncio.wait_for(stream.__anext__(), 5)
        assert event.json() == {"late": True}
        # And empty polls return at once without blocking the loop either.
        end = (await bus.poll_async(limit=10)).cursor
        polls = 0
        until = time.monotonic() + 0.3
        while time.monotonic() < until:
            page = await bus.poll_async(limit=10, cursor=end)
            assert page.events == [] and not page.has_more
            polls += 1
        assert polls > 10
        task.cancel()
        await bus.shutdown_async()

    asyncio.run(main())


def test_event_loop_runs_while_poll_async_waits_on_a_stalled_backend(redis_server) -> None:  # type: ignore[no-untyped-def]
    if redis_server.process is None:
        pytest.skip("needs a private redis-server to pause")
    import signal
    import subprocess

    async def main() -> None:
        bus = netbus.EventBus(shards=2, adapter=netbus.Redis(redis_server.url, "netbus-stall"))
        bus.ingest({"a": 1})
        await bus.flush_async()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        pid = redis_server.process.pid
        # The server is paused, and resumed 0.5 s later by a process of its own (so the
        # resume does not depend on this interpreter getting to run).
        redis_server.process.send_signal(signal.SIGSTOP)
        resume = subprocess.Popen(["sh", "-c", f"sleep 0.5; kill -CONT {pid}"])
        try:
            started = time.monotonic()
            page = await bus.poll_async(limit=10)
            waited = time.monotonic() - started
        finally:
            resume.wait(10)
            redis_server.process.send_signal(signal.SIGCONT)
        assert [e.json() for e in page.events] == [{"a": 1}]
        assert waited >= 0.3, f"the poll returned after {waited:.3f} s, before the server resumed"
        assert ticks >= 0.5 * waited / 0.01, f"{ticks} ticks in {waited:.3f} s"
        task.cancel()
        await bus.shutdown_async()

    asyncio.run(main())
