"""Fixtures of the inference tests: small HistFactory models and their pyhf twins."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import jax.scipy as jsp
import numpy as np
import pyhf
import pytest


class ToyModel(eqx.Module):
    """Signal (normfactor `mu`) + background with a code4p histosys `alpha`.

    Exposes the attributes of `diffana.hf.Model` that inference uses; parameters in
    pyhf's order `[alpha, mu]`.
    """

    signal: jnp.ndarray
    background: jnp.ndarray
    hi: jnp.ndarray
    lo: jnp.ndarray
    init: jnp.ndarray
    bounds: jnp.ndarray
    auxdata: jnp.ndarray
    npars: int = eqx.field(static=True, default=2)
    poi_index: int = eqx.field(static=True, default=1)
    poi_name: str = eqx.field(static=True, default="mu")
    _fixed: tuple = eqx.field(static=True, default=(False, False))

    @property
    def fixed(self):
        return np.asarray(self._fixed)

    @property
    def nbins(self):
        return self.signal.shape[0]

    def _histosys(self, alpha):
        up = self.hi - self.background
        dn = self.background - self.lo
        s = 0.5 * (up + dn)
        a = 0.0625 * (up - dn)
        inner = alpha * (s + alpha * a * (alpha**2 * (3 * alpha**2 - 10) + 15))
        outer = jnp.where(alpha > 0, alpha * up, alpha * dn)
        return jnp.where(jnp.abs(alpha) > 1, outer, inner)

    def expected_actualdata(self, pars):
        alpha, mu = pars[0], pars[1]
        return mu * self.signal + self.background + self._histosys(alpha)

    def expected_auxdata(self, pars):
        return pars[:1]

    def expected_data(self, pars, include_auxdata=True):
        main = self.expected_actualdata(pars)
        if not include_auxdata:
            return main
        return jnp.concatenate([main, self.expected_auxdata(pars)])

    def logpdf(self, pars, data):
        n = data[: self.nbins]
        aux = data[self.nbins :]
        lam = self.expected_actualdata(pars)
        main = jnp.sum(jsp.special.xlogy(n, lam) - lam - jsp.special.gammaln(n + 1.0))
        cons = jnp.sum(jsp.stats.norm.logpdf(aux, pars[:1], 1.0))
        return main + cons

    def nll(self, pars, data):
        return -self.logpdf(pars, data)

    def with_yields(self, yields):
        new = self
        for (_channel, sample), value in yields.items():
            field = {"signal": "signal", "background": "background"}[sample]
            new = eqx.tree_at(lambda m, f=field: getattr(m, f), new, jnp.asarray(value))
        return new

    def spec(self):
        return {
            "channels": [
                {
                    "name": "ch",
                    "samples": [
                        {
                            "name": "signal",
                            "data": np.asarray(self.signal).tolist(),
                            "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                        },
                        {
                            "name": "background",
                            "data": np.asarray(self.background).tolist(),
                            "modifiers": [
                                {
                                    "name": "alpha",
                                    "type": "histosys",
                                    "data": {
                                        "hi_data": np.asarray(self.hi).tolist(),
                                        "lo_data": np.asarray(self.lo).tolist(),
                                    },
                                }
                            ],
                        },
                    ],
                }
            ]
        }


def make_toy(signal, background, hi, lo, fixed=(False, False)):
    f = lambda v: jnp.asarray(v, dtype=jnp.float64)  # noqa: E731
    return ToyModel(
        signal=f(signal),
        background=f(background),
        hi=f(hi),
        lo=f(lo),
        init=f([0.0, 1.0]),
        bounds=f([[-5.0, 5.0], [0.0, 10.0]]),
        auxdata=f([0.0]),
        _fixed=tuple(fixed),
    )


@pytest.fixture(scope="session")
def toy_factory():
    return make_toy


@pytest.fixture(scope="session")
def toy():
    model = make_toy([5.0, 10.0, 3.0], [50.0, 60.0, 40.0], [55.0, 62.0, 45.0], [46.0, 57.0, 36.0])
    data = jnp.asarray([53.0, 65.0, 41.0, 0.0])
    return model, data


@pytest.fixture()
def pyhf_numpy():
    """pyhf on the numpy backend with a tight scipy optimiser (float64 reference)."""
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    yield pyhf
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())


def random_workspace(seed: int, nbins: int = 3) -> dict:
    """A pyhf workspace of fixed structure with random yields and observations.

    Signal: normfactor `mu` and normsys `sig_theory`; background: histosys `bkg_shape`,
    normsys `bkg_norm` and staterror. Parameters: 7 for 3 bins.
    """
    rng = np.random.default_rng(seed)
    sig = rng.uniform(1.0, 15.0, nbins)
    bkg = rng.uniform(20.0, 120.0, nbins)
    up = bkg * rng.uniform(1.02, 1.15, nbins)
    dn = bkg * rng.uniform(0.85, 0.98, nbins)
    stat = np.sqrt(bkg) * rng.uniform(0.3, 1.0, nbins)
    mu_true = rng.uniform(0.0, 2.0)
    obs = rng.poisson(bkg + mu_true * sig).astype(float)
    r = lambda a: [float(v) for v in a]  # noqa: E731
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": r(sig),
                        "modifiers": [
                            {"name": "mu", "type": "normfactor", "data": None},
                            {
                                "name": "sig_theory",
                                "type": "normsys",
                                "data": {"hi": 1.1, "lo": 0.92},
                            },
                        ],
                    },
                    {
                        "name": "background",
                        "data": r(bkg),
                        "modifiers": [
                            {
                                "name": "bkg_shape",
                                "type": "histosys",
                                "data": {"hi_data": r(up), "lo_data": r(dn)},
                            },
                            {
                                "name": "bkg_norm",
                                "type": "normsys",
                                "data": {"hi": 1.05, "lo": 0.95},
                            },
                            {"name": "staterror_SR", "type": "staterror", "data": r(stat)},
                        ],
                    },
                ],
            }
        ],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "observations": [{"name": "SR", "data": r(obs)}],
        "version": "1.0.0",
    }


@pytest.fixture(scope="session")
def random_workspace_factory():
    return random_workspace


def pyhf_model_data(workspace: dict):
    ws = pyhf.Workspace(workspace)
    model = ws.model()
    return model, np.asarray(ws.data(model))


@pytest.fixture(scope="session")
def pyhf_model_data_factory():
    return pyhf_model_data


def eager_fd_check(
    fun, x, *, rtol=1e-4, atol=1e-8, eps=1e-6, floor=1.0, nonnegative=True, five_point=False
):
    """`jax.grad(fun)` against central finite differences, evaluated eagerly.

    Same comparison and step rule as `diffana.testing.assert_grad_matches_fd` (relative
    step `eps * max(|x_i|, 1)`, float64), but `fun` is called without a `jax.jit`
    wrapper, so the inference functions' own compiled kernels are reused instead of
    compiling the whole graph again for every check. `floor` replaces the 1 in the step
    rule (for yields far below 1); with `nonnegative`, components whose central step would
    go below zero (empty bins) use the second-order one-sided difference
    `(-3 f(x) + 4 f(x + h) - f(x + 2h)) / 2h`. `five_point` uses the fourth-order
    stencil, which allows larger steps where `fun` carries round-off.
    """
    import jax

    x = np.asarray(x, dtype=np.float64)
    auto = np.asarray(jax.grad(lambda v: jnp.asarray(fun(v), dtype=jnp.float64))(jnp.asarray(x)))
    assert np.all(np.isfinite(auto)), f"autodiff gradient has non-finite entries: {auto}"
    flat = x.ravel()
    steps = eps * np.maximum(np.abs(flat), floor)
    fd = np.empty_like(flat)

    def at(i, delta):
        v = flat.copy()
        v[i] += delta
        return float(fun(jnp.asarray(v.reshape(x.shape))))

    for i in range(flat.size):
        h = steps[i]
        if five_point:
            fd[i] = (at(i, -2 * h) - 8 * at(i, -h) + 8 * at(i, h) - at(i, 2 * h)) / (12 * h)
        elif nonnegative and flat[i] - h < 0:
            fd[i] = (-3 * at(i, 0.0) + 4 * at(i, h) - at(i, 2 * h)) / (2 * h)
        else:
            fd[i] = (at(i, h) - at(i, -h)) / (2 * h)
    np.testing.assert_allclose(
        auto,
        fd.reshape(x.shape),
        rtol=rtol,
        atol=atol,
        err_msg="autodiff gradient != finite differences",
    )
    return auto


@pytest.fixture(scope="session")
def fd_check():
    return eager_fd_check
