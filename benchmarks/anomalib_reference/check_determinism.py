"""Same seed twice -> same outputs? Different seeds -> how different? (battery_weld, from saved runs)

    /tmp/anomalib_venv/bin/python benchmarks/anomalib_reference/check_determinism.py

Compares ``<config>_seed0.npz`` with ``<config>_seed0_repeat.npz`` (a second process, same seed; grid.py makes
it) and, for contrast, seed 0 with seeds 1 and 2: max abs difference of the raw scores and maps, and whether
they are bitwise equal. Writes benchmarks/results/anomalib/determinism.json.
"""

from __future__ import annotations

import json

import numpy as np

import reference as ref

CONFIGS = ("battery_weld_patchcore_0.01", "battery_weld_patchcore_0.1", "battery_weld_padim_none")


def compare(a_name: str, b_name: str) -> dict | None:
    a_path, b_path = ref.RESULTS / f"{a_name}.npz", ref.RESULTS / f"{b_name}.npz"
    if not (a_path.exists() and b_path.exists()):
        return None
    a, b = np.load(a_path), np.load(b_path)
    assert (a["paths"] == b["paths"]).all()
    sa, sb = a["scores"], b["scores"]
    ma, mb = a["maps"].astype(np.float32), b["maps"].astype(np.float32)
    return {
        "scores_bitwise_equal": bool(np.array_equal(sa, sb)),
        "scores_max_abs_diff": float(np.abs(sa - sb).max()),
        "scores_max_rel_diff": float((np.abs(sa - sb) / np.abs(sa).clip(1e-12)).max()),
        "maps_float16_bitwise_equal": bool(np.array_equal(a["maps"], b["maps"])),
        "maps_max_abs_diff": float(np.abs(ma - mb).max()),
    }


def main() -> None:
    out = {}
    for config in CONFIGS:
        out[config] = {
            "seed0_vs_seed0_repeat": compare(f"{config}_seed0", f"{config}_seed0_repeat"),
            "seed0_vs_seed1": compare(f"{config}_seed0", f"{config}_seed1"),
            "seed0_vs_seed2": compare(f"{config}_seed0", f"{config}_seed2"),
        }
    (ref.RESULTS / "determinism.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
