"""An asyncio consumer: awaitable polls and a stream that saves its cursor, typed."""

import asyncio
import sys
from pathlib import Path

import netbus


async def main(directory: Path) -> None:
    async with netbus.EventBus(shards=4, adapter=netbus.Log(directory / "log")) as bus:
        bus.ingest_batch([{"order": n} for n in range(10)])
        await bus.flush_async()
        page: netbus.Page = await bus.poll_async(limit=5, filter={"order": 3})
        print([ev.json() for ev in page.events], page.cursor, page.has_more)
        stream = bus.stream(cursor_file=directory / "orders.cursor", follow=False, page_size=4)
        async for ev in stream:
            print(ev.shard_id, ev.json())
        saved: bool = await stream.commit()
        print("cursor saved:", saved)
        try:
            await bus.poll_async(cursor="not a cursor")
        except netbus.InvalidCursorError as e:
            print("refused:", e)
        except netbus.AdapterError as e:
            print("backend failed:", e.args)
    await bus.shutdown_async()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
