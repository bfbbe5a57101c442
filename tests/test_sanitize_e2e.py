"""Secrets sent through the real CLI never reach the store; the provider sees them only
when outbound sanitizing is off. One fake secret of every built-in rule, taken from the
labelled corpus, goes through a real OpenAI-protocol server on 127.0.0.1 that echoes it
back, so both sides of the exchange are exercised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sendkit import chats, configure

from conftest import Paths, Run

CORPUS = Path(__file__).parent / "sanitize_corpus" / "positives.jsonl"


def _one_per_rule() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for line in CORPUS.read_text().splitlines():
        case = json.loads(line)
        out.setdefault(case["rule"], case)
    return out


CASES = _one_per_rule()


def test_corpus_covers_every_builtin_rule() -> None:
    from sessctl.sanitize import Sanitizer

    builtin = {r.name for r in Sanitizer.from_config({}).rules() if r.builtin}
    assert builtin == set(CASES)


def _everything_readable(ok: Run, sid: str, paths: Paths) -> dict[str, str]:
    views = {f"show {fmt}": ok("show", sid, "--format", fmt).stdout for fmt in ("text", "markdown", "json")}
    for fmt in ("json", "jsonl", "markdown"):
        views[f"export {fmt}"] = ok("export", "--all", "--format", fmt).stdout
    views["list json"] = ok("list", "--json", "--status", "all").stdout
    raw = b"".join(p.read_bytes() for p in paths.db.parent.iterdir() if p.name.startswith("sessions.db"))
    views["database bytes"] = raw.decode("latin-1")
    return views


@pytest.mark.parametrize("outbound", [False, True])
def test_each_secret_is_redacted_everywhere(ok: Run, paths: Paths, fake_llm, outbound: bool) -> None:
    configure(paths, fake_llm,
              extra=f'\n[sanitize]\nenable = ["phone", "ip_address"]\noutbound = {str(outbound).lower()}\n')
    for i, (rule, case) in enumerate(sorted(CASES.items())):
        sid = f"s{i}"
        r = ok("send", "-s", sid, "--format", "json", "Please keep this safe:\n" + case["text"])
        sent = r.json()
        assert case["secret"] not in sent["reply"], rule
        seen = "\n".join(m["content"] for m in chats(fake_llm)[-1].json["messages"])
        assert (case["secret"] in seen) is (not outbound), f"{rule}: provider view with outbound={outbound}"
        msgs = ok("show", sid, "--json").json()["messages"]
        assert msgs[0]["redactions"].get(rule, 0) >= 1, rule
        if outbound:
            # The provider got the redacted text, so its echo holds only the marker.
            assert f"[REDACTED:{rule}]" in seen and msgs[1]["redactions"] == {}
        else:
            # The echoed reply carries the secret too: both sides were redacted.
            assert msgs[1]["redactions"].get(rule, 0) >= 1, rule
            assert sent["redactions"].get(rule, 0) >= 2, (rule, sent["redactions"])
    views = _everything_readable(ok, "s0", paths)
    for rule, case in CASES.items():
        for name, text in views.items():
            assert case["secret"] not in text, f"{rule} secret visible in {name}"
    st = ok("stats", "--json").json()
    assert set(CASES) <= set(st["redactions_by_rule"])
    assert st["redactions"] == sum(st["redactions_by_rule"].values())


def test_title_system_and_metadata_are_sanitized(ok: Run) -> None:
    email, card = "jane.doe@example-corp.com", "4539 1488 0343 6467"
    ok("create", "m", "--title", f"Ticket from {email}", "--system", f"Card on file {card}",
       "--meta", f"contact={email}")
    s = ok("show", "m", "--json").json()
    assert s["title"] == "Ticket from [REDACTED:email]"
    assert s["system"] == "Card on file [REDACTED:credit_card]"
    assert s["metadata"] == {"contact": "[REDACTED:email]"}
    assert s["stats"]["redactions"] == 3


def test_disabled_and_custom_rules_apply_to_the_store(ok: Run, paths: Paths) -> None:
    paths.write_config('[sanitize]\ndisable = ["email"]\n[sanitize.rules]\nticket = "TCK-[0-9]{6}"\n')
    ok("send", "-s", "c", "mail me at a.b@example-corp.com about TCK-123456")
    msg = ok("show", "c", "--json").json()["messages"][0]
    assert msg["content"] == "mail me at a.b@example-corp.com about [REDACTED:ticket]"
    assert msg["redactions"] == {"ticket": 1}


def test_sanitize_command(run: Run, ok: Run, paths: Paths) -> None:
    text = "key sk-proj-AbCdEf1234567890AbCdEf1234567890AbCd and bob@corp.io\n"
    r = ok("sanitize", "--report", input=text)
    assert r.stdout == "key [REDACTED:openai_key] and [REDACTED:email]\n"
    assert json.loads(r.stderr) == {"email": 1, "openai_key": 1}
    assert ok("sanitize", input=r.stdout).stdout == r.stdout
    assert ok("sanitize", input="nothing to see\n").stdout == "nothing to see\n"
    paths.write_config('[sanitize]\ndisable = ["email"]\n')
    assert ok("sanitize", input=text).stdout == "key [REDACTED:openai_key] and bob@corp.io\n"
    paths.write_config('[sanitize]\ndisable = ["no_such_rule"]\n')
    bad = run("sanitize", input=text)
    assert bad.exit_code == 2 and "no_such_rule" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_sanitize_list_rules(ok: Run) -> None:
    rules = ok("sanitize", "--list-rules", "--json").json()
    by_name = {r["name"]: r for r in rules}
    assert set(CASES) <= set(by_name)
    assert by_name["phone"]["enabled"] is False and by_name["email"]["enabled"] is True
    assert all(r["description"] and r["example"] for r in rules if r["builtin"])
    table = ok("sanitize", "--list-rules").stdout.splitlines()
    assert table[0].split()[:3] == ["RULE", "STATE", "DESCRIPTION"]
    assert len(table) == 2 + len(rules)  # one line per rule: examples are shown on one line


def test_sanitize_command_redacts_every_listed_example(ok: Run, paths: Paths) -> None:
    # What --list-rules shows is what the command does: each rule's fake example, piped
    # through `sessctl sanitize` with every rule on, comes out as that rule's marker.
    paths.write_config('[sanitize]\nenable = ["phone", "ip_address"]\n')
    rules = ok("sanitize", "--list-rules", "--json").json()
    assert len(rules) >= 130
    for rule in rules:
        r = ok("sanitize", "--report", input=f"example: {rule['example']}\n")
        assert f"[REDACTED:{rule['name']}]" in r.stdout, rule["name"]
        assert json.loads(r.stderr).get(rule["name"], 0) >= 1, rule["name"]
