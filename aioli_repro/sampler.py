"""Mixture sampler: training batches drawn from m groups under proportions p.

Two modes:

* ``iid`` (the paper's main training): each sequence's group is drawn independently from p.
* ``exact`` (what LearnParams needs): the batch holds floor(p·B) sequences of each group plus the leftover slots,
  so the counts always sum to the batch size B. (The official code's ``max(1, int(p*B))`` with the remainder dumped
  on the last group gives a negative count for m = 7.) Two rules place the leftover slots (``slots``):
  ``balanced`` gives them to the groups owed most over every earlier exact batch of the same mixture in this run
  (:func:`balanced_counts`), so each mixture's realised counts track p·B within one slot per group; ``lowest_index``
  is largest-remainder rounding with ties broken by group index, the rule before that fix: with m = 7, h = 0.75,
  B = 8 it put the two leftover slots of every LearnParams batch on the two lowest-index other groups.

Randomness is organised for *common random numbers*: group g's sequence order is a permutation seeded by (seed, g)
alone, and the uniform numbers that pick each sequence's group are seeded by (seed, batch index) alone. Two runs with
the same seed but different proportions (or methods) therefore see the same per-group data order, and their group
draws are coupled through the same uniforms. The state is a handful of integers, so a resumed run draws exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch


class ProportionsError(ValueError):
    """Mixture proportions are not a valid distribution over the groups."""


def check_proportions(p, m: int | None = None, groups=None) -> np.ndarray:
    """Validate and normalise proportions; raise :class:`ProportionsError` naming the problem."""
    try:
        arr = np.asarray(p, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ProportionsError(f"proportions must be numbers, got {p!r}") from e
    if m is not None and arr.size != m:
        names = f" for groups {list(groups)}" if groups is not None else ""
        raise ProportionsError(f"expected {m} proportions{names}, got {arr.size}: {arr.tolist()}")
    if not np.all(np.isfinite(arr)):
        raise ProportionsError(f"proportions contain NaN or infinity: {arr.tolist()}")
    if np.any(arr < 0):
        raise ProportionsError(f"proportions must be non-negative: {arr.tolist()}")
    total = arr.sum()
    if total <= 0:
        raise ProportionsError(f"proportions sum to zero: {arr.tolist()}")
    return arr / total


def largest_remainder_counts(p, n: int) -> np.ndarray:
    """Integer counts summing to ``n`` closest to ``p * n`` (Hamilton's largest-remainder rounding).

    Ties are broken by group index, so the counts are deterministic.
    """
    p = check_proportions(p)
    quotas = p * n
    counts = np.floor(quotas).astype(np.int64)
    short = n - int(counts.sum())
    if short:
        remainders = quotas - counts
        order = sorted(range(len(p)), key=lambda j: (-remainders[j], j))
        for j in order[:short]:
            counts[j] += 1
    return counts


SLOT_RULES = ("balanced", "lowest_index")


def mixture_key(p) -> str:
    """A stable text key of a mixture (the balanced rule keeps one account of owed slots per mixture)."""
    return ",".join(f"{x:.12g}" for x in np.asarray(p, dtype=float))


def balanced_counts(p, n: int, owed=None) -> tuple[np.ndarray, np.ndarray]:
    """Counts for one exact batch of ``n`` sequences on mixture p, and the updated account of owed slots.

    Every group gets floor(p_g·n); each group with a fractional quota r_g = p_g·n - floor(p_g·n) adds r_g to what it
    is owed, and the n - Σ floor leftover slots go to the groups owed most (ties by index), each paying back 1. Over
    any run of batches on the same p, the account stays in (-1, 1], so a group's realised count differs from its
    target p_g·n·(batches) by less than one slot. ``owed`` is the account before this batch (zeros if None).
    """
    p = check_proportions(p)
    quotas = p * n
    counts = np.floor(quotas + 1e-9).astype(np.int64)  # 1e-9: a quota of 6 computed as 5.999999999 is 6
    fractional = np.clip(quotas - counts, 0.0, None)
    fractional[fractional < 1e-9] = 0.0
    owed = (np.zeros(len(p)) if owed is None else np.asarray(owed, dtype=float)) + fractional
    short = n - int(counts.sum())
    eligible = [j for j in range(len(p)) if fractional[j] > 0]
    for j in sorted(eligible, key=lambda j: (-owed[j], j))[:short]:
        counts[j] += 1
        owed[j] -= 1.0
    return counts, owed


def group_key(name: str) -> int:
    """A stable integer per group name (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode())


@dataclass
class Batch:
    tokens: torch.Tensor
    """[batch, context_length + 1] token ids: inputs are tokens[:, :-1], labels tokens[:, 1:]."""
    groups: torch.Tensor
    """[batch] index of each sequence's group."""


class MixtureSampler:
    """Draws training batches from per-group uint16 token streams under given proportions."""

    _DRAW_STREAM = 0x6D69  # separates the group-draw RNG stream from the per-group permutation streams

    def __init__(self, streams: dict[str, np.ndarray], context_length: int, seed: int):
        self.groups = tuple(streams)
        self.streams = streams
        self.context_length = int(context_length)
        self.seed = int(seed)
        self.n_chunks = {}
        for g, arr in streams.items():
            # Window i covers tokens [i*T, i*T + T + 1): non-overlapping inputs, one extra token for the last label.
            n = (len(arr) - 1) // self.context_length
            if n < 1:
                raise ValueError(f"group {g!r} has {len(arr)} tokens, fewer than one sequence of {context_length + 1}")
            self.n_chunks[g] = n
        self.batches_drawn = 0
        self.cursor = {g: 0 for g in self.groups}
        self.epoch = {g: 0 for g in self.groups}
        self.owed_slots: dict[str, list[float]] = {}
        """Per exact mixture (``mixture_key``): slots each group is owed by the ``balanced`` rule."""
        self._perm_cache: dict[tuple[str, int], np.ndarray] = {}

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"batches_drawn": self.batches_drawn, "cursor": dict(self.cursor), "epoch": dict(self.epoch),
                "seed": self.seed, "groups": list(self.groups), "context_length": self.context_length,
                "owed_slots": {k: list(v) for k, v in self.owed_slots.items()}}

    def load_state_dict(self, state: dict) -> None:
        if list(state["groups"]) != list(self.groups) or state["seed"] != self.seed \
                or state["context_length"] != self.context_length:
            raise ValueError("sampler state belongs to a different run (groups, seed or context length differ)")
        self.batches_drawn = int(state["batches_drawn"])
        self.cursor = {g: int(v) for g, v in state["cursor"].items()}
        self.epoch = {g: int(v) for g, v in state["epoch"].items()}
        self.owed_slots = {k: [float(x) for x in v] for k, v in state.get("owed_slots", {}).items()}

    # ---------------------------------------------------------------- drawing
    def _permutation(self, g: str, epoch: int) -> np.ndarray:
        key = (g, epoch)
        if key not in self._perm_cache:
            self._perm_cache = {k: v for k, v in self._perm_cache.items() if k[0] != g}  # keep one epoch per group
            rng = np.random.default_rng([self.seed, group_key(g), epoch])
            self._perm_cache[key] = rng.permutation(self.n_chunks[g])
        return self._perm_cache[key]

    def _next_chunk(self, g: str) -> int:
        if self.cursor[g] >= self.n_chunks[g]:  # epoch exhausted: a fresh permutation, also seeded by the epoch
            self.epoch[g] += 1
            self.cursor[g] = 0
        chunk = int(self._permutation(g, self.epoch[g])[self.cursor[g]])
        self.cursor[g] += 1
        return chunk

    def draw_groups(self, proportions, batch_size: int, exact: bool = False, slots: str = "balanced") -> np.ndarray:
        """Group index of each sequence of the next batch (advances the batch counter). ``slots`` picks the rule for
        an exact batch's leftover slots (``balanced`` or ``lowest_index``, see the module docstring)."""
        p = check_proportions(proportions, len(self.groups), self.groups)
        u = np.random.default_rng([self.seed, self._DRAW_STREAM, self.batches_drawn]).random(batch_size)
        self.batches_drawn += 1
        if exact:
            if slots == "balanced":
                key = mixture_key(p)
                counts, owed = balanced_counts(p, batch_size, self.owed_slots.get(key))
                self.owed_slots[key] = owed.tolist()
            elif slots == "lowest_index":
                counts = largest_remainder_counts(p, batch_size)
            else:
                raise ValueError(f"unknown slot rule {slots!r}; choose one of {SLOT_RULES}")
            # Which sequence slot gets which group is irrelevant to the gradient; keep the order deterministic.
            return np.repeat(np.arange(len(p)), counts)
        cdf = np.cumsum(p)
        idx = np.searchsorted(cdf / cdf[-1], u, side="right")
        # Float round-off can push u past the last boundary; clamp to the last group with positive mass.
        return np.minimum(idx, np.flatnonzero(p > 0)[-1])

    def next_batch(self, proportions, batch_size: int, exact: bool = False, slots: str = "balanced") -> Batch:
        groups = self.draw_groups(proportions, batch_size, exact, slots)
        T = self.context_length
        out = np.empty((batch_size, T + 1), dtype=np.int64)
        for row, gi in enumerate(groups):
            g = self.groups[gi]
            start = self._next_chunk(g) * T
            out[row] = self.streams[g][start:start + T + 1]
        return Batch(torch.from_numpy(out), torch.from_numpy(groups.astype(np.int64)))


def eval_windows(tokens: np.ndarray, context_length: int, max_sequences: int = 0, seed: int | None = None) -> torch.Tensor:
    """Non-overlapping evaluation windows of ``context_length + 1`` tokens.

    With ``max_sequences`` > 0 a fixed subset is taken: evenly spaced when ``seed`` is None, else a seeded random
    subset. Evaluation data must not depend on the run seed, so every run is scored on the same tokens.
    """
    T = context_length
    n = (len(tokens) - 1) // T
    if n < 1:
        raise ValueError(f"evaluation split has {len(tokens)} tokens, fewer than one window of {T + 1}")
    idx = np.arange(n)
    if max_sequences and max_sequences < n:
        if seed is None:
            idx = np.unique(np.linspace(0, n - 1, max_sequences).round().astype(np.int64))
        else:
            idx = np.sort(np.random.default_rng(seed).choice(n, size=max_sequences, replace=False))
    out = np.stack([np.asarray(tokens[i * T:i * T + T + 1], dtype=np.int64) for i in idx])
    return torch.from_numpy(out)


def n_windows(n_tokens: int, context_length: int) -> int:
    return max(0, math.floor((n_tokens - 1) / context_length))
