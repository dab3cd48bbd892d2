"""Traceable construction: gradients through `Model.from_pyhf`, vmap, `with_yields`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

import diffana
import diffana.hf as hf
from diffana.testing import assert_grad_matches_fd

NOMINAL = np.array([3.0, 4.0, 5.0, 0.0, 10.0, 12.0, 14.0, 0.0])  # signal 4 bins, bkg 4 bins


def _spec(y: jax.Array) -> dict:
    """Every modifier type, with the traced yields `y` feeding all modifier data."""
    sig, bkg = y[:4], y[4:]
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": sig,
                        "modifiers": [
                            {"name": "mu", "type": "normfactor", "data": None},
                            {"name": "lumi", "type": "lumi", "data": None},
                            hf.normsys_from_variations("xsec", sig, 1.1 * sig, 0.93 * sig),
                            {"name": "stat", "type": "staterror", "data": 0.3 * sig},
                        ],
                    },
                    {
                        "name": "background",
                        "data": bkg,
                        "modifiers": [
                            {"name": "stat", "type": "staterror", "data": 0.2 * bkg + 0.5},
                            hf.histosys_from_variations("jes", 1.05 * bkg + 0.1, 0.97 * bkg),
                            {"name": "ss", "type": "shapesys", "data": 0.1 * bkg},
                            {"name": "sf", "type": "shapefactor", "data": None},
                            {"name": "lumi", "type": "lumi", "data": None},
                        ],
                    },
                ],
            }
        ],
        "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "inits": [1.0],
             "bounds": [[0.9, 1.1]]},
        ],
    }  # fmt: skip


OBSERVED = jnp.array([14.0, 15.0, 21.0, 0.0])


def _nll(y: jax.Array) -> jax.Array:
    model = hf.Model.from_pyhf(_spec(y))
    pars = model.init + 0.05 * jnp.arange(model.npars) / model.npars
    data = jnp.concatenate([OBSERVED, model.auxdata])
    return model.nll(pars, data)


nll = jax.jit(_nll)


@pytest.fixture(scope="module")
def concrete_model() -> hf.Model:
    return hf.Model.from_pyhf(_spec(jnp.asarray(NOMINAL)))


def test_grad_through_construction_matches_finite_differences():
    positive = np.where(NOMINAL > 0, NOMINAL, 0.7)
    assert_grad_matches_fd(nll, positive, rtol=1e-5, atol=1e-7)


def test_grad_through_construction_is_finite_at_empty_bins():
    # at an empty bin, pyhf's staterror/shapesys special cases (sigma 1, factor 1) switch
    # on, so the function jumps there; its gradient must still be finite
    grad = np.asarray(jax.grad(nll)(jnp.asarray(NOMINAL)))
    assert np.all(np.isfinite(grad)), grad


def _plain(obj):
    """The spec with JAX arrays turned into lists (what pyhf can read)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, jax.Array):
        return np.asarray(obj).tolist()
    return obj


def test_traced_model_agrees_with_pyhf(concrete_model, pyhf_model):
    ref = pyhf_model(_plain(_spec(jnp.asarray(NOMINAL))))
    pars = np.asarray(concrete_model.init) + 0.05 * np.arange(ref.config.npars) / ref.config.npars
    data = np.concatenate([OBSERVED, ref.config.auxdata])
    np.testing.assert_allclose(
        float(nll(jnp.asarray(NOMINAL))), -ref.logpdf(pars, data)[0], rtol=1e-12
    )
    # staterror/shapesys bins without uncertainty are fixed when numbers are concrete
    assert concrete_model.fixed.tolist() == ref.config.suggested_fixed()
    fixed = dict(zip(concrete_model.par_names, concrete_model.fixed.tolist(), strict=True))
    assert fixed["stat[3]"] and fixed["ss[3]"] and not fixed["stat[0]"]


def test_vmap_over_yields():
    batch = jnp.stack([NOMINAL, 1.1 * NOMINAL, NOMINAL + 1.0])
    vmapped = jax.vmap(nll)(batch)
    looped = jnp.array([nll(y) for y in batch])
    np.testing.assert_allclose(vmapped, looped, rtol=1e-13)


def test_with_yields_equals_rebuilt_model(concrete_model):
    new_bkg = np.array([11.0, 13.0, 0.0, 2.0])
    swapped = concrete_model.with_yields({("SR", "background"): new_bkg})
    spec = _spec(jnp.asarray(NOMINAL))
    spec["channels"][0]["samples"][1]["data"] = new_bkg
    rebuilt = hf.Model.from_pyhf(spec)
    pars = concrete_model.init + 0.1
    data = jnp.concatenate([OBSERVED, rebuilt.auxdata])
    logpdf = jax.jit(lambda m: m.logpdf(pars, data))
    assert float(logpdf(swapped)) == float(logpdf(rebuilt))
    for name in ("nominal", "hs_deltas", "gauss_sigma", "pois_factor", "auxdata"):
        np.testing.assert_array_equal(getattr(swapped, name), getattr(rebuilt, name))
    assert swapped.fixed.tolist() == rebuilt.fixed.tolist()
    # the original model is unchanged
    np.testing.assert_array_equal(concrete_model.nominal[0], NOMINAL[4:])


