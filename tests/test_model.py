import pytest
import torch

from aioli_repro.errors import ConfigError
from aioli_repro.model import PRESETS, build_model, count_parameters, flops_per_token, resolve_device


def test_same_seed_same_init_and_presets_grow():
    a, b, c = (build_model("tiny", 512, 32, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
    sizes = [count_parameters(build_model(p, 4096, 64, 0)) for p in ("tiny", "1m", "4m")]
    assert sizes == sorted(sizes) and 0.8e6 < sizes[1] < 1.2e6


def test_building_does_not_disturb_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("tiny", 512, 32, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_pythia_preset_matches_the_paper_model():
    assert PRESETS["pythia-160m"].hidden_size == 768 and PRESETS["pythia-160m"].layers == 12


def test_flops_and_errors():
    m = build_model("tiny", 512, 32, 0)
    assert flops_per_token(m, 32) > 6 * 0.9 * count_parameters(m)
    with pytest.raises(ConfigError, match="unknown model preset"):
        build_model("huge", 512, 32, 0)
    assert resolve_device("cpu").type == "cpu"


def test_chunked_linear_cross_entropy_matches_the_materialised_logits():
    """Losses and every parameter's gradient equal F.cross_entropy's, for chunks that do and do not divide the
    number of tokens, under non-uniform incoming gradients (DoReMi-style per-sequence weights)."""
    from aioli_repro.model import token_losses

    model = build_model("tiny", 97, 16, seed=0)
    tokens = torch.randint(0, 97, (3, 17), generator=torch.Generator().manual_seed(1))
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    w = torch.tensor([0.2, 1.0, 3.0])[:, None]

    def grads(loss):
        model.zero_grad()
        (loss * w).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    ref = torch.nn.functional.cross_entropy(model(input_ids=inputs).logits.flatten(0, 1), labels.flatten(),
                                            reduction="none").view(labels.shape)
    g_ref = grads(ref)
    for chunk in (7, 48, 1000):
        got = token_losses(model, inputs, labels, chunk=chunk)
        assert torch.allclose(got, ref, atol=1e-5)
        for a, b in zip(grads(got), g_ref):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
