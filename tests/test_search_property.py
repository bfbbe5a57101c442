"""Property: a search finds exactly what decrypting every message and matching it by
hand finds, for generated texts and queries (case, accents, ligatures, punctuation,
scripts without spaces, phrases, words that are absent). The brute-force side reads the
messages back through `export` and matches them with its own whole-text normalization,
so it checks the blind index, the SQL scan, the confirmation and the per-character
normalization together."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessctl

pytestmark = pytest.mark.engines

# Words chosen to collide under folding: case, accents, ß/ss, ligatures, final sigma,
# a dotted capital I, full-width and mathematical letters, digits, CJK.
POOL = ["café", "CAFE", "Cafe\u0301", "naïve", "naive", "Straße", "strasse", "ﬁnance", "finance", "ΟΔΟΣ",
        "οδος", "İstanbul", "istanbul", "ＡＢＣ", "abc", "𝐀𝐁𝐂", "x1", "42", "東京", "京都", "タワー", "refund",
        "policy", "order", "e-mail", "mail", "don't", "under_score", "Ünïcödé", "unicode", "zzz",
        "the", "THE", "a", "Ä", "is", "i", "ı"]  # stopwords (not in the index) and their look-alikes
SEPARATORS = [" ", "  ", ", ", ". ", "\n", " - ", "...", " (", ") ", "/", "'", "_", "“", "”"]

word = st.one_of(st.sampled_from(POOL), st.text(alphabet="abcdeéÉßİı东京ー-_'", min_size=1, max_size=6))
text = st.lists(st.tuples(word, st.sampled_from(SEPARATORS)), min_size=1, max_size=12).map(
    lambda parts: "".join(w + s for w, s in parts).strip() or "x")
store_texts = st.lists(st.lists(text, min_size=1, max_size=4), min_size=1, max_size=5)


def _fold(s: str) -> str:
    """The spec's normalization, whole text at once (the product does it per character)."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", s).casefold())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


_SPLIT = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"


def _tokens(s: str) -> list[str]:
    return re.findall(f"[{_SPLIT}]|[^\\W_{_SPLIT}]+", _fold(s))


def _contains(toks: list[str], term: list[str]) -> bool:
    n = len(term)
    return any(toks[i:i + n] == term for i in range(len(toks) - n + 1))


def _brute_force(store: Any, query_terms: list[list[str]]) -> set[tuple[str, int]]:
    found = set()
    for s in store.export(all=True):
        for m in s.messages:
            toks = _tokens(m.content)
            if all(_contains(toks, t) for t in query_terms):
                found.add((s.id, m.seq))
    return found


@st.composite
def case(draw: Any) -> tuple[list[list[str]], list[tuple[str, bool]]]:
    sessions = draw(store_texts)
    all_texts = [t for msgs in sessions for t in msgs]
    queries = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["word", "words", "phrase", "absent", "variant"]))
        source = draw(st.sampled_from(all_texts))
        toks = _tokens(source) or ["x"]
        if kind == "word":
            queries.append((draw(st.sampled_from(toks)), False))
        elif kind == "words":
            other = _tokens(draw(st.sampled_from(all_texts))) or ["x"]
            queries.append((draw(st.sampled_from(toks)) + " " + draw(st.sampled_from(other)), False))
        elif kind == "phrase":
            i = draw(st.integers(0, len(toks) - 1))
            queries.append((" ".join(toks[i:i + draw(st.integers(1, 3))]), True))
        elif kind == "absent":
            queries.append(("qqqzzzq " + draw(st.sampled_from(toks)), False))
        else:  # the same word written another way: upper case, or from the pool
            queries.append((draw(st.sampled_from(POOL)).upper(), False))
    return sessions, queries


def _terms(query: str, phrase: bool) -> list[list[str]]:
    if phrase:
        return [_tokens(query)]
    return [t for t in (_tokens(w) for w in query.split()) if t]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case())
def test_search_equals_decrypt_and_match(generated: tuple[list[list[str]], list[tuple[str, bool]]]) -> None:
    sessions, queries = generated
    with sessctl.open() as store:
        store.delete(all=True)
        store.import_sessions([
            {"id": f"s{i}", "messages": [{"role": "user" if j % 2 == 0 else "assistant", "content": t}
                                         for j, t in enumerate(msgs)]}
            for i, msgs in enumerate(sessions)])
        for query, phrase in queries:
            terms = _terms(query, phrase)
            if not terms:
                continue
            q = '"' + query + '"' if phrase else query
            got = {(h.session, h.seq) for h in store.search(q, limit=0)}
            assert got == _brute_force(store, terms), (q, sessions)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_normalizing_per_character_is_normalizing_the_text(s: str) -> None:
    from sessctl import search_text

    assert search_text.tokens(s) == _tokens(s)
    assert search_text.normalize(search_text.normalize(s)) == search_text.normalize(s)
    assert [t for t, _, _ in search_text.token_spans(s)] == _tokens(s)
