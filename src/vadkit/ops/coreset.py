"""Greedy k-center coreset selection (Sener & Savarese, ICLR 2018), as PatchCore uses it to subsample its
memory bank (Roth et al., CVPR 2022, Sec. 3.2 and Alg. 1).

Greedy k-center repeatedly adds the point farthest from the points chosen so far. Written plainly it costs
N x k distance evaluations: for PatchCore on 761 images (780k patches, k = 78k) that is hours on a CPU.
:func:`greedy_kcenter` returns the same selection as the plain algorithm (up to ties between equal
distances) but evaluates far fewer distances, by *lazy evaluation*:

* every point keeps an upper bound of its distance to the chosen set (its distance at the last time it was
  looked at: distances only shrink as centres are added);
* a block of the ``block_size`` points with the largest bounds is brought up to date exactly (one matrix
  product against the centres added since); ``tau``, the largest bound outside the block, caps every other
  point's true distance;
* while the farthest block point is at least ``tau`` away it is the global farthest point, so it is chosen
  and only the block's distances are updated (a matrix-vector product of block size);
* when the block is exhausted a new block is drawn.

Points that are well covered early (most patches of a defect-free product look alike) never surface again
and cost nothing more. ``coverage_radius`` measures the result: the largest distance from any point to its
nearest chosen point, the quantity greedy k-center minimises (within a factor 2 of the optimum).

Even lazily, the exact refresh of a block costs (block x centres added since) distance evaluations, and on
PatchCore-sized banks (780k patches, k = 78k) the whole run is still ~N k d / 10. ``search="ivf"`` replaces
the block refresh by an inverted-file search over the chosen centres (faiss IVF-Flat): each stale point is
compared with the centres in a few nearby cells only. The bound it yields is still an upper bound, so the
algorithm stays well defined; it becomes *approximately* greedy, and BENCHMARKS.md records its coverage
against the exact selection.

The paper runs the selection on a random linear projection of the features (Johnson-Lindenstrauss) to
128 dimensions to make it cheaper; :func:`random_projection` provides it.
"""

from __future__ import annotations

import numpy as np
import torch

from vadkit.progress import task


def random_projection(dim_in: int, dim_out: int, seed: int = 0) -> torch.Tensor:
    """Gaussian projection matrix (dim_in, dim_out) scaled by 1/sqrt(dim_out), which preserves distances
    in expectation (Johnson-Lindenstrauss)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim_in, dim_out, generator=generator) / dim_out**0.5


def _squared_distances(points: torch.Tensor, point_norms: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(n, d), (n,), (m, d) -> (n, m) squared Euclidean distances, clamped at zero against rounding."""
    centre_norms = (centres * centres).sum(1)
    return torch.addmm(centre_norms[None, :], points, centres.T, alpha=-2.0).add_(point_norms[:, None]).clamp_min_(0.0)


