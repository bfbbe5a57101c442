"""Sanitizer benchmark: corpus recall and false positives, throughput, pathological inputs.

    .venv/bin/python bench/bench_sanitize.py            # full run (a few minutes)
    .venv/bin/python bench/bench_sanitize.py --quick    # fewer repetitions
    .venv/bin/python bench/bench_sanitize.py --real-code [DIR]   # false-positive probe
    .venv/bin/python bench/bench_sanitize.py --startup  # import and first-sanitize cost
    .venv/bin/python bench/bench_sanitize.py --external DIR... [--detect-secrets PYTHON]
    .venv/bin/python bench/bench_sanitize.py --detect-secrets PYTHON   # side by side, our corpus

--external reads other projects' test fixtures (git checkouts of gitleaks,
detect-secrets, presidio, trufflehog; nothing of theirs is kept here) and
--detect-secrets runs detect-secrets (installed in a separate interpreter, never a
dependency of sessctl) on the same inputs.

Timings are medians of several repetitions, and every pathological input is compared
with ordinary text timed in the same run (the machine is shared and noisy, so ratios
within one run mean more than absolute figures). Nothing here asserts on time: it
prints, and exits 1 only when a target is missed so a human looks.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sessctl.sanitize import Sanitizer  # noqa: E402

CORPUS = ROOT / "tests" / "sanitize_corpus"
MB = 1_000_000

PROSE = """\
The meeting moved to Thursday because half the team was at the conference. We agreed to
ship the migration behind a flag, watch the error rate for a week, and only then delete
the old code path. Maria will write the runbook; John owns the dashboards. If latency at
the 95th percentile goes above 400 ms we roll back, no discussion needed. Remember that
the staging database is shared with the analytics team, so run the backfill at night and
keep batches under 10,000 rows. Questions go to the channel, not to direct messages, so
that everyone can see the answers. The retrospective is on the 14th at 3 pm.
"""


def load(name: str) -> list[dict]:
    with (CORPUS / name).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def expected(p: dict) -> str:
    out = p["text"].replace(p["secret"], f"[REDACTED:{p['rule']}]")
    for secret, rule in p.get("also", []):
        out = out.replace(secret, f"[REDACTED:{rule}]")
    return out


def times(fn: Callable[[], object], reps: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of `reps` calls.

    CPU time (process_time) is what the ratios use: this machine is shared, and other
    processes' load inflates wall time unevenly across a run of several seconds.
    """
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return wall, cpu


