"""Build a starter model from its recipe: simulate, train, export, score, (install).

One function, `build_starter`, so that every shipped model is rebuilt by one command
and its card says exactly how it was made and what it scores:

1. simulate the recipe's cohort (`generate_cohort` with per-subject variety);
2. train on it alone (`mri2mri.train`), export best.pt to ONNX (parity-checked);
3. score it, level-free, on the cohort's held-out simulated subjects against the LUT
   fitted on the other held-out ones, and, given real pairs (`real`), zero-shot on
   every real subject (`mri2mri-bench zero-shot`); for a b=0 recipe `real` is used as it
   is, a folder with DWIs (a pseudo-DWI cohort: `mri2mri-data pseudo-dwi --no-distortion`);
4. write the model card; with `install`, add the model to the runtime's registry.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from rich.console import Console

from mri2mri.runtime.core.atomic import write_json
from mri2mri.runtime.core.errors import InputError

from .card import write_card
from .recipes import Recipe, recipe


@dataclass
class StarterBuild:
    """Where a build put everything, and what it measured."""

    recipe: Recipe
    out: Path
    model: Path
    card: Path
    seconds: dict[str, float] = field(default_factory=dict)
    simulated: dict[str, Any] = field(default_factory=dict)
    real: dict[str, Any] | None = None
    installed: Path | None = None
    #: The export's check: onnxruntime against PyTorch, max |difference| and slices.
    parity: tuple[float, int] | None = None


def _fresh_dir(out: Path, overwrite: bool) -> Path:
    if not out.parent.is_dir():
        raise InputError(out, f"parent directory {out.parent} does not exist")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(out, "exists and is not empty; pass --overwrite to start afresh")
        shutil.rmtree(out)
    out.mkdir(exist_ok=True)
    return out


def _simulate(r: Recipe, out: Path, jobs: int) -> Path:
    from mri2mri.data.simulate.demo_cohort import generate_cohort
    from mri2mri.data.simulate.variety import Variety

    return generate_cohort(out, subjects=r.subjects, seed=r.seed, resolution=r.resolution,
                           jobs=jobs, contrasts=r.images(), variety=Variety.parse(r.variety),
                           head=r.head, dwi_distortion=r.dwi_distortion)


def _train(r: Recipe, data: Path, out: Path, console: Console) -> Path:
    from mri2mri.train.config import TrainConfig
    from mri2mri.train.trainer import train

    config = TrainConfig(data=str(data), sources=list(r.sources), target=r.target,
                         out=str(out), seed=r.seed, **r.train)
    return Path(train(config, console=console).best_checkpoint)


def held_out_view(data: Path, run: Path, out: Path) -> Path:
    """A cohort folder of the run's validation and test subjects only (symbolic links),
    so that scoring on it never touches a subject the network was trained on."""
    split = json.loads((run / "config.json").read_text())["split"]
    held = sorted(split.get("validation", []) + split.get("test", []))
    if len(held) < 2:
        raise InputError(data, "the cohort holds fewer than 2 held-out subjects to score on")
    view = out / "held-out"
    view.mkdir()
    for name in ("dataset_description.json", "participants.tsv"):
        shutil.copy(data / name, view / name)
    for sub in held:
        (view / sub).symlink_to((data / sub).resolve(), target_is_directory=True)
    return view


def _score(model: Path, cohort: Path, out: Path, r: Recipe, *, console: Console
           ) -> dict[str, Any]:
    from mri2mri.benchmarks.generalisation.zero_shot import zero_shot

    return zero_shot(model, cohort, out, source=r.sources[0], target=r.target,
                     progress=lambda line: console.print(f"  {line}"))


def build_starter(name: str, out: str | Path, *, real: str | Path | None = None,
                  install: bool = False, overwrite: bool = False, jobs: int = 2,
                  console: Console | None = None) -> StarterBuild:
    """Build starter `name` into `out` from its recipe (see the module docstring)."""
    r = recipe(name)
    if len(r.sources) != 1:
        raise InputError(None, f"{name}: the zero-shot scores need a one-source task")
    if real is not None and not Path(real).is_dir():
        raise InputError(real, "is not a folder of real subjects")
    console = console or Console(stderr=True)
    out = _fresh_dir(Path(out), overwrite)
    seconds: dict[str, float] = {}
    lap = _laps(seconds)
    console.rule(f"{name}: simulating {r.subjects} subjects at {r.resolution:g} mm "
                 f"(variety {r.variety}{', head' if r.head else ''})")
    data = _simulate(r, _cohort(out), jobs)
    lap("simulate")
    console.rule(f"{name}: training {'+'.join(r.sources)} -> {r.target}")
    best = _train(r, data, out / "run", console)
    lap("train")
    return _finish(StarterBuild(r, out, out / f"{name}.onnx", out / f"{name}.md", seconds),
                   best, real=real, install=install, console=console)


def _finish(build: StarterBuild, best: Path, *, real: str | Path | None, install: bool,
            console: Console) -> StarterBuild:
    """Export `best`, score it (held-out simulated, and `real`), write the card and
    build.json, and with `install` add it to the registry: the end of a build or a refresh."""
    r, out = build.recipe, build.out
    lap = _laps(build.seconds)
    from mri2mri.export.onnx_export import export_checkpoint

    report = export_checkpoint(best, build.model, overwrite=True)
    build.parity = (report.max_abs_diff, report.parity_slices)
    lap("export")
    console.rule(f"{r.name}: scoring on held-out simulated subjects")
    view = out / "held-out"
    if not view.is_dir():
        view = held_out_view(_cohort(out), out / "run", out)
    build.simulated = _score(build.model, view, _emptied(out / "simulated"), r, console=console)
    lap("score simulated")
    if real is not None:
        console.rule(f"{r.name}: zero-shot on the real subjects of {real}")
        build.real = _score(build.model, Path(real), _emptied(out / "zero-shot"), r,
                            console=console)
        lap("score real")
    write_card(build)
    write_json(out / "build.json", {"recipe": r.to_dict(), "seconds": build.seconds,
                                    "model": build.model.name, "card": build.card.name,
                                    "real": None if real is None else str(real)})
    if install:
        from mri2mri.runtime.models import add_starter, models_dir

        entry = add_starter(build.model, r.name, r.summary, build.card)
        build.installed = models_dir() / entry.file
    return build


def _what_makes_the_model(recipe_dict: dict[str, Any]) -> dict[str, Any]:
    """A recipe less its words (the summary may be reworded without a rebuild), with the
    defaults of fields added since it was recorded (a build made before them used those)."""
    defaults = {f.name: f.default for f in fields(Recipe) if f.default is not MISSING}
    return {k: v for k, v in {**defaults, **recipe_dict}.items() if k != "summary"}


def _cohort(out: Path) -> Path:
    """A build's simulated cohort."""
    return out / "data"


