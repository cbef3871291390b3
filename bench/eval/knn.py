"""Exact k-nearest-neighbour search in query chunks whose size follows a memory bound, so no N×N matrix is
ever held. faiss (when installed, CPU embeddings) or torch does the search; both follow one tie rule."""
from __future__ import annotations

from typing import Iterator

import torch

DISTANCES = ("cosine", "euclidean", "l1")


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
    if distance == "cosine":
        return -(q @ g.T)  # rows already L2-normalised by the caller
    return torch.cdist(q, g, p=2.0 if distance == "euclidean" else 1.0)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401  optional: exact flat search, faster than torch topk on CPU
    except ImportError:
        return False
    return True


def query_chunk_size(n_gallery: int, k: int, memory_mb: float) -> int:
    """Queries per chunk so that one chunk's working set fits `memory_mb`: a float32 distance row over the
    gallery, topk's and the tie check's temporaries over that row (≈ 3 copies), and the k results."""
    per_query = 4 * n_gallery * 3 + 24 * k
    return max(1, int(memory_mb * 2**20) // per_query)


def iter_knn(queries: torch.Tensor, gallery: torch.Tensor, k: int, distance: str, memory_mb: float,
             exclude_self: bool = False, backend: str = "auto", chunk: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
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
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        if index is not None:
            yield start, _faiss_chunk(index, q, gallery, k, distance, start if exclude_self else None)
        else:
            yield start, _torch_chunk(q, gallery, k, distance, start if exclude_self else None)


def nearest_neighbours(embeddings: torch.Tensor, k: int, distance: str, chunk: int | None = None,
                       memory_mb: float = 1024, backend: str = "torch") -> torch.Tensor:
    """Indices of each row's k nearest other rows (itself excluded), all chunks concatenated; `chunk`
    overrides the memory-derived chunk size (tests use it to cross chunk borders)."""
    return torch.cat([i for _, i in iter_knn(embeddings, embeddings, k, distance, memory_mb, True, backend, chunk)])


def _torch_chunk(q: torch.Tensor, gallery: torch.Tensor, k: int, distance: str, self_start: int | None) -> torch.Tensor:
    d = _ranking_matrix(q, gallery, distance)
    if self_start is not None:
        rows = torch.arange(len(d))
        d[rows, rows + self_start] = float("inf")
    values, indices = d.topk(k, dim=1, largest=False)
    # topk breaks ties arbitrarily: rows where more candidates than k equal the k-th value are redone by
    # a stable sort (rare: exact duplicates), and every row is reordered by (distance, index).
    boundary = (d <= values[:, -1:]).sum(1) > k
    for r in boundary.nonzero().flatten().tolist():
        row_values, row_indices = torch.sort(d[r], stable=True)
        values[r], indices[r] = row_values[:k], row_indices[:k]
    return _order_by_value_then_index(values, indices)


def _order_by_value_then_index(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    by_index = indices.argsort(dim=1)
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    by_value = values.sort(dim=1, stable=True).indices
    return indices.gather(1, by_value)


def _faiss_index(gallery: torch.Tensor, distance: str):
    import faiss

    x = gallery.float().contiguous().numpy()
    dim = x.shape[1]
    index = {"cosine": lambda: faiss.IndexFlatIP(dim), "euclidean": lambda: faiss.IndexFlatL2(dim),
             "l1": lambda: faiss.IndexFlat(dim, faiss.METRIC_L1)}[distance]()
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
        values, indices = values[:, :want - 1], indices[:, :want - 1]
    if values.shape[1] > k:
        redo |= values[:, k] <= values[:, k - 1]
        values, indices = values[:, :k], indices[:, :k]
    out = _order_by_value_then_index(values, indices)
    rows = redo.nonzero().flatten()
    if len(rows):
        out[rows] = _torch_chunk(q[rows], gallery, k, distance, None) if self_start is None else \
            _torch_rows_excluding(q[rows], gallery, k, distance, rows + self_start)
    return out


def _torch_rows_excluding(q: torch.Tensor, gallery: torch.Tensor, k: int, distance: str, own: torch.Tensor) -> torch.Tensor:
    d = _ranking_matrix(q, gallery, distance)
    d[torch.arange(len(d)), own] = float("inf")
    return torch.stack([torch.sort(row, stable=True)[1][:k] for row in d])