def median_times(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    wall, cpu = times(fn, reps)
    return statistics.median(wall), statistics.median(cpu)


# The mix the throughput figures have always used: per 306 positives, 359 negatives
# and 60 prose paragraphs, about one secret per 330 bytes.
_MIX_NEG, _MIX_PROSE = 359 / 306, 60 / 306


def mixed_text(pos: list[dict], neg: list[dict], size: int) -> str:
    """Chat-like text: prose, code, logs and JSON from the corpus, secrets included.

    Corpus snippets with prose paragraphs between, shuffled: about one secret per 330
    bytes, far denser than real conversations, so a conservative figure. The corpus
    grows with the rules (1,200 positives for 132 rules), so the positives are mixed
    with negatives and prose in fixed proportions, which keeps the density, and the
    figure, comparable from one corpus to the next.
    """
    rng = random.Random(7)
    parts: list[str] = []
    total = 0
    while total < size:
        n_neg = round(len(pos) * _MIX_NEG) if pos else len(neg)
        n_prose = round(len(pos) * _MIX_PROSE) if pos else 60
        negs = [neg[i % len(neg)]["text"] for i in rng.sample(range(max(n_neg, len(neg))), n_neg)] if neg else []
        items = [p["text"] for p in pos] + negs + [PROSE] * n_prose
        rng.shuffle(items)
        for item in items:
            parts.append(item)
            total += len(item) + 2
    return "\n\n".join(parts)[:size]


def char_runs(n: int) -> dict[str, str]:
    """Runs of one character class and huge lines: the classic backtracking traps."""
    rng = random.Random(11)
    b64 = base64.b64encode(rng.randbytes(n)).decode()[:n]
    printable = "".join(rng.choice(string.printable[:94] + " ") for _ in range(n))

    def rep(unit: str) -> str:
        return (unit * (n // len(unit) + 1))[:n]

    return {
        "run of 'a'": rep("a"),
        "run of digits": rep("7"),
        "base64 (one line)": b64,
        "base64url (one line)": b64.replace("+", "-").replace("/", "_"),
        "hex (one line)": "".join(rng.choice("0123456789abcdef") for _ in range(n)),
        "1 MB line of prose": rep(PROSE.replace("\n", " ")),
        "1 MB line of printable ASCII": printable,
        "many '@'": rep("@"),
        "'a@' repeated": rep("a@"),
        "'a@b.' repeated": rep("a@b."),
        "many '='": rep("="),
        "'a=' repeated": rep("a="),
        "many '-'": rep("-"),
        "many '.'": rep("."),
        "many '/'": rep("/"),
        "spaces": rep(" "),
        "newlines": rep("\n"),
        "tabs and CRLF": rep("\t\r\n"),
        "non-ASCII 'é'": rep("é"),
        "emoji and spaces": rep("😀 "),
    }


def dense_triggers(n: int) -> dict[str, str]:
    """Rule triggers repeated back to back: every few bytes a candidate to check."""

    def rep(unit: str) -> str:
        return (unit * (n // len(unit) + 1))[:n]

    return {
        "'sk-'": rep("sk-"),
        "'sk-proj-A1b2'": rep("sk-proj-A1b2"),
        "'eyJ'": rep("eyJ"),
        "'eyJhbGciOiJIUzI1NiJ9.'": rep("eyJhbGciOiJIUzI1NiJ9."),
        "'AKIA'": rep("AKIA"),
        "'ghp_'": rep("ghp_"),
        "'4111 ' (digit groups)": rep("4111 "),
        "'123-45-' (digit-dash)": rep("123-45-"),
        "'DE89 ' (IBAN start)": rep("DE89 "),
        "'+1 ' (phone start)": rep("+1 "),
        "'://'": rep("://"),
        "'://a:b@'": rep("://a:b@"),
        "'password='": rep("password="),
        "'password: '": rep("password: "),
        "'Authorization: Bearer '": rep("Authorization: Bearer "),
        "'-----BEGIN PRIVATE KEY-----'": rep("-----BEGIN PRIVATE KEY-----\n"),
        "'[REDACTED:email]'": rep("[REDACTED:email]"),
        "'x@example.com ' (all hits)": rep("x@example.com "),
        # The token pass's lookups: keys read backwards, dotted and base64 starts, tails.
        "'API_TOKEN=<16 random> ' (keyed)": rep("API_TOKEN=Ab1Cd2Ef3Gh4Ij5K "),
        "'\"etag\": \"<hex>\", ' (boring key)": rep('"etag": "0123456789abcdef0123", '),
        "'a' * 300 + '=' (key too long)": rep("a" * 300 + "=Ab1Cd2Ef3Gh4Ij5K "),
        "'hvs.' + run (dotted prefix)": rep("hvs.Ab1Cd2Ef3Gh4Ij5K "),
        "base64 with '.' every 17": rep("Ab1Cd2Ef3Gh4Ij5Kl."),
        "'x.' * n (one long chain)": rep("x."),
        "'--api-token ' + run (flags)": rep("--api-token Ab1Cd2Ef3Gh4Ij5K "),
        "'<k>' + run (XML)": rep("<k>Ab1Cd2Ef3Gh4Ij5K"),
        "'Q~' + run (infix)": rep("ab1Q~Ab1Cd2Ef3Gh4Ij5Kl "),
        "32 hex + '-us1' (tail)": rep("0123456789abcdef0123456789abcdef-us1 "),
        "'kind: Secret\\ndata:\\n'": rep("kind: Secret\ndata:\n  k: djE=\n"),
        "'?sv=1&sig='": rep("?sv=1&se=2&sig=Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9 "),
        "'hook'": rep("hook"),
    }


def real_code(root: Path) -> int:
    """Sanitize every .py file under root (default: the standard library) and show what
    was redacted. Real code holds few real secrets, so each hit is worth a look: author
    addresses and test fixtures are right, anything else is a false positive."""
    s = Sanitizer.from_config({})
    counts: dict[str, int] = {}
    shown: dict[str, int] = {}
    total = 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts and "site-packages" not in root.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        total += len(text)
        clean, found = s.sanitize(text)
        for rule, n in found.items():
            counts[rule] = counts.get(rule, 0) + n
            if shown.get(rule, 0) < 5 and rule != "email":
                shown[rule] = shown.get(rule, 0) + 1
                i = clean.find(f"[REDACTED:{rule}]")
                line = clean[clean.rfind("\n", 0, i) + 1:clean.find("\n", i) % (len(clean) + 1)]
                print(f"  {rule:16s} {path.relative_to(root)}: {line.strip()[:100]}")
    print(f"{total / MB:.1f} MB of .py under {root}: "
          + (", ".join(f"{r} {n}" for r, n in sorted(counts.items(), key=lambda x: -x[1])) or "nothing redacted"))
    return 0


# ------------------------------------------------------- other projects' fixtures
#
# Test cases written by other projects, read from their git checkouts at run time:
# each case is a text and whether their detector must flag it. Only literals and the
# generators those tests call (gitleaks' sample templates, a regex-based random string)
# are evaluated; their code is never run.

def _git_files(repo: Path, prefix: str, suffix: str) -> list[str]:
    import subprocess

    out = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", "HEAD", prefix],
                         capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if p.endswith(suffix)]


def _git_show(repo: Path, path: str) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True,
                          check=True).stdout.decode("utf-8", "replace")


_GO_ESC = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0", "a": "\a",
           "b": "\b", "f": "\f", "v": "\v"}


def _go_string(src: str, i: int) -> tuple[str, int] | None:
    """The Go string literal at src[i] ("..." or `...`) and the index after it."""
    if src[i] == "`":
        j = src.index("`", i + 1)
        return src[i + 1:j], j + 1
    if src[i] != '"':
        return None
    out, j = [], i + 1
    while src[j] != '"':
        c = src[j]
        if c == "\n":
            return None
        if c == "\\":
            e = src[j + 1]
            if e in _GO_ESC:
                out.append(_GO_ESC[e])
                j += 2
            elif e == "x":
                out.append(chr(int(src[j + 2:j + 4], 16)))
                j += 4
            elif e == "u":
                out.append(chr(int(src[j + 2:j + 6], 16)))
                j += 6
            else:
                out.append(e)
                j += 2
            continue
        out.append(c)
        j += 1
    return "".join(out), j + 1


def _go_skip(src: str, i: int) -> int:
    """Past a string literal or comment at i, else i + 1."""
    if src[i] in "\"`":
        r = _go_string(src, i)
        return r[1] if r else i + 1
    if src.startswith("//", i):
        j = src.find("\n", i)
        return len(src) if j < 0 else j
    return i + 1


def _go_block(src: str, start: int) -> tuple[str, int]:
    """The body of the {...} at or after start."""
    i = src.index("{", start)
    depth, j = 0, i
    while True:
        c = src[j]
        if c in "\"`" or src.startswith("//", j):
            j = _go_skip(src, j)
            continue
        depth += c == "{"
        depth -= c == "}"
        if c == "}" and depth == 0:
            return src[i + 1:j], j + 1
        j += 1


def _go_args(src: str, open_paren: int) -> list[str]:
    """The top-level arguments of the call whose "(" is at open_paren, as source with
    comments left out."""
    depth, i, args, cur = 0, open_paren, [], []
    while i < len(src):
        c = src[i]
        if src.startswith("//", i):
            i = _go_skip(src, i)
            continue
        if c in "\"`":
            j = _go_skip(src, i)
            cur.append(src[i:j])
            i = j
            continue
        if c in "([{":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                args.append("".join(cur))
                return [a.strip() for a in args if a.strip()]
        elif c == "," and depth == 1:
            args.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    return []


def _go_elements(body: str) -> list[str | None]:
    """The elements of a []string{...} body: the string where it is only literals
    joined by +, else None."""
    elems: list[str | None] = []
    parts: list[str] = []
    pure, seen, depth, i = True, False, 0, 0
    while i < len(body):
        c = body[i]
        if c in "\"`":
            r = _go_string(body, i)
            if r is None:
                pure, i = False, i + 1
                continue
            if depth == 0:
                parts.append(r[0])
            seen, i = True, r[1]
            continue
        if body.startswith("//", i):
            i = _go_skip(body, i)
            continue
        if c in "([{":
            depth, pure = depth + 1, False
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            if seen:
                elems.append("".join(parts) if pure and parts else None)
            parts, pure, seen = [], True, False
        elif c not in " \t\r\n+":
            pure, seen = False, True
        i += 1
    if seen:
        elems.append("".join(parts) if pure and parts else None)
    return elems


def regex_sample(pattern: str, rng: random.Random) -> str:
    """A random string matching a simple regex, the way gitleaks' tests make secrets."""
    import re._constants as c
    import re._parser as sre_parse

    words = string.ascii_letters + string.digits + "_"
    cats = {c.CATEGORY_DIGIT: string.digits, c.CATEGORY_WORD: words, c.CATEGORY_SPACE: " "}

    def charset(items: list) -> str:
        chars: list[str] = []
        for op, av in items:
            if op == c.LITERAL:
                chars.append(chr(av))
            elif op == c.RANGE:
                chars.extend(chr(x) for x in range(av[0], av[1] + 1))
            elif op == c.CATEGORY:
                chars.extend(cats.get(av, "a"))
            elif op == c.NEGATE:
                return string.ascii_lowercase + string.digits
        return "".join(chars) or "a"

    def gen(seq: list) -> str:
        out = []
        for op, av in seq:
            if op == c.LITERAL:
                out.append(chr(av))
            elif op in (c.NOT_LITERAL, c.ANY):
                out.append("x")
            elif op == c.IN:
                out.append(rng.choice(charset(av)))
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
                lo, hi, sub = av
                out.extend(gen(sub) for _ in range(rng.randint(lo, lo + 8 if hi > 10000 else hi)))
            elif op == c.SUBPATTERN:
                out.append(gen(av[-1]))
            elif op == c.BRANCH:
                out.append(gen(rng.choice(av[1])))
        return "".join(out)

    return gen(sre_parse.parse(pattern.replace("[[:alnum:]]", "[A-Za-z0-9]").replace("\\z", "\\Z")))


_GL_HELPERS = {"Numeric": "[0-9]{%s}", "Hex": "[a-f0-9]{%s}", "AlphaNumeric": "[a-z0-9]{%s}",
               "AlphaNumericExtendedShort": "[a-z0-9_-]{%s}", "AlphaNumericExtended": "[a-z0-9=_\\-]{%s}",
               "AlphaNumericExtendedLong": "[a-z0-9\\/=_\\+\\-]{%s}"}


def _split_plus(expr: str) -> list[str]:
    """A Go expression's terms joined by + at the top level (not inside literals)."""
    terms, depth, i, start = [], 0, 0, 0
    while i < len(expr):
        c = expr[i]
        if c in "\"`":
            i = _go_skip(expr, i)
            continue
        depth += c in "(["
        depth -= c in ")]"
        if c == "+" and depth == 0:
            terms.append(expr[start:i])
            start = i + 1
        i += 1
    terms.append(expr[start:])
    return [t.strip() for t in terms]


def _gl_value(expr: str, rng: random.Random) -> str | None:
    """gitleaks' test secret expressions: "literal" + secrets.NewSecret(regex) + ..."""
    import re

    out: list[str] = []
    for term in _split_plus(expr.strip().removesuffix("...")):
        if term[:1] in "\"`":
            r = _go_string(term, 0)
            if r is None or r[1] != len(term):
                return None
            out.append(r[0])
            continue
        m = re.match(r"secrets\.NewSecret\(", term)
        if not m:
            return None
        inner = _go_args(term, m.end() - 1)
        if len(inner) != 1:
            return None
        parts = []
        for piece in _split_plus(inner[0]):
            h = re.fullmatch(r'utils\.(\w+)\(\s*(?:"([^"]*)")?\s*\)', piece)
            if piece[:1] in "\"`" and (r := _go_string(piece, 0)):
                parts.append(r[0])
            elif h and h.group(1) == "Hex8_4_4_4_12":
                parts.append("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
            elif h and h.group(1) in _GL_HELPERS and h.group(2) is not None:
                parts.append(_GL_HELPERS[h.group(1)] % h.group(2))
            else:
                return None
        try:
            out.append(regex_sample(re.sub(r"^\\b|\\b$", "", "".join(parts)), rng))
        except Exception:  # a regex feature the sampler does not know
            return None
    return "".join(out)


def gitleaks_cases(repo: Path) -> list[dict]:
    """tps / fps of every rule in cmd/generate/config/rules, with GenerateSampleSecrets
    expanded through its own templates."""
    import re

    rng = random.Random(14)
    gen = _git_show(repo, "cmd/generate/config/utils/generate.go")
    body, _ = _go_block(gen, gen.index("samples := map[string]string{"))
    templates = [r[0] for line in body.splitlines()
                 if not line.strip().startswith("//") and (m := re.match(r'\s*"[^"]*"\s*:\s*', line))
                 and (r := _go_string(line, m.end()))]
    cases: list[dict] = []

    def add(file: str, positive: bool, text: str, secret: str | None = None) -> None:
        if text.strip():
            cases.append({"source": "gitleaks", "file": file, "positive": positive, "text": text, "secret": secret})

    for path in _git_files(repo, "cmd/generate/config/rules/", ".go"):
        src, file = _git_show(repo, path), path.rsplit("/", 1)[1]
        for m in re.finditer(r"\b(tps|fps)\s*(?::=|=)\s*", src):
            positive, rest = m.group(1) == "tps", src[m.end():]
            if rest.startswith("[]string"):
                for e in _go_elements(_go_block(src, m.end())[0]):
                    if e:
                        add(file, positive, e)
                continue
            call = re.match(r"(append|utils\.GenerateSampleSecrets)\(", rest)
            if not call:
                continue
            args = _go_args(src, m.end() + call.end() - 1)
            exprs = args[1:] if call.group(1) == "append" else [None]
            for a in exprs:
                g = re.match(r"utils\.GenerateSampleSecrets\(", a) if a is not None else None
                if a is None or g:
                    gargs = args if a is None else _go_args(a, g.end() - 1)
                    ident = _go_string(gargs[0], 0) if len(gargs) == 2 and gargs[0][:1] in "\"`" else None
                    secret = _gl_value(gargs[1], rng) if ident else None
                    if secret:
                        for t in templates:
                            add(file, positive, t.replace("{i}", ident[0]).replace("{I}", ident[0].upper())
                                .replace("{s}", secret), secret)
                elif a[:1] in "\"`" and len(e := _go_elements(a)) == 1 and e[0]:
                    add(file, positive, e[0])
    return cases


def trufflehog_cases(repo: Path) -> list[dict]:
    """The input / want pairs of every detector's pattern test."""
    import re

    cases: list[dict] = []
    for path in _git_files(repo, "pkg/detectors/", "_test.go"):
        if "integration" in path:
            continue
        src = _git_show(repo, path)
        consts = {m.group(1): r[0] for m in re.finditer(r"(?m)^\s*(\w+)\s*=\s*([\"`])", src)
                  if (r := _go_string(src, m.end() - 1)) and not src[r[1]:r[1] + 3].lstrip(" \t").startswith("+")}
        for m in re.finditer(r"\binput:\s*", src):
            i = m.end()
            if src[i] in "\"`":
                r = _go_string(src, i)
                if r is None or src[r[1]:r[1] + 5].lstrip().startswith("+"):
                    continue
                value, i = r
            else:
                ident = re.match(r"\w+", src[i:])
                if not ident or ident.group(0) not in consts or src[i + ident.end():i + ident.end() + 3].strip()[:1] \
                        in ("+", "(", "."):
                    continue
                value = consts[ident.group(0)]
            w = re.compile(r"\bwant:\s*").search(src, i)
            nxt = src.find("input:", i)
            if not w or 0 <= nxt < w.start():
                continue
            rest = src[w.end():w.end() + 20]
            if rest.startswith(("nil", "[]string{}")):
                positive = False
            elif rest.startswith("[]string{"):
                positive = bool(_go_elements(_go_block(src, w.end())[0]))
            else:
                continue
            cases.append({"source": "trufflehog", "file": path.split("/")[2], "positive": positive, "text": value})
    return cases


class _Literal:
    """Evaluates the literal parts of a Python test module: constants, str.format, %, +."""

    def __init__(self, tree) -> None:  # noqa: ANN001
        import ast

        self.names: dict[str, object] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    self.names[node.targets[0].id] = self(node.value)
                except Exception:  # not a literal: skip it
                    pass

    def __call__(self, node):  # noqa: ANN001, ANN204
        import ast

        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List)):
            return [self(e) for e in node.elts]
        if isinstance(node, ast.Name):
            return self.names[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod, ast.Mult)):
            a, b = self(node.left), self(node.right)
            return a + b if isinstance(node.op, ast.Add) else a % b if isinstance(node.op, ast.Mod) else a * b
        if isinstance(node, ast.JoinedStr):
            return "".join(v.value if isinstance(v, ast.Constant) else str(self(v.value)) for v in node.values)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            return self(node.func.value).format(*[self(a) for a in node.args],
                                                **{k.arg: self(k.value) for k in node.keywords})
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("encode",
                                                                                                      "decode"):
            return self(node.func.value)
        raise ValueError("not a literal")


