"""A world whose losses follow the linear dynamic law exactly, for driving policies without a model."""

import numpy as np

from aioli_repro.policies.base import Observation
from aioli_repro.sampler import MixtureSampler


class LinearWorld:
    """Losses that follow the linear dynamic law exactly: each step lowers L by A·(the mixture its batch held)
    (+ noise). Batches come from the real sampler, so exact segments hold what training would hold; i.i.d. segments
    are taken at their expected mixture p (their draws do not enter any estimate)."""

    def __init__(self, A, L0, batch_size, noise=0.0, seed=0):
        self.A, self.L, self.B, self.noise = np.asarray(A), np.asarray(L0, dtype=float), batch_size, noise
        self.rng = np.random.default_rng(seed)
        m = len(self.L)
        self.sampler = MixtureSampler({f"g{i}": np.zeros(64, dtype=np.uint16) for i in range(m)}, 8, seed)
        self.exact_counts: list[tuple[list[float], np.ndarray]] = []  # (target p, counts) of every exact batch

    def drive(self, policy, total_steps, start=0):
        step = start
        while step < total_steps:
            seg = policy.next_segment(step)
            counts = np.zeros(len(self.L), dtype=np.int64)
            for _ in range(seg.steps):
                if seg.exact:
                    c = np.bincount(self.sampler.draw_groups(seg.proportions, self.B, True, seg.slots),
                                    minlength=len(self.L))
                    self.exact_counts.append((seg.proportions, c))
                    p = c / self.B
                else:
                    c, p = np.asarray(seg.proportions) * self.B, np.asarray(seg.proportions)
                counts = counts + c
                self.L = self.L - self.A @ p + self.noise * self.rng.normal(size=len(self.L))
            step += seg.steps
            if seg.evaluate:
                policy.observe(Observation(step, self.L.copy(), counts))
        return policy
