"""RegMix on planted log-linear laws (simulated losses, no training), its determinism, its recipe in run_method with
the runner stubbed, and its diagnostics (out-of-fold fit quality; the transfer from proxies to the final run)."""

import numpy as np
import pytest

from aioli_repro import hparams, methods, plots, regmix_transfer
from aioli_repro.laws import StaticLawFit, optimal_mixture
from aioli_repro.regmix import RegMixPlan, cross_validated_spearman, regmix_mixture, sample_mixtures

LAWS = {
    2: dict(c=[2.0, 2.5], b=[3.0, 1.0], A=[[4.0, 0.5], [0.5, 2.0]]),  # optimum (0.689, 0.311)
    3: dict(c=[2.0, 2.5, 1.5], b=[2.0, 1.5, 3.0], A=[[3.0, 0.5, 1.0], [0.5, 2.5, 0.2], [1.0, 0.3, 2.0]]),  # (0.45,
    # 0.18, 0.37): both optima inside the simplex and away from uniform
}


def planted(m: int) -> StaticLawFit:
    law = {k: np.array(v, dtype=float) for k, v in LAWS[m].items()}
    return StaticLawFit(law["c"], law["b"], law["A"], r2=np.ones(m), mse=np.zeros(m))


def average_loss(law: StaticLawFit, P) -> np.ndarray:
    return law.predict(np.atleast_2d(P)).mean(axis=1)


@pytest.mark.parametrize("m", [2, 3])
def test_regmix_recovers_the_optimum_of_a_planted_law(m):
    """64 proxies whose average validation loss follows L_i(p) = c_i + b_i exp(-sum_j A_ij p_j), plus noise of the
    size of our seed-to-seed spread: the top-k average lands next to the law's optimum."""
    law = planted(m)
    best = optimal_mixture(law, seed=0)
    P = sample_mixtures(m, 64, seed=0)
    y = average_loss(law, P) + np.random.default_rng(0).normal(0, 0.002, len(P))
    p, details = regmix_mixture(P, y, seed=0)
    assert p.sum() == pytest.approx(1) and (p >= 0).all()
    assert np.abs(p - best).max() < 0.08, (p, best)
    gap = average_loss(law, p)[0] - average_loss(law, best)[0]
    uniform_gap = average_loss(law, np.full(m, 1 / m))[0] - average_loss(law, best)[0]
    assert 0 <= gap < 0.15 * uniform_gap  # recovers at least 85% of what the best mixture gains over uniform
    assert details["fit_spearman"] > 0.95 and len(details["sensitivities"]) == m


def test_the_fit_and_the_simulation_are_seeded_and_deterministic():
    law = planted(3)
    P = sample_mixtures(3, 48, seed=5)
    assert np.array_equal(P, sample_mixtures(3, 48, seed=5))
    assert not np.array_equal(P, sample_mixtures(3, 48, seed=6))
    y = average_loss(law, P)
    plan = RegMixPlan(simulations=20_000, lgbm={"learning_rate": 0.05, "num_iterations": 200, "min_data_in_leaf": 3})
    p1, d1 = regmix_mixture(P, y, seed=5, plan=plan)
    p2, d2 = regmix_mixture(P, y, seed=5, plan=plan)
    assert np.array_equal(p1, p2) and d1 == d2
    p3, _ = regmix_mixture(P, y, seed=6, plan=plan)
    assert not np.array_equal(p1, p3)  # another seed simulates other mixtures


def test_proxy_mixtures_cover_the_simplex_around_uniform():
    P = sample_mixtures(3, 512, seed=0, minimum=1e-3)
    assert np.allclose(P.sum(axis=1), 1) and (P >= 0).all()
    assert ((P == 0) | (P > 0.9e-3)).all() and (P == 0).any()  # entries below the minimum are dropped
    assert np.abs(P.mean(axis=0) - 1 / 3).max() < 0.05  # centred on the uniform prior
    assert (P.max(axis=1) > 0.95).any() and (P.max(axis=1) < 0.5).any()  # near-vertex and near-uniform mixtures


