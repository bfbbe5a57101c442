"""config.toml values of the wrong type or range: one-line usage errors (exit 2) that
name the key, never a crash. (Configuration, not storage: SQLite only.)"""

from __future__ import annotations

import pytest

from conftest import Paths, Run


@pytest.mark.parametrize("toml,key", [
    ("providers = 5", "providers"),
    ("[storage]\nbusy_timeout = \"soon\"", "busy_timeout"),
    ("[storage]\nbusy_timeout = -1", "busy_timeout"),
    ("[storage]\nbusy_timeout = 1e300", "busy_timeout"),
    ("[storage]\nurl = \"postgresql://db.example:99999/x\"", "port"),
    ("[storage]\nurl = \"postgresql://db.example:port/x\"", "port"),
    ("[storage]\nurl = \"mysql://db/x\"", "scheme"),
    ("[storage]\nurl = 7", "url"),
    ("[storage]\nsurprise = 1", "surprise"),
    ("default_provider = 3", "default_provider"),
    ("key_file = [1]", "key_file"),
    ("retention = \"x\"", "retention"),
    ("[retention]\narchive_after = 30", "archive_after"),
    ("[providers.openai]\napi_key_env = 1", "api_key_env"),  # found by test_fuzz_cli
    ("[providers.x]\nkind = \"openai\"\nbase_url = \"http://h/v1\"\nmodel = [1]", "model"),
    ("[providers.openai]\nheaders = { X-Team = 3 }", "headers.X-Team"),
    ("[providers.openai]\nmax_context_messages = 0", "max_context_messages"),
], ids=lambda v: v if len(v) < 20 else None)
def test_bad_config_values_are_usage_errors_naming_the_key(run: Run, paths: Paths, toml: str, key: str) -> None:
    paths.write_config(toml + "\n")
    r = run("cleanup", "--dry-run")
    assert r.exit_code == 2, r.stderr
    assert key in r.stderr and len(r.stderr.splitlines()) == 1


def test_a_url_password_is_never_echoed_in_config_errors(run: Run, paths: Paths) -> None:
    paths.write_config('[storage]\nurl = "postgresql://app:hunter2secret@db.example:99999/x"\n')
    r = run("list")
    assert r.exit_code == 2 and "hunter2secret" not in r.stderr
