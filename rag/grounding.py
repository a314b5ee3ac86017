"""Whether an answer rests on its sources, said plainly: the flag an answer carries, and its text with
only the citation markers the check (kb.rag.cite) kept.

Flags, first that applies:
- `echo`: the answer repeats the prompt's scaffolding (a source header, the `<<<`/`>>>` markers, a
  quoted `| ` line, a "Question:" line) instead of answering; small models do this;
- `restates`: every word of the answer is a word of the question, and it names nothing (a `quoted`
  name, an option) the question does not: nothing was answered;
- `unsupported`: no sentence of the answer is backed by a source (no checked citation): the model
  answered from its own knowledge, or guessed.
An answer without a flag is grounded. A flagged answer is still shown, with its flag (the terminal
says why; `--json` has `grounded` and `flag`); a marker [n] the check rejected is removed from the
text shown, so a reader never sees a citation that no source backs.
"""

from __future__ import annotations

import re

from kb.rag.cite import CITE

_SCAFFOLD = re.compile(r"Source \[\d+\], from|<<<|>>>|^\s*\| |\(lines \d+-\d+\)|^\s*Question:", re.M)
FLAGS = {"echo": "the model repeated its prompt instead of answering",
         "restates": "the model restated the question instead of answering",
         "unsupported": "no source backs this answer: check it before you rely on it"}


def flag(answer: str, question: str, cited: list[int]) -> str | None:
    """The answer's flag (see the module's docstring), or None when it is grounded."""
    from kb.index.analyzer import analyze

    if _SCAFFOLD.search(answer):
        return "echo"
    words = set(analyze(CITE.sub(" ", answer)))
    if words and words <= set(analyze(question)) and not _new_names(answer, question):
        return "restates"
    if not cited:
        return "unsupported"
    return None


_NAME = re.compile(r"`([^`\n]+)`|(?<![\w-])(--?[A-Za-z][\w-]*)")


def _new_names(answer: str, question: str) -> bool:
    """Whether the answer names something the question does not: a `quoted` name or an option
    (`--no-name` is made of the question's words "no" and "name", yet it is the answer)."""
    asked = question.lower()
    return any((m.group(1) or m.group(2)).lower() not in asked for m in _NAME.finditer(answer))


def shown(answer: str, cited: list[int]) -> str:
    """The answer's text with the markers the check did not keep removed (the spaces before them too)."""
    return re.sub(r"\s*\[(\d+)\]", lambda m: m.group(0) if int(m.group(1)) in cited else "", answer).strip()
