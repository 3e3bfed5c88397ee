"""Experiment folders: `experiment.toml` (what every run shares) and `runs/*.toml` (one per method and budget).

    experiment.toml                 name, description, base, task, [data], [train], [bench]
    runs/10-adaptir.toml            label, method, [config] (the method's fields), [train] overrides

Everything is checked when the folder is loaded - unknown keys, wrong types, unknown methods,
method configs (through the method's own `config_from_dict`), loop settings, the bench protocol -
and every problem is reported at once, each naming its file, before anything trains.

Paths may use `${NAME}` / `$NAME` environment variables (`${ADAPTIR_SHARED}/weights/...`); a
relative path is relative to the experiment folder. ADAPTIR_SHARED has no default here: the
caller passes `shared` (the `--shared` option) or sets the variable.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from adaptir_cli.adapters import get_method
from adaptir_cli.bench.protocol import make_protocol
from adaptir_cli.data.datasets import get_spec
from adaptir_cli.tasks import get_task
from adaptir_cli.training.data import DataOptions, default_workers
from adaptir_cli.training.finetune import FULL
from adaptir_cli.training.loop import FINETUNE_DEFAULTS, LoopSettings
from adaptir_cli.training.sampling import degradation_names
from adaptir_cli.training.schedule import Schedule, default_warmup

EXPERIMENT_FILE = "experiment.toml"
RUNS_FOLDER = "runs"
SHARED_VARIABLE = "ADAPTIR_SHARED"
# The run method that trains nothing: the frozen base on the degraded input. (FULL, the other
# method that is not an adapter, trains the whole base.)
NONE = "none"

_WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


class ExperimentError(ValueError):
    """An experiment folder that cannot run; the message lists every problem with its file."""


# Allowed keys per table and their types (int accepts no bool; float accepts int). "path" is a
# string that is expanded and resolved against the experiment folder.
_TOP = {"name": "str", "description": "str", "base": "str", "task": "str"}
_DATA = {
    "gt": "path", "lq": "path", "degradation": "str", "lq_template": "str", "exclude": "path",
    "val_gt": "path", "val_lq": "path", "val_fraction": "float", "val_crop": "int",
}
# The names of LoopSettings and of `adaptir finetune`'s options (--weight-decay: weight_decay).
_TRAIN = {
    "steps": "int", "batch": "int", "patch": "int", "lr": "float", "schedule": "str", "warmup": "int",
    "weight_decay": "float", "grad_clip": "float", "phase_loss": "float", "seed": "int", "val_every": "int",
    "checkpoint_every": "int", "precision": "str", "workers": "int",
}
_BENCH = {"datasets": "list", "data": "path", "seed": "int", "sigma": "float"}
_RUN = {"label": "str", "method": "str"}
_TABLES = {"data": _DATA, "train": _TRAIN, "bench": _BENCH}


@dataclass(frozen=True)
class Run:
    """One `runs/*.toml`: a method (or "full" / "none") with its config and training overrides."""

    file: Path
    label: str
    method: str
    config: Any  # the method's config object; None for "full" and "none"
    config_table: dict[str, Any]  # as written
    train_overrides: dict[str, Any]

    @property
    def name(self) -> str:
        """The file stem: it names the run's outputs and results files."""
        return self.file.stem

    @property
    def trains(self) -> bool:
        return self.method != NONE

    @property
    def is_adapter(self) -> bool:
        return self.method not in (FULL, NONE)


@dataclass(frozen=True)
class Experiment:
    folder: Path
    name: str
    description: str
    base: str  # as written (environment variables unexpanded)
    task: str
    data: dict[str, Any]
    train: dict[str, Any]
    bench: dict[str, Any]
    runs: list[Run]
    shared: Path | None = None
    _env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def file(self) -> Path:
        return self.folder / EXPERIMENT_FILE

    @property
    def outputs(self) -> Path:
        """Trained adapters and bases (git-ignored: they can be remade from the folder)."""
        return self.folder / "outputs"

    @property
    def results(self) -> Path:
        """One JSON per run (committed: the report is made from them)."""
        return self.folder / "results"

    def base_source(self) -> str | Path:
        """What `load_base` takes: a manifest name, or a weights file resolved against the folder."""
        return resolve_base(self.base, self.folder, self._env, self.file)

    def data_options(self) -> DataOptions:
        values = {key: self._path(value) if _DATA[key] == "path" else value for key, value in self.data.items()}
        return DataOptions(**values)

    def merged_train(self, run: Run) -> dict[str, Any]:
        """The experiment's [train] with the run's overrides, as written (no defaults filled in)."""
        return {**self.train, **run.train_overrides}

    def loop_settings(self, run: Run) -> LoopSettings:
        # A [train] key left out means `adaptir finetune`'s default: a run means what the same command would.
        return loop_settings({**FINETUNE_DEFAULTS, **self.merged_train(run)})

    def merged(self, run: Run) -> dict[str, Any]:
        """The run's whole effective configuration, as written: what its results record."""
        return {
            "name": self.name, "description": self.description, "base": self.base, "task": self.task,
            "data": dict(self.data), "train": self.merged_train(run), "bench": dict(self.bench),
        }

    def datasets(self) -> list[str]:
        """Bench set names as given, custom folders expanded and resolved against the experiment folder."""
        return [name if get_spec(name) is not None else str(self._path(name)) for name in self.bench["datasets"]]

    def bench_data(self) -> Path | None:
        return self._path(self.bench["data"]) if "data" in self.bench else None

    def select(self, only: list[str]) -> list[Run]:
        """The runs named in `only` (by label or file stem), in file order; all runs when empty."""
        if not only:
            return list(self.runs)
        unknown = [name for name in only if not any(name in (run.label, run.name) for run in self.runs)]
        if unknown:
            known = ", ".join(f"{run.name} ({run.label})" for run in self.runs)
            raise ExperimentError(f"{self.folder}: no run is named {', '.join(map(repr, unknown))}; runs: {known}")
        return [run for run in self.runs if run.label in only or run.name in only]

    def _path(self, value: str) -> Path:
        return resolve_path(value, self.folder, self._env, self.file)


