"""`kb serve` as clients meet it: the real server in a subprocess, its HTTP API through a real HTTP
client (urllib), MCP through the official SDK's own client over stdio and streamable HTTP. The
store is sample_corpus embedded with the tiny encoder; answers (the generator) are in the slow tier."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import SAMPLE, completes_like_fresh, kb, kb_json

pytest.importorskip("mcp")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None):
    """(status, parsed JSON) of one request; a body is sent as JSON (or `raw` bytes as they are)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})},
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def start(db, *args, env: dict | None = None):
    """A running `kb serve` (Popen, base URL), answering."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "serve", "--db", str(db), "--port", str(port), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NO_COLOR": "1", **(env or {})})
    return proc, answering(proc, f"http://127.0.0.1:{port}", 120)


def answering(proc, url: str, seconds: float) -> str:
    """`url` once the server process `proc` answers HTTP there (any status); it is killed if it
    does not within `seconds`, and its stderr is the failure if it exits."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2)
            return url
        except urllib.error.HTTPError:
            return url  # answering (a guard refused the bare request)
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read())
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the server at {url} did not start")


def stdio_params(store, model):
    """The MCP SDK's parameters for `kb serve --mcp stdio` on `store` with `model`."""
    from mcp.client.stdio import StdioServerParameters

    args = ["-m", "kb.cli", "serve", "--mcp", "stdio", "--db", str(store), "--model", str(model)]
    return StdioServerParameters(command=sys.executable, args=args, env={"NO_COLOR": "1", "KB_CONFIG": os.environ["KB_CONFIG"]})


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_encoder):
    db = tmp_path_factory.mktemp("serve") / "store"
    kb("index", SAMPLE, "--db", db, "--model", tiny_encoder, "--quiet")
    return db


@pytest.fixture(scope="module")
def server(store):
    proc, url = start(store, "--mcp", "http")
    yield url
    stop(proc)


def test_api_answers_with_the_clis_json(server, store):
    status, got = call(server, "/query", {"query": "sourdough starter feeding", "k": 3})
    assert status == 200
    want = kb_json("query", "sourdough starter feeding", "-k", "3", "--db", store)
    assert [(h["path"], h["start_line"]) for h in got["results"]] == [(h["path"], h["start_line"]) for h in want["results"]]
    assert set(got) == set(want)
    status, got = call(server, "/status")
    assert status == 200 and got["documents"] == kb_json("status", "--db", store)["documents"]
    status, got = call(server, "/get", {"path": "cooking/sourdough-starter.md:1-2"})
    assert status == 200 and got == kb_json("get", "cooking/sourdough-starter.md:1-2", "--db", store)


@pytest.mark.parametrize("path, body, code", [
    ("/query", {"query": ""}, 400), ("/query", {"query": "x", "k": 10_000}, 400), ("/query", {"query": "x", "k": "3"}, 400),
    ("/query", {"query": "x", "mode": "psychic"}, 400), ("/query", [1, 2], 400), ("/get", {"path": "no/such.md"}, 404),
    ("/v1/embeddings", {"input": []}, 400), ("/v1/chat/completions", {"messages": "hi"}, 400),
])
def test_bad_input_is_a_one_line_json_error(server, path, body, code):
    status, got = call(server, path, body)
    assert status == code
    assert set(got) == {"error"} and "\n" not in got["error"]["message"] and "Traceback" not in got["error"]["message"]


def test_not_json_and_oversize_bodies_are_refused(server):
    import http.client

    assert call(server, "/query", raw=b"{not json")[0] == 400
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/query")
    conn.putheader("Content-Length", str(2 << 20))  # refused from the header, before a byte is read
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"]["type"] == "too_large"


def test_host_and_origin_are_checked(server):
    port = server.rsplit(":", 1)[1]
    assert call(server, "/status", headers={"Host": "attacker.example"})[0] == 403
    assert call(server, "/status", headers={"Host": f"attacker.example:{port}"})[0] == 403
    assert call(server, "/status", headers={"Origin": "http://attacker.example"})[0] == 403
    assert call(server, "/status", headers={"Origin": "null"})[0] == 403
    assert call(server, "/status", headers={"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"})[0] == 200
    assert call(server, "/mcp", {}, headers={"Host": "attacker.example"})[0] == 403  # MCP's endpoint too


