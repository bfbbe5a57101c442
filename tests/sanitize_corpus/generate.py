"""Writes positives.jsonl and negatives.jsonl: the labelled corpus for the sanitizer.

    python tests/sanitize_corpus/generate.py

Deterministic (fixed seed), so the committed files only change when this script does.
Every secret is FAKE: random strings from a seeded generator, payment card numbers
made up to pass Luhn (the processors' documented test numbers are look-alikes, left
alone), IBANs on made-up accounts, fictional phone ranges, RFC 2606 example domains.

positives.jsonl: {"id", "rule", "secret", "text", "context"}: `secret` occurs exactly
once in `text`, and sanitizing `text` must give text.replace(secret, "[REDACTED:rule]").
negatives.jsonl: {"id", "kind", "text"} and, for a look-alike of one rule's format,
"near": that rule: texts that must come back unchanged. Every built-in rule has at
least five positives and one look-alike.
Numeric look-alikes fail the checksum their shape would need (not_luhn, bad_iban): a
number with a card issuer's prefix and length that passes Luhn is a card number as far
as any detector can tell, so it has no place among the negatives.
"""

from __future__ import annotations

import base64
import json
import os
import random
import string
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
R = random.Random(20261121)

B62 = string.ascii_letters + string.digits
B64URL = B62 + "-_"
B64 = B62 + "+/"
HEX = "0123456789abcdef"
UP36 = string.ascii_uppercase + string.digits


def rnd(alphabet: str, n: int) -> str:
    return "".join(R.choice(alphabet) for _ in range(n))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(R.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        n = body + check
        total = 0
        for i, ch in enumerate(reversed(n)):
            d = int(ch)
            if i % 2:
                d = d * 2 - 9 if d > 4 else d * 2
            total += d
        if total % 10 == 0:
            return n
    raise AssertionError


def luhn_ok(n: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(n)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_make(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(digits) % 97
    return f"{country}{check:02d}{bban}"


def group4(s: str, sep: str = " ") -> str:
    return sep.join(s[i:i + 4] for i in range(0, len(s), 4))


# ---------------------------------------------------------------- fake secrets

def openai() -> str:
    kind = R.choice(["legacy", "proj", "proj", "svcacct", "admin", "hex"])
    if kind == "legacy":
        return "sk-" + rnd(B62, 20) + "T3BlbkFJ" + rnd(B62, 20)
    if kind == "hex":
        return "sk-" + rnd(HEX, 32)
    return f"sk-{kind}-" + rnd(B64URL, R.choice([48, 64, 120, 156]))


def anthropic() -> str:
    return "sk-ant-" + R.choice(["api03", "admin01"]) + "-" + rnd(B64URL, 93) + "AA"


def openrouter() -> str:
    return "sk-or-v1-" + rnd(HEX, 64)


def google() -> str:
    return "AIza" + rnd(B64URL, 35)


def huggingface() -> str:
    return "hf_" + rnd(string.ascii_letters, 34)


def groq() -> str:
    return "gsk_" + rnd(B62, 52)


def xai() -> str:
    return "xai-" + rnd(B62, 80)


def replicate() -> str:
    return "r8_" + rnd(B62, 37)


def perplexity() -> str:
    return "pplx-" + rnd(B62, 48)


def aws_access() -> str:
    return R.choice(["AKIA", "AKIA", "ASIA", "ABIA", "ACCA"]) + rnd("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)


def aws_secret() -> str:
    while True:
        s = rnd(B64, 40)
        if any(c.isupper() for c in s) and any(c.islower() for c in s):
            return s


def github() -> str:
    if R.random() < 0.25:
        return "github_pat_" + rnd(B62, 22) + "_" + rnd(B62, 59)
    return "gh" + R.choice("pousr") + "_" + rnd(B62, 36)


def gitlab() -> str:
    return R.choice(["glpat-", "glpat-", "gldt-", "glrt-", "glptt-"]) + rnd(B64URL, 20)


def slack_token() -> str:
    kind = R.choice(["xoxb", "xoxp", "xapp", "xoxe"])
    if kind == "xoxb":
        return f"xoxb-{rnd(string.digits, 12)}-{rnd(string.digits, 13)}-{rnd(B62, 24)}"
    if kind == "xoxp":
        return f"xoxp-{rnd(string.digits, 12)}-{rnd(string.digits, 12)}-{rnd(string.digits, 13)}-{rnd(HEX, 32)}"
    if kind == "xapp":
        return f"xapp-1-A{rnd(UP36, 10)}-{rnd(string.digits, 13)}-{rnd(HEX, 64)}"
    return f"xoxe-1-{rnd(B62, 140)}"


def slack_webhook() -> str:
    return f"https://hooks.slack.com/services/T{rnd(UP36, 8)}/B{rnd(UP36, 10)}/{rnd(B62, 24)}"


def stripe() -> str:
    kind = R.choice(["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"])
    return kind + rnd(B62, R.choice([24, 32, 99]))


def twilio_sid() -> str:
    return "SK" + rnd(HEX, 32)


def sendgrid() -> str:
    return "SG." + rnd(B64URL, 22) + "." + rnd(B64URL, 43)


def npm() -> str:
    return "npm_" + rnd(B62, 36)


def pypi() -> str:
    return R.choice(["pypi-AgEIcHlwaS5vcmc", "pypi-AgENdGVzdC5weXBpLm9yZw"]) + rnd(B64URL, R.choice([70, 120, 160]))


def jwt() -> str:
    header = R.choice([
        {"alg": "HS256", "typ": "JWT"}, {"alg": "RS256", "typ": "JWT", "kid": rnd(HEX, 16)},
        {"alg": "ES256"}, {"typ": "JWT", "alg": "HS512"},
    ])
    payload = {"sub": rnd(string.digits, 10), "name": R.choice(["Fake User", "Test Person", "Jane Example"]),
               "iat": 1700000000 + R.randrange(10**7), "exp": 1800000000 + R.randrange(10**7)}
    sig = rnd(B64URL, R.choice([43, 86, 342]))
    return f"{b64url(json.dumps(header, separators=(',', ':')).encode())}.{b64url(json.dumps(payload).encode())}.{sig}"


def pem(kind: str | None = None, escaped: bool = False, truncated: bool = False) -> str:
    kind = kind or R.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY",
                             "ENCRYPTED PRIVATE KEY", "PGP PRIVATE KEY BLOCK"])
    lead = {"OPENSSH PRIVATE KEY": "b3BlbnNzaC1rZXktdjEAAAAA", "EC PRIVATE KEY": "MHcCAQEEI"}.get(kind, "MIIEpAIBAAKCAQEA")
    body = lead + rnd(B64, R.choice([300, 600, 1600]))
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    nl = "\\n" if escaped else "\n"
    block = f"-----BEGIN {kind}-----{nl}" + nl.join(lines)
    if truncated:
        return block
    return block + f"{nl}-----END {kind}-----"


def bearer() -> str:
    return R.choice([rnd(B62, 32), rnd(B64URL, 40), "Ab" + rnd(B64URL, 60), rnd(HEX, 40)])


def basic() -> str:
    user = R.choice(["admin", "deploy", "ci-bot", "svc_reporting", "alice"])
    pw = rnd(B62 + "!#%", R.choice([10, 16, 24]))
    return base64.b64encode(f"{user}:{pw}".encode()).decode()


def url_pw() -> str:
    return rnd(B62, R.choice([8, 12, 20])) + R.choice(["", "!", "-x", "_9", "%40q", "~z"])


def password() -> str:
    # Bare values starting with $ % { < : ? @ ! & * = # read as references or syntax
    # (${VAR}, %s, :param, !vault, &anchor), so a generated password starts alphanumeric.
    return R.choice(B62) + R.choice([
        rnd(B62, 12), rnd(B62 + "!@#$%^*-_", 16), "Tr0ub4dor&" + rnd(string.digits, 2),
        "correct-horse-" + rnd(string.ascii_lowercase, 5) + "-" + rnd(string.digits, 3),
        rnd(string.ascii_lowercase, 6) + rnd(string.digits, 2),
    ])


def query_password() -> str:
    return R.choice(B62) + rnd(B62 + "-._~", 14)  # as it appears in a query string: unreserved


TEST_CARDS = [
    "4111111111111111", "4242424242424242", "4012888888881881", "4000056655665556", "4222222222222",
    "5555555555554444", "5105105105105100", "5200828282828210", "2223003122003222",
    "378282246310005", "371449635398431", "6011111111111117", "6011000990139424",
    "3056930009020004", "36227206271667", "3566002020360505", "6200000000000005",
]


def card() -> str:
    while True:
        prefix, length = R.choice([("4539", 16), ("4716", 16), ("4929", 13), ("5425", 16), ("2221", 16),
                                   ("3714", 15), ("3787", 15), ("6011", 16), ("3530", 16), ("4000", 19)])
        n = luhn_complete(prefix, length)
        if n not in TEST_CARDS:
            return n


def card_formatted() -> str:
    n = card()
    style = R.choice(["plain", "space", "dash"])
    if style == "plain" and len(n) <= 16:  # 17-19 unseparated digits read as 64-bit ints
        return n
    if style == "plain":
        style = "space"
    sep = " " if style == "space" else "-"
    if len(n) == 15:
        return sep.join([n[:4], n[4:10], n[10:]])
    if len(n) == 14:
        return sep.join([n[:4], n[4:10], n[10:]])
    return group4(n, sep)


IBAN_EXAMPLES = [
    "DE89370400440532013000", "GB82WEST12345698765432", "FR1420041010050500013M02606",
    "NL91ABNA0417164300", "BE68539007547034", "CH9300762011623852957", "ES9121000418450200051332",
    "IT60X0542811101000000123456", "AT611904300234573201", "NO9386011117947", "PL61109010140000071219812874",
    "SE4550000000058398257466", "DK5000400440116243", "FI2112345600000785", "IE29AIBK93115212345678",
    "PT50000201231234567890154", "LU280019400644750000", "MT84MALT011000012345MTLCAST001S",
]


def iban() -> str:
    if R.random() < 0.5:
        return R.choice(IBAN_EXAMPLES)
    country, n = R.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14), ("ES", 20), ("IT", 23)])
    if country == "GB":
        bban = R.choice(["NWBK", "WEST", "BARC"]) + rnd(string.digits, 14)
    elif country == "NL":
        bban = R.choice(["ABNA", "RABO", "INGB"]) + rnd(string.digits, 10)
    elif country == "IT":
        bban = R.choice(string.ascii_uppercase) + rnd(string.digits, 22)
    else:
        bban = rnd(string.digits, n)
    return iban_make(country, bban)


