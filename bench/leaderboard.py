"""Result rows → a leaderboard: one line per configuration, mean ± std over its ok seeds. Pure functions of rows.

A configuration is the full canonical cell config minus the seed: rows group only when every key and value
agrees, and a key that one row lacks is a different configuration from any value of it (an argument a
plugin does not take is absent, not "whatever the others had"). Failed and diverged seeds stay visible:
each line counts the seeds that ran and the ok ones, and names the others.

Beside the means, each line says (all on the sort metric, in its own direction):
- `vs_best`: Welch's two-sided t-test of its per-seed values against those of the best configuration (the
  best mean among those with ≥ 2 ok seeds); p ≥ 0.05 is "≈ best" (indistinguishable at 95%). A
  configuration with one ok seed is "1 seed: untested" wherever its mean ranks it.
- `gain_vs_untrained`: its mean minus that of the untrained baseline (loss "none": the backbone's own
  features) with the same backbone, input, data, split, evaluation and precision; positive is better.
- `still_improving`: "yes" when the curve's mean at the full budget beats its mean at half the budget (the
  last doubling) by more than the seed spread (std over seeds at the full budget; 0 with one seed).
- `selected`: the curve point that train.select = "best" scored, per seed.
- `tuned`: for a configuration a [search] tuned, the options its best trial chose, how many trials it had and
  the best trial's validation score. Trial rows (scored on validation) are never lines of the table, and a
  study's final rows are those of its latest choice (rows of an earlier choice, before more trials, are not).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import PurePosixPath
from urllib.parse import quote

import numpy as np
import pandas as pd
from scipy.stats import ttest_ind

from bench.config import HEAD_ARGS, NOT_IDENTITY
from bench.config import UNTRAINED as UNTRAINED_LOSS
from bench.errors import UserError
from bench.eval.definitions import definition, lower_is_better
from bench.results import latest_rows

DEFAULT_METRIC = "verification_roc_auc"
SHOWN = ("verification_roc_auc", "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8")
ABSENT = "—"  # shown for a key a configuration does not have
FIRST_KEYS = ("backbone", "loss", "dataset")
ALPHA = 0.05  # Welch's test: p ≥ ALPHA is indistinguishable from the best at 95%
UNTESTED = "1 seed: untested"
TRAINING_ONLY_EVAL = ("curve", "select_metric")  # eval options that only act while training (a baseline has neither)
# the columns after the keys and metrics, in markdown order: frame column → markdown header
VERDICTS = {"vs_best": "vs best (Welch, 95%)", "gain_vs_untrained": "gain vs untrained",
            "still_improving": "still improving", "selected": "selected", "tuned": "tuned (search)"}


def flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):  # an empty dict adds no key
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


def configuration(row: dict) -> str:
    """The identity of a row's configuration: its canonical config without the seed."""
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in row["config"].items() if k != "seed"}
    for section, option in NOT_IDENTITY:  # whether a checkpoint was kept does not make another configuration
        config.get(section, {}).pop(option, None)
    return json.dumps(config, sort_keys=True)


def check_metric(rows: list[dict], metric: str) -> None:
    """A one-line UserError unless `metric` is a score (it has a direction) that some ok row carries."""
    carried = sorted({k for r in rows if r.get("status") == "ok" for k in r.get("metrics", {})})
    scores = [k for k in carried if (d := definition(k)) is not None and d.direction != "none"]
    if metric not in scores:
        why = "is not a score (it has no better direction)" if definition(metric) else "is not a metric of these rows"
        raise UserError(f"--metric {metric!r} {why} — use one of: {', '.join(scores) or '(no finished cells)'}")


