"""A benchmark config (YAML) and the grid of cells it expands to.

The schema (README, "Benchmarks"; every key but ``name``, ``datasets`` and ``methods`` is optional)::

    name: edge-study
    datasets:                       # each: name, layout (default mvtec), path (not for elpv), options
      - {name: weld, path: ../shared/datasets/battery_weld/welding, layout: mvtec}
      - {name: tiles, path: ../shared/datasets/magnetic_tile, layout: mtd, options: {train_ratio: 0.8}}
    methods:                        # each: name (a registered method), params, backbones, seeds, label
      - {name: patchcore, params: {coreset_ratio: 0.1}}
      - {name: padim, label: padim_diag, params: {covariance: diagonal}, backbones: [mobilenet_v2]}
      - {name: anomalydino, label: adino_1shot, params: {shots: 1}, seeds: [0, 1, 2]}
      - {name: patchcore, label: pc_tiles, params: {image_size: 1024}, tile: {size: 256, overlap: 0.25}}
    backbones: [mobilenet_v2, efficientnet_lite0]   # default: each method's own default backbone
    seeds: [0]                      # the model's ``seed`` parameter
    profile: true                   # or {batch_size: 8, repeats: 20, warmup: 3}: `vadkit profile` per cell
    threads: 2                      # torch/faiss threads per cell (default: the CPUs / workers)

Cells are the product datasets x methods x backbones x seeds, in that order (a method's own ``backbones`` and
``seeds`` replace the global lists for it: e.g. several seeds for a few-shot draw, one for a deterministic method). A cell's id names it in folders and tables: ``<dataset>-<label>-<backbone>-s<seed>``
(``label`` defaults to the method name; two entries of one method need distinct labels).

A method's ``tile: {size, overlap (default 0.25), ensemble (default false)}`` runs it on tiles of the whole
image through the ``tiled`` wrapper (:mod:`vadkit.models.tiled`): its ``image_size``/``resize`` params are the
whole image's, the rest (and the cell's backbone and seed) the method's.

Relative dataset paths are relative to the folder of the config file, so a config next to the data it names
works from any working directory. Method names and parameter names are checked when the config is read (a typo
fails before any cell runs); dataset paths are not: a missing folder fails its own cells, with the error in the
results table, and the rest of the grid goes on.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vadkit.errors import VadkitError

__all__ = ["BenchConfig", "Cell", "ConfigError", "DatasetSpec", "MethodSpec", "ProfileSpec", "load_config",
           "no_unknown_keys", "parse_dataset", "read_yaml"]

_TOP_KEYS = {"name", "datasets", "methods", "backbones", "seeds", "profile", "threads"}
_DATASET_KEYS = {"name", "path", "layout", "options"}
_METHOD_KEYS = {"name", "params", "backbones", "seeds", "label", "tile"}
_TILE_KEYS = {"size", "overlap", "ensemble"}
_PROFILE_KEYS = {"batch_size", "repeats", "warmup"}
# `backbone` and `seed` come from the grid; a method's params setting them would make the grid lie
_GRID_PARAMS = {"backbone", "seed"}


class ConfigError(VadkitError, ValueError):
    """A benchmark config cannot be used as written (the message names the file, the entry and the fix)."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    layout: str = "mvtec"
    path: str | None = None  # absolute once loaded (None: a layout that needs no folder, e.g. elpv)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    backbones: tuple[str | None, ...] | None = None
    seeds: tuple[int, ...] | None = None
    #: {"size", "overlap", "ensemble"}: run the method on tiles (None: on whole images)
    tile: dict[str, Any] | None = None


