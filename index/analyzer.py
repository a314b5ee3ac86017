"""Text analysis for BM25: accent folding, lower-casing, English stop words and Snowball stemming,
and Chinese segmented with jieba. Documents and queries go through the same function.

Identifiers are terms of their own beside the words they split into: `CMAKE_BUILD_TYPE`,
`os.path.join`, `std::vector`, `C++` and `C#` give the whole name (folded, not stemmed) as well as
"cmake", "build", "type"..., so a query naming one finds it exactly while its words still match;
a CamelCase word also gives its parts ("SentenceTransformer": "sentence", "transform").

A chunk's terms (`chunk_terms`) come in two fields: its text's, and a title field, its file's name
and its heading path, so that a document named like the query, or a section headed so, ranks
first. The title's weight is applied when the BM25 cache is built (kb.index.bm25), so `kb eval
--tune` can choose it per store without reading a document again.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from functools import lru_cache

# Bump when analysis changes: it is part of the store's fingerprint, so old indexes are detected.
ANALYZER_VERSION = "lucene-stop+snowball-en+jieba-search+identifiers+title-field/3"

# Runs of CJK ideographs go to jieba; everything else splits on word characters.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_CJK_RUN = re.compile(rf"[{_CJK}]")

# Joined names (snake_case, dotted, ::), C++ / C#, and CamelCase words (a lower-case letter before a capital).
# A snake_case name is a word with a letter before an underscore that is not its last character;
# the regex finds words holding an underscore and `_snake` checks the rest, each in one pass (the
# pattern `\w*[A-Za-z]\w*_\w+` took quadratic time on a long word: 44 ms for 3,840 characters).
_JOINED = re.compile(r"(?<![\w.])(?P<dotted>[A-Za-z_]\w*(?:(?:\.|::)[A-Za-z_]\w*)+)|(?<![\w.])(?=\w*_)\w+")
_LETTER = re.compile(r"[A-Za-z]")
_PLUS = re.compile(r"(?<![\w+#])[A-Za-z](?:\+\+|#)(?![\w+#])")
_CAMEL = re.compile(r"\b[A-Za-z]*[a-z][A-Z]\w*")
_CAMEL_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")

# Lucene's English stop set. A longer list (125 words) was measured worse on bench/bm25.py
# (MRR@10 0.434 against 0.480): words like "between" or "only" carry meaning in queries.
STOP_WORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then
    there these they this to was will with""".split()
)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer: the C Snowball stemmers

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # it announces its dictionary load on stderr otherwise
    jieba.initialize()
    return jieba


def fold(text: str) -> str:
    """Lower-case and strip accents (é -> e, ß -> ss); CJK is unchanged."""
    if text.isascii():  # most text and nearly all code: nothing to decompose or strip
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    if decomposed.isascii():
        return decomposed
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def identifiers(text: str) -> list[str]:
    """The extra terms of `text`'s identifiers: whole joined names and C++/C# (folded), CamelCase parts
    (stemmed). Empty for text without any, which is most prose."""
    joined = (m.group().strip("_") for m in _JOINED.finditer(text) if m.group("dotted") or _snake(m.group()))
    wholes = [fold(m) for m in joined if len(m) >= 4 and ("_" in m or "." in m or ":" in m)]
    wholes += [fold(m) for m in _PLUS.findall(text)]
    parts = [fold(p) for word in _CAMEL.findall(text) for p in _CAMEL_PART.findall(word)]
    parts = [p for p in parts if p not in STOP_WORDS]
    return wholes + (_stemmer().stemWords(parts) if parts else [])


def _snake(word: str) -> bool:
    last = word.rfind("_", 0, len(word) - 1)
    return last > 0 and _LETTER.search(word, 0, last) is not None


def chunk_terms(text: str, title: str, heading: str) -> tuple[list[str], list[str]]:
    """A chunk's BM25 terms: (its text's, its title field's: the file's name without its
    extension, and the heading path; a code heading path also as a dotted name, `Console > print`
    as `Console.print`)."""
    field = f"{title}\n{heading}"
    if " > " in heading:
        field += "\n" + heading.replace(" > ", ".")
    return analyze(text), analyze(field)


def analyze_query(text: str, known) -> tuple[list[str], int]:
    """(the distinct terms of a query that are in the index, how many of its words are not);
    `known(terms)` returns those of `terms` that are in the index.

    CJK runs are not segmented with jieba here (its dictionary takes ~0.6 s to load, most of a cold
    query): since documents were cut in jieba's search mode, which emits every dictionary word
    inside a longer word, the indexed substrings of length 2..8 of a query run are the same terms;
    single characters count where no longer term covers them.
    """
    words, runs = [], []
    for match in _TOKEN.finditer(fold(text)):
        token = match.group()
        if _CJK_RUN.match(token):
            runs.append(token)
        elif token not in STOP_WORDS:
            words.append(token)
    stems = list(dict.fromkeys(_stemmer().stemWords(words))) if words else []
    terms = known(stems)
    missing = len(stems) - len(terms)
    terms += known([t for t in dict.fromkeys(identifiers(text)) if t not in terms])
    for run in runs:
        grams = {run[i:j]: i for i in range(len(run)) for j in range(i + 2, min(len(run), i + 8) + 1)}
        found = known(list(grams))
        covered = {i for g in found for i in range(grams[g], grams[g] + len(g))}
        terms += sorted(found, key=lambda g: (grams[g], len(g)))
        terms += known([c for i, c in enumerate(run) if i not in covered])
        missing += 0 if found else 1
    return list(dict.fromkeys(terms)), missing


def analyze(text: str) -> list[str]:
    """The BM25 terms of `text`, in order, with repeats."""
    folded = fold(text)
    if folded.isascii():  # no CJK run: one findall instead of a match per token
        words = [w for w in _TOKEN.findall(folded) if w not in STOP_WORDS]
        return (_stemmer().stemWords(words) if words else words) + identifiers(text)
    words: list[str] = []
    for match in _TOKEN.finditer(folded):
        token = match.group()
        if _CJK_RUN.match(token):
            words.extend(w for w in _jieba().cut_for_search(token) if w.strip())
        elif token not in STOP_WORDS:
            words.append(token)
    return (_stemmer().stemWords(words) if words else words) + identifiers(text)
