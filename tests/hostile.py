"""Deterministic hostile inputs for kb (issue 17): a tree of files that try to break `kb index`
(bad bytes, odd names, huge lines, broken PDFs, FIFOs, symlink loops, ...), hostile queries and
`--path` globs. Everything is generated from a seed, so no binary junk is committed; the same seed
gives the same tree, names, bytes and queries.

`hostile_files(root, n, seed)` also plants `good` files (plain names, one unique word each) among
the hostile ones: a run that indexes them all proves no single file stopped it.
"""

from __future__ import annotations

import os
import random
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from pdfgen import make_pdf

# Pieces of file names. '/' cannot be in a name, so closing markup tags are split across a folder
# and its file (see MARKUP_PATHS). Lone surrogates are bytes that are not UTF-8 (surrogateescape).
NAME_PIECES = [
    "new\nline", "tab\there", "cr\rname", "\x1b]8;;https:evil.example\x07link\x1b]8;;\x07",
    "\x1b[31mred\x1b[0m", "\x1b[2J\x1b[Hclear", "\x1b]0;title\x07", "\x1b]52;c;ZXZpbA==\x07", "bare\x1besc",
    "bell\x07", "back\x08space", "del\x7f", "c1\u009b31mcsi", "raw\udc9b31m", "bad\udcff\udcfebytes",
    "latin\udce9", "half\udcc3(", "surr\udced\udca0\udc80", "over\udcc0\udcaf", "[bold red]boom",
    "[link=https:evil.example]x", ":warning:", "\u202eevil\u202dtxt", "\u2066iso\u2069", "zw\u200bj\u200d",
    " leading", "trailing ", "-dash", "--help", "*?[glob]", "quote'\"", "back\\slash", "emoji\U0001f600",
    "中文名字", "עברית", "%s%n{0}", "$(touch pwned)", "semi;colon", "~tilde", "nel\u0085sep", "ls\u2028sep",
]
MARKUP_PATHS = [("x[", "b]boom"), ("pre[link=https:evil.example]x[", "link]"), ("y[", "]reset"),
                ("z[bold]", "bold]z")]
EXTS = [".md", ".md", ".md", ".txt", ".txt", ".html", ".htm", ".pdf", ".pdf", ".py", ".rst", ".org",
        ".json", ".bin", "", ".MD", ".markdown"]
ESCAPES = ["\x1b[31m", "\x1b[0m", "\x1b]8;;http://evil.example\x07click\x1b]8;;\x07", "\x1b]52;c;ZXZpbA==\x07",
           "\x1b[2J", "\x1b[?1049h", "\x1bP+q\x1b\\", "\x9b31m", "\x9d0;t\x9c", "\x07", "\x08\x08\x08",
           "\r", "\x1b", "\x1bc", "\u202e", "\u2066", "\x0e", "\x7f"]
MARKUP = ["[bold]", "[/bold]", "[/]", "[/b]", "[link=http://evil.example]x[/link]", "[red on white]",
          ":warning:", ":skull:", "[blink]", "\\[escaped]", "[", "]", "[[", "[/link]"]
CJK = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后什"
WORDS = ("fuzzpayload hostile note sqlite index query terminal escape markup cursor window table "
         "the and of payload document reader chunk heading").split()
STOP = ["the", "a", "an", "of", "and", "or", "not", "is", "to", "in", "it", "be"]


@dataclass
class Planted:
    root: Path
    files: list[Path] = field(default_factory=list)  # regular files written (hostile and good)
    good: dict[Path, str] = field(default_factory=dict)  # plain good file -> its unique word
    fifos: list[Path] = field(default_factory=list)
    links: list[Path] = field(default_factory=list)
    outside_word: str = "kboutsidezq"


def unique_word(i: int, prefix: str = "kbgood") -> str:
    """A word no other file holds: `i` in base 20, a consonant per digit (i < 160,000)."""
    s = ""
    for k in range(4):
        i, r = divmod(i, 20)
        s += "bcdfghjklmnpqrstvwxz"[r] + "aeiou"[k]
    return prefix + s


