"""Paths, environment and config.toml → one frozen Config. No import-time side effects.

Resolution order, most specific first:
  database  --db, SESSCTL_DB, `[storage] url` (or top-level `db`) in config.toml,
            $XDG_DATA_HOME/sessctl/sessions.db. A path is an SQLite file; a
            postgresql:// URL a PostgreSQL server (see Database).
  config    --config, SESSCTL_CONFIG, $XDG_CONFIG_HOME/sessctl/config.toml
  key file  SESSCTL_KEY_FILE, `key_file` in config.toml, `key` beside the config file
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sessctl.errors import UsageError

PROVIDER_KINDS = ("openai", "anthropic", "echo")

# Providers that exist with no configuration at all. A [providers.NAME] table of the
# same name in config.toml overrides the fields it sets.
BUILTIN_PROVIDERS: dict[str, dict[str, Any]] = {
    "openai": {
        "kind": "openai",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
        "model": "gpt-4o-mini",
    },
    "anthropic": {
        "kind": "anthropic",
        "base_url": "https://api.anthropic.com",
        "api_key_env": "ANTHROPIC_API_KEY",
        "model": "claude-sonnet-4-5",
    },
    "echo": {"kind": "echo", "model": "echo"},
}

_PROVIDER_KEYS = {
    "kind", "base_url", "api_key_env", "model", "connect_timeout", "read_timeout",
    "max_retries", "backoff_base", "backoff_max", "options", "headers",
    "max_context_messages", "max_context_tokens", "anthropic_version", "stream_usage",
    "headers_env",
}

# Header names that carry credentials. Their values must not sit in config.toml (like
# api_key): `headers_env` names the environment variable that holds each instead.
_CREDENTIAL_HEADER = re.compile(r"(?i)auth|api[-_]?key|token|secret|passw|cookie|credential|signature")


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: str
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # Kept out of repr all the same: a repr can reach a log or a traceback.
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    # Header name → environment variable holding its value (e.g. Azure's api-key).
    headers_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_context_messages: int | None = None
    max_context_tokens: int | None = None
    anthropic_version: str = "2023-06-01"
    # OpenAI-compatible streams: ask for usage with stream_options.include_usage. Off for
    # servers that reject the field; usage is then estimated.
    stream_usage: bool = True


@dataclass(frozen=True)
class Database:
    """Where the sessions live: an SQLite file, or a PostgreSQL server.

    `url` keeps any password and is only ever handed to the driver; everything shown
    to people (errors, --debug, doctor, key status) uses `display`, which masks it."""

    kind: str  # "sqlite" | "postgresql"
    display: str
    path: Path | None = None  # sqlite
    url: str | None = field(default=None, repr=False)  # postgresql
    secrets: tuple[str, ...] = field(default=(), repr=False)  # strings to scrub from driver errors

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "sqlite"

    def __str__(self) -> str:
        return self.display


_PG_SCHEMES = ("postgresql://", "postgres://")


def parse_database(value: str | os.PathLike[str], what: str = "--db") -> Database:
    """A path or URL as given to --db, SESSCTL_DB or [storage] url → Database.

    A malformed PostgreSQL URL is a usage error (exit 2) naming what is wrong, never
    echoing the password. Only the URL's shape is checked here: connecting (and the
    driver import, ~150 ms) waits until a command needs the database."""
    text = os.fspath(value)
    if isinstance(text, bytes):  # pragma: no cover - os.PathLike[bytes] is not accepted
        text = text.decode()
    low = text[:16].lower()
    if low.startswith(_PG_SCHEMES):
        return _parse_pg_url(text, what)
    if low.startswith("sqlite:///"):
        return _sqlite(Path(text[len("sqlite://"):]))
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):
        scheme = text.split("://", 1)[0]
        raise UsageError(f"{what}: unsupported database URL scheme {scheme!r}: give a file path "
                         "or a postgresql://USER@HOST:PORT/DB URL")
    if not text.strip():
        raise UsageError(f"{what}: the database path is empty")
    return _sqlite(Path(text).expanduser())


def _sqlite(path: Path) -> Database:
    return Database("sqlite", str(path), path=path)


def _parse_pg_url(url: str, what: str) -> Database:
    from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

    def bad(problem: str) -> UsageError:
        return UsageError(f"{what}: malformed PostgreSQL URL ({problem}); expected "
                          "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAM=VALUE...]")

    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise bad("it contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not a number in 0..65535
        host = parts.hostname
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        reason = "the port is not a number from 1 to 65535" if "port" in str(exc).lower() else "cannot parse it"
        raise bad(reason) from None
    if port == 0:
        raise bad("the port is not a number from 1 to 65535")
    if parts.fragment:
        raise bad("it has a #fragment")
    dbname = parts.path.lstrip("/")
    if "/" in dbname:
        raise bad("the database name contains '/'")
    if not host and not dbname and not query:
        raise bad("no host and no database")
    secrets = []
    password = parts.password
    netloc = parts.netloc
    if password:
        from urllib.parse import unquote

        secrets += [password, unquote(password)]
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}"
    shown_query = []
    for key, val in query:
        if key.lower() in ("password", "sslpassword"):
            if val:
                secrets.append(val)
            shown_query.append(f"{key}=***")  # as in the userinfo: not percent-encoded
            continue
        shown_query.append(f"{key}={quote(val, safe='/:,-._~=')}")
    display = urlunsplit((parts.scheme, netloc, parts.path, "&".join(shown_query), ""))
    return Database("postgresql", display, url=url, secrets=tuple(s for s in secrets if s))


@dataclass(frozen=True)
class Config:
    config_path: Path
    config_exists: bool
    database: Database
    key_file: Path
    default_provider: str | None
    providers: Mapping[str, ProviderConfig]
    # The raw [sanitize] and [retention] tables; their owners (sanitize.py and the
    # retention code) validate them, so this module stays ignorant of their rules.
    sanitize: Mapping[str, Any]
    retention: Mapping[str, Any]
    busy_timeout_ms: int = 10_000
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    def provider(self, name: str) -> ProviderConfig:
        try:
            return self.providers[name]
        except KeyError:
            known = ", ".join(sorted(self.providers))
            raise UsageError(f"unknown provider {name!r}; configured providers: {known}") from None


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path(env.get("HOME") or os.path.expanduser("~")) / fallback


def default_config_path(env: Mapping[str, str]) -> Path:
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "sessctl" / "config.toml"


def default_db_path(env: Mapping[str, str]) -> Path:
    return _xdg(env, "XDG_DATA_HOME", ".local/share") / "sessctl" / "sessions.db"


def _provider(name: str, raw: Mapping[str, Any], where: str) -> ProviderConfig:
    if "api_key" in raw:
        raise UsageError(
            f"{where}: [providers.{name}] must not hold the key itself; put it in an "
            "environment variable and name that with api_key_env"
        )
    unknown = set(raw) - _PROVIDER_KEYS
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} in [providers.{name}]")
    kind = raw.get("kind")
    if kind not in PROVIDER_KINDS:
        raise UsageError(
            f"{where}: [providers.{name}] needs kind = one of {', '.join(PROVIDER_KINDS)} (got {kind!r})"
        )
    if kind != "echo" and not raw.get("base_url"):
        raise UsageError(f"{where}: [providers.{name}] needs base_url")
    kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k not in {"options", "headers", "headers_env"}}
    for table in ("options", "headers", "headers_env"):
        if not isinstance(raw.get(table) or {}, dict):
            raise UsageError(f"{where}: [providers.{name}] {table} must be a table")
    headers = {str(k): str(v) for k, v in (raw.get("headers") or {}).items()}
    for header in headers:
        if _CREDENTIAL_HEADER.search(header):
            raise UsageError(
                f"{where}: [providers.{name}] headers must not hold credentials ({header!r}); put the "
                f"value in an environment variable and name it in headers_env = {{ {header!r} = \"VAR\" }}"
            )
    headers_env = {str(k): str(v) for k, v in (raw.get("headers_env") or {}).items()}
    if kind == "echo":
        kwargs.setdefault("model", "echo")
    for key in ("connect_timeout", "read_timeout", "backoff_base", "backoff_max"):
        if key in kwargs:
            kwargs[key] = float(kwargs[key])
    if "stream_usage" in kwargs and not isinstance(kwargs["stream_usage"], bool):
        raise UsageError(f"{where}: [providers.{name}] stream_usage must be true or false")
    for key in ("max_retries", "max_context_messages", "max_context_tokens"):
        if key in kwargs and kwargs[key] is not None:
            if not isinstance(kwargs[key], int) or kwargs[key] < 0:
                raise UsageError(f"{where}: [providers.{name}] {key} must be a whole number >= 0")
    return ProviderConfig(
        name=name,
        options=MappingProxyType(dict(raw.get("options") or {})),
        headers=MappingProxyType(headers),
        headers_env=MappingProxyType(headers_env),
        **kwargs,
    )


def load(
    *,
    env: Mapping[str, str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    db_path: str | os.PathLike[str] | None = None,
) -> Config:
    """Build the Config. `env` defaults to os.environ; tests pass their own."""
    env = MappingProxyType(dict(os.environ if env is None else env))
    explicit_config = config_path or env.get("SESSCTL_CONFIG")
    cpath = Path(explicit_config).expanduser() if explicit_config else default_config_path(env)
    raw: dict[str, Any] = {}
    exists = cpath.is_file()
    if exists:
        import tomllib  # only when there is a file: tomllib costs start-up time

        try:
            with cpath.open("rb") as fh:
                raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"cannot read config {cpath}: {exc}") from None
        except OSError as exc:
            raise UsageError(f"cannot read config {cpath}: {exc.strerror}") from None
    elif explicit_config:
        raise UsageError(f"config file {cpath} does not exist")

    where = str(cpath)
    providers_raw: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BUILTIN_PROVIDERS.items()}
    for name, table in (raw.get("providers") or {}).items():
        if not isinstance(table, dict):
            raise UsageError(f"{where}: [providers.{name}] must be a table")
        builtin = providers_raw.get(name, {})
        # Override a built-in field by field, unless the table makes it another kind.
        base = builtin if table.get("kind", builtin.get("kind")) == builtin.get("kind") else {}
        providers_raw[name] = {**base, **table}
    providers = {name: _provider(name, table, where) for name, table in providers_raw.items()}

    default_provider = raw.get("default_provider")
    if default_provider is not None and default_provider not in providers:
        raise UsageError(f"{where}: default_provider {default_provider!r} is not a configured provider")

    storage = raw.get("storage") or {}
    if not isinstance(storage, dict):
        raise UsageError(f"{where}: [storage] must be a table")
    if db_path:
        database = parse_database(db_path, "--db")
    elif env.get("SESSCTL_DB"):
        database = parse_database(env["SESSCTL_DB"], "SESSCTL_DB")
    elif storage.get("url") or raw.get("db"):
        key = "[storage] url" if storage.get("url") else "db"
        value = storage.get("url") or raw.get("db")
        if not isinstance(value, str):
            raise UsageError(f"{where}: {key} must be a string (a file path or a postgresql:// URL)")
        database = parse_database(value, f"{where}: {key}")
    else:
        database = _sqlite(default_db_path(env))

    if env.get("SESSCTL_KEY_FILE"):
        kpath = Path(env["SESSCTL_KEY_FILE"]).expanduser()
    elif raw.get("key_file"):
        kpath = Path(str(raw["key_file"])).expanduser()
    else:
        kpath = cpath.parent / "key"

    busy_ms = int(float(storage.get("busy_timeout", 10)) * 1000)

    return Config(
        config_path=cpath,
        config_exists=exists,
        database=database,
        key_file=kpath,
        default_provider=default_provider,
        providers=MappingProxyType(providers),
        sanitize=MappingProxyType(dict(raw.get("sanitize") or {})),
        retention=MappingProxyType(dict(raw.get("retention") or {})),
        busy_timeout_ms=busy_ms,
        env=env,
    )


def pick_default_provider(cfg: Config) -> tuple[str, str | None]:
    """The provider a new session gets, and a notice to show when it is the fallback."""
    if cfg.default_provider:
        return cfg.default_provider, None
    if cfg.env.get("OPENAI_API_KEY"):
        return "openai", None
    return "echo", (
        "no provider configured and OPENAI_API_KEY is not set: using the offline 'echo' provider "
        f"(configure one in {cfg.config_path})"
    )
