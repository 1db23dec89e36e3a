"""The ``vadkit`` command line: train, test, predict, eval, compare, report, demo, distill-teacher, export, serve,
profile, bench.

Heavy libraries (torch, faiss) are imported inside the commands, never at module level, so that
``vadkit --help`` answers instantly (a test checks that torch is not imported). Errors vadkit raises on
purpose (bad data, missing weights, damaged model files) are printed as one red line, without a traceback.
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import click

DEFAULT_OUT = "runs/demo"


def parse_assignments(pairs: tuple[str, ...], what: str) -> dict:
    """``("coreset_ratio=0.01", "layers=features.6,features.13")`` -> {"coreset_ratio": 0.01, "layers": [...]}.

    Values are Python literals when they parse as one (numbers, True/False/None, quoted strings), a list
    when they contain commas, and plain strings otherwise.
    """
    result = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint=what)
        parts = [_literal(v) for v in raw.split(",")] if "," in raw else _literal(raw)
        result[name.strip()] = parts
    return result


def _literal(text: str):
    text = text.strip()
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def _run(action):
    """Run a command body; vadkit's own errors become a one-line message and exit code 2, and warnings
    (skipped files, orphan masks) print as one line without Python's source-location noise."""
    import warnings

    from vadkit.errors import VadkitError

    previous, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return action()
    except VadkitError as error:
        click.secho(f"error: {error}", fg="red", err=True)
        sys.exit(2)
    finally:
        warnings.formatwarning = previous


#: Run facts the summary table shows after the metrics. The metric rows are the metric registry's ``summary``
#: metrics (``vadkit.metrics.registry``), read when the table is printed: ``summary_keys()``.
SUMMARY_FACT_KEYS = ("n_train", "n_test", "fit_seconds", "predict_ms_per_image", "threshold")


def summary_keys() -> tuple[str, ...]:
    """Rows of the summary table, in order: the registry's summary metrics, then the run facts."""
    from vadkit.metrics import registry

    return registry.keys(summary=True) + SUMMARY_FACT_KEYS


def _print_metrics(metrics: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    intervals = metrics.get("intervals") or {}
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")
    for key in summary_keys():
        if metrics.get(key) is not None:
            value = metrics[key]
            interval = intervals.get(key)
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value),
                          f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")
    for key, reason in metrics.get("skipped_metrics", {}).items():
        table.add_row(key, f"[dim]n/a: {reason}[/dim]", "")
    Console().print(table)
    per_defect = metrics.get("per_defect") or {}
    if per_defect:
        from vadkit.metrics import registry

        columns = [c for c in registry.keys(per_defect_column=True)
                   if any(c in values for values in per_defect.values())]
        defects = Table(title="per defect type (normal images + that type)")
        defects.add_column("defect type")
        for column in columns:
            defects.add_column(column, justify="right")
        for defect, values in per_defect.items():
            defects.add_row(defect, *[f"{values[c]:.4f}" if c in values else "n/a" for c in columns])
        Console().print(defects)


