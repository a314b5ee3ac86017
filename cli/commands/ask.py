"""`kb ask QUESTION` / `kb ask --file F`"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from kb.cli import inputs, options, render

Backend = Annotated[Optional[str], typer.Option(
    envvar="KB_BACKEND", show_default=False,
    help="An OpenAI-compatible server (vLLM, SGLang, llama.cpp, kb serve) writes the answer: its URL; "
         "its API key from $KB_BACKEND_API_KEY or $OPENAI_API_KEY.")]
BackendModel = Annotated[Optional[str], typer.Option(
    show_default=False, help="The model name to ask the --backend server for (default: the server's).")]


def ask(
    text: options.Question = None,
    db: options.Db = None,
    k: options.Passages = 6,
    model: options.Generator = None,
    draft: options.Draft = None,
    max_tokens: options.MaxTokens = 256,
    temperature: options.Temperature = 0.0,
    context_tokens: options.ContextTokens = 0,
    json_out: options.JsonLines = False,
    file: options.QuestionFile = None,
    collections: options.Collections = None,
    backend: Backend = None,
    backend_model: BackendModel = None,
) -> None:
    """Answer a question from the indexed documents, citing its sources, with a local model."""
    from kb.index.store import Store
    from kb.rag.ask import AskConfig, Asker

    questions = inputs.texts(text, file, "question")
    cfg = AskConfig(model=model, draft=draft, k=k, max_tokens=max_tokens, temperature=temperature,
                    context_tokens=context_tokens, collections=tuple(collections or ()), backend=backend,
                    backend_model=backend_model)
    asker = Asker(Store.open(db), cfg)
    if file is not None:  # every question in one generator run, printed when all are answered
        for answer in asker.ask_many(questions):
            if json_out:
                render.print_json(answer.to_json())
            else:
                render.answer(answer, render.console(), header=True)
    elif json_out:
        render.print_json(asker.ask(questions[0]).to_json())
    else:
        out = render.console()
        answer = asker.ask(questions[0], on_text=render.stream)
        render.answer(answer, out, streamed=True)