def test_grad_through_with_yields(concrete_model):
    pars = concrete_model.init + 0.02

    @jax.jit
    def f(signal):
        model = concrete_model.with_yields({("SR", "signal"): signal})
        return model.logpdf(pars, jnp.concatenate([OBSERVED, model.auxdata]))

    assert_grad_matches_fd(f, NOMINAL[:4] + 0.5, rtol=1e-6)


def test_vmap_over_pars_and_data(concrete_model):
    pars = concrete_model.init[None, :] + jnp.linspace(0.0, 0.1, 3)[:, None]
    data = jnp.concatenate([OBSERVED, concrete_model.auxdata])
    logpdf = jax.jit(lambda p, d: concrete_model.logpdf(p, d))
    batched = jax.jit(jax.vmap(lambda p, d: concrete_model.logpdf(p, d), in_axes=(0, None)))(
        pars, data
    )
    np.testing.assert_allclose(batched, [float(logpdf(p, data)) for p in pars], rtol=1e-14)


def test_model_is_a_pytree_that_jit_accepts(concrete_model):
    leaves = jax.tree_util.tree_leaves(concrete_model)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    data = jnp.concatenate([OBSERVED, concrete_model.auxdata])
    logpdf = jax.jit(lambda m, p: m.logpdf(p, data))
    np.testing.assert_allclose(
        logpdf(concrete_model, concrete_model.init),
        concrete_model.logpdf(concrete_model.init, data),
        rtol=1e-14,
    )
    # a model with other yields but the same structure reuses the compiled function
    other = concrete_model.with_yields({("SR", "signal"): NOMINAL[:4] * 2})
    assert jax.tree_util.tree_structure(other) == jax.tree_util.tree_structure(concrete_model)
    logpdf(other, other.init)


@pytest.mark.parametrize(
    "settings",
    [
        None,
        {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}},
    ],
)
def test_grad_in_parameters_matches_finite_differences(concrete_model, settings):
    model = hf.Model.from_pyhf(_spec(jnp.asarray(NOMINAL)), modifier_settings=settings)
    data = jnp.concatenate([OBSERVED, model.auxdata])
    logpdf = jax.jit(lambda p: model.logpdf(p, data))
    lo, hi = np.asarray(model.bounds).T
    names = model.par_names
    alpha = [names.index("jes"), names.index("xsec")]
    base = np.asarray(model.init) + 0.03
    # interior points, |alpha| around 1 (polynomial/exponential joins) and near bounds
    for alpha_value in (-1.7, -0.9999, 0.4, 1.0001):
        pars = base.copy()
        pars[alpha] = alpha_value
        pars = np.clip(pars, lo + 1e-6, hi - 1e-6)
        assert_grad_matches_fd(logpdf, pars, rtol=1e-5, atol=1e-6, eps=1e-7)


def test_gradients_at_bounds_and_empty_bins_are_finite(concrete_model):
    data = jnp.concatenate([jnp.array([14.0, 15.0, 21.0, 0.0]), concrete_model.auxdata])
    grad = jax.jit(jax.grad(lambda p: concrete_model.logpdf(p, data)))
    for pars in (concrete_model.bounds[:, 0], concrete_model.bounds[:, 1], concrete_model.init):
        g = np.asarray(grad(pars))
        finite = np.isfinite(g)
        # the only allowed non-finite entries are where the likelihood itself is -inf
        assert finite.all() or not np.isfinite(float(concrete_model.logpdf(pars, data)))
    # mu = 0 (a bound): finite gradient in mu
    pars = concrete_model.init.at[concrete_model.poi_index].set(0.0)
    assert np.all(np.isfinite(np.asarray(grad(pars))))


def test_poisson_term_at_zero_rate():
    model = hf.simple_model([0.0, 1.0], [0.0, 5.0])
    data = jnp.array([0.0, 7.0])
    grad = jax.grad(lambda p, d: model.logpdf(p, d), argnums=(0, 1))
    g_pars, g_data = grad(model.init, data)
    assert np.all(np.isfinite(np.asarray(g_pars))) and np.all(np.isfinite(np.asarray(g_data)))
    # n > 0 with a zero rate is impossible: -inf, as pyhf
    assert float(model.logpdf(model.init, jnp.array([1.0, 7.0]))) == -np.inf


