"""A data-constrained group, ``name@tokens``: trains on the first ``tokens`` training tokens, repeated, and is
evaluated on its corpus group's whole validation and test splits."""

from __future__ import annotations

import numpy as np
import pytest

from aioli_repro.config import base_groups, run_id, split_group, validate_groups
from aioli_repro.errors import ConfigError
from aioli_repro.train import load_data, train

from .conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAP = 33 * 6  # six windows of 32 + 1 tokens: a group the run exhausts many times over


def test_a_capped_group_name_parses_and_bad_ones_are_refused():
    assert split_group("books@300000") == ("books", 300000) and split_group("books") == ("books", None)
    assert base_groups(("code@99", "licenses")) == ("code", "licenses")
    for bad in ("books@", "books@3e5", "@100", "books@0", "books@-5"):
        with pytest.raises(ConfigError, match="name@tokens"):
            split_group(bad)
    with pytest.raises(ConfigError, match="duplicate group names: \\['code'\\]"):
        validate_groups(("code", "code@500"))


def test_a_capped_group_trains_on_its_first_tokens_and_is_evaluated_on_the_whole_splits():
    whole = load_data(tiny_config(groups=("code", "licenses")), verbose=False)
    full_train, full_val = whole.train_streams["code"].copy(), {g: v.clone() for g, v in whole.val_sample.items()}
    capped = load_data(tiny_config(groups=(f"code@{CAP}", "licenses")), verbose=False)
    stream = capped.train_streams[f"code@{CAP}"]
    assert stream.size == CAP and np.array_equal(stream, full_train[:CAP])
    assert np.array_equal(capped.train_streams["licenses"], whole.train_streams["licenses"])
    assert np.array_equal(capped.val_sample[f"code@{CAP}"].numpy(), full_val["code"].numpy())  # validation stays whole
    with pytest.raises(ConfigError, match="has only"):
        load_data(tiny_config(groups=(f"code@{full_train.size + 1}", "licenses")), verbose=False)


def test_a_capped_run_repeats_its_tokens_has_its_own_id_and_scores_the_whole_test_split(tmp_path):
    plain, capped = (tiny_config(groups=g, steps=12, method="stratified") for g in
                     (("code", "licenses"), (f"code@{CAP}", "licenses")))
    assert run_id(plain) != run_id(capped)
    a, b = train(plain, runs_dir=tmp_path, progress=False), train(capped, runs_dir=tmp_path, progress=False)
    assert b["eval_tokens"]["test"][f"code@{CAP}"] == a["eval_tokens"]["test"]["code"]
    # the same model seed and test tokens: only what code's 198 tokens taught differs
    assert b["test_loss"][f"code@{CAP}"] != a["test_loss"]["code"]
