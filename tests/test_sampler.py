import json

import numpy as np
import pytest
import torch

from aioli_repro.sampler import (
    MixtureSampler,
    ProportionsError,
    check_proportions,
    eval_windows,
    largest_remainder_counts,
)


def _streams(sizes=(5000, 3000, 4000)):
    # Distinct token ranges per group, so a sequence's content reveals its group.
    return {f"g{i}": (np.arange(n, dtype=np.uint16) % 1000 + 1000 * i).astype(np.uint16) for i, n in enumerate(sizes)}


@pytest.mark.parametrize("p,n,expected", [
    ([0.5, 0.5], 8, [4, 4]),
    ([0.625, 0.375], 8, [5, 3]),
    ([1 / 3] * 3, 8, [3, 3, 2]),
    ([0.5, 0.25, 0.25], 8, [4, 2, 2]),
    # The official code's m = 7, one-hot factor 0.75, batch 8 gives [6,1,1,1,1,1,-3]; largest remainder cannot.
    ([0.75] + [0.25 / 6] * 6, 8, [6, 1, 1, 0, 0, 0, 0]),
])
def test_largest_remainder_counts(p, n, expected):
    counts = largest_remainder_counts(p, n)
    assert counts.tolist() == expected
    assert counts.sum() == n and (counts >= 0).all()
    assert np.all(np.abs(counts - np.asarray(p) / np.sum(p) * n) < 1)


def test_largest_remainder_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(2, 9))
        p = rng.dirichlet(np.ones(m))
        n = int(rng.integers(1, 64))
        c = largest_remainder_counts(p, n)
        assert c.sum() == n and np.all(np.abs(c - p * n) < 1)


@pytest.mark.parametrize("bad,match", [
    ([0.5, -0.1, 0.6], "non-negative"), ([0.5, float("nan"), 0.5], "NaN"), ([0.5, 0.5], "expected 3"),
    ([0, 0, 0], "sum to zero"), (["a", 1, 2], "numbers"), ([1, float("inf"), 1], "NaN or infinity"),
])
def test_bad_proportions_are_rejected(bad, match):
    with pytest.raises(ProportionsError, match=match):
        check_proportions(bad, 3)


