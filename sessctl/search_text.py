"""What `sessctl search` means by a word, a phrase, a match, a score and a snippet.
Pure functions over text; no SQL, no keys.

Normalization (the same for stored text and for queries, so matching is case- and
accent-insensitive): compatibility decomposition (NFKD), Unicode case folding, NFKD
again, then every nonspacing mark (category Mn) dropped. "Café", "CAFE" and "cafe" are one
word; "ﬁnance" is "finance"; "Straße" is "strasse". Normalizing is done character by
character (each step maps one character to a string without looking at its
neighbours), which is what lets a match found in the normalized text be mapped back to
the original characters for the snippet.

Tokens are maximal runs of letters and digits of the normalized text, except that each
Han ideograph, Hiragana or Katakana character is a token of its own (those scripts do
not separate words with spaces, so a query word written in them is matched as a
phrase of characters). Everything else (spaces, punctuation, symbols, `_`) separates
tokens.

A query is words and "double-quoted phrases". Every term must match: a word is a
token of the message; a phrase is a run of consecutive tokens. An unquoted word that
normalizes to several tokens ("e-mail", "東京") is a phrase.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from sessctl.errors import UsageError

# Scripts written without spaces between words: one token per character.
_SPLIT = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# ASCII text (most of it): separators become spaces and letters lower case in one C
# pass, then split() - about twice as fast as a regex, and indexing every message pays it.
_ASCII_FOLD = str.maketrans({**{chr(i): " " for i in range(128) if not chr(i).isalnum()},
                             **{c: c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}})
_token: re.Pattern[str] | None = None


def _token_re() -> re.Pattern[str]:
    # Compiled on first use: the Unicode pattern costs ~10 ms to compile, and most
    # processes (a send of ASCII text) never need it.
    global _token
    if _token is None:
        _token = re.compile(f"[{_SPLIT}]|[^\\W_{_SPLIT}]+")
    return _token

# Words the index leaves out: English function words and single Latin letters. Each is
# in most messages of any length, so its tag would narrow a search down to nearly every
# message while costing two bytes in nearly every index row (about a fifth of the tags
# of ordinary English prose), and the most frequent tags are what a frequency analysis
# of the index would recognise first. They are still searched for: a query's stopwords
# are matched in the decrypted candidates like its other words, they only do not pick
# the candidates (a query of stopwords alone reads every message in its scope).
STOPWORDS = frozenset("""
a about after all also am an and any are as at be been before but by can could did do
does for from had has have he her here him his how i if in into is it its just me more
most my no not now of on or our out she so some than that the their them then there
these they this those to too up us very was we were what when where which who why will
with would you your
""".split()) | frozenset("abcdefghijklmnopqrstuvwxyz")


def index_words(words: set[str]) -> set[str]:
    """The words of a message (or query) that the search index holds: all but STOPWORDS."""
    return words - STOPWORDS


# BM25's term-frequency saturation and length normalisation (the usual constants).
_K1 = 1.2
_B = 0.75
SNIPPET_CHARS = 120


def _norm_char(c: str) -> str:
    # Decompose first: a compatibility character may decompose to an upper-case
    # letter (U+1D400 MATHEMATICAL BOLD CAPITAL A is "A"), which must then be folded.
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", c).casefold())
    return "".join(x for x in folded if unicodedata.category(x) != "Mn")


_CHAR_CACHE: dict[str, str] = {}


def normalize(text: str) -> str:
    """Case- and accent-folded text (see the module docstring). Idempotent."""
    if text.isascii():
        return text.lower()  # ASCII folding is lower(); the common case, kept fast
    cache = _CHAR_CACHE
    out = []
    for c in text:
        n = cache.get(c)
        if n is None:
            n = c.lower() if c.isascii() else _norm_char(c)
            if len(cache) < 100_000:
                cache[c] = n
        out.append(n)
    return "".join(out)


def tokens(text: str) -> list[str]:
    """The tokens of a text, in order (normalized first)."""
    if text.isascii():
        return text.translate(_ASCII_FOLD).split()
    return _token_re().findall(normalize(text))


def token_spans(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) with start/end indexes into the ORIGINAL text, for snippets.
    Slower than tokens(): only for the few hits that are shown."""
    pieces: list[str] = []
    origin: list[int] = []  # normalized char index -> original char index
    for i, c in enumerate(text):
        n = normalize(c)
        pieces.append(n)
        origin.extend([i] * len(n))
    norm = "".join(pieces)
    origin.append(len(text))
    out = []
    for m in _token_re().finditer(norm):
        start = origin[m.start()]
        end = origin[m.end() - 1] + 1
        out.append((m.group(), start, end))
    return out


