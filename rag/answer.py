"""What `kb ask` returns for a question: the answer with its sources, the citations checked
against them (kb.rag.cite), the exact prompt and token ids fed to the model, and timings."""

from __future__ import annotations

from dataclasses import dataclass, field

from kb.rag import grounding
from kb.rag.cite import check, model_citations
from kb.rag.sources import Source

DECLINED = "The indexed documents have nothing relevant to this question."


@dataclass
class Prepared:
    """A question ready for the generator: its sources and prompt, or declined before either."""

    question: str
    sources: list[Source]
    prompt: str = ""
    ids: list[int] = field(default_factory=list)
    retrieval_ms: float = 0.0
    declined: bool = False


@dataclass
class Answer:
    question: str
    answer: str
    sources: list[Source]
    cited: list[int]
    model: str
    prompt: str
    prompt_token_ids: list[int]
    stats: dict
    declined: bool = False
    model_cited: list[int] = field(default_factory=list)  # the model's own [n] markers, unchecked
    raw_answer: str = ""  # the model's text as written (`answer` drops the markers the check rejected)
    flag: str | None = None  # why the answer is not grounded (kb.rag.grounding), or None

    @property
    def grounded(self) -> bool:
        return not self.declined and self.flag is None

    def to_json(self) -> dict:
        return {"question": self.question, "answer": self.answer, "sources": [s.to_json() for s in self.sources],
                "cited": self.cited, "model_cited": self.model_cited, "declined": self.declined,
                "grounded": self.grounded, "flag": self.flag, "raw_answer": self.raw_answer,
                "model": self.model, "prompt": self.prompt, "prompt_token_ids": self.prompt_token_ids,
                "stats": self.stats}


def answered(p: Prepared, out, model: str) -> Answer:
    """The Answer from the generator's output `out` (kb.rag.engine.Output, or kb.rag.backend.Output
    for a server's answer) for `p`."""
    text = out.text.strip()
    stats = {"prompt_tokens": out.prompt_tokens, "cached_tokens": out.cached_tokens,
             "new_tokens": out.new_tokens, "retrieval_ms": round(p.retrieval_ms, 2),
             "ttft_ms": round(out.ttft_s * 1000, 2), "decode_tokens_per_s": round(out.decode_tokens_per_s, 2)}
    cited = check(text, [s.text for s in p.sources])
    return Answer(p.question, grounding.shown(text, cited), p.sources, cited, model, p.prompt, p.ids, stats,
                  model_cited=model_citations(text, len(p.sources)), raw_answer=text,
                  flag=grounding.flag(text, p.question, cited))


def declined(p: Prepared, model: str) -> Answer:
    """The Answer for a question declined without the model."""
    stats = {"prompt_tokens": 0, "cached_tokens": 0, "new_tokens": 0, "retrieval_ms": round(p.retrieval_ms, 2),
             "ttft_ms": 0.0, "decode_tokens_per_s": 0.0}
    return Answer(p.question, DECLINED, [], [], model, "", [], stats, declined=True)
