"""Exact k-nearest-neighbour search in query chunks whose size follows a memory bound, so no N×N matrix is
ever held. faiss (when installed, CPU embeddings) or torch does the search; both follow one tie rule."""

from __future__ import annotations

from collections.abc import Iterator

import torch

DISTANCES = ("cosine", "euclidean", "l1")
BLOCKS_PER_K = 16  # smallest_k's blocks per neighbour asked for


def check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; use cosine, euclidean or l1")


def distances(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    """(len(a), len(b)) distances; smaller is more similar. Euclidean and l1 are `torch.cdist`, as in PML's
    LpDistance; cosine is 1 − the dot product of L2-normalised rows."""
    check_distance(distance)
    if distance == "cosine":
        a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
        return 1.0 - a @ b.T
    return torch.cdist(a, b, p=2.0 if distance == "euclidean" else 1.0)


def _ranking_matrix(q: torch.Tensor, g: torch.Tensor, distance: str) -> torch.Tensor:
    """A matrix ordered like the distances. Cosine ranks by −similarity: 1 − s in float32 would round
    near-duplicates (s ≈ 1) into ties that the similarity itself does not have."""
    rank, finish = _ranker(g, distance)
    return finish(rank(q))


def _ranker(g: torch.Tensor, distance: str):
    """(rank, finish) against a fixed gallery `g`: finish(rank(q)) is `_ranking_matrix(q, g)`, and `finish`
    (monotone, in place) can wait until the candidates are known. What depends on the gallery alone is
    computed once: torch.cdist rebuilds the gallery's padded copy and norms on every call, which costs more
    than the GEMM when query chunks are small. Euclidean is cdist's own formulation (ATen's
    `_euclidean_dist`: one GEMM of [−2q, |q|², 1] with [g, 1, |g|²], then clamped at 0 and square-rooted),
    so its values and ties are cdist's."""
    same = lambda x: x
    if distance == "cosine":
        return (lambda q: -(q @ g.T)), same  # rows already L2-normalised by the caller
    if distance == "l1" or len(g) <= 25:  # cdist computes tiny inputs directly, not by GEMM
        return (lambda q: torch.cdist(q, g, p=2.0 if distance == "euclidean" else 1.0)), same
    padded = torch.cat([g, torch.ones(len(g), 1, dtype=g.dtype), g.pow(2).sum(1, keepdim=True)], 1)

    def squared(q: torch.Tensor) -> torch.Tensor:
        return torch.cat([q.mul(-2), q.pow(2).sum(1, keepdim=True), torch.ones(len(q), 1, dtype=q.dtype)], 1) @ padded.T

    return squared, lambda x: x.clamp_min_(0).sqrt_()


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401  optional: exact flat search, faster than torch topk on CPU
    except ImportError:
        return False
    return True


def query_chunk_size(n_gallery: int, k: int, memory_mb: float) -> int:
    """Queries per chunk so that one chunk's working set fits `memory_mb`: a float32 distance row over the
    gallery, `smallest_k`'s candidates (a sixteenth of the row, with their indices) and the k results, with
    room to spare (3 rows' worth). Small chunks are also the fast ones: a chunk that stays in cache."""
    per_query = 4 * n_gallery * 3 + 24 * k
    return max(1, int(memory_mb * 2**20) // per_query)


def iter_knn(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    distance: str,
    memory_mb: float,
    exclude_self: bool = False,
    backend: str = "auto",
    chunk: int | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yields (start, indices): for each chunk of queries the indices of their k nearest gallery rows,
    nearest first. With `exclude_self`, gallery is queries and row i never returns i.

    Tie rule: neighbours are ordered by (distance, gallery index), so among equal distances the lower
    index comes first and the k-th place goes to the lowest index — deterministic whatever the backend or
    chunk size, unlike a bare topk. k is capped at the number of candidates."""
    check_distance(distance)
    k = min(k, len(gallery) - int(exclude_self))
    if k <= 0:
        for start in range(0, len(queries), max(1, len(queries))):
            yield start, torch.empty(len(queries), 0, dtype=torch.long)
        return
    if distance == "cosine":
        queries = torch.nn.functional.normalize(queries, dim=1)
        gallery = queries if exclude_self else torch.nn.functional.normalize(gallery, dim=1)
    use_faiss = backend == "faiss" or (backend == "auto" and gallery.device.type == "cpu" and faiss_available())
    index = _faiss_index(gallery, distance) if use_faiss else None
    # faiss blocks its distance matrix internally, so only the k results count against the bound; big chunks
    # also avoid alternating faiss's and torch's OpenMP pools, whose idle spinning slows each other.
    chunk = chunk or (max(1, int(memory_mb * 2**20) // (64 * k)) if use_faiss else query_chunk_size(len(gallery), k, memory_mb))
    rank, finish = (None, None) if index is not None else _ranker(gallery, distance)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        if index is not None:
            yield start, _faiss_chunk(index, q, gallery, k, distance, start if exclude_self else None)
        else:
            d = rank(q)
            if exclude_self:
                rows = torch.arange(len(d))
                d[rows, rows + start] = float("inf")
            yield start, smallest_k(d, k, finish)


def nearest_neighbours(
    embeddings: torch.Tensor, k: int, distance: str, chunk: int | None = None, memory_mb: float = 1024, backend: str = "torch"
) -> torch.Tensor:
    """Indices of each row's k nearest other rows (itself excluded), all chunks concatenated; `chunk`
    overrides the memory-derived chunk size (tests use it to cross chunk borders)."""
    return torch.cat([i for _, i in iter_knn(embeddings, embeddings, k, distance, memory_mb, True, backend, chunk)])


def smallest_k(d: torch.Tensor, k: int, finish=None) -> torch.Tensor:
    """Column indices of each row's k smallest values, ordered by (value, column): the kNN's tie rule.
    `finish`, a monotone non-decreasing map applied in place (cdist's clamp and square root), turns `d`'s
    entries into the values that rule orders; it is applied to copies, only where needed.

    Written here because torch.topk costs ~5 ns per entry on CPU (a selection per row) and breaks ties
    arbitrarily, and a full sort costs more. Each row's columns are dealt into B ≥ k interleaved blocks
    (block b: columns b, b + B, b + 2B, …) whose minima take one vectorised pass; the k blocks with the
    smallest minima hold at least k entries ≤ the k-th smallest minimum τ, so the row's k smallest values
    are all ≤ τ and, but for a block whose minimum ties τ, lie in those k blocks (or in the few columns
    past the last whole block). Their entries ≤ τ (about 1–2 k) are stably sorted by value in column
    order. Rows where another block's minimum ties τ are sorted whole. Exact, not approximate."""
    finish = finish or (lambda x: x)
    rows, n = d.shape
    k = min(k, n)
    if rows == 0 or k == 0 or n < 2 * k:  # too few columns to bound: sort whole rows
        return finish(d.clone()).sort(dim=1, stable=True).indices[:, :k]
    width = n // min(BLOCKS_PER_K * k, n // 2)  # ≥ 2 entries a block: the query's own inf never is a block's minimum
    blocks = n // width
    full = blocks * width
    grid = d[:, :full].view(rows, width, blocks)
    minima = finish(grid.amin(1))  # a minimum commutes with a monotone map
    low, chosen = minima.topk(k, dim=1, largest=False, sorted=False)
    bound = low.amax(1, keepdim=True)
    chosen = chosen.sort(dim=1).values
    values = finish(grid.gather(2, chosen[:, None, :].expand(rows, width, k)))
    r, m, b = (values <= bound[:, :, None]).nonzero(as_tuple=True)  # by row, then column (m·B + chosen block)
    value, column = values[r, m, b], chosen[r, b] + m * blocks
    if full < n:  # the last columns, in no block, are candidates too; they come after every block column
        tail = finish(d[:, full:].clone())
        r_tail, c_tail = (tail <= bound).nonzero(as_tuple=True)
        order = torch.cat([r, r_tail]).sort(stable=True).indices
        r, value, column = torch.cat([r, r_tail])[order], torch.cat([value, tail[r_tail, c_tail]])[order], torch.cat([column, c_tail + full])[order]
    counts = torch.bincount(r, minlength=rows)
    position = torch.arange(len(r)) - (counts.cumsum(0) - counts)[r]
    kept = torch.full((rows, int(counts.max())), float("inf"), dtype=d.dtype)
    kept_columns = torch.zeros(kept.shape, dtype=torch.long)
    kept[r, position], kept_columns[r, position] = value, column
    out = kept_columns.gather(1, kept.sort(dim=1, stable=True).indices[:, :k])
    tied = ((minima <= bound).sum(1) > k).nonzero().flatten()
    if len(tied):
        out[tied] = finish(d[tied]).sort(dim=1, stable=True).indices[:, :k]
    return out


def _torch_chunk(q: torch.Tensor, gallery: torch.Tensor, k: int, distance: str, self_start: int | None) -> torch.Tensor:
    rank, finish = _ranker(gallery, distance)
    d = rank(q)
    if self_start is not None:
        rows = torch.arange(len(d))
        d[rows, rows + self_start] = float("inf")
    return smallest_k(d, k, finish)


def _order_by_value_then_index(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    by_index = indices.argsort(dim=1)
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    by_value = values.sort(dim=1, stable=True).indices
    return indices.gather(1, by_value)


def _faiss_index(gallery: torch.Tensor, distance: str):
    import faiss

    x = gallery.float().contiguous().numpy()
    dim = x.shape[1]
    index = {"cosine": lambda: faiss.IndexFlatIP(dim), "euclidean": lambda: faiss.IndexFlatL2(dim), "l1": lambda: faiss.IndexFlat(dim, faiss.METRIC_L1)}[
        distance
    ]()
    index.add(x)
    return index


def _faiss_chunk(index, q: torch.Tensor, gallery: torch.Tensor, k: int, distance: str, self_start: int | None) -> torch.Tensor:
    """faiss returns its own tie order, so ask for one extra neighbour (plus the query itself): when that
    sentinel is strictly farther than the k-th, the top-k set is exact and only needs reordering by
    (distance, index); rows with a tie at the boundary, or missing their own index, are redone in torch."""
    extra = 1 + int(self_start is not None)
    want = min(k + extra, index.ntotal)
    values, indices = index.search(q.float().contiguous().numpy(), want)
    values, indices = torch.from_numpy(values), torch.from_numpy(indices)
    if distance == "cosine":
        values = -values  # inner products: larger is nearer
    redo = torch.zeros(len(q), dtype=torch.bool)
    if self_start is not None:
        own = indices == torch.arange(self_start, self_start + len(q))[:, None]
        redo |= ~own.any(1)
        values = values.masked_fill(own, float("inf"))
        values, order = values.sort(dim=1, stable=True)
        indices = indices.gather(1, order)
        values, indices = values[:, : want - 1], indices[:, : want - 1]
    if values.shape[1] > k:
        redo |= values[:, k] <= values[:, k - 1]
        values, indices = values[:, :k], indices[:, :k]
    out = _order_by_value_then_index(values, indices)
    rows = redo.nonzero().flatten()
    if len(rows):
        out[rows] = (
            _torch_chunk(q[rows], gallery, k, distance, None) if self_start is None else _torch_rows_excluding(q[rows], gallery, k, distance, rows + self_start)
        )
    return out


def _torch_rows_excluding(q: torch.Tensor, gallery: torch.Tensor, k: int, distance: str, own: torch.Tensor) -> torch.Tensor:
    d = _ranking_matrix(q, gallery, distance)
    d[torch.arange(len(d)), own] = float("inf")
    return torch.stack([torch.sort(row, stable=True)[1][:k] for row in d])