def iban_formatted() -> str:
    i = iban()
    return group4(i) if R.random() < 0.5 else i


def ssn() -> str:
    while True:
        area = R.randrange(1, 900)
        if area != 666:
            return f"{area:03d}-{R.randrange(1, 100):02d}-{R.randrange(1, 10000):04d}"


FIRST = ["jane", "john", "alex", "maria", "li", "oluwaseun", "francois", "anna-lena", "o.brien", "sam"]
LAST = ["doe", "roe", "smith", "garcia", "nguyen", "okafor", "muller", "kowalski", "tanaka", "silva"]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com", "corp.example.co.uk",
           "example.io", "eu.example.dev", "test.example", "sub.example.invalid"]


def email() -> str:
    f, l = R.choice(FIRST), R.choice(LAST)
    local = R.choice([f"{f}.{l}", f"{f}_{l}", f"{f[0]}{l}", f"{f}+{R.choice(['news', 'billing', 'x1'])}", f"{f}{R.randrange(100)}"])
    return f"{local}@{R.choice(DOMAINS)}"


def phone() -> str:
    return R.choice([
        f"+1 202 555 01{R.randrange(100):02d}", f"+1 (415) 555-01{R.randrange(100):02d}",
        f"+1-312-555-01{R.randrange(100):02d}", f"+44 20 7946 0{R.randrange(1000):03d}",
        f"+44 7700 900{R.randrange(1000):03d}", f"+61 491 570 {R.randrange(100, 160)}",
        f"+33 1 99 00 {R.randrange(10, 99)} {R.randrange(10, 99)}", f"+49 30 1234{R.randrange(1000):03d}",
        f"+81 3-1234-{R.randrange(10000):04d}", f"+12025550{R.randrange(100, 200)}",
    ])


# ------------------------------------------------------- provider formats (issue 14)

LOWER36 = string.ascii_lowercase + string.digits
B32L = "abcdefghijklmnopqrstuvwxyz234567"
BECH32 = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def with_run(make: Callable[[], str]) -> str:
    """A value the token pass can see: somewhere a run of 16 letters, digits, - or _.
    (Values split by "+", "/", "." or "~" every few characters are missed; see the
    Sanitizer section of bench/README.md.)"""
    while True:
        value = make()
        if any(len(run) >= 16 for run in value.replace("+", " ").replace("/", " ").replace(".", " ")
               .replace("~", " ").replace("=", " ").replace("%", " ").split()):
            return value


def discord_bot() -> str:
    user_id = str(R.randrange(10**17, 10**19)).encode()
    return base64.b64encode(user_id).decode().rstrip("=") + "." + rnd(B64URL, 6) + "." + rnd(B64URL, 38)


def grafana() -> str:
    kind = R.choice(["glc", "glsa", "legacy"])
    if kind == "glc":
        return "glc_" + b64(json.dumps({"o": rnd(string.digits, 6), "n": "fake-stack", "k": rnd(B62, 24)},
                                        separators=(",", ":")).encode()).rstrip("=")
    if kind == "glsa":
        return f"glsa_{rnd(B62, 32)}_{rnd(HEX, 8)}"
    return b64(json.dumps({"k": rnd(B62, 32), "n": "fake-key", "id": R.randrange(1, 99)},
                          separators=(",", ":")).encode()).rstrip("=")


def mapbox() -> str:
    head = b64(json.dumps({"u": "fakeuser", "a": rnd(LOWER36, 12)}, separators=(",", ":")).encode()).rstrip("=")
    return f"sk.{head}.{rnd(B64URL, 22)}"


# Formats with a fixed prefix, suffix or infix: a maker of a fresh fake token for each.
PREFIXED: dict[str, Callable[[], str]] = {
    "google_oauth": lambda: R.choice(["GOCSPX-" + rnd(B64URL, 28), "ya29." + rnd(B64URL, R.choice([90, 150]))]),
    "langsmith_key": lambda: f"lsv2_{R.choice(['pt', 'sk'])}_{rnd(HEX, 32)}_{rnd(HEX, 10)}",
    "pinecone_key": lambda: f"pcsk_{rnd(B62, 5)}_{rnd(B62, 63)}",
    "elevenlabs_key": lambda: "sk_" + rnd(HEX, 48),
    "aws_bedrock_key": lambda: with_run(lambda: "ABSK" + b64(R.randbytes(R.choice([99, 150])))),
    "azure_ad_client_secret": lambda: with_run(
        lambda: rnd(B62 + "_~.", 3) + R.choice(string.digits) + "Q~" + rnd(B62 + "_~.-", R.choice([31, 34]))),
    "azure_devops_pat": lambda: rnd(B62, 76) + "AZDO" + rnd(B62, 4),
    "alibaba_key": lambda: "LTAI" + rnd(B62, R.choice([16, 20])),
    "digitalocean_token": lambda: R.choice(["dop", "doo", "dor"]) + "_v1_" + rnd(HEX, 64),
    "heroku_key": lambda: "HRKU-AA" + rnd(B64URL, 58),
    "flyio_token": lambda: R.choice(["fo1_" + rnd(B64URL, 43), with_run(lambda: "fm2_" + b64(R.randbytes(150)))]),
    "netlify_token": lambda: "nfp_" + rnd(B62, 36),
    "cloudflare_key": lambda: R.choice(["cfut_" + rnd(B62, 40) + rnd(HEX, 8),
                                        "v1.0-" + rnd(HEX, 24) + "-" + rnd(HEX, 146)]),
    "tailscale_key": lambda: f"tskey-{R.choice(['auth', 'api', 'client'])}-k{rnd(B62, 9)}CNTRL-{rnd(B62, 33)}",
    "supabase_token": lambda: "sbp_" + rnd(LOWER36, 40),
    "bitbucket_token": lambda: "ATBB" + rnd(B62, 32),
    "atlassian_token": lambda: "ATATT3xFfGF0" + rnd(B64URL, 170) + "=" + rnd("0123456789ABCDEF", 8),
    "circleci_token": lambda: f"CCIP{R.choice(['AT', 'RJ'])}_{rnd(B62, 22)}_{rnd(HEX, 40)}",
    "buildkite_token": lambda: "bkua_" + rnd(LOWER36, 40),
    "sonarqube_token": lambda: R.choice(["squ_", "sqp_", "sqa_"]) + rnd(HEX, 40),
    "nuget_key": lambda: "oy2" + rnd(LOWER36, 43),
    "rubygems_key": lambda: "rubygems_" + rnd(HEX, 48),
    "dockerhub_token": lambda: "dckr_pat_" + rnd(B64URL, 27),
    "jfrog_token": lambda: R.choice(["AKCp" + rnd(B62, 69), "cmVmdGtu" + rnd(B62, 56)]),
    "clojars_token": lambda: "CLOJARS_" + rnd(LOWER36, 60),
    "discord_token": discord_bot,
    "discord_webhook": lambda: f"https://discord.com/api/webhooks/{R.randrange(10**17, 10**19)}/{rnd(B64URL, 68)}",
    "teams_webhook": lambda: (f"https://{rnd(string.ascii_lowercase, 8)}.webhook.office.com/webhookb2/"
                              f"{uuid4()}@{uuid4()}/IncomingWebhook/{rnd(HEX, 32)}/{uuid4()}"),
    "telegram_bot_token": lambda: f"{R.randrange(10**8, 10**10)}:AA{rnd(B64URL, 33)}",
    "mailgun_key": lambda: "key-" + rnd(HEX, 32),
    "mailchimp_key": lambda: rnd(HEX, 32) + f"-us{R.randrange(1, 22)}",
    "brevo_key": lambda: R.choice(["xkeysib-", "xsmtpsib-"]) + rnd(HEX, 64) + "-" + rnd(B62, 16),
    "square_token": lambda: R.choice(["EAAA" + rnd(B64URL, 60), "sq0atp-" + rnd(B64URL, 22),
                                      "sq0csp-" + rnd(B64URL, 43)]),
    "paypal_braintree_key": lambda: f"access_token$production${rnd(LOWER36, 16)}${rnd(HEX, 32)}",
    "shopify_token": lambda: R.choice(["shpat_", "shpca_", "shppa_", "shpss_"]) + rnd(HEX, 32),
    "easypost_key": lambda: R.choice(["EZAK", "EZTK"]) + rnd(B62, 54),
    "flutterwave_key": lambda: R.choice(["FLWSECK-", "FLWSECK_TEST-"]) + rnd(HEX, 32) + "-X",
    "plaid_token": lambda: f"access-{R.choice(['sandbox', 'development', 'production'])}-{uuid4()}",
    "newrelic_key": lambda: R.choice(["NRAK-" + rnd(UP36, 27), "NRII-" + rnd(B64URL, 32), rnd(HEX, 32) + "FFFFNRAL"]),
    "sentry_token": lambda: R.choice(["sntryu_" + rnd(HEX, 64),
                                      with_run(lambda: "sntrys_eyJpYXQiO" + rnd(B64, 140) + "_" + rnd(B64, 43))]),
    "grafana_token": grafana,
    "databricks_token": lambda: "dapi" + rnd(HEX, 32) + R.choice(["", "-2"]),
    "planetscale_token": lambda: R.choice(["pscale_tkn_", "pscale_oauth_", "pscale_pw_"]) + rnd(B64URL, 43),
    "dynatrace_token": lambda: f"dt0c01.{rnd(UP36, 24)}.{rnd(UP36, 64)}",
    "onepassword_key": lambda: R.choice([
        f"A3-{rnd(UP36, 6)}-{rnd(UP36, 11)}-{rnd(UP36, 5)}-{rnd(UP36, 5)}-{rnd(UP36, 5)}",
        with_run(lambda: "ops_eyJ" + rnd(B64, 300))]),
    "vault_token": lambda: R.choice(["hvs." + rnd(B64URL, 92), "hvb." + rnd(B64URL, 150)]),
    "terraform_token": lambda: f"{rnd(B62, 14)}.atlasv1.{rnd(B62, 67)}",
    "doppler_token": lambda: f"dp.{R.choice(['pt', 'st', 'sa', 'ct'])}.{rnd(B62, 43)}",
    "pulumi_token": lambda: "pul-" + rnd(HEX, 40),
    "openshift_token": lambda: "sha256~" + rnd(B64URL, 43),
    "age_secret_key": lambda: "AGE-SECRET-KEY-1" + rnd(BECH32, 58),
    "linear_key": lambda: "lin_api_" + rnd(B62, 40),
    "notion_token": lambda: R.choice(["ntn_" + rnd(string.digits, 11) + rnd(B62, 35), "secret_" + rnd(B62, 43)]),
    "postman_key": lambda: f"PMAK-{rnd(HEX, 24)}-{rnd(HEX, 34)}",
    "figma_token": lambda: "figd_" + rnd(B64URL, 40),
    "contentful_token": lambda: "CFPAT-" + rnd(B64URL, 43),
    "hubspot_token": lambda: f"pat-{R.choice(['na1', 'eu1'])}-{uuid4()}",
    "airtable_token": lambda: f"pat{rnd(B62, 14)}.{rnd(HEX, 64)}",
    "prefect_key": lambda: "pnu_" + rnd(B62, 36),
    "readme_key": lambda: "rdme_" + rnd(LOWER36, 70),
    "shippo_key": lambda: f"shippo_{R.choice(['live', 'test'])}_{rnd(HEX, 40)}",
    "duffel_key": lambda: f"duffel_{R.choice(['live', 'test'])}_{rnd(B64URL, 43)}",
    "frameio_token": lambda: "fio-u-" + rnd(B64URL, 64),
    "infracost_key": lambda: "ico-" + rnd(B62, 32),
    "typeform_token": lambda: "tfp_" + rnd(B64URL, 59),
    "sourcegraph_token": lambda: R.choice([f"sgp_{rnd(HEX, 16)}_{rnd(HEX, 40)}", f"sgp_{rnd(HEX, 40)}"]),
    "intra42_secret": lambda: f"s-s4t2{R.choice(['ud', 'af'])}-{rnd(HEX, 64)}",
    "clickhouse_key": lambda: "4b1d" + rnd(B62, 38),
    "settlemint_token": lambda: f"sm_{R.choice(['pat', 'aat', 'sat'])}_{rnd(B62, 16)}",
    "maxmind_key": lambda: f"{rnd(B62, 6)}_{rnd(B62, 29)}_mmk",
    "dropbox_token": lambda: "sl." + rnd(B64URL, 138),
    "facebook_token": lambda: "EAA" + R.choice("BCGI") + rnd(B62, 150),
    "twitter_token": lambda: "A" * 22 + rnd(B62, 80),
    "mapbox_token": mapbox,
    "yandex_key": lambda: "AQVN" + rnd(B64URL, 36),
    "octopus_key": lambda: "API-" + rnd(UP36, 26),
    "adobe_secret": lambda: "p8e-" + rnd(B62, 32),
    "launchdarkly_key": lambda: f"{R.choice(['api', 'sdk'])}-{uuid4()}",
    "harness_key": lambda: f"pat.{rnd(B64URL, 22)}.{rnd(B62, 24)}.{rnd(B62, 20)}",
}


