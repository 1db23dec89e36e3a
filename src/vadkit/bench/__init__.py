"""Benchmark grids: methods x backbones x datasets x seeds from one YAML config, run, resumed and summarised.

    from vadkit.bench import run_bench
    result = run_bench("benchmarks/configs/edge.yaml", "runs/edge")   # or executor="process" / "ray"
    result.rows        # one dict per cell: the rows of results.csv

- ``config.py``: the YAML schema and the grid of cells it expands to;
- ``cell.py``: one cell, trained, evaluated, reported and profiled into its own run folder;
- ``executors.py``: where cells run (this process, a process pool, a Ray cluster);
- ``results.py``: results.csv / results.md / results.parquet;
- ``page.py``: index.html with the tables and Pareto plots;
- ``grid.py``: ``plan_bench`` and ``run_bench``, the commands ``vadkit bench plan`` / ``run``.
"""

from vadkit.bench.config import BenchConfig, Cell, ConfigError, load_config
from vadkit.bench.grid import BenchRun, plan_bench, run_bench

__all__ = ["BenchConfig", "BenchRun", "Cell", "ConfigError", "load_config", "plan_bench", "run_bench"]
