"""kb.embed.multi: the split of texts over device processes, and the vectors they give back."""

import numpy as np
import pytest

from kb.embed.encoder import EmbedConfig, Encoder
from kb.embed.multi import MultiEncoder, parse_devices, shares
from kb.errors import UsageError


def test_shares_cover_every_input_once_with_balanced_tokens():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 256, 1001)
    groups = shares(lengths, 3)
    assert sorted(np.concatenate(groups).tolist()) == list(range(1001))
    loads = [int(lengths[g].sum()) for g in groups]
    assert max(loads) - min(loads) <= lengths.max()
    assert all((np.diff(g) > 0).all() for g in groups)


def test_devices_option_is_parsed_or_refused_in_one_line():
    assert parse_devices("0,1") == (0, 1) and parse_devices("") == () and parse_devices(" 2 ") == (2,)
    for bad in ("x", "0,0", "-1"):
        with pytest.raises(UsageError):
            parse_devices(bad)


@pytest.mark.slow
def test_two_device_processes_give_the_vectors_of_one_encoder():
    """Two processes (on CPU here; GPUs with --devices) through shared memory: every text's
    vector comes back in its place."""
    cfg = EmbedConfig()
    one = Encoder(EmbedConfig(device="cpu"))  # on a GPU machine too: the same fp32 forward
    rng = np.random.default_rng(0)
    texts = [rng.integers(1000, 20000, int(n)).astype(np.int32) for n in rng.integers(1, 300, 41)]
    multi = MultiEncoder(cfg, ["cpu", "cpu"])
    try:
        got = multi.embed_passages(texts)
        assert not multi.packed and multi.embed_passages([]).shape == (0, one.dims)
    finally:
        multi.close()
    want = one.embed_passages(texts)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.slow
def test_a_gpu_that_is_not_there_is_a_one_line_error_before_the_store_is_touched(corpus, db):
    from conftest import kb

    proc = kb("index", corpus, "--db", db, "--devices", "99", check=2)
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "no GPU 99" in proc.stderr
    assert not db.exists()


@pytest.mark.slow
def test_an_encoder_process_killed_mid_call_leaves_the_other_to_finish_then_a_one_line_error(capfd):
    """One process (a GPU's, on CPU here) is SIGKILLed while it embeds its share: the call still
    returns every vector (the other process embeds the lost share), with one warning; when the
    last one is gone, a KbError, not a hang."""
    import os
    import signal
    import threading

    from kb.errors import KbError

    rng = np.random.default_rng(1)
    texts = [rng.integers(1000, 20000, 250).astype(np.int32) for _ in range(200)]
    multi = MultiEncoder(EmbedConfig(), ["cpu", "cpu"])
    def hung(*_):
        raise TimeoutError("embed_passages hung after an encoder process was killed")
    previous = signal.signal(signal.SIGALRM, hung)  # a hang fails the test instead of holding CI
    signal.alarm(240)
    try:
        want = multi.embed_passages(texts[:50])
        victim = multi._procs[1].pid
        threading.Timer(0.5, os.kill, (victim, signal.SIGKILL)).start()  # about a third into its share
        got = multi.embed_passages(texts)
        assert multi.devices == ["cpu"] and np.abs(got[:50] - want).max() < 1e-4
        assert "encoder process on cpu ended (exit code -9)" in capfd.readouterr().err
        os.kill(multi._procs[0].pid, signal.SIGKILL)
        with pytest.raises(KbError, match="every encoder process has ended"):
            multi.embed_passages(texts[:5])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        multi.close()
