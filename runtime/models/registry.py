"""Starter models by name: ONNX files shipped inside the package, listed in a manifest.

``--model T1w-to-T2w`` should work right after ``pip install mri2mri``, without a
download. The models live in this folder as ``<name>.onnx`` beside ``starters.json``:

    {"format": 1, "models": [{"name": "T1w-to-T2w", "file": "T1w-to-T2w.onnx",
      "sha256": "...", "size": 1234, "summary": "one line", "card": "T1w-to-T2w.md"}]}

A name is resolved only after the file's SHA-256 matches the manifest: a damaged or
edited model would otherwise synthesize plausible, wrong images with nothing to tell.
The export side adds models with `add_starter`, which writes the manifest atomically.
``MRI2MRI_MODELS_DIR`` (or every function's `folder`) points the registry elsewhere,
for tests and for sites that keep their own set.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from mri2mri.runtime.core.atomic import atomic_path, write_json
from mri2mri.runtime.core.errors import InputError

#: The environment variable that replaces the packaged folder.
ENV = "MRI2MRI_MODELS_DIR"
MANIFEST = "starters.json"
FORMAT = 1
#: A name is a word that cannot be taken for a path: no separators, no ``.onnx``.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+.-]{0,63}")
REINSTALL = "reinstall mri2mri"


@dataclass(frozen=True)
class StarterModel:
    """One manifest entry; `file` and `card` are names inside the registry folder."""

    name: str
    file: str
    sha256: str
    size: int
    summary: str
    card: str = ""


def models_dir(folder: str | Path | None = None, *, create: bool = False) -> Path:
    """The registry folder: `folder`, else ``$MRI2MRI_MODELS_DIR``, else the packaged one."""
    if folder is None and os.environ.get(ENV):
        folder = os.environ[ENV]
        if not Path(folder).is_dir() and not create:
            raise InputError(folder, f"{ENV} names a folder that does not exist")
    path = Path(__file__).resolve().parent if folder is None else Path(folder)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def list_models(folder: str | Path | None = None) -> list[StarterModel]:
    """The manifest's models, by name ([] when none are packaged)."""
    manifest = models_dir(folder) / MANIFEST
    if not manifest.exists():
        return []
    try:
        data = json.loads(manifest.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        known = {f.name for f in fields(StarterModel)}  # a newer manifest may hold more
        return sorted((StarterModel(**{k: v for k, v in entry.items() if k in known})
                       for entry in data["models"]), key=lambda m: m.name)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(manifest, f"unreadable starter-model manifest ({exc}); "
                                   f"{REINSTALL}") from None


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.lower().endswith(".onnx") \
        or not NAME.fullmatch(text)


def resolve_model(name_or_path: str | Path, folder: str | Path | None = None) -> Path:
    """An ONNX file to load: an existing path as is; a starter name as its packaged file,
    verified against the manifest's size and SHA-256.

    A path that does not exist is returned too (loading it says "model file not found");
    a bare word that is neither a file nor a starter name is an error listing the names.
    """
    text = str(name_or_path)
    if Path(text).exists() or _looks_like_path(text):
        return Path(name_or_path)
    models = list_models(folder)
    found = [m for m in models if m.name == text] or \
        [m for m in models if m.name.casefold() == text.casefold()]
    if not found:
        known = ", ".join(m.name for m in models)
        raise InputError(text, "no such model file, and not a starter model name ("
                         + (f"starter models: {known}" if known
                            else "no starter models are packaged yet") + ")")
    return verify(found[0], folder)


def verify(model: StarterModel, folder: str | Path | None = None) -> Path:
    """The model's file, after checking its size and SHA-256 against the manifest."""
    path = models_dir(folder) / model.file
    if not path.is_file():
        raise InputError(path, f"starter model {model.name} is listed but its file is "
                               f"missing; {REINSTALL}")
    if path.stat().st_size != model.size or file_sha256(path) != model.sha256:
        raise InputError(path, f"checksum mismatch, the file is damaged or was changed; "
                               f"{REINSTALL}")
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in chunks (a model may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(folder: str | Path | None = None) -> list[str]:
    """What ``mri2mri-run --list-models`` prints: one line per model, or why there is none."""
    where = models_dir(folder)
    models = list_models(folder)
    if not models:
        return [f"no starter models are packaged yet ({where}); pass --model FILE.onnx"]
    width = max(len(m.name) for m in models)
    return [f"starter models ({where}):",
            *(f"  {m.name:<{width}}  {m.summary}" for m in models),
            "use one with: mri2mri-run --model NAME --input ... --output ...; model cards: "
            f"{where}/<name>.md"]


def add_starter(onnx_path: str | Path, name: str, summary: str, card: str | Path, *,
                folder: str | Path | None = None) -> StarterModel:
    """Add (or replace) starter model `name`: copy the ONNX file in as ``<name>.onnx``, write
    its card as ``<name>.md`` (`card`: a Path to copy, or the card's text as a str), and record
    both in the manifest with the file's SHA-256 and size. Every file is written atomically,
    the manifest last, so a reader never sees an entry whose file is not in place."""
    source = Path(onnx_path)
    if not NAME.fullmatch(name) or name.lower().endswith(".onnx"):
        raise InputError(None, f"starter model name {name!r}: letters, digits and _+.- "
                               "only, at most 64, not ending in .onnx")
    summary = " ".join(summary.split())
    if not summary:
        raise InputError(None, f"starter model {name}: the summary is empty")
    if not source.is_file() or source.stat().st_size == 0:
        raise InputError(source, "not a model file (missing or empty)")
    where = models_dir(folder, create=True)
    others = [m for m in list_models(where) if m.name.casefold() != name.casefold()]
    target = where / f"{name}.onnx"
    if source.resolve() != target.resolve():
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    text = Path(card).read_text() if isinstance(card, Path) else card
    with atomic_path(where / f"{name}.md") as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n")
    entry = StarterModel(name, target.name, file_sha256(target), target.stat().st_size,
                         summary, f"{name}.md")
    write_json(where / MANIFEST, {"format": FORMAT, "models": [
        asdict(m) for m in sorted([*others, entry], key=lambda m: m.name)]})
    return entry


__all__ = ["ENV", "MANIFEST", "StarterModel", "add_starter", "describe", "file_sha256",
           "list_models", "models_dir", "resolve_model", "verify"]