def _print_comparison(comparison) -> None:
    from rich.console import Console
    from rich.table import Table

    from vadkit.metrics import registry

    lower_is_better = set(registry.keys(higher_is_better=False))

    table = Table(title=f"B - A: {comparison.run_b} vs {comparison.run_a} ({comparison.n_images} images)")
    for column in ("metric", "A", "B", "B - A", "95% interval of B - A", "p"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, row in comparison.rows.items():
        interval = (f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" if row.get("ci_low") is not None
                    else "[dim]unpaired: see each run[/dim]")
        p_value = f"{row['p_value']:.3g}" if row.get("p_value") is not None else ""
        shown = f"{name} [dim](lower is better)[/dim]" if name in lower_is_better else name
        table.add_row(shown, f"{row['a']:.4f}", f"{row['b']:.4f}", f"{row['difference']:+.4f}", interval, p_value)
    console = Console()
    console.print(table)
    for name, test in comparison.tests.items():
        console.print(f"{name}: statistic {test['statistic']:.4g}, p = {test['p_value']:.3g} ({test['method']})")


layout_option = click.option("--layout", default="mvtec", show_default=True,
                             help="Folder layout: mvtec, folder, mtd, elpv.")
option_option = click.option("--option", "options", multiple=True, metavar="NAME=VALUE",
                             help="Layout option, repeatable (e.g. category=bottle, test_ratio=0.2).")
batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per batch.")
skip_option = click.option("--skip-bad-images", is_flag=True,
                           help="Skip unreadable image files with a warning instead of stopping.")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")
device_option = click.option("--device", default="cpu", show_default=True,
                             help="Where the networks run: cpu, cuda, cuda:N or auto (a GPU when there is one).")


def threads_option(command):
    """``--threads N`` for a command: one thread count for torch and faiss (:mod:`vadkit.threads`), set
    before the command imports either."""

    @click.option("--threads", type=click.IntRange(min=1), default=None,
                  help="Threads for torch and faiss alike (default: the CPUs available to this process).")
    @functools.wraps(command)
    def with_threads(*args, threads, **kwargs):
        from vadkit.threads import set_threads

        set_threads(threads)
        return command(*args, **kwargs)

    return with_threads


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vadkit")
def main() -> None:
    """vadkit: visual anomaly detection. Learn "normal" from defect-free images; score and localise defects."""


@main.command()
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Dataset root (not needed for elpv, which comes from PyPI).")
@layout_option
@option_option
@click.option("--model", "model_name", default="patchcore", show_default=True,
              help="Method: patchcore, patchcore_lite, padim, stfpm, paste, rd4ad, cfa, fastflow, efficientad, draem, adapts, "
                   "anomalydino, dinomaly, tiny_dinomaly, musc, sadsem, tiled. With --tile SIZE any of them runs on tiles.")
@click.option("--backbone", default=None, help="Backbone (default: the model's, mobilenet_v2).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Model parameter, repeatable (e.g. coreset_ratio=0.01; image_size=640x256 resize=fit for an "
                   "input that keeps the aspect ratio).")
@click.option("--tile", default=None, metavar="SIZE",
              help="Run the model on overlapping tiles of this size (e.g. 256 or 256x320) of the whole image, "
                   "whose size is then --param image_size (default 512).")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=0.25, show_default=True,
              help="Fraction of a tile shared with its neighbour (with --tile).")
@click.option("--tile-ensemble", is_flag=True, help="One model per tile position instead of one for all tiles.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder to write.")
@click.option("--overlays", type=int, default=8, show_default=True, help="Number of overlay PNGs to write.")
@click.option("--val-ratio", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Fraction of the training normals held out to calibrate the thresholds on "
                   "(default: 0.1 with at least 20 training images, else none).")
@click.option("--val", "val", type=click.Path(path_type=Path), default=None,
              help="Validation folder to calibrate on instead: normal images, or good/ + defect folders (+ masks).")
@click.option("--calibrate-on-test", is_flag=True,
              help="Calibrate the thresholds on the test split (MVTec habit; thresholded figures become optimistic).")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted training from OUT/training.ckpt (trained methods; a warning says so "
                   "when there is none yet and training starts from the beginning).")