def generic_secret() -> str:
    while True:
        s = rnd(R.choice([B62, B64URL]), R.choice([20, 24, 32, 40]))
        if any(c.isdigit() for c in s) and any(c.isalpha() for c in s):
            return s


# Formats recognised by the key they are assigned to: key names, a maker of a value.
KEYED_GEN: dict[str, tuple[list[str], Callable[[], str]]] = {
    "cohere_key": (["COHERE_API_KEY", "CO_API_KEY", "cohere_api_key", "cohereApiKey"], lambda: rnd(B62, 40)),
    "mistral_key": (["MISTRAL_API_KEY", "mistral_api_key", "mistralApiKey"], lambda: rnd(B62, 32)),
    "aws_session_token": (["aws_session_token", "AWS_SESSION_TOKEN", "SessionToken", "x-amz-security-token"],
                          lambda: with_run(lambda: R.choice(["IQoJb3JpZ2luX2Vj", "FwoGZXIvYXdzE"])
                                           + b64(R.randbytes(R.choice([240, 300]))))),
    "azure_storage_key": (["AZURE_STORAGE_KEY", "storageAccountKey", "COSMOS_KEY", "azure_storage_access_key"],
                          lambda: with_run(lambda: R.choice([b64(R.randbytes(64)), b64(R.randbytes(32))]))),
    "azure_devops_pat": (["AZURE_DEVOPS_PAT", "ADO_PAT", "AZURE_DEVOPS_EXT_PAT", "vsts_token"],
                         lambda: rnd(B32L, 52)),
    "ibm_cloud_key": (["IBM_CLOUD_API_KEY", "ibm_api_key", "IBMCLOUD_API_KEY", "iam_apikey"],
                      lambda: rnd(B64URL, 44)),
    "ibm_cos_hmac": (["secret_access_key", "cos_hmac_secret", "COS_HMAC_SECRET_ACCESS_KEY"], lambda: rnd(HEX, 48)),
    "alibaba_key": (["ALIBABA_CLOUD_ACCESS_KEY_SECRET", "aliyun_access_key_secret", "alicloud_secret_key"],
                    lambda: rnd(B62, 30)),
    "heroku_key": (["HEROKU_API_KEY", "heroku_api_key", "herokuApiKey"], lambda: uuid4()),
    "vercel_token": (["VERCEL_TOKEN", "vercel_token", "vercelToken"], lambda: rnd(B62, 24)),
    "netlify_token": (["NETLIFY_AUTH_TOKEN", "netlify_token"], lambda: rnd(B64URL, 43)),
    "cloudflare_key": (["CLOUDFLARE_API_TOKEN", "CF_API_TOKEN", "cloudflare_api_key"],
                       lambda: R.choice([rnd(B64URL, 40), rnd(HEX, 37)])),
    "github_token": (["GITHUB_TOKEN", "GH_TOKEN", "github_access_token"], lambda: rnd(HEX, 40)),
    "gitlab_token": (["GITLAB_TOKEN", "gitlab_private_token"], lambda: rnd(B64URL, 20)),
    "bitbucket_token": (["BITBUCKET_CLIENT_SECRET", "bitbucket_secret"], lambda: rnd(B62, 32)),
    "atlassian_token": (["JIRA_API_TOKEN", "CONFLUENCE_TOKEN", "atlassian_api_token"], lambda: rnd(B62, 24)),
    "circleci_token": (["CIRCLECI_TOKEN", "CIRCLE_TOKEN", "circle_api_token"], lambda: rnd(HEX, 40)),
    "travis_token": (["TRAVIS_TOKEN", "travis_api_token"], lambda: rnd(B62, 22)),
    "buildkite_token": (["BUILDKITE_AGENT_TOKEN", "buildkite_api_token"], lambda: rnd(LOWER36, 40)),
    "snyk_token": (["SNYK_TOKEN", "snyk_api_key", "snykToken"], lambda: uuid4()),
    "sonarqube_token": (["SONAR_TOKEN", "sonar.login", "SONARQUBE_TOKEN"], lambda: rnd(LOWER36, 40)),
    "jenkins_token": (["JENKINS_API_TOKEN", "jenkins_token"], lambda: rnd(HEX, 34)),
    "nuget_key": (["NUGET_API_KEY", "nuget_key"], lambda: rnd(LOWER36, 46)),
    "dockerhub_token": (["DOCKERHUB_TOKEN", "docker_hub_token"], lambda: uuid4()),
    "jfrog_token": (["JFROG_ACCESS_TOKEN", "ARTIFACTORY_API_KEY", "artifactory_token"],
                    lambda: R.choice([rnd(B62, 64), rnd(B62, 73)])),
    "discord_token": (["DISCORD_CLIENT_SECRET", "discord_secret"], lambda: rnd(B64URL, 32)),
    "mailgun_key": (["MAILGUN_API_KEY", "mailgun_signing_key"], lambda: f"{rnd(HEX, 32)}-{rnd(HEX, 8)}-{rnd(HEX, 8)}"),
    "messagebird_key": (["MESSAGEBIRD_API_KEY", "messagebird_access_key", "message_bird_key"], lambda: rnd(B62, 25)),
    "postmark_token": (["POSTMARK_SERVER_TOKEN", "postmark_api_token"], lambda: uuid4()),
    "paypal_braintree_key": (["PAYPAL_CLIENT_SECRET", "paypal_secret", "BRAINTREE_PRIVATE_KEY"],
                             lambda: R.choice([rnd(B64URL, 80), rnd(HEX, 32)])),
    "shopify_token": (["SHOPIFY_API_SECRET", "shopify_secret_key"], lambda: rnd(HEX, 32)),
    "etsy_key": (["ETSY_API_KEY", "etsy_keystring"], lambda: rnd(LOWER36, 24)),
    "plaid_token": (["PLAID_SECRET", "plaid_secret"], lambda: rnd(HEX, 30)),
    "datadog_key": (["DD_API_KEY", "DATADOG_API_KEY", "DD_APP_KEY", "datadog_app_key"],
                    lambda: R.choice([rnd(HEX, 32), rnd(HEX, 40)])),
    "sumologic_key": (["SUMO_ACCESS_KEY", "sumologic_access_key"], lambda: rnd(B62, 64)),
    "okta_token": (["OKTA_API_TOKEN", "okta_token", "OKTA_CLIENT_TOKEN"], lambda: "00" + rnd(B64URL, 40)),
    "auth0_secret": (["AUTH0_CLIENT_SECRET", "auth0_secret"], lambda: rnd(B64URL, 64)),
    "twitter_token": (["TWITTER_API_SECRET", "twitter_consumer_secret"], lambda: rnd(B62, 50)),
    "yandex_key": (["YANDEX_ACCESS_KEY", "yandex_static_key"], lambda: "YC" + rnd(B64URL, 38)),
    "secret_assignment": (["CLIENT_SECRET", "client_secret", "API_TOKEN", "apiKey", "SECRET_KEY", "webhook_secret",
                           "access_token", "APP_SECRET", "signing_key", "auth_token", "refreshToken"],
                          generic_secret),
}

KEYED_TEMPLATES: list[tuple[str, str]] = [
    ("env", "{K}={s}\nLOG_LEVEL=info\n"),
    ("shell", "$ export {K}='{s}'"),
    ("json", '{{"{K}": "{s}", "enabled": true}}'),
    ("yaml", "config:\n  {K}: {s}\n  retries: 3\n"),
    ("code", '{K} = "{s}"  # TODO move to the vault'),
    ("ini", "[service]\n{K} = {s}\n"),
    ("xml", "<settings>\n  <{K}>{s}</{K}>\n</settings>"),
    ("flag", "$ deploy --{D} {s} --region eu-west-1"),
]


