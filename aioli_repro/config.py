"""Typed configuration for one training run.

Every knob lives in a dataclass field with a docstring, so ``--help``, notebooks and the run cache all read the
same source of truth. A run is identified by the hash of its *resolved* config (see :func:`run_id`), which is why
everything that changes the numbers must be a field here and nothing that does not (progress bars, output folders)
may be.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .model import PRESETS
from .policies import REGISTRY

# Bump when a change to the code changes results for an unchanged config: old cached runs then stop matching.
CODE_VERSION = 1


@dataclass
class DataConfig:
    """Which text, which groups, how it is tokenised and cut into sequences."""

    groups: tuple[str, ...] = ("code", "books")
    """Names of the data groups to mix, in the order proportions refer to (p_1..p_m). A name may carry a cap on the
    group's training tokens, ``name@tokens`` (e.g. ``books@300000``): the run trains on the first ``tokens`` tokens
    of the group's training split, repeated for as many epochs as it draws (a data-constrained group), and evaluates
    on the group's whole validation and test splits. The cap is part of the name, so a capped group's runs have their
    own run ids."""
    corpus: str = "embedded"
    """``embedded`` (the offline corpus shipped in ``data/corpus``), ``slimpajama`` (DKYoon/SlimPajama-6B through
    ``datasets``; needs network once), or a path to a folder holding a corpus ``manifest.json``."""
    tokenizer: str = "embedded"
    """``embedded`` (the byte-level BPE shipped in ``data/tokenizer``), ``pythia`` (EleutherAI/pythia-160m; needs it
    cached or network), or a path to a saved tokenizer folder."""
    context_length: int = 256
    """Tokens per training sequence (the model sees ``context_length`` inputs and predicts as many next tokens)."""
    split_seed: int = 0
    """Seed of the document-level train/validation/test split. Fixed across run seeds, so every run of a study is
    evaluated on the same documents."""
    val_fraction: float = 0.05
    """Share of each group's text (by bytes) held out for validation (used to choose and adapt mixtures)."""
    test_fraction: float = 0.05
    """Share of each group's text (by bytes) held out for the final test perplexity."""


@dataclass
class ModelConfig:
    """The GPT-NeoX (Pythia-style) decoder, built from a size preset and randomly initialised."""

    preset: str = "1m"
    """Size preset, see :data:`aioli_repro.model.PRESETS` (``tiny``, ``1m``, ``4m``, ``20m``, ``pythia-160m``)."""


@dataclass
class TrainConfig:
    """Optimisation and evaluation schedule of the one training loop."""

    steps: int = 300
    """Total optimizer steps S of the run (every step of every method counts, LearnParams steps included)."""
    batch_size: int = 8
    """Sequences per optimizer step."""
    micro_batch_size: int = 8
    """Sequences per forward/backward pass; gradients are accumulated over batch_size / micro_batch_size passes.
    On CPU keep micro_batch_size x context_length at or below about 4k tokens (larger micro-batches lose
    throughput because the logits leave the caches)."""
    lr: float = 3e-3
    """Peak learning rate reached at the end of warm-up."""
    min_lr: float = 3e-4
    """Floor of the cosine decay, reached at the last step (the paper: 5e-4 -> 1e-4)."""
    warmup_steps: int = 30
    """Linear warm-up steps from 0 to ``lr``."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices (not on biases and norms)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Global gradient-norm clipping threshold."""
    seed: int = 0
    """Run seed: sets the model initialisation and each group's data order. The same seed in two runs of different
    methods gives the same initialisation and per-group data order (common random numbers)."""
    eval_every: int = 100
    """Steps between periodic validation evaluations (logged in metrics.jsonl); 0 disables them."""
    eval_sequences: int = 16
    """Validation sequences per group in the fixed validation sample used by periodic evaluations and by the
    methods that read validation losses (Aioli's LearnParams, Skill-it). Drawn once from the validation split,
    identical for every run."""
    test_max_sequences: int = 0
    """Cap on test sequences per group for the final evaluation; 0 evaluates the whole test split."""
    eval_batch_size: int = 32
    """Sequences per forward pass during evaluation (no gradients, so larger than training micro-batches)."""
    checkpoint_every: int = 100
    """Steps between resumable checkpoints (model, optimizer, sampler, method state); 0 disables them."""
    device: str = "auto"
    """``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda`` or ``mps``."""
    stop_at: int = 0
    """End the run after this many steps (0: at ``steps``). The learning-rate schedule still spans ``steps``: a
    child branched from a parent trains a short horizon on the parent's schedule."""
    final_eval: str = "val+test"
    """Splits scored at the end: ``val+test`` or ``val`` (branched children only need validation)."""
    compile: bool = False
    """``torch.compile`` the model for training and evaluation (the ``paper`` profile turns it on for CUDA). Off by
    default: on CPU it gave no reliable gain and Inductor compiles for tens of seconds. Backend and mode come from the
    environment (``AIOLI_COMPILE_BACKEND``, default ``inductor``; ``AIOLI_COMPILE_MODE``, default none), not from the
    config. A compiled run has its own run id (fused kernels round differently)."""
    fused_loss: bool = False
    """Compute the LM head and cross-entropy chunk by chunk (``model.ChunkedLinearCrossEntropy``) instead of
    materialising [tokens, vocab] logits: same losses up to rounding, faster on CPU for small models whose head
    dominates (measured by ``python -m aioli_repro bench``). Ignored under bf16 autocast and ``compile``. A run with
    it has its own run id, so runs cached without it are never mixed with runs computed with it."""