def test_the_plan_scales_with_the_budget_and_keeps_the_papers_simulation():
    plan = hparams.regmix_config(2, 1000, "1m", 30, 0)
    assert (plan.n_proxies, plan.proxy_steps, plan.proxy_preset) == (64, 125, "300k")
    assert plan.proxy_warmup_steps == 4 and plan.proxy_eval_sequences == 256
    assert (plan.simulations, plan.top_k) == (hparams.REGMIX_PAPER["simulations"], hparams.REGMIX_PAPER["top_k"])
    assert plan.lgbm == {"learning_rate": 0.01, "num_iterations": 1000, "min_data_in_leaf": 4}
    # proxy steps of the smaller model: fewer than the sweep's 9-10 runs of S steps of the profile's model
    assert plan.n_proxies * plan.proxy_steps < 9 * 1000
    small = hparams.regmix_config(3, 40, "300k", 5, 16, n_proxies=16)
    assert (small.n_proxies, small.proxy_steps, small.proxy_preset, small.proxy_eval_sequences) == (16, 5, "tiny", 16)
    assert small.lgbm["min_data_in_leaf"] == 2


class StubRunner:
    """Answers run() with the planted law's validation losses for each proxy's mixture, and run_one() with a final
    run; trains nothing."""

    runs_dir, cached_only = "unused", False

    def __init__(self, law, groups):
        self.law, self.groups, self.proxies, self.finals = law, groups, [], []

    def _result(self, cfg, losses):
        return {"run_id": f"stub-{len(self.proxies) + len(self.finals)}", "config": cfg.to_dict(),
                "val_loss": dict(zip(self.groups, losses)), "avg_test_perplexity": float(np.mean(np.exp(losses))),
                "avg_val_perplexity": float(np.mean(np.exp(losses))), "flops_per_token": 1e6,
                "train_tokens": cfg.train.steps * cfg.train.batch_size * cfg.data.context_length}

    def _losses(self, cfg):
        return self.law.predict([cfg.method_config["proportions"]])[0]

    def run(self, cfgs, keep_model=False):
        self.proxies += cfgs
        return [self._result(c, self._losses(c)) for c in cfgs]

    def run_one(self, cfg, keep_model=False):
        self.finals.append(cfg)
        return self._result(cfg, self._losses(cfg))


def test_run_method_trains_the_proxies_then_a_static_run_at_the_regmix_mixture(monkeypatch):
    monkeypatch.setattr(methods, "cached_result", lambda *a, **k: None)  # settle_mixture: nothing is cached
    law = planted(2)
    groups = methods.setting_groups("arxiv_stackexchange", "full")
    runner = StubRunner(law, groups)
    out = methods.run_method("regmix", "arxiv_stackexchange", "full", 0, runner)
    plan, cfgs = methods.regmix_proxies("arxiv_stackexchange", "full", 0)
    assert [c.to_dict() for c in runner.proxies] == [c.to_dict() for c in cfgs]  # the same configs: same run ids
    proxy = runner.proxies[0]
    assert proxy.model.preset == "300k" and proxy.train.steps == 125 and proxy.train.final_eval == "val"
    assert proxy.train.eval_every == 0 and proxy.name == "regmix-proxy"
    assert len(runner.finals) == 1 and runner.finals[0].method == "static" and runner.finals[0].train.steps == 1000
    assert runner.finals[0].method_config["proportions"] == out.proportions
    assert np.abs(np.array(out.proportions) - optimal_mixture(law, seed=0)).max() < 0.06
    assert (out.extra_runs, out.extra_steps) == (64, 64 * 125)
    assert out.extra_flops == pytest.approx(64 * 1e6 * 125 * 8 * 256)
    P = np.array(out.details["proxy_proportions"])
    expected, _ = regmix_mixture(P, np.array(out.details["proxy_val_loss"]), 0, plan)
    assert out.proportions == methods.config_mixture(expected)


FAST = RegMixPlan(lgbm={"learning_rate": 0.05, "num_iterations": 200, "min_data_in_leaf": 4})


