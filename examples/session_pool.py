"""A pool of worker sessions, each pinned to its own model, fed from a task queue.

A typical evaluation or routing setup: the same prompts go to several models, each
model keeps its own conversation (and context), and the results are compared. Each
pool member is a session created with its provider and model; `send` then always
uses that session's model, and the stats break down by model.

    python examples/session_pool.py --db /tmp/pool.db --models echo,echo-large

Model names must exist at your provider; with the offline `echo` provider any name works.
"""

from __future__ import annotations

import argparse
import queue
import threading

import sessctl

TASKS = [
    "Summarise: the meeting moved to Thursday.",
    "Translate to French: good morning.",
    "Give one word for 'very happy'.",
    "Is 17 prime? Answer yes or no.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database path or postgresql:// URL (default: sessctl's)")
    parser.add_argument("--models", default="echo,echo-large,echo-mini")
    parser.add_argument("--provider", help="provider name from config.toml (default: the configured default)")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    with sessctl.open(args.db) as store:
        pool = []
        for model in models:
            session = store.create(f"pool-{model}", provider=args.provider, model=model,
                                   metadata={"pool": "eval"}, exist_ok=True)
            pool.append(session.id)

        # One worker thread per pool member; a Client is safe to share between threads.
        work: queue.Queue[tuple[str, str]] = queue.Queue()
        for session_id in pool:
            for task in TASKS:
                work.put((session_id, task))
        results: list[tuple[str, str, str]] = []
        lock = threading.Lock()

        def worker() -> None:
            while True:
                try:
                    session_id, task = work.get_nowait()
                except queue.Empty:
                    return
                reply = store.send(session_id, task)
                with lock:
                    results.append((session_id, reply.model or "?", reply.content))

        threads = [threading.Thread(target=worker) for _ in pool]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        for session_id, model, content in sorted(results):
            print(f"{session_id} [{model}]: {content[:60]}")
        for group in store.stats(by="model", meta={"pool": "eval"})["groups"]:
            print(f"model {group['key']}: {group['messages']} messages, {group['tokens']['out']} tokens out")


if __name__ == "__main__":
    main()
