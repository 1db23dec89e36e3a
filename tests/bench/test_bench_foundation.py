"""`vadkit bench` over the foundation-model methods: a few-shot AnomalyDINO over its own seeds and zero-shot MuSc on
the offline ViT, profiled like every other cell."""

from tests.bench.conftest import write_config
from vadkit.bench import run_bench


def test_vit_methods_run_profile_and_take_their_own_seeds(tmp_path, mvtec_folder):
    vit = {"image_size": 56}
    config = write_config(tmp_path, mvtec_folder, broken=False, methods=[
        {"name": "anomalydino", "label": "adino_2shot", "params": {**vit, "shots": 2}, "seeds": [0, 1],
         "backbones": ["dinov2_vits14_imgfocus"]},
        {"name": "musc", "params": vit, "backbones": ["dinov2_vits14_imgfocus"]}])
    result = run_bench(config, tmp_path / "out", progress=False)
    rows = {(row["method"], row["seed"]): row for row in result.rows}
    assert sorted(rows) == [("adino_2shot", 0), ("adino_2shot", 1), ("musc", 0)]
    assert all(row["status"] == "done" for row in result.rows), [row.get("error") for row in result.rows]
    for row in result.rows:
        assert row["backbone"] == "dinov2_vits14_imgfocus" and row["image_auroc"] >= 0.75
        assert row["macs"] > 0 and row["latency_ms_bN"] > 0
    assert rows["adino_2shot", 0]["latency_ms_b1"] > 0
    assert rows["musc", 0]["latency_ms_b1"] is None  # scores a set together: no latency of one image alone
    # two draws of two shots: two memories, two sets of scores
    assert rows["adino_2shot", 0]["image_aupr"] != rows["adino_2shot", 1]["image_aupr"] \
        or rows["adino_2shot", 0]["pixel_auroc"] != rows["adino_2shot", 1]["pixel_auroc"]
