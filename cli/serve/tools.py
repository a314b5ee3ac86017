"""kb as an MCP server (the official `mcp` SDK), for coding agents and editors: over stdio, or over
streamable HTTP at /mcp beside kb's HTTP API. Tools return the CLI's --json objects:

- `search(query, k, mode, path)`: the best passages (kb query);
- `ask(question, k)`: an answer from the documents, with its sources and checked citations (kb ask);
- `get(path)`: a document or a line range of it (PATH, PATH:10 or PATH:10-20), as indexed (kb get);
- `status()`: what the store holds (kb status).

Resources: `kb://documents` lists the indexed documents (the first 1,000 by path), and
`kb://document/{id}` is one of them as the index read it. Errors come back as tool errors with
the CLI's one-line message.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from kb.cli.serve.service import Service

INSTRUCTIONS = ("kb searches and answers from the user's indexed documents (notes, docs, code). Use `search` "
                "to find passages, `get` to read a document or its lines, `ask` for an answer with cited sources.")


def make_server(service: Service):
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from kb.cli.app import explain

    server = MCPServer(name="kb", instructions=INSTRUCTIONS, log_level="WARNING")

    async def done(submit, *args):
        """The result of a service call; its error as a tool error with the CLI's one line."""
        try:
            return await asyncio.wrap_future(submit(*args))
        except Exception as e:
            raise ToolError(explain(e)[0]) from None

    @server.tool()
    async def search(query: str, k: int = 10, mode: str = "hybrid", path: str | None = None) -> dict[str, Any]:
        """The k best passages for a query from the indexed documents. mode: hybrid (default), bm25 or
        vector; path: a glob on document paths."""
        return await done(service.query, query, k, mode, path)

    @server.tool()
    async def ask(question: str, k: int = 6, max_tokens: int = 256) -> dict[str, Any]:
        """An answer to a question from the indexed documents by a local model, citing its numbered
        sources; declined when the documents have nothing relevant. max_tokens bounds the answer."""
        return await done(service.ask, question, k, max_tokens)

    @server.tool()
    async def get(path: str) -> dict[str, Any]:
        """An indexed document, or lines of it: PATH, PATH:LINE or PATH:FIRST-LAST."""
        return await done(service.get, path)

    @server.tool()
    async def status() -> dict[str, Any]:
        """What the knowledge base holds and how it was built."""
        return await done(service.status)

    _resources(server, done, service)
    return server


def _resources(server, done, service: Service) -> None:
    @server.resource("kb://documents", mime_type="application/json")
    async def documents() -> list:
        """The indexed documents (the first 1,000 by path)."""
        return [{"id": i, "path": os.path.relpath(p, r), "root": r, "kind": k, "uri": f"kb://document/{i}"}
                for i, p, r, k in await done(service.documents, 1000)]

    @server.resource("kb://document/{doc_id}", mime_type="text/plain")
    async def document(doc_id: str) -> str:
        """One indexed document's text, as the index read it."""
        return (await done(service.document, doc_id))["text"]
