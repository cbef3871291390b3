"""What a cell needs besides itself and its data, the same for every executor: a frozen, picklable `Job`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    """Everything a cell needs besides itself and its data: identical for every executor."""

    grid_name: str
    device: str = "cpu"  # as asked (auto | cpu | cuda), resolved by the process that runs the cell (`resolve_device`)
    cell_timeout: float | None = None
    feature_cache: bool = True
    plugins: tuple[str, ...] = ()
    cache_dir: str | None = None
    threads: int | None = None
    resources: dict = field(default_factory=dict)  # [resources]: cpus, gpus, mem_gb
    slurm: dict = field(default_factory=dict)  # [slurm]: partition, time_min, account, qos, constraint
    checkpoints: str | None = None  # where cells with train.save write their checkpoint folders