def _parametrized(src: str):  # noqa: ANN202
    """(argument names, rows) of each @pytest.mark.parametrize, and the module literals."""
    import ast

    tree = ast.parse(src)
    ev = _Literal(tree)
    found = []
    for node in ast.walk(tree):
        for dec in getattr(node, "decorator_list", []):
            if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize" and len(dec.args) > 1:
                names = ev(dec.args[0])
                names = [n.strip() for n in names.split(",")] if isinstance(names, str) else names
                rows = []
                for elt in getattr(dec.args[1], "elts", []):
                    try:
                        rows.append(ev(elt))
                    except Exception:  # a row that is not all literals
                        pass
                found.append((names, rows))
    return found, ev.names


def detect_secrets_cases(repo: Path) -> list[dict]:
    """tests/plugins: (payload, should_flag) rows, and the keyword plugin's case lists."""
    cases: list[dict] = []
    for path in _git_files(repo, "tests/plugins/", "_test.py"):
        file = path.rsplit("/", 1)[1]
        found, names = _parametrized(_git_show(repo, path))
        for argnames, rows in found:
            for row in rows:
                if isinstance(row, list) and len(row) == len(argnames):
                    d = dict(zip(argnames, row))
                    text = next((d[k] for k in ("payload", "line", "content", "secret", "token", "text") if k in d), None)
                    flag = next((d[k] for k in ("should_flag", "expected") if k in d), None)
                    if isinstance(text, str) and isinstance(flag, bool):
                        cases.append({"source": "detect-secrets", "file": file, "positive": flag, "text": text})
        for var, value in names.items():
            if var.endswith("_TEST_CASES") and isinstance(value, list):
                cases += [{"source": "detect-secrets", "file": file, "positive": row[1] is not None, "text": row[0]}
                          for row in value if isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)]
    return cases