def test_out_of_fold_spearman_sees_a_law_and_not_noise():
    """64 proxies: losses from a planted law rank well out of fold; losses independent of the mixture do not, where
    the in-sample fit of the same noise ranks near perfectly (what ``fit_spearman`` reports)."""
    law = planted(3)
    P = sample_mixtures(3, 64, seed=1)
    y_law = average_loss(law, P) + np.random.default_rng(1).normal(0, 0.002, len(P))
    assert cross_validated_spearman(P, y_law, seed=1, plan=FAST) > 0.8
    y_noise = np.random.default_rng(2).normal(3.0, 0.05, len(P))
    noise = [cross_validated_spearman(P, y_noise, seed=s, plan=FAST) for s in range(3)]
    assert max(abs(r) for r in noise) < 0.35, noise
    _, details = regmix_mixture(P, y_noise, seed=1, plan=FAST)
    assert details["fit_spearman"] > 0.9  # in sample, noise looks fitted


def test_out_of_fold_spearman_is_seeded_and_checks_its_folds():
    law = planted(2)
    P = sample_mixtures(2, 32, seed=0)
    y = average_loss(law, P)
    assert cross_validated_spearman(P, y, 0, FAST) == cross_validated_spearman(P, y, 0, FAST)
    with pytest.raises(ValueError, match="folds"):
        cross_validated_spearman(P, y, 0, FAST, folds=33)


class TwoScaleRunner(StubRunner):
    """Proxies (the 300k preset) follow ``proxy_law``; final runs follow ``final_law``; stratified is uniform."""

    def __init__(self, proxy_law, final_law, groups):
        super().__init__(proxy_law, groups)
        self.final_law = final_law

    def _losses(self, cfg):
        p = cfg.method_config.get("proportions", [1 / len(self.groups)] * len(self.groups))
        law = self.law if cfg.model.preset == "300k" else self.final_law
        return law.predict([p])[0]


@pytest.mark.parametrize("gap", [False, True])
def test_transfer_study_compares_each_scale_at_the_chosen_and_the_uniform_mixture(monkeypatch, tmp_path, gap):
    """Planted: the proxies follow law L; the final model follows L (no gap) or L with its groups swapped, whose
    optimum mirrors L's (a transfer gap). Expected values are the laws evaluated by hand at RegMix's mixture and at
    uniform."""
    monkeypatch.setattr(methods, "cached_result", lambda *a, **k: None)
    monkeypatch.setattr(methods.hparams, "regmix_config",
                        lambda *a, **k: RegMixPlan(n_proxies=48, proxy_steps=125, lgbm=FAST.lgbm))
    law = planted(2)
    swapped = type(law)(law.c[::-1], law.b[::-1], law.A[::-1, ::-1], r2=law.r2, mse=law.mse)
    groups = methods.setting_groups("arxiv_stackexchange", "full")
    runner = TwoScaleRunner(law, swapped if gap else law, groups)
    df = regmix_transfer.transfer_study(["arxiv_stackexchange"], "full", seeds=[0, 1], runner=runner)
    assert list(df.seed) == [0, 1] and df.attrs["missing"] == []
    pair_seeds = [c.train.seed for c in runner.proxies if c.method_config["proportions"] in ([0.5, 0.5],)]
    assert set(pair_seeds) == {0, 1, 1000, 1001}  # the uniform proxies: at the fit's seed and at a fresh one
    for _, row in df.iterrows():
        p = np.array(methods.run_method("regmix", "arxiv_stackexchange", "full", int(row.seed), runner).proportions)
        u = np.full(2, 0.5)
        final = swapped if gap else law
        assert row.proxy_loss_diff == pytest.approx(average_loss(law, p)[0] - average_loss(law, u)[0], abs=1e-5)
        assert row.final_loss_diff == pytest.approx(average_loss(final, p)[0] - average_loss(final, u)[0], abs=1e-5)
        assert row.proxy_loss_diff_fit_seed == pytest.approx(row.proxy_loss_diff)  # no seed in this law
        assert row.proxy_loss_diff < 0  # the proxies' choice wins where it was made
        assert (row.final_loss_diff > 0) == gap
        assert row.cv_spearman > 0.8
    summary = regmix_transfer.summarise(df)
    pooled = summary[summary.setting == "pooled"].iloc[0]
    assert pooled.proxy_loss_diff == pytest.approx(df.proxy_loss_diff.mean())
    assert pooled["proxy_loss_diff low"] < pooled.proxy_loss_diff < pooled["proxy_loss_diff high"]
    fig = plots.plot_regmix_transfer(df, "full", path=tmp_path / "t.png")
    (dots,) = fig.axes[0].lines[:1]
    assert list(dots.get_xdata()) == list(df.proxy_loss_diff) and list(dots.get_ydata()) == list(df.final_loss_diff)


