"""``metrics_from_npz.py`` for the ViT runs, whose maps are at the model's input size (224 x 224), not 256.

    .venv/bin/python benchmarks/anomalib_reference/metrics_vit.py --glob 'battery_weld_anomalydino_*'
    .venv/bin/python benchmarks/anomalib_reference/metrics_vit.py --image-size 224 --glob 'battery_weld_dinomaly_*'

Sets ``reference.IMAGE_SIZE`` (read by ``reference.masks_for`` at call time) and runs ``metrics_from_npz.main()``
with the other arguments unchanged, so vadkit's masks are made at the maps' size. Runs in the vadkit venv.
"""

from __future__ import annotations

import sys

import reference as ref


def main() -> None:
    argv = sys.argv[1:]
    if "--image-size" in argv:
        at = argv.index("--image-size")
        ref.IMAGE_SIZE = int(argv[at + 1])
        del argv[at:at + 2]
    else:
        ref.IMAGE_SIZE = 224
    sys.argv = [sys.argv[0], *argv]
    import metrics_from_npz

    metrics_from_npz.main()


if __name__ == "__main__":
    main()
