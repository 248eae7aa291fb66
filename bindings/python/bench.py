"""Python bench rows, run by `cargo xtask bench`: netbus beside the published wheel.

Each implementation runs in a child process of its own interpreter (netbus from target/pyenv,
the published `net-mesh` wheel from target/pyenv-published) doing the same calls:

- ingest_raw, one event at a time
- ingest_raw_batch, batches of 1,000
- ingest(dict), one at a time
- poll back, pages of 1,000 (after a flush where the API has one)
- leak check (netbus only): ten million events ingested in batches and polled back in a loop
  with bounded retention; the resident set is sampled along the way and must stay flat

Writes python.md and python.json to --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

SHARDS = 16
BATCH = 1000


def payload(i: int) -> str:
    return '{"token":"tok_%d","index":%d}' % (i, i)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(n: int, work: Callable[[], int]) -> Dict[str, Any]:
    start = time.perf_counter()
    done = work()
    seconds = time.perf_counter() - start
    return {"events": done, "attempted": n, "seconds": seconds, "per_second": done / seconds}


def worker_netbus(n: int, leak_events: int) -> Dict[str, Any]:
    import netbus

    rows: Dict[str, Any] = {}
    raws = [payload(i).encode() for i in range(n)]
    dicts = [{"token": "tok_%d" % i, "index": i} for i in range(n)]

    def make() -> netbus.EventBus:
        # The published wheel's Net() keeps nothing; the ingest rows compare like with like.
        return netbus.EventBus(shards=SHARDS, ring_capacity=1 << 16, adapter=netbus.Noop())

    def one_at_a_time(bus: netbus.EventBus, items: List[Any], call: Callable[[Any], None]) -> int:
        ok = 0
        for item in items:
            try:
                call(item)
                ok += 1
            except netbus.BackpressureError:
                pass
        return ok

    bus = make()
    rows["ingest_raw"] = timed(n, lambda: one_at_a_time(bus, raws, bus.ingest_raw))
    bus.shutdown()

    bus = make()
    rows["ingest_raw_batch"] = timed(
        n, lambda: sum(bus.ingest_raw_batch(raws[i:i + BATCH]).accepted for i in range(0, n, BATCH)))
    bus.shutdown()

    bus = make()
    rows["ingest(dict)"] = timed(n, lambda: one_at_a_time(bus, dicts, bus.ingest))
    bus.shutdown()

    # Poll back from memory: filled (untimed) in batches, then read in pages of 1,000.
    bus = netbus.EventBus(shards=SHARDS, ring_capacity=1 << 16, adapter=netbus.Memory())
    stored = sum(bus.ingest_raw_batch(raws[i:i + BATCH]).accepted for i in range(0, n, BATCH))
    bus.flush()

    def poll_back() -> int:
        got, cursor = 0, None
        while True:
            page = bus.poll(limit=BATCH, cursor=cursor)
            got += len(page.events)
            for ev in page.events:
                ev.raw
            cursor = page.cursor
            if not page.events and not page.has_more:
                return got

    rows["poll"] = timed(stored, poll_back)
    bus.shutdown()

    if leak_events:
        bus = netbus.EventBus(shards=SHARDS, ring_capacity=1 << 16,
                              adapter=netbus.Memory(max_events_per_shard=4096))
        batch = raws[:BATCH]
        cursor: Optional[str] = None
        samples: List[int] = []
        done = 0
        start = time.perf_counter()
        while done < leak_events:
            for _ in range(100):
                bus.ingest_raw_batch(batch)
            done += 100 * BATCH
            bus.flush()
            while True:
                page = bus.poll(limit=BATCH, cursor=cursor)
                cursor = page.cursor
                if not page.has_more:
                    break
            samples.append(rss_bytes())
        seconds = time.perf_counter() - start
        bus.shutdown()
        settled = samples[len(samples) // 5:]  # after the retention filled up
        rows["leak"] = {
            "events": done, "seconds": seconds,
            "rss_first_mb": settled[0] / 2**20, "rss_last_mb": settled[-1] / 2**20,
            "rss_max_mb": max(settled) / 2**20,
            "flat": settled[-1] <= settled[0] * 1.10 + 16 * 2**20,
        }
    return rows


def worker_published(n: int) -> Dict[str, Any]:
    import net

    rows: Dict[str, Any] = {}
    raws = [payload(i) for i in range(n)]
    dicts = [{"token": "tok_%d" % i, "index": i} for i in range(n)]

    def one_at_a_time(call: Callable[[Any], Any], items: List[Any]) -> int:
        ok = 0
        for item in items:
            try:
                call(item)
                ok += 1
            except Exception:
                pass
        return ok

    bus = net.Net(num_shards=SHARDS)
    rows["ingest_raw"] = timed(n, lambda: one_at_a_time(bus.ingest_raw, raws))
    bus.shutdown()

    bus = net.Net(num_shards=SHARDS)
    rows["ingest_raw_batch"] = timed(
        n, lambda: sum(int(bus.ingest_raw_batch(raws[i:i + BATCH])) for i in range(0, n, BATCH)))
    time.sleep(0.5)  # no flush in this API: give the batches time to land

    def poll_back() -> int:
        got, cursor = 0, None
        while True:
            response = bus.poll(limit=BATCH, cursor=cursor)
            events = list(response)
            got += len(events)
            for ev in events:
                ev.raw
            nxt = response.next_id
            cursor = nxt() if callable(nxt) else nxt
            more = response.has_more
            if not events or not (more() if callable(more) else more):
                return got

    rows["poll"] = timed(rows["ingest_raw_batch"]["events"], poll_back)
    bus.shutdown()

    bus = net.Net(num_shards=SHARDS)
    rows["ingest(dict)"] = timed(n, lambda: one_at_a_time(bus.ingest, dicts))
    bus.shutdown()
    return rows


def run_worker(python: str, kind: str, n: int, leak: int) -> Dict[str, Any]:
    done = subprocess.run(
        [python, __file__, "--worker", kind, "--n", str(n), "--leak", str(leak)],
        capture_output=True, text=True, timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def mps(row: Optional[Dict[str, Any]]) -> str:
    if not row or not row.get("events"):
        return "n/a"
    return "%.2f M/s" % (row["per_second"] / 1e6)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["netbus", "published"])
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--leak", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=Path("target/bench"))
    parser.add_argument("--published-python")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.worker == "netbus":
        print(json.dumps(worker_netbus(args.n, args.leak)))
        return 0
    if args.worker == "published":
        print(json.dumps(worker_published(args.n)))
        return 0

    n, leak = (200_000, 1_000_000) if args.quick else (args.n, args.leak)
    ours = run_worker(sys.executable, "netbus", n, leak)
    theirs: Optional[Dict[str, Any]] = None
    note = ""
    if args.published_python:
        try:
            theirs = run_worker(args.published_python, "published", n, 0)
        except Exception as e:  # reported in the table, loudly
            note = f"published wheel run failed: {e}"
    else:
        note = "published wheel not installed: comparison SKIPPED"
    lines = [
        "## Python (netbus vs published net-mesh 0.45.1, %d events, %d shards)" % (n, SHARDS),
        "",
        "| row | netbus | published | ratio |",
        "|---|---|---|---|",
    ]
    for row in ["ingest_raw", "ingest_raw_batch", "ingest(dict)", "poll"]:
        a, b = ours.get(row), (theirs or {}).get(row)
        ratio = "n/a"
        if a and b and b.get("events") and a.get("events"):
            ratio = "%.2fx" % (a["per_second"] / b["per_second"])
        lines.append(f"| {row} | {mps(a)} | {mps(b) if theirs else 'SKIPPED'} | {ratio} |")
    leak_row = ours.get("leak")
    if leak_row:
        lines += ["", "Leak check: %d events ingested and polled back; RSS %.1f MB -> %.1f MB "
                  "(max %.1f MB): %s" % (leak_row["events"], leak_row["rss_first_mb"],
                                         leak_row["rss_last_mb"], leak_row["rss_max_mb"],
                                         "flat" if leak_row["flat"] else "GROWING")]
    if note:
        lines += ["", "!!! " + note]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "python.md").write_text(text)
    (args.out / "python.json").write_text(json.dumps({"netbus": ours, "published": theirs,
                                                      "note": note}, indent=2))
    print(text)
    if note:
        print("!!! " + note, file=sys.stderr)
    return 0 if not leak_row or leak_row["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
