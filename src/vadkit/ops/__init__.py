"""Algorithmic pieces shared by several methods: written once here, reused by every model.

- :mod:`patch_features` — locally aware patch embeddings from a feature pyramid (PatchCore, PaDiM, ...)
- :mod:`coreset` — greedy k-center coreset selection (memory-bank subsampling)
- :mod:`knn` — nearest-neighbour search backed by faiss
- :mod:`smoothing` — Gaussian smoothing and resizing of anomaly maps
"""