@device_option
@batch_option
@skip_option
@quiet_option
@threads_option
def train(data, layout, options, model_name, backbone, params, tile, overlap, tile_ensemble, out, overlays, val_ratio,
          val, calibrate_on_test, resume, device, batch_size, skip_bad_images, quiet):
    """Train a model, calibrate its thresholds on validation images, evaluate it on the test split: writes
    OUT/model.vad, OUT/metrics.json and OUT/overlays/."""
    model_params = parse_assignments(params, "--param")
    if backbone:
        model_params["backbone"] = backbone
    shown_name = model_name
    if tile_ensemble and tile is None:
        raise click.UsageError("--tile-ensemble needs --tile SIZE")
    if tile is not None:
        from vadkit.models.tiled import tiled_params

        model_params = tiled_params(model_name, model_params, tile=tile, overlap=overlap, ensemble=tile_ensemble)
        model_name, shown_name = "tiled", f"{model_name} on {tile} tiles{' (ensemble)' if tile_ensemble else ''}"

    def action():
        from vadkit import runs

        metrics = runs.train(data=data, layout=layout, model_name=model_name, params=model_params, out=out,
                             layout_options=parse_assignments(options, "--option"), batch_size=batch_size,
                             overlays=overlays, skip_bad_images=skip_bad_images, progress=False if quiet else None,
                             val_ratio=val_ratio, val=val, calibrate_on_test=calibrate_on_test, device=device,
                             resume=resume)
        _print_metrics(metrics, f"{shown_name} on {data or layout}")
        click.echo(f"wrote {out / runs.MODEL_FILE}, {out / runs.METRICS_FILE}, {out / runs.PREDICTIONS_NPZ}, "
                   f"{out / runs.PER_IMAGE_FILE}, {out / 'overlays'}/ (vadkit report {out} makes report.html)")

    _run(action)


@main.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True, help="A model.vad file.")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Dataset root.")
@layout_option
@option_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for metrics.json and overlays (default: <model folder>/test).")
@click.option("--overlays", type=int, default=8, show_default=True)
@batch_option
@skip_option
@quiet_option
@device_option
@threads_option
def test(model_path, data, layout, options, out, overlays, batch_size, skip_bad_images, quiet, device):
    """Evaluate a saved model on a dataset's test split: prints the metrics, writes metrics.json."""
    out = out or model_path.parent / "test"

    def action():
        from vadkit import runs

        metrics = runs.test(model_path=model_path, data=data, layout=layout, out=out,
                            layout_options=parse_assignments(options, "--option"), batch_size=batch_size,
                            overlays=overlays, skip_bad_images=skip_bad_images, progress=False if quiet else None,
                            device=device)
        _print_metrics(metrics, f"{model_path} on {data or layout}")
        click.echo(f"wrote {out / runs.METRICS_FILE}, {out / runs.PREDICTIONS_NPZ}, {out / runs.PER_IMAGE_FILE}")

    _run(action)


@main.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True, help="A model.vad file.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for predictions.jsonl.")
@click.option("--no-overlays", is_flag=True, help="Do not write overlay PNGs.")
@click.option("--no-recursive", is_flag=True, help="Score a folder's own images only, not its subfolders'.")
@click.option("--full-resolution", is_flag=True,
              help="Overlays and maps at each image's original size (default: the model's input size).")
@click.option("--save-maps", is_flag=True, help="Also write each anomaly map as OUT/maps/*.npy (float32).")
@batch_option
@skip_option
@quiet_option
@device_option
@threads_option
def predict(model_path, inputs, out, no_overlays, no_recursive, full_resolution, save_maps, batch_size,
            skip_bad_images, quiet, device):
    """Score images or folders of images (subfolders included): writes OUT/predictions.jsonl (+ overlays).

    One line per image, its path relative to the folder given; with --skip-bad-images an unreadable file
    gets a line with the reason."""

    def action():
        from vadkit import runs

        target = runs.predict(model_path=model_path, inputs=inputs, out=out, batch_size=batch_size,
                              overlays=not no_overlays, skip_bad_images=skip_bad_images,
                              progress=False if quiet else None, recursive=not no_recursive,
                              full_resolution=full_resolution, save_maps=save_maps, device=device)
        click.echo(f"wrote {target}")

    _run(action)


run_dir_argument = click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
resamples_option = click.option("--resamples", type=click.IntRange(min=100), default=1000, show_default=True,
                                help="Bootstrap resamples for the confidence intervals.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")