# Presidio recognizer tests for the PII sessctl covers (ip_address and phone are opt-in).
PRESIDIO_FILES = ("test_credit_card_recognizer.py", "test_iban_recognizer.py", "test_email_recognizer.py",
                  "test_us_ssn_recognizer.py", "test_ip_recognizer.py", "test_phone_recognizer.py")


def presidio_cases(repo: Path) -> list[dict]:
    cases: list[dict] = []
    for path in _git_files(repo, "presidio-analyzer/tests/", "_recognizer.py"):
        file = path.rsplit("/", 1)[1]
        if file not in PRESIDIO_FILES:
            continue
        found, _ = _parametrized(_git_show(repo, path))
        for argnames, rows in found:
            if "expected_len" not in argnames:
                continue
            for row in rows:
                if isinstance(row, list) and len(row) == len(argnames):
                    d = dict(zip(argnames, row))
                    text = next((v for k, v in d.items() if isinstance(v, str) and k != "entities"), None)
                    if isinstance(text, str):
                        cases.append({"source": "presidio", "file": file, "positive": d["expected_len"] > 0,
                                      "text": text})
    return cases


def external_cases(dirs: list[Path]) -> list[dict]:
    cases: list[dict] = []
    for d in dirs:
        if _git_files(d, "cmd/generate/config/rules/", ".go"):
            cases += gitleaks_cases(d)
        elif _git_files(d, "pkg/detectors/", "_test.go"):
            cases += trufflehog_cases(d)
        elif _git_files(d, "tests/plugins/", "_test.py"):
            cases += detect_secrets_cases(d)
        elif _git_files(d, "presidio-analyzer/tests/", ".py"):
            cases += presidio_cases(d)
        else:
            print(f"{d}: not a checkout of gitleaks, trufflehog, detect-secrets or presidio", file=sys.stderr)
    return cases


