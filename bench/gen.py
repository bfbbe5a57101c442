#!/usr/bin/env python3
"""Generate a benchmark database through the real store (sanitizer, encryption, counters).

    python bench/gen.py --db bench/out/bench.db --key-file bench/out/bench.key \\
        --sessions 100000 --messages 1000000

Shape (deterministic for a given --seed):
- one session `bench-long` with --long-session messages (for `show`), the rest with
  1..many turns (geometric, mean to hit --messages exactly);
- user messages ~270 bytes on average (log-normal, 5..6,000), replies ~950 bytes
  (log-normal, 20..12,000), text from a pseudo-English corpus; 0.5% of turns unanswered;
- 5,000 users (heavy-tailed), four provider/model pairs, 60% titled, 70% with one of a
  dozen system prompts (80..1,200 bytes), 1-4 metadata pairs (channel, plan, locale, ticket);
- a timeline: sessions start in the order they are created (pk order is creation
  order, as in real use) and their turns are minutes apart, so the messages of
  concurrently active sessions interleave in the file as they do in production;
  bench-long's turns span weeks;
- the first half of the sessions start and finish 180..91 days ago, the second half
  89 days ago..now, so `archive --older-than 90d` selects exactly half;
- tokens (history/4 in, reply/4 out) and latencies (log-normal around 1.2 s) on replies;
- with --rare WORD, about one message in --rare-every (1,000) gets WORD at a random
  word position (the `search` benchmark's rare word; the corpus cannot make it, so the
  count written to DB.json is exact).

2,000 turns of many sessions are written per transaction (the re-entrant Store.write),
so a million messages take a few minutes. --db may be a postgresql:// URL (the same
data for the same --seed; the size is then the tables' and indexes' on the server). Prints, and writes to DB.json beside the database, the
counts and the plaintext size (see bench/README.md for what that means).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sessctl import config  # noqa: E402
from sessctl.models import NewSession  # noqa: E402
from sessctl.service import App  # noqa: E402
from sessctl.store import NewMessage  # noqa: E402

PROVIDERS = [("openai", "gpt-4o-mini", 0.5), ("openai", "gpt-4o", 0.15),
             ("anthropic", "claude-sonnet-4-5", 0.25), ("local", "llama3.1", 0.10)]
CHANNELS = ["web", "slack", "api", "email"]
PLANS = ["free", "pro", "team", "enterprise"]
LOCALES = ["en-US", "de-DE", "fr-FR", "ja-JP", "pt-BR"]
DAY = 86400


def corpus(rng: random.Random, size: int) -> str:
    """Pseudo-English: words from syllables, sentences, paragraphs, the odd code block."""
    syll = ["ka", "lo", "mi", "ne", "tor", "sa", "ver", "in", "qu", "al", "re", "est", "on", "de", "pri", "ma",
            "th", "ing", "er", "an", "ou", "st", "po", "li", "cy", "ref", "und", "acc", "ount"]
    words = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    words += ["the", "a", "to", "and", "of", "is", "your", "order", "refund", "account", "please", "thanks"] * 40
    out: list[str] = []
    n = 0
    while n < size:
        if rng.random() < 0.03:
            block = "```python\ndef f(x):\n    return x * 2\n```\n"
            out.append(block)
            n += len(block)
            continue
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(5, 22)))
        sentence = sentence[0].upper() + sentence[1:] + rng.choice([". ", "? ", "! ", ".\n\n"])
        out.append(sentence)
        n += len(sentence)
    return "".join(out)


class Text:
    def __init__(self, rng: random.Random, size: int = 4_000_000) -> None:
        self.rng = rng
        self.corpus = corpus(rng, size)

    def take(self, n: int) -> str:
        start = self.rng.randrange(0, len(self.corpus) - n - 1)
        return self.corpus[start:start + n].strip() or "ok"

    def sized(self, median: float, sigma: float, lo: int, hi: int) -> str:
        n = int(min(hi, max(lo, self.rng.lognormvariate(math.log(median), sigma))))
        return self.take(n)


def plan_turns(rng: random.Random, sessions: int, messages: int, long_msgs: int) -> list[int]:
    """Turns per session (session 0 is the long one) summing to exactly messages / 2."""
    total_turns = messages // 2
    rest = total_turns - long_msgs // 2
    mean = rest / (sessions - 1)
    turns = [1 + int(rng.expovariate(1 / max(mean - 1, 0.01))) for _ in range(sessions - 1)]
    diff = rest - sum(turns)
    while diff:
        i = rng.randrange(len(turns))
        if diff > 0:
            turns[i] += 1
            diff -= 1
        elif turns[i] > 1:
            turns[i] -= 1
            diff += 1
    return [long_msgs // 2] + turns


def timeline(rng: random.Random, turns: list[int], anchor: int, long_index: int) -> list[tuple[int, int, int]]:
    """(time, session, turn) for every turn, in time order. Sessions start in order of
    their index (so pk order is creation order, as in real use); the first half start
    and finish 180..91 days ago, the second half 89 days ago..now, so
    `archive --older-than 90d` selects exactly half. Turns are minutes apart, so the
    messages of concurrently active sessions interleave in the file as they would."""
    n = len(turns)
    half = n // 2
    starts = sorted(rng.uniform(91 * DAY, 180 * DAY) for _ in range(half))[::-1]
    starts += sorted(rng.uniform(120, 89 * DAY) for _ in range(n - half))[::-1]
    events = []
    for i, (start_ago, k) in enumerate(zip(starts, turns)):
        floor = 90 * DAY + 60 if i < half else 60  # last turn no later than this long ago
        t = anchor - start_ago
        gap_cap = max(1.0, (start_ago - floor) / max(k, 1))
        for j in range(k):
            if i == long_index:
                gap = rng.uniform(0.5, 1.0) * gap_cap  # a long-lived session: weeks of turns
            else:
                gap = min(gap_cap, rng.lognormvariate(math.log(90), 1.0))
            events.append((int(t), i, j))
            t += gap
    events.sort()
    return events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True, help="an SQLite file or a postgresql:// URL (an empty database)")
    ap.add_argument("--json", metavar="PATH", help="where the counts go (default: DB.json; a URL: only printed)")
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--long-session", type=int, default=1000, help="messages in session bench-long")
    ap.add_argument("--batch", type=int, default=2000, help="turns per transaction")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rare", metavar="WORD", help="place WORD in about one message in --rare-every")
    ap.add_argument("--rare-every", type=int, default=1000, metavar="N")
    args = ap.parse_args()
    # Its own generator, so the rest of the data is the same with or without --rare.
    rare_rng = random.Random(args.seed + 7)

    rng = random.Random(args.seed)
    text = Text(rng)
    systems = [text.sized(350, 0.8, 80, 1200) for _ in range(12)]
    env = {**os.environ, "SESSCTL_DB": args.db, "SESSCTL_KEY_FILE": args.key_file}
    env.pop("SESSCTL_PASSPHRASE", None)
    app = App(config=config.load(env=env), stdin=io.StringIO(), stdout=io.StringIO(), stderr=sys.stderr)
    store = app.store(create=True)
    if store.conn.execute("SELECT count(*) FROM sessions").fetchone()[0]:
        sys.exit(f"{args.db} already holds sessions; generate into a new file")

    anchor = int(time.time())
    turns = plan_turns(rng, args.sessions, args.messages, args.long_session)
    long_index = args.sessions // 2 + args.sessions // 4  # in the recent half, made in the middle
    turns[0], turns[long_index] = turns[long_index], turns[0]
    events = timeline(rng, turns, anchor, long_index)
    plain = {"content": 0, "title": 0, "system": 0, "metadata": 0}
    counts = {"sessions": 0, "messages": 0, "unanswered_turns": 0, "rare_messages": 0}

    def sprinkle(t: str) -> str:
        if not args.rare or rare_rng.randrange(args.rare_every):
            return t
        counts["rare_messages"] += 1
        words = t.split(" ")
        words.insert(rare_rng.randrange(len(words) + 1), args.rare)
        return " ".join(words)

    history: dict[int, int] = {}
    specs: dict[int, NewSession] = {}
    started = time.monotonic()

    def new_spec(i: int) -> NewSession:
        provider, model = rng.choices([(p, m) for p, m, _ in PROVIDERS], [w for *_, w in PROVIDERS])[0]
        meta = {"channel": rng.choice(CHANNELS), "plan": rng.choice(PLANS)}
        if rng.random() < 0.6:
            meta["locale"] = rng.choice(LOCALES)
        if rng.random() < 0.3:
            meta["ticket"] = f"T-{rng.randrange(10**6):06d}"
        spec = NewSession(
            id="bench-long" if i == long_index else f"s{i:07d}",
            user=f"user-{int(rng.paretovariate(1.1)) % 5000:04d}", provider=provider, model=model,
            title=text.sized(35, 0.4, 10, 80) if rng.random() < 0.6 else None,
            system=rng.choice(systems) if rng.random() < 0.7 else None, metadata=meta,
        )
        plain["title"] += len((spec.title or "").encode())
        plain["system"] += len((spec.system or "").encode())
        plain["metadata"] += len(json.dumps(meta, ensure_ascii=False, sort_keys=True).encode())
        counts["sessions"] += 1
        return spec

    def turn(t: int, i: int) -> None:
        spec = specs.pop(i, None)
        create = spec if spec is not None else None
        sid = create.id if create is not None else ("bench-long" if i == long_index else f"s{i:07d}")
        if create is not None:
            history[i] = len(create.system or "")
        q = sprinkle(text.sized(180, 0.9, 5, 6000))
        plain["content"] += len(q.encode())
        if i != long_index and rng.random() < 0.005:
            store.append_messages(sid, [NewMessage("user", q, status="unanswered", created_at=t)], t, create=create)
            counts["unanswered_turns"] += 1
            counts["messages"] += 1
            return
        a = sprinkle(text.sized(700, 0.8, 20, 12000))
        plain["content"] += len(a.encode())
        history[i] += len(q) + len(a)
        latency = int(min(60000, rng.lognormvariate(math.log(1200), 0.5)))
        provider, model = (create.provider, create.model) if create is not None else (None, None)
        store.append_messages(sid, [
            NewMessage("user", q, created_at=t),
            NewMessage("assistant", a, provider=provider or providers[i], model=model or models[i],
                       tokens_in=history[i] // 4, tokens_out=len(a) // 4, latency_ms=latency,
                       first_token_ms=latency // 4, created_at=t + latency // 1000),
        ], t + latency // 1000, create=create)
        counts["messages"] += 2

    providers: dict[int, str | None] = {}
    models: dict[int, str | None] = {}
    for pos in range(0, len(events), args.batch):
        chunk = events[pos:pos + args.batch]
        for _, i, j in chunk:
            if j == 0:
                specs[i] = new_spec(i)
                providers[i], models[i] = specs[i].provider, specs[i].model
        store.write(lambda conn, chunk=chunk: [turn(t, i) for t, i, _ in chunk])
        if sys.stderr.isatty():
            rate = counts["messages"] / (time.monotonic() - started)
            print(f"\r{counts['messages']} messages, {counts['sessions']} sessions ({rate:,.0f}/s)",
                  end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    pg = store.db.name == "postgresql"
    if pg:
        # What the store occupies on the server (tables, indexes, TOAST), beside the
        # SQLite file size; ANALYZE so the first benchmark run does not pay for it.
        store.conn.execute("ANALYZE")
        db_bytes = store.conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r'").fetchone()[0]
    else:
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db_bytes = Path(args.db).stat().st_size
    app.close()

    out = {
        **counts, "rare_word": args.rare, "seed": args.seed, "anchor": anchor, "seconds": round(time.monotonic() - started, 1),
        "plaintext_bytes": {**plain, "total": sum(plain.values())},
        "db_bytes": db_bytes,
    }
    out["ratio"] = round(out["db_bytes"] / out["plaintext_bytes"]["total"], 3)
    if args.json or not pg:
        Path(args.json or str(args.db) + ".json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