def load_experiment(folder: Path | str, shared: Path | str | None = None) -> Experiment:
    """Read and check an experiment folder; raises ExperimentError listing every problem."""
    folder = Path(folder)
    env = dict(os.environ)
    if shared is not None:
        env[SHARED_VARIABLE] = str(Path(shared).expanduser().resolve())
    file = folder / EXPERIMENT_FILE
    if not file.is_file():
        raise ExperimentError(
            f"{folder} is not an experiment folder: {EXPERIMENT_FILE} not found\n"
            f"Hint: an experiment is a folder with {EXPERIMENT_FILE} and {RUNS_FOLDER}/*.toml; "
            "`adaptir experiment run --help` shows an example."
        )
    problems: list[str] = []
    top = _read_toml(file, problems)
    _check_table(top, {**_TOP, **{name: "table" for name in _TABLES}}, file, "", problems)
    for key in ("name", "base", "task"):
        if key not in top:
            problems.append(f"{file}: {key} is missing")
    tables = {name: top.get(name, {}) if isinstance(top.get(name, {}), dict) else {} for name in _TABLES}
    for name, schema in _TABLES.items():
        before = len(problems)
        _check_table(tables[name], schema, file, f"[{name}] ", problems)
        if name == "train":
            train_typed = len(problems) == before
    if "gt" not in tables["data"]:
        problems.append(f"{file}: [data] gt is missing (the folder of clean training images)")
    if not tables["bench"].get("datasets"):
        problems.append(f"{file}: [bench] datasets is missing (a list of test sets or folders)")
    task = top.get("task")
    if isinstance(task, str):
        _check_task(task, tables, file, problems)

    experiment = Experiment(
        folder=folder, name=str(top.get("name", folder.name)), description=str(top.get("description", "")),
        base=str(top.get("base", "")), task=str(task), data=tables["data"], train=tables["train"],
        bench=tables["bench"], runs=[], shared=Path(env[SHARED_VARIABLE]) if SHARED_VARIABLE in env else None,
        _env=env,
    )
    runs = _load_runs(folder, problems)
    labels: dict[str, Path] = {}
    for run in runs:
        if run.label in labels:
            problems.append(f"{run.file}: label {run.label!r} is also the label of {labels[run.label].name}")
        labels.setdefault(run.label, run.file)
        if run.trains and train_typed:  # a run loaded at all has well-typed overrides
            try:
                experiment.loop_settings(run)
            except ValueError as error:
                problems.append(f"{run.file}: [train] {error}")
    if not problems:  # paths last: a missing variable is clearer once the rest is right
        _check_paths(experiment, problems)
    if problems:
        raise ExperimentError(f"{len(problems)} problem(s) in experiment {folder}:\n  " + "\n  ".join(problems))
    return replace(experiment, runs=runs)


def loop_settings(values: Mapping[str, Any]) -> LoopSettings:
    """LoopSettings from [train] values with every key present (FINETUNE_DEFAULTS filled in)."""
    steps = values["steps"]
    warmup = default_warmup(steps) if values["warmup"] is None else values["warmup"]
    return LoopSettings(
        steps=steps, batch=values["batch"], patch=values["patch"], lr=float(values["lr"]),
        schedule=Schedule(values["schedule"], steps, warmup), weight_decay=float(values["weight_decay"]),
        grad_clip=float(values["grad_clip"]), phase_loss=float(values["phase_loss"]), seed=values["seed"],
        val_every=values["val_every"], checkpoint_every=values["checkpoint_every"], precision=values["precision"],
        workers=default_workers() if values["workers"] is None else values["workers"],
    )