class SeedLuckRunner(TwoScaleRunner):
    """No mixture matters: every loss is 3.0, except that at the proxies' scale each seed favours a direction, seeds
    below 1000 (the fits') the first group, fresh seeds the second: L = 3.0 + luck * (p_1 - 1/2)."""

    def __init__(self, groups):
        super().__init__(None, None, groups)

    def _losses(self, cfg):
        p = cfg.method_config.get("proportions", [0.5, 0.5])
        if cfg.model.preset != "300k":
            return np.full(2, 3.0)
        luck = -0.1 if cfg.train.seed < 1000 else 0.1
        return np.full(2, 3.0 + luck * (p[0] - 0.5))


def test_a_gain_that_is_the_fits_seed_luck_shows_at_its_seed_and_not_at_a_fresh_one(monkeypatch):
    """Planted winner's curse: RegMix's fit follows its seed's luck to the first group; re-scored at that seed the
    choice gains, at a fresh seed it loses, and at the final scale nothing changes (hand: +-0.1 * (p_1 - 1/2), 0)."""
    monkeypatch.setattr(methods, "cached_result", lambda *a, **k: None)
    monkeypatch.setattr(methods.hparams, "regmix_config",
                        lambda *a, **k: RegMixPlan(n_proxies=48, proxy_steps=125, lgbm=FAST.lgbm))
    runner = SeedLuckRunner(methods.setting_groups("arxiv_stackexchange", "full"))
    df = regmix_transfer.transfer_study(["arxiv_stackexchange"], "full", seeds=[0, 1], runner=runner)
    for _, row in df.iterrows():
        p1 = methods.run_method("regmix", "arxiv_stackexchange", "full", int(row.seed), runner).proportions[0]
        assert p1 > 0.6  # the fit followed the luck
        assert row.proxy_loss_diff_fit_seed == pytest.approx(-0.1 * (p1 - 0.5), abs=1e-6)
        assert row.proxy_loss_diff == pytest.approx(0.1 * (p1 - 0.5), abs=1e-6)
        assert row.final_loss_diff == pytest.approx(0.0, abs=1e-12)


def test_an_unfinished_transfer_row_is_an_extension_part_outside_f1s_studies(monkeypatch):
    """Rendered from the cache before its proxy pairs have trained: the row is left out and named so that it makes no
    paper claim provisional (an extension part) and is not one of F1's Table 2 studies (those start with regmix/)."""
    from aioli_repro.executors import NotCachedError
    from aioli_repro.verdicts import extension_part

    class CacheOnly(TwoScaleRunner):
        cached_only = True

        def run(self, cfgs, keep_model=False):
            if any(c.train.steps == 125 and c.train.seed >= 1000 for c in cfgs):
                raise NotCachedError("not in the run cache: regmix-proxy")
            return super().run(cfgs)

    monkeypatch.setattr(methods, "cached_result", lambda *a, **k: None)
    monkeypatch.setattr(methods.hparams, "regmix_config",
                        lambda *a, **k: RegMixPlan(n_proxies=48, proxy_steps=125, lgbm=FAST.lgbm))
    law = planted(2)
    runner = CacheOnly(law, law, methods.setting_groups("arxiv_stackexchange", "full"))
    df = regmix_transfer.transfer_study(["arxiv_stackexchange"], "full", seeds=[0], runner=runner)
    assert df.empty
    (part,) = df.attrs["missing"]
    assert extension_part(part) and not part.startswith("regmix/") and part.endswith("A/SE/seed 0")
