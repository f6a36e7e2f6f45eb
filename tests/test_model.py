import pytest
import torch

from aioli_repro.config import ConfigError
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