@dataclass(frozen=True)
class ProfileSpec:
    """``vadkit profile`` settings of every cell (see :func:`vadkit.profiling.profile_model`)."""

    batch_size: int = 8
    repeats: int = 20
    warmup: int = 3


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a method with its parameters on a dataset, with one backbone and one seed."""

    dataset: DatasetSpec
    method: MethodSpec
    backbone: str | None
    seed: int
    profile: ProfileSpec | None
    threads: int | None = None

    @property
    def id(self) -> str:
        backbone = self.backbone or "default"
        return _slug(f"{self.dataset.name}-{self.method.label}-{backbone}-s{self.seed}")

    @property
    def params(self) -> dict[str, Any]:
        """The model's constructor parameters: the method's, with the cell's backbone and seed (for a tiled
        method, the ``tiled`` wrapper's, the method's own inside them)."""
        params = {**self.method.params, "seed": self.seed}
        if self.backbone is not None:
            params["backbone"] = self.backbone
        if self.method.tile is not None:
            from vadkit.models.tiled import tiled_params

            return tiled_params(self.method.name, params, **self.method.tile)
        return params

    @property
    def model_name(self) -> str:
        """The registered model the cell builds: the method, or ``tiled`` around it."""
        return self.method.name if self.method.tile is None else "tiled"

    def as_dict(self) -> dict[str, Any]:
        """What defines the cell's results (written to its cell.json; a change means the cell must run again).
        ``threads`` is left out: it changes timings, not what is computed."""
        return {"id": self.id, "dataset": asdict(self.dataset), "method": self.method.name,
                "label": self.method.label, "backbone": self.backbone, "seed": self.seed, "params": self.params,
                "profile": None if self.profile is None else asdict(self.profile)}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BenchConfig:
    name: str
    path: Path
    datasets: tuple[DatasetSpec, ...]
    methods: tuple[MethodSpec, ...]
    backbones: tuple[str | None, ...]
    seeds: tuple[int, ...]
    profile: ProfileSpec | None
    threads: int | None
    raw: dict[str, Any]

    def cells(self) -> list[Cell]:
        """The grid, in config order: datasets, then methods, then backbones, then seeds."""
        return [Cell(dataset, method, backbone, seed, self.profile, self.threads)
                for dataset in self.datasets for method in self.methods
                for backbone in (method.backbones or self.backbones) for seed in (method.seeds or self.seeds)]


def load_config(path: str | Path) -> BenchConfig:
    """Read and check a benchmark config (module docstring); a problem raises ConfigError naming the entry."""
    path = Path(path)
    return parse_config(read_yaml(path, "benchmark config", "give a YAML file; examples in benchmarks/configs/"),
                        path)


def read_yaml(path: Path, kind: str, hint: str) -> Any:
    """The YAML document in ``path``, or a ConfigError naming the file: ``kind`` names the config in the
    not-found message, ``hint`` says what to give. Every YAML config of vadkit is read with this."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"{kind} not found: {path} ({hint})")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None


