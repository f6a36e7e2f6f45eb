"""The one interface every data-mixing method implements.

The training loop owns the model, the optimizer and the data; a *policy* only decides what to train on next. It does
so in *segments*: "train ``steps`` steps on proportions p (i.i.d. or with exact per-batch counts), then, if asked,
evaluate the fixed validation sample and tell me the per-group losses". Stratified and static mixing are one
segment; Skill-it is a segment per round; Aioli's LearnParams is a run of short exact-count segments, each followed
by an evaluation, inside the same run. A policy may also reweight per-group training losses (the DoReMi and DoGE
proxies), or learn from the training losses of the batches it chose (ODM, through ``observe_batch``). Policies
record, per round, the proportions they used and the matrix A^t they implied, because the fidelity analysis compares
those matrices with the truth.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from ..sampler import check_proportions


@dataclass
class Segment:
    """A stretch of training the loop carries out for a policy."""

    proportions: list[float]
    """Mixture p over the run's groups for every step of the segment."""
    steps: int
    """Optimizer steps to take (0 is allowed: an evaluation-only segment)."""
    exact: bool = False
    """Exact per-batch group counts (floor(p·B) each, plus the leftover slots) instead of i.i.d. group draws."""
    slots: str = "balanced"
    """Where an exact batch's leftover slots go: ``balanced`` (tracks p over the run's batches of this mixture) or
    ``lowest_index`` (the rule before that fix; see :mod:`aioli_repro.sampler`)."""
    evaluate: bool = False
    """After the segment, evaluate the validation sample and pass the per-group losses to ``policy.observe``."""
    kind: str = "train"
    """``train`` or ``learn_params``: lets the loop account for the share of steps spent estimating A^t."""
    eval_sequences: int | None = None
    """Evaluate only the first n sequences of each group's validation sample (None: all of it). Aioli's LearnParams
    evaluates after every short interval, so a smaller sample keeps its overhead small."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PolicyContext:
    """What the loop lends a policy at setup: sizes, the device, and (for methods that need them) the live model, a
    factory of fresh models of the same architecture, and the fixed validation sample."""

    batch_size: int
    device: Any = None
    model: Any = None
    model_factory: Any = None
    val_sample: dict | None = None
    eval_batch_size: int = 32
    autocast: bool = False
    runs_dir: Any = None
    """The runs directory of this run: a relative path in a policy's config (e.g. DoReMi's reference model) is read
    from there, so that a run's identity does not depend on where the repository lives."""


@dataclass
class Observation:
    """What the loop tells a policy after an evaluating segment."""

    step: int
    val_losses: np.ndarray
    """L^t: mean token loss of each group on the fixed validation sample."""
    group_counts: np.ndarray | None = None
    """Training sequences of each group in the segment's batches (what the batches really held). None where the
    caller does not know it."""


class MixingPolicy:
    """Base class. Subclasses set ``name``, a ``Config`` dataclass and implement ``next_segment``."""

    name: ClassVar[str] = ""

    @dataclass
    class Config:
        pass

    def __init__(self, config: Any, groups: tuple[str, ...], total_steps: int, seed: int):
        self.config, self.groups, self.total_steps, self.seed = config, tuple(groups), int(total_steps), int(seed)
        self.m = len(self.groups)
        self.history: list[dict[str, Any]] = []
        """Per round: {"step", "proportions", "A" (m x m list or None), ...}; saved in the run's result."""

    @classmethod
    def identity_config(cls, values: dict[str, Any], groups, batch_size: int) -> dict[str, Any]:
        """The method config as it enters the run id (``config.run_id``). A method whose behaviour changes for an
        unchanged config adds the option that selects the new behaviour here, so the cache never serves an old
        result for new code; runs the change cannot affect keep their ids."""
        return dict(values)

    needs_batch_losses: ClassVar[bool] = False
    """True if ``loss_weights`` reads the batch's per-sequence losses (computed before the backward pass)."""

    # ---------------------------------------------------------------- decisions
    def setup(self, ctx: PolicyContext) -> None:
        """Called once by the loop after the model is built, before any step (and before a resume)."""
        self.ctx = ctx

    def next_segment(self, step: int) -> Segment:
        raise NotImplementedError

    def observe(self, obs: Observation) -> None:
        """Called after every segment with ``evaluate=True``."""

    def loss_weights(self, step: int, batch, seq_losses) -> np.ndarray | None:
        """Per-group weights w for the training loss sum_g w_g * (mean loss of group g in the batch), or None for
        the plain mean over sequences. ``seq_losses`` (detached, [batch]) is given when ``needs_batch_losses``."""
        return None

    def observe_batch(self, step: int, batch, seq_losses) -> None:
        """Called after every optimizer step's forward/backward with the batch just trained (its group ids) and its
        per-sequence training losses (detached, [batch]), at no extra cost: they are the losses the step computed.
        ``step`` is the index of that step (0-based). Online methods that learn from the training loss (ODM) update
        here; the next ``next_segment`` can then use the new proportions."""

    def compute_gradients(self, step: int, batch, lr: float):
        """Methods that build the update from several gradients (DoGE) compute ``.grad`` themselves here and return
        the batch's per-sequence losses; None lets the loop do the usual forward/backward."""
        return None

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])

    def summary(self) -> dict[str, Any]:
        """What goes into the run's result.json."""
        return {"method": self.name, "history": self.history}

    # ---------------------------------------------------------------- helpers
    def uniform(self) -> np.ndarray:
        return np.full(self.m, 1.0 / self.m)

    def record(self, step: int, proportions, A=None, **extra) -> None:
        self.history.append({"step": int(step), "proportions": [float(x) for x in proportions],
                             "A": None if A is None else np.asarray(A, dtype=float).tolist(), **extra})


