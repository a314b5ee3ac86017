"""Embedding on several GPUs of one host: one process per GPU (`kb index --devices 0,1`).

Each process owns one device and one Encoder on it (kb's packed path). A call splits its texts
into one share per device, balanced by tokens, and the processes embed their shares at once.
Token ids go to the processes and vectors come back through shared memory, so the parent only
copies two arrays; packing on the host is done by each process for its own share.
"""

from __future__ import annotations

import multiprocessing
import sys
from dataclasses import replace
from multiprocessing.shared_memory import SharedMemory

import numpy as np


def parse_devices(text: str) -> tuple[int, ...]:
    """"0,1" -> (0, 1); "" -> () (one device, as --device says)."""
    from kb.errors import UsageError

    try:
        devices = tuple(int(d) for d in text.replace(" ", "").split(",") if d)
    except ValueError:
        raise UsageError(f"--devices takes GPU numbers separated by commas, e.g. 0,1 (got {text!r})") from None
    if len(set(devices)) != len(devices) or any(d < 0 for d in devices):
        raise UsageError(f"--devices: each GPU once, numbers from 0 (got {text!r})")
    return devices


def check_devices(devices: tuple[int, ...]) -> None:
    """A one-line error, before any work, when a GPU asked for is not there."""
    import torch

    from kb.errors import UsageError

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [d for d in devices if d >= have]
    if missing:
        raise UsageError(f"--devices: no GPU {', '.join(map(str, missing))} on this machine "
                         f"({have} CUDA GPU{'s' if have != 1 else ''} visible)")


def shares(lengths: np.ndarray, n: int) -> list[np.ndarray]:
    """Indices of the inputs in `n` groups of about equal tokens (dealt in length order, so the
    groups differ by less than the longest input), each sorted."""
    order = np.argsort(lengths, kind="stable")
    return [np.sort(order[g::n]) for g in range(n)]


class MultiEncoder:
    """The part of Encoder that `kb index` uses, over one Encoder process per GPU."""

    def __init__(self, cfg, devices: list[str]):
        """`devices`: torch device names, one process each ("cuda:0", "cuda:1"; "cpu" in tests)."""
        from kb.embed.encoder import describe

        spec = describe(cfg)
        self.cfg, self.devices, self.dims, self.key = cfg, devices, spec.dims, spec.key
        ctx = multiprocessing.get_context("spawn")  # CUDA does not survive a fork
        self._conns, self._procs = [], []
        for d in devices:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_serve, args=(replace(cfg, device=d, devices=()), child),
                            name=f"kb-embed-{d}", daemon=True)
            p.start()
            child.close()  # the process's end is its own: when it dies, recv() here ends, never hangs
            self._conns.append(parent)
            self._procs.append(p)
        packed = []
        for d, conn in zip(devices, self._conns):
            ok, message = conn.recv()
            if not ok:
                self.close()
                from kb.errors import UsageError

                raise UsageError(f"--devices: {d}: {message}")
            packed.append(message == "packed")
        self.packed = all(packed)  # kb's packed encoder on each GPU: GpuFeed embeds while reading

    def embed_passages(self, id_lists) -> np.ndarray:
        n = len(id_lists)
        if n == 0:
            return np.zeros((0, self.dims), np.float32)
        lengths = np.fromiter(map(len, id_lists), np.int64, n)
        # Shared layout: n + 1 int64 offsets, then the int32 ids of every text back to back.
        ids_mem = SharedMemory(create=True, size=(n + 1) * 8 + max(int(lengths.sum()), 1) * 4)
        out_mem = SharedMemory(create=True, size=n * self.dims * 4)
        try:
            offsets, ids = _views(ids_mem, n)
            offsets[0] = 0
            np.cumsum(lengths, out=offsets[1:])
            ids[:offsets[-1]] = np.concatenate([np.asarray(x, np.int32) for x in id_lists])
            del offsets, ids
            todo = np.arange(n)
            while len(todo):  # the shares of a process that ended go to the others
                todo = self._embed_shares(ids_mem.name, out_mem.name, n, todo, lengths)
            shared = np.ndarray((n, self.dims), np.float32, out_mem.buf)
            vectors = shared.copy()
            del shared  # no view may outlive close()
            return vectors
        finally:
            ids_mem.close()
            ids_mem.unlink()
            out_mem.close()
            out_mem.unlink()

    def _embed_shares(self, ids_name: str, out_name: str, n: int, todo: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Texts `todo` shared out over the live processes; returns those of processes that ended."""
        from kb.errors import KbError

        if not self._conns:
            raise KbError("embedding on several GPUs failed: every encoder process has ended")
        sent, lost = [], []
        for i, idx in enumerate(shares(lengths[todo], len(self._conns))):
            try:
                self._conns[i].send((ids_name, out_name, n, todo[idx]))
                sent.append((i, todo[idx]))
            except OSError:
                lost.append((i, todo[idx]))
        for i, idx in sent:
            try:
                ok, message = self._conns[i].recv()
            except (EOFError, OSError):
                lost.append((i, idx))
                continue
            if not ok:
                raise RuntimeError(f"embedding on several GPUs failed: {message}")
        for i in sorted({i for i, _ in lost}, reverse=True):
            self._lose(i)
        return np.sort(np.concatenate([idx for _, idx in lost])) if lost else todo[:0]

    def _lose(self, i: int) -> None:
        """A process that ended (killed, or its GPU failed): the run goes on without it."""
        conn, proc, device = self._conns.pop(i), self._procs.pop(i), self.devices[i]
        self.devices = self.devices[:i] + self.devices[i + 1:]
        conn.close()
        proc.join(timeout=5)
        sys.stderr.write(f"kb: warning: the encoder process on {device} ended (exit code {proc.exitcode}); "
                         f"going on with {', '.join(self.devices) or 'none'}\n")

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        self._conns, self._procs = [], []

    __del__ = close


def _serve(cfg, conn) -> None:
    """A device's process: an Encoder on it, then one share of texts per request."""
    try:
        from kb.embed.encoder import Encoder

        encoder = Encoder(cfg)
        conn.send((True, "packed" if encoder.packed is not None else "transformers"))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which says it in one line
        conn.send((False, str(e)))
        return
    while (job := conn.recv()) is not None:
        ids_name, out_name, n, idx = job
        ids_mem, out_mem = SharedMemory(ids_name), SharedMemory(out_name)
        try:
            offsets, ids = _views(ids_mem, n)
            seqs = [ids[offsets[i]:offsets[i + 1]] for i in idx.tolist()]
            out = np.ndarray((n, encoder.dims), np.float32, out_mem.buf)
            out[idx] = encoder.embed_passages(seqs)
            del offsets, ids, seqs, out  # no view may outlive close()
            conn.send((True, ""))
        except Exception as e:  # noqa: BLE001
            conn.send((False, str(e)))
        finally:
            ids_mem.close()
            out_mem.close()


def _views(mem: SharedMemory, n: int) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.ndarray(n + 1, np.int64, mem.buf)
    ids = np.ndarray((mem.size - (n + 1) * 8) // 4, np.int32, mem.buf, offset=(n + 1) * 8)
    return offsets, ids
