"""A continual-learning config (YAML): the task stream, the method and the strategy.

    name: three-products                 # optional: names the run in results.md
    tasks:                               # in learning order; each entry as a bench config's `datasets:`
      - {name: bottle, path: ../data/bottle, layout: mvtec}
      - {name: cable, path: ../data/cable}
    method: stfpm                        # a registered method (`vadkit train --help` lists them)
    method_params: {max_steps: 100}      # its constructor parameters
    strategy: replay                     # finetune, joint, replay, compressed_replay, task_banks or adapters
    params: {budget_images: 50}          # the strategy's parameters
    metrics: [image_auroc, pixel_auroc, pixel_aupro]   # optional (this is the default): registry keys
    device: cpu                          # optional: cpu (default), cuda or auto

Relative task paths are relative to the config file's folder (as in a bench config, whose dataset reader this
uses). Every name is checked when the config is read, and each error names the file, the entry and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vadkit.bench.config import ConfigError, DatasetSpec, no_unknown_keys, parse_dataset, read_yaml

__all__ = ["DEFAULT_METRICS", "ContinualConfig", "load_config", "parse_config"]

DEFAULT_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")
_TOP_KEYS = {"name", "tasks", "method", "method_params", "strategy", "params", "metrics", "device"}


@dataclass(frozen=True)
class ContinualConfig:
    path: Path
    tasks: tuple[DatasetSpec, ...]
    method: str
    strategy: str
    method_params: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = DEFAULT_METRICS
    name: str | None = None
    device: str = "cpu"


def load_config(path: str | Path) -> ContinualConfig:
    """Read and check a continual config (module docstring); a problem raises ConfigError naming the entry."""
    path = Path(path)
    return parse_config(read_yaml(path, "continual config", "give a YAML file with tasks, method and strategy"), path)


def parse_config(raw: Any, path: Path) -> ContinualConfig:
    """Check a loaded YAML document; ``path`` names it in errors and anchors relative task paths."""
    from vadkit.continual.strategies import STRATEGIES
    from vadkit.metrics import registry
    from vadkit.models.registry import list_models, model_class

    where = str(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the config must be a mapping with tasks, method and strategy")
    no_unknown_keys(raw, _TOP_KEYS, where)
    entries = raw.get("tasks")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: `tasks:` must be a non-empty list of datasets, e.g. "
                          "[{name: bottle, path: data/bottle, layout: mvtec}, ...], in learning order")
    tasks = tuple(parse_dataset(entry, f"{where}: tasks[{i}]", path.parent) for i, entry in enumerate(entries))
    names = [task.name for task in tasks]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{where}: tasks: {name!r} appears twice; each task needs a distinct name")
    method = raw.get("method")
    if method not in list_models():
        raise ConfigError(f"{where}: `method:` must be one of {', '.join(list_models())}, got {method!r}")
    method_params = _mapping(raw, "method_params", where, f"{method}'s parameters, e.g. {{max_steps: 100}}")
    valid = model_class(method).param_names()
    wrong = sorted(set(method_params) - set(valid))
    if wrong:
        raise ConfigError(f"{where}: method_params: unknown parameter(s) for {method}: {', '.join(wrong)}; "
                          f"valid: {', '.join(valid)}")
    strategy = raw.get("strategy")
    if strategy not in STRATEGIES:
        raise ConfigError(f"{where}: `strategy:` must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    params = _mapping(raw, "params", where, f"the {strategy} strategy's parameters")
    valid = STRATEGIES[strategy].param_names()
    wrong = sorted(set(params) - set(valid))
    if wrong:
        raise ConfigError(f"{where}: params: unknown parameter(s) for strategy {strategy}: {', '.join(wrong)}; "
                          f"valid: {', '.join(valid) or 'none (remove `params:`)'}")
    needed = STRATEGIES[strategy].requires_method
    if needed is not None and method != needed:
        raise ConfigError(f"{where}: strategy {strategy} {STRATEGIES[strategy].requirement}: set "
                          f"`method: {needed}` (got {method})")
    metrics = raw.get("metrics", list(DEFAULT_METRICS))
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise ConfigError(f"{where}: `metrics:` must be a non-empty list of metric keys, e.g. {list(DEFAULT_METRICS)}")
    known = [metric.key for metric in registry.metrics()]
    wrong = [m for m in metrics if m not in known]
    if wrong:
        raise ConfigError(f"{where}: unknown metric(s) {', '.join(wrong)}; known: {', '.join(known)}")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{where}: `name:` must be a string, got {name!r}")
    device = raw.get("device", "cpu")
    if not isinstance(device, str) or not (device in ("cpu", "auto") or device.startswith("cuda")):
        raise ConfigError(f"{where}: `device:` must be cpu, cuda, cuda:N or auto, got {device!r}")
    return ContinualConfig(path=path, tasks=tasks, method=method, strategy=strategy, method_params=method_params,
                           params=params, metrics=tuple(metrics), name=name, device=device)


def _mapping(raw: dict, key: str, where: str, what: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: `{key}:` must be a mapping of {what}")
    return dict(value)