def test_builders():
    nominal = jnp.array([10.0, 30.0, 0.0])
    mod = hf.normsys_from_variations("xsec", nominal, 1.1 * nominal, 0.9 * nominal)
    np.testing.assert_allclose([mod["data"]["hi"], mod["data"]["lo"]], [1.1, 0.9], rtol=1e-15)
    empty = hf.normsys_from_variations("e", jnp.zeros(2), jnp.ones(2), jnp.ones(2))
    assert float(empty["data"]["hi"]) == 1.0
    g = jax.grad(lambda n: hf.normsys_from_variations("x", n, n + 1.0, 0.5 * n)["data"]["hi"])(
        jnp.zeros(2)
    )
    assert np.all(np.isfinite(np.asarray(g)))
    assert hf.normsys_from_variations("x", [1.0, 3.0], [2.0, 2.0], [1.0, 1.0])["data"] == {
        "hi": 1.0,
        "lo": 0.5,
    }
    hist = hf.histosys_from_variations("jes", jnp.ones(3), jnp.zeros(3))
    assert hist["type"] == "histosys" and hist["data"]["hi_data"].shape == (3,)
    with pytest.raises(hf.Model.from_pyhf.__globals__["SpecError"], match="different bin"):
        hf.histosys_from_variations("jes", [1.0, 2.0], [1.0])


def test_traced_normsys_reaching_zero_stays_finite():
    # A down variation emptied during training (factor 0): pyhf's code4 would give NaN;
    # the traced model takes the continuous limit, so the likelihood and its gradient
    # stay finite and equal the limit of small positive factors.
    def nll(lo, alpha):
        spec = {
            "channels": [
                {
                    "name": "c",
                    "samples": [
                        {
                            "name": "s",
                            "data": jnp.array([5.0, 6.0]),
                            "modifiers": [
                                {"name": "mu", "type": "normfactor", "data": None},
                                {"name": "n", "type": "normsys", "data": {"hi": 1.2, "lo": lo}},
                            ],
                        }
                    ],
                }
            ]
        }
        model = hf.Model.from_pyhf(spec)
        pars = jnp.array([1.0, alpha])
        return model.nll(pars, model.expected_data(jnp.array([1.0, 0.0])))

    for alpha in (-0.5, 0.0, 0.7):  # (at alpha <= -1 the yield is 0: an infinite NLL)
        at_zero = jax.jit(nll)(0.0, alpha)
        grad = jax.grad(nll, argnums=(0, 1))(0.0, alpha)
        assert np.isfinite(at_zero) and np.all(np.isfinite(grad))
        assert float(at_zero) == pytest.approx(float(jax.jit(nll)(1e-12, alpha)), rel=1e-6)
    with pytest.raises(diffana.SpecError, match=r"code4 needs positive normsys factors \(> 0\)"):
        hf.Model.from_pyhf(
            {
                "channels": [
                    {
                        "name": "c",
                        "samples": [
                            {
                                "name": "s",
                                "data": [5.0],
                                "modifiers": [
                                    {"name": "n", "type": "normsys", "data": {"hi": 1.2, "lo": 0.0}}
                                ],
                            }
                        ],
                    }
                ]
            }
        )


@pytest.mark.parametrize("kind", ["staterror", "shapesys"])
def test_zero_uncertainty_bins_give_the_same_model_traced_or_not(kind):
    """A bin without statistical uncertainty fixes its staterror/shapesys parameter
    (pyhf's `suggested_fixed`); built from traced yields, the model cannot fix it (which
    parameters float is static), so fits keep it at its initial value instead. The
    expected CLs is the same either way, and pyhf's."""
    import diffana.losses as losses

    def spec(background):
        return {
            "channels": [{"name": "SR", "samples": [
                {"name": "signal", "data": [1.0, 2.0, 3.0],
                 "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
                {"name": "background", "data": background,
                 "modifiers": [{"name": "unc", "type": kind, "data": [2.0, 0.0, 1.0]}]},
            ]}]
        }  # fmt: skip

    def cls(background):
        return losses.cls_loss(hf.Model.from_pyhf(spec(background)))

    background = jnp.asarray([10.0, 5.0, 3.0])
    eager = float(cls(background))
    assert float(jax.jit(cls)(background)) == pytest.approx(eager, rel=1e-10)
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    try:
        model = pyhf.Model(_plain(spec([10.0, 5.0, 3.0])), poi_name="mu")
        init = model.config.suggested_init()
        init[model.config.poi_index] = 0.0
        asimov = model.expected_data(init)
        ref = pyhf.infer.hypotest(1.0, asimov, model, test_stat="qtilde")
    finally:
        pyhf.set_backend("numpy")
    assert eager == pytest.approx(float(ref), rel=1e-6)