# Look-alikes: for each rule, texts shaped like its format that are not credentials
# (documentation placeholders, the prefix in prose, the shape under an unrelated key).
def lookalikes() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {
        "pem_private_key": ["-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
                            "-----END PUBLIC KEY-----", 'PEM_HEADER = "-----BEGIN RSA PRIVATE KEY-----"'],
        "jwt": ["eyJhbGciOiJIUzI1NiJ9 is just a base64 header without payload", "eyJrZXkiOiAidmFsdWUifQ=="],
        "anthropic_key": ["Set ANTHROPIC_API_KEY to your key (it starts with sk-ant-)."],
        "openrouter_key": ["OpenRouter keys look like sk-or-v1-... (64 hex characters)"],
        "openai_key": ["--sk-color-primary-500-background: #fff;", "OPENAI_API_KEY=sk-..."],
        "google_api_key": ["the key looks like AIza followed by 35 characters"],
        "huggingface_token": ['hf_hub_download(repo_id="org/model")', "api_org_settings_panel_visible = True"],
        "groq_key": ["gsk_model_v2 was retrained"],
        "xai_key": ["xai-sdk-python-client-library"],
        "replicate_token": ["r8_ prefix"],
        "perplexity_key": ["pplx-api docs"],
        "aws_access_key": ["AKIA is the prefix for long-term keys", "AKIAXXXXXXXXXXXXXXXX"],
        "aws_secret_key": ["aws_secret_access_key = YOUR_SECRET_KEY"],
        "github_token": ["ghp_ tokens are 40 characters long", "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"],
        "gitlab_token": ["glpat- prefixed tokens rotate yearly"],
        "slack_webhook": ["Create an incoming webhook at https://api.slack.com/messaging/webhooks first."],
        "slack_token": ["slack: xoxb-your-bot-token", "xoxo, see you tomorrow"],
        "stripe_key": ["stripe.api_key = 'sk_test_...'", "sk_live_xxxxxxxxxxxxxxxxxxxxxxxx"],
        "twilio_key": ["SKU-12345678 in stock", "TWILIO_ACCOUNT_SID=AC" + "0" * 32],
        "sendgrid_key": ["SG.example is not a key"],
        "npm_token": ["npm_config_cache=/tmp/npm", "//registry.npmjs.org/:_authToken=${NPM_TOKEN}"],
        "pypi_token": ["pypi-simple index at /simple/"],
        "bearer_token": ["Authorization: Bearer $TOKEN", "Authorization: Bearer YOUR_API_TOKEN_HERE",
                         "authorization: pending review by legal"],
        "basic_auth": ["Authorization: Basic <base64 of user:password>", '{"auths": {"ghcr.io": {"auth": ""}}}'],
        "api_key_header": ["x-api-key: YOUR_ANTHROPIC_API_KEY", "X-Api-Key: ${API_KEY}"],
        "url_password": ["postgres://user:${PGPASSWORD}@db:5432/app", "mysql://root:<password>@localhost/test"],
        "password": ["password = os.environ['DB_PASSWORD']", '<add key="ClearTextPassword" value="%NUGET_PASSWORD%" />'],
        "credit_card": [f"Stripe's test card {group4('4242424242424242')} always succeeds.",
                        f"Use {group4('5555555555554444')} (Mastercard) or 378282246310005 in the sandbox.",
                        "Use 4111 1111 1111 1112 to test a declined card."],
        "iban": ["The IBAN format is CCkk BBBB BBBB BBBB; country code first.",
                 "DE00 0000 0000 0000 0000 00 is a placeholder IBAN"],
        "us_ssn": ["SSN-like but invalid: 000-12-3456", "part no. 123-45-6789-A"],
        "email": ["icon@2x.png icon@3x.png", "scp build.tar.gz deploy@ci-runner:/srv/releases/"],
        "phone": ["+1 for this idea, +2 from me, +100 overall"],
        "secret_assignment": [
            "token = tokenizer.encode(prompt_text_with_context)", 'secret_name: "payments-api-credentials-v2"',
            '"token_type": "Bearer", "expires_in": 3600', "max_tokens = 4096",
            f'next_page_token: "{rnd(B64URL, 40)}"', f'csrf_token = "{rnd(HEX, 32)}"',
            "token: ${{ secrets.GITHUB_TOKEN }}", 'SECRET_KEY = "django-insecure-changeme-0123456789"',
            "client_secret = get_client_secret_from_vault(env)", f'public_key = "{rnd(B64URL, 43)}"',
            'api_key = "sk-..."  # see docs', "accessToken = response.data.accessTokenValue2",
            "secret = derive_secret_from(masterKeyMaterial2024)", "self.token = TokenCache.get_or_refresh(client)",
        ],
        "ip_address": ["version 1.2.3.4 of the library", "curl http://127.0.0.1:8080/health",
                       "bind to 0.0.0.0 and ::1", "docs use 192.0.2.15 and 2001:db8::1 as examples",
                       "OID 1.3.6.1.4.1.311.21.7 names a certificate template",
                       "std::vector<int> v; auto t = 12:34:56;", "Chrome/120.0.6099.109 Safari/537.36",
                       "netmask 255.255.255.0"],
        "kubernetes_secret": [
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  LOG_LEVEL: debug\n  FEATURE_X: 'on'\n",
            "kind: Secret\nmetadata:\n  name: db\ntype: Opaque\n# data is injected by the vault agent\n",
            'The "kind": "Secret" objects hold base64 in data, which is encoding, not encryption.'],
        "azure_sas_token": ["https://fake.blob.core.windows.net/c/report.pdf?sig=<signature>&sv=2022-11-02",
                            "https://example.com/search?q=sig%3D&sv=1"],
        "discord_webhook": ["https://discord.com/developers/docs/resources/webhook#execute-webhook"],
        "teams_webhook": ["Add an Incoming Webhook connector; its URL ends in webhook.office.com/webhookb2/<id>"],
        "azure_storage_key": ["DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=<key>",
                              "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw== "
                              "is the documented storage emulator key"],
        "aws_session_token": ["aws_session_token = ${AWS_SESSION_TOKEN}", "SessionToken: null"],
    }
    for rule, make in PREFIXED.items():
        # The fixed part of the format: what three fresh tokens have in common.
        token = make()
        head = os.path.commonprefix([token, make(), make()]) or token[:4]
        body = "".join("x" if c.isalnum() else c for c in token[len(head):])
        out.setdefault(rule, []).extend([
            f"The format: {head}... followed by random characters (see the provider's docs).",
            f"placeholder from the docs: {head}{body}",
        ])
    for rule, (keys, make) in KEYED_GEN.items():
        key = keys[0]
        out.setdefault(rule, []).extend([
            f"{key}=<your-{rule.replace('_', '-')}>", f"{key}=${{{key}}}",
            f"{key} = os.environ.get('{key}')",
        ])
    # The shapes of keyed formats under keys that name no provider and no secret.
    out["heroku_key"].append(f"HEROKU_APP_ID={uuid4()}")
    out["datadog_key"].append(f'"etag": "{rnd(HEX, 32)}", "dd_site": "datadoghq.eu"')
    out["github_token"].append(f"commit {rnd(HEX, 40)} on branch main")
    out["snyk_token"].append(f"request_id={uuid4()} status=200")
    out["sentry_token"].append(f"sha256:{rnd(HEX, 64)}")
    out["vercel_token"].append(f"VERCEL_PROJECT_ID=prj_{rnd(B62, 24)}")
    out["cohere_key"].append(f"cohere_model_id: {rnd(B62, 40)}")
    out["twilio_key"].append(f"TWILIO_ACCOUNT_SID=AC{rnd(HEX, 32)}")
    return out


# ------------------------------------------------------------------- contexts

# Where any standalone token may appear. {s} is the secret.
TOKEN_CONTEXTS: list[tuple[str, str]] = [
    ("prose", "Oops, I pasted my key by mistake: {s} - can you tell me why the request fails?"),
    ("prose", "Here is the token we use in staging ({s}), please don't share it."),
    ("env", "export API_TOKEN={s}\nexport LOG_LEVEL=debug\n"),
    ("env", "# .env\nDEBUG=true\nSERVICE_KEY={s}\nPORT=8080\n"),
    ("code", 'client = Client(api_key="{s}", timeout=30)\nresp = client.get("/v1/models")'),
    ("code", "const client = new Client({{ apiKey: '{s}', retries: 3 }});"),
    ("code", 'cfg := Config{{Token: "{s}", Region: "eu-west-1"}}'),
    ("json", '{{"name": "prod", "credentials": {{"key": "{s}"}}, "region": "us-east-1"}}'),
    ("yaml", "service:\n  name: billing\n  token: {s}\n  replicas: 3\n"),
    ("log", "2026-11-21T10:00:02Z DEBUG http.client using key={s} for request id=42"),
    ("log", "[worker-3] 10:04:11 WARN retrying with credentials {s} (attempt 2/5)"),
    ("shell", "$ curl -s https://api.example.com/v1/me -H 'X-Api-Key: {s}' | jq ."),
    ("markdown", "Set the secret in your CI settings:\n\n```\n{s}\n```\n\nthen rerun the job."),
    ("toml", '[auth]\ntoken = "{s}"\nretries = 2\n'),
    ("trace", 'Traceback (most recent call last):\n  File "app.py", line 12, in <module>\n'
              '    connect("{s}")\nConnectionError: 401 Unauthorized'),
]

