"""The quick start, typed: `mypy --strict` checks it against the stubs."""

from typing import List, Optional

import netbus


def main() -> None:
    with netbus.EventBus(shards=4, backpressure="block", adapter=netbus.Memory()) as bus:
        bus.ingest({"type": "click", "user": 7})
        bus.ingest_raw(b'{"type": "view", "user": 8}')
        result: netbus.BatchResult = bus.ingest_raw_batch([b'{"n": 1}', '{"n": 2}'])
        for index, error in result.refused:
            print(f"event {index} refused: {error}")
        bus.flush()
        cursor: Optional[str] = None
        seen: List[int] = []
        while True:
            page = bus.poll(limit=100, cursor=cursor, filter=None, ordering="sequence")
            for ev in page.events:
                seen.append(ev.shard_id)
                print(ev.id, ev.raw, ev.json(), ev.insertion_ts, ev.dedup_id)
            cursor = page.cursor
            if not page.has_more:
                break
        stats = bus.stats()
        print(stats["events_dispatched"], stats["rejected"]["backpressure"])
    try:
        bus.ingest({"late": True})
    except netbus.ShuttingDownError:
        pass
    except netbus.IngestionError as e:
        raise SystemExit(f"unexpected: {e}")


if __name__ == "__main__":
    main()
