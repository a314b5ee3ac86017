"""A query's language guessed from its function words, for fusion weights per language (`kb eval
--tune` stores them where a store's labelled queries are in several languages). Keyword queries
have no function words: they get the store's weights."""

from __future__ import annotations

import re

from kb.index.analyzer import fold

# Frequent function words, accent-folded; words shared by two lists count for both.
FUNCTION_WORDS = {
    "en": set("the and of to a in is for with that on from by this are as an be it or how what which does "
              "do not into its".split()),
    "fr": set("le la les des du de un une et est pour dans sur par avec qui que en au aux ou ne pas se ce "
              "d l qu son sa ses leur".split()),
    "de": set("der die das und ist ein eine einen einer dem den des mit von fur auf zu im in nicht oder wie "
              "sich aus bei zum zur werden wird".split()),
    "es": set("el la los las de del y es un una en para por con que se al o como sus su lo".split()),
}
ANY_FUNCTION_WORD = frozenset().union(*FUNCTION_WORDS.values())
_WORD = re.compile(r"[^\W\d_]+")


def guess(text: str) -> str:
    """'en', 'fr', 'de' or 'es' where one language's function words are the most frequent in
    `text`, else '' (none, or a tie)."""
    words = _WORD.findall(fold(text))
    counts = sorted(((sum(w in vocab for w in words), lang) for lang, vocab in FUNCTION_WORDS.items()),
                    reverse=True)
    (best, lang), (second, _) = counts[0], counts[1]
    return lang if best > second else ""
