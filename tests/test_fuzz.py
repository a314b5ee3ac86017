"""The fuzz run of bench/fuzz.py at a small size: hostile files, names, queries and globs through
the real `kb` command, with every check of the full run (issue 17)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_small_fuzz_run_is_clean(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fuzz.py"), "--files", "250", "--tiny", "150", "--queries", "100",
         "--singles", "3", "--pty", "2", "--globs", "4", "--keep", str(tmp_path / "fuzz")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["files"] >= 400 and result["queries"] == 100
    assert result["ok"], proc.stdout[-6000:]
