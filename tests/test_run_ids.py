"""Run ids are the result cache's keys: a refactor must leave them alone, a change of behaviour must change them.

Three guards: literal ids of a few fixed configs (a refactor that changes any id fails here; an intended change
updates ``assets/run_id_pins.json``), a re-hash of committed result-cache entries against their file names, and a
behaviour fingerprint per pinned config (the segments and estimates a policy produces in a planted linear world):
if a policy's behaviour changes while its run id does not, the cache would serve old results for new code.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from aioli_repro.config import DataConfig, ModelConfig, RunConfig, TrainConfig, run_id
from aioli_repro.policies import PolicyContext, make_policy
from aioli_repro.run_cache import cache_entries, cache_entry_id, read_cache_entry

from .linear_world import LinearWorld

ASSETS = Path(__file__).parent / "assets"
PINS = json.loads((ASSETS / "run_id_pins.json").read_text())
REPO = Path(__file__).resolve().parents[1]
EXTRA = {"corpus": "pinned-corpus", "tokenizer": "pinned-tokenizer", "device": "cpu"}  # fingerprints, fixed


def pinned_config(groups, method, method_config, steps=300) -> RunConfig:
    return RunConfig(data=DataConfig(groups=tuple(groups)), model=ModelConfig("1m"),
                     train=TrainConfig(steps=steps, batch_size=8, seed=0), method=method,
                     method_config=dict(method_config))


def behaviour(cfg: RunConfig) -> str:
    """sha256 of what the policy does in a planted linear world: every segment it asks for and its history (floats
    rounded to 9 significant digits, so BLAS round-off on another machine does not count as a change)."""
    m, t = len(cfg.data.groups), cfg.train
    policy = make_policy(cfg.method, cfg.method_config, cfg.data.groups, t.steps, t.seed)
    policy.setup(PolicyContext(batch_size=t.batch_size))
    rng = np.random.default_rng(123)
    A = rng.uniform(0, 0.01, size=(m, m)) + np.diag(rng.uniform(0.01, 0.03, size=m))
    segments = []
    ask = policy.next_segment

    def logged(step):
        seg = ask(step)
        segments.append(seg.to_dict())
        return seg

    policy.next_segment = logged
    LinearWorld(A, np.full(m, 8.0), t.batch_size, noise=1e-4, seed=5).drive(policy, t.steps)

    def rounded(x):
        if isinstance(x, float):
            return float(f"{x:.9g}")
        if isinstance(x, dict):
            return {k: rounded(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [rounded(v) for v in x]
        return x

    payload = json.dumps(rounded({"segments": segments, "summary": policy.summary()}), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _cases():
    return [pytest.param(p, id=p["name"]) for p in PINS["configs"]]


@pytest.mark.parametrize("pin", _cases())
def test_pinned_run_ids_and_behaviour(pin):
    cfg = pinned_config(pin["groups"], pin["method"], pin["method_config"])
    rid, fp = run_id(cfg, EXTRA), behaviour(cfg)
    if fp != pin["behaviour"]:
        assert rid != pin["run_id"], (
            f"{pin['name']}: the policy's behaviour changed but its run id did not, so the result cache would serve "
            "results of the old code; make the change part of the run id (a config option, "
            "MixingPolicy.identity_config, or config.CODE_VERSION)")
        pytest.fail(f"{pin['name']}: behaviour and run id changed together; if intended, update "
                    f"tests/assets/run_id_pins.json (run_id {rid}, behaviour {fp})")
    assert rid == pin["run_id"], f"{pin['name']}: the run id changed without a change of behaviour (a refactor?)"


def test_the_slot_rule_enters_the_run_id_only_where_it_changes_the_batches():
    seven = [f"g{i}" for i in range(7)]
    base = {"eta": 1.0, "lp_rounds": 2, "lp_steps": 1, "one_hot_factor": 0.75, "update_steps": 50}
    ids = {rule: run_id(pinned_config(seven, "aioli", {**base, "lp_slots": rule}), EXTRA)
           for rule in ("balanced", "lowest_index")}
    assert ids["balanced"] != ids["lowest_index"]
    assert run_id(pinned_config(seven, "aioli", base), EXTRA) == ids["balanced"]  # the default is the new rule
    assert run_id(pinned_config(seven, "aioli", {**base, "one_hot_factor": 0.5}), EXTRA) != ids["balanced"]
    two = {"eta": 0.2, "one_hot_factor": 0.625}  # 0.625·8 = 5 and 0.375·8 = 3: no leftover slot, one id
    assert run_id(pinned_config(["a", "b"], "aioli", {**two, "lp_slots": "lowest_index"}), EXTRA) == \
        run_id(pinned_config(["a", "b"], "aioli", two), EXTRA) == \
        run_id(pinned_config(["a", "b"], "aioli", {**two, "lp_slots": "balanced"}), EXTRA)


def _cache_sample(n=24):
    files = cache_entries(REPO / "results" / "run_cache")  # .json.gz entries and legacy .json ones
    step = max(1, len(files) // n)
    return files[::step][:n]


def test_committed_cache_entries_rehash_to_their_names():
    from aioli_repro.corpus import open_source
    from aioli_repro.tokenizer import load_tokenizer, tokenizer_fingerprint

    fingerprints = {}
    for path in _cache_sample():
        result = read_cache_entry(path)["result"]
        cfg = RunConfig.from_dict(result["config"])
        d = cfg.data
        key = (d.corpus, d.tokenizer, d.split_seed, d.val_fraction, d.test_fraction, tuple(d.groups))
        if key not in fingerprints:
            source = open_source(d.corpus, d.split_seed, d.val_fraction, d.test_fraction, groups=d.groups)
            fingerprints[key] = {"corpus": source.fingerprint,
                                 "tokenizer": tokenizer_fingerprint(load_tokenizer(d.tokenizer))}
        extra = {**fingerprints[key], "device": result["device"]}
        rid = run_id(cfg, extra)
        if rid != result["run_id"] and cfg.method == "aioli":
            # Kept for the old-vs-new comparison: m = 7 runs of the rule before the balanced leftover slots.
            legacy = RunConfig.from_dict(result["config"])
            legacy.method_config = {**legacy.method_config, "lp_slots": "lowest_index"}
            rid = run_id(legacy, extra)
        assert rid == result["run_id"], f"{path.name}: its config no longer hashes to its id"
        assert cache_entry_id(path) == rid[:20]
