"""100 conversations at once from asyncio, over one HTTP client, with timing.

    python examples/async_many_sessions.py --db /tmp/many.db --sessions 100 --concurrency 25

Against a real endpoint the wall time is about ceil(sessions / concurrency) round
trips; sessctl's own cost per send is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import sessctl


async def run(db: str | None, sessions: int, concurrency: int) -> None:
    async with sessctl.open_async(db, concurrency=concurrency) as store:
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(store.send(f"load-{i:03d}", f"Hello from session {i}") for i in range(sessions)),
            return_exceptions=True,
        )
        wall = time.perf_counter() - started
        ok = [r for r in replies if isinstance(r, sessctl.Reply)]
        failed = [r for r in replies if isinstance(r, BaseException)]
        latency = sorted(r.latency_ms or 0 for r in ok)
        print(f"{len(ok)} replies, {len(failed)} failures in {wall:.2f} s "
              f"(concurrency {concurrency}; {wall / max(1, sessions) * 1000:.1f} ms per send overall)")
        if latency:
            print(f"provider latency p50 {latency[len(latency) // 2]} ms, max {latency[-1]} ms")
        stats = await store.stats(since="1h")
        print(f"stored: {stats['messages']} messages in {stats['sessions']['total']} sessions")
        for error in failed[:3]:
            print("error:", error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database path or postgresql:// URL (default: sessctl's)")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=25)
    args = parser.parse_args()
    asyncio.run(run(args.db, args.sessions, args.concurrency))


if __name__ == "__main__":
    main()