def _min_squared_distance(points: torch.Tensor, point_norms: torch.Tensor, centres: torch.Tensor,
                          centre_norms: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """(n,) squared distance of each point to its nearest centre.

    One fused ``addmm`` per chunk of centres (||c||^2 - 2 p.c), a row minimum, and ||p||^2 added only to the
    minimum: this is 3-4x faster than forming full distance matrices, and chunking bounds the memory.
    """
    best = None
    for start in range(0, centres.shape[0], chunk):
        part = torch.addmm(centre_norms[None, start:start + chunk], points, centres[start:start + chunk].T,
                           alpha=-2.0).min(1).values
        best = part if best is None else torch.minimum(best, part)
    return (best + point_norms).clamp_min_(0.0)


class ExactRefresh:
    """Brings block bounds up to date exactly: each point is compared with the centres added since it was
    last refreshed. Points are grouped by staleness so that recently refreshed points are only compared
    with the few centres added since, not with all of them."""

    def __init__(self, points: torch.Tensor, norms: torch.Tensor, n_groups: int = 4) -> None:
        self.points, self.norms, self.n_groups = points, norms, n_groups

    def __call__(self, block: torch.Tensor, block_bound: torch.Tensor, block_seen: torch.Tensor,
                 chosen: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(block_seen)
        result = block_bound.clone()
        for group in torch.tensor_split(order, self.n_groups):
            oldest = int(block_seen[group].min()) if group.numel() else len(chosen)
            if oldest >= len(chosen):
                continue
            rows, centres = block[group], chosen[oldest:]
            fresh = _min_squared_distance(self.points[rows], self.norms[rows], self.points[centres],
                                          self.norms[centres])
            result[group] = torch.minimum(result[group], fresh)
        return result


class IVFRefresh:
    """Brings block bounds down with an inverted-file search (faiss IVF-Flat) over the chosen centres.

    The coarse quantiser is trained once on a sample of the points; centres are appended to the index as
    they are chosen (no retraining). A search probes ``nprobe`` of ``nlist`` cells, so the centre it
    returns may not be the nearest one: the distance is still a valid upper bound, and the selection is
    then *approximately* greedy (measured coverage: BENCHMARKS.md). While few centres exist, the exact
    refresh is used: it is cheap then and the early centres shape the whole selection.
    """

    def __init__(self, points: torch.Tensor, norms: torch.Tensor, *, nlist: int = 1024, nprobe: int = 8,
                 exact_until: int = 2048, seed: int = 0) -> None:
        import faiss

        self.exact = ExactRefresh(points, norms)
        self.array = points.numpy()
        self.exact_until = exact_until
        n, dim = self.array.shape
        nlist = max(1, min(nlist, n // 64))
        sample = self.array[np.random.default_rng(seed).choice(n, min(n, 64 * nlist), replace=False)]
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
        self.index.train(sample)
        self.index.nprobe = nprobe
        self.indexed = 0

    def __call__(self, block: torch.Tensor, block_bound: torch.Tensor, block_seen: torch.Tensor,
                 chosen: torch.Tensor) -> torch.Tensor:
        if len(chosen) <= self.exact_until:
            return self.exact(block, block_bound, block_seen, chosen)
        if self.indexed < len(chosen):
            self.index.add(self.array[chosen[self.indexed:].numpy()])
            self.indexed = len(chosen)
        distance, found = self.index.search(self.array[block.numpy()], 1)
        distance = torch.from_numpy(distance[:, 0])
        distance[torch.from_numpy(found[:, 0]) < 0] = float("inf")  # probed cells were empty: no new bound
        return torch.minimum(block_bound, distance)


#: above this many point-centre pairs (N * k), ``search="auto"`` switches from exact to IVF refreshes
AUTO_IVF_PAIRS = 2e9
SEARCHES = ("auto", "exact", "ivf")


#: how the first centre is chosen (:func:`start_index`)
START_RULES = ("mean", "random")


def start_index(points: torch.Tensor, rule: str = "mean", seed: int = 0, chunk: int = 65536) -> int:
    """The first centre of a greedy k-center selection over ``points`` (N, d).

    PatchCore's Algorithm 1 starts from an empty set, where the farthest point is undefined, so
    implementations draw the first centre at random (``"random"``, seeded; anomalib's rule and vadkit's
    until issue 11). Every later choice follows from it, so the bank, and the AUROC, hang on that draw.
    ``"mean"`` starts from the point nearest the mean of all points instead: defined by the data alone, so
    the selection no longer depends on a seed (BENCHMARKS.md, "PatchCore against anomalib", measures both).
    """
    if rule not in START_RULES:
        raise ValueError(f"start rule must be one of {START_RULES}, got {rule!r}")
    n = points.shape[0]
    if rule == "random":
        return int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))
    # ||p - m||^2 = ||p||^2 - 2 p.m + const, chunked so that no (N, d) temporary is made
    mean = points.double().mean(0).float()
    best, best_value = 0, float("inf")
    for first in range(0, n, chunk):
        rows = points[first:first + chunk].float()
        values = (rows * rows).sum(1) - 2.0 * (rows @ mean)
        index = int(values.argmin())
        if float(values[index]) < best_value:
            best, best_value = first + index, float(values[index])
    return best


def greedy_kcenter(points: torch.Tensor, k: int, *, start: int = 0, block_size: int = 8192,
                   search: str = "auto", progress: bool | None = None) -> torch.Tensor:
    """Indices (k,) of the greedy k-center selection over ``points`` (N, d), starting from ``start``.

    ``search="exact"`` returns exactly what the plain O(N k d) algorithm returns (ties aside), much faster
    (see the module docstring). ``search="ivf"`` refreshes stale bounds with an inverted-file index
    (:class:`IVFRefresh`): approximately greedy, several times faster again on large banks. ``"auto"``
    picks exact below ``AUTO_IVF_PAIRS`` point-centre pairs and IVF above.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    n = points.shape[0]
    if not 0 < k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    points = points.float().contiguous()
    norms = (points * points).sum(1)
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = start
    n_chosen = 1
    # bound[i] >= true squared distance of point i to the chosen set; seen[i] = centres accounted for in it
    bound = _squared_distances(points, norms, points[start:start + 1]).squeeze(1)
    bound[start] = float("-inf")
    seen = torch.ones(n, dtype=torch.long)
    block_size = min(block_size, n)
    if search == "auto":
        search = "ivf" if n * k > AUTO_IVF_PAIRS else "exact"
    refresh = IVFRefresh(points, norms) if search == "ivf" else ExactRefresh(points, norms)
    with task("coreset (greedy k-center)", total=k, enabled=progress) as bar:
        bar.advance(1)
        while n_chosen < k:
            top_values, top_index = torch.topk(bound, min(block_size + 1, n))
            block = top_index[:block_size]
            tau = top_values[block_size].item() if n > block_size else float("-inf")
            bound[block] = refresh(block, bound[block], seen[block], chosen[:n_chosen])
            seen[block] = n_chosen
            # only block points at least tau away can be chosen before the next block is drawn; the others
            # keep their (valid) upper bound and are not updated
            live = block[bound[block] >= tau]
            live_points, live_norms, live_bound = points[live], norms[live], bound[live]
            added = 0
            while n_chosen < k and live.numel() > 0:
                best = int(torch.argmax(live_bound))
                if live_bound[best].item() < tau:
                    break  # a point outside the block may now be farther: draw a new block
                centre = live_points[best]
                chosen[n_chosen] = live[best]
                n_chosen += 1
                added += 1
                distance = torch.addmv(live_norms, live_points, centre, alpha=-2.0).add_(centre.dot(centre))
                torch.minimum(live_bound, distance, out=live_bound)
                live_bound[best] = float("-inf")  # never choose a point twice, even if rounding says > 0
            bound[live] = live_bound
            seen[live] = n_chosen
            bar.advance(added)
    return chosen


def greedy_kcenter_plain(points: torch.Tensor, k: int, *, start: int = 0) -> torch.Tensor:
    """The textbook O(N k d) greedy k-center: the reference :func:`greedy_kcenter` must agree with."""
    points = points.float()
    norms = (points * points).sum(1)
    chosen = [start]
    distance = _squared_distances(points, norms, points[start:start + 1]).squeeze(1)
    distance[start] = float("-inf")
    for _ in range(k - 1):
        nxt = int(torch.argmax(distance))
        chosen.append(nxt)
        distance = torch.minimum(distance, _squared_distances(points, norms, points[nxt:nxt + 1]).squeeze(1))
        distance[nxt] = float("-inf")
    return torch.tensor(chosen, dtype=torch.long)


def coverage_radius(points: torch.Tensor, centres: torch.Tensor, chunk: int = 65536) -> float:
    """Largest Euclidean distance from any point to its nearest centre (the k-center objective)."""
    points, centres = points.float(), centres.float()
    centre_norms = (centres * centres).sum(1)
    worst = 0.0
    for start in range(0, points.shape[0], chunk):
        part = points[start:start + chunk]
        worst = max(worst, float(_min_squared_distance(part, (part * part).sum(1), centres, centre_norms).max()))
    return worst**0.5
