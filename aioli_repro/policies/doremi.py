"""DoReMi proxy: reweight per-group losses by their excess over a reference model (Group DRO).

Pipeline: reference model = the stratified run's final model; the proxy run (this policy) samples stratified
batches and trains on Σ_g w_g·ℓ_g, updating w every step from the clipped excess losses:

    excess_g = max(ℓ_g(proxy) - ℓ_g(reference), 0)      (a group absent from the batch reuses its last value)
    log w ← log w + μ·excess;  w ← softmax;  w ← (1 - s)·w + s/m

The *average* w over the proxy run becomes the static mixture of the final run. In LMO terms DoReMi uses a diagonal
A^t with A_ii = excess_i (recorded unclipped, averaged over the last few steps).

Gradient accumulation is exact here: the loop computes every micro-batch's losses before the weights are updated
(a no-grad pass when there are several micro-batches), so the weights see the whole batch and the optimizer steps
once per batch. The released code stepped the optimizer on every micro-batch and dropped half the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model

from ..errors import ConfigError
from ..model import sequence_losses
from .base import ProxyWeightsPolicy, register, softmax


def group_means(values: np.ndarray, groups: np.ndarray, m: int) -> np.ndarray:
    """Mean of ``values`` per group (NaN for groups absent from the batch)."""
    sums = np.bincount(groups, weights=values, minlength=m)
    counts = np.bincount(groups, minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def doremi_update(log_w: np.ndarray, excess: np.ndarray, mu: float, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """One DoReMi step: returns (new log-weights, smoothed weights)."""
    log_w = log_w + mu * excess
    return log_w, (1 - smoothing) * softmax(log_w) + smoothing / len(log_w)


def recent_excess(recent_raw, fallback) -> np.ndarray:
    """The diagonal of DoReMi's recorded A^t: each group's mean raw excess loss (proxy - reference) over the recent
    batches (NaN where a group was absent from a batch). A group absent from all of them, as one with a near-zero
    weight can be, keeps ``fallback`` (the excess the update last used for it) instead of becoming NaN."""
    fallback = np.asarray(fallback, dtype=float)
    R = np.array(recent_raw, dtype=float).reshape(-1, len(fallback))
    seen = ~np.isnan(R)
    n = seen.sum(axis=0)
    mean = np.where(seen, R, 0.0).sum(axis=0) / np.maximum(n, 1)
    return np.where(n > 0, mean, fallback)


@register
class DoReMiProxyPolicy(ProxyWeightsPolicy):
    name = "doremi_proxy"
    needs_batch_losses = True

    @dataclass
    class Config:
        reference_model: str = ""
        """Path to the reference model's weights (safetensors), same architecture: the stratified run's final model.
        A relative path is read from the runs directory (``<run dir>/model.safetensors``, as ``run_method`` writes
        it), so the proxy's run id, and its committed cached result, do not depend on where the repository lives."""
        mu: float = 0.01
        """μ, the step size of the log-weight update (released scripts: 0.01)."""
        smoothing: float = 1e-3
        """s, mixing of the weights with uniform after each update."""
        record_every: int = 0
        """Steps between recorded A^t = diag(excess) entries in the history; 0 = 20 records per run."""

    def __init__(self, config, groups, total_steps, seed):
        super().__init__(config, groups, total_steps, seed)
        if not config.reference_model:
            raise ConfigError("doremi_proxy needs reference_model: the weights of the stratified reference run")
        if config.mu <= 0 or not 0 <= config.smoothing < 1:
            raise ConfigError(f"doremi mu must be > 0 and smoothing in [0, 1); got {config.mu}, {config.smoothing}")
        self.last_excess = np.zeros(self.m)
        self.recent_raw: list[list[float]] = []

    def setup(self, ctx) -> None:
        super().setup(ctx)
        path = Path(self.config.reference_model)
        if not path.is_absolute() and ctx.runs_dir is not None:
            path = Path(ctx.runs_dir) / path
        if not path.is_file():
            raise ConfigError(f"doremi_proxy: reference model {path} does not exist (train the stratified reference "
                              "run with keep_model=True first)")
        self.reference = ctx.model_factory()
        load_model(self.reference, str(path))
        self.reference.to(ctx.device).eval()

    @torch.no_grad()
    def _reference_losses(self, tokens: torch.Tensor) -> np.ndarray:
        out = []
        for s in range(0, len(tokens), self.ctx.eval_batch_size):
            chunk = tokens[s:s + self.ctx.eval_batch_size].to(self.ctx.device)
            out.append(sequence_losses(self.reference, chunk, self.ctx.autocast).float().cpu())
        return torch.cat(out).numpy().astype(float)

    def loss_weights(self, step, batch, seq_losses):
        groups = batch.groups.numpy()
        proxy = group_means(seq_losses.numpy().astype(float), groups, self.m)
        ref = group_means(self._reference_losses(batch.tokens), groups, self.m)
        raw = proxy - ref
        present = ~np.isnan(raw)
        excess = np.where(present, np.maximum(np.nan_to_num(raw), 0.0), self.last_excess)
        self.last_excess = excess
        self._accept(*doremi_update(self.log_w, excess, self.config.mu, self.config.smoothing))
        self.recent_raw = (self.recent_raw + [np.where(present, raw, np.nan).tolist()])[-5:]
        if (step + 1) % self.record_every == 0:
            self.record(step + 1, self.w, np.diag(recent_excess(self.recent_raw, self.last_excess)))
        return self.w

    def state_dict(self):
        return {**super().state_dict(), "last_excess": self.last_excess.tolist(), "recent_raw": self.recent_raw}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.last_excess, self.recent_raw = np.array(state["last_excess"]), state["recent_raw"]