@main.command(name="eval")
@run_dir_argument
@resamples_option
@seed_option
@click.option("--no-intervals", is_flag=True, help="Skip the bootstrap confidence intervals.")
@click.option("--aupimo-fpr", nargs=2, type=float, default=(1e-5, 1e-4), show_default=True,
              metavar="LOW HIGH", help="AUPIMO integration range of the normal-image false positive rate.")
@threads_option
def eval_command(run_dir, resamples, seed, no_intervals, aupimo_fpr):
    """Recompute every metric of a run folder from its predictions.npz (no model, no dataset needed)."""

    def action():
        from vadkit.runs.recompute import eval_run

        metrics = eval_run(run_dir, intervals=not no_intervals, n_resamples=resamples, seed=seed,
                           fpr_bounds=tuple(aupimo_fpr))
        _print_metrics(metrics, f"{run_dir}")
        click.echo(f"wrote {run_dir / 'metrics.json'} and {run_dir / 'per_image.csv'}")

    _run(action)


@main.command()
@click.argument("run_a", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("run_b", type=click.Path(path_type=Path, exists=True, file_okay=False))
@resamples_option
@seed_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for compare.json (default: not written).")
@threads_option
def compare(run_a, run_b, resamples, seed, out):
    """Compare run B with run A on the same test set: metric deltas, paired intervals and tests."""

    def action():
        from vadkit.runs.recompute import compare_runs

        comparison = compare_runs(run_a, run_b, n_resamples=resamples, seed=seed, out=out)
        _print_comparison(comparison)
        if out is not None:
            click.echo(f"wrote {out / 'compare.json'}")

    _run(action)


@main.command()
@run_dir_argument
@click.option("--gallery", "gallery_size", type=click.IntRange(min=0), default=120, show_default=True,
              help="Most images in the gallery (all misclassified first, then spread over the scores).")
@resamples_option
@seed_option
@threads_option
def report(run_dir, gallery_size, resamples, seed):
    """Write RUN_DIR/report.html: summary, curves, per-defect table and an image gallery (works offline)."""

    def action():
        from vadkit.runs.reporting import report_run

        target = report_run(run_dir, gallery_size=gallery_size, n_resamples=resamples, seed=seed)
        click.echo(f"wrote {target}")

    _run(action)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path(DEFAULT_OUT), show_default=True)
@click.option("--model", "model_name", default="patchcore", show_default=True)
@quiet_option
@threads_option
def demo(out, model_name, quiet):
    """Offline demo on real data: PatchCore on ELPV solar-cell images (the elpv-dataset package).

    Trains on defect-free monocrystalline cells and tests on held-out normal and defective ones; about 30
    seconds on a 2-core CPU.
    """
    from vadkit.demo import DEMO_LAYOUT_OPTIONS, DEMO_PARAMS

    def action():
        from vadkit import runs

        params = DEMO_PARAMS.get(model_name, {})
        metrics = runs.train(data=None, layout="elpv", model_name=model_name, params=params, out=out,
                             layout_options=DEMO_LAYOUT_OPTIONS, progress=False if quiet else None)
        _print_metrics(metrics, f"demo: {model_name} on ELPV ({DEMO_LAYOUT_OPTIONS})")
        click.echo(f"wrote {out}/model.vad, metrics.json and overlays/")

    _run(action)


@main.command(name="distill-teacher")
@click.option("--backbone", default="mobilenet_v2", show_default=True,
              help="The pretrained network whose PatchCore features the teacher learns.")