@dataclass
class RunConfig:
    """Everything that determines one training run's numbers."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: str = "static"
    """Mixing method (a policy name from :mod:`aioli_repro.policies`)."""
    method_config: dict[str, Any] = field(default_factory=dict)
    """The method's hyperparameters (its own typed config, stored as a plain dict)."""
    name: str = ""
    """Human-readable label used in the run directory name; not part of the run's identity."""
    branch: dict[str, Any] | None = None
    """Start from a parent run's saved state instead of from scratch: ``{"parent": <run id>, "step": t}`` (the
    dynamic-law and fidelity analyses branch children off a parent trajectory)."""

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)
        data = DataConfig(**{**d.pop("data", {})})
        data.groups = tuple(data.groups)
        model = ModelConfig(**d.pop("model", {}))
        train = TrainConfig(**d.pop("train", {}))
        return cls(data=data, model=model, train=train, **d)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid value."""
        validate_groups(self.data.groups)
        t = self.train
        for name in ("steps", "batch_size", "micro_batch_size", "eval_sequences", "eval_batch_size"):
            if int(getattr(t, name)) < 1:
                raise ConfigError(f"train.{name} must be a positive integer, got {getattr(t, name)!r}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "test_max_sequences"):
            if int(getattr(t, name)) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(t, name)!r}")
        if t.batch_size % t.micro_batch_size:
            raise ConfigError(
                f"train.batch_size ({t.batch_size}) must be a multiple of train.micro_batch_size ({t.micro_batch_size})"
            )
        if not (t.lr > 0 and math.isfinite(t.lr)):
            raise ConfigError(f"train.lr must be a positive number, got {t.lr!r}")
        if not (0 <= t.min_lr <= t.lr):
            raise ConfigError(f"train.min_lr must lie in [0, lr={t.lr}], got {t.min_lr!r}")
        if not 0 <= t.stop_at <= t.steps:
            raise ConfigError(f"train.stop_at must lie in [0, steps={t.steps}], got {t.stop_at}")
        for name in ("compile", "fused_loss"):
            if not isinstance(getattr(t, name), bool):
                raise ConfigError(f"train.{name} must be true or false, got {getattr(t, name)!r}")
        if t.final_eval not in ("val+test", "val"):
            raise ConfigError(f"train.final_eval must be 'val+test' or 'val', got {t.final_eval!r}")
        if self.branch is not None:
            if set(self.branch) != {"parent", "step"} or not 0 < int(self.branch["step"]) < (t.stop_at or t.steps):
                raise ConfigError(f"branch must be {{'parent': run id, 'step': t}} with 0 < t < the run's last step; "
                                  f"got {self.branch}")
        if t.device not in ("auto", "cpu", "cuda", "mps"):
            raise ConfigError(f"train.device must be auto, cpu, cuda or mps, got {t.device!r}")
        if self.model.preset not in PRESETS:
            raise ConfigError(f"unknown model preset {self.model.preset!r}; choose one of {list(PRESETS)}")
        if self.data.context_length < 8:
            raise ConfigError(f"data.context_length must be >= 8, got {self.data.context_length}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self.data, name)
            if not (0 < v < 0.5):
                raise ConfigError(f"data.{name} must lie in (0, 0.5), got {v!r}")


def validate_groups(groups) -> tuple[str, ...]:
    groups = tuple(groups)
    if len(groups) < 2:
        raise ConfigError(f"a mixture needs at least two groups, got {list(groups)}")
    bases = [split_group(g)[0] for g in groups]
    dupes = sorted({b for b in bases if bases.count(b) > 1})
    if dupes:
        raise ConfigError(f"duplicate group names: {dupes} (a capped group, name@tokens, counts as its name)")
    return groups


CAP_SEPARATOR = "@"


def split_group(group: str) -> tuple[str, int | None]:
    """``"books@300000"`` -> ``("books", 300000)``; an uncapped name -> ``(name, None)`` (``DataConfig.groups``)."""
    base, sep, cap = str(group).partition(CAP_SEPARATOR)
    if not sep:
        return base, None
    if not base or not cap.isdigit() or int(cap) < 1:
        raise ConfigError(f"a capped group is name@tokens with a positive whole number of tokens, got {group!r}")
    return base, int(cap)


def base_groups(groups) -> tuple[str, ...]:
    """The corpus groups behind ``groups``, caps dropped: what a text source must hold."""
    return tuple(split_group(g)[0] for g in groups)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):  # numpy scalars and arrays
        return x.tolist()
    return x


def canonical_json(obj: Any) -> str:
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"))


# Fields added after runs were cached: left out of the run id while at their default, so existing runs keep their ids.
_ID_OMIT_AT_DEFAULT: dict[str, dict[str, Any]] = {"train": {"compile": False, "fused_loss": False}}


def run_id(cfg: RunConfig, extra: dict[str, Any] | None = None) -> str:
    """Hash of everything that determines a run's result: the config (minus its display name), the code version,
    and ``extra`` (content fingerprints of the corpus and tokenizer, resolved device type)."""
    d = cfg.to_dict()
    d.pop("name", None)
    if cfg.method in REGISTRY:
        d["method_config"] = REGISTRY[cfg.method].identity_config(d["method_config"], cfg.data.groups,
                                                                  cfg.train.batch_size)
    for section, defaults in _ID_OMIT_AT_DEFAULT.items():
        for key, default in defaults.items():
            if key in d[section] and d[section][key] == default:
                del d[section][key]
    payload = {"config": d, "code_version": CODE_VERSION, "extra": extra or {}}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()