def table(rows: list[dict], metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """One line per configuration: mean and std over ok seeds per shown metric, seed counts, failures, verdicts."""
    return ranked(rows, metric)[0]


def ranked(rows: list[dict], metric: str = DEFAULT_METRIC) -> tuple[pd.DataFrame, list[list[dict]]]:
    """`table`'s frame and, line for line in its order (best first), the newest rows of each configuration:
    what the plots draw, so they rank and group exactly as the leaderboard does."""
    latest = current(rows)
    if not any(r.get("status") == "ok" for r in latest):
        return pd.DataFrame(), []
    check_metric(latest, metric)
    by_config: dict[str, list[dict]] = {}
    for r in latest:
        by_config.setdefault(configuration(r), []).append(r)
    groups = list(by_config.values())
    flat = [flatten({k: v for k, v in g[0]["config"].items() if k != "seed"}) for g in groups]
    columns = list(dict.fromkeys(c for f in flat for c in f))
    varying = [c for c in columns if len({json.dumps(f.get(c, ABSENT)) for f in flat}) > 1 and c not in FIRST_KEYS]
    keys = list(FIRST_KEYS) + varying
    carried = {k for r in latest if r.get("status") == "ok" for k in r.get("metrics", {})}
    shown = [metric] + [m for m in SHOWN if m != metric and m in carried]
    frame = pd.DataFrame([_line(f, g, keys, shown) for f, g in zip(flat, groups)])
    frame = frame.assign(**versus_best(groups, metric), **gain_vs_untrained(groups, metric),
                         still_improving=[still_improving(g, metric) for g in groups], selected=[selected(g) for g in groups],
                         tuned=[tuned(g) for g in groups])
    frame = frame.sort_values(f"{metric}_mean", ascending=lower_is_better(metric), na_position="last", kind="stable")
    return frame.reset_index(drop=True), [groups[i] for i in frame.index]


def current(rows: list[dict]) -> list[dict]:
    """The newest row of each cell, less a search's trial rows (scored on validation, not test) and the final rows
    of a study's earlier choices: a study's current choice is that of its last final row in file order."""
    latest = [r for r in latest_rows(rows).values() if not r.get("config", {}).get("trial")]
    chosen = {r["search"]["study"]: r["search"]["trial"] for r in rows if r.get("search", {}).get("role") == "final"}
    return [r for r in latest if r.get("search", {}).get("role") != "final" or chosen[r["search"]["study"]] == r["search"]["trial"]]


def tuned(group: list[dict]) -> str:
    """"train.lr=0.000687, loss.margin=0.606 (trial 4 of 20, 3 pruned; val verification_roc_auc 0.718)" for a
    configuration a search chose; "—" for one at the grid's own values."""
    search = group[0].get("search", {})
    if search.get("role") != "final":
        return ABSENT
    params = ", ".join(f"{k}={_show(v)}" for k, v in search["params"].items())
    extra = "".join(f", {search[k]} {k}" for k in ("pruned", "failed") if search.get(k))
    return f"{params} (trial {search['trial']} of {search['trials']}{extra}; val {search['metric']} {search['objective']:.4g})"


def _line(flat: dict, group: list[dict], keys: list[str], shown: list[str]) -> dict:
    ok = _ok(group)
    line = {k: _show(flat.get(k, ABSENT)) for k in keys}
    for m in shown:
        values = pd.Series([float(r["metrics"].get(m, math.nan)) for r in ok], dtype=float)
        line[f"{m}_mean"], line[f"{m}_std"] = (values.mean(), values.std()) if len(values) else (math.nan, math.nan)
    line["seeds"] = len(group)
    line["ok"] = len(ok)
    line["others"] = ", ".join(f"seed {r['config'].get('seed')}: {r.get('status')}"
                               for r in sorted(group, key=_seed) if r.get("status") != "ok")
    line["steps"] = round(sum(r["train"]["steps"] for r in ok) / len(ok)) if ok else 0
    line["stopped_by"] = ",".join(sorted({r["train"]["stopped_by"] for r in ok}))
    return line


def _ok(group: list[dict]) -> list[dict]:
    return [r for r in group if r.get("status") == "ok"]


def _seed(row: dict):
    return row["config"].get("seed", 0)


def _values(group: list[dict], metric: str) -> np.ndarray:
    """The metric per ok seed, those without a finite value left out (they cannot be averaged or tested)."""
    values = np.array([float(r["metrics"].get(metric, math.nan)) for r in _ok(group)], dtype=float)
    return values[np.isfinite(values)]


def _better(metric: str) -> int:
    """+1 or −1: multiplies a difference so that positive is better in the metric's direction."""
    return -1 if lower_is_better(metric) else 1


def _show(value) -> str:
    if isinstance(value, float) and math.isfinite(value):
        value = float(f"{value:.4g}")  # a searched value, 0.0006874266729, reads as 0.0006874
    return value if isinstance(value, str) else json.dumps(value)


def _signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


# --- significance vs the best ----------------------------------------------------------------------------

def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of Welch's t-test (unequal variances) of samples `a` and `b`, each of ≥ 2 values.

    When neither sample varies, t is 0/0 or ±∞ and scipy gives nan; decided here instead: equal means are
    indistinguishable (p = 1), different means are distinguishable (p = 0).
    """
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0 if a[0] == b[0] else 0.0
    with warnings.catch_warnings():
        # scipy warns of "precision loss" for a sample of identical values (a deterministic untrained
        # baseline); its variance is exactly 0, which Welch's test handles.
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


def versus_best(groups: list[list[dict]], metric: str) -> dict[str, list]:
    """Columns `vs_best` (a verdict) and `vs_best_p` for each configuration, against the best of those with ≥ 2 ok seeds.

    One seed cannot be tested, so such a configuration says "1 seed: untested" even when its mean ranks it
    above the block that is indistinguishable from the best; one without an ok value says "—".
    """
    values = [_values(g, metric) for g in groups]
    tested = [i for i, v in enumerate(values) if len(v) >= 2]
    best = max(tested, key=lambda i: _better(metric) * values[i].mean(), default=None)  # first of ties, as the stable sort
    verdicts, ps = [], []
    for i, v in enumerate(values):
        p = welch_p(values[best], v) if i in tested and i != best else math.nan
        if len(v) == 0:
            verdict = ABSENT
        elif len(v) == 1:
            verdict = UNTESTED
        elif i == best:
            verdict = "best"
        else:
            still = np.ptp(v) == 0 and np.ptp(values[best]) == 0  # p is decided, not computed
            verdict = f"{'≈ best' if p >= ALPHA else 'below'} ({'no variance' if still else _p(p)})"
        verdicts.append(verdict)
        ps.append(p)
    return {"vs_best": verdicts, "vs_best_p": ps}


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


# --- gain over the untrained baseline --------------------------------------------------------------------

def untrained_key(config: dict) -> str:
    """What an untrained baseline shares with the configurations it is the baseline of.

    The backbone and its arguments except the head's, its preprocessing, the data, split, evaluation (but the
    curve and the selection metric, which act only during training) and the requested precision: what the backbone's own features depend on. The loss, the rest of train, the
    budget and what is frozen only describe training, which the baseline has none of.
    """
    key = {k: v for k, v in config.items() if k in ("backbone", "dataset", "dataset_args", "split")}
    key["eval"] = {k: v for k, v in config.get("eval", {}).items() if k not in TRAINING_ONLY_EVAL}
    if "backbone_args" in config:
        key["backbone_args"] = {k: v for k, v in config["backbone_args"].items() if k not in HEAD_ARGS}
    key["model"] = {k: v for k, v in config.get("model", {}).items() if k == "preprocess"}
    key["train"] = {k: v for k, v in config.get("train", {}).items() if k == "precision"}
    return json.dumps(key, sort_keys=True)


def gain_vs_untrained(groups: list[list[dict]], metric: str) -> dict[str, list]:
    """Columns `untrained_<metric>` (the matching baseline's mean over seeds) and `gain_vs_untrained`.

    The gain is this mean minus the baseline's, signed so that positive is better; NaN where no baseline
    matches and on the baselines themselves (loss "none"; the markdown shows "(baseline)").
    When several untrained configurations match (they differ only in what the baseline ignores, e.g. lr),
    their seeds are pooled: they measure the same features.
    """
    pools: dict[str, list[float]] = {}
    for g in groups:
        if g[0]["config"].get("loss") == UNTRAINED_LOSS:
            pools.setdefault(untrained_key(g[0]["config"]), []).extend(_values(g, metric))
    base, gain = [], []
    for g in groups:
        pool = pools.get(untrained_key(g[0]["config"]), [])
        untrained = g[0]["config"].get("loss") == UNTRAINED_LOSS
        b = float(np.mean(pool)) if pool and not untrained else math.nan
        v = _values(g, metric)
        base.append(b)
        gain.append(_better(metric) * (v.mean() - b) if len(v) and not math.isnan(b) else math.nan)
    return {f"untrained_{metric}": base, "gain_vs_untrained": gain}


# --- still improving, and the selected curve point --------------------------------------------------------

def curve_pair(row: dict, metric: str) -> tuple[float, float] | None:
    """The metric at fractions 0.5 and 1.0 of the budget, both from one split (validation first), or None."""
    points = row.get("curve") or []
    for on in sorted({p.get("on") for p in points}, key=lambda on: on != "val"):
        at = {f: p["metrics"][metric] for p in points if p.get("on") == on and metric in p.get("metrics", {})
              for f in (0.5, 1.0) if math.isclose(p["fraction"], f)}
        if len(at) == 2 and all(math.isfinite(x) for x in at.values()):
            return float(at[0.5]), float(at[1.0])
    return None


def still_improving(group: list[dict], metric: str) -> str:
    """"yes"/"no" with the gain over the last doubling of the budget and the seed spread it had to beat.

    Gain: mean over seeds at fraction 1.0 minus mean at 0.5, positive = better. Spread: std over seeds
    (ddof 1) at 1.0, taken as 0 with one seed. Still improving when gain > spread. "—" without both points.
    """
    pairs = [p for r in _ok(group) if (p := curve_pair(r, metric)) is not None]
    if not pairs:
        return ABSENT
    half, full = np.array(pairs).T
    gain = _better(metric) * (full.mean() - half.mean())
    spread = float(full.std(ddof=1)) if len(full) > 1 else 0.0
    note = ", 1 seed" if len(full) == 1 else ""
    return f"yes ({_signed(gain)} > {spread:.3f}{note})" if gain > spread else f"no ({_signed(gain)} ≤ {spread:.3f}{note})"


def selected(group: list[dict]) -> str:
    """"best@<fraction>" when train.select = "best" chose a curve point; one fraction per seed when they differ."""
    chosen = [str(float(r["train"]["selected"]["fraction"])) for r in sorted(_ok(group), key=_seed) if r["train"].get("selected")]
    if not chosen:
        return ABSENT
    return "best@" + (chosen[0] if len(set(chosen)) == 1 else ", ".join(chosen))


# --- markdown ----------------------------------------------------------------------------------------------

def markdown(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, title: str = "") -> str:
    # Written by hand rather than DataFrame.to_markdown: that needs `tabulate`, and does not escape `|`.
    if frame.empty:
        return f"# {title}\n\nNo finished cells yet.\n"
    metrics = [c[: -len("_mean")] for c in frame.columns if c.endswith("_mean")]
    keys = key_columns(frame)
    verdicts = _verdicts(frame)
    header = ["#", *keys, *metrics, *(VERDICTS[c] for c in verdicts), "ok / seeds", "not ok", "steps", "stopped by"]
    better = "lower" if lower_is_better(metric) else "higher"
    lines = [f"# {title}" if title else "", "",
             f"Sorted by **{metric}** ({better} is better); mean ± std over the ok seeds. {ABSENT}: the configuration "
             "has no such option. Seeds that failed or diverged are counted in *ok / seeds* and named in *not ok*."
             + "".join(RULES[c].format(metric=metric, absent=ABSENT) for c in verdicts), ""]
    align = ["---:"] + ["---"] * len(keys) + ["---:"] * len(metrics) + ["---"] * len(verdicts) + ["---:", "---", "---:", "---"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for rank, (_, r) in enumerate(frame.iterrows(), 1):
        cells = [str(rank), *(_escape(r[k]) for k in keys)]
        cells += [_mean_std(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
        cells += [_escape(verdicts[c][rank - 1]) for c in verdicts]
        cells += [f"{r['ok']} / {r['seeds']}", _escape(r["others"]) or "", str(r["steps"]), _escape(r["stopped_by"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines).lstrip("\n") + "\n"


def key_columns(frame: pd.DataFrame) -> list[str]:
    """The frame's configuration columns (backbone, loss, dataset and the options that vary), in order."""
    tail = ("seeds", "ok", "others", "steps", "stopped_by", "vs_best_p", *VERDICTS)
    return [c for c in frame.columns if not c.endswith(("_mean", "_std")) and not c.startswith("untrained_") and c not in tail]


def failures(rows: list[dict]) -> str:
    """A markdown list of the cells whose newest row is not ok: config, seed, status and the error's first
    line (a traceback's last lines say more, but one line keeps the list scannable); "" when none failed."""
    failed = [r for r in current(rows) if r.get("status") != "ok"]
    if not failed:
        return ""
    lines = [f"**Not ok** ({len(failed)} cell{'s' * (len(failed) != 1)}; newest row of each):", ""]
    for r in failed:
        c = r.get("config", {})
        error = (str(r.get("error") or "").strip().splitlines() or [""])[0]
        error = error if len(error) <= 200 else error[:199] + "…"
        what = " · ".join(str(c.get(k, ABSENT)) for k in FIRST_KEYS)
        lines.append(_escape(f"- `{r['cell_id']}` {what}, seed {c.get('seed', ABSENT)}: **{r.get('status')}**"
                             + (f" — {error}" if error else "")))
    return "\n".join(lines) + "\n"


def plot_links(paths: list[str]) -> str:
    """One markdown line linking each plot, given as paths relative to the markdown file; "" for none."""
    if not paths:
        return ""
    return "Plots: " + " · ".join(f"[{PurePosixPath(p).stem}]({quote(p)})" for p in paths) + "\n"


RULES = {  # one sentence per shown verdict column, for the line above the table
    "vs_best": " *vs best*: Welch's two-sided t-test of the per-seed {metric} against the best mean among configurations "
               "with ≥ 2 ok seeds; ≈ best is p ≥ 0.05 (indistinguishable at 95%), and one seed is untested wherever it ranks.",
    "gain_vs_untrained": " *gain vs untrained*: {metric} minus that of the untrained backbone (loss none) with the same "
                         "backbone, input, data, split, evaluation and precision; positive is better.",
    "still_improving": " *still improving*: the gain in {metric} from half to all of the budget beats the std over seeds at "
                       "the full budget.",
    "selected": " *selected*: the fraction of the budget whose checkpoint train.select = \"best\" scored.",
    "tuned": " *tuned*: the options a [search] chose, its best trial's validation score (trials never saw the test split), "
             "then run on every seed and scored on test; {absent}: the grid's own values.",
}


def _verdicts(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The verdict columns as markdown cells, leaving out those that say nothing (all "—", or no best to compare to)."""
    cells = {c: [str(v) for v in frame[c]] for c in ("vs_best", "still_improving", "selected", "tuned") if c in frame}
    if "gain_vs_untrained" in frame:
        cells["gain_vs_untrained"] = ["(baseline)" if loss == _show(UNTRAINED_LOSS) else ABSENT if math.isnan(g) else _signed(g)
                                      for loss, g in zip(frame["loss"], frame["gain_vs_untrained"])]
    shown = {c: v for c, v in cells.items() if any(x != ABSENT for x in v)}
    if "best" not in shown.get("vs_best", []):  # nothing had 2 seeds: a column of "untested" alone is noise
        shown.pop("vs_best", None)
    if "gain_vs_untrained" in shown and not any(x not in (ABSENT, "(baseline)") for x in shown["gain_vs_untrained"]):
        shown.pop("gain_vs_untrained")  # baselines with nothing trained beside them
    return {c: shown[c] for c in VERDICTS if c in shown}


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return ABSENT
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _escape(value) -> str:
    return str(value).replace("|", "\\|")