RULE_CONTEXTS: dict[str, list[tuple[str, str]]] = {
    "openai_key": [("env", "OPENAI_API_KEY={s}\n"), ("code", 'openai.api_key = "{s}"'),
                   ("http", "Authorization: Bearer {s}")],
    "anthropic_key": [("env", "ANTHROPIC_API_KEY={s}"), ("shell", "curl https://api.anthropic.com/v1/messages -H 'x-api-key: {s}'")],
    "aws_access_key": [("ini", "[default]\naws_access_key_id = {s}\nregion = eu-west-1\n"),
                       ("json", '{{"AccessKeyId": "{s}", "Expiration": "2026-11-21T12:00:00Z"}}')],
    "aws_secret_key": [
        ("ini", "[default]\naws_access_key_id = {ak}\naws_secret_access_key = {s}\n"),
        ("env", "AWS_SECRET_ACCESS_KEY={s}\nAWS_DEFAULT_REGION=us-east-1"),
        ("json", '{{"Credentials": {{"AccessKeyId": "{ak}", "SecretAccessKey": "{s}", "SessionToken": null}}}}'),
        ("code", 's3 = boto3.client("s3", aws_access_key_id=key_id, aws_secret_access_key="{s}")'),
        ("yaml", "aws:\n  aws_secret_key: {s}\n  bucket: reports\n"),
        ("prose", "the secret access key: {s} was rotated yesterday"),
        ("shell", "$ export AWS_SECRET_ACCESS_KEY='{s}'"),
        ("toml", 'secret_access_key = "{s}"'),
    ],
    "twilio_key": [("env", "TWILIO_API_KEY={s}\nTWILIO_ACCOUNT=main")],
    "bearer_token": [
        ("http", "GET /api/v2/orders HTTP/1.1\nHost: api.example.com\nAuthorization: Bearer {s}\nAccept: */*\n"),
        ("shell", 'curl -H "Authorization: Bearer {s}" https://api.example.com/v1/me'),
        ("code", 'headers = {{"Authorization": "Bearer {s}", "Accept": "application/json"}}'),
        ("log", "2026-11-21 10:00:01 DEBUG > authorization: bearer {s}"),
        ("json", '{{"headers": {{"authorization": "Bearer {s}", "content-type": "application/json"}}}}'),
        ("http", "Authorization: token {s}"),
        ("js", "fetch(url, {{ headers: {{ Authorization: 'Bearer {s}' }} }})"),
        ("log", "proxy: forwarding Proxy-Authorization: Bearer {s} upstream"),
    ],
    "basic_auth": [
        ("http", "POST /login HTTP/1.1\nAuthorization: Basic {s}\nContent-Length: 0\n"),
        ("shell", "curl -H 'Authorization: Basic {s}' https://registry.example.com/v2/"),
        ("json", '{{"Authorization": "Basic {s}"}}'),
        ("log", "request headers: authorization=Basic {s}; host=api.example.org"),
    ],
    "url_password": [
        ("env", "DATABASE_URL=postgres://app_user:{s}@db.internal.example.com:5432/app\n"),
        ("code", 'engine = create_engine("mysql+pymysql://report:{s}@10.0.3.7/reports")'),
        ("prose", "Connect with redis://:{s}@cache.example.net:6379/0 and flush the queue."),
        ("log", "ERROR could not connect to amqp://guest:{s}@rabbitmq:5672// (timeout)"),
        ("yaml", "mongo:\n  uri: mongodb+srv://admin:{s}@cluster0.example.mongodb.net/prod?retryWrites=true\n"),
        ("shell", "$ git clone https://deploy:{s}@git.example.com/team/repo.git"),
        ("json", '{{"broker": "https://svc:{s}@broker.example.org:8443/v1"}}'),
        ("prose", "The FTP mirror is ftp://mirror:{s}@ftp.example.com/pub, read-only."),
    ],
    "password": [
        ("code", 'password = "{s}"'),
        ("json", '{{"username": "admin", "password": "{s}", "remember": true}}'),
        ("env", "DB_PASSWORD={s}\nDB_HOST=localhost\n"),
        ("yaml", "database:\n  user: app\n  password: {s}\n  host: db\n"),
        ("ini", "[mysql]\nuser = report\npasswd = {s}\n"),
        ("shell", "$ mysql -u root --password={s} -h 127.0.0.1"),
        ("shell", "$ psql-wrapper --password {s} --host db.example.com"),
        ("log", "2026-11-21 09:12:44 INFO login attempt user=bob password={s} ip=10.1.2.3"),
        ("query", "GET /login?user=bob&password={s}&next=/home"),
        ("code", "conn = connect(host='db', user='app', password='{s}')"),
        ("code", 'cfg.SMTP_PASS = "{s}"'),
        ("xml", "<datasource>\n  <username>app</username>\n  <password>{s}</password>\n</datasource>"),
        ("conn", "Server=sql.example.com;Database=shop;User Id=shop;Password={s};Encrypt=true"),
        ("prose", "my new password: {s}\nplease remember it for me"),
        ("docker", "docker run -e POSTGRES_PASSWORD={s} -d postgres:16"),
        ("toml", '[smtp]\nhost = "mail.example.com"\npassphrase = "{s}"\n'),
    ],
    "credit_card": [
        ("prose", "My card number is {s}, expiry 12/28, can you check why it was declined?"),
        ("csv", "order_id,card,amount\n10293,{s},49.90\n"),
        ("json", '{{"payment": {{"pan": "{s}", "exp_month": 12, "exp_year": 2028}}}}'),
        ("log", "2026-11-21 10:00:00 ERROR charge failed card={s} amount=19.99 currency=EUR"),
        ("prose", "Card: {s}\nName on card: J. Doe"),
        ("code", 'test_card = "{s}"  # fixture'),
    ],
    "iban": [
        ("prose", "Please wire the deposit to IBAN {s} before Friday."),
        ("json", '{{"beneficiary": "ACME GmbH", "iban": "{s}", "bic": "DEUTDEFF"}}'),
        ("csv", "name;iban;amount\nJane Doe;{s};120,00\n"),
        ("log", "payout queued to {s} (ref 2026-11-21)"),
    ],
    "us_ssn": [
        ("prose", "Her SSN is {s} and her DOB is 1985-04-12."),
        ("json", '{{"employee": "J. Doe", "ssn": "{s}", "dept": "finance"}}'),
        ("csv", "name,ssn,state\nJohn Roe,{s},CA\n"),
        ("form", "Social Security Number: {s}\nDate of birth: 04/12/1985"),
    ],
    "email": [
        ("prose", "You can reach me at {s} if anything breaks."),
        ("json", '{{"id": 17, "email": "{s}", "verified": true}}'),
        ("log", "2026-11-21 10:03:00 INFO sent invoice to <{s}> status=250"),
        ("code", 'send_mail(to="{s}", subject="Welcome")'),
        ("header", "From: Jane Doe <{s}>\nSubject: quarterly numbers"),
        ("markdown", "Maintainer: [{s}](mailto:{s2})"),
        ("csv", "id,email,plan\n3,{s},pro\n"),
    ],
    "phone": [
        ("prose", "Call me on {s} after 6pm."),
        ("json", '{{"contact": {{"phone": "{s}", "name": "J. Doe"}}}}'),
        ("sig", "--\nJane Doe\nSupport Lead\nTel: {s}\n"),
        ("csv", "name,phone\nJohn,{s}\n"),
    ],
    "pem_private_key": [
        ("file", "{s}\n"),
        ("prose", "Here's the deploy key, can you check the format?\n\n{s}\n\nThanks!"),
        ("yaml", "tls:\n  key: |\n{indented}\n"),
    ],
    "jwt": [
        ("http", "Authorization: Bearer {s}"),
        ("json", '{{"access_token": "{s}", "token_type": "Bearer", "expires_in": 3600}}'),
        ("cookie", "Set-Cookie: session={s}; Path=/; HttpOnly; Secure"),
        ("url", "https://app.example.com/callback#id_token={s}&state=xyz"),
    ],
    "npm_token": [("npmrc", "//registry.npmjs.org/:_authToken={s}\n")],
    "api_key_header": [
        ("shell", "curl https://example-openai.openai.azure.com/openai/deployments/gpt/chat/completions "
                  "-H 'api-key: {s}' -d @body.json"),
        ("http", "POST /v1/search HTTP/1.1\nHost: api.example.com\nX-API-Key: {s}\n"),
        ("code", 'headers = {{"x-api-key": "{s}", "anthropic-version": "2023-06-01"}}'),
        ("json", '{{"headers": {{"X-Auth-Token": "{s}"}}, "timeout": 30}}'),
        ("shell", "curl --header 'PRIVATE-TOKEN: {s}' https://gitlab.example.com/api/v4/projects"),
        ("log", "2026-11-21 10:00:00 DEBUG > x-goog-api-key: {s}"),
        ("js", "axios.get(url, {{ headers: {{ 'Ocp-Apim-Subscription-Key': '{s}' }} }})"),
        ("yaml", "http:\n  headers:\n    x-access-token: {s}\n"),
    ],
    "slack_webhook": [("code", 'requests.post("{s}", json={{"text": "deploy done"}})')],
}

STANDALONE = {
    "openai_key": openai, "anthropic_key": anthropic, "openrouter_key": openrouter,
    "google_api_key": google, "huggingface_token": huggingface, "groq_key": groq, "xai_key": xai,
    "replicate_token": replicate, "perplexity_key": perplexity, "aws_access_key": aws_access,
    "github_token": github, "gitlab_token": gitlab, "slack_token": slack_token,
    "slack_webhook": slack_webhook, "stripe_key": stripe, "twilio_key": twilio_sid,
    "sendgrid_key": sendgrid, "npm_token": npm, "pypi_token": pypi, "jwt": jwt,
}
CONTEXTUAL: dict[str, Callable[[], str]] = {
    "aws_secret_key": aws_secret, "bearer_token": bearer, "basic_auth": basic,
    "url_password": url_pw, "password": password, "api_key_header": lambda: R.choice([rnd(HEX, 32), rnd(B62, 40)]), "credit_card": card_formatted,
    "iban": iban_formatted, "us_ssn": ssn, "email": email, "phone": phone,
    "pem_private_key": pem,
}


