"""A chatbot backend with one isolated session per user.

Each user's conversation lives in its own session ("user-<name>"): its own history,
its own metadata, encrypted at rest. Users never see each other's messages, and a
restart picks every conversation up where it was.

    python examples/multi_user_chatbot.py --db /tmp/chatbot.db

With no provider configured, replies come from the built-in offline `echo` provider;
configure one in config.toml (or export OPENAI_API_KEY) for real replies.
"""

from __future__ import annotations

import argparse

import sessctl

CONVERSATIONS = {
    "alice": ["Hi, I'm Alice. My order #4411 hasn't arrived.", "Can you check the tracking?"],
    "bob": ["Hello, this is Bob. How do I reset my password?"],
    "carol": ["Carol here. Is the premium plan billed monthly?", "And can I cancel anytime?"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database path or postgresql:// URL (default: sessctl's)")
    args = parser.parse_args()

    with sessctl.open(args.db) as store:
        for user, lines in CONVERSATIONS.items():
            session_id = f"user-{user}"
            store.create(session_id, user=user, system="You are a concise support agent.",
                         metadata={"channel": "web"}, exist_ok=True)
            for line in lines:
                reply = store.send(session_id, line)
                print(f"[{user}] > {line}\n[{user}] < {reply.content}")

        # Isolation: each session holds its own user's messages only.
        for user in CONVERSATIONS:
            session = store.get(f"user-{user}")
            others = [u for u in CONVERSATIONS if u != user]
            assert not any(o.capitalize() in m.content for m in session.messages or [] for o in others)
            print(f"{session.id}: {session.message_count} messages, owner {session.user}")
        print("web sessions:", [s.id for s in store.list(meta={"channel": "web"}, limit=None)])


if __name__ == "__main__":
    main()