@click.option("--images", required=True, multiple=True, metavar="FOLDER_OR_elpv",
              help="Distillation images: a folder (searched recursively) or elpv (the elpv-dataset package); "
                   "repeat it to pool several sources.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Teacher file to write (default: the cache, where EfficientAD looks for this backbone).")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Training steps of 16 images (the paper's 60000).")
@click.option("--max-time", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop distilling after this many seconds (or at --steps, whichever comes first).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="Adam's learning rate (the paper's 1e-4 is for 60000 steps; a short budget learns more with more).")
@click.option("--image-size", type=click.IntRange(min=64), default=256, show_default=True,
              help="The teacher's input side in pixels (the backbone sees twice that for a stride-8 layer).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The backbone's weights file (default: resolved offline-first).")
@quiet_option
@threads_option
def distill_teacher_command(backbone, images, out, steps, max_time, lr, image_size, batch_size, seed, weights,
                            quiet):
    """Distil EfficientAD's teacher (a small patch description network) from a backbone's features: writes
    the teacher file that `--model efficientad` uses."""

    def action():
        from vadkit.models.pdn import (SOURCE_SEPARATOR, default_teacher_path, distill_teacher, image_source_paths,
                                       save_teacher)

        source = SOURCE_SEPARATOR.join(s if s == "elpv" else str(Path(s).resolve()) for s in images)
        paths = image_source_paths(source)
        teacher, metadata = distill_teacher(paths, backbone=backbone, steps=steps, image_size=image_size,
                                            batch_size=batch_size, seed=seed, source=source,
                                            weights=str(weights) if weights else None, max_time=max_time, lr=lr,
                                            progress=False if quiet else None)
        path = save_teacher(out or default_teacher_path(backbone), teacher, metadata)
        click.echo(f"wrote {path}: {metadata['steps']} steps on {metadata['n_images']} images from {source}, "
                   f"{metadata['seconds']} s, loss {metadata['first_loss']:.4g} -> {metadata['final_loss']:.4g}"
                   + ("" if out else f" (EfficientAD with backbone={backbone} finds it there)"))

    _run(action)


@main.command(name="export")
@click.argument("model_path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--format", "export_format", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Bundle folder to write (model.onnx + vadkit-edge.json), for vadkit.edge.Runtime.")
@click.option("--check", "check_data", type=click.Path(path_type=Path, exists=True), default=None,
              help="Folder of real images (searched recursively): run the PyTorch model and the export on them "
                   "and report the largest score and map differences (exit code 1 beyond 1e-4 relative).")
@click.option("--check-images", type=click.IntRange(min=1), default=32, show_default=True,
              help="How many images of --check to compare (spread evenly over the folder).")
@click.option("--int8", "calibration", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Also write an int8 bundle to OUT/int8, calibrated on this folder of normal images.")
@click.option("--int8-images", "calibration_images", type=click.IntRange(min=1), default=32, show_default=True,
              help="How many images of --int8 to calibrate on (spread evenly over the folder).")
@click.option("--int8-calibration", "calibration_method", type=click.Choice(["percentile", "minmax", "entropy"]),
              default="percentile", show_default=True,
              help="How activation ranges are chosen from the calibration images (see vadkit.edge.quantize).")
@click.option("--verbose", is_flag=True, help="Show the ONNX exporter's own messages and warnings.")
@threads_option
def export_command(model_path, export_format, out, check_data, check_images, calibration, calibration_images,
                   calibration_method, verbose):
    """Export MODEL_PATH (a .vad file) as one ONNX graph with its preprocessing, thresholds and provenance."""

    def action():
        from vadkit.data import list_images
        from vadkit.edge.bundle import ONNX_NAME
        from vadkit.edge.export import export_model
        from vadkit.edge.parity import check_parity
        from vadkit.errors import DataError
        from vadkit.models import load_model

        model = load_model(model_path)
        export_model(model, out, source=model_path, verbose=verbose)
        bundles = [("fp32", out)]
        click.echo(f"wrote {out}: {model.name} as one ONNX graph, {_mib((out / ONNX_NAME).stat().st_size)}")
        if calibration is not None:
            from vadkit.edge.quantize import quantize_bundle

            normals = list_images(calibration, recursive=True) or _no_images(calibration)
            normals = normals[::max(1, len(normals) // calibration_images)][:calibration_images]
            quantize_bundle(out, out / "int8", normals, method=calibration_method)
            bundles.append(("int8", out / "int8"))
            click.echo(f"wrote {out / 'int8'}: int8 ({calibration_method} calibration on {len(normals)} images of "
                       f"{calibration}), "
                       f"{_mib((out / 'int8' / ONNX_NAME).stat().st_size)}")
        if check_data is None:
            return
        paths = list_images(check_data, recursive=True) if check_data.is_dir() else [check_data]
        if not paths:
            raise DataError(f"no images in {check_data} (searched recursively) to check the export on")
        step = max(1, len(paths) // check_images)
        paths = paths[::step][:check_images]
        failed = False
        for precision, bundle in bundles:
            report = check_parity(model, bundle, paths)
            verdict = "within" if report["within_tolerance"] else "BEYOND"
            agree = "" if report["labels_agree"] is None else f", labels agree on {report['labels_agree']:.1%}"
            click.echo(f"{precision} parity on {report['n_images']} images: score max |diff| "
                       f"{report['score_max_abs']:.3g} ({report['score_max_rel']:.2g} relative), map "
                       f"{report['map_max_abs']:.3g} ({report['map_max_rel']:.2g} relative){agree}: {verdict} "
                       f"{report['tolerance']:g}")
            failed |= precision == "fp32" and not report["within_tolerance"]
        if failed:
            sys.exit(1)

    _run(action)


@main.command(name="serve")
@click.argument("model_path", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; the server has no authentication).")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8000, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="Most images the model runs at once (concurrent requests are batched together).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Longest a request waits for others to share its batch.")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most images waiting for the model; beyond that a request gets 503 with Retry-After.")
@click.option("--max-upload-mib", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Largest upload accepted (413 beyond).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="The model's threads: torch and faiss for a .vad file, onnxruntime for a bundle (default: the "
                   "CPUs available to this process; onnxruntime's own choice for a bundle).")
def serve_command(model_path, host, port, max_batch, max_wait_ms, max_queue, max_upload_mib, threads):
    """Serve MODEL_PATH (a .vad file, or a folder written by `vadkit export`) over HTTP: POST /predict (an image
    -> score, label, optional heatmap), GET /health, GET /metrics (Prometheus), the schema at /openapi.json."""

    def action():
        from vadkit.errors import VadkitError

        try:
            import uvicorn

            from vadkit.serve.app import create_app
        except ImportError as error:
            raise VadkitError(f"vadkit serve needs fastapi, uvicorn and python-multipart ({error}): "
                              "pip install 'vadkit[serve]'") from None
        app = create_app(model_path, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                         max_upload_bytes=max(1, int(max_upload_mib * 2**20)), threads=threads)
        predictor = app.state.predictor
        click.echo(f"serving {model_path} ({predictor.method}, input {predictor.input_size[0]}x"
                   f"{predictor.input_size[1]}) on http://{host}:{port} (schema: /openapi.json, docs: /docs)")
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

    _run(action)


def _no_images(folder):
    from vadkit.errors import DataError

    raise DataError(f"no images in {folder} (searched recursively) to calibrate the int8 export on")


def _mib(n: int | float) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _count(n: int | float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= factor:
            return f"{n / factor:.3g} {suffix}"
    return str(n)


def _print_profile(figures: dict) -> None:
    """The ``vadkit profile`` table (the --json output has the raw numbers)."""
    from rich.console import Console
    from rich.table import Table

    def ms(key: str) -> str | None:
        median, p95 = figures.get(key), figures.get(key.replace("_ms_", "_p95_ms_"))
        if median is None:
            return None
        return f"{median:.1f} ms" + (f" (p95 {p95:.1f})" if p95 is not None else "")

    def rss(phase: str) -> str | None:
        peak, delta = figures.get(f"peak_rss_{phase}_mb"), figures.get(f"peak_rss_{phase}_delta_mb")
        if peak is None:
            return None
        return f"{peak:.1f} MiB" + (f" (+{delta:.1f} during {phase})" if delta is not None else "")

    n = figures["batch_n"]
    analytic = {k.removeprefix("macs_analytic_"): v for k, v in figures.items() if k.startswith("macs_analytic_")}
    rows = [
        ("model", f"{figures['model']} ({figures['model_params']})"),
        ("input", f"{figures['image_size']} px, {figures['memory_format'] or 'n/a'}; images: {figures['data']}"),
        ("parameters", f"{_count(figures['params'])} ({_mib(figures['param_bytes'])})"),
        ("MACs per image", None if figures["macs"] is None else
         f"{_count(figures['macs'])} (counted by torch {_count(figures['macs_torch'])}"
         + (f", declared by the model {_count(figures['macs_analytic'])})" if figures["macs_analytic"] else ")")),
        *((f"  {name}", _count(value)) for name, value in analytic.items()),
        ("MACs backbone", None if figures["macs_backbone"] is None else _count(figures["macs_backbone"])),
        ("learned state (bank)", None if figures["bank_bytes"] is None else _mib(figures["bank_bytes"])),
        ("model file", None if figures["file_bytes"] is None else _mib(figures["file_bytes"])),
        ("fit", None if figures["fit_seconds"] is None else
         f"{figures['fit_seconds']:.2f} s on {figures['n_train']} images"),
        ("peak RSS fit", rss("fit")),
        ("peak RSS predict", rss("predict")),
        ("latency batch 1", ms("latency_ms_b1")),
        (f"latency batch {n}", None if figures["latency_ms_bN"] is None else f"{ms('latency_ms_bN')} per image"),
        ("backbone batch 1", ms("backbone_ms_b1")),
        (f"backbone batch {n}", None if figures["backbone_ms_bN"] is None else
         f"{figures['backbone_ms_bN']:.1f} ms per image"),
        ("latency / backbone", None if figures["latency_ratio_b1"] is None else
         f"{figures['latency_ratio_b1']:.2f} at batch 1, {figures['latency_ratio_bN']:.2f} at batch {n}"),
        ("measured with", f"{figures['threads']} thread{'s' if figures['threads'] != 1 else ''}, median of "
                          f"{figures['repeats']} after {figures['warmup']} warm-up; "
                          f"RSS: {figures['rss_method'] or 'n/a'}; {figures['cpu']}"),
    ]
    table = Table(title=f"profile: {figures['model_file'] or figures['model']}")
    table.add_column("figure")
    table.add_column("value")
    for name, value in rows:
        table.add_row(name, "[dim]n/a[/dim]" if value is None else value)
    console = Console()
    console.print(table)
    if figures.get("macs_uncounted"):
        console.print(f"[dim]MACs {figures['macs_uncounted']}[/dim]")


@main.command(name="profile")
@click.argument("model_or_spec")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Dataset root: real images to fit on and to time (default: a .vad file is timed on random "
                   "images of its input size; a model name needs data, or --layout elpv for the ELPV package).")
@click.option("--layout", default=None, help="Folder layout: mvtec (default with --data), folder, mtd, elpv.")
@option_option
@click.option("--backbone", default=None, help="Backbone, for a model name (default: the model's).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Model parameter for a model name, repeatable (e.g. covariance=diagonal).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="N: the batch of the second latency figure, of fitting and of the predict-memory phase.")
@click.option("--repeats", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed calls per latency figure (median and p95 reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed calls first.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for everything measured (default: the CPUs available to this process).")
@click.option("--max-train", type=click.IntRange(min=1), default=None,
              help="Fit on the first N training images only (default: all).")
@click.option("--no-fit", is_flag=True, help="Profile an unfitted model name without training it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of the table.")
@quiet_option
def profile_command(model_or_spec, data, layout, options, backbone, params, batch_size, repeats, warmup, threads,
                    max_train, no_fit, as_json, quiet):
    """Efficiency figures of MODEL_OR_SPEC (a .vad file, or a model name to create and fit): parameters,
    MACs per image, learned-state and file size, peak RSS of fit and predict, latency at batch 1 and N, and
    the backbone-only time they are compared with."""
    model_params = parse_assignments(params, "--param")
    if backbone:
        model_params["backbone"] = backbone

    def action():
        import json

        from vadkit.profiling import profile_model

        result = profile_model(model_or_spec, data=data, layout=layout,
                               layout_options=parse_assignments(options, "--option"), params=model_params or None,
                               batch_size=batch_size, repeats=repeats, warmup=warmup, threads=threads,
                               max_train=max_train, fit=not no_fit, progress=False if (quiet or as_json) else None)
        figures = result.as_dict()
        if as_json:
            click.echo(json.dumps(figures))
        else:
            _print_profile(figures)

    _run(action)


@main.group()
def bench() -> None:
    """Benchmark grids: methods x backbones x datasets x seeds from a YAML config (schema: README)."""


config_argument = click.argument("config", type=click.Path(path_type=Path, dir_okay=False))


@bench.command(name="plan")
@config_argument
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="The study's folder: show which cells are already done there.")
def bench_plan(config, out):
    """Print the grid, one line per cell, with its state in OUT (done, failed, changed, partial, pending)."""

    def action():
        from vadkit.bench import load_config, plan_bench

        loaded = load_config(config)
        lines = plan_bench(loaded, out)
        for cell, state in lines:
            click.echo(f"{state:8s} {cell.id:48s} {cell.dataset.layout}:{cell.dataset.path or '(package)'} "
                       f"{cell.method.name} {_param_text(cell.params)}")
        states = [state for _, state in lines]
        summary = ", ".join(f"{states.count(s)} {s}" for s in ("done", "failed", "changed", "partial", "pending")
                            if states.count(s))
        click.echo(f"{loaded.name}: {len(lines)} cells ({summary})" + ("" if out else "; --out DIR shows what is done"))

    _run(action)


def _param_text(params: dict) -> str:
    from vadkit.profiling.profile import format_params

    return format_params(params)


@bench.command(name="run")
@config_argument
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The study's folder: cells/, results.csv, results.md, index.html. Rerun to finish what is missing.")
@click.option("--executor", type=click.Choice(["local", "process", "ray"]), default="local", show_default=True,
              help="local: one cell after another here; process: --workers processes; ray: a Ray cluster.")
@click.option("--address", default=None,
              help="Ray cluster address (auto or HOST:PORT); default: a private local Ray instance.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Cells at once (process: default 1; ray: default as many as the cluster schedules).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch/faiss threads per cell (default: the config's, else CPUs / workers; ray: 1).")
@quiet_option
def bench_run(config, out, executor, address, workers, threads, quiet):
    """Run every cell of CONFIG not yet done in OUT, then write results.csv, results.md and index.html."""

    def action():
        from vadkit.bench import run_bench

        result = run_bench(config, out, executor=executor, workers=workers, threads=threads, address=address,
                           progress=False if quiet else None)
        click.echo(f"{result.count('done')} done, {result.count('failed')} failed, {result.count('pending')} pending; "
                   f"wrote {', '.join(str(path) for path in result.files.values())}")
        if result.count("failed"):
            sys.exit(1)

    _run(action)


@main.group()
def continual() -> None:
    """Continual learning: learn tasks (products) one after another, evaluate on every task seen after each."""


@continual.command(name="run")
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for results.json, results.md and r_matrix.png.")
@quiet_option
@threads_option
def continual_run(config, out, quiet):
    """Run the task stream of CONFIG (YAML: tasks, method, method_params, strategy, params, metrics)."""

    def action():
        from vadkit.continual import run_config

        results, files = run_config(config, out, progress=False if quiet else None)
        first = results.metrics[0]
        average, bwt = results.average(first)[-1], results.bwt(first)
        click.echo(f"{results.info['strategy']} over {len(results.tasks)} tasks: final average {first} "
                   f"{average:.3f}, BWT {bwt:.3f}; wrote {', '.join(str(path) for path in files.values())}")

    _run(action)


if __name__ == "__main__":
    main()
