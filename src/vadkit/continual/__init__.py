"""Continual learning: a model that learns products one after another, evaluated on all of them after each.

Production lines add products over time; retraining from scratch on every image ever seen is the upper bound
(``joint``), naive fine-tuning the lower (``finetune``), and the strategies in between trade memory for
remembering (``replay``, ``compressed_replay``, for PatchCore ``task_banks``, for AdapTS ``adapters``). This app composes the layers
below it (data, models, ``vadkit.runs``' evaluation) and adds the continual bookkeeping only::

    from vadkit.continual import TaskStream, make_strategy, run_stream, write_results
    stream = TaskStream.from_folders({"bottle": "data/bottle", "cable": "data/cable"})
    strategy = make_strategy("replay", "stfpm", {"max_steps": 100}, {"budget_images": 50})
    results = run_stream(stream, strategy)
    results.R["image_auroc"], results.forgetting("image_auroc"), results.bwt("image_auroc")
    write_results(results, "runs/continual")      # results.json, results.md, r_matrix.png

Modules: ``stream.py`` (tasks), ``config.py`` (the YAML of ``vadkit continual run``), ``memory.py`` (reservoir
sampling under a balanced budget), ``images.py`` (stored replay images), ``strategies/`` (one per module),
``runner.py`` (the loop and the files), ``results.py`` (R, average, forgetting, BWT), ``plot.py`` (the heatmap).
"""

from vadkit._lazy import lazy_attributes

_LAZY = {
    "ContinualConfig": "vadkit.continual.config",
    "load_config": "vadkit.continual.config",
    "ContinualResults": "vadkit.continual.results",
    "average_seen": "vadkit.continual.results",
    "backward_transfer": "vadkit.continual.results",
    "forgetting": "vadkit.continual.results",
    "Reservoir": "vadkit.continual.memory",
    "TaskBalancedMemory": "vadkit.continual.memory",
    "STRATEGIES": "vadkit.continual.strategies",
    "Strategy": "vadkit.continual.strategies",
    "Task": "vadkit.continual.stream",
    "TaskStream": "vadkit.continual.stream",
    "make_strategy": "vadkit.continual.runner",
    "run_config": "vadkit.continual.runner",
    "run_stream": "vadkit.continual.runner",
    "write_results": "vadkit.continual.runner",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
__all__ = sorted(_LAZY)