def _laps(seconds: dict[str, float]) -> Callable[[str], None]:
    """`lap(step)` records the seconds since the last lap (or since now) as `step`."""
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step], clock = round(now - clock, 1), now

    return lap


def _emptied(folder: Path) -> Path:
    """`folder`, without what an earlier scoring left in it (a refresh scores again)."""
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def refresh_starter(out: str | Path, *, real: str | Path | None = None, install: bool = False,
                    console: Console | None = None) -> StarterBuild:
    """Bring a finished build up to today's runtime without training again: remake the
    out-of-distribution references of its best.pt (their definitions change more often
    than a network needs retraining), export, score and write the card again.

    Refuses a build whose recorded recipe is not the repository's recipe of that name:
    its card would describe a model it is not."""
    from mri2mri.train.feature_reference import add_ood_references

    out = Path(out)
    try:
        recorded = json.loads((out / "build.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(out / "build.json", f"not a finished starter build ({exc})") from None
    r = recipe(recorded["recipe"]["name"])
    if _what_makes_the_model(json.loads(json.dumps(r.to_dict()))) != \
            _what_makes_the_model(recorded["recipe"]):
        raise InputError(out / "build.json", f"was built from another {r.name} recipe than "
                                             "the repository's: build it again")
    best = out / "run" / "best.pt"
    console = console or Console(stderr=True)
    console.rule(f"{r.name}: remaking the out-of-distribution references of {best}")
    tick = time.perf_counter()
    add_ood_references(best, _cohort(out))
    seconds = {k: v for k, v in recorded["seconds"].items() if k in ("simulate", "train")}
    seconds["references"] = round(time.perf_counter() - tick, 1)
    real = real if real is not None else recorded.get("real")
    build = StarterBuild(r, out, out / recorded["model"], out / recorded["card"], seconds)
    return _finish(build, best, real=real, install=install, console=console)
