"""Within-group few-shot episodes (`eval.episode_group`, Lake et al.'s within-alphabet task) against an
exact enumeration and a construction whose accuracies are known in closed form."""

from __future__ import annotations

import math
from itertools import combinations, product

import numpy as np
import pytest
import torch
from refs import DISTANCES, clustered, ref_distance

from bench.config import EvalConfig
from bench.config.metrics import definition
from bench.errors import UserError
from bench.eval.fewshot import class_pools, draw_group_episodes, pools_by_group, within_group_few_shot_accuracy
from bench.eval.metrics import evaluate


def twins(delta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor, torch.Tensor]:
    """Three pairs of twin classes, one twin in group "A" (classes 0-2), the other in "B" (3-5), both
    centred on 10·e_i. Each class has a "+" and a "−" image: A_i at c_i ± δ·e_3, B_i at c_i ± δ·e_4. Within
    a class the images are 2δ apart, across twins δ√2: a query is always taken for its twin when the twin's
    support is in the episode, and never mistaken otherwise. Returns all 12 images with their labels and
    groups, and the "−" images alone as a gallery for the "+" ones (the first 6 rows)."""
    centres = 10.0 * torch.eye(5, dtype=torch.float64)[:3]
    offset = {"A": delta * torch.eye(5, dtype=torch.float64)[3], "B": delta * torch.eye(5, dtype=torch.float64)[4]}
    plus = torch.stack([centres[i % 3] + offset["AB"[i // 3]] for i in range(6)])
    minus = torch.stack([centres[i % 3] - offset["AB"[i // 3]] for i in range(6)])
    labels = torch.arange(6)
    return torch.cat([plus, minus]), torch.cat([labels, labels]), np.array(list("AAABBB") * 2), minus, labels


def test_within_group_is_perfect_where_twins_across_groups_confuse_the_all_classes_episodes():
    # 3-way 1-shot over all 6 classes: of the C(6,3) = 20 class sets, 8 hold no twin pair (accuracy 1) and
    # 12 hold one pair (accuracy 1/3): mean 0.6, E[a²] = (8 + 12/9) / 20. Within a group: always 1.
    x, y, groups, _, _ = twins()
    config = EvalConfig(n_way=3, k_shot=1, episodes=3000, max_pairs=500)
    row = evaluate(x, y, "euclidean", config, seed=3, groups=groups, group_name="alphabet")
    assert row["few_shot_3way_1shot_within_alphabet_accuracy"] == 1.0
    assert row["few_shot_3way_1shot_within_alphabet_accuracy_stderr"] == 0.0
    assert row["few_shot_within_alphabet_groups"] == 2 and row["few_shot_3way_1shot_within_alphabet_episodes"] == 3000
    std = math.sqrt((8 + 12 / 9) / 20 - 0.6**2)
    assert row["few_shot_3way_1shot_accuracy_stderr"] == pytest.approx(std / math.sqrt(3000), rel=0.1)
    assert abs(row["few_shot_3way_1shot_accuracy"] - 0.6) < 4.5 * row["few_shot_3way_1shot_accuracy_stderr"]


def test_with_a_gallery_support_comes_from_the_gallery():
    _, _, groups, gallery, labels = twins()
    x = twins()[0][:6]  # the "+" images are the queries, one per class: no episode within them alone
    config = EvalConfig(n_way=3, k_shot=1, episodes=3000, max_pairs=500)
    row = evaluate(x, labels, "euclidean", config, seed=4, gallery=gallery, gallery_labels=labels, groups=groups[:6], group_name="alphabet")
    assert row["few_shot_3way_1shot_within_alphabet_accuracy"] == 1.0 and row["few_shot_within_alphabet_groups"] == 2
    assert abs(row["few_shot_3way_1shot_accuracy"] - 0.6) < 4.5 * row["few_shot_3way_1shot_accuracy_stderr"]


def exact_within_group_expectation(dist, pools_of_groups, n_way, k_shot):
    """Mean and std of episode accuracy over every possible episode: a qualifying group uniformly, every
    set of n_way of its classes equally likely, and within a set every (k_shot support subset, query
    outside it) per class equally likely. `pools_of_groups` lists each group's classes as index lists."""
    moments = []  # per group: (mean, mean square) of episode accuracy
    for pools in pools_of_groups:
        options = [[(support, q) for support in combinations(pool, k_shot) for q in pool if q not in support] for pool in pools]
        per_set = []
        for classes in combinations(range(len(pools)), n_way):
            accuracies = []
            for episode in product(*(options[c] for c in classes)):
                right = sum(min((dist[q][s], v) for v, (support, _) in enumerate(episode) for s in support)[1] == w for w, (_, q) in enumerate(episode))
                accuracies.append(right / n_way)
            per_set.append((np.mean(accuracies), np.mean(np.square(accuracies))))
        moments.append(np.mean(per_set, axis=0))
    mean, square = np.mean(moments, axis=0)
    return float(mean), float(math.sqrt(square - mean**2))


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("k_shot", [1, 2])
def test_agrees_with_the_exact_expectation_over_all_episodes(distance, k_shot):
    # Groups (strings): "x" = classes 0-2, "y" = 3-6, "z" = 7-8 (too few classes for 3-way). Class 2 has 2
    # images: it qualifies for 1-shot, not 2-shot, and then "x" has too few classes as well.
    sizes = [3, 4, 2, 3, 4, 3, 3, 3, 4]
    x, y = clustered(sizes, dim=3, spread=1.0, seed=90)
    group_of = np.array(["x"] * 3 + ["y"] * 4 + ["z"] * 2)
    dist = [[ref_distance(x[a], x[b], distance) for b in range(len(x))] for a in range(len(x))]
    members = {c: np.flatnonzero(y.numpy() == c).tolist() for c in range(len(sizes))}
    pools_of_groups = [[members[c] for c in range(len(sizes)) if group_of[c] == g and len(members[c]) >= k_shot + 1] for g in "xyz"]
    pools_of_groups = [p for p in pools_of_groups if len(p) >= 3]
    assert len(pools_of_groups) == (2 if k_shot == 1 else 1)
    mean, std = exact_within_group_expectation(dist, pools_of_groups, 3, k_shot)
    got = within_group_few_shot_accuracy(x, y, group_of[y.numpy()], "alphabet", distance, 3, k_shot, episodes=4000, seed=6)
    name = f"few_shot_3way_{k_shot}shot_within_alphabet"
    assert got["few_shot_within_alphabet_groups"] == len(pools_of_groups) and 0.3 < mean < 0.95
    assert got[f"{name}_accuracy_stderr"] == pytest.approx(std / math.sqrt(4000), rel=0.15)
    assert abs(got[f"{name}_accuracy"] - mean) < 4.5 * got[f"{name}_accuracy_stderr"]


def test_every_episode_lies_in_one_qualifying_group_drawn_uniformly():
    # 16 classes in groups of 2, 4, 3, 6 and 1; class 2 (group 1) has one image, the others three. For 3-way
    # 1-shot, groups 1 (3 classes left), 2 (3) and 3 (6) qualify; groups 0 and 4 and class 2 never appear.
    group_of_class = np.repeat(np.arange(5), [2, 4, 3, 6, 1])
    labels = torch.arange(16).repeat_interleave(torch.tensor([1 if c == 2 else 3 for c in range(16)]))
    codes = group_of_class[labels.numpy()]
    pools = class_pools(labels, 1)
    groups = [g for g in pools_by_group(pools, codes) if len(g) >= 3]
    support, query, classes = draw_group_episodes(pools, groups, 3, 1, 3000, np.random.default_rng(7))
    episode_groups = codes[query]
    assert (episode_groups == episode_groups[:, :1]).all(), "an episode mixes groups"
    assert (codes[support[..., 0]] == episode_groups).all()
    assert all(len(set(row)) == 3 for row in classes.tolist())
    assert set(np.unique(episode_groups)) == {1, 2, 3} and 2 not in set(labels[query].flatten().tolist())
    counts = np.bincount(episode_groups[:, 0], minlength=5)[1:4]
    sigma = math.sqrt(3000 * (1 / 3) * (2 / 3))
    assert (abs(counts - 1000) < 4.5 * sigma).all(), counts  # uniform over groups, not 3:3:6 by size
    again = draw_group_episodes(pools, groups, 3, 1, 3000, np.random.default_rng(7))
    assert all((a == b).all() for a, b in zip((support, query, classes), again))
    other = draw_group_episodes(pools, groups, 3, 1, 3000, np.random.default_rng(8))
    assert not (other[1] == query).all()


def test_groups_leave_every_other_figure_unchanged_and_every_key_is_defined():
    x, y = clustered([4] * 12, dim=5, spread=0.8, seed=91)
    alphabets = np.array([f"alphabet{c // 6}" for c in range(12)])[y.numpy()]
    config = EvalConfig(n_way=5, k_shot=1, episodes=200, max_pairs=500)
    plain = evaluate(x, y, "cosine", config, seed=2)
    grouped = evaluate(x, y, "cosine", config, seed=2, groups=alphabets, group_name="alphabet")
    assert {k: v for k, v in grouped.items() if k in plain} == plain
    assert set(grouped) - set(plain) == {
        "few_shot_5way_1shot_within_alphabet_accuracy",
        "few_shot_5way_1shot_within_alphabet_accuracy_stderr",
        "few_shot_5way_1shot_within_alphabet_episodes",
        "few_shot_within_alphabet_groups",
    }
    assert [k for k in grouped if definition(k) is None] == []
    assert definition("few_shot_5way_1shot_within_alphabet_accuracy").direction == "higher"
    assert definition("few_shot_5way_1shot_within_alphabet_accuracy_stderr").direction == "none"  # a standard error, not a score
    assert evaluate(x, y, "cosine", config, seed=2, groups=alphabets, group_name="alphabet") == grouped  # seeded
    as_ints = evaluate(x, y, "cosine", config, seed=2, groups=y // 6, group_name="alphabet")  # a tensor: same groups
    assert as_ints == grouped
    reseeded = evaluate(x, y, "cosine", config, seed=5, groups=alphabets, group_name="alphabet")
    assert reseeded["few_shot_5way_1shot_within_alphabet_accuracy"] != grouped["few_shot_5way_1shot_within_alphabet_accuracy"]


def test_no_qualifying_group_is_nan_with_a_note():
    x, y = clustered([3] * 6, dim=4, seed=92)
    config = EvalConfig(n_way=4, k_shot=1, episodes=50, max_pairs=500)
    row = evaluate(x, y, "euclidean", config, groups=(y % 2).numpy(), group_name="drawer")  # 2 groups of 3 classes
    assert math.isnan(row["few_shot_4way_1shot_within_drawer_accuracy"]) and math.isnan(row["few_shot_4way_1shot_within_drawer_accuracy_stderr"])
    assert row["few_shot_within_drawer_groups"] == 0 and "the most is 3" in row["few_shot_within_note"]
    assert not math.isnan(row["few_shot_4way_1shot_accuracy"]) and "few_shot_note" not in row
    assert [k for k in row if definition(k) is None] == []
    one = within_group_few_shot_accuracy(x, y, (y % 2).numpy(), "drawer", "euclidean", 1, 1, 10)
    assert math.isnan(one["few_shot_1way_1shot_within_drawer_accuracy"]) and "n_way ≥ 2" in one["few_shot_within_note"]


@pytest.mark.parametrize(
    "groups,name,message",
    [
        (np.zeros(17), "alphabet", "one alphabet per embedding"),
        (np.zeros(18), "al-pha", "letters, digits or _"),
        (np.zeros(18), "", "letters, digits or _"),
        (np.r_[np.zeros(17), 1], "alphabet", "class 5 has images in more than one alphabet"),
    ],
)
def test_bad_groups_are_one_line_errors(groups, name, message):
    x, y = clustered([3] * 6, dim=4, seed=93)
    y = torch.sort(y).values  # the last image is of class 5
    with pytest.raises(UserError, match=message) as info:
        evaluate(x, y, "cosine", EvalConfig(n_way=2, episodes=10, max_pairs=100), groups=groups, group_name=name)
    assert "\n" not in str(info.value)


def test_placeholders_stay_numeric_except_group():
    assert definition("few_shot_20way_1shot_within_alphabet_accuracy").pattern == "few_shot_<n>way_<k>shot_within_<group>_accuracy"
    assert definition("few_shot_within_Alphabet_2_groups").pattern == "few_shot_within_<group>_groups"
    assert definition("few_shot_20way_1shot_accuracy").pattern == "few_shot_<n>way_<k>shot_accuracy"
    assert definition("few_shot_twentyway_1shot_accuracy") is None and definition("recall_at_k") is None
    assert definition("few_shot_20way_1shot_within_al-pha_accuracy") is None