# --- contents: each takes an rng and returns bytes ---------------------------------------------

def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def random_bytes(rng):
    return rng.randbytes(rng.choice([1, 7, 100, 4096, 9000, 65536]))


def bad_utf8(rng):
    parts = [_words(rng, 20).encode()]
    for _ in range(rng.randint(1, 30)):
        parts.append(rng.choice([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x80",
                                 b"\x9b31m", b"\xe2\x82"]) + _words(rng, 5).encode())
    return b" ".join(parts)


def nul_text(rng):
    head = _words(rng, 50).encode()
    if rng.random() < 0.5:
        return head + b"\x00" + head  # binary by kb's rule: a NUL in the first 8 KiB
    return head * 200 + b"\x00\x00" + head  # NULs past 8 KiB: read as text


def escape_text(rng):
    lines = [f"# {rng.choice(ESCAPES)}heading {rng.choice(ESCAPES)}fuzzpayload"]
    for _ in range(rng.randint(3, 40)):
        lines.append(" ".join(rng.choice(ESCAPES) + w for w in _words(rng, 8).split()))
    return "\n".join(lines).encode("utf-8")


def markup_text(rng):
    lines = [f"# {rng.choice(MARKUP)} fuzzpayload {rng.choice(MARKUP)}"]
    for _ in range(rng.randint(3, 40)):
        lines.append(" ".join(rng.choice(MARKUP) + w for w in _words(rng, 8).split()))
    return "\n".join(lines).encode()


