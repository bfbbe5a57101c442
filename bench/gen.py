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
- last activity: the first half of the sessions 91..180 days ago, the second half
  0..89 days ago, so `archive --older-than 90d` selects exactly half;
- tokens (history/4 in, reply/4 out) and latencies (log-normal around 1.2 s) on replies.

Many sessions are written per transaction (the re-entrant Store.write), so a million
messages take a few minutes. Prints, and writes to DB.json beside the database, the
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--long-session", type=int, default=1000, help="messages in session bench-long")
    ap.add_argument("--batch", type=int, default=500, help="sessions per transaction")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

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
    half = args.sessions // 2
    plain = {"content": 0, "title": 0, "system": 0, "metadata": 0}
    counts = {"sessions": 0, "messages": 0, "unanswered_turns": 0}
    started = time.monotonic()

    def session(i: int) -> None:
        sid = "bench-long" if i == 0 else f"s{i:07d}"
        provider, model = rng.choices([(p, m) for p, m, _ in PROVIDERS], [w for *_, w in PROVIDERS])[0]
        meta = {"channel": rng.choice(CHANNELS), "plan": rng.choice(PLANS)}
        if rng.random() < 0.6:
            meta["locale"] = rng.choice(LOCALES)
        if rng.random() < 0.3:
            meta["ticket"] = f"T-{rng.randrange(10**6):06d}"
        spec = NewSession(
            id=sid, user=f"user-{int(rng.paretovariate(1.1)) % 5000:04d}", provider=provider, model=model,
            title=text.sized(35, 0.4, 10, 80) if rng.random() < 0.6 else None,
            system=rng.choice(systems) if rng.random() < 0.7 else None, metadata=meta,
        )
        # Last activity: first half 91..180 days ago, second half 0..89 days ago.
        age = rng.uniform(91, 180) if i < half else rng.uniform(0, 89)
        last = anchor - int(age * DAY)
        n_turns = turns[i]
        t = last - n_turns * rng.randint(30, 600)
        store.create_session(spec, t)
        msgs: list[NewMessage] = []
        history = len(spec.system or "")
        for _ in range(n_turns):
            q = text.sized(180, 0.9, 5, 6000)
            t += rng.randint(5, 120)
            if rng.random() < 0.005:
                msgs.append(NewMessage("user", q, status="unanswered", created_at=t))
                counts["unanswered_turns"] += 1
                plain["content"] += len(q.encode())
                continue
            a = text.sized(700, 0.8, 20, 12000)
            history += len(q) + len(a)
            latency = int(min(60000, rng.lognormvariate(math.log(1200), 0.5)))
            msgs += [NewMessage("user", q, created_at=t),
                     NewMessage("assistant", a, provider=provider, model=model, tokens_in=history // 4,
                                tokens_out=len(a) // 4, latency_ms=latency, first_token_ms=latency // 4,
                                created_at=t + latency // 1000)]
            plain["content"] += len(q.encode()) + len(a.encode())
        store.append_messages(sid, msgs, max(t, last))
        counts["sessions"] += 1
        counts["messages"] += len(msgs)
        plain["title"] += len((spec.title or "").encode())
        plain["system"] += len((spec.system or "").encode())
        plain["metadata"] += len(json.dumps(meta, ensure_ascii=False, sort_keys=True).encode())

    for lo in range(0, args.sessions, args.batch):
        store.write(lambda conn, lo=lo: [session(i) for i in range(lo, min(lo + args.batch, args.sessions))])
        done = min(lo + args.batch, args.sessions)
        rate = counts["messages"] / (time.monotonic() - started)
        print(f"\r{done}/{args.sessions} sessions, {counts['messages']} messages ({rate:,.0f}/s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    app.close()

    db = Path(args.db)
    out = {
        **counts, "seed": args.seed, "anchor": anchor, "seconds": round(time.monotonic() - started, 1),
        "plaintext_bytes": {**plain, "total": sum(plain.values())},
        "db_bytes": db.stat().st_size,
    }
    out["ratio"] = round(out["db_bytes"] / out["plaintext_bytes"]["total"], 3)
    Path(str(db) + ".json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
