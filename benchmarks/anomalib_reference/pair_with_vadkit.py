"""A vadkit run beside an anomalib reference run on the same test images: metrics and DeLong's paired test.

    .venv/bin/python benchmarks/anomalib_reference/pair_with_vadkit.py RUN_DIR ANOMALIB_STEM [RUN_DIR STEM ...]

``RUN_DIR`` is a ``vadkit train`` run folder (its ``predictions.npz``), ``ANOMALIB_STEM`` a run of this folder's
scripts (``results/anomalib/<stem>.npz``). Both are scored by vadkit's metrics against vadkit's masks, after
checking that they list the same test images (matched by path, so the order may differ). Image AUROC gets
DeLong's paired test (:func:`vadkit.metrics.paired.delong_test`: the difference vadkit − anomalib and its 95%
interval, over the test images of this one pair of fitted models; training randomness is not in it). Runs in
the vadkit venv; prints one Markdown row per pair.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import reference as ref

KEYS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def pair(run_dir: Path, stem: str) -> str:
    from vadkit.data import Transform
    from vadkit.data.io import load_mask
    from vadkit.metrics import compute_metrics
    from vadkit.metrics.paired import delong_test
    from vadkit.runs.record import load_record

    ours = load_record(run_dir)
    with np.load(ref.RESULTS / f"{stem}.npz", allow_pickle=False) as data:
        theirs = {"paths": [str(Path(p).resolve()) for p in data["paths"].tolist()], "labels": data["labels"],
                  "scores": data["scores"].astype(np.float64), "maps": data["maps"].astype(np.float32)}
    our_paths = [str(Path(p).resolve()) for p in ours.paths]
    if sorted(our_paths) != sorted(theirs["paths"]):
        raise SystemExit(f"{run_dir} and {stem} were not scored on the same test images")
    order = [theirs["paths"].index(p) for p in our_paths]  # anomalib's rows in vadkit's order
    labels = np.asarray(ours.labels)
    assert np.array_equal(labels, np.asarray(theirs["labels"])[order])
    transform = Transform(image_size=ours.maps.shape[-1])
    masks = np.stack([transform.mask_array(load_mask(Path(m))) if m else np.zeros(ours.maps.shape[1:], bool)
                      for m in ours.mask_paths])
    values = {}
    for name, scores, maps in (("vadkit", ours.scores.astype(np.float64), ours.maps.astype(np.float32)),
                               ("anomalib", theirs["scores"][order], theirs["maps"][order])):
        values[name] = compute_metrics(labels, scores, masks, maps).values
    test = delong_test(labels, theirs["scores"][order], ours.scores.astype(np.float64))
    cells = " | ".join(f"{values['vadkit'][k]:.3f} / {values['anomalib'][k]:.3f}" for k in KEYS)
    return (f"| {run_dir.name} vs {stem} | {cells} | {test.difference:+.3f} [{test.ci_low:+.3f}, {test.ci_high:+.3f}], "
            f"p = {test.p_value:.2g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", help="RUN_DIR ANOMALIB_STEM, repeated")
    args = parser.parse_args()
    if len(args.pairs) % 2:
        parser.error("give pairs: RUN_DIR ANOMALIB_STEM ...")
    print("| vadkit run vs anomalib run | image AUROC (vadkit / anomalib) | pixel AUROC | AU-PRO | "
          "image AUROC vadkit − anomalib [95% DeLong] |")
    print("|---|---|---|---|---|")
    for run_dir, stem in zip(args.pairs[::2], args.pairs[1::2]):
        print(pair(Path(run_dir), stem))


if __name__ == "__main__":
    main()