def positives() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def add(rule: str, secret: str, text: str, context: str, also: list[list[str]] | None = None) -> None:
        assert text.count(secret) == 1, (rule, secret, text)
        row = {"id": f"{rule}-{sum(1 for o in out if o['rule'] == rule) + 1:03d}",
               "rule": rule, "secret": secret, "text": text, "context": context}
        if also:
            row["also"] = also
        out.append(row)

    for rule, make in STANDALONE.items():
        contexts = RULE_CONTEXTS.get(rule, []) + R.sample(TOKEN_CONTEXTS, 8 - len(RULE_CONTEXTS.get(rule, [])[:4]))
        for context, template in contexts[:8]:
            s = make()
            add(rule, s, template.format(s=s), context)
    for rule, make in CONTEXTUAL.items():
        for context, template in RULE_CONTEXTS[rule] + (RULE_CONTEXTS[rule] if len(RULE_CONTEXTS[rule]) < 8 else []):
            s = query_password() if (rule, context) == ("password", "query") else make()
            if rule == "pem_private_key" and context == "yaml":
                indented = "\n".join("    " + line for line in s.splitlines())
                add(rule, indented.strip(), template.format(indented=indented), context)
                continue
            if rule == "email" and "{s2}" in template:
                add(rule, s, f"Maintainer: {s} (see MAINTAINERS)", "prose")
                continue
            ak = aws_access()
            text = template.format(s=s, ak=ak)
            add(rule, s, text, context, [[ak, "aws_access_key"]] if ak in text else None)
    # Formats the loops above do not reach.
    escaped = pem("PRIVATE KEY", escaped=True)
    doc = ('{"type": "service_account", "project_id": "demo-123", "private_key_id": "%s", '
           '"private_key": "%s\\n", "client_id": "1029384756"}' % (rnd(HEX, 40), escaped))
    add("pem_private_key", escaped, doc, "json")
    truncated = pem("RSA PRIVATE KEY", truncated=True)
    add("pem_private_key", truncated, f"I only copied the start, is this enough?\n{truncated}", "prose")
    amex = luhn_complete("3787", 15)
    for s in ("4539-1488-0343-6467", group4(luhn_complete("5425", 16)), f"{amex[:4]} {amex[4:10]} {amex[10:]}",
              group4(luhn_complete("6011", 16))):
        add("credit_card", s, f"card on file: {s} (exp 09/27)", "prose")
    while not luhn_ok(s := card()) or len(s) != 16 or luhn_ok(s + "123"):
        pass  # a CVV after the number must not make a valid 19-digit one
    s = group4(s)
    add("credit_card", s, f"charge {s} 123 for the renewal", "prose")  # followed by a CVV
    for s in ("GB82 WEST 1234 5698 7654 32", "BE68 5390 0754 7034", "NO93 8601 1117 947"):
        add("iban", s, f"Account: {s}\nReference: INV-2026-0042", "form")
    for s in ("123 45 6780", "512449876"):
        add("us_ssn", s, f"SSN: {s}", "form")
    add("us_ssn", "321-54-9870", "applicant ssn=321-54-9870;", "log")
    add("email", "josé.garcía@example.es", "Escríbeme a josé.garcía@example.es, gracias.", "prose")
    add("email", "ops+alerts@status.example.com", "mailto:ops+alerts@status.example.com", "url")
    add("email", (t := email()), f"ssh -p 2222 deploy@bastion.example.com; echo done | mail {t}", "shell")
    add("twilio_key", (t := rnd(HEX, 32)), f"TWILIO_ACCOUNT_SID=AC{rnd(HEX, 32)}\nTWILIO_AUTH_TOKEN={t}\n", "env")
    add("twilio_key", (t := rnd(B62, 32)), f'twilio_api_secret: "{t}"', "yaml")
    add("npm_token", (t := f"{rnd(HEX, 8)}-{rnd(HEX, 4)}-{rnd(HEX, 4)}-{rnd(HEX, 4)}-{rnd(HEX, 12)}"),
        f"//npm.pkg.example.com/:_authToken={t}\nalways-auth=true\n", "npmrc")
    add("slack_token", (t := "xoxb-" + rnd(string.digits, 12) + "-" + rnd(B62, 24)), f"**{t}**", "markdown")
    add("github_token", (t := github()), f"__{t}__", "markdown")
    add("openai_key", (t := openai()), f"key:{t}", "prose")
    add("password", (t := password()), f"password:\t'{t}'", "yaml")
    add("password", "hunter", "DB_PASS=hunter\n", "env")
    add("url_password", (t := "p%40ss" + rnd(B62, 6)), f"amqps://user:{t}@mq.example.com", "url")
    add("url_password", (t := "p@ss" + rnd(B62, 8)), f"redis://default:{t}@cache.example.com:6379", "url")  # raw @
    add("password", (t := password()), f"$ curl -u admin:{t} https://ci.example.com/api/json", "shell")
    add("password", (t := password()), f"wget --user=deploy --password={t} https://files.example.com/a.tgz", "shell")
    add("password", (t := password()), f"curl --user deploy:{t} -X POST https://api.example.com/hooks", "shell")
    add("password", (t := password()), f"$ mysqldump -u root -p{t} shop > shop.sql", "shell")
    add("password", (t := password()), f'{{"user": "svc", "pass": "{t}", "host": "db"}}', "json")
    add("password", (t := "Zz9" + rnd(B62, 9)), f"pwd: {t}\nuser: admin", "yaml")
    add("password", (t := rnd(B62, 8) + "2"), f"[client]\nuser=backup\npassword = {t}\n", "ini")
    add("password", (t := "letmein" + rnd(string.ascii_lowercase, 4)), f"[smtp]\nhost = mail.example.com\npassword = {t}\n", "ini")
    # Provider formats with a prefix, infix or suffix: eight contexts each.
    for rule, make in PREFIXED.items():
        for context, template in R.sample(TOKEN_CONTEXTS, 8):
            s = make()
            add(rule, s, template.format(s=s), context)
    # Formats known by their key: six spellings and syntaxes each.
    for rule, (keys, make) in KEYED_GEN.items():
        for context, template in R.sample(KEYED_TEMPLATES, 6):
            s, key = make(), R.choice(keys)
            dashed = key.lower().replace("_", "-").replace(".", "-")
            add(rule, s, template.format(K=key, D=dashed, s=s), context)
    specials(add)
    return out


def specials(add: Callable[..., None]) -> None:
    """Forms the generic loops do not reach: multi-line documents, URLs, headers."""
    for _ in range(3):  # Kubernetes Secret manifests: every value under data / stringData
        a, b2 = b64(rnd(B62, 16).encode()), b64(rnd(B62, 24).encode())
        add("kubernetes_secret", a, f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-{rnd(LOWER36, 5)}\n"
            f"type: Opaque\ndata:\n  username: {b2}\n  password: {a}\n", "yaml", [[b2, "kubernetes_secret"]])
    t = rnd(B62, 20)
    add("kubernetes_secret", t, f"---\nkind: Secret\napiVersion: v1\nstringData:\n  API_TOKEN: \"{t}\"\n", "yaml")
    t = b64(rnd(B62, 30).encode())
    add("kubernetes_secret", t, '{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}, '
        f'"data": {{"token": "{t}"}}}}', "json")
    body = "\n".join("    " + b64(R.randbytes(48)) for _ in range(3))
    add("kubernetes_secret", body.strip(), f"kind: Secret\ndata:\n  tls.key: |\n{body}\n", "yaml")
    for _ in range(5):
        sig = rnd(B64, 43).replace("+", "%2B").replace("/", "%2F") + "%3D"
        url = (f"https://{rnd(LOWER36, 10)}.blob.core.windows.net/{rnd(LOWER36, 6)}/report.csv?sv=2022-11-02&ss=b"
               f"&srt=o&sp=r&se=2030-01-01T00:00:00Z&st=2026-11-21T00:00:00Z&spr=https&sig={sig}")
        add("azure_sas_token", sig, R.choice(["curl -o r.csv '{u}'", "Here is the SAS URL: {u}", "SAS_URL={u}\n"])
            .format(u=url), "url")
    for _ in range(3):
        k = with_run(lambda: b64(R.randbytes(64)))
        add("azure_storage_key", k, f"DefaultEndpointsProtocol=https;AccountName={rnd(LOWER36, 12)};AccountKey={k};"
            "EndpointSuffix=core.windows.net", "conn")
    for _ in range(2):
        k = with_run(lambda: b64(R.randbytes(32)))
        add("azure_storage_key", k, f"Endpoint=sb://{rnd(LOWER36, 8)}.servicebus.windows.net/;"
            f"SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={k}", "conn")
    for ip in ("10.24.113.7", "172.16.254.1", "8.8.4.4", "185.199.108.153"):
        add("ip_address", ip, R.choice(["connection from {i} refused", "ssh admin@{i}", "server: {i}:8443",
                                        "Our office IP is {i}, please allow-list it."]).format(i=ip), "log")
    for ip in ("fe80::1ff:fe23:4567:890a", "2a00:1450:4007:80e::200e"):
        add("ip_address", ip, R.choice(["listen [{i}]:8443", "peer {i} sent RST", "AAAA record -> {i}"]).format(i=ip),
            "log")
    lines = "\n".join(b64(R.randbytes(48)) for _ in range(3))
    block = f"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nComment: \"fake key\"\n{lines}\n---- END SSH2 ENCRYPTED PRIVATE KEY ----"
    add("pem_private_key", block, f"Exported from Tectia:\n{block}\n", "file")
    priv = "\n".join(b64(R.randbytes(48)) for _ in range(2))
    add("pem_private_key", priv, "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: fake\nPublic-Lines: 2\n"
        f"{b64(R.randbytes(48))}\n{b64(R.randbytes(12))}\nPrivate-Lines: 2\n{priv}\nPrivate-MAC: {rnd(HEX, 64)}\n", "ppk")
    t = password()
    add("password", t, f'<packageSourceCredentials>\n  <github>\n    <add key="Username" value="ci" />\n'
        f'    <add key="ClearTextPassword" value="{t}" />\n  </github>\n</packageSourceCredentials>', "xml")
    t = b64(f"deploy:{rnd(B62, 16)}".encode())
    add("basic_auth", t, f'{{"auths": {{"registry.example.com": {{"auth": "{t}"}}}}}}', "json")
    t = "00" + rnd(B64URL, 40)
    add("okta_token", t, f"curl -H 'Authorization: SSWS {t}' https://fake.okta.com/api/v1/users", "shell")
    t = generic_secret()
    add("secret_assignment", t, f"env:\n  - name: API_TOKEN\n    value: {t}\n", "k8s")
    t = generic_secret()
    add("secret_assignment", t, f'{{\\"client_secret\\": \\"{t}\\"}}', "escaped-json")
    t = with_run(lambda: rnd(B62, 40))
    add("secret_assignment", t, f"$ tool login --api-token {t}", "flag")


# ------------------------------------------------------------------ negatives

