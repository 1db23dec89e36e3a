"""Greedy k-center coreset over a stream of features, in bounded memory ("filter, then merge and reduce").

PatchCore's coreset (:mod:`vadkit.ops.coreset`) needs every training patch at once. At 25,000 images of
224 px (28 x 28 patches each) that is 19.6M patches, 10 GB of float32 at d = 128 before any work is done,
and the greedy selection itself is infeasible at that size. :class:`StreamingKCenter` selects ``k`` of the
stream's rows holding at most ``buffer_rows`` rows at any time.

Algorithm. A buffer receives the stream. When it is full it is *reduced*: :func:`~vadkit.ops.coreset.greedy_kcenter`
picks ``k`` of its rows (the *summary* S), the others are dropped, and the reduce's radius ``r`` (the largest
distance from a buffer row to S) is measured. From then on an incoming row is *covered* when it lies within
``r`` of S: it carries nothing S does not already represent at the current resolution, and is dropped
before it reaches the buffer (one nearest-neighbour query per row: an IVF index over S, whose answers are
upper bounds of the true distance, so a row is only ever dropped when it really is within ``r``). The other
rows join S in the buffer, and the next time the buffer is full it is reduced again. :meth:`finish` runs a
last reduce to ``k``. If the whole stream fits in the buffer that last reduce is the only one: exactly the
selection ``greedy_kcenter`` makes on all rows (the ordinary, non-streaming PatchCore).

Why this scheme. The textbook bounded-memory k-center is
two-level greedy (Malkomes et al., NeurIPS 2015; Indyk et al., PODS 2014): greedy on each chunk to ``k``,
then greedy on the union to ``k``: radius <= 4 OPT. Its cost on this CPU is the obstacle: greedy_kcenter
costs about 1 ms per chosen centre plus a per-row cost (2M real rows -> 196k centres: about 150 s on 2
cores), so keeping ``k`` = 196k centres in each of ten 2M-row chunks (the 25k-image case) is ten such
reduces; keeping fewer than ``k`` per chunk voids the guarantee and loses rare modes. Filtering covered
rows instead (the absorption rule of the doubling algorithm, Charikar, Chekuri, Feder, Motwani, STOC 1997)
means only the rows that add something are buffered and reduced: on 25,000 augmented magnetic-tile images
most rows are covered after the first fill, so a 19.6M-patch stream takes a handful of reduces (BENCHMARKS.md,
"Streaming PatchCore", has the times, memory and the filter's pass rate).

Quality (``benchmarks/bench_streaming.py --quality``, exact greedy on real PatchCore patches as reference;
figures in BENCHMARKS.md): with a buffer of 10 x k rows the coverage radius stays close to the exact
greedy radius and the image AUROC is unchanged; with the minimum buffer of 2 x k rows there are many
reduces and both degrade measurably. Keep ``buffer_rows`` >= 10 x k (PatchCore's default buffer of 2M
patches is 10.7 x k at 25k images and a 1% coreset).

Guarantee. Each reduce is greedy on a subset Q of the stream P keeping ``k`` rows, so its radius
``r_j <= 2 OPT_k(Q) <= 2 OPT_k(P)`` (Gonzalez; OPT over any centres is monotone in the point set). A row
dropped by the filter after reduce ``j`` is within ``r_j`` of S_j, whose rows are then reduced by the later
reduces; a buffered row only by the later reduces. By the triangle inequality every stream row ends within
``sum_j r_j`` of the final selection: an *a-posteriori certificate* computed in every run
(:attr:`StreamingResult.radius_bound`), and a priori ``<= 2 R OPT_k`` after ``R`` reduces, i.e. 2 OPT
per level, hence within 2R x the exact greedy radius (which is >= OPT). With R = 2 (one buffer overflow)
this is the two-level bound, 4 OPT; each further overflow adds a level and 2 OPT. The measured radius is
far below the bound (see above): the worst case needs every level's error to line up on one row.

Memory bound. The buffer: ``buffer_rows`` x (2 C bytes of float16 full features + 4 d bytes of float32
selection features + 8 bytes of id), ``C`` the feature width and ``d`` the selection width (when there
is no separate selection space, the float32 copy exists only during a reduce); plus, during a reduce,
greedy_kcenter's working set over the buffer (~``buffer_rows`` x (4 d + 24) bytes) and the filter index over
S (``k`` x 4 d bytes). ``buffer_rows`` is raised to at least ``2 k`` so that a reduce always frees room.
Nothing grows with the stream length except ``k`` itself (a ratio of it, when the caller asks for one).

What is stored. Rows are kept as the caller's original vectors (float16 copies, as PatchCore keeps them),
and selection is made on the separate selection vectors when given (PatchCore's random projection).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from vadkit.ops.coreset import greedy_kcenter, start_index

#: filter indices of up to this many summary rows are exact (faiss flat); larger ones use IVF
EXACT_FILTER_ROWS = 4096


class _CoverIndex:
    """Nearest-summary-row distances for the filter and for a reduce's radius.

    Exact (faiss flat) for small summaries; an IVF-Flat index above :data:`EXACT_FILTER_ROWS` rows. An IVF
    answer is the distance to *some* summary row, so it is an upper bound of the true distance: the filter
    then only keeps a row it could have dropped (never the reverse), and :meth:`radius` refines the
    largest bounds exactly.
    """

    def __init__(self, summary: np.ndarray, nprobe: int) -> None:
        import faiss

        summary = np.ascontiguousarray(summary, dtype=np.float32)
        n, dim = summary.shape
        self.flat = faiss.IndexFlatL2(dim)
        self.flat.add(summary)
        self.index = self.flat
        if n > EXACT_FILTER_ROWS:
            # nlist = sqrt(nprobe n) minimises a query's cost (nlist centroids + nprobe n / nlist rows);
            # faiss wants >= 39 training rows per list
            nlist = max(1, min(int(math.sqrt(nprobe * n)), n // 39))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
            self.index.train(summary)
            self.index.add(summary)
            self.index.nprobe = nprobe

    def upper_bounds(self, queries: np.ndarray) -> np.ndarray:
        """(n,) squared distances >= the squared distance to the nearest summary row (inf if none found)."""
        distances, found = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
        distances = distances[:, 0]
        distances[found[:, 0] < 0] = np.inf
        return distances

    def radius(self, points: np.ndarray, batch: int = 65536, refine: int = 2048) -> float:
        """Largest Euclidean distance from ``points`` to the summary, exactly: bounds for all, then exact
        searches over the points with the largest bounds until no bound can beat the maximum found."""
        bounds = np.concatenate([self.upper_bounds(points[s:s + batch]) for s in range(0, len(points), batch)])
        if self.index is self.flat:
            return float(np.sqrt(max(bounds.max(), 0.0)))
        order = np.argsort(-bounds, kind="stable")
        best = 0.0
        for start in range(0, len(order), refine):
            rows = order[start:start + refine]
            if bounds[rows[0]] <= best:
                break
            exact, _ = self.flat.search(np.ascontiguousarray(points[rows]), 1)
            best = max(best, float(exact.max()))
        return float(np.sqrt(max(best, 0.0)))


@dataclass
class StreamingResult:
    """What :meth:`StreamingKCenter.finish` returns.

    ``indices`` (k,) int64: positions of the selected rows in the stream (row 0 = first row ever added);
    ``rows`` (k, C) float16: their original vectors; ``radii``: the radius of every reduce, in order;
    ``radius_bound`` = sum(radii): every stream row is within this distance of the selection (in the
    selection space); ``guarantee_factor`` = 2 x reduces: the a-priori bound as a multiple of OPT_k.
    """

    indices: torch.Tensor
    rows: torch.Tensor
    radii: list[float] = field(default_factory=list)
    rows_seen: int = 0
    rows_buffered: int = 0
    max_buffer_rows: int = 0
    buffer_capacity: int = 0
    filter_seconds: float = 0.0
    reduce_seconds: float = 0.0

    @property
    def reduces(self) -> int:
        return len(self.radii)

    @property
    def radius_bound(self) -> float:
        return float(sum(self.radii))

    @property
    def guarantee_factor(self) -> int:
        return 2 * self.reduces


class StreamingKCenter:
    """Select ``k`` rows of a stream by greedy k-center in at most ``buffer_rows`` rows of memory.

    ``add(full, selection=None)`` takes a chunk of the stream: ``full`` (n, C) the vectors to keep (stored
    float16), ``selection`` (n, d) the vectors distances are measured on (default: ``full`` itself, as
    stored). ``finish()`` returns a :class:`StreamingResult`. See the module docstring for the algorithm,
    its memory bound and its guarantee.

    Args:
        k: rows to select (the final bank size).
        buffer_rows: buffer capacity in rows (raised to at least ``2 k``).
        expected_rows: length of the stream when known: the buffer is then allocated no larger than
            needed (it grows, up to its capacity, if more rows come).
        search: greedy_kcenter's refresh mode for every reduce (``"auto"``, ``"exact"``, ``"ivf"``).
        nprobe: IVF cells probed by the covered-row filter (more: fewer rows kept needlessly; it never
            drops a row wrongly).
        start: how every reduce picks its first centre (:func:`vadkit.ops.coreset.start_index`).
        seed: seed of a ``"random"`` start.
        certify: also measure the last reduce's radius, so that :attr:`StreamingResult.radius_bound` is
            a certificate (one more nearest-neighbour pass over the buffer); otherwise it is NaN.
        progress: progress bars of the reduces.
    """

    def __init__(self, k: int, *, buffer_rows: int = 2**21, expected_rows: int | None = None,
                 search: str = "auto", nprobe: int = 2, start: str = "mean", seed: int = 0,
                 certify: bool = True, progress: bool | None = None) -> None:
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if not (isinstance(buffer_rows, int) and buffer_rows >= 1):
            raise ValueError(f"buffer_rows must be an integer >= 1, got {buffer_rows!r}")
        self.k = k
        self.capacity = max(buffer_rows, 2 * k)
        self.search = search
        self.nprobe = nprobe
        self.start = start
        self.seed = seed
        self.certify = certify
        self.progress = progress
        self._full: torch.Tensor | None = None       # (capacity, C) float16
        self._selection: torch.Tensor | None = None  # (capacity, d) float32, or None: selection = full
        self._ids: torch.Tensor | None = None        # (capacity,) int64 stream positions
        self._rows = 0                               # rows in the buffer
        self._expected = expected_rows
        self._cover: _CoverIndex | None = None       # index over the current summary (after a reduce)
        self._threshold = 0.0                        # squared radius of the last reduce
        self._allocated = 0
        self.radii: list[float] = []
        self.rows_seen = 0
        self.rows_buffered = 0
        self.max_buffer_rows = 0
        self.filter_seconds = 0.0                    # time spent filtering covered rows
        self.reduce_seconds = 0.0                    # time spent in reduces (greedy + radius + index)
        self._finished = False

    # -- the stream ------------------------------------------------------------------------------------
    def add(self, full: torch.Tensor, selection: torch.Tensor | None = None) -> None:
        """Append a chunk of rows: ``full`` (n, C), optional ``selection`` (n, d) (see the class doc)."""
        if self._finished:
            raise RuntimeError("add() after finish(): start a new StreamingKCenter")
        if full.ndim != 2 or (selection is not None and (selection.ndim != 2 or len(selection) != len(full))):
            raise ValueError("full must be (n, C) and selection (n, d) with the same n")
        if self._full is None:
            self._allocate(full.shape[1], None if selection is None else selection.shape[1])
        elif full.shape[1] != self._full.shape[1] or (selection is None) != (self._selection is None):
            raise ValueError("every chunk must have the same feature width and the same kind of selection vectors")
        ids = torch.arange(self.rows_seen, self.rows_seen + len(full))
        self.rows_seen += len(full)
        full = full.detach().to(torch.float16)
        selection = None if selection is None else selection.detach().float()
        while len(full):
            if self._cover is not None:
                start = time.perf_counter()
                space = selection if selection is not None else full.float()
                keep = torch.from_numpy(self._cover.upper_bounds(space.numpy()) > self._threshold)
                self.filter_seconds += time.perf_counter() - start
                full, ids = full[keep], ids[keep]
                selection = None if selection is None else selection[keep]
            take = min(len(full), self._room(len(full)))
            self._append(full[:take], None if selection is None else selection[:take], ids[:take])
            full, ids = full[take:], ids[take:]
            selection = None if selection is None else selection[take:]
            if len(full):  # the buffer is full and rows remain: reduce, then filter them against the new summary
                self._reduce()

    def finish(self) -> StreamingResult:
        """The selection: a last reduce to ``k`` rows (skipped when nothing joined the last summary)."""
        if self._full is None:
            raise ValueError("finish() before any add(): the stream is empty")
        self._finished = True
        if self._rows > self.k or not self.radii:
            self._reduce(final=True)
        return StreamingResult(self._ids[:self._rows].clone(), self._full[:self._rows].clone(), list(self.radii),
                               self.rows_seen, self.rows_buffered, self.max_buffer_rows, self.capacity,
                               self.filter_seconds, self.reduce_seconds)

    # -- internals -------------------------------------------------------------------------------------
    def _allocate(self, width: int, selection_width: int | None) -> None:
        rows = self.capacity if self._expected is None else max(1, min(self.capacity, self._expected))
        self._full = torch.empty(rows, width, dtype=torch.float16)
        self._selection = None if selection_width is None else torch.empty(rows, selection_width)
        self._ids = torch.empty(rows, dtype=torch.long)

    def _room(self, wanted: int) -> int:
        """Free buffer rows, growing the allocation (up to the capacity) when ``wanted`` rows do not fit."""
        allocated = len(self._ids)
        if self._rows + wanted > allocated and allocated < self.capacity:
            rows = min(self.capacity, max(2 * allocated, self._rows + wanted))
            grown = [torch.empty(rows, *t.shape[1:], dtype=t.dtype) if t is not None else None
                     for t in (self._full, self._selection, self._ids)]
            for old, new in zip((self._full, self._selection, self._ids), grown):
                if old is not None:
                    new[:self._rows] = old[:self._rows]
            self._full, self._selection, self._ids = grown
        return len(self._ids) - self._rows

    def _append(self, full: torch.Tensor, selection: torch.Tensor | None, ids: torch.Tensor) -> None:
        end = self._rows + len(full)
        self._full[self._rows:end] = full
        if selection is not None:
            self._selection[self._rows:end] = selection
        self._ids[self._rows:end] = ids
        self._rows = end
        self.rows_buffered += len(full)
        self.max_buffer_rows = max(self.max_buffer_rows, self._rows)

    def _space(self, rows: int) -> torch.Tensor:
        """The first ``rows`` buffer rows in the selection space, float32 (a view when stored as such)."""
        return self._selection[:rows] if self._selection is not None else self._full[:rows].float()

    def _reduce(self, final: bool = False) -> None:
        """Greedy k-center on the buffer: keep ``k`` rows (moved to the front), record the radius, and
        index the new summary for the filter (the last reduce measures its radius only if ``certify``)."""
        started = time.perf_counter()
        n = self._rows
        space = self._space(n)
        if n <= self.k:
            chosen = torch.arange(n)
        else:
            chosen = greedy_kcenter(space, self.k, start=start_index(space, self.start, self.seed),
                                    search=self.search, progress=self.progress)
        summary = space[chosen].contiguous()
        cover = None if final else _CoverIndex(summary.numpy(), self.nprobe)
        if n == len(chosen):
            radius = 0.0
        elif final and not self.certify:
            radius = float("nan")
        else:
            radius = (cover or _CoverIndex(summary.numpy(), self.nprobe)).radius(space.numpy())
        del space
        keep = len(chosen)
        self._full[:keep] = self._full[chosen]
        if self._selection is not None:
            self._selection[:keep] = summary
        self._ids[:keep] = self._ids[chosen]
        self._rows = keep
        self._cover = cover
        self._threshold = radius * radius
        self.radii.append(radius)
        self.reduce_seconds += time.perf_counter() - started