def parse_config(raw: Any, path: Path) -> BenchConfig:
    """Check a loaded YAML document; ``path`` names it in errors and anchors relative dataset paths."""
    where = str(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the config must be a mapping with name, datasets and methods")
    no_unknown_keys(raw, _TOP_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: `name:` is required (a short name for the study, e.g. edge-study)")
    datasets = tuple(_dataset(entry, f"{where}: datasets[{i}]", path.parent)
                     for i, entry in enumerate(_list(raw, "datasets", where, required=True)))
    methods = tuple(_method(entry, f"{where}: methods[{i}]")
                    for i, entry in enumerate(_list(raw, "methods", where, required=True)))
    _unique([d.name for d in datasets], f"{where}: datasets", "name")
    _unique([m.label for m in methods], f"{where}: methods", "label (give each entry of one method its own `label:`)")
    backbones = tuple(_backbones(raw.get("backbones"), f"{where}: backbones")) or (None,)
    seeds = _seeds(raw.get("seeds", [0]), f"{where}: `seeds:`")
    threads = raw.get("threads")
    if threads is not None and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        raise ConfigError(f"{where}: `threads:` must be an integer >= 1, got {threads!r}")
    return BenchConfig(name=name.strip(), path=path, datasets=datasets, methods=methods, backbones=backbones,
                       seeds=seeds, profile=_profile(raw.get("profile", False), f"{where}: profile"),
                       threads=threads, raw=raw)


def parse_dataset(entry: Any, where: str, base: Path) -> DatasetSpec:
    """One ``datasets:`` entry checked and its path resolved against ``base`` (the config file's folder); ``where``
    names the entry in errors. Other configs that list datasets (``vadkit.continual``'s tasks) read them with this."""
    return _dataset(entry, where, base)


def _dataset(entry: Any, where: str, base: Path) -> DatasetSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping like {{name: weld, path: data/weld, layout: mvtec}}")
    no_unknown_keys(entry, _DATASET_KEYS, where)
    name = _name(entry, where)
    layout = entry.get("layout", "mvtec")
    from vadkit.data.layouts import LAYOUTS

    if layout not in LAYOUTS:
        raise ConfigError(f"{where}: unknown layout {layout!r}; known layouts: {', '.join(sorted(LAYOUTS))}")
    raw_path = entry.get("path")
    if raw_path is None and layout != "elpv":
        raise ConfigError(f"{where}: `path:` is required for layout {layout!r} (the dataset's root folder)")
    path = None if raw_path is None else str((base / Path(str(raw_path)).expanduser()).resolve())
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: `options:` must be a mapping of layout options, e.g. {{category: bottle}}")
    return DatasetSpec(name=name, layout=layout, path=path, options=dict(options))


def _method(entry: Any, where: str) -> MethodSpec:
    from vadkit.models.registry import list_models, model_class

    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping like {{name: patchcore, params: {{coreset_ratio: 0.1}}}}")
    no_unknown_keys(entry, _METHOD_KEYS, where)
    name = _name(entry, where)
    if name not in list_models():
        raise ConfigError(f"{where}: unknown method {name!r}; available: {', '.join(list_models())}")
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: `params:` must be a mapping of {name}'s parameters")
    valid = model_class(name).param_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown parameter(s) for {name}: {', '.join(unknown)}; valid: {', '.join(valid)}")
    grid = sorted(set(params) & _GRID_PARAMS)
    if grid:
        raise ConfigError(f"{where}: set {' and '.join(grid)} with the config's `backbones:`/`seeds:` (or the "
                          f"method's own `backbones:`), not in params")
    label = entry.get("label", name)
    if not isinstance(label, str) or not _slug(label) or _slug(label) != label:
        raise ConfigError(f"{where}: `label:` must be letters, digits, '_', '.' or '-', got {label!r}")
    backbones, seeds = entry.get("backbones"), entry.get("seeds")
    return MethodSpec(name=name, label=label, params=dict(params),
                      backbones=None if backbones is None else tuple(_backbones(backbones, f"{where}: backbones")),
                      seeds=None if seeds is None else _seeds(seeds, f"{where}: `seeds:`"),
                      tile=_tile(entry.get("tile"), name, params, f"{where}: `tile:`"))


def _tile(value: Any, method: str, params: dict[str, Any], where: str) -> dict[str, Any] | None:
    """A method entry's ``tile:``, checked by building the wrapper (a bad size or overlap fails now)."""
    if value is None:
        return None
    if not isinstance(value, dict) or "size" not in value:
        raise ConfigError(f"{where} must be a mapping like {{size: 256, overlap: 0.25, ensemble: false}}")
    no_unknown_keys(value, _TILE_KEYS, where)
    tile = {"tile": value["size"], "overlap": value.get("overlap", 0.25), "ensemble": value.get("ensemble", False)}
    from vadkit.models.registry import create_model
    from vadkit.models.tiled import tiled_params

    try:
        create_model("tiled", **tiled_params(method, params, **tile))
    except VadkitError as error:
        raise ConfigError(f"{where} {error}") from None
    return tile


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    seeds = tuple(value or []) if isinstance(value, (list, tuple)) else None
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where} must be a list of integers, got {value!r}")
    _unique(list(seeds), where, "value")
    return seeds


def _profile(value: Any, where: str) -> ProfileSpec | None:
    if value is False or value is None:
        return None
    if value is True:
        return ProfileSpec()
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be true, false or a mapping of {', '.join(sorted(_PROFILE_KEYS))}")
    no_unknown_keys(value, _PROFILE_KEYS, where)
    spec = ProfileSpec(**value)
    for key, low in (("batch_size", 1), ("repeats", 1), ("warmup", 0)):
        number = getattr(spec, key)
        if not (isinstance(number, int) and not isinstance(number, bool) and number >= low):
            raise ConfigError(f"{where}: {key} must be an integer >= {low}, got {number!r}")
    return spec


def _backbones(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not value or not all(isinstance(b, str) and b for b in value):
        raise ConfigError(f"{where} must be a non-empty list of backbone names, e.g. [mobilenet_v2]")
    _unique(value, where, "backbone")
    return value


def _list(raw: dict, key: str, where: str, required: bool) -> list:
    value = raw.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: `{key}:` must be a non-empty list")
    return value


def _name(entry: dict, where: str) -> str:
    name = entry.get("name")
    if not isinstance(name, str) or not _slug(name) or _slug(name) != name:
        raise ConfigError(f"{where}: `name:` is required: letters, digits, '_', '.' or '-' (it names folders), "
                          f"got {name!r}")
    return name


def no_unknown_keys(entry: dict, allowed: set[str], where: str) -> None:
    """A ConfigError naming ``where`` and the allowed keys when ``entry`` has others."""
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                          f"allowed: {', '.join(sorted(allowed))}")


def _unique(values: list, where: str, what: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{where}: {value!r} appears twice; each needs a distinct {what}")
        seen.add(value)


def _slug(text: str) -> str:
    """Keep what is safe in a folder name on every system (letters, digits, '_', '.', '-')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "", text)
