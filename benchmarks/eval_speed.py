"""Our retrieval metrics vs PML's AccuracyCalculator, and our verification ROC-AUC vs scikit-learn, on the
same embeddings: seconds, peak memory above the loaded data, ratios, and the largest value difference.

    .venv/bin/python benchmarks/eval_speed.py [--sizes 20000 60000] [--dims 128 512] [--kinds random clustered]

Each measurement runs in a fresh child process (peak RSS reset via /proc/self/clear_refs, then VmHWM).
With faiss installed, PML uses its default FaissKNN and we use faiss too; otherwise PML gets
CustomKNN(LpDistance) in batches of 4096 queries and we use torch."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RETRIEVAL = ("precision_at_1", "r_precision", "map_at_r")
PML_NAMES = {"precision_at_1": "precision_at_1", "r_precision": "r_precision", "map_at_r": "mean_average_precision_at_r"}


def make(kind: str, n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """100 images per class; clustered: class centres plus noise, random: labels carry no signal."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % (n // 100))
    noise = rng.normal(size=(n, dim)).astype(np.float32)
    if kind == "random":
        return noise, labels
    return (rng.normal(size=(n // 100, dim)).astype(np.float32)[labels] * 0.5 + noise / np.sqrt(dim) * 4), labels


def child(method: str, path: str) -> dict:
    import torch

    data = np.load(path)
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    base = _rss_mb("VmRSS")
    start = time.perf_counter()
    if method == "ours_retrieval":
        from bench.eval.retrieval import retrieval_metrics

        out = retrieval_metrics(x, y, (1,), "euclidean", memory_mb=64)
        values = {k: out[k] for k in RETRIEVAL}
    elif method == "pml_retrieval":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        from bench.eval.knn import faiss_available

        knn_func = None
        if not faiss_available():
            from pytorch_metric_learning.distances import LpDistance
            from pytorch_metric_learning.utils.inference import CustomKNN

            knn_func = CustomKNN(LpDistance(normalize_embeddings=False), batch_size=4096)
        calc = AccuracyCalculator(include=tuple(PML_NAMES.values()), k="max_bin_count", device=torch.device("cpu"), knn_func=knn_func)
        out = calc.get_accuracy(x, y)
        values = {k: out[v] for k, v in PML_NAMES.items()}
    elif method == "ours_auc":
        from bench.eval.verification import verification_metrics

        values = {"roc_auc": verification_metrics(x, y, "euclidean", 2_000_000, 0, memory_mb=256)["verification_roc_auc"]}
    else:  # sklearn_auc: the same stratified pairs, scored by scikit-learn
        from sklearn.metrics import roc_auc_score
        from sklearn.metrics.pairwise import paired_distances

        from bench.eval.verification import select_pairs

        pairs = select_pairs(y, 2_000_000, 0)
        i, j = pairs["i"].numpy(), pairs["j"].numpy()
        values = {"roc_auc": float(roc_auc_score(data["y"][i] == data["y"][j], -paired_distances(data["x"][i], data["x"][j])))}
    return {"seconds": time.perf_counter() - start, "peak_mb": _rss_mb("VmHWM") - base, "values": values}


def _rss_mb(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def measure(method: str, path: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", method, path], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 60_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--kinds", nargs="+", default=["random", "clustered"])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    from bench.eval.knn import faiss_available

    print(f"kNN: {'faiss (PML FaissKNN default, ours faiss)' if faiss_available() else 'torch (PML CustomKNN, ours torch)'}; euclidean; 100 images per class\n")
    print("| embeddings | comparison | ours s | theirs s | speed-up | ours peak MB | theirs peak MB | memory ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            for dim in args.dims:
                for kind in args.kinds:
                    x, y = make(kind, n, dim)
                    path = f"{tmp}/{kind}_{n}_{dim}.npz"
                    np.savez(path, x=x, y=y)
                    for ours, theirs, label in (("ours_retrieval", "pml_retrieval", "P@1, R-P, MAP@R vs PML"), ("ours_auc", "sklearn_auc", "ROC-AUC vs sklearn")):
                        a, b = measure(ours, path), measure(theirs, path)
                        diff = max(abs(a["values"][k] - b["values"][k]) for k in a["values"])
                        print(f"| {kind} {n // 1000}k×{dim} | {label} | {a['seconds']:.2f} | {b['seconds']:.2f} | {b['seconds'] / a['seconds']:.2f}× "
                              f"| {a['peak_mb']:.0f} | {b['peak_mb']:.0f} | {a['peak_mb'] / max(b['peak_mb'], 1):.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