def expand(value: str, env: Mapping[str, str], file: Path, what: str) -> str:
    """`${NAME}` and `$NAME` from `env`; an unset variable is an error naming the file and the fix."""
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            hint = (f"pass --shared DIR (the folder holding data/ and weights/) or set {SHARED_VARIABLE}"
                    if name == SHARED_VARIABLE else f"set the environment variable {name}")
            raise ExperimentError(f"{file}: {what} uses ${{{name}}}, which is not set\nHint: {hint}.")
        return env[name]

    return _VARIABLE.sub(substitute, value)


def resolve_path(value: str, folder: Path, env: Mapping[str, str], file: Path, what: str = "a path") -> Path:
    path = Path(expand(value, env, file, what)).expanduser()
    return path if path.is_absolute() else folder / path


def resolve_base(value: str, folder: Path, env: Mapping[str, str], file: Path) -> str | Path:
    """A manifest name stays a name; anything that looks like a file is a path (relative to the folder)."""
    expanded = expand(value, env, file, "base")
    path = Path(expanded).expanduser()
    looks_like_file = "/" in expanded or os.sep in expanded or path.suffix in _WEIGHT_SUFFIXES
    if looks_like_file or (folder / path).is_file():
        return path if path.is_absolute() else folder / path
    return expanded


def _read_toml(file: Path, problems: list[str]) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        problems.append(f"{file}: cannot be read ({error})")
    except tomllib.TOMLDecodeError as error:
        problems.append(f"{file}: not valid TOML ({error})")
    return {}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("str", "path"):
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, dict)  # "table"


_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "path": "a path string",
               "list": "a list of strings", "table": "a table"}


def _check_table(table: Mapping[str, Any], schema: Mapping[str, str], file: Path, where: str, problems: list[str]) -> None:
    for key, value in table.items():
        if key not in schema:
            problems.append(f"{file}: {where}unknown key {key!r}; known keys: {', '.join(schema)}")
        elif not _type_ok(value, schema[key]):
            problems.append(f"{file}: {where}{key} must be {_TYPE_NAMES[schema[key]]}, got {value!r}")


def _check_task(task: str, tables: Mapping[str, dict[str, Any]], file: Path, problems: list[str]) -> None:
    try:
        get_task(task)
    except KeyError as error:
        problems.append(f"{file}: {error}")
        return
    degradation = tables["data"].get("degradation")
    if isinstance(degradation, str) and degradation not in degradation_names():
        problems.append(f"{file}: [data] degradation {degradation!r} is unknown; known: {', '.join(degradation_names())}")
    bench = tables["bench"]
    try:
        make_protocol(task, bench.get("sigma"), bench.get("seed", 0))
    except ValueError as error:
        problems.append(f"{file}: [bench] {error}")


def _load_runs(folder: Path, problems: list[str]) -> list[Run]:
    files = sorted((folder / RUNS_FOLDER).glob("*.toml"))
    if not files:
        problems.append(f"{folder / RUNS_FOLDER}: no run files (*.toml); add one per method and budget")
    return [run for run in (_load_run(file, problems) for file in files) if run is not None]


def _load_run(file: Path, problems: list[str]) -> Run | None:
    before = len(problems)
    data = _read_toml(file, problems)
    _check_table(data, {**_RUN, "config": "table", "train": "table"}, file, "", problems)
    for key in _RUN:
        if key not in data:
            problems.append(f"{file}: {key} is missing")
    table = data.get("config", {}) if isinstance(data.get("config", {}), dict) else {}
    overrides = data.get("train", {}) if isinstance(data.get("train", {}), dict) else {}
    _check_table(overrides, _TRAIN, file, "[train] ", problems)
    method = data.get("method")
    config = None
    if method in (FULL, NONE):
        if table:
            problems.append(f"{file}: method {method!r} takes no [config]; remove it")
        if method == NONE and overrides:
            problems.append(f"{file}: method 'none' trains nothing; remove its [train] table")
    elif isinstance(method, str):
        try:
            spec = get_method(method)
            config = spec.config_from_dict(table)
        except KeyError as error:  # UnknownMethodError
            problems.append(f"{file}: {error}, {FULL!r} (full fine-tuning) or {NONE!r} (no tuning)")
        except (TypeError, ValueError) as error:
            problems.append(f"{file}: [config] {error}")
    if len(problems) > before:
        return None
    return Run(file, data["label"], method, config, dict(table), dict(overrides))


def _check_paths(experiment: Experiment, problems: list[str]) -> None:
    """Expand every path now, so that a missing ${ADAPTIR_SHARED} stops the run before it trains."""
    try:
        experiment.base_source()
        experiment.data_options()
        experiment.datasets()
        experiment.bench_data()
    except ExperimentError as error:
        problems.append(str(error))