def test_exact_mode_counts():
    s = MixtureSampler(_streams(), context_length=16, seed=0)
    for p in ([0.625, 0.375, 0.0], [0.5, 0.25, 0.25], [0.2, 0.3, 0.5]):
        b = s.next_batch(p, 8, exact=True)
        assert np.bincount(b.groups.numpy(), minlength=3).tolist() == largest_remainder_counts(p, 8).tolist()
        assert torch.all(b.tokens // 1000 == b.groups[:, None])  # content comes from the right group


def test_iid_mode_frequencies_follow_p():
    s = MixtureSampler(_streams(), context_length=16, seed=1)
    p = np.array([0.6, 0.1, 0.3])
    groups = np.concatenate([s.draw_groups(p, 64) for _ in range(200)])
    freq = np.bincount(groups, minlength=3) / groups.size
    assert np.all(np.abs(freq - p) < 0.02)
    # A group with zero mass is never drawn.
    assert 1 not in np.concatenate([s.draw_groups([0.5, 0.0, 0.5], 64) for _ in range(50)])


def test_group_data_order_depends_on_seed_not_on_proportions():
    a = MixtureSampler(_streams(), 16, seed=7)
    b = MixtureSampler(_streams(), 16, seed=7)
    c = MixtureSampler(_streams(), 16, seed=8)

    def seqs_of(sampler, p, group, k=20):
        out = []
        while len(out) < k:
            batch = sampler.next_batch(p, 8)
            out += [row.tolist() for row, g in zip(batch.tokens, batch.groups) if g == group]
        return out[:k]

    assert seqs_of(a, [0.2, 0.5, 0.3], 1) == seqs_of(b, [0.6, 0.2, 0.2], 1)
    assert seqs_of(a, [0.2, 0.5, 0.3], 0) != seqs_of(c, [0.2, 0.5, 0.3], 0)


def test_group_draws_are_coupled_across_proportions():
    # Same seed, nearby p: the same uniforms pick the groups, so most sequences keep their group.
    a = MixtureSampler(_streams(), 16, seed=3).draw_groups([0.5, 0.3, 0.2], 1000)
    b = MixtureSampler(_streams(), 16, seed=3).draw_groups([0.48, 0.32, 0.2], 1000)
    assert (a == b).mean() > 0.9


def test_resume_draws_exactly_the_same_batches():
    plan = [([0.3, 0.3, 0.4], False), ([0.625, 0.375, 0.0], True), ([0.1, 0.1, 0.8], False)] * 40
    full = MixtureSampler(_streams((400, 300, 900)), 16, seed=5)  # small groups: epochs roll over mid-run
    ref = [full.next_batch(p, 8, e) for p, e in plan]
    first = MixtureSampler(_streams((400, 300, 900)), 16, seed=5)
    for p, e in plan[:50]:
        first.next_batch(p, 8, e)
    state = first.state_dict()
    resumed = MixtureSampler(_streams((400, 300, 900)), 16, seed=5)
    resumed.load_state_dict(state)
    for (p, e), r in zip(plan[50:], ref[50:]):
        b = resumed.next_batch(p, 8, e)
        assert torch.equal(b.tokens, r.tokens) and torch.equal(b.groups, r.groups)
    assert max(full.epoch.values()) > 0  # the test really crossed an epoch boundary


def test_state_from_another_run_is_refused():
    state = MixtureSampler(_streams(), 16, seed=5).state_dict()
    with pytest.raises(ValueError, match="different run"):
        MixtureSampler(_streams(), 16, seed=6).load_state_dict(state)


def test_eval_windows_are_fixed_and_cover_the_split():
    tokens = np.arange(1000, dtype=np.uint16)
    w = eval_windows(tokens, 10)
    assert w.shape == (99, 11) and w[1, 0] == 10 and w[0, -1] == 10
    sub = eval_windows(tokens, 10, max_sequences=5)
    assert sub.shape == (5, 11) and torch.equal(sub, eval_windows(tokens, 10, max_sequences=5))


# ----------------------------------------------------------------------------- leftover slots of exact batches
def _prefix_counts(p, n, batches, rule="balanced"):
    """Cumulative realised counts after each of ``batches`` exact batches of mixture p, from the real sampler."""
    m = len(p)
    s = MixtureSampler({f"g{i}": np.zeros(64, dtype=np.uint16) for i in range(m)}, 8, seed=0)
    rows = [np.zeros(m)]
    for _ in range(batches):
        rows.append(rows[-1] + np.bincount(s.draw_groups(p, n, exact=True, slots=rule), minlength=m))
    return np.array(rows)


def test_balanced_slots_keep_every_prefix_within_one_slot_of_its_target():
    rng = np.random.default_rng(11)
    for _ in range(300):
        m, n = int(rng.integers(2, 9)), int(rng.integers(1, 33))
        p = check_proportions(rng.dirichlet(np.full(m, rng.uniform(0.2, 3))))
        C = _prefix_counts(p, n, 30)
        assert (np.diff(C, axis=0).sum(axis=1) == n).all()
        target = np.arange(31)[:, None] * p * n
        assert np.abs(C - target).max() < 1  # every prefix, every group


def test_learn_params_batches_of_m7_are_balanced_and_the_old_rule_is_skewed():
    # m = 7, h = 0.75, B = 8: 6 sequences of the target and 1/3 of a sequence per other group, per batch.
    p = [0.75] + [0.25 / 6] * 6
    old = np.diff(_prefix_counts(p, 8, 12, "lowest_index"), axis=0)
    assert (old == [6, 1, 1, 0, 0, 0, 0]).all()  # the bug: the same two groups every time
    C = _prefix_counts(p, 8, 12)
    # Any interval of consecutive batches (a LearnParams interval is S_lp of them) is within one slot per group.
    for a in range(12):
        for b in range(a + 1, 13):
            assert np.abs(C[b] - C[a] - (b - a) * np.asarray(p) * 8).max() < 1
    assert C[12].tolist() == [72, 4, 4, 4, 4, 4, 4]  # 12 batches: exactly the target
    # Mixtures keep separate accounts: batches of another mixture in between do not disturb this one.
    s = MixtureSampler({f"g{i}": np.zeros(64, dtype=np.uint16) for i in range(7)}, 8, seed=0)
    q = [0.25 / 6] * 6 + [0.75]
    total = np.zeros(7)
    for _ in range(6):
        total += np.bincount(s.draw_groups(p, 8, exact=True), minlength=7)
        s.draw_groups(q, 8, exact=True)
    assert total.tolist() == [36, 2, 2, 2, 2, 2, 2]


def test_balanced_slots_resume_exactly():
    p = [0.75] + [0.25 / 6] * 6
    streams = {f"g{i}": np.zeros(64, dtype=np.uint16) for i in range(7)}
    a = MixtureSampler(streams, 8, seed=3)
    first = [a.draw_groups(p, 8, exact=True).tolist() for _ in range(2)]
    b = MixtureSampler(streams, 8, seed=3)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))  # the state is JSON, as checkpoints store it
    assert [a.draw_groups(p, 8, exact=True).tolist() for _ in range(4)] == \
        [b.draw_groups(p, 8, exact=True).tolist() for _ in range(4)]
    assert first[0] != first[1]  # the leftover slots moved on
    with pytest.raises(ValueError, match="unknown slot rule"):
        a.draw_groups(p, 8, exact=True, slots="random")