# --- queries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """Parsed search terms: each a tuple of tokens (one token: a word; more: a phrase)."""

    text: str
    terms: tuple[tuple[str, ...], ...]

    @property
    def words(self) -> set[str]:
        """Every distinct token the terms need (all must be in a matching message)."""
        return {t for term in self.terms for t in term}


def parse_query(text: str) -> Query:
    """Words and "quoted phrases" → Query. An unclosed quote runs to the end. A query
    with no letter or digit in it is a usage error (it could match nothing useful)."""
    terms: list[tuple[str, ...]] = []
    parts = text.split('"')
    for i, part in enumerate(parts):
        if i % 2:  # inside quotes
            term = tuple(tokens(part))
            if term:
                terms.append(term)
        else:
            for word in part.split():
                term = tuple(tokens(word))
                if term:
                    terms.append(term)
    unique = tuple(dict.fromkeys(terms))
    if not unique:
        raise UsageError(f"nothing to search for in {text!r}: give words made of letters or digits")
    return Query(text, unique)


# --- matching and ranking ------------------------------------------------------------------


def _count(toks: Sequence[str], term: tuple[str, ...]) -> int:
    if len(term) == 1:
        return toks.count(term[0])
    first, n, hits = term[0], len(term), 0
    for i, t in enumerate(toks):
        if t == first and tuple(toks[i:i + n]) == term:
            hits += 1
    return hits


def match(query: Query, text: str) -> tuple[int, tuple[int, ...]] | None:
    """None when the text does not match every term; else (its length in tokens, the
    occurrences of each term), what `score` needs."""
    toks = tokens(text)
    present = set(toks)
    if not query.words <= present:
        return None
    counts = tuple(_count(toks, term) for term in query.terms)
    if not all(counts):
        return None
    return len(toks), counts


def score(length: int, counts: Sequence[int], average_length: float) -> float:
    """BM25's term part, summed over the query's terms (each term weighs the same: the
    index cannot say how rare a word is without revealing it). More occurrences score
    higher with diminishing returns; a match in a short message beats one in a long one."""
    norm = _K1 * (1 - _B + _B * length / max(average_length, 1.0))
    return sum(tf * (_K1 + 1) / (tf + norm) for tf in counts)


def snippet(query: Query, text: str, width: int = SNIPPET_CHARS) -> str:
    """One line of about `width` characters around the first occurrence of a term,
    "…" where it was cut; whitespace collapsed."""
    spans = token_spans(text)
    toks = [t for t, _, _ in spans]
    first: tuple[int, int] | None = None
    for term in query.terms:
        n = len(term)
        for i in range(len(toks) - n + 1):
            if tuple(toks[i:i + n]) == term:
                if first is None or spans[i][1] < first[0]:
                    first = (spans[i][1], spans[i + n - 1][2])
                break
    start, end = first if first is not None else (0, 0)
    lead = max(0, min(start - width // 4, len(text) - width))
    stop = max(end, lead + width)
    # Do not cut a word in half at either end.
    while lead > 0 and not text[lead - 1].isspace() and lead < start:
        lead += 1
    while stop < len(text) and not text[stop].isspace() and stop - end < 40:
        stop += 1
    body = " ".join(text[lead:stop].split())
    return ("…" if lead > 0 else "") + body + ("…" if stop < len(text) else "")
