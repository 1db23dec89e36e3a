"""Settings of ``vadkit demo``: an offline run on real data that finishes in a couple of minutes on a CPU.

ELPV (Buerhop-Lutz et al. 2018; Deitsch et al. 2019) ships on PyPI as ``elpv-dataset``: 300x300
electroluminescence images of solar cells with defect probabilities. Monocrystalline cells only, to keep
the run short (and the normal class homogeneous); PatchCore with a 1% coreset at 224 px.
"""

DEMO_LAYOUT_OPTIONS = {"cell_type": "mono"}
DEMO_PARAMS = {
    "patchcore": {"backbone": "mobilenet_v2", "image_size": 224, "coreset_ratio": 0.01},
    "padim": {"backbone": "mobilenet_v2", "image_size": 224},
}
