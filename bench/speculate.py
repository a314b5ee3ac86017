"""Speculation in `kb ask`'s setting: sample_corpus indexed, the answerable questions of
bench/ask_questions.jsonl asked one at a time with the default model (or --model), greedy, on
this machine (the CPU one); the same prompts decoded plainly, with prompt-lookup speculation
(kb.rag.speculate) and, given --draft, with a draft model's guesses (kb.rag.draft), in one
process, on one engine (the prompts' prefill is not timed: only decoding). Answers must be
identical; reported: decode tokens/s each way, over all answers and over those that quote
their sources (at least half of the answer's 4-token windows appear in the prompt).

    python bench/speculate.py [--model NAME|DIR] [--k 8] [--draft NAME|DIR] [--draft-k 4] [--max-tokens 128]
                              [--questions N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, ratio  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def quotes(prompt: list[int], answer: list[int], n: int = 4) -> bool:
    grams = {tuple(prompt[i:i + n]) for i in range(len(prompt) - n + 1)}
    windows = [tuple(answer[i:i + n]) for i in range(len(answer) - n + 1)]
    return bool(windows) and sum(w in grams for w in windows) >= len(windows) / 2


def decode(engine, prompts: list[list[int]], params, k: int, drafter=None) -> list:
    engine.scheduler.speculate, engine.scheduler.drafter = k, drafter
    return [engine.generate([p], params)[0] for p in prompts]


def seconds(out) -> float:
    return (len(out.token_ids) - 1) / out.decode_tokens_per_s if out.decode_tokens_per_s else 0.0


def main() -> None:
    from kb.rag.ask import DRAFT_GUESSES

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--k", type=int, default=8, help="guessed tokens checked per step")
    ap.add_argument("--draft", default=None, help="a draft model of the same tokenizer (kb.rag.draft)")
    ap.add_argument("--draft-k", type=int, default=DRAFT_GUESSES, help="the draft's guesses per step")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--questions", type=int, default=0, help="the first N answerable questions only (0: all)")
    args = ap.parse_args()
    from kb.index.indexer import index_paths
    from kb.index.store import Store
    from kb.rag.ask import AskConfig, Asker

    questions = [json.loads(line) for line in (REPO / "bench" / "ask_questions.jsonl").open()]
    questions = [q["question"] for q in questions if q["expect"]][:args.questions or None]
    with tempfile.TemporaryDirectory() as tmp:
        index_paths([REPO / "sample_corpus"], Path(tmp) / "store")
        asker = Asker(Store.open(Path(tmp) / "store"), AskConfig(model=args.model, max_tokens=args.max_tokens,
                                                                   draft=args.draft, speculate=0))
        prompts = [p.ids for p in map(asker.prepare, questions) if not p.declined]
        params, engine = asker._params(), asker.engine
        drafter = engine.scheduler.drafter
        decode(engine, prompts[:2], params, 0)  # warm-up
        plain = decode(engine, prompts, params, 0)
        ways = {"lookup": decode(engine, prompts, params, args.k)}
        if drafter is not None:
            decode(engine, prompts[:1], params, args.draft_k, drafter)  # the draft's warm-up
            ways["draft"] = decode(engine, prompts, params, args.draft_k, drafter)
    result = {"model": args.model or "default", "k": args.k, "answers": len(prompts)}
    for way, fast in ways.items():
        same = sum(a.token_ids == b.token_ids for a, b in zip(plain, fast))
        k = args.draft_k if way == "draft" else args.k
        print(f"{way} (k={k}): {len(prompts)} answers, identical to plain decoding: {same}")
        result[way] = {"k": k, "identical": same, **rows(prompts, plain, fast)}
        for name, r in result[way].items():
            if isinstance(r, dict):
                print(f"  {name:8} {r['answers']:3} answers  plain {r['plain_tok_s']:7.1f} tok/s  "
                      f"speculative {r['speculative_tok_s']:7.1f} tok/s  {r['speedup']}x")
    emit("speculate", draft_model=args.draft, **result)


def rows(prompts, plain, fast) -> dict:
    out = {}
    for name, pick in (("all", lambda i: True), ("quoting", lambda i: quotes(prompts[i], plain[i].token_ids))):
        idx = [i for i in range(len(prompts)) if pick(i)]
        toks = sum(len(plain[i].token_ids) - 1 for i in idx)
        t_plain, t_fast = sum(seconds(plain[i]) for i in idx), sum(seconds(fast[i]) for i in idx)
        out[name] = {"answers": len(idx), "plain_tok_s": round(toks / t_plain, 1) if t_plain else 0,
                     "speculative_tok_s": round(toks / t_fast, 1) if t_fast else 0,
                     "speedup": ratio(t_plain, t_fast) if t_fast else 0}
    return out


if __name__ == "__main__":
    main()
