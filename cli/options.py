"""Every option and argument of `kb`, declared once as an `Annotated` alias; the commands in
kb.cli.commands take them as parameter types. Shared ones first, then by command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

def _store(value: Optional[Path]) -> Optional[Path]:
    """--db NAME: a store named in the config file (kb.cli.config), else a folder."""
    if value is None:
        return None
    from kb.cli.config import load, store_path

    return Path(store_path(load(), str(value)))


Db = Annotated[Optional[Path], typer.Option(
    "--db", envvar="KB_DB", show_default=False, callback=_store,
    help="Store: a folder, or a name from the config file's [stores] (default: $KB_DB, else the config "
         "file's store, else $XDG_DATA_HOME/kb/default).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON (one object).")]
JsonLines = Annotated[bool, typer.Option("--json", help="Print JSON (one object; one per line with --file).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary; errors only.")]

# kb index
Paths = Annotated[Optional[list[Path]], typer.Argument(
    help="Files and folders to index; none: refresh every collection of the store.", show_default=False)]
Watch = Annotated[bool, typer.Option(
    "--watch", help="After indexing, keep watching the collections' folders and index each change (Ctrl-C stops).")]
Name = Annotated[Optional[str], typer.Option(
    help="The collection's name (default: the folder's name); with one FOLDER.", show_default=False)]
Include = Annotated[Optional[list[str]], typer.Option(
    help="Index only files matching this pattern (gitignore syntax, e.g. '*.md'); repeatable; kept with the "
         "collection.", show_default=False)]
Exclude = Annotated[Optional[list[str]], typer.Option(
    help="Leave out files matching this pattern (gitignore syntax, e.g. 'drafts/'); repeatable; kept with the "
         "collection.", show_default=False)]
Context = Annotated[Optional[str], typer.Option(
    help="One line on what the collection is, shown to the model by kb ask.", show_default=False)]
Collections = Annotated[Optional[list[str]], typer.Option(
    "--collection", "-c", help="Search only this collection (kb collections lists them); repeatable.",
    show_default=False)]
CollectionName = Annotated[str, typer.Argument(help="A collection's name, or its folder.", show_default=False)]
Wait = Annotated[float, typer.Option(help="Seconds to wait while another kb index writes.")]
MaxFileMb = Annotated[float, typer.Option(help="Skip (with a warning) files larger than this.")]
FollowSymlinks = Annotated[bool, typer.Option(help="Follow symlinks that leave the folder.")]
GitIgnore = Annotated[bool, typer.Option(
    "--gitignore/--no-gitignore", help="Leave out what .gitignore files exclude (.kbignore always applies).")]
Rebuild = Annotated[bool, typer.Option(help="Drop the whole index and index PATHS afresh.")]
VectorIndex = Annotated[Optional[str], typer.Option(
    help="auto | flat | hnsw | ivf | none (BM25 only: nothing is embedded). Default: what the store "
         "was indexed with, else auto.", show_default=False)]
Encoder = Annotated[Optional[str], typer.Option(
    "--model", help="Encoder: a local Hugging Face folder, or an installed name (kb models list: "
                    "embeddinggemma-300m). Default: all-MiniLM-L6-v2, bundled.",
    show_default=False)]
Pooling = Annotated[str, typer.Option(help="auto | mean | cls")]
Dims = Annotated[int, typer.Option(help="Keep the first N dimensions of each vector (Matryoshka models such "
                                        "as embeddinggemma-300m: 512, 256, 128); 0: all.")]
QueryPrefix = Annotated[str, typer.Option(help="Prefix for queries, e.g. 'query: ' (E5).")]
PassagePrefix = Annotated[str, typer.Option(help="Prefix for passages, e.g. 'passage: '.")]
Devices = Annotated[str, typer.Option(
    help="GPUs to embed on, e.g. 0,1: one process per GPU (default: the first GPU, else CPU).")]

# kb query
QueryText = Annotated[Optional[list[str]], typer.Argument(
    help="What to search for: several words are one query, quoted or not.", show_default=False)]
Results = Annotated[int, typer.Option("-k", help="Number of results.")]
Mode = Annotated[str, typer.Option(help="bm25 | vector | hybrid")]
PathGlob = Annotated[Optional[str], typer.Option(
    "--path", help="Only documents under this folder or file (absolute, or relative to the indexed folder), "
                   "or whose relative path matches this GLOB (docs/*.md).")]
QueryFile = Annotated[Optional[Path], typer.Option(
    "--file", help="Run each line of this file as a query ('-' for stdin).")]
Format = Annotated[Optional[str], typer.Option(
    "--format", help="text | json | jsonl | csv | md | files | grep (path:line: for editors). Default: text.",
    show_default=False)]
FilesOnly = Annotated[bool, typer.Option("-l", "--files", help="Print only the paths of the matching files (--format files).")]
ContextLines = Annotated[int, typer.Option(
    "--context-lines", "-C", help="Also show this many lines of the document before and after each hit.")]
MinScore = Annotated[Optional[float], typer.Option(help="Leave out hits scoring below this.", show_default=False)]
Kinds = Annotated[Optional[list[str]], typer.Option(
    "--type", help="Only documents of this kind (markdown, text, rst, code, html, pdf, notebook) or extension (md, py); repeatable.",
    show_default=False)]
Since = Annotated[Optional[str], typer.Option(
    help="Only documents modified since: an age (30m, 12h, 3d, 2w, 1y) or a date (2026-11-01).", show_default=False)]
Rerank = Annotated[bool, typer.Option(
    "--rerank/--no-rerank", help="Judge the best hybrid hits with a local language model and reorder them.")]
RerankModel = Annotated[Optional[str], typer.Option(
    help="The reranking model: an installed name (kb models list) or a local folder "
         "(default: qwen2.5-coder-0.5b).", show_default=False)]
RerankDepth = Annotated[int, typer.Option(help="Hybrid hits the reranker judges.")]
QueryEncoder = Annotated[str, typer.Option(
    envvar="KB_QUERY_ENCODER",
    help="How queries are embedded: auto (numpy for BERT-family encoders, no torch), numpy, torch.")]

# kb get
GetTarget = Annotated[str, typer.Argument(
    help="PATH, PATH:LINE or PATH:FIRST-LAST; the path as results show it, or absolute.", show_default=False)]
LineNumbers = Annotated[bool, typer.Option("--line-numbers", "-n", help="Start each line with its number.")]

# kb check
Repair = Annotated[bool, typer.Option(
    help="Rebuild the derived files, drop a broken KV cache, delete orphan rows.")]

# kb eval
Queries = Annotated[Path, typer.Argument(help="BEIR queries JSONL (_id, text).", show_default=False)]
Qrels = Annotated[Path, typer.Argument(
    help="BEIR qrels TSV (query-id, corpus-id = path relative to the indexed folder, score).",
    show_default=False)]
Tune = Annotated[bool, typer.Option(help="Also try every fusion method and weight.")]
Apply = Annotated[bool, typer.Option(help="With --tune: store the best fusion for kb query.")]

# kb ask
Question = Annotated[Optional[list[str]], typer.Argument(
    help="The question: several words are one question, quoted or not.", show_default=False)]
Passages = Annotated[int, typer.Option("-k", help="Passages retrieved at most.")]
Generator = Annotated[Optional[str], typer.Option(
    "--model", help="A generator: an installed name (kb models list) or a local Hugging Face folder "
                    "(default: qwen2.5-coder-0.5b).", show_default=False)]
Draft = Annotated[Optional[str], typer.Option(
    "--draft", help="A smaller generator with the same tokenizer (an installed name or a local folder) that "
                    "guesses tokens for --model to check: same answer, fewer passes of the large model.",
    show_default=False)]
MaxTokens = Annotated[int, typer.Option(help="Answer length limit in tokens.")]
Temperature = Annotated[float, typer.Option(help="0: greedy (deterministic).")]
ContextTokens = Annotated[int, typer.Option(
    help="Prompt budget in tokens (0: the model's context minus --max-tokens).")]
QuestionFile = Annotated[Optional[Path], typer.Option(
    "--file", help="Answer each line of this file ('-' for stdin), all in one generator run.")]

# kb models
ModelName = Annotated[str, typer.Argument(metavar="NAME", help="A model name (kb models list).", show_default=False)]