def uuid4() -> str:
    h = rnd(HEX, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{R.choice('89ab')}{h[17:20]}-{h[20:]}"


def not_luhn(prefix: str, length: int) -> str:
    while True:
        n = prefix + rnd(string.digits, length - len(prefix))
        if not luhn_ok(n):
            return n


def bad_iban() -> str:
    good = iban()
    check = int(good[2:4])
    return good[:2] + f"{(check + R.randrange(1, 90)) % 100:02d}" + good[4:]


def negatives() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def add(kind: str, text: str, near: str | None = None) -> None:
        row = {"id": f"{kind}-{sum(1 for o in out if o['kind'] == kind) + 1:03d}", "kind": kind, "text": text}
        if near:
            row["near"] = near
        out.append(row)

    for rule, texts in lookalikes().items():
        for text in texts:
            add("lookalike", text, rule)

    for _ in range(12):
        add("uuid", R.choice([
            "2026-11-21T10:00:00Z INFO request_id={u} status=200 duration_ms=41",
            '{{"id": "{u}", "type": "session", "parent": "{v}"}}',
            "GET /api/v1/sessions/{u}/messages?limit=50 HTTP/1.1",
            "Created volume {u}; attached to instance i-0{h}.",
            "trace_id: {u}\nspan_id: {h}",
        ]).format(u=uuid4(), v=uuid4(), h=rnd(HEX, 16)))
    for _ in range(12):
        sha = rnd(HEX, 40)
        add("git_sha", R.choice([
            f"commit {sha}\nAuthor: Jane Doe <jane>\nDate:   Fri Nov 21 10:00:00 2026 +0100\n\n    Fix flaky test",
            f"Merge pull request #4211 from team/feature-x ({sha[:7]})",
            f"$ git checkout {sha}\nHEAD is now at {sha[:7]} Bump version",
            f"pip install git+https://github.com/example/lib.git@{sha}",
            f"{sha[:12]} (HEAD -> main, origin/main) Refactor parser",
            f"Bisecting: 12 revisions left to test after this (roughly 4 steps)\n[{sha}] Add cache",
        ]))
    for _ in range(12):
        h = rnd(HEX, 64)
        add("sha256", R.choice([
            f"{h}  sessctl-0.1.0-py3-none-any.whl",
            f"sha256:{h}",
            f"docker pull ghcr.io/example/app@sha256:{h}",
            f'"integrity": "sha256-{base64.b64encode(bytes.fromhex(h)).decode()}"',
            f"SHA256 ({rnd(string.ascii_lowercase, 6)}.tar.gz) = {h}",
            f"Expected hash {h[:32]}\n     got hash {rnd(HEX, 32)}",
        ]))
    for _ in range(14):
        blob = base64.b64encode(R.randbytes(R.choice([48, 96, 300]))).decode()
        add("base64", R.choice([
            f"data:image/png;base64,{blob}",
            f'{{"attachment": "{blob}", "mime": "application/octet-stream"}}',
            f"Content-Transfer-Encoding: base64\n\n{blob}\n",
            f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{rnd(B64, 43)} jane@laptop",
            f"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ{rnd(B64, 300)} deploy@ci",
            f"nonce={base64.b64encode(R.randbytes(16)).decode()} sig={base64.urlsafe_b64encode(R.randbytes(32)).decode()}",
            f"- {blob[:60]}\n+ {blob[:59]}A",
        ]))
    for body_kind in ("PUBLIC KEY", "CERTIFICATE", "RSA PUBLIC KEY", "CERTIFICATE REQUEST", "PGP PUBLIC KEY BLOCK"):
        body = "MIIB" + rnd(B64, 200)
        lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
        add("pem_public", f"-----BEGIN {body_kind}-----\n{lines}\n-----END {body_kind}-----")
    for _ in range(14):
        add("version", R.choice([
            "Upgraded numpy 1.26.4 -> 2.1.3, pandas 2.2.2 -> 2.2.3 and scipy to 1.14.1.",
            f"sessctl {R.randrange(3)}.{R.randrange(20)}.{R.randrange(30)} (Python 3.11.7, linux x86_64)",
            "npm i lodash@4.17.21 @types/node@20.11.30 react@18.3.1",
            f"v{R.randrange(10)}.{R.randrange(10)}.{R.randrange(10)}-rc.{R.randrange(5)}+build.{R.randrange(9999)}",
            "requires-python = \">=3.11\"\ndependencies = [\"click>=8.2\", \"httpx>=0.27\"]",
            f"Chrome/{R.randrange(100, 130)}.0.{R.randrange(6000, 6999)}.{R.randrange(200)} Safari/537.36",
            f"kernel 6.{R.randrange(12)}.{R.randrange(50)}-{R.randrange(100)}-generic #{R.randrange(200)}-Ubuntu SMP",
            "go 1.22.3\nrequire golang.org/x/net v0.25.0\nrequire github.com/spf13/cobra v1.8.0",
            "openjdk version \"21.0.2\" 2024-01-16 LTS",
            f"image: postgres:16.{R.randrange(5)}-alpine3.{R.randrange(15, 20)}",
        ]))
    for _ in range(16):
        add("date", R.choice([
            f"2026-{R.randrange(1, 13):02d}-{R.randrange(1, 29):02d}T{R.randrange(24):02d}:{R.randrange(60):02d}:00+01:00",
            f"Date: Fri, {R.randrange(1, 29)} Nov 2026 10:{R.randrange(60):02d}:00 +0100",
            f"last_login={1700000000 + R.randrange(10**8)} ts_ms={1700000000000 + R.randrange(10**11)}",
            f"Meeting moved to {R.randrange(1, 13)}/{R.randrange(1, 29)}/2026 at 14:30 (UTC-05:00).",
            f"Backups: 2026-11-{R.randrange(1, 29):02d} 03:00, 2026-11-{R.randrange(1, 29):02d} 03:00, retention 30d",
            f"week {R.randrange(1, 53)} of 2026, Q{R.randrange(1, 5)} FY26, day 2026.{R.randrange(1, 365):03d}",
            f"{R.randrange(1, 29):02d}.{R.randrange(1, 13):02d}.2026 {R.randrange(24):02d}:{R.randrange(60):02d}",
            f"cron: 0 {R.randrange(24)} * * 1-5  # runs at {R.randrange(24)}:00",
        ]))
    for _ in range(30):
        add("number", R.choice([
            f"Order #{not_luhn('4', 16)} shipped; tracking 1Z{rnd(UP36, 16)}",
            f"Invoice INV-{R.randrange(2020, 2027)}-{R.randrange(10**6):06d} due in 30 days",
            f"Reference number: {not_luhn(R.choice('3456'), 16)}",
            f"card ending in {R.randrange(10000):04d}, auth code {rnd(UP36, 6)}",
            f"ISBN 978-{R.randrange(10)}-{R.randrange(100, 999)}-{R.randrange(10000, 99999)}-{R.randrange(10)}",
            f"Customer ID {not_luhn(R.choice('123456789'), 13)} (account {R.randrange(10**9)})",
            f"Ticket {not_luhn('5', 16)[:4]} {not_luhn('5', 16)[4:8]} {R.randrange(1000, 9999)} {R.randrange(1000, 9999)}x",
            f"The quantity was {R.randrange(10**6)} units across {R.randrange(100)} warehouses.",
            f"{not_luhn('4111', 16)}",
            f"tx 0x{rnd(HEX, 64)} confirmed in block {R.randrange(10**7, 10**8)}",
            f"phone-like id 1-800-{R.randrange(100, 999)}-{R.randrange(1000, 9999)} (toll free)",
            f"Parcel {R.randrange(10**19, 10**20)} is out for delivery.",
            f"IBAN (invalid, check digits): {bad_iban()}",
            f"SSN-like but invalid: {R.choice(['000', '666', '9' + rnd(string.digits, 2)])}-{R.randrange(1, 99):02d}-{R.randrange(1, 9999):04d}",
            f"Zip {R.randrange(10000, 99999)}-{R.randrange(1000, 9999)}, unit {R.randrange(1, 99)}-{R.randrange(1, 99)}-{R.randrange(1000, 9999)}",
            f"part no. {R.randrange(100, 999)}-{R.randrange(10, 99)}-{R.randrange(1000, 9999)}-A",
            f"serial {R.randrange(100, 999)}-00-{R.randrange(1000, 9999)}",
        ]))
    for _ in range(20):
        add("price_math", R.choice([
            f"Total: ${R.randrange(1, 99999):,}.{R.randrange(100):02d} (incl. VAT {R.randrange(5, 25)}%)",
            f"{R.randrange(100)} + {R.randrange(100)} = {R.randrange(200)}; 2^{R.randrange(32)} = {2 ** R.randrange(32)}",
            f"x = {R.random():.6f} * 10^{R.randrange(-9, 9)} ± {R.random():.3f}",
            f"EUR {R.randrange(1000)},{R.randrange(100):02d} / GBP {R.randrange(1000)}.{R.randrange(100):02d}",
            "y = W@x + b  # matrix product\nz = a @ b.T",
            f"f(x) = 3x^2 + {R.randrange(10)}x - 7, so f'(x)=6x+{R.randrange(10)}",
            f"lat {R.uniform(-90, 90):.6f}, lon {R.uniform(-180, 180):.6f}",
            f"[{', '.join(str(R.randrange(10**4)) for _ in range(12))}]",
            "1+1=2, 3+4=7, 10+20=30, +5 for effort, -3 penalty",
            f"{not_luhn(R.choice('1234567'), 16)} / {R.randrange(10**3)} ≈ {R.random() * 1e12:.2f}",
        ]))
    for _ in range(20):
        add("url", R.choice([
            f"https://example.com/search?q=python+regex&page={R.randrange(10)}",
            f"http://localhost:{R.randrange(1024, 65535)}/api/v1/health",
            "https://docs.example.org/en/latest/api.html#sessctl.sanitize.Sanitizer",
            f"http://[::1]:{R.randrange(1024, 65535)}/metrics",
            "https://user@git.example.com/team/repo.git",
            "ssh://git@github.com/example/sessctl.git",
            "git@github.com:example/sessctl.git",
            f"https://app.example.com:8443?redirect=https://example.com/@{rnd(string.ascii_lowercase, 6)}",
            f"https://cdn.example.net/assets/icon@2x.png?v={rnd(HEX, 8)}",
            f"s3://bucket-{rnd(string.ascii_lowercase, 5)}/logs/2026/11/21/app.log.gz",
            "file:///home/alice/projects/sessctl/README.md",
            f"https://www.example.com/profile/@{rnd(string.ascii_lowercase, 8)}",
            "postgres://localhost:5432/app?sslmode=disable",
            "https://example.com/a:b/c@d/e",
        ]))
    placeholders = [
        "OPENAI_API_KEY=sk-...", "export OPENAI_API_KEY=<your-key>", "api_key = os.environ[\"OPENAI_API_KEY\"]",
        "Set ANTHROPIC_API_KEY to your key (it starts with sk-ant-).",
        "token: ${GITHUB_TOKEN}", "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "password = os.environ['DB_PASSWORD']", "password: ${DB_PASSWORD}", "DB_PASSWORD=${DB_PASSWORD:-}",
        "password = getpass.getpass()", "password=get_password()", 'password: "{{ vault_db_password }}"',
        "Authorization: Bearer $TOKEN", 'headers = {"Authorization": f"Bearer {token}"}',
        "Authorization: Bearer <token>", "Authorization: Bearer YOUR_API_TOKEN_HERE",
        "Authorization: Bearer AccessTokenHere", "x-api-key: YourApiKeyGoesHere",
        "postgres://user:${PGPASSWORD}@db:5432/app", "mysql://root:<password>@localhost/test",
        '"password": ""', '"password": null', "password = None", "password: str", "PASSWORD = \"********\"",
        "AWS_SECRET_ACCESS_KEY=<secret>", "X-Api-Key: ${API_KEY}", "api-key: <your-azure-key>",
        "x-api-key: YOUR_ANTHROPIC_API_KEY", "curl -u $USER:$PASS https://ci.example.com", "curl -u admin: https://x",
        "mysql -h db -P3306 -uroot -p", "mysql -u root -p$MYSQL_ROOT_PASSWORD", "aws_secret_access_key = YOUR_SECRET_KEY",
        "//registry.npmjs.org/:_authToken=${NPM_TOKEN}", "hf_token = os.getenv('HF_TOKEN')",
        "Use your AKIA... key id here", "the key looks like AIza followed by 35 characters",
        "slack: xoxb-your-bot-token", "stripe.api_key = 'sk_test_...'", "sk_live_xxxxxxxxxxxxxxxxxxxxxxxx",
        "password=%s", "cursor.execute(\"UPDATE users SET password = ? WHERE id = ?\", (h, uid))",
        "password: !vault |\n  $ANSIBLE_VAULT;1.1;AES256", "PASSWORD=changeme_in_prod # see vault",
        "[REDACTED:openai_key] and [REDACTED:email] were removed earlier",
        "password = [REDACTED:password]", "postgres://app:[REDACTED:url_password]@db/app",
    ]
    placeholders.remove("PASSWORD=changeme_in_prod # see vault")  # that one is a real (bad) password
    for p in placeholders:
        add("placeholder", p)
    code = [
        "def check_password(password: str, hashed: bytes) -> bool:\n    return bcrypt.checkpw(password.encode(), hashed)",
        "user.set_password(new_password)\nuser.save(update_fields=[\"password\"])",
        "if password == confirm_password:\n    save(user, password=password)",
        "conn = psycopg.connect(host=host, user=user, password=password, dbname=db)",
        "password_hash = argon2.hash(password)", "password_min_length = 12", "passwordless: true",
        "bypass=true\ncompass=north", "PWD=/home/alice/projects\nOLDPWD=/home/alice", "pass: 42 fail: 0 skip: 3",
        "The password must be at least 12 characters long.", "Password: must contain a digit",
        "Reset your password at https://example.com/reset", "for (const pass of passes) { run(pass); }",
        "parser.add_argument('--password', help='database password')", "password = args.password",
        "password = self.config.password", "password: Optional[str] = None",
        "if not password:\n    raise ValueError('password required')", "echo $PWD",
        "<input type=\"password\" name=\"password\" autocomplete=\"current-password\">",
        "secret_key = settings.SECRET_KEY", "client_secret: ${CLIENT_SECRET}",
        "token = request.headers.get('Authorization', '').removeprefix('Bearer ')",
        "@app.route('/login', methods=['POST'])\ndef login():\n    ...",
        "@property\ndef email(self) -> str:\n    return self._email",
        "import sklearn  # pip install scikit-learn\nfrom sk-learn-contrib import thing",
        "the task-force and risk-assessment teams met on desk-level issues",
        "SELECT id, email FROM users WHERE email LIKE '%@%' LIMIT 10;",
        "@mentions like @alice and @bob-the-builder are notified",
        "@media (max-width: 600px) { .nav { display: none; } }",
        "Contact: alice at example dot com", "user@localhost is the default",
        "scp build.tar.gz deploy@ci-runner:/srv/releases/", "icon@2x.png icon@3x.png",
        "pip install 'sessctl @ git+https://github.com/example/sessctl'",
        "const re = /^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$/;",
        "eyJhbGciOiJIUzI1NiJ9 is just a base64 header without payload",
        "eyJrZXkiOiAidmFsdWUifQ==", "SG.example is not a key", "xoxo, see you tomorrow",
        "ghp_ tokens are 40 characters long", "AKIA is the prefix for long-term keys",
        "SKU-12345678 in stock", "SK-1234 flight to Oslo", "hf_hub_download(repo_id=\"org/model\")",
        "gsk_model_v2 was retrained", "pplx-api docs", "r8_ prefix", "npm_config_cache=/tmp/npm",
        "pypi-simple index at /simple/", "glpat- prefixed tokens rotate yearly",
        "My phone is 555-0100 and the office is 555-0199.",
        "Temperature +21.5°C, pressure 1013 hPa, humidity 40%",
        "ISO 8601 and SHA256 and AES256 and IPv6",
        "Windows error 0x80070005 at 0x00007FF6A1B2C3D4",
        "MAC 00:1A:2B:3C:4D:5E, IPv4 192.168.100.200, IPv6 fe80::1ff:fe23:4567:890a",
        "Ré­sumé: naïve café, Zürich → São Paulo, 東京 2026年11月21日",
        "Привет! Это обычный текст без секретов, версия 2.3.4.",
        "The IBAN format is CCkk BBBB BBBB BBBB; country code first.",
        "DE00 0000 0000 0000 0000 00 is a placeholder IBAN",
        "Use 4111 1111 1111 1112 to test a declined card.",
        "Sequence: 1234 5678 9012 3456 7890 1234",
        "bearer of bad news; the token economy; basic authentication is discouraged",
        "authorization: pending review by legal",
        "ERROR 1045 (28000): Access denied for user 'root'@'localhost' (using password: YES)",
        "BEGIN TRANSACTION; -----BEGIN block comment----- END;",
        "k8s: pod/web-7d9c8b5f4-x2x9k restarted 3 times",
        "arn:aws:iam::123456789012:role/deploy-role",
        "Bucket policy for arn:aws:s3:::example-logs/* updated",
        "+1 for this idea, +2 from me, +100 overall",
        "at 10:00+02:00 and 14:30-05:00",
        "--sk-color-primary-500-background: #fff;\n--sk-spacing-2x-large-gutter: 32px;",
        ".sk-btn-primary-2024-redesign { color: red }", "the x-api-key header is required for every call",
        "Set the api-key header to the key from the Azure portal.", "Private-Token auth is deprecated",
        "name: x-auth-token\nin: header\nrequired: true", "curl -u \"$USER\" https://x.example",
        "task-list-item-checkbox-enabled-state-2", "the default pass rate is 95%, pass: 12, fail: 0",
        "ssh -p 2222 deploy@host.example.com", "pg_dump -p 5432 -U app appdb > app.sql",
        "mysql> SELECT host, user FROM mysql.user;",
        f"hashes = [-678966196, {luhn_complete('4', 19)}, -820489388, {luhn_complete('6', 19)}]",
        f"snowflake ids: {luhn_complete('5', 18)}, {luhn_complete('3', 17)}",
        " 'pass': 'The \"pass\" statement\\n'\n          '********************\\n'",
        "        user_pass = (self.username + \":\" + self.password).encode('ascii')",
        "def connect(host, key_file=None,\n        key_password=None,\n        timeout=10):",
        "via the --username and --password options instead of the URL",
        '    "username": str,\n    "password": str,', "    def build(self, password: bytes,\n              rounds: int):",
        'AttributeOID.CHALLENGE_PASSWORD: "challengePassword",',
        'USER_PASSWD = "%s:%s" % (USER, PASSWD)', "user_pass = '{}:{}'.format(user, pw)",
        "EXAMPLES = [\n    [default]\n]\n[notes]\n    self.passwd = password_mgr",
        "password = default_password\nuser = default_user",
        "[notes]\nRotate the keys every quarter.\npassword = vault_password\n",
        '_SK_START = b"-----BEGIN OPENSSH PRIVATE KEY-----"\n_SK_END = b"-----END OPENSSH PRIVATE KEY-----"',
    ]
    for c in code:
        add("code_prose", c)
    prose = [
        "Can you summarize the meeting notes from Tuesday? We discussed the Q3 roadmap and hiring.",
        "The quick brown fox jumps over the lazy dog while the password manager syncs in the background.",
        "Our API returns 429 when you exceed 60 requests per minute; retry after the Retry-After header.",
        "Please rewrite this paragraph in a friendlier tone and keep it under 100 words.",
        "In 2026 the team shipped 14 releases, fixed 312 bugs and closed 1,024 issues.",
        "Explain the difference between symmetric and asymmetric encryption with an example.",
        "What's the time complexity of quicksort in the worst case, and why?",
        "Translate to French: the invoice is attached and payment is due within 30 days.",
        "Draft an email to the landlord about the broken heater in apartment 4B.",
        "List five ways to reduce AWS costs for a small startup running containers.",
        "The keynote starts at 9:30, lunch is at 12:15, and the workshop ends at 17:00.",
        "Compare PostgreSQL and SQLite for a desktop application with a single user.",
        "Why does my regex /a+b/ take so long on a string of 30 a's without a b?",
        "Gandalf said: 'You shall not pass!' and the bridge collapsed.",
        "Rate limits: 10k tokens/min for tier 1, 30k for tier 2, 450k for tier 4.",
        "The SSN field in the form should be masked, and the card field should use Luhn validation.",
        "We rotate all API keys every 90 days and store them in the vault, never in code.",
        "Set up SSH keys with ssh-keygen -t ed25519 -C 'laptop' and add the public key to the server.",
    ]
    for p in prose:
        add("prose", p)
    # Log lines and JSON documents mixing several look-alikes at once.
    for _ in range(40):
        add("log", R.choice([
            f"2026-11-21T{R.randrange(24):02d}:{R.randrange(60):02d}:{R.randrange(60):02d}.{R.randrange(1000):03d}Z INFO "
            f"[{uuid4()}] GET /v1/items/{R.randrange(10**6)} 200 {R.randrange(1000)}ms ua=\"curl/8.5.0\"",
            f"{R.randrange(1, 255)}.{R.randrange(255)}.{R.randrange(255)}.{R.randrange(255)} - - [21/Nov/2026:10:00:00 +0000] "
            f"\"POST /login HTTP/1.1\" 302 {R.randrange(10000)} \"-\" \"Mozilla/5.0\"",
            f'{{"level":"info","ts":{1763700000 + R.randrange(10**6)}.{R.randrange(10**6)},"msg":"cache hit","key":"user:{R.randrange(10**6)}",'
            f'"etag":"{rnd(HEX, 32)}","size":{R.randrange(10**7)}}}',
            f"Nov 21 10:00:{R.randrange(60):02d} host sshd[{R.randrange(99999)}]: Accepted publickey for deploy from "
            f"10.0.{R.randrange(255)}.{R.randrange(255)} port {R.randrange(1024, 65535)} ssh2: ED25519 SHA256:{rnd(B64, 43)}",
            f"E1121 10:00:00.{R.randrange(10**6):06d} {R.randrange(1, 99999)} reflector.go:{R.randrange(999)}] "
            f"failed to list *v1.Pod: Get \"https://10.96.0.1:443/api/v1/pods?limit=500\": dial tcp: i/o timeout",
            f"[{R.randrange(10**9)}] kernel: EXT4-fs (sda1): mounted filesystem {uuid4()} r/w with ordered data mode.",
            f"build #{R.randrange(10**4)} finished in {R.randrange(600)}s, artifact sha256:{rnd(HEX, 64)}",
            f'{{"event":"payment.succeeded","amount":{R.randrange(10**5)},"currency":"eur","id":"pi_{rnd(B62, 24)}","created":{1763700000 + R.randrange(10**6)}}}',
        ]))
    return out


def main() -> int:
    pos, neg = positives(), negatives()
    for name, rows in (("positives.jsonl", pos), ("negatives.jsonl", neg)):
        with (HERE / name).open("w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"{len(pos)} positives, {len(neg)} negatives", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