def test_a_token_is_required_off_loopback_and_checked_when_set(store):
    proc = kb("serve", "--db", store, "--host", "0.0.0.0", "--port", free_port(), check=2)
    assert "token" in proc.stderr and "Traceback" not in proc.stderr
    server, url = start(store, "--token", "s3cret")
    try:
        assert call(url, "/status")[0] == 401
        assert call(url, "/status", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert call(url, "/status", headers={"Authorization": "Bearer s3cret"})[0] == 200
    finally:
        stop(server)


def test_embeddings_are_the_stores_passage_vectors(server, store, tiny_encoder):
    from kb.embed import load_query_encoder
    from kb.embed.encoder import EmbedConfig
    from kb.index.store import Store

    status, got = call(server, "/v1/embeddings", {"input": ["a starter of flour and water", "WAL checkpoints"]})
    assert status == 200 and [d["index"] for d in got["data"]] == [0, 1] and got["usage"]["prompt_tokens"] > 0
    encoder = load_query_encoder(EmbedConfig(**Store.open(store).meta_json("embedding")["config"]))
    want = encoder.embed_passages([encoder.tokenizer.encode(t).ids for t in ("a starter of flour and water", "WAL checkpoints")])
    import numpy as np

    assert np.allclose(np.asarray([d["embedding"] for d in got["data"]]), want, atol=1e-5)


def test_mcp_over_streamable_http(server):
    from mcp import Client

    async def session():
        async with Client(server + "/mcp") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            found = await client.call_tool("search", {"query": "sourdough starter", "k": 2})
            listing = await client.read_resource("kb://documents")
            return names, found, listing
    names, found, listing = asyncio.run(session())
    assert names == {"search", "ask", "get", "status"}
    assert not found.is_error and found.structured_content["results"][0]["path"] == "cooking/sourdough-starter.md"
    assert "cooking/sourdough-starter.md" in listing.contents[0].text


def test_mcp_over_stdio_with_the_sdks_client(store, tiny_encoder):
    from mcp import Client

    # --model: any folder with a config.json will do, as a declined question never loads the generator
    params = stdio_params(store, tiny_encoder)

    async def session():
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            found = await client.call_tool("search", {"query": "sourdough starter", "k": 2, "mode": "bm25"})
            got = await client.call_tool("get", {"path": "cooking/sourdough-starter.md:1"})
            bad = await client.call_tool("get", {"path": "no/such/file.md"})
            status = await client.call_tool("status", {})
            asked = await client.call_tool("ask", {"question": "zqxv frobnicates the quux of the vorpal gimble"})
            return names, found, got, bad, status, asked
    names, found, got, bad, status, asked = asyncio.run(session())
    assert names == {"search", "ask", "get", "status"}
    assert found.structured_content["results"][0]["path"] == "cooking/sourdough-starter.md"
    assert got.structured_content["text"] == "# Keeping a sourdough starter alive"
    assert bad.is_error and "no indexed document" in bad.content[0].text
    assert status.structured_content["documents"] > 30
    assert asked.structured_content["declined"] and not asked.structured_content["sources"]  # no model loaded


def sse(url: str, path: str, body: dict) -> list[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream ("" for an unnamed event)."""
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    events, name = [], ""
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            line = line.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, line[6:]))
                name = ""
    return events


QUESTION = "How often is a sourdough starter fed?"


@pytest.fixture(scope="module")
def local_answer(store, smollm2) -> dict:
    """`kb ask --json` with kb's own engine (greedy, SmolLM2): what every backend must give."""
    return kb_json("ask", QUESTION, "--db", store, "--model", smollm2, "--max-tokens", "24")


@pytest.mark.slow
def test_ask_chat_and_ask_backend_on_the_generator(store, smollm2, local_answer):
    """/ask equals `kb ask --json` (greedy), streamed or not; chat completions, streamed or not,
    agree; and `kb ask --backend URL`, which sends the messages kb's own engine reads, gives the
    same answer, sources and citations through /v1/chat/completions. A server gone: exit 69."""
    proc, url = start(store, "--model", smollm2)
    question, want = QUESTION, local_answer
    try:
        status, got = call(url, "/ask", {"question": question, "max_tokens": 24})
        assert status == 200 and got["answer"] == want["answer"] and got["sources"] == want["sources"]
        events = sse(url, "/ask", {"question": question, "max_tokens": 24, "stream": True})
        pieces = [json.loads(d)["text"] for e, d in events if e == "text"]
        assert events[-1][0] == "answer" and json.loads(events[-1][1])["answer"] == got["answer"]
        assert "".join(pieces).strip() == got["raw_answer"].strip()
        chat = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12}
        status, whole = call(url, "/v1/chat/completions", chat)
        assert status == 200 and whole["choices"][0]["finish_reason"] in ("stop", "length")
        chunks = [d for _, d in sse(url, "/v1/chat/completions", {**chat, "stream": True})]
        assert chunks[-1] == "[DONE]"
        text = "".join(json.loads(c)["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
        assert text == whole["choices"][0]["message"]["content"]
        remote = kb_json("ask", question, "--db", store, "--backend", url, "--max-tokens", "24")
        assert remote["answer"] == want["answer"] and remote["sources"] == want["sources"]
        assert remote["cited"] == want["cited"] and remote["model"] == f"default at {url}"
        assert remote["stats"]["prompt_tokens"] == want["stats"]["prompt_tokens"] and remote["stats"]["new_tokens"] > 0
        assert remote["prompt_token_ids"] == [] and json.loads(remote["prompt"])[1]["role"] == "user"
    finally:
        stop(proc)
    gone = kb("ask", question, "--db", store, "--backend", url, check=69)
    assert gone.stderr.count("\n") == 1 and "cannot reach" in gone.stderr


@pytest.mark.slow
def test_ask_backend_against_a_server_kb_did_not_write(store, smollm2, local_answer, tmp_path):
    """`kb ask --backend` against Hugging Face's own OpenAI-compatible server (`transformers serve`,
    the same SmolLM2 folder, greedy): the same answer, sources and citations as kb's engine."""
    port = free_port()
    # started outside kb's checkout, whose kernels/ would hide the PyPI `kernels` transformers imports
    smollm2 = os.path.realpath(smollm2)  # the server resolves the model's path from its own folder
    proc = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve", str(smollm2),
                             "--device", "cpu", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        url = answering(proc, f"http://127.0.0.1:{port}", 180)
        got = kb_json("ask", QUESTION, "--db", store, "--backend", url, "--backend-model", str(smollm2),
                      "--max-tokens", "24")
    finally:
        stop(proc)
    want = local_answer
    assert got["answer"] == want["answer"] and got["sources"] == want["sources"] and got["cited"] == want["cited"]
    assert got["model"] == f"{smollm2} at {url}" and got["stats"]["new_tokens"] == want["stats"]["new_tokens"]


@pytest.mark.slow
def test_mcp_ask_over_stdio_answers_with_the_model(store, smollm2, local_answer):
    """The MCP `ask` tool with a small model behind it (SmolLM2, greedy): `kb ask --json`'s answer."""
    from mcp import Client

    params = stdio_params(store, smollm2)

    async def session():
        async with Client(params) as client:
            return await client.call_tool("ask", {"question": QUESTION, "max_tokens": 24})
    asked = asyncio.run(session())
    got = asked.structured_content
    assert not asked.is_error and got["answer"] == local_answer["answer"] and got["sources"] == local_answer["sources"]


@pytest.mark.slow
def test_watch_keeps_answering_and_a_kill_mid_write_leaves_a_store_the_next_run_completes(tmp_path):
    """`kb serve --watch`: a new file shows in served queries; queries answer while a run writes;
    SIGKILL of the server mid-write, then `kb index` completes the store (kb check, and the same
    counts as a fresh index)."""
    import signal

    folder, db = tmp_path / "notes", tmp_path / "s"
    folder.mkdir()
    (folder / "seed.md").write_text("# Seed\n\nthe first note")
    kb("index", folder, "--db", db, "--quiet", "--vector-index", "none")
    proc, url = start(db, "--watch")
    try:
        (folder / "heron.md").write_text("# Herons\n\nthe heron count by the river")
        deadline = time.time() + 20
        while time.time() < deadline and not call(url, "/query", {"query": "heron count", "mode": "bm25"})[1]["results"]:
            time.sleep(0.1)
        assert call(url, "/query", {"query": "heron count", "mode": "bm25"})[1]["results"][0]["path"] == "heron.md"
        for i in range(1500):
            (folder / f"n{i}.md").write_text(f"# Note {i}\n\n" + "the otter census " * 40)
        time.sleep(1.0)  # the watcher is writing its run of these
        status, got = call(url, "/query", {"query": "heron", "mode": "bm25"})  # answered mid-write
        assert status == 200 and got["results"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    completes_like_fresh(db, folder, tmp_path / "fresh")


def test_index_with_embed_backend_against_kb_serve(server, store, tmp_path):
    """`kb index --embed-backend URL` (kb serve's /v1/embeddings, the tiny encoder behind it): the
    same vectors as the local encoder gives, the model's name and dimension in the fingerprint,
    queries embedded at the server; a server that is gone is exit 69, one line."""
    db = tmp_path / "remote"
    kb("index", SAMPLE, "--db", db, "--embed-backend", server, "--quiet")
    fp = kb_json("status", "--db", db)["vectors"]["fingerprint"]
    assert fp["model"] == "default" and fp["api"] == "openai-embeddings" and fp["dims"] == kb_json(
        "status", "--db", store)["vectors"]["dims"]
    for q in ("feeding a sourdough starter", "write-ahead log checkpoints"):
        got = kb_json("query", q, "--db", db, "--mode", "vector", "-k", "5")["results"]
        want = kb_json("query", q, "--db", store, "--mode", "vector", "-k", "5")["results"]
        assert [(h["path"], h["start_line"], round(h["score"], 4)) for h in got] == \
               [(h["path"], h["start_line"], round(h["score"], 4)) for h in want]
    dead = f"http://127.0.0.1:{free_port()}"
    gone = kb("index", SAMPLE, "--db", tmp_path / "x", "--embed-backend", dead, check=69)
    assert gone.stderr.count("\n") == 1 and "cannot reach" in gone.stderr
    import sqlite3  # the server moves away: hybrid queries fall back to BM25, saying why; vector ones fail

    conn = sqlite3.connect(db / "kb.sqlite")
    meta = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'embedding'").fetchone()[0])
    meta["config"]["backend"] = dead
    conn.execute("UPDATE meta SET value = ? WHERE key = 'embedding'", (json.dumps(meta),))
    conn.commit()
    conn.close()
    fell = kb_json("query", "feeding a sourdough starter", "--db", db)
    assert fell["mode"] == "bm25" and "cannot reach" in fell["note"] and fell["results"]
    assert kb("query", "starter", "--db", db, "--mode", "vector", check=69).stderr.count("\n") == 1