def empty(rng):
    return rng.choice([b"", b" ", b"\n", b"\n\n\n", b"\t \r\n", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff\x00"])


def bom_junk(rng):
    bom = rng.choice([b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff", b"\xef\xbb\xbf"])
    return bom + rng.randbytes(rng.randint(1, 3000))


def odd_markdown(rng):
    body = rng.choice([
        ">" * 5000 + " quote fuzzpayload\n",
        "[" * 5000 + "fuzzpayload" + "]" * 5000 + "\n",
        "```\n" + "unclosed fence fuzzpayload\n" * 200,
        "#" * 2000 + " heading fuzzpayload\n",
        "# " + "long heading " * 2000 + "\n\ntext fuzzpayload\n",
        "| a |\n" + "|---|\n" + "| fuzzpayload |\n" * 2000,
        "\r" * 3000 + "fuzzpayload\r\n" * 100,
        "title\n" + "=" * 100 + "\n" + "fuzzpayload\n" + "-" * 10000 + "\n",
    ])
    return body.encode()


def nested_list(rng):
    depth = rng.choice([30, 100, 300])
    return "\n".join("  " * i + f"- item {i} fuzzpayload" for i in range(depth)).encode()


def html_page(rng):
    return rng.choice([
        "<html><body><h1>fuzzpayload</h1><!-- never closed " + _words(rng, 50),
        "< lone < angle <<< fuzzpayload < " + _words(rng, 30),
        "<p>fuzzpayload</p><script>" + "var x = '<p>" * 500,
        "<div>" * 10000 + "deep fuzzpayload" + "</div>" * rng.choice([0, 10000]),
        "<h1>&#27;]8;;http://evil.example&#7;x &#x9b;31m &#0; &#xD800; &#1114112; &#x1b;[2J fuzzpayload</h1>",
        "<h2>" + "".join(rng.choice(MARKUP) for _ in range(50)) + "fuzzpayload</h2>",
        "<p " + "a=" * 10000 + ">fuzzpayload</p><a href=\"" + "x" * 5000,
        "<![CDATA[ unclosed fuzzpayload " + _words(rng, 30),
        "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><p>&a;&a; fuzzpayload</p><pre>" + "\x1b[31m" * 50,
        "<h1>" * 3000 + "fuzzpayload" + "</h3>" * 3000,
        "<style>" + "x{}" * 1000 + "</style><noscript><p>hidden</p>" + "<svg>" * 2000 + "fuzzpayload",
    ]).encode("utf-8", "surrogatepass")


def _valid_pdf(rng, words: str = "") -> bytes:
    pages = [[words or _words(rng, 8) for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(1, 3))]
    return make_pdf(pages)


def broken_pdf(rng):
    good = _valid_pdf(rng)
    how = rng.randrange(9)
    if how == 0:
        return good[: rng.randint(0, len(good) - 1)]
    if how == 1:
        data = bytearray(good)
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if how == 2:
        return good.replace(b"<< /Length", b"<< /Filter /Bogus /Length", 1)
    if how == 3:  # declared Flate, not zlib; or zlib of junk
        junk = rng.choice([rng.randbytes(200), zlib.compress(rng.randbytes(2000))])
        return good.replace(b"<< /Length", b"<< /Filter /FlateDecode /DecodeParms << /Predictor 12 /Columns 0 >> "
                            b"/Length", 1).split(b"stream\n", 1)[0] + b"stream\n" + junk + b"\nendstream\nendobj\n"
    if how == 4:
        return b"%PDF-1.7\n" + rng.randbytes(rng.randint(0, 5000))
    if how == 5:  # a page tree whose kid is itself
        return good.replace(b"/Kids [3 0 R]", b"/Kids [2 0 R]").replace(b"/Count 1", b"/Count 99999999")
    if how == 6:  # xref offsets and lengths that point nowhere
        return good.replace(b"/Length ", b"/Length 99999999 % ", 1).replace(b"startxref\n", b"startxref\n9999999")
    if how == 7:  # text that shows escapes and markup (latin-1 keeps the ESC byte)
        return make_pdf([["\x1b]8;;http://evil.example\x07fuzzpayload\x1b[2J", "[link=http://x]y[/link] \x9b31m"]])
    return encrypted_pdf(rng)


def encrypted_pdf(rng):
    good = _valid_pdf(rng, "secret fuzzpayload")
    v = rng.choice([b"/V 9 /R 9", b"/V 1 /R 2", b"/V 5 /R 6", b"/V 4 /R 4 /CF << /StdCF << /CFM /Bogus >> >>"])
    enc = b"<< /Filter /Standard " + v + b" /O <" + b"00" * 32 + b"> /U <" + b"11" * 32 + b"> /P -4 /Length 128 >>"
    return good.replace(b"/Root 1 0 R", b"/Root 1 0 R /Encrypt " + enc + b" /ID [<01><01>]")


CONTENTS = [random_bytes, bad_utf8, nul_text, escape_text, escape_text, markup_text, markup_text, empty,
            bom_junk, odd_markdown, nested_list, html_page, html_page, broken_pdf, broken_pdf, encrypted_pdf]


def big(rng, how: int) -> bytes:
    """The few large files: 1-5 MB single lines, CJK single lines, 100k headings, 10k nested divs."""
    mb = 2**20
    return [
        lambda: (_words(rng, 10) + " ") .encode() * (rng.randint(1, 5) * mb // 80),
        lambda: b"fuzzpayload" + b"x" * rng.randint(1, 5) * mb,
        lambda: "".join(rng.choice(CJK) for _ in range(rng.randint(1, 2) * mb // 3)).encode(),
        lambda: "".join(f"# h{i} fuzzpayload\n" for i in range(100_000)).encode(),
        lambda: ("<div>" * 10000 + "fuzzpayload" + "</div>" * 10000).encode(),
        lambda: ("\x1b[31m" * (mb // 5)).encode(),
        lambda: "\n".join("  " * i + "- deep" for i in range(2000)).encode(),
    ][how % 7]()


# --- the tree ------------------------------------------------------------------------------------

def _name(rng: random.Random, i: int, ext: str) -> str:
    if rng.random() < 0.35:
        name = f"{i:05d}{rng.choice(NAME_PIECES)}{ext}"
    elif rng.random() < 0.03:
        name = f"{i:05d}" + "L" * 236 + ext
    else:
        name = f"f{i:05d}{ext}"
    while len(os.fsencode(name)) > 255:
        name = name[:-1]
    return name


def _write(planted: Planted, path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    planted.files.append(path)


def _good(planted: Planted, rng: random.Random, folder: Path, i: int, prefix: str = "kbgood") -> None:
    word = unique_word(i, prefix)
    kind = i % 10
    if kind == 8:
        path, data = folder / f"good{i}.pdf", make_pdf([[f"A plain page about {word}.", _words(rng, 6)]])
    elif kind == 9:
        path, data = folder / f"good{i}.html", f"<h1>Note</h1><p>About {word}. {_words(rng, 20)}</p>".encode()
    else:
        path = folder / f"good{i}.{'txt' if kind == 7 else 'md'}"
        data = f"# Note {i}\n\nThis plain note is about {word}.\n\n{_words(rng, 40)}\n".encode()
    _write(planted, path, data)
    planted.good[path] = word


def _special(planted: Planted, rng: random.Random, root: Path) -> None:
    """FIFOs, symlink loops, links out of the root, an unreadable folder, a path past PATH_MAX,
    folders whose name and file name read as rich markup, a hostile .kbignore."""
    outside = root.parent / (root.name + "-outside")
    _write(planted, outside / "secret.md", f"# Outside\n\n{planted.outside_word} must not be indexed\n".encode())
    links = root / "links"
    links.mkdir(parents=True)
    for name, target in [("loop", ".."), ("self", "self"), ("a.md", "b.md"), ("b.md", "a.md"),
                         ("out.md", str(outside / "secret.md")), ("outdir", str(outside)), ("etc", "/etc"),
                         ("passwd.md", "/etc/passwd"), ("zero.md", "/dev/zero"), ("dangling.md", "nowhere"),
                         ("up", "../links"), ("fifo-link.md", "../fifo/pipe.md")]:
        os.symlink(target, links / name)
        planted.links.append(links / name)
    (root / "fifo").mkdir()
    for name in ("pipe.md", "pipe.txt", "pipe\x1b[31m.md", "pipe.pdf"):
        os.mkfifo(root / "fifo" / name)
        planted.fifos.append(root / "fifo" / name)
    locked = root / "locked"
    _write(planted, locked / "inside.md", b"# Locked\n\nfuzzpayload in a chmod 000 folder\n")
    _write(planted, root / "lockedfile.md", b"# Locked file\n\nfuzzpayload\n")
    os.chmod(root / "lockedfile.md", 0)
    os.chmod(locked, 0)
    for folder, name in MARKUP_PATHS:
        _write(planted, root / folder / (name + ".md"), f"# {folder}/{name}\n\nfuzzpayload markup path\n".encode())
    _write(planted, root / "ignored" / ".kbignore", b"[\n!\n\\\n**/***\n\xff\xfe\n" + b"x" * 10000 + b"\n")
    _write(planted, root / "ignored" / "kept.md", b"# kept\n\nfuzzpayload\n")
    _too_long(planted, root / "toolong")


def _too_long(planted: Planted, top: Path) -> None:
    """Folders nested past PATH_MAX (4096 bytes), made relative to an open folder."""
    top.mkdir()
    fd = os.open(top, os.O_DIRECTORY)
    try:
        for _ in range(24):
            os.mkdir("d" * 200, dir_fd=fd)
            nxt = os.open("d" * 200, os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        out = os.open("deep.md", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, b"# past PATH_MAX\n\nfuzzpayload\n")
        os.close(out)
    finally:
        os.close(fd)


def hostile_files(root: Path, n: int, seed: int, n_big: int | None = None) -> Planted:
    """Write about `n` files under `root` (hostile ones and ~5% plain good ones), plus the special
    entries of `_special`. Deterministic in `seed`."""
    rng = random.Random(seed)
    planted = Planted(Path(root))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _special(planted, rng, root)
    n_good = max(10, n // 20)
    n_big = (7 if n >= 1000 else 2) if n_big is None else n_big
    deep = root.joinpath(*[f"deep{d}" for d in range(60)])
    folders = [root / "mix" / f"d{d:03d}" for d in range(max(1, n // 50))] + [deep, root]
    odd = [root / "names" / (f"dir{j}" + p) for j, p in enumerate(NAME_PIECES)]
    for i in range(n_good):
        _good(planted, rng, rng.choice(folders), i)
    for i in range(n_big):
        _write(planted, root / "big" / f"big{i}{['.md', '.txt', '.md', '.md', '.html', '.txt', '.md'][i % 7]}",
               big(rng, i))
    for i in range(max(0, n - len(planted.files))):
        ext = rng.choice(EXTS)
        gen = broken_pdf if ext == ".pdf" and rng.random() < 0.7 else rng.choice(CONTENTS)
        folder = rng.choice(odd) if rng.random() < 0.15 else rng.choice(folders)
        _write(planted, folder / _name(rng, i, ext), gen(rng))
    return planted


def tiny_files(root: Path, n: int, seed: int) -> Planted:
    """`n` files of a few bytes in folders of 100; one in 100 is a good file with a unique word."""
    rng = random.Random(seed + 1)
    planted = Planted(Path(root))
    for i in range(n):
        folder = Path(root) / f"t{i // 100:03d}"
        if i % 100 == 7:
            _write(planted, folder / f"tiny{i}.md", f"{unique_word(i, 'kbtiny')}\n".encode())
            planted.good[folder / f"tiny{i}.md"] = unique_word(i, "kbtiny")
        else:
            _write(planted, folder / f"t{i}.{rng.choice(['md', 'txt', 'py', 'html'])}",
                   rng.choice([b"", b"x", b"\n", b"a b", b"\x1b", b"\xff", b"<", b"#", b"- ", b"\x00"]))
    return planted


def mutate(planted: Planted, seed: int, count: int) -> dict:
    """Change the tree between two index runs: rewrite, delete, touch and add hostile files, and
    turn a file into a folder. Good files stay (a few get more text, their word kept)."""
    rng = random.Random(seed + 2)
    hostile = [p for p in planted.files if p not in planted.good and "-outside" not in str(p)
               and "locked" not in str(p)]
    picked = rng.sample(hostile, min(count, len(hostile)))
    done = {"rewritten": 0, "deleted": 0, "touched": 0, "added": 0, "to_folder": 0, "good_appended": 0}
    for j, path in enumerate(picked):
        how = j % 5
        if how == 0:
            path.write_bytes(rng.choice(CONTENTS)(rng))
            done["rewritten"] += 1
        elif how == 1:
            path.unlink()
            planted.files.remove(path)
            done["deleted"] += 1
        elif how == 2:
            os.utime(path, ns=(0, rng.randrange(1, 2**40)))
            done["touched"] += 1
        elif how == 3:
            _write(planted, path.parent / _name(rng, 90000 + j, rng.choice(EXTS)), rng.choice(CONTENTS)(rng))
            done["added"] += 1
        elif done["to_folder"] < 3:
            path.unlink()
            planted.files.remove(path)
            _write(planted, path / "now-a-folder.md", b"# was a file\n\nfuzzpayload\n")
            done["to_folder"] += 1
    for path in rng.sample(sorted(p for p in planted.good if p.suffix == ".md"), 3):
        with path.open("ab") as f:
            f.write(b"\nappended \x1b]8;;http://evil.example\x07 fuzzpayload\n")
        done["good_appended"] += 1
    return done


def unlock(root: Path) -> None:
    """Undo the chmod 000 of `_special` so the tree can be removed."""
    for p in (Path(root) / "locked", Path(root) / "lockedfile.md"):
        if p.exists() or p.is_symlink():
            os.chmod(p, stat.S_IRWXU)


# --- queries and globs ---------------------------------------------------------------------------

def hostile_queries(n: int, seed: int) -> list[str]:
    """`n` query strings (no NUL): markup, escapes, control characters, 100k-character strings,
    punctuation, stop words, CJK, RTL overrides, glob and SQL-ish text, option-like text. About a
    fifth carry 'fuzzpayload' so results show hostile chunks and paths."""
    rng = random.Random(seed + 3)
    fixed = ["a" * 100_000, ("fuzzpayload " * 9100)[:100_000], "".join(rng.choice(CJK) for _ in range(100_000)),
             "*" * 100_000, '"' * 100_000, "[" * 100_000, "\x1b[31m" * 20_000, "fuzzpayload" + "\u0301" * 100_000,
             "'; DROP TABLE documents; --", '" OR 1=1 --', "NEAR(a b)", "a AND", "MATCH", "%", "_", "\\'", "\\",
             "*", "?", "[", "[!]", "**/*", "[a-", "-k", "--help", "--db=/etc", "-", "--", "   ", "\t",
             "\ufeff", "\ufffd", "\u2028", "\u0085", "\x1c\x1d\x1e", "\udcff", "caf\udce9", "%s%n{0}{}",
             "1e308", "NaN", "-0", "\u202efuzzpayload\u202c", "\u2066fuzzpayload\u2069", "שלום עולם", "مرحبا",
             "长城", "東京タワー", "서울", "🙂" * 50, "x" * 1000, " ".join(STOP), "the", "a an the of"]
    pools = [
        lambda: " ".join(rng.choice(MARKUP) + rng.choice(WORDS) for _ in range(rng.randint(1, 6))),
        lambda: " ".join(rng.choice(ESCAPES) + rng.choice(WORDS) for _ in range(rng.randint(1, 6))),
        lambda: "".join(chr(rng.choice(list(range(1, 32)) + [127] + list(range(128, 160)))) + rng.choice(WORDS)
                        for _ in range(rng.randint(1, 5))),
        lambda: "".join(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") for _ in range(rng.randint(1, 40))),
        lambda: " ".join(rng.choice(STOP) for _ in range(rng.randint(1, 8))),
        lambda: "".join(rng.choice(CJK) for _ in range(rng.randint(1, 60))),
        lambda: "\u202e" + " ".join(rng.choice(WORDS) for _ in range(3)) + rng.choice(["\u202c", "", "\u2069"]),
        lambda: rng.choice(["*", "?", "[", "]", "[!a-z]", "**"]) + rng.choice(WORDS) + rng.choice(["*", "?", "["]),
        lambda: rng.choice(["' OR '1'='1", "1; SELECT * FROM chunks", "\") UNION SELECT path FROM documents --",
                            "x' AND MATCH 'y", "NOT fuzzpayload", "fuzzpayload*", "col:fuzzpayload", "^fuzz"]),
        lambda: "fuzzpayload " + rng.choice(WORDS) + " " + rng.choice(MARKUP + ESCAPES),
        lambda: rng.choice(NAME_PIECES) + " fuzzpayload",
        lambda: rng.choice(WORDS) * rng.randint(1, 3000),
    ]
    out = [q for q in fixed if q][:n]
    while len(out) < n:
        out.append(rng.choice(pools)())
    return [q.replace("\x00", "") for q in out]


def hostile_globs() -> list[str]:
    """`--path` values: markup, escapes, invalid bytes, unbalanced brackets, patterns that make a
    naive GLOB matcher backtrack, and a 100,000-character one."""
    return ["a" * 100_000, "\udcff*", "\x1b]8;;http://x\x07*", "[link=http://evil.example]x[/link]", "*a" * 60 + "b",
            "[", "*\n*", "*" + "?*" * 200, "[" * 10_000, "*" * 10_000, "?" * 1000, "*", "", "[!", "[]", "[]]", "]",
            "**", "'; DROP TABLE documents; --", "%", "_", "names/*", "/abs/*", "../*", "\\*", "*.md", "big/*",
            "mix/*/good*", "\u202e*", "中文*"]