def softmax(logits) -> np.ndarray:
    """Numerically stable softmax: every exponentiated-weights update of the paper's methods ends in one."""
    z = np.asarray(logits, dtype=float)
    w = np.exp(z - z.max())
    return w / w.sum()


class ProxyWeightsPolicy(MixingPolicy):
    """Shared by the DoReMi and DoGE proxies: stratified batches, group weights w updated every step in log space,
    and their average over the run, which becomes the static mixture of the method's final run."""

    def __init__(self, config, groups, total_steps, seed):
        super().__init__(config, groups, total_steps, seed)
        self.record_every = config.record_every or max(1, total_steps // 20)
        self.log_w = np.log(self.uniform())
        self.w = self.uniform()
        self.weight_sum = np.zeros(self.m)
        self.updates = 0

    def next_segment(self, step: int) -> Segment:
        if not self.history:
            self.record(step, self.w, None)
        return Segment(self.uniform().tolist(), self.total_steps - step)  # the proxy samples stratified batches

    def _accept(self, log_w: np.ndarray, w: np.ndarray) -> np.ndarray:
        self.log_w, self.w = log_w, w
        self.weight_sum += w
        self.updates += 1
        return w

    @property
    def average_weights(self) -> np.ndarray:
        return self.weight_sum / max(self.updates, 1)

    def state_dict(self):
        return {**super().state_dict(), "log_w": self.log_w.tolist(), "w": self.w.tolist(),
                "weight_sum": self.weight_sum.tolist(), "updates": self.updates}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.log_w, self.w = np.array(state["log_w"]), np.array(state["w"])
        self.weight_sum, self.updates = np.array(state["weight_sum"]), state["updates"]

    def summary(self):
        return {**super().summary(), "average_weights": self.average_weights.tolist()}


REGISTRY: dict[str, type[MixingPolicy]] = {}


def register(cls: type[MixingPolicy]) -> type[MixingPolicy]:
    REGISTRY[cls.name] = cls
    return cls


def make_config(method: str, values: dict[str, Any] | None = None):
    """Build a method's typed config from a plain dict, rejecting unknown keys and wrong types by name."""
    if method not in REGISTRY:
        raise ConfigError(f"unknown method {method!r}; choose one of {sorted(REGISTRY)}")
    cls = REGISTRY[method].Config
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for method {method!r}; valid: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if not _matches(value, hints[name]):
            raise ConfigError(f"{method} option {name} must be {_describe(hints[name])}, got {value!r}")
    return cls(**values)


def _matches(value: Any, hint: Any) -> bool:
    """Does a JSON-like value fit a config field's type (int, float, bool, str, X | None, list[...])?"""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(hint, str(hint))


def make_policy(method: str, values: dict[str, Any] | None, groups, total_steps: int, seed: int) -> MixingPolicy:
    config = make_config(method, values)
    policy = REGISTRY[method](config, tuple(groups), total_steps, seed)
    return policy


@register
class StaticPolicy(MixingPolicy):
    """Fixed proportions for the whole run: stratified (uniform) when none are given, else any p."""

    name = "static"

    @dataclass
    class Config:
        proportions: list[float] | None = None
        """Fixed mixture p (normalised); None means uniform, i.e. stratified sampling."""
        prior: list[float] | None = None
        """A mixture trained for the first ``prior_steps`` steps before p: the restricted-budget control, a
        method's p_init for S_init steps and then stratified, which is Aioli's schedule without Aioli."""
        prior_steps: int = 0
        """Steps trained on ``prior`` (0: none)."""

    def __init__(self, config, groups, total_steps, seed):
        super().__init__(config, groups, total_steps, seed)
        if config.proportions is None:
            self.p = self.uniform()
        else:
            self.p = check_proportions(config.proportions, self.m, self.groups)
        self.prior = None if config.prior is None else check_proportions(config.prior, self.m, self.groups)
        self.prior_steps = int(config.prior_steps)
        if not 0 <= self.prior_steps < total_steps:
            raise ConfigError(f"static prior_steps must lie in [0, total steps={total_steps}), got {self.prior_steps}")
        if (self.prior_steps > 0) != (self.prior is not None):
            raise ConfigError("static prior and prior_steps go together: give both or neither")

    def next_segment(self, step: int) -> Segment:
        if self.prior is not None and step < self.prior_steps:
            self.record(step, self.prior, phase="prior")
            return Segment(self.prior.tolist(), self.prior_steps - step)
        if not self.history or self.history[-1].get("phase") == "prior":
            self.record(step, self.p)
        return Segment(self.p.tolist(), self.total_steps - step)


@register
class StratifiedPolicy(StaticPolicy):
    """p = uniform over the groups: the paper's baseline."""

    name = "stratified"

    @dataclass
    class Config:
        pass

    def __init__(self, config, groups, total_steps, seed):
        MixingPolicy.__init__(self, config, groups, total_steps, seed)
        self.p, self.prior, self.prior_steps = self.uniform(), None, 0


