"""`kb serve`: a warm kb for editors, agents, scripts and other servers. `service` holds the store's
searcher, generator and encoder on worker threads; `http` is the JSON API and the OpenAI-compatible
endpoints (`openai`), behind `guard`'s checks; `tools` is the MCP server. starlette, uvicorn and
mcp load only here: no other command imports them."""
