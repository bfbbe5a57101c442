"""`sessctl key status` and `key rotate` (re-wrap and --reencrypt) on a real database."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from conftest import Paths, Run, mode
from dbkit import StoredDb

pytestmark = pytest.mark.engines


def _populate(ok: Run, env: dict[str, str] | None = None) -> None:
    ok("create", "a", "--user", "alice", "--title", "Secret title", "--system", "Be brief",
       "--meta", "plan=pro", "--meta", "team=blue", env=env)
    ok("send", "-s", "a", "first words", env=env)
    ok("send", "-s", "a", "second words", env=env)
    ok("create", "b", "--meta", "plan=free", env=env)
    ok("send", "-s", "c", "no metadata here", env=env)


def _bodies(stored: StoredDb) -> dict[int, bytes]:
    return dict(stored.query("SELECT id, content FROM message_bodies"))  # type: ignore[arg-type]


def _ring(stored: StoredDb) -> dict[str, object]:
    return stored.row("SELECT * FROM keyring")


def _transcripts(ok: Run, env: dict[str, str] | None = None) -> list[object]:
    return [(s["id"], s["title"], s["system"], s["metadata"], [m["content"] for m in s["messages"]])
            for s in ok("export", "--all", env=env).json()]


# --- status ------------------------------------------------------------------------


def test_status_before_any_key(ok: Run, stored: StoredDb) -> None:
    st = ok("key", "status", "--json").json()
    assert st["kind"] is None and st["unlocks"] is None
    assert not stored.exists()


def test_status_file_key_shows_no_secret(ok: Run, paths: Paths, stored: StoredDb) -> None:
    from sessctl.config import parse_database

    _populate(ok)
    st = ok("key", "status", "--json").json()
    ring = _ring(stored)
    assert st["kind"] == "file" and st["unlocks"] is True
    assert st["key_file"] == str(paths.key) and st["database"] == parse_database(stored.location).display
    assert st["fingerprint"] == ring["kek_fingerprint"] and len(st["fingerprint"]) == 16
    assert st["data_key_created_at"].endswith("Z") and st["wrapped_at"] == st["data_key_created_at"]
    table = ok("key", "status").stdout
    assert "fingerprint" in table and st["fingerprint"] in table and "unlocks           yes" in table
    key_text = paths.key.read_text().strip()
    for out in (table, ok("key", "status", "--json").stdout):
        assert key_text not in out and base64.b64encode(ring["wrapped_dek"]).decode() not in out


def test_status_wrong_key_is_6_but_still_reports(run: Run, ok: Run, paths: Paths) -> None:
    _populate(ok)
    paths.key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    r = run("key", "status", "--json")
    assert r.exit_code == 6 and r.json()["unlocks"] is False and r.json()["kind"] == "file"
    assert r.stderr.startswith("sessctl: error: wrong key") and len(r.stderr.splitlines()) == 1


def test_status_passphrase_shows_parameters_not_salt(ok: Run, paths: Paths) -> None:
    env = {"SESSCTL_PASSPHRASE": "pass one"}
    ok("send", "-s", "p", "hi", env=env)
    st = ok("key", "status", "--json", env=env).json()
    assert st["kind"] == "passphrase" and st["unlocks"] is True and st["key_file"] is None
    assert st["kdf"] == {"alg": "argon2id", "memory_cost": 65536, "iterations": 3, "lanes": 4}


# --- rotate (re-wrap) ----------------------------------------------------------------


def test_rotate_needs_an_explicit_new_key(run: Run, ok: Run, paths: Paths) -> None:
    _populate(ok)
    before = paths.key.read_bytes()
    for args in ([], ["--new-key-file", str(paths.key)], ["--new-key-file", "x", "--new-passphrase-env", "Y"],
                 ["--new-passphrase-env", "UNSET_VARIABLE"]):
        r = run("key", "rotate", *args)
        assert r.exit_code == 2, (args, r.stderr)
        assert r.stderr.startswith("sessctl: error:") and len(r.stderr.splitlines()) == 1
    assert paths.key.read_bytes() == before and not Path("x").exists()
    assert ok("key", "status", "--json").json()["unlocks"] is True


def test_rotate_to_new_key_file(run: Run, ok: Run, paths: Paths, stored: StoredDb) -> None:
    _populate(ok)
    want = _transcripts(ok)
    old_key, bodies, ring = paths.key.read_bytes(), _bodies(stored), _ring(stored)
    new = paths.root / "keys" / "new.key"
    r = ok("key", "rotate", "--new-key-file", str(new), "--json")
    assert r.json()["key_file"] == str(new) and r.json()["reencrypted"] is None
    assert f"SESSCTL_KEY_FILE={new}" in r.stderr
    assert new.exists() and mode(new) == 0o600
    assert paths.key.read_bytes() == old_key  # never overwritten
    after = _ring(stored)
    assert after["kek_fingerprint"] == r.json()["fingerprint"] != ring["kek_fingerprint"]
    assert after["wrapped_dek"] != ring["wrapped_dek"] and after["dek_check"] == ring["dek_check"]
    assert _bodies(stored) == bodies  # a re-wrap leaves every value as it was
    # The old key stops working; the new one reads everything.
    r = run("show", "a")
    assert r.exit_code == 6 and "wrong key" in r.stderr
    env = {"SESSCTL_KEY_FILE": str(new)}
    assert _transcripts(ok, env) == want
    ok("send", "-s", "a", "after rotation", env=env)
    assert ok("list", "--meta", "plan=pro", "--format", "ids", env=env).stdout == "a\n"


def test_rotate_leaves_no_copy_of_the_old_wrapped_key(ok: Run, paths: Paths, stored: StoredDb) -> None:
    _populate(ok)
    old = _ring(stored)["wrapped_dek"]
    ok("key", "rotate", "--new-key-file", str(paths.root / "k2"))
    new = _ring(stored)["wrapped_dek"]
    assert isinstance(old, bytes) and isinstance(new, bytes)
    found = stored.bytes()
    assert new in b"".join(found.values())  # the search does see the keyring
    for name, data in found.items():
        assert old not in data, name


def test_rotate_to_an_existing_key_file_uses_it(run: Run, ok: Run, paths: Paths) -> None:
    _populate(ok)
    prepared = paths.root / "prepared.key"
    prepared.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    prepared.chmod(0o644)
    r = run("key", "rotate", "--new-key-file", str(prepared))
    assert r.exit_code == 2 and "chmod 600" in r.stderr
    prepared.chmod(0o600)
    content = prepared.read_bytes()
    ok("key", "rotate", "--new-key-file", str(prepared))
    assert prepared.read_bytes() == content
    assert ok("show", "a", "--json", env={"SESSCTL_KEY_FILE": str(prepared)}).json()["title"] == "Secret title"
    # Not a key: refused, untouched.
    junk = paths.root / "junk.key"
    junk.write_text("not a key\n")
    junk.chmod(0o600)
    r = run("key", "rotate", "--new-key-file", str(junk), env={"SESSCTL_KEY_FILE": str(prepared)})
    assert r.exit_code == 6 and junk.read_text() == "not a key\n"


def test_rotate_with_the_wrong_current_key_changes_nothing(run: Run, ok: Run, paths: Paths,
                                                          stored: StoredDb) -> None:
    _populate(ok)
    ring = _ring(stored)
    wrong = paths.root / "wrong.key"
    wrong.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    new = paths.root / "new.key"
    r = run("key", "rotate", "--new-key-file", str(new), env={"SESSCTL_KEY_FILE": str(wrong)})
    assert r.exit_code == 6 and not new.exists()
    assert _ring(stored) == ring


def test_rotate_between_file_and_passphrase(run: Run, ok: Run, paths: Paths) -> None:
    _populate(ok)
    want = _transcripts(ok)
    r = ok("key", "rotate", "--new-passphrase-env", "NEW_PASS", env={"NEW_PASS": "hunter2 but longer"})
    assert "SESSCTL_PASSPHRASE" in r.stderr and "hunter2" not in r.stdout + r.stderr
    assert run("show", "a").exit_code == 6
    assert run("show", "a", env={"SESSCTL_PASSPHRASE": "wrong"}).exit_code == 6
    penv = {"SESSCTL_PASSPHRASE": "hunter2 but longer"}
    assert _transcripts(ok, penv) == want
    st = ok("key", "status", "--json", env=penv).json()
    assert st["kind"] == "passphrase" and st["unlocks"] is True
    # ...and back to a key file.
    back = paths.root / "back.key"
    ok("key", "rotate", "--new-key-file", str(back), env=penv)
    assert run("show", "a", env=penv).exit_code == 6
    assert _transcripts(ok, {"SESSCTL_KEY_FILE": str(back)}) == want


# --- rotate --reencrypt ----------------------------------------------------------------


def test_reencrypt_replaces_every_ciphertext(run: Run, ok: Run, paths: Paths, stored: StoredDb) -> None:
    from sessctl import crypto

    _populate(ok)
    want = _transcripts(ok)
    ring, bodies = _ring(stored), _bodies(stored)
    sessions_before = stored.query("SELECT pk, title, system, metadata FROM sessions ORDER BY pk")
    tags_before = set(stored.query("SELECT tag, session_pk FROM session_meta_index"))
    old_dek = crypto.unwrap(crypto.kek_from_file(paths.key, create=False), ring["wrapped_dek"], ring["db_id"])

    r = ok("key", "rotate", "--reencrypt", "--json")
    # Every body, plus a's title, system prompt and metadata and b's metadata.
    assert r.json()["reencrypted"] == len(bodies) + 4
    after_ring, after_bodies = _ring(stored), _bodies(stored)
    assert after_ring["dek_check"] != ring["dek_check"]
    assert after_ring["kek_fingerprint"] == ring["kek_fingerprint"]  # same key file, new data key
    assert set(after_bodies) == set(bodies) and all(after_bodies[i] != bodies[i] for i in bodies)
    sessions_after = stored.query("SELECT pk, title, system, metadata FROM sessions ORDER BY pk")
    tags_after = set(stored.query("SELECT tag, session_pk FROM session_meta_index"))
    for b, a in zip(sessions_before, sessions_after):
        assert [x is None for x in b] == [x is None for x in a]
        assert all(x != y for x, y in zip(b[1:], a[1:]) if x is not None)
    assert len(tags_after) == len(tags_before) and not tags_after & tags_before
    # The old data key opens nothing any more.
    old = crypto.Cipher(old_dek)
    some_id = next(iter(after_bodies))
    with pytest.raises(crypto.Tampered):
        old.open(after_bodies[some_id], b"anything")
    assert _transcripts(ok) == want
    assert ok("list", "--meta", "plan=pro", "--format", "ids").stdout == "a\n"
    assert ok("list", "--meta", "plan=free", "--format", "ids").stdout == "b\n"
    ok("send", "-s", "a", "still works")


def test_reencrypt_with_a_new_key_file(run: Run, ok: Run, paths: Paths) -> None:
    _populate(ok)
    want = _transcripts(ok)
    new = paths.root / "re.key"
    ok("key", "rotate", "--reencrypt", "--new-key-file", str(new))
    assert run("show", "a").exit_code == 6
    assert _transcripts(ok, {"SESSCTL_KEY_FILE": str(new)}) == want


def test_reencrypt_refuses_tampered_data_and_changes_nothing(run: Run, ok: Run, stored: StoredDb) -> None:
    _populate(ok)
    c = stored.conn()
    blob = bytearray(c.execute("SELECT content FROM message_bodies ORDER BY id DESC LIMIT 1").fetchone()[0])
    blob[-1] ^= 1
    c.execute("UPDATE message_bodies SET content = ? WHERE id = (SELECT max(id) FROM message_bodies)", (bytes(blob),))
    c.close()
    ring, bodies = _ring(stored), _bodies(stored)
    r = run("key", "rotate", "--reencrypt")
    assert r.exit_code == 6 and "nothing was changed" in r.stderr
    assert "session 'c'" in r.stderr and "message 2" in r.stderr
    assert _ring(stored) == ring and _bodies(stored) == bodies


def test_a_process_holding_the_old_data_key_never_writes_with_it(ok: Run, paths: Paths) -> None:
    """A long-running process (a `send` waiting on the provider) that unlocked the key
    before someone ran `key rotate --reencrypt` must not seal its turn under the old key."""
    import io

    from sessctl import config
    from sessctl.service import App
    from sessctl.store import NewMessage

    _populate(ok)
    app = App(config=config.load(), stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
    store = app.store(create=True)
    store.messages(store.get_session("a"))  # the data key is now cached in this process
    ok("key", "rotate", "--reencrypt")
    store.append_messages("a", [NewMessage("user", "late turn"), NewMessage("assistant", "late reply")], app.now())
    app.close()
    msgs = ok("show", "a", "--json").json()["messages"]
    assert [m["content"] for m in msgs[-2:]] == ["late turn", "late reply"]