_DETECT_SECRETS = """
import json, os, sys, tempfile
from detect_secrets.core.scan import scan_file
from detect_secrets.settings import default_settings
texts = [json.loads(line) for line in sys.stdin]
out = []
with default_settings(), tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "input.txt")
    for t in texts:
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(t)
        out.append(sorted({s.secret_value or "" for s in scan_file(path)}))
json.dump(out, sys.stdout)
"""


def detect_secrets_findings(python: str, texts: list[str]) -> list[list[str]]:
    """What detect-secrets (default plugins and filters, as `detect-secrets scan` runs
    them) finds in each text, each written to its own .txt file."""
    import subprocess

    feed = "".join(json.dumps(t) + "\n" for t in texts)
    r = subprocess.run([python, "-c", _DETECT_SECRETS], input=feed, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def _score(rows: list[tuple[str, bool, bool]]) -> list[tuple[str, int, int, int, int]]:
    """Per source: positives, caught, negatives, flagged."""
    table: dict[str, list[int]] = {}
    for source, positive, hit in rows:
        t = table.setdefault(source, [0, 0, 0, 0])
        t[0 if positive else 2] += 1
        t[1 if positive else 3] += hit
    total = [sum(t[i] for t in table.values()) for i in range(4)]
    return [(k, *v) for k, v in sorted(table.items())] + [("all", *total)]


def _print_scores(title: str, scores: list[tuple[str, int, int, int, int]]) -> None:
    print(f"\n{title}")
    print(f"{'source':16s} {'recall':>22s} {'negatives flagged':>24s}")
    for source, npos, caught, nneg, flagged in scores:
        print(f"{source:16s} {caught:6d}/{npos:<6d} {caught / max(npos, 1):7.1%}"
              f"   {flagged:6d}/{nneg:<6d} {flagged / max(nneg, 1):7.1%}")


def external(dirs: list[Path], detect_secrets: str | None) -> int:
    """Recall and false positives on other projects' fixtures. sessctl catches a
    positive when it redacts something and, where the fixture names the secret (gitleaks'
    generated samples), that secret is gone; detect-secrets when it reports anything."""
    cases = external_cases(dirs)
    print(f"{len(cases)} cases: " + ", ".join(
        f"{src} {sum(c['positive'] for c in cases if c['source'] == src)}+/"
        f"{sum(not c['positive'] for c in cases if c['source'] == src)}-"
        for src in sorted({c["source"] for c in cases})))
    for label, table in (("sessctl, default rules", {}), ("sessctl, opt-in phone and ip_address on",
                                                          {"enable": ["phone", "ip_address"]})):
        s = Sanitizer.from_config(table)
        rows = []
        for c in cases:
            clean, counts = s.sanitize(c["text"])
            rows.append((c["source"], c["positive"], bool(counts) and (not c.get("secret") or c["secret"] not in clean)))
        _print_scores(label, _score(rows))
    if detect_secrets:
        found = detect_secrets_findings(detect_secrets, [c["text"] for c in cases])
        _print_scores("detect-secrets (default settings)",
                      _score([(c["source"], c["positive"], bool(f)) for c, f in zip(cases, found)]))
    return 0


def side_by_side(detect_secrets: str) -> int:
    """Our corpus through both tools: secrets and PII apart, since detect-secrets looks
    for secrets only."""
    pos, neg = load("positives.jsonl"), load("negatives.jsonl")
    pii = {"credit_card", "iban", "us_ssn", "email", "phone", "ip_address"}
    every = Sanitizer.from_config({"enable": ["phone", "ip_address"]})
    default = Sanitizer.from_config({})
    found = detect_secrets_findings(detect_secrets, [p["text"] for p in pos] + [n["text"] for n in neg])
    fpos, fneg = found[:len(pos)], found[len(pos):]
    rows_s, rows_d = [], []
    for p, f in zip(pos, fpos):
        kind = "PII" if p["rule"] in pii else "secrets"
        sanitizer = every if p["rule"] in ("phone", "ip_address") else default
        rows_s.append((kind, True, p["secret"] not in sanitizer.sanitize(p["text"])[0]))
        rows_d.append((kind, True, bool(f)))
    for n, f in zip(neg, fneg):
        rows_s.append(("negatives", False, default.sanitize(n["text"])[0] != n["text"]))
        rows_d.append(("negatives", False, bool(f)))
    print(f"our corpus: {len(pos)} positives ({sum(p['rule'] not in pii for p in pos)} secrets), "
          f"{len(neg)} negatives")
    _print_scores("sessctl (default rules; phone and ip_address positives with those rules on)", _score(rows_s))
    _print_scores("detect-secrets (default settings)", _score(rows_d))
    return 0


def startup() -> int:
    """Import time of sessctl.sanitize and the cost of the first sanitize (which builds
    the tables and compiles the patterns it needs), median of fresh interpreters."""
    import subprocess

    probe = ("import time; t0 = time.perf_counter(); import sessctl.sanitize as s; t1 = time.perf_counter(); "
             "z = s.Sanitizer.from_config({}); z.sanitize('hi there, nothing secret in here: version 1.2.3'); "
             "t2 = time.perf_counter(); z.sanitize('key sk-proj-AbCdEf1234567890AbCdEf1234567890AbCd, "
             "password=hunter22x, jane@example.com, DD_API_KEY=0123456789abcdef0123456789abcdef'); "
             "t3 = time.perf_counter(); print(t1 - t0, t2 - t1, t3 - t2)")
    # As installed: with bytecode (this environment may set PYTHONDONTWRITEBYTECODE,
    # which would time compiling the source instead), written by a first run.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True, cwd=ROOT, env=env)
    runs = [list(map(float, subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                            check=True, cwd=ROOT, env=env).stdout.split())) for _ in range(9)]
    med = [statistics.median(r[i] for r in runs) * 1e3 for i in range(3)]
    print(f"import sessctl.sanitize {med[0]:.1f} ms, first sanitize (a short clean message) {med[1]:.1f} ms, "
          f"then one with four secrets {med[2]:.1f} ms (median of 9 fresh interpreters)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--real-code", nargs="?", const="", metavar="DIR",
                    help="instead: redactions in real source files (default: the standard library)")
    ap.add_argument("--startup", action="store_true", help="instead: import and first-sanitize cost")
    ap.add_argument("--external", nargs="+", type=Path, metavar="DIR",
                    help="instead: recall on other projects' fixtures (git checkouts)")
    ap.add_argument("--detect-secrets", metavar="PYTHON",
                    help="an interpreter with detect-secrets installed: compare with it")
    args = ap.parse_args()
    if args.real_code is not None:
        import sysconfig

        return real_code(Path(args.real_code or sysconfig.get_paths()["stdlib"]))
    if args.startup:
        return startup()
    if args.external:
        return external(args.external, args.detect_secrets)
    if args.detect_secrets:
        return side_by_side(args.detect_secrets)
    reps = 3 if args.quick else 7
    ok = True

    pos, neg = load("positives.jsonl"), load("negatives.jsonl")
    every = Sanitizer.from_config({"enable": ["phone"]})
    with_ip = Sanitizer.from_config({"enable": ["phone", "ip_address"]})
    default = Sanitizer.from_config({})

    def by_rule(rule: str | None) -> Sanitizer:
        # ip_address apart: the corpus' logs hold addresses, negatives for every other rule.
        return with_ip if rule == "ip_address" else every

    exact = sum(by_rule(p["rule"]).sanitize(p["text"])[0] == expected(p) for p in pos)
    gone = sum(p["secret"] not in by_rule(p["rule"]).sanitize(p["text"])[0] for p in pos)
    altered_default = sum(default.sanitize(n["text"])[0] != n["text"] for n in neg)
    altered_every = sum(by_rule(n.get("near")).sanitize(n["text"])[0] != n["text"] for n in neg)
    rules = len({p["rule"] for p in pos})
    looks = sum("near" in n for n in neg)
    print("## Corpus")
    print(f"rules: {len(default.rules())} built-in; positives: {len(pos)} across {rules} rules; "
          f"negatives: {len(neg)}, {looks} of them look-alikes of one rule's format")
    print(f"recall (secret gone):             {gone / len(pos):7.2%}  ({gone}/{len(pos)})")
    print(f"recall (exact span and rule):     {exact / len(pos):7.2%}  ({exact}/{len(pos)})")
    print(f"negatives altered, default rules: {altered_default / len(neg):7.2%}  ({altered_default}/{len(neg)})")
    print(f"negatives altered, opt-ins on:    {altered_every / len(neg):7.2%}  ({altered_every}/{len(neg)})")
    ok &= exact / len(pos) >= 0.99 and altered_default / len(neg) <= 0.01

    size = 4 * MB
    mixed = mixed_text(pos, neg, size)
    prose = (PROSE * (size // len(PROSE) + 1))[:size]
    quiet = mixed_text([], neg, size)  # the same kinds of text without the secrets
    default.sanitize(mixed)  # warm up: compile the patterns
    every.sanitize(mixed)
    # Interleaved rounds: a noisy stretch of the shared machine hits every variant alike.
    runs: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in ("mixed", "every", "quiet", "prose")}
    jobs = {"mixed": lambda: default.sanitize(mixed), "every": lambda: every.sanitize(mixed),
            "quiet": lambda: default.sanitize(quiet), "prose": lambda: default.sanitize(prose)}
    for _ in range(reps):
        for key, job in jobs.items():
            wall, cpu = times(job, 1)
            runs[key][0].extend(wall)
            runs[key][1].extend(cpu)
    med = {k: (statistics.median(w), statistics.median(c)) for k, (w, c) in runs.items()}
    (w_mixed, c_mixed), (w_every, c_every) = med["mixed"], med["every"]
    (w_quiet, c_quiet), (w_prose, c_prose) = med["quiet"], med["prose"]
    nbytes = len(mixed.encode())
    redactions = sum(default.sanitize(mixed)[1].values())
    print(f"\n## Throughput (median of {reps} interleaved rounds; wall clock / CPU time)")
    print(f"mixed text {nbytes / MB:.1f} MB, {redactions} redactions:  "
          f"{nbytes / w_mixed / MB:5.1f} / {nbytes / c_mixed / MB:5.1f} MB/s  ({c_mixed / nbytes * 1e9:4.1f} ns/byte CPU)")
    print(f"same, every rule incl. phone:               "
          f"{nbytes / w_every / MB:5.1f} / {nbytes / c_every / MB:5.1f} MB/s")
    print(f"look-alikes and prose {len(quiet) / MB:.1f} MB, no secrets:  "
          f"{len(quiet) / w_quiet / MB:5.1f} / {len(quiet) / c_quiet / MB:5.1f} MB/s  ({c_quiet / len(quiet) * 1e9:4.1f} ns/byte CPU)")
    print(f"plain prose {len(prose) / MB:.1f} MB, no redactions:          "
          f"{len(prose) / w_prose / MB:5.1f} / {len(prose) / c_prose / MB:5.1f} MB/s  ({c_prose / len(prose) * 1e9:4.1f} ns/byte CPU)")

    # The reference for the tables: mixed-text samples taken before, between and after
    # them, so that the ratios do not hinge on how busy the machine was in one minute.
    mixed_wall, mixed_samples = list(runs["mixed"][0]), list(runs["mixed"][1])
    per_byte_prose = c_prose / len(prose)

    def per_byte_mixed_now() -> float:
        wall, cpu = times(lambda: default.sanitize(mixed), 2)
        mixed_wall.extend(wall)
        mixed_samples.extend(cpu)
        return statistics.median(mixed_samples) / nbytes


    def table(title: str, big: dict[str, str], small: dict[str, str], bound: float | None) -> bool:
        per_byte_mixed = per_byte_mixed_now()
        print(f"\n## {title}")
        print(f"{'input (1 MB)':34s} {'ns/byte':>8s} {'vs mixed':>9s} {'vs prose':>9s} {'1MB/256KB':>10s}")
        print(f"{'':34s} {'(median)':>8s} {'':>9s} {'':>9s} {'(min)':>10s}")
        good = True
        worst = 0.0
        for name, text in big.items():
            _, big_cpu = times(lambda: default.sanitize(text), reps)
            _, small_cpu = times(lambda: default.sanitize(small[name]), reps)
            pb_big = statistics.median(big_cpu) / len(text)
            ratio = pb_big / per_byte_mixed
            # Linearity: per-byte cost at 1 MB over that at 256 KB, each the fastest of
            # the repetitions (the figure least disturbed by other processes).
            linear = (min(big_cpu) / len(text)) / (min(small_cpu) / len(small[name]))
            worst = max(worst, ratio)
            flags = []
            if bound is not None and ratio > bound:
                flags.append("slower than mixed")
            if linear > 1.5:
                flags.append("NOT LINEAR?")
            good &= not flags
            print(f"{name:34s} {pb_big * 1e9:8.1f} {ratio:9.2f} {pb_big / per_byte_prose:9.2f} {linear:10.2f}"
                  + ("  <-- " + ", ".join(flags) if flags else ""))
        print(f"worst per-byte ratio to mixed text: {worst:.2f} "
              f"(mixed text: median of {len(mixed_samples)} runs, {per_byte_mixed * 1e9:.1f} ns/byte)")
        return good

    ok &= table("Character runs and huge lines (target: per byte <= mixed text)",
                char_runs(MB), char_runs(MB // 4), 1.0)
    ok &= table("Rule triggers back to back (target: linear; each is a candidate checked in Python)",
                dense_triggers(MB), dense_triggers(MB // 4), None)
    per_byte_mixed_now()
    # The throughput verdict: all mixed-text runs, spread over the whole benchmark.
    mb_wall = nbytes / statistics.median(mixed_wall) / MB
    mb_cpu = nbytes / statistics.median(mixed_samples) / MB
    print(f"\n## Throughput verdict: mixed text over the whole run ({len(mixed_samples)} runs, target >= 20 MB/s)")
    print(f"median {mb_wall:.1f} MB/s wall clock, {mb_cpu:.1f} MB/s CPU time; CPU-time range "
          f"{nbytes / max(mixed_samples) / MB:.1f} - {nbytes / min(mixed_samples) / MB:.1f} MB/s")
    ok &= mb_cpu >= 20
    print("all targets met" if ok else "SOME TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
