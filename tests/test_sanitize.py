"""The sanitizer: labelled corpus, idempotence, overlaps, counts and configuration.

No timing here: speed and linearity are measured by bench/bench_sanitize.py.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from sessctl.errors import UsageError
from sessctl.sanitize import RuleInfo, Sanitizer

CORPUS = Path(__file__).parent / "sanitize_corpus"
OPT_IN = ("phone", "ip_address")
ALL = Sanitizer.from_config({"enable": ["phone"]})
# ip_address is tried apart: the corpus' logs and look-alikes hold addresses on purpose.
EVERY = Sanitizer.from_config({"enable": list(OPT_IN)})
DEFAULT = Sanitizer.from_config({})


def for_rule(rule: str | None) -> Sanitizer:
    return EVERY if rule == "ip_address" else ALL


@cache
def corpus(name: str) -> tuple[dict[str, Any], ...]:
    with (CORPUS / name).open(encoding="utf-8") as fh:
        return tuple(json.loads(line) for line in fh)


def positives() -> tuple[dict[str, Any], ...]:
    return corpus("positives.jsonl")


def negatives() -> tuple[dict[str, Any], ...]:
    return corpus("negatives.jsonl")


def expected(p: dict[str, Any]) -> str:
    out = p["text"].replace(p["secret"], f"[REDACTED:{p['rule']}]")
    for secret, rule in p.get("also", []):
        out = out.replace(secret, f"[REDACTED:{rule}]")
    return out


# ------------------------------------------------------------------------ corpus

def test_corpus_is_big_enough_and_covers_every_builtin_rule() -> None:
    assert len(positives()) >= 1000
    assert len(negatives()) >= 600
    per_rule = Counter(p["rule"] for p in positives())
    builtin = [r.name for r in DEFAULT.rules() if r.builtin]
    thin = {name: per_rule[name] for name in builtin if per_rule[name] < 5}
    assert not thin, f"rules with fewer than 5 positives: {thin}"
    assert set(per_rule) <= set(builtin)
    assert len({p["id"] for p in positives()}) == len(positives())
    assert len({n["id"] for n in negatives()}) == len(negatives())


def test_every_builtin_rule_has_a_look_alike_negative() -> None:
    near = Counter(n["near"] for n in negatives() if "near" in n)
    builtin = {r.name for r in DEFAULT.rules() if r.builtin}
    assert not builtin - set(near), f"rules without a look-alike: {sorted(builtin - set(near))}"
    assert set(near) <= builtin


@pytest.mark.parametrize("p", positives(), ids=lambda p: p["id"])
def test_positive_is_redacted_exactly(p: dict[str, Any]) -> None:
    clean, counts = for_rule(p["rule"]).sanitize(p["text"])
    assert p["secret"] not in clean
    # Exactly the secret's span, labelled with its rule, and nothing else touched.
    assert clean == expected(p)
    assert counts[p["rule"]] >= 1


@pytest.mark.parametrize("n", negatives(), ids=lambda n: n["id"])
def test_negative_is_unchanged(n: dict[str, Any]) -> None:
    for sanitizer in (DEFAULT, for_rule(n.get("near"))):
        clean, counts = sanitizer.sanitize(n["text"])
        assert (clean, counts) == (n["text"], {})


def test_negatives_together_are_unchanged() -> None:
    # Context reaches across lines (an INI [section] covers the key = value lines after
    # it): one long text of every negative must not let one snippet change how a distant
    # one is read. A line of prose between snippets ends such context, as it would in a
    # real document; without it, adjacent snippets can legitimately form a new context.
    text = "\n\nNext snippet.\n\n".join(n["text"] for n in negatives())
    assert ALL.sanitize(text) == (text, {})


@pytest.mark.parametrize("rule", OPT_IN)
def test_opt_in_rules_are_off_by_default(rule: str) -> None:
    cases = [p for p in positives() if p["rule"] == rule]
    assert cases
    for p in cases:
        assert DEFAULT.sanitize(p["text"]) == (p["text"], {})
        assert EVERY.sanitize(p["text"])[1].get(rule, 0) >= 1


# ------------------------------------------------------------------ idempotence

def test_sanitizing_twice_changes_nothing() -> None:
    texts = [p["text"] for p in positives()] + [n["text"] for n in negatives()]
    for text in texts + ["\n\n".join(texts)]:
        once, _ = EVERY.sanitize(text)
        assert EVERY.sanitize(once) == (once, {})


def test_markers_are_never_matched_even_by_custom_rules() -> None:
    s = Sanitizer.from_config({"rules": {"shout": "REDACTED", "brackets": r"\[[a-z_:A-Z]+\]"}})
    text = "see [REDACTED:email] and [REDACTED:openai_key], then [REDACTED:credit_card]."
    assert s.sanitize(text) == (text, {})
    assert s.sanitize("REDACTED alone")[0] == "[REDACTED:shout] alone"


# --------------------------------------------------------------------- overlaps

def test_overlapping_matches_merge_into_one_redaction_named_by_the_specific_rule() -> None:
    key = "sk-proj-" + "Ab1Cd2Ef3Gh4" * 4
    clean, counts = DEFAULT.sanitize(f"Authorization: Bearer {key}")  # bearer_token and openai_key
    assert (clean, counts) == ("Authorization: Bearer [REDACTED:openai_key]", {"openai_key": 1})
    token = "ghp_" + "Ab1Cd2Ef3G" * 3 + "Ab1Cd2"
    clean, counts = DEFAULT.sanitize(f"https://x:{token}@github.com/o/r.git")  # url_password too
    assert (clean, counts) == ("https://x:[REDACTED:github_token]@github.com/o/r.git", {"github_token": 1})


def test_overlapping_custom_rules_merge_and_take_the_first_rule_name() -> None:
    s = Sanitizer.from_config({"rules": {"alpha": "abc-[0-9]{4}", "beta": "[0-9]{4}-xyz"}})
    assert s.sanitize("id abc-1234-xyz end") == ("id [REDACTED:alpha] end", {"alpha": 1})


def test_adjacent_secrets_stay_separate_redactions() -> None:
    clean, counts = DEFAULT.sanitize("jane@example.com bob@example.org")
    assert (clean, counts) == ("[REDACTED:email] [REDACTED:email]", {"email": 2})


# ----------------------------------------------------------------------- counts

def test_counts_per_rule_and_empty_when_clean() -> None:
    text = ("mail jane@example.com and bob@example.org, card 4539 1488 0343 6467, "
            "IBAN GB82 WEST 1234 5698 7654 32")
    clean, counts = DEFAULT.sanitize(text)
    assert counts == {"email": 2, "credit_card": 1, "iban": 1}
    assert clean.count("[REDACTED:") == 4
    assert DEFAULT.sanitize("nothing to see here, version 1.2.3") == ("nothing to see here, version 1.2.3", {})
    assert DEFAULT.sanitize("") == ("", {})


def test_offsets_survive_non_ascii_text() -> None:
    key = "sk-proj-" + "Zy9Xw8Vu7Ts6" * 4
    text = f"clé ☕ 😀 Ünïcödé — {key} — 東京 josé@example.es 日本 password: 'pässwört1'"
    clean, counts = DEFAULT.sanitize(text)
    assert clean == ("clé ☕ 😀 Ünïcödé — [REDACTED:openai_key] — 東京 [REDACTED:email] 日本 "
                     "password: '[REDACTED:password]'")
    assert counts == {"openai_key": 1, "email": 1, "password": 1}


def test_url_password_keeps_the_rest_of_the_url_readable() -> None:
    clean, _ = DEFAULT.sanitize("postgres://app:s3cr3t-Pw@db.example.com:5432/app?sslmode=require")
    assert clean == "postgres://app:[REDACTED:url_password]@db.example.com:5432/app?sslmode=require"


def test_checksums_decide_between_look_alikes() -> None:
    assert DEFAULT.sanitize("4539 1488 0343 6467")[1] == {"credit_card": 1}
    assert DEFAULT.sanitize("4539 1488 0343 6468")[1] == {}  # Luhn fails
    assert DEFAULT.sanitize("1111 1111 1111 1117")[1] == {}  # Luhn passes, no issuer starts with 1
    assert DEFAULT.sanitize("GB82 WEST 1234 5698 7654 32")[1] == {"iban": 1}
    assert DEFAULT.sanitize("GB83 WEST 1234 5698 7654 32")[1] == {}  # mod-97 fails
    assert DEFAULT.sanitize("SSN 536-22-8417")[1] == {"us_ssn": 1}
    for invalid in ("000-22-8417", "666-22-8417", "936-22-8417", "536-00-8417", "536-22-0000"):
        assert DEFAULT.sanitize(f"SSN {invalid}")[1] == {}, invalid


def test_values_are_not_kept_anywhere() -> None:
    s = Sanitizer.from_config({"enable": ["phone"]})
    for p in positives():
        s.sanitize(p["text"])
    state = repr(vars(s))
    assert not [p["id"] for p in positives() if p["secret"] in state]


# ----------------------------------------------------------------------- config

def test_config_defaults() -> None:
    for table in (None, {}, MappingProxyType({})):
        s = Sanitizer.from_config(table)
        assert s.outbound is False
        assert {r.name for r in s.rules() if not r.enabled} == set(OPT_IN)
    assert Sanitizer.from_config({"outbound": True}).outbound is True


def test_disable_turns_a_rule_off_and_leaves_the_others() -> None:
    s = Sanitizer.from_config({"disable": ["email"]})
    clean, counts = s.sanitize("jane@example.com paid with 4539 1488 0343 6467")
    assert (clean, counts) == ("jane@example.com paid with [REDACTED:credit_card]", {"credit_card": 1})
    assert not next(r for r in s.rules() if r.name == "email").enabled


def test_enable_turns_an_opt_in_rule_on() -> None:
    s = Sanitizer.from_config({"enable": ["phone"]})
    assert s.sanitize("call +44 20 7946 0958") == ("call [REDACTED:phone]", {"phone": 1})
    assert DEFAULT.sanitize("call +44 20 7946 0958") == ("call +44 20 7946 0958", {})


def test_allow_keeps_literal_values_and_values_inside_them() -> None:
    s = Sanitizer.from_config({"allow": ["ops@example.com", "postgres://app:devpass1@localhost"]})
    text = "ops@example.com, jane@example.com, postgres://app:devpass1@localhost/db"
    assert s.sanitize(text) == ("ops@example.com, [REDACTED:email], postgres://app:devpass1@localhost/db",
                                {"email": 1})


def test_allow_patterns_keep_matches_they_fully_match() -> None:
    s = Sanitizer.from_config({"allow_patterns": [r"[a-z.]+@example\.com"]})
    assert s.sanitize("jane@example.com and bob@example.org") == (
        "jane@example.com and [REDACTED:email]", {"email": 1})


def test_custom_rules_redact_whole_match_or_the_secret_group() -> None:
    s = Sanitizer.from_config({"rules": {
        "ticket_key": "tkt_[a-z0-9]{12}",
        "db_dsn": r"dsn=(?P<secret>[^\s;]+)",
    }})
    clean, counts = s.sanitize("use tkt_abcdef123456 with dsn=host:db;user and jane@example.com")
    assert clean == "use [REDACTED:ticket_key] with dsn=[REDACTED:db_dsn];user and [REDACTED:email]"
    assert counts == {"ticket_key": 1, "db_dsn": 1, "email": 1}
    info = {r.name: r for r in s.rules()}
    assert info["ticket_key"] == RuleInfo("ticket_key", "custom rule: tkt_[a-z0-9]{12}", None, True, False)
    off = Sanitizer.from_config({"rules": {"ticket_key": "tkt_[a-z0-9]{12}"}, "disable": ["ticket_key"]})
    assert off.sanitize("tkt_abcdef123456") == ("tkt_abcdef123456", {})


@pytest.mark.parametrize(("table", "names"), [
    ({"colour": "blue"}, ["colour"]),
    ({"outbound": "yes"}, ["outbound"]),
    ({"disable": "email"}, ["disable"]),
    ({"disable": ["emial"]}, ["disable", "emial"]),
    ({"enable": ["telephone"]}, ["enable", "telephone"]),
    ({"enable": ["phone"], "disable": ["phone"]}, ["enable", "disable", "phone"]),
    ({"allow": [""]}, ["allow"]),
    ({"allow": "x"}, ["allow"]),
    ({"allow_patterns": ["(unclosed"]}, ["allow_patterns[0]", "(unclosed"]),
    ({"allow_patterns": ["ok", "a*"]}, ["allow_patterns[1]", "empty"]),
    ({"rules": "x"}, ["rules"]),
    ({"rules": {"bad": "[z-a]"}}, ["[sanitize.rules] bad"]),
    ({"rules": {"empty": "x?"}}, ["[sanitize.rules] empty", "empty"]),
    ({"rules": {"email": "x+"}}, ["[sanitize.rules] email", "built-in"]),
    ({"rules": {"Bad-Name": "x+"}}, ["Bad-Name"]),
    ({"rules": {"num": 42}}, ["[sanitize.rules] num"]),
])
def test_bad_config_is_a_one_line_usage_error_naming_the_key(table: dict[str, Any], names: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        Sanitizer.from_config(table)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message


# ------------------------------------------------------------------------ rules

def test_rule_list_names_describes_and_exemplifies_every_rule() -> None:
    infos = EVERY.rules()
    names = [r.name for r in infos]
    assert len(names) == len(set(names))
    for r in infos:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", r.name)
        assert r.description and "\n" not in r.description
        assert r.builtin and r.enabled and r.example
    expected_rules = {
        "openai_key", "anthropic_key", "google_api_key", "huggingface_token", "aws_access_key",
        "aws_secret_key", "github_token", "gitlab_token", "slack_token", "slack_webhook", "stripe_key",
        "twilio_key", "sendgrid_key", "npm_token", "pypi_token", "jwt", "pem_private_key", "bearer_token",
        "url_password", "password", "credit_card", "email", "iban", "us_ssn", "phone",
        # The families of issue 14, one at least per group.
        "azure_storage_key", "azure_sas_token", "azure_ad_client_secret", "ibm_cloud_key", "ibm_cos_hmac",
        "alibaba_key", "digitalocean_token", "heroku_key", "flyio_token", "vercel_token", "netlify_token",
        "cloudflare_key", "bitbucket_token", "atlassian_token", "circleci_token", "travis_token",
        "buildkite_token", "snyk_token", "sonarqube_token", "nuget_key", "rubygems_key", "dockerhub_token",
        "jfrog_token", "discord_token", "telegram_bot_token", "mailgun_key", "mailchimp_key", "messagebird_key",
        "square_token", "paypal_braintree_key", "shopify_token", "etsy_key", "easypost_key", "datadog_key",
        "newrelic_key", "sentry_token", "sumologic_key", "grafana_token", "databricks_token", "planetscale_token",
        "cohere_key", "mistral_key", "okta_token", "auth0_secret", "onepassword_key", "vault_token",
        "terraform_token", "kubernetes_secret", "openshift_token", "secret_assignment", "ip_address",
    }
    assert expected_rules <= set(names)
    assert len(names) >= 130


@pytest.mark.parametrize("info", EVERY.rules(), ids=lambda r: r.name)
def test_each_example_is_redacted_by_its_own_rule_alone(info: RuleInfo) -> None:
    others = [r.name for r in EVERY.rules() if r.name != info.name]
    table: dict[str, Any] = {"disable": others}
    if info.name in OPT_IN:
        table["enable"] = [info.name]
    alone = Sanitizer.from_config(table)
    clean, counts = alone.sanitize(f"example: {info.example} (fake)")
    assert counts == {info.name: 1}
    assert f"[REDACTED:{info.name}]" in clean


GLUED = [
    # A redaction ends the token or digit run that hid its neighbour: the neighbour
    # must be found in the same call, or sanitizing twice would differ from once.
    "4539 1488 0343 6467-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",
    "SK534bc4d6cda02b08b4515c476d3a7d82-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",
    "BE68 5390 0754 7034 4539 1488 0343 6467",
    "francois71@example.nethttps://hooks.slack.com/services/TC3D3CGLO/BKWTLXYSTF5/iyno5xVZVA8HzYzHly1JYJk",
]


@pytest.mark.parametrize("text", GLUED)
def test_glued_secrets_are_all_found_in_one_call(text: str) -> None:
    s = Sanitizer.from_config({"enable": ["phone"]})
    once, counts = s.sanitize(text)
    assert s.sanitize(once) == (once, {})
    assert sum(counts.values()) == 2, (once, counts)


# ------------------------------------------------------ documented test numbers

@pytest.mark.parametrize("number", ["4242 4242 4242 4242", "4111-1111-1111-1111", "5555555555554444",
                                    "3782 822463 10005", "6011 1111 1111 1117", "4000 0566 5566 5556"])
def test_documented_test_cards_are_left_alone(number: str) -> None:
    # Pasted from a payment processor's docs while wiring a checkout form: no one's card.
    text = f"Use the test card {number} with any future expiry."
    assert DEFAULT.sanitize(text) == (text, {})


def test_documented_test_cards_would_be_cards_but_for_the_list() -> None:
    # The list must hold numbers the card rule would otherwise redact: Luhn-valid, with
    # a known issuer and length. Otherwise it silently excludes nothing.
    from sessctl import sanitize_rules

    assert len(sanitize_rules.TEST_CARDS) >= 40
    for number in sanitize_rules.TEST_CARDS:
        assert sanitize_rules._luhn(number) and sanitize_rules._issuer_ok(number), number


# ------------------------------------------------------------ formats by key

KEYED_ONLY = sorted({p["rule"] for p in positives()
                     if p["rule"] in {"cohere_key", "mistral_key", "vercel_token", "travis_token", "snyk_token",
                                      "jenkins_token", "etsy_key", "datadog_key", "sumologic_key", "auth0_secret",
                                      "messagebird_key", "postmark_token", "ibm_cloud_key", "ibm_cos_hmac",
                                      "azure_storage_key", "aws_session_token", "okta_token"}})


@pytest.mark.parametrize("rule", KEYED_ONLY)
def test_a_key_context_format_needs_its_key(rule: str) -> None:
    # A 32-character hex string is a Datadog key after DD_API_KEY= and an ETag after
    # "etag":. The same values under keys that name neither the provider nor a secret
    # must come back untouched.
    values = [p["secret"] for p in positives() if p["rule"] == rule and "\n" not in p["secret"]]
    assert values
    for value in values:
        for text in (f"request_id={value}", f'{{"etag": "{value}", "size": 12}}', f"checksum: {value}\n"):
            assert DEFAULT.sanitize(text) == (text, {}), text


# --------------------------------------------------------------- properties

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TEXTS = [p["text"] for p in positives()] + [n["text"] for n in negatives()]
_snippet = st.sampled_from(_TEXTS).flatmap(
    lambda t: st.tuples(st.integers(0, len(t)), st.integers(0, len(t))).map(lambda ij: t[min(ij):max(ij)]))
# What snippets get glued with: nothing, blanks, and every separator some rule treats
# specially (assignments, token and base64 characters, quotes, digits).
_glue = st.sampled_from(["", " ", "\n", "\t", "=", ":", "-", "_", ".", "/", "+", "@", '"', "'", "=\"", ": ",
                         "--", "~", "$", "0", "1 ", "A", "[", "]"])
# Derandomized and without an example database: the same examples on every run, and
# no .hypothesis directory in the work tree.
_PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                     database=None)


@_PROPERTY
@given(st.lists(st.tuples(_snippet, _glue), min_size=1, max_size=6))
def test_sanitizing_twice_changes_nothing_however_pieces_are_glued(parts: list[tuple[str, str]]) -> None:
    # Markers hide what a rule read across; a redaction may also expose a neighbour it
    # used to swallow. Whatever the pieces, a second pass finds nothing new.
    text = "".join(a + b for a, b in parts)
    once, _ = EVERY.sanitize(text)
    assert EVERY.sanitize(once) == (once, {})


@_PROPERTY
@given(st.sampled_from(positives()), st.lists(_snippet, max_size=3), st.lists(_snippet, max_size=3))
def test_a_secret_is_redacted_whatever_paragraphs_surround_it(p: dict[str, Any], before: list[str],
                                                              after: list[str]) -> None:
    text = "\n\n".join([*before, p["text"], *after])
    clean, _ = for_rule(p["rule"]).sanitize(text)
    assert p["secret"] not in clean


@_PROPERTY
@given(st.sampled_from(positives()),
       st.text(alphabet=st.characters(min_codepoint=0x80, blacklist_categories=("Cs",)), max_size=40))
def test_offsets_hold_after_any_non_ascii_text(p: dict[str, Any], prefix: str) -> None:
    # The byte views replace each non-ASCII code point with one "?", so positions in
    # them are positions in the str: a marker lands exactly where the secret was.
    clean, _ = for_rule(p["rule"]).sanitize(prefix + "\n\n" + p["text"])
    assert clean == prefix + "\n\n" + expected(p)
