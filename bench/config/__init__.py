"""What a cell is: frozen dataclasses of every option, a cell's identity, a grid. bench.grid makes them from TOML."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from bench.config.space import SearchSpec


@dataclass(frozen=True)
class Budget:
    """Limits enforced by the training loop alone; the first one reached stops the cell (`stopped_by`)."""

    max_steps: int | None = None  # optimizer steps
    max_samples: int | None = None  # images through the backbone (fair across batch sizes)
    max_seconds: float | None = None  # wall-clock training time, evaluation excluded


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32  # images per step, whatever the loss's batch shape (pairs use batch_size/2 pairs)
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    precision: Literal["fp32", "bf16", "auto"] = (
        "auto"  # auto: bf16 autocast where the hardware has fast bf16, else fp32 (CPU convolutions run channels-last either way)
    )
    m_per_class: int = 4  # images per class in m_per_class batches
    augment: Literal["none", "koch", "flip_crop", "natural"] = (
        "none"  # training images only; koch: Koch et al.'s affine; natural: the Reality Check's flip + crop
    )
    schedule: Literal["constant", "cosine"] = "constant"  # lr schedule over the fraction of the binding budget limit
    warmup: float = 0.0  # fraction of the budget with a linear lr warm-up from 0 (any schedule)
    select: Literal["last", "best"] = "last"  # best: the curve point best on validation (eval.select_metric) is scored on test
    save: Literal["none", "last", "best"] = "none"  # a checkpoint: the last weights, or those scored on test (not part of the cell's identity)


@dataclass(frozen=True)
class SplitConfig:
    """Class-disjoint train / val / test; a dataset's own split (Omniglot, a CSV `split` column) wins."""

    test_fraction: float = 0.4  # of all classes, held out for evaluation
    seed: int = 0  # fixed across training seeds, so seed variance is training variance
    val_fraction: float = 0.0  # of all classes; a validation split picks the verification threshold
    test_classes: tuple[str, ...] = ()  # explicit class names instead of test_fraction
    val_classes: tuple[str, ...] = ()
    folds: int = 0  # k-fold over the non-test classes ("A Metric Learning Reality Check"); 0 = off
    fold: int = 0  # which fold validates: make it an axis, "split.fold" = [0, 1, 2, 3]


@dataclass(frozen=True)
class ModelConfig:
    """How the backbone is fed and what of it trains (the pretrained-vs-scratch factors)."""

    preprocess: Literal["native", "unit", "raw", "caffe"] = "native"  # see bench.run.adapt.apply_preprocess
    freeze: Literal["none", "bn", "backbone", "backbone_bn_train", "all_but_last_n"] = "none"
    unfrozen_stages: int = 1  # with freeze = "all_but_last_n"


@dataclass(frozen=True)
class EvalConfig:
    recall_k: tuple[int, ...] = (1, 2, 4, 8)
    max_pairs: int = 2_000_000  # verification uses all pairs up to this many, else a seeded stratified sample
    batch_size: int = 256
    tar_far: tuple[float, ...] = (1e-2, 1e-3)  # verification_tar_at_far_<f> for each f
    n_way: int = 20  # few-shot episodes: Koch's 20-way one-shot by default
    k_shot: int = 1
    episodes: int = 1000
    memory_mb: int = 1024  # working memory of the chunked kNN and pair distances (chooses the chunk size)
    distance: Literal["cosine", "euclidean", "l1"] | None = None  # None: the distance the loss was trained for
    curve: tuple[float, ...] = ()  # fractions of the budget at which the cell is scored (validation, else test); 1.0 is implied
    select_metric: str = "verification_roc_auc"  # what train.select = "best" follows (the leaderboard judges curves by its own metric)
    episode_group: str = ""  # a per-image attribute (Omniglot: "alphabet"): also score N-way episodes drawn within one value
    precision: Literal["train", "fp32", "bf16"] = (
        "train"  # the scoring forward passes: train = train.precision as it resolved; bf16 is fast only with AMX/AVX512-BF16 or a GPU
    )


@dataclass(frozen=True)
class Trial:
    """Marks a cell as trial `number` of a search's study: it is scored on validation only, the test split is
    never scored (bench.run.study). `prune_at` is the median pruner's bar per curve point, set by the coordinator."""

    study: str
    number: int
    params: dict  # searched option -> the value this trial tries ("train.lr": 3e-4)
    metric: str  # the validation metric the study optimises
    prune_at: tuple = ()  # per curve point (folds in turn): prune when worse than this; None = no bar


@dataclass(frozen=True)
class Cell:
    backbone: str
    loss: str
    dataset: str
    seed: int
    backbone_args: dict = field(default_factory=dict)
    loss_args: dict = field(default_factory=dict)
    dataset_args: dict = field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    budget: Budget = Budget()
    model: ModelConfig = ModelConfig()
    split: SplitConfig = SplitConfig()
    eval: EvalConfig = EvalConfig()
    trial: Trial | None = None  # a search trial (scored on validation); absent from the config otherwise

    def to_dict(self) -> dict:
        config = json.loads(json.dumps(asdict(self)))  # tuples become lists, as in the JSONL row
        if config["trial"] is None:  # a plain cell's config (and id) is what it was before searches existed
            del config["trial"]
        for (section, option), default in UNWRITTEN_DEFAULTS.items():  # likewise before these options existed
            if config[section][option] == default:
                del config[section][option]
        return config

    def identity(self) -> dict:
        """The config minus what cannot change the result (whether a checkpoint is saved; a trial's pruning bar,
        which depends on the trials finished before it and so on the executor's timing)."""
        config = self.to_dict()
        for section, option in NOT_IDENTITY:
            config[section].pop(option, None)
        config.get("trial", {}).pop("prune_at", None)
        return config

    @property
    def cell_id(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


NOT_IDENTITY = (("train", "save"),)  # options that change what is kept, never what is measured
UNWRITTEN_DEFAULTS = {("eval", "precision"): "train"}  # options added later, absent from a config (and id) at their default


@dataclass(frozen=True)
class Grid:
    name: str
    path: str
    cells: tuple[Cell, ...]
    excluded: int  # combinations removed by [[exclude]]
    resources: dict = field(default_factory=dict)  # [resources]: what one cell asks of Ray or Slurm (not its identity)
    slurm: dict = field(default_factory=dict)  # [slurm]: where and how long submitit's Slurm jobs run
    search: SearchSpec | None = None  # [search]: cells are then the configurations' defaults; bench.run.study tunes them
    report: dict = field(default_factory=dict)  # [report]: how the views judge lines (equivalence, target); carried by the rows


UNTRAINED = "none"  # the loss name of the untrained baseline (losses/untrained.py)
SECTIONS = {"budget": Budget, "train": TrainConfig, "model": ModelConfig, "split": SplitConfig, "eval": EvalConfig}
HEAD_ARGS = ("head", "embed_dim", "sigmoid")  # backbone arguments that only shape the trained head
