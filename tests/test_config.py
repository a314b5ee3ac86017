"""The config file (kb.cli.config): a default store, named stores, flag defaults that every flag
and environment variable overrides, `kb status` saying where the store came from, and a broken
or mistyped file as a one-line usage error."""

from __future__ import annotations

import shutil

import pytest

from conftest import SAMPLE
from inprocess import kb_run, kb_run_json


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """Two stores over sample_corpus folders (BM25 only), and a config file naming them."""
    for name, folder in (("work", "tech"), ("home", "cooking")):
        kb_run("index", shutil.copytree(SAMPLE / folder, tmp_path / folder), "--db", tmp_path / name,
               "--vector-index", "none", "--quiet")
    conf = tmp_path / "config.toml"
    monkeypatch.setenv("KB_CONFIG", str(conf))
    return tmp_path, conf


def _where(r: dict) -> set[str]:
    return {h["root"] for h in r["results"]}


def test_default_store_named_stores_and_flag_defaults(setup, monkeypatch):
    tmp, conf = setup
    conf.write_text(f'store = "work"\n[stores]\nwork = "{tmp / "work"}"\nhome = "{tmp / "home"}"\n'
                    '[query]\nk = 1\nmode = "bm25"\n')
    r = kb_run_json("query", "espresso sqlite")
    assert _where(r) == {str(tmp / "tech")} and len(r["results"]) == 1 and r["mode"] == "bm25"
    assert _where(kb_run_json("query", "espresso sqlite", "--db", "home")) == {str(tmp / "cooking")}
    assert len(kb_run_json("query", "espresso sqlite", "-k", "2")["results"]) == 2  # a flag wins
    env = {"KB_DB": str(tmp / "home")}  # so does the environment
    assert _where(kb_run_json("query", "espresso sqlite", env=env)) == {str(tmp / "cooking")}
    settings = kb_run_json("status", env=env)["settings"]
    assert settings["store_from"] == "environment" and settings["config_file"] == str(conf)
    assert kb_run_json("status")["settings"]["store_from"] == "config file"
    assert kb_run_json("status", "--db", "home")["settings"]["store_from"] == "flag"


@pytest.mark.parametrize("text, says", [("store = [1,2]\n", "store is a name"), ("[query\nk=1\n", "config file"),
                                         ("[query]\nkk = 1\n", "'kk'"), ("[serch]\nk = 1\n", "[serch]")])
def test_a_bad_config_is_a_one_line_usage_error(setup, text, says):
    _, conf = setup
    conf.write_text(text)
    err = kb_run("status", check=2).stderr
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def test_no_config_file_changes_nothing(setup, monkeypatch, tmp_path):
    monkeypatch.setenv("KB_CONFIG", str(tmp_path / "none.toml"))
    s = kb_run_json("status", "--db", tmp_path / "work")["settings"]
    assert s["config_file"] is None and s["store_from"] == "flag"


def test_a_config_folder_that_cannot_be_searched_is_no_config(setup, monkeypatch, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setenv("KB_CONFIG", str(locked / "kb" / "config.toml"))
    locked.chmod(0)
    try:
        out = kb_run_json("status", "--db", tmp_path / "work")  # as root the folder is searched anyway
        assert out["settings"]["config_file"] is None
    finally:
        locked.chmod(0o700)


def test_a_store_s_collections_come_from_the_config_file(setup, tmp_path):
    tmp, conf = setup
    conf.write_text(f'store = "lab"\n[stores.lab]\npath = "{tmp / "lab"}"\n'
                    f'[stores.lab.collections]\nnotes = "{tmp / "tech"}"\n'
                    f'food = {{ path = "{tmp / "cooking"}", exclude = ["espresso*"], context = "Kitchen notes" }}\n'
                    f'gone = "{tmp / "nowhere"}"\n')
    report = kb_run_json("index", "--vector-index", "none")  # the default store, made, its collections from the file
    assert any("collection gone of the config file" in w for w in report["warnings"])
    listed = {c["name"]: c for c in kb_run_json("collections")["collections"]}
    assert set(listed) == {"notes", "food"} and listed["food"]["exclude"] == ["espresso*"]
    assert listed["food"]["context"] == "Kitchen notes" and listed["notes"]["root"] == str(tmp / "tech")
    assert not any("espresso" in h["path"] for h in kb_run_json("query", "espresso", "-k", "20")["results"])
    bad = tmp / "bad.toml"
    bad.write_text('[stores.x]\npath = "/a"\ncollections = { c = { path = "/b", color = "red" } }\n')
    assert "collection 'c'" in kb_run("status", env={"KB_CONFIG": str(bad)}, check=2).stderr
