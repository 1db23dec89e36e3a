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

The paper runs the selection on a random linear projection of the features (Johnson-Lindenstrauss) to
128 dimensions to make it cheaper; :func:`random_projection` provides it.
"""

from __future__ import annotations

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


def _refresh(points: torch.Tensor, norms: torch.Tensor, block: torch.Tensor, block_bound: torch.Tensor,
             block_seen: torch.Tensor, centres: torch.Tensor, centre_norms: torch.Tensor,
             n_groups: int = 4) -> torch.Tensor:
    """Exact squared distances of ``block`` points to ``centres``, reusing each point's bound over the centres
    it has already seen. Points are grouped by staleness so that recently refreshed points are only compared
    with the few centres added since, not with all of them."""
    order = torch.argsort(block_seen)
    result = block_bound.clone()
    for group in torch.tensor_split(order, n_groups):
        if group.numel() == 0:
            continue
        oldest = int(block_seen[group].min())
        if oldest >= centres.shape[0]:
            continue
        rows = block[group]
        fresh = _min_squared_distance(points[rows], norms[rows], centres[oldest:], centre_norms[oldest:])
        result[group] = torch.minimum(result[group], fresh)
    return result


def greedy_kcenter(points: torch.Tensor, k: int, *, start: int = 0, block_size: int = 8192,
                   progress: bool | None = None) -> torch.Tensor:
    """Indices (k,) of the greedy k-center selection over ``points`` (N, d), starting from ``start``.

    Returns exactly what the plain O(N k d) algorithm returns (ties aside), usually orders of magnitude
    faster: see the module docstring.
    """
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
    seen = torch.ones(n, dtype=torch.long)
    block_size = min(block_size, n)
    with task("coreset (greedy k-center)", total=k, enabled=progress) as bar:
        bar.advance(1)
        while n_chosen < k:
            top_values, top_index = torch.topk(bound, min(block_size + 1, n))
            block = top_index[:block_size]
            tau = top_values[block_size].item() if n > block_size else float("-inf")
            bound[block] = _refresh(points, norms, block, bound[block], seen[block], points[chosen[:n_chosen]],
                                    norms[chosen[:n_chosen]])
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
    for _ in range(k - 1):
        nxt = int(torch.argmax(distance))
        chosen.append(nxt)
        distance = torch.minimum(distance, _squared_distances(points, norms, points[nxt:nxt + 1]).squeeze(1))
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
