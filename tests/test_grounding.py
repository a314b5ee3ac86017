"""Whether an answer rests on its sources (kb.rag.grounding): flags for echoes of the prompt,
restated questions and unsupported answers, and only checked markers shown."""

from __future__ import annotations

from kb.rag.cite import check
from kb.rag.grounding import flag, shown

SOURCES = ["A WAL file reaches 1000 pages before a checkpoint copies it back into the database.",
           "The AAAA record holds an IPv6 address; the A record holds an IPv4 address."]


def test_an_answer_backed_by_its_source_is_grounded():
    text = "The WAL reaches 1000 pages before a checkpoint [1]."
    cited = check(text, SOURCES)
    assert cited == [1] and flag(text, "How big does the WAL get?", cited) is None
    assert shown(text, cited) == text


def test_a_marker_no_source_backs_is_not_shown():
    text = "Melbourne is the capital of Australia [1]."
    cited = check(text, SOURCES)
    assert cited == [] and flag(text, "What is the capital of Australia?", cited) == "unsupported"
    assert shown(text, cited) == "Melbourne is the capital of Australia."
    moved = "An AAAA record holds an IPv6 address [1]."
    assert shown(moved, check(moved, SOURCES)) == "An AAAA record holds an IPv6 address."


def test_echoes_of_the_prompt_and_restated_questions_are_caught():
    echo = 'Source [1], from "tech/sqlite-wal.md" (lines 1-3): A WAL file reaches 1000 pages'
    assert flag(echo, "How big does the WAL get?", check(echo, SOURCES)) == "echo"
    assert flag("| A WAL file reaches 1000 pages", "WAL size?", [1]) == "echo"
    restated = "Record type that holds an IPv6 address [2]."
    assert flag(restated, "Which record type holds an IPv6 address?", check(restated, SOURCES)) == "restates"


def test_an_answer_naming_an_option_made_of_the_questions_words_is_no_restatement():
    question = "Which option of git show-branch does this: do not show naming strings for each commit?"
    assert flag("The option that does not show naming strings is `--no-name` [1].", question, [1]) is None
    assert flag("Do not show naming strings for each commit: --no-name [1].", question, [1]) is None
    assert flag("The option of git show-branch that does not show naming strings is [1].", question, [1]) == "restates"
