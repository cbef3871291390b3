"""Our retrieval metrics vs PML's AccuracyCalculator, and our verification ROC-AUC vs scikit-learn, on the
same embeddings: seconds, peak memory above the loaded data, ratios, and the largest value difference.

    .venv/bin/python benchmarks/eval_speed.py [--sizes 60000] [--dims 128] [--kinds random clustered] [--repeats 1]

Each measurement runs in a fresh child process that imports what it needs and loads the embeddings, then
resets its peak RSS (/proc/self/clear_refs) and reads VmHWM after the work. With faiss installed, PML uses
its default FaissKNN and we use faiss too; otherwise PML gets CustomKNN(LpDistance) in batches of 4096
queries and we use torch. The scikit-learn reference scores the same stratified pairs with
`paired_distances` over chunks of pairs (`--sklearn-chunk-mb` of gathered vectors) and one `roc_auc_score`:
gathering both vectors of 2,000,000 pairs at once needs 3 × pairs × dim × 4 bytes (12 GB at 512-d), which
got the child killed on a 24 GiB machine. Every figure goes to results/benchmarks/eval_speed.json (--out),
which benchmarks/tables.py renders."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import record
import tables

RETRIEVAL = ("precision_at_1", "r_precision", "map_at_r")
OURS_RETRIEVAL_MB, OURS_AUC_MB, PML_BATCH = 64, 256, 4096
PER_PAIR_BYTES = 96  # pair indices, labels, distances and roc_auc_score's sort and cumulative sums, with room
COMPARISONS = (("ours_retrieval", "pml_retrieval", "P@1, R-P, MAP@R vs PML"), ("ours_auc", "sklearn_auc", "ROC-AUC vs sklearn"))
PML_NAMES = {"precision_at_1": "precision_at_1", "r_precision": "r_precision", "map_at_r": "mean_average_precision_at_r"}


def make(kind: str, n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """100 images per class; clustered: class centres plus noise, random: labels carry no signal."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % (n // 100))
    noise = rng.normal(size=(n, dim)).astype(np.float32)
    if kind == "random":
        return noise, labels
    centres = rng.normal(size=(n // 100, dim)).astype(np.float32)
    return (centres[labels] * 0.5 + noise * np.float32(4 / np.sqrt(dim))).astype(np.float32), labels  # NumPy 2 would promote to float64


def child(method: str, path: str, pairs: int, chunk_mb: float) -> dict:
    import torch
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics.pairwise import paired_distances

    from bench.eval.knn import faiss_available
    from bench.eval.retrieval import retrieval_metrics
    from bench.eval.verification import select_pairs, verification_metrics

    data = np.load(path)
    xn, yn = data["x"], data["y"]
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
        reset = True
    except OSError:  # not Linux, or not allowed: the peak then includes the imports and the data
        reset = False
    base = _rss_mb("VmRSS")
    start = time.perf_counter()
    if method == "ours_retrieval":
        out = retrieval_metrics(x, y, (1,), "euclidean", memory_mb=OURS_RETRIEVAL_MB)
        values = {k: out[k] for k in RETRIEVAL}
    elif method == "pml_retrieval":
        knn_func = None if faiss_available() else CustomKNN(LpDistance(normalize_embeddings=False), batch_size=PML_BATCH)
        calc = AccuracyCalculator(include=tuple(PML_NAMES.values()), k="max_bin_count", device=torch.device("cpu"), knn_func=knn_func)
        out = calc.get_accuracy(x, y)
        values = {k: out[v] for k, v in PML_NAMES.items()}
    elif method == "ours_auc":
        values = {"roc_auc": verification_metrics(x, y, "euclidean", pairs, 0, memory_mb=OURS_AUC_MB)["verification_roc_auc"]}
    else:  # sklearn_auc: the same stratified pairs, distances by scikit-learn a chunk of pairs at a time, one ROC-AUC
        chosen = select_pairs(y, pairs, 0)
        i, j = chosen["i"].numpy(), chosen["j"].numpy()
        step = sklearn_chunk(xn.shape[1], chunk_mb)
        dist = np.concatenate([paired_distances(xn[i[s : s + step]], xn[j[s : s + step]]) for s in range(0, len(i), step)])
        values = {"roc_auc": float(roc_auc_score(yn[i] == yn[j], -dist))}
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_mb": _rss_mb("VmHWM") - base,
        "peak_reset": reset,
        "base_rss_mb": base,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "values": values,
    }


def sklearn_chunk(dim: int, chunk_mb: float) -> int:
    """Pairs per scikit-learn `paired_distances` call: `chunk_mb` of one side's gathered vectors."""
    return max(1, int(chunk_mb * 2**20) // (4 * dim))


def peak_estimate_mb(method: str, n: int, dim: int, pairs: int, chunk_mb: float) -> float:
    """What each child holds at its peak above the loaded data, from the sizes alone (generous constants; a
    test checks the scikit-learn reference's measured peak stays under its estimate)."""
    pairs = min(pairs, n * (n - 1) // 2)
    per_pair = pairs * PER_PAIR_BYTES / 2**20
    k = 100  # 100 images per class: k = max_bin_count
    if method == "ours_retrieval":
        return 2 * OURS_RETRIEVAL_MB + n * k * 8 * 4 / 2**20
    if method == "pml_retrieval":  # a batch of query distance rows, its top-k, and per-query k-long arrays
        return 3 * min(PML_BATCH, n) * n * 4 / 2**20 + n * k * 8 * 8 / 2**20
    if method == "ours_auc":
        return 2 * OURS_AUC_MB + per_pair
    # sklearn_auc: both gathered sides and their difference, one chunk at a time, then the per-pair arrays
    return 3 * sklearn_chunk(dim, chunk_mb) * dim * 4 / 2**20 + per_pair + 64


def _rss_mb(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def measure(method: str, path: str, pairs: int, chunk_mb: float) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", method, path, "--pairs", str(pairs), "--sklearn-chunk-mb", str(chunk_mb)], capture_output=True, text=True
    )
    if done.returncode != 0:  # e.g. -9: killed for memory
        raise SystemExit(f"{method} on {path} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[60_000])
    p.add_argument("--dims", type=int, nargs="+", default=[128])
    p.add_argument("--kinds", nargs="+", default=["random", "clustered"])
    p.add_argument("--pairs", type=int, default=2_000_000, help="verification pairs (stratified sample), as eval.max_pairs")
    p.add_argument("--sklearn-chunk-mb", type=float, default=64)
    p.add_argument("--repeats", type=int, default=1, help="measure every child this many times; tables show medians")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    record.add_out_argument(p, "eval_speed")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.pairs, args.sklearn_chunk_mb)))
        return
    from bench.eval.knn import faiss_available

    knn = "faiss (PML FaissKNN default, ours faiss)" if faiss_available() else f"torch (PML CustomKNN batch {PML_BATCH}, ours torch)"
    print(f"kNN: {knn}; euclidean; 100 images per class", file=sys.stderr)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            for dim in args.dims:
                for kind in args.kinds:
                    x, y = make(kind, n, dim)
                    path = f"{tmp}/{kind}_{n}_{dim}.npz"
                    np.savez(path, x=x, y=y)
                    for ours, theirs, label in COMPARISONS:
                        case = {
                            "kind": kind,
                            "n": n,
                            "dim": dim,
                            "comparison": label,
                            "methods": [ours, theirs],
                            "ours": [],
                            "theirs": [],
                            "peak_estimate_mb": {m: peak_estimate_mb(m, n, dim, args.pairs, args.sklearn_chunk_mb) for m in (ours, theirs)},
                        }
                        for _ in range(args.repeats):
                            case["ours"].append(measure(ours, path, args.pairs, args.sklearn_chunk_mb))
                            case["theirs"].append(measure(theirs, path, args.pairs, args.sklearn_chunk_mb))
                        cases.append(case)
                        print(
                            f"{kind} {n}×{dim} {label}: ours {case['ours'][-1]['seconds']:.2f} s, theirs {case['theirs'][-1]['seconds']:.2f} s",
                            file=sys.stderr,
                            flush=True,
                        )
    raw = {
        "knn": knn,
        "distance": "euclidean",
        "images_per_class": 100,
        "pairs": args.pairs,
        "ours_retrieval_memory_mb": OURS_RETRIEVAL_MB,
        "ours_auc_memory_mb": OURS_AUC_MB,
        "pml_batch": PML_BATCH,
        "sklearn_chunk_mb": args.sklearn_chunk_mb,
        "cases": cases,
    }
    out = record.write("eval_speed", args, raw, tables.summarise_eval_speed(raw))
    print(tables.render(json.loads(out.read_text())))


if __name__ == "__main__":
    main()
