"""The public library (sessctl.open / open_async) over the real store: the same data,
errors and semantics as the CLI, from threads and from asyncio."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from typing import Any

import pytest
from fakeserver import ErrorReply, FakeLLMServer, TextReply
from sendkit import chats, configure

import sessctl
from conftest import Paths, Run

pytestmark = pytest.mark.engines


def test_library_and_cli_share_one_store(ok: Run, paths: Paths) -> None:
    with sessctl.open() as store:
        s = store.create("user-123", user="alice", system="Be terse.", title="Refund", metadata={"plan": "pro"},
                         ttl="7d", options={"temperature": 0.2})
        assert (s.id, s.user, s.system, s.metadata, s.options) == (
            "user-123", "alice", "Be terse.", {"plan": "pro"}, {"temperature": 0.2})
        r = store.send("user-123", "hi")
        assert (r.session, r.content, r.status, r.seq, r.model) == ("user-123", "hi", "ok", 2, "echo")
    # What the library wrote, the CLI reads, field for field.
    exported = ok("export", "user-123", "--format", "jsonl").jsonl()[0]
    ok("send", "-s", "user-123", "from the shell")
    with sessctl.open() as store:
        got = store.get("user-123")
        assert [m.content for m in got.messages] == ["hi", "hi", "from the shell", "from the shell"]
        assert got.to_dict() == ok("export", "user-123", "--format", "jsonl").jsonl()[0]
        assert exported["messages"] == got.to_dict()["messages"][:2]
        assert [m.seq for m in store.messages("user-123", last=2)] == [3, 4]
        listed = store.list(user="alice", meta={"plan": "pro"})
        assert [x.to_dict() for x in listed] == ok("list", "--user", "alice", "--json").json()
        assert listed[0].messages is None
        assert store.stats() == ok("stats", "--json").json()
        assert store.stats(by="user") == ok("stats", "--by", "user", "--json").json()


def test_errors_carry_the_cli_exit_codes() -> None:
    with sessctl.open() as store:
        store.create("a")
        with pytest.raises(sessctl.AlreadyExistsError) as e:
            store.create("a")
        assert e.value.exit_code == 4
        assert store.create("a", exist_ok=True).id == "a"
        with pytest.raises(sessctl.NotFoundError) as e:
            store.get("nope")
        assert e.value.exit_code == 3
        with pytest.raises(sessctl.NotFoundError):
            store.send("nope", "hi", create=False)
        with pytest.raises(sessctl.UsageError) as e:
            store.create("bad id with spaces")
        assert e.value.exit_code == 2
        with pytest.raises(sessctl.UsageError):
            store.list(status="sideways")
        with pytest.raises(sessctl.UsageError):
            store.send("a", "   ")
        with pytest.raises(sessctl.NotFoundError):
            store.delete("a", "ghost")  # an unknown id deletes nothing
        assert store.get("a").id == "a"
        assert issubclass(sessctl.ProviderError, sessctl.SessctlError)


def test_archive_update_delete_cleanup(ok: Run) -> None:
    with sessctl.open(env={**__import__("os").environ, "SESSCTL_NOW": "2026-01-01T00:00:00Z"}) as old:
        old.send("old", "from January")
    with sessctl.open() as store:
        store.send("new", "today")
        assert store.archive(older_than="30d", dry_run=True) == ["old"]
        assert store.archive(older_than="30d") == ["old"]
        assert [s.id for s in store.list()] == ["new"]
        assert {s.id for s in store.list(status="all", limit=None)} == {"old", "new"}
        with pytest.raises(sessctl.UsageError):
            store.send("old", "again")
        assert store.send("old", "again", unarchive=True).seq == 4
        s = store.update("new", title="Renamed", metadata={"k": "v"})
        assert (s.title, s.metadata) == ("Renamed", {"k": "v"})
        assert store.update("new", unset=["k"], title=None).metadata == {}
        report = store.cleanup(delete_after="3650d", archive_after="off", dry_run=True)
        assert report["deleted"]["sessions"] == 0 and report["dry_run"] is True
        assert store.delete("old") == ["old"]
        assert store.delete(all=True, dry_run=True) == ["new"]
    assert ok("list", "--status", "all", "--format", "ids").stdout == "new\n"


def test_export_import_and_from_dict_round_trip(tmp_path: Any, ok: Run) -> None:
    with sessctl.open() as store:
        store.create("r", title="T", system="S", metadata={"a": "1"})
        store.send("r", "one")
        store.send("r", "two")
        sessions = list(store.export(all=True))
    [s] = sessions
    d = s.to_dict()
    again = sessctl.Session.from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == d  # every field, messages included
    assert sessctl.Message.from_dict(d["messages"][1], seq=2).to_dict() == d["messages"][1]
    with pytest.raises(sessctl.UsageError):
        sessctl.Session.from_dict({"id": "x", "messages": [{"role": "robot", "content": "?"}]})
    other = tmp_path / "other.db"
    with sessctl.open(db=other) as copy:
        result = copy.import_sessions([d])
        assert result.imported == ["r"]
        assert copy.get("r").to_dict() == d
    out = tmp_path / "export.jsonl"
    out.write_text(ok("export", "--all", "--format", "jsonl").stdout)
    with sessctl.open(db=tmp_path / "third.db") as third:
        assert third.import_sessions(out).imported == ["r"]
        assert third.import_sessions(out, on_conflict="skip").skipped == ["r"]


def test_a_client_shared_between_threads(paths: Paths) -> None:
    """8 threads × 10 sends through ONE client into 4 shared sessions: every message
    stored once, each session numbered 1..N without gaps, every turn whole."""
    errors: list[BaseException] = []
    with sessctl.open() as store:
        def worker(n: int) -> None:
            try:
                for i in range(10):
                    r = store.send(f"shared-{(n + i) % 4}", f"t{n}-{i}")
                    assert r.content == f"t{n}-{i}"
                    store.list(limit=5)  # reads interleaved with writes, on this thread's connection
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        texts = []
        for sid in (f"shared-{k}" for k in range(4)):
            msgs = store.messages(sid)
            assert [m.seq for m in msgs] == list(range(1, len(msgs) + 1))
            assert [m.role for m in msgs] == ["user", "assistant"] * (len(msgs) // 2)
            assert all(m.status == "ok" for m in msgs)
            texts += [m.content for m in msgs if m.role == "user"]
        assert sorted(texts) == sorted(f"t{n}-{i}" for n in range(8) for i in range(10))


def test_async_sends_run_concurrently_within_the_bound(paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm)
    release = threading.Event()
    # Streamed replies stop after their first piece until released: the calls in
    # flight at that moment are exactly those the bound let through.
    fake_llm.default = TextReply(hold=release, pieces=["echo", "!"])

    async def main() -> list[Any]:
        async with sessctl.open_async(concurrency=5) as store:
            streams = [store.stream(f"u-{i}", f"hi {i}") for i in range(20)]

            async def drain(stream: Any) -> Any:
                return "".join([p async for p in stream]), stream.reply

            task = asyncio.gather(*(drain(s) for s in streams))
            for _ in range(500):
                if len(chats(fake_llm)) >= 5:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # room for a sixth request to arrive, if the bound leaked
            in_flight = len(chats(fake_llm))
            release.set()
            results = await task
            assert in_flight == 5
            return results

    results = asyncio.run(main())
    assert [text for text, _ in results] == ["echo!"] * 20
    assert [reply.session for _, reply in results] == [f"u-{i}" for i in range(20)]
    assert len(chats(fake_llm)) == 20


def test_a_cancelled_async_send_keeps_the_message(paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm)
    release = threading.Event()
    fake_llm.enqueue(TextReply("partial reply here", pieces=["partial ", "reply here"], hold=release))

    async def main() -> None:
        async with sessctl.open_async() as store:
            pieces: list[str] = []
            stream = store.stream("c", "will be cut")

            async def consume() -> None:
                async for piece in stream:
                    pieces.append(piece)

            task = asyncio.ensure_future(consume())
            for _ in range(500):
                if pieces:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert "partial ".startswith("".join(pieces)) and pieces

    try:
        asyncio.run(main())
    finally:
        release.set()
    with sessctl.open() as store:
        assert [(m.role, m.content, m.status) for m in store.messages("c")] == [
            ("user", "will be cut", "unanswered"), ("assistant", "partial ", "incomplete")]


def test_stream_yields_pieces_and_stores_the_whole_reply(paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm)
    fake_llm.enqueue(TextReply("Hello there, friend", pieces=["Hel", "lo there", ", friend"]))
    with sessctl.open() as store:
        stream = store.stream("s", "greet me")
        pieces = list(stream)
        # Pieces as they arrive (the key scrubber may hold back a tail until the next one).
        assert "".join(pieces) == "Hello there, friend" and len(pieces) >= 2
        assert stream.reply is not None and stream.reply.content == "Hello there, friend"
        assert [m.content for m in store.messages("s")] == ["greet me", "Hello there, friend"]
        # Leaving early stops the call and keeps what arrived, marked incomplete.
        release = threading.Event()
        fake_llm.enqueue(TextReply("one two three", pieces=["one ", "two ", "three"], hold=release))
        stream = store.stream("s", "again")
        for piece in stream:
            assert "one ".startswith(piece)
            break
        release.set()
        assert [(m.content, m.status) for m in store.messages("s")[2:]] == [
            ("again", "unanswered"), ("one ", "incomplete")]


def test_a_provider_failure_raises_5_and_keeps_the_message(paths: Paths, fake_llm: FakeLLMServer) -> None:
    configure(paths, fake_llm, max_retries=0)
    fake_llm.enqueue(ErrorReply(500, "boom"))
    with sessctl.open() as store:
        with pytest.raises(sessctl.ProviderError) as e:
            store.send("f", "keep me")
        assert e.value.exit_code == 5 and "HTTP 500: boom" in str(e.value)
        assert [(m.content, m.status) for m in store.messages("f")] == [("keep me", "unanswered")]
        fake_llm.enqueue(ErrorReply(500, "boom"))
        results = store.send_many(["f", "g"], "both")
        assert isinstance(results[0], sessctl.ProviderError) or isinstance(results[1], sessctl.ProviderError)
        assert sum(isinstance(r, sessctl.Reply) for r in results) == 1


def test_async_reads_and_export(ok: Run) -> None:
    ok("send", "-s", "a", "one")
    ok("send", "-s", "b", "two")

    async def main() -> tuple[list[str], int, dict[str, Any]]:
        async with sessctl.open_async() as store:
            ids = [s.id async for s in store.export(all=True, batch=1)]
            got = await store.get("a")
            return ids, len(got.messages or []), await store.stats()

    ids, n, stats = asyncio.run(main())
    assert ids == ["a", "b"] and n == 2 and stats["messages"] == 4


def test_every_public_name_is_documented_with_an_example() -> None:
    names: list[tuple[str, Any]] = [(n, getattr(sessctl, n)) for n in sessctl.__all__ if n != "__version__"]
    for cls in (sessctl.Client, sessctl.AsyncClient, sessctl.Session, sessctl.Message, sessctl.Reply):
        names += [(f"{cls.__name__}.{n}", m) for n, m in vars(cls).items()
                  if not n.startswith("_") and (inspect.isfunction(m) or isinstance(m, (property, classmethod)))]
    for name, obj in names:
        doc = inspect.getdoc(obj.__func__ if isinstance(obj, classmethod) else obj.fget
                             if isinstance(obj, property) else obj) or ""
        assert ">>>" in doc, f"{name}: its docstring needs an example"


def test_importing_sessctl_stays_cheap() -> None:
    import subprocess
    import sys

    code = ("import sys, sessctl; heavy = [m for m in ('click', 'sqlite3', 'asyncio', 'httpx', 'cryptography', "
            "'psycopg', 'sessctl.api') if m in sys.modules]; print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
    start = time.perf_counter()
    assert callable(sessctl.open)  # the first use loads the API
    assert time.perf_counter() - start >= 0
