"""GPT-NeoX (Pythia-style) decoder from ``transformers``, randomly initialised from a size preset."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import ConfigError


@dataclass(frozen=True)
class Preset:
    hidden_size: int
    layers: int
    heads: int
    tie_embeddings: bool
    """Tied input/output embeddings keep tiny models small (the vocabulary would otherwise dominate the count);
    Pythia itself unties them."""


PRESETS: dict[str, Preset] = {
    "tiny": Preset(32, 1, 2, True),  # unit tests only
    "300k": Preset(64, 2, 2, True),  # smoke and quick profiles: a pipeline demonstration in minutes
    "1m": Preset(128, 2, 4, True),
    "4m": Preset(256, 4, 4, True),
    "20m": Preset(512, 6, 8, True),
    "pythia-160m": Preset(768, 12, 12, False),  # the paper's model
}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device='cuda' but CUDA is not available on this machine")
    return torch.device(name)


def build_model(preset: str, vocab_size: int, context_length: int, seed: int, eos_token_id: int = 0,
                pad_token_id: int | None = None):
    """A freshly initialised GPTNeoXForCausalLM. The initialisation depends on ``seed`` alone."""
    # Lazy: transformers takes seconds to import, and every module that only reads configs or results imports this one.
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of {list(PRESETS)}")
    p = PRESETS[preset]
    config = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=p.hidden_size,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        intermediate_size=4 * p.hidden_size,
        max_position_embeddings=max(context_length, 2048 if preset == "pythia-160m" else context_length),
        use_parallel_residual=True,
        tie_word_embeddings=p.tie_embeddings,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        use_cache=False,
    )
    # sdpa: PyTorch's fused attention (Flash kernels on CUDA where available); no flash-attn build needed.
    config._attn_implementation = "sdpa"
    # Seed a private generator state for the init only, so the global RNG stream is not disturbed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(config)
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def preset_parameters(preset: str, vocab_size: int) -> int:
    """Parameters of ``build_model(preset, vocab_size, ...)`` without building it (the scale study's x-axis, cheap
    for ``pythia-160m`` too). With hidden size d, L layers and vocabulary V: the input embedding V·d; per layer two
    LayerNorms (4d), the fused QKV projection (3d² + 3d), the attention output (d² + d) and the 4d-wide MLP
    (8d² + 5d), i.e. 12d² + 13d; the final LayerNorm (2d); and an untied output embedding V·d (rotary embeddings hold
    no parameters). Tested against a built model."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of {list(PRESETS)}")
    p = PRESETS[preset]
    d = p.hidden_size
    return vocab_size * d * (1 if p.tie_embeddings else 2) + p.layers * (12 * d * d + 13 * d) + 2 * d


def preset_flops_per_token(preset: str, vocab_size: int, context_length: int) -> float:
    """``flops_per_token`` of the model ``build_model(preset, vocab_size, context_length, ...)`` would build, without
    building it: from ``preset_parameters``, the input embedding left out where it is untied (as there)."""
    n = preset_parameters(preset, vocab_size)  # raises for an unknown preset
    p = PRESETS[preset]
    if not p.tie_embeddings:
        n -= vocab_size * p.hidden_size
    return _training_flops(n, p.layers, p.hidden_size, context_length)


def flops_per_token(model, context_length: int) -> float:
    """Training FLOPs per token: 6N for the weights (forward + backward) plus the attention score/value matmuls,
    12 * layers * hidden * context (the PaLM appendix estimate). N excludes the input embedding lookup, which is a
    gather, not a matmul; with tied embeddings the matrix is still used once, by the LM head."""
    cfg = model.config
    n = count_parameters(model)
    if not cfg.tie_word_embeddings:
        n -= model.get_input_embeddings().weight.numel()
    return _training_flops(n, cfg.num_hidden_layers, cfg.hidden_size, context_length)


def _training_flops(matmul_parameters: int, layers: int, hidden: int, context_length: int) -> float:
    """The estimate both counts above use: 6N + 12 * layers * hidden * context per token."""
    return 6.0 * matmul_parameters + 12.0 * layers * hidden * context_length


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy of ``hidden @ weight.T`` without materialising the [tokens, vocab] logits.

    With a 4k vocabulary and d = 128 the LM head is over half of a small model's FLOPs, and its softmax streams a
    [2048, 4096] fp32 tensor (32 MB) through memory several times per step. Here logits exist one chunk of rows at a
    time (cache-sized), only the log-sum-exp is kept, and the backward pass recomputes each chunk's logits: one
    extra head matmul traded for far less memory traffic. Forward losses equal ``F.cross_entropy`` up to rounding.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
        n = hidden.shape[0]
        loss = torch.empty(n, dtype=hidden.dtype, device=hidden.device)
        lse = torch.empty(n, dtype=hidden.dtype, device=hidden.device)
        for s in range(0, n, chunk):
            logits = hidden[s:s + chunk] @ weight.t()
            lse[s:s + chunk] = torch.logsumexp(logits, dim=1)
            loss[s:s + chunk] = lse[s:s + chunk] - logits.gather(1, labels[s:s + chunk, None]).squeeze(1)
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.chunk = chunk
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        hidden, weight, labels, lse = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for s in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[s:s + ctx.chunk]
            # d loss_n / d logits_n = softmax(logits_n) - onehot(label_n), scaled by the incoming gradient
            g = (h @ weight.t()).sub_(lse[s:s + ctx.chunk, None]).exp_()
            g[torch.arange(g.shape[0], device=g.device), labels[s:s + ctx.chunk]] -= 1.0
            g.mul_(grad_loss[s:s + ctx.chunk, None])
            if grad_hidden is not None:
                grad_hidden[s:s + ctx.chunk] = g @ weight
            if grad_weight is not None:
                grad_weight.addmm_(g.t(), h)
        return grad_hidden, grad_weight, None, None


FUSED_LOSS_ATTR = "aioli_fused_loss"


def use_fused_loss(model, enabled: bool = True):
    """Mark ``model`` so that :func:`sequence_losses` computes its losses with :func:`token_losses`."""
    setattr(model, FUSED_LOSS_ATTR, bool(enabled))
    return model


def token_losses(model, inputs: torch.Tensor, labels: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Next-token losses [batch, time] of a GPT-NeoX model through :class:`ChunkedLinearCrossEntropy`."""
    hidden = model.gpt_neox(input_ids=inputs).last_hidden_state
    flat = ChunkedLinearCrossEntropy.apply(hidden.flatten(0, 1), model.get_output_embeddings().weight,
                                           labels.flatten(), chunk)
    return flat.view(labels.shape)


def sequence_losses(model, tokens: torch.Tensor, autocast: bool) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence, [batch]. A model marked by ``use_fused_loss`` (the run's
    ``train.fused_loss``) goes through the chunked LM-head loss unless bf16 autocast is on."""
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    if getattr(model, FUSED_LOSS_ATTR, False) and not autocast:
        return token_losses(model, inputs, labels).mean(dim=1)
    with torch.autocast(device_type=tokens.device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=inputs).logits
    loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none")
    return loss.view(labels.shape).mean(dim=1)
