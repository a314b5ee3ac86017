"""The README's quick start stays true: CI runs its test command, and its query finds something."""

from conftest import REPO


def quick_start():
    lines = (REPO / "README.md").read_text().splitlines()
    return [l.strip() for l in lines if l.startswith("    python3 -m venv .venv")]


def test_two_quick_start_commands_and_ci_runs_the_second():
    main, tests = quick_start()
    assert "kb models install" in main and "kb index sample_corpus" in main and "kb ask" in main
    assert "pytest" in tests
    assert tests in (REPO / ".ci" / "run").read_text().splitlines()
