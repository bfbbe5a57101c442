"""Paths, environment and config.toml → one frozen Config. No import-time side effects.

Resolution order, most specific first:
  database  --db, SESSCTL_DB, `[storage] url` (or top-level `db`) in config.toml,
            $XDG_DATA_HOME/sessctl/sessions.db. A path is an SQLite file; a
            postgresql:// URL a PostgreSQL server (see Database).
  config    --config, SESSCTL_CONFIG, $XDG_CONFIG_HOME/sessctl/config.toml
  key file  SESSCTL_KEY_FILE, `key_file` in config.toml, `key` beside the config file
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
    "headers_env", "total_timeout", "max_reply_bytes",
}

# Defaults for the two limits on one call (README, "Providers").
# 10 minutes: long enough for a long answer from a slow reasoning model, short enough
# that a stuck endpoint (a byte every few seconds, keep-alives forever) frees a cron job.
DEFAULT_TOTAL_TIMEOUT = 600.0
# 32 MiB of response body: a streamed reply costs ~200 bytes of SSE framing per token,
# so this still holds a 100k-token answer, while a runaway or hostile endpoint cannot
# fill memory and the database.
DEFAULT_MAX_REPLY_BYTES = 32 * 1024 * 1024

# Seconds, > 0 (a zero or negative timeout would fail every call); backoffs may be 0.
_POSITIVE_SECONDS = ("connect_timeout", "read_timeout", "total_timeout")
_SECONDS = ("backoff_base", "backoff_max")

# Provider keys whose value is a string (anything else in config.toml is a usage error).
_PROVIDER_STRINGS = ("kind", "base_url", "api_key_env", "model", "anthropic_version")

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
    # The most one call may take, retries and their waits included, and the most
    # response body it may read (bytes, as received: JSON or the whole SSE stream).
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
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
    # Every environment variable any configured provider reads a secret from (keys,
    # headers_env), filled in by load(): a reply can quote any of the user's keys, so
    # each provider scrubs them all.
    secret_envs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Template:
    """`[templates.NAME]`: what a new session starts with (`create --template`, `send
    --template`, `chat --template`). Arguments given on the command line win over it."""

    name: str
    system: str | None = None
    provider: str | None = None
    model: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ttl: str | None = None  # as written ("30d"); validated
    max_context_messages: int | None = None
    max_context_tokens: int | None = None


_TEMPLATE_KEYS = {"system", "provider", "model", "options", "metadata", "ttl", "max_context_messages",
                  "max_context_tokens"}


def _template(name: str, raw: Any, where: str, providers: Mapping[str, Any]) -> Template:
    here = f"{where}: [templates.{name}]"
    if not isinstance(raw, dict):
        raise UsageError(f"{here} must be a table")
    unknown = sorted(set(raw) - _TEMPLATE_KEYS)
    if unknown:
        raise UsageError(f"{here}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_TEMPLATE_KEYS))})")
    for key in ("system", "provider", "model", "ttl"):
        if key in raw and not isinstance(raw[key], str):
            raise UsageError(f"{here} {key} must be a string")
    if "provider" in raw and raw["provider"] not in providers:
        raise UsageError(f"{here} provider {raw['provider']!r} is not a configured provider "
                         f"({', '.join(sorted(providers))})")
    for key in ("options", "metadata"):
        if not isinstance(raw.get(key, {}), dict):
            raise UsageError(f"{here} {key} must be a table")
    for key, value in (raw.get("metadata") or {}).items():
        if not isinstance(value, str) or not str(key).strip():
            raise UsageError(f"{here} metadata.{key} must be a string")
    if "ttl" in raw:
        from sessctl.timeutil import parse_duration

        if parse_duration(raw["ttl"], what=f"{here} ttl") <= 0:
            raise UsageError(f"{here} ttl must be longer than 0")
    for key in ("max_context_messages", "max_context_tokens"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UsageError(f"{here} {key} must be a whole number >= 1")
    return Template(
        name=name, system=raw.get("system"), provider=raw.get("provider"), model=raw.get("model"),
        options=MappingProxyType(dict(raw.get("options") or {})),
        metadata=MappingProxyType({str(k): v for k, v in (raw.get("metadata") or {}).items()}),
        ttl=raw.get("ttl"), max_context_messages=raw.get("max_context_messages"),
        max_context_tokens=raw.get("max_context_tokens"),
    )


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
# Every password seen in a database URL in this process, so the last-resort error
# printer (cli.run) can mask it in a driver message it did not expect.
_SECRETS: set[str] = set()


def mask_secrets(text: str) -> str:
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text


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
    _SECRETS.update(s for s in secrets if s)
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
    templates: Mapping[str, Template] = field(default_factory=lambda: MappingProxyType({}))

    def template(self, name: str) -> Template:
        """The template NAME; UsageError (exit 2) naming the known ones when there is none."""
        try:
            return self.templates[name]
        except KeyError:
            known = ", ".join(sorted(self.templates))
            where = f"templates in {self.config_path}: {known}" if known else \
                f"no templates in {self.config_path} (add a [templates.NAME] table)"
            raise UsageError(f"unknown template {name!r}; {where}") from None

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
    for key in _PROVIDER_STRINGS:
        if key in raw and not (isinstance(raw[key], str) and raw[key].strip() and "\x00" not in raw[key]):
            raise UsageError(f"{where}: [providers.{name}] {key} must be a non-empty string, not {_toml_kind(raw[key])}")
    kind = raw.get("kind")
    if kind not in PROVIDER_KINDS:
        raise UsageError(
            f"{where}: [providers.{name}] needs kind = one of {', '.join(PROVIDER_KINDS)} (got {kind!r})"
        )
    if kind != "echo" and not raw.get("base_url"):
        raise UsageError(f"{where}: [providers.{name}] needs base_url")
    if kind != "echo":
        _check_base_url(raw["base_url"], f"{where}: [providers.{name}] base_url")
    kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k not in {"options", "headers", "headers_env"}}
    for table in ("options", "headers", "headers_env"):
        if not isinstance(raw.get(table) or {}, dict):
            raise UsageError(f"{where}: [providers.{name}] {table} must be a table")
    for table in ("headers", "headers_env"):
        for k, v in (raw.get(table) or {}).items():
            if not isinstance(v, str):
                raise UsageError(f"{where}: [providers.{name}] {table}.{k} must be a string, not {_toml_kind(v)}")
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
    for key in (*_POSITIVE_SECONDS, *_SECONDS):
        if key in kwargs:
            kwargs[key] = _seconds(kwargs[key], f"{where}: [providers.{name}] {key}",
                                   positive=key in _POSITIVE_SECONDS)
    if "max_reply_bytes" in kwargs:
        value = kwargs["max_reply_bytes"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1024:
            raise UsageError(f"{where}: [providers.{name}] max_reply_bytes must be a whole number of bytes "
                             f">= 1024 (default {DEFAULT_MAX_REPLY_BYTES}, 32 MiB)")
    if "stream_usage" in kwargs and not isinstance(kwargs["stream_usage"], bool):
        raise UsageError(f"{where}: [providers.{name}] stream_usage must be true or false")
    for key, low in (("max_retries", 0), ("max_context_messages", 1), ("max_context_tokens", 1)):
        if key in kwargs and kwargs[key] is not None:
            value = kwargs[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 2**31 - 1:
                raise UsageError(f"{where}: [providers.{name}] {key} must be a whole number from {low} "
                                 f"to {2**31 - 1}, not {_toml_kind(value)}")
    return ProviderConfig(
        name=name,
        options=MappingProxyType(dict(raw.get("options") or {})),
        headers=MappingProxyType(headers),
        headers_env=MappingProxyType(headers_env),
        **kwargs,
    )


def _seconds(value: Any, what: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (positive and value == 0):
        raise UsageError(f"{what} must be a number of seconds {'> 0' if positive else '>= 0'} (got {value!r})")
    return float(value)


def _check_base_url(url: Any, what: str) -> None:
    """A base_url that can work, without credentials in it: user:password@ would be shown
    by `providers list` and in every error line naming the endpoint. The message never
    repeats the URL, which may hold the password."""
    from urllib.parse import urlsplit

    if not isinstance(url, str):
        raise UsageError(f"{what} must be a string")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise UsageError(f"{what} is not a valid URL (check the host and the port, 1-65535)") from None
    if "@" in parts.netloc:
        raise UsageError(f"{what} must not hold a user name or password (user:password@...); put the "
                         "credential in an environment variable and name it with api_key_env or headers_env")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{what} must be an http:// or https:// URL with a host")


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
    for key in ("providers", "storage", "sanitize", "retention", "templates"):
        if key in raw and not isinstance(raw[key], dict):
            raise UsageError(f"{where}: {key} must be a table ([{key}] or [{key}.NAME]), not {_toml_kind(raw[key])}")
    for key in ("default_provider", "db", "key_file"):
        if key in raw and not isinstance(raw[key], str):
            raise UsageError(f"{where}: {key} must be a string, not {_toml_kind(raw[key])}")
    providers_raw: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BUILTIN_PROVIDERS.items()}
    for name, table in (raw.get("providers") or {}).items():
        if not isinstance(table, dict):
            raise UsageError(f"{where}: [providers.{name}] must be a table")
        builtin = providers_raw.get(name, {})
        # Override a built-in field by field, unless the table makes it another kind.
        base = builtin if table.get("kind", builtin.get("kind")) == builtin.get("kind") else {}
        providers_raw[name] = {**base, **table}
    providers = {name: _provider(name, table, where) for name, table in providers_raw.items()}
    secret_envs = tuple(sorted({var for p in providers.values() if p.kind != "echo"
                                for var in (p.api_key_env, *p.headers_env.values()) if var}))
    providers = {name: replace(p, secret_envs=secret_envs) for name, p in providers.items()}

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

    busy = storage.get("busy_timeout", 10)
    if isinstance(busy, bool) or not isinstance(busy, (int, float)) or not 0 <= busy <= 86400:
        raise UsageError(f"{where}: [storage] busy_timeout must be a number of seconds from 0 to 86400, "
                         f"not {_toml_kind(busy)}")
    unknown = sorted(set(storage) - {"busy_timeout", "url"})
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)} in [storage] (known: busy_timeout, url)")
    busy_ms = int(busy * 1000)

    templates_raw = raw.get("templates") or {}
    if not isinstance(templates_raw, dict):
        raise UsageError(f"{where}: [templates] must hold tables such as [templates.support]")
    templates = {str(name): _template(str(name), table, where, providers) for name, table in templates_raw.items()}

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
        templates=MappingProxyType(templates),
    )


def _toml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else "a string"
    return {dict: "a table", list: "an array"}.get(type(value), type(value).__name__)


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
