"""The Newton solver's linear algebra and its handling of negative curvature.

Two factorisations solve the scaled Newton systems: an unrolled LDL^T (a vmapped batch
of fits of a small model) and LAPACK's Cholesky factorisation (larger models).
They must agree with each other and with a dense solve, flag negative curvature alike,
and a fit that starts at an indefinite Hessian must converge quickly to pyhf's minimum.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

import diffana.hf as hf
import diffana.infer as infer
import diffana.losses as losses
from diffana.infer import _solver
from diffana.infer._mle import floating

SHIFTS = jnp.asarray([0.0, 0.5, 10.0])


def _scaled(a: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.abs(np.diag(a)))
    return a / np.outer(d, d)


def _matrix(n: int, evals: np.ndarray, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return q @ np.diag(evals) @ q.T


def _both(hs, rhs, shifts):
    args = (jnp.asarray(hs), jnp.asarray(rhs), jnp.asarray(shifts, dtype=jnp.float64))
    return tuple(
        _solver._solve_with(solve, *args)
        for solve in (_solver._solve_unrolled, _solver._solve_cholesky)
    )


@pytest.mark.parametrize("n", range(1, _solver.UNROLLED_MAX + 1))
def test_unrolled_factorisation_matches_eigendecomposition_and_dense_solve(n):
    hs = _scaled(_matrix(n, np.geomspace(1e-3, 3.0, n), seed=n))
    rhs = np.random.default_rng(100 + n).normal(size=n)
    (y_ldl, ok_ldl), (y_eig, ok_eig) = _both(hs, rhs, SHIFTS)
    assert ok_ldl.all() and ok_eig.all()
    dense = np.stack([np.linalg.solve(hs + s * np.eye(n), rhs) for s in np.asarray(SHIFTS)])
    np.testing.assert_allclose(y_ldl, y_eig, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(y_ldl, dense, rtol=1e-8, atol=1e-12)  # dense: no 1e-12 floor


@pytest.mark.parametrize("rhs", [[1.0, 0.0, 0.5], [1.0, 1.0, 0.5]])
def test_both_factorisations_regularise_a_singular_matrix_alike(rhs):
    """Two parameters with the same effect: the floor added to the diagonal decides the
    step along the flat direction, the same way for either factorisation."""
    hs = np.array([[1.0, 1.0, 0.2], [1.0, 1.0, 0.2], [0.2, 0.2, 1.0]])
    (y_ldl, ok_ldl), (y_eig, ok_eig) = _both(hs, rhs, [0.0, 0.5])
    assert ok_ldl.all() and ok_eig.all()
    np.testing.assert_allclose(y_ldl, y_eig, rtol=1e-3)


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_negative_curvature_is_flagged_and_the_gershgorin_shift_removes_it(n):
    hs = _scaled(_matrix(n, np.linspace(-0.5, 2.0, n), seed=n))
    lowest = np.linalg.eigvalsh(hs)[0]
    bound = float(_solver._gershgorin(jnp.asarray(hs))[0])
    assert bound <= lowest < 0
    shifts = np.array([0.0, 1.0 - bound])
    rhs = np.random.default_rng(n).normal(size=n)
    for y, ok in _both(hs, rhs, shifts):
        assert ok.tolist() == [False, True]
        np.testing.assert_allclose(
            y[1], np.linalg.solve(hs + shifts[1] * np.eye(n), rhs), rtol=1e-9, atol=1e-12
        )


def test_the_shift_past_negative_curvature_is_sharpened_to_the_margin():
    """A system slightly concave along one direction (lowest eigenvalue -0.01 of a unit
    diagonal, 40 parameters, the right-hand side along that direction): the shifted
    step keeps the margin's curvature along it (a step of length 1 / margin), not the
    margin plus the bisection's bracket, which would shorten it many times."""
    n, margin = 40, 1e-3
    evals = np.linspace(-0.01, 1.99, n)
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(n, n)))
    hs = q @ np.diag(evals) @ q.T
    rhs = q[:, 0] + 0.01 * q[:, 1]
    bound = float(_solver._gershgorin(jnp.asarray(hs))[0])
    assert -bound / 2**_solver._SHIFT_BISECTIONS > 20 * margin  # a coarse bracket
    shifts = jnp.asarray([0.0, 0.0, margin - bound])
    ys, ok = _solver._solve_with(
        _solver._solve_newton_cholesky, jnp.asarray(hs), jnp.asarray(rhs), shifts
    )
    assert ok.tolist() == [False, False, True]
    along = float(jnp.dot(ys[2], q[:, 0]))
    np.testing.assert_allclose(along, 1.0 / margin, rtol=0.05)
    # the step solves the system shifted so that its lowest eigenvalue is about margin
    shift = 1.0 / along - evals[0]
    np.testing.assert_allclose(ys[2], np.linalg.solve(hs + shift * np.eye(n), rhs), rtol=1e-6)


# Parameter 1 has no effect (zero row and column); parameter 3 is not solved for.
FLAT = np.array(
    [[4.0, 0.0, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 2.0, 0.3], [0.5, 0.0, 0.3, 9.0]]
)
FLAT_RHS = np.array([1.0, 0.0, -2.0, 5.0])
FLAT_MASK = jnp.asarray([True, True, True, False])


def _saddle() -> np.ndarray:
    saddle = FLAT.copy()
    saddle[2, 2] = -2.0
    return saddle


@pytest.mark.parametrize("solve", [_solver._solve_unrolled, _solver._solve_cholesky])
def test_flat_directions_are_regularised_and_saddles_rejected(solve):
    def solved(h):
        d, hs = _solver._scaled_system(jnp.asarray(h), FLAT_MASK)
        rs = jnp.where(FLAT_MASK, jnp.asarray(FLAT_RHS) / d, 0.0)
        ys, ok = _solver._solve_with(solve, hs, rs, jnp.zeros(1))
        return np.asarray(jnp.where(FLAT_MASK, ys[0] / d, 0.0)), bool(ok[0])

    y, ok = solved(FLAT)
    assert ok
    np.testing.assert_allclose(y[[0, 2]], np.linalg.solve(FLAT[:3:2, :3:2], FLAT_RHS[[0, 2]]))
    assert y[1] == 0.0
    assert not solved(_saddle())[1]


def test_newton_solve_is_zero_off_the_mask_and_nan_at_a_saddle():
    y = np.asarray(_solver.newton_solve_free(jnp.asarray(FLAT), jnp.asarray(FLAT_RHS), FLAT_MASK))
    np.testing.assert_allclose(y[[0, 2]], np.linalg.solve(FLAT[:3:2, :3:2], FLAT_RHS[[0, 2]]))
    assert y[1] == 0.0 and y[3] == 0.0
    y = np.asarray(
        _solver.newton_solve_free(jnp.asarray(_saddle()), jnp.asarray(FLAT_RHS), FLAT_MASK)
    )
    assert np.isnan(y[:3]).all() and y[3] == 0.0


@pytest.mark.parametrize("unrolled_max", [_solver.UNROLLED_MAX, 0], ids=["ldlt", "cholesky"])
def test_newton_solve_derivatives_where_eigenvalues_repeat(monkeypatch, unrolled_max):
    """The solve behind implicit gradients is differentiated as a linear solve, by
    either factorisation: finite where the scaled Hessian's eigenvalues repeat (here the
    identity: uncorrelated parameters), where an eigendecomposition's own derivative is
    not. Forward, reverse and second-order derivatives match finite differences."""
    monkeypatch.setattr(_solver, "UNROLLED_MAX", unrolled_max)
    h = jnp.diag(jnp.asarray([4.0, 1.0, 9.0, 2.0]))
    rhs = jnp.asarray([1.0, -2.0, 0.5, 3.0])
    mask = jnp.asarray([True, True, True, False])
    d_h = jnp.asarray(
        [[0.3, 0.1, -0.2, 0.4], [0.1, -0.5, 0.2, 0.0], [-0.2, 0.2, 0.6, 0.1], [0.4, 0.0, 0.1, 0.2]]
    )
    d_rhs = jnp.asarray([0.2, 0.1, -0.3, 0.5])
    weights = jnp.asarray([1.0, -0.7, 0.4, 0.9])

    def f(t):
        return _solver.newton_solve_free(h + t * d_h, rhs + t * d_rhs, mask)

    def loss(t):
        return jnp.dot(f(t), weights)

    eps = 1e-5
    fd = (f(eps) - f(-eps)) / (2 * eps)
    np.testing.assert_allclose(jax.jacfwd(f)(0.0), fd, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(jax.grad(loss)(0.0), np.dot(fd, weights), rtol=1e-8)
    second = jax.grad(jax.grad(loss))(0.0)
    fd2 = (jax.grad(loss)(eps) - jax.grad(loss)(-eps)) / (2 * eps)
    assert np.isfinite(second)
    np.testing.assert_allclose(second, fd2, rtol=1e-6)
    # d y = -A^-1 dA y + A^-1 d rhs on the masked block, zero off it
    a = np.asarray(h)[:3, :3]
    y = np.linalg.solve(a, np.asarray(rhs)[:3])
    exact = np.linalg.solve(a, np.asarray(d_rhs)[:3] - np.asarray(d_h)[:3, :3] @ y)
    np.testing.assert_allclose(jax.jacfwd(f)(0.0), [*exact, 0.0], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("unrolled_max", [_solver.UNROLLED_MAX, 0], ids=["ldlt", "cholesky"])
def test_second_derivatives_of_fitted_uncorrelated_parameters(monkeypatch, unrolled_max):
    """`jax.hessian` of fitted parameters whose Hessian scales to the identity (per-bin
    shapesys parameters with the POI fixed) is finite and matches finite differences of
    the gradient, with either factorisation."""
    monkeypatch.setattr(_solver, "UNROLLED_MAX", unrolled_max)
    jax.clear_caches()  # the fit's inner jit would reuse its trace
    model = hf.simple_model([3.0, 6.0], [40.0, 55.0], [6.0, 7.0])
    data = jnp.concatenate([jnp.asarray([47.0, 58.0]), model.auxdata])
    weights = jnp.asarray([0.0, 1.0, -2.0])

    def gammas(d):
        return jnp.dot(infer.fixed_poi_fit(1.0, d, model).pars, weights)

    try:
        with infer.runtime_convergence_checks(False):
            hessian = np.asarray(jax.jit(jax.hessian(gammas))(data))
            grad = jax.jit(jax.grad(gammas))
            eps = 1e-4
            rows = [
                (grad(data.at[i].add(eps)) - grad(data.at[i].add(-eps))) / (2 * eps)
                for i in range(2)
            ]
    finally:
        jax.clear_caches()
    assert np.isfinite(hessian).all()
    np.testing.assert_allclose(hessian[:2], np.stack(rows), rtol=1e-5, atol=1e-10)


def _hlo(fn, data, batch: int) -> str:
    batched = jnp.broadcast_to(data, (batch, data.shape[0]))
    return jax.jit(jax.vmap(fn)).lower(batched).as_text()


def test_small_fits_factorise_without_lapack(monkeypatch):
    """Fits of up to `UNROLLED_MAX` parameters solve their Newton systems with the
    unrolled LDL^T, alone or vmapped (nested batches too: the three fits of `hypotest`
    over 16 datasets), and so do the solves after the loop (uncertainties, implicit
    gradients); LAPACK's Cholesky factorisation remains for larger systems."""
    model = hf.correlated_background([2.0, 5.0], [50.0, 40.0], [55.0, 42.0], [45.0, 38.0])
    data = jnp.concatenate([jnp.asarray([52.0, 47.0]), model.auxdata])

    def fit(d):
        return infer.fit(d, model).pars

    def cls(d):
        return infer.hypotest(1.0, d, model)

    def fit_unc(d):
        return infer.fit(d, model, return_uncertainties=True).uncertainties

    def grad_of_pars(d):
        return jax.grad(lambda d_: infer.fit(d_, model).pars[0])(d)

    with infer.runtime_convergence_checks(False):
        for batch in (1, 16):
            assert "potrf" not in _hlo(fit, data, batch)
            assert "potrf" not in _hlo(cls, data, batch)
        assert "potrf" not in _hlo(fit_unc, data, 1)
        assert "potrf" not in _hlo(grad_of_pars, data, 1)
    monkeypatch.setattr(_solver, "UNROLLED_MAX", 0)
    jax.clear_caches()  # the fit's inner jit would reuse its trace
    try:
        with infer.runtime_convergence_checks(False):
            assert "potrf" in _hlo(fit, data, 1)
            assert "potrf" in _hlo(fit, data, 16)
            assert "potrf" in _hlo(fit_unc, data, 1)
    finally:
        jax.clear_caches()


def _lapack_calls(fun, *args) -> int:
    with infer.runtime_convergence_checks(False):
        return jax.jit(fun).lower(*args).compile().as_text().count("potrf")


def test_gradients_of_minimum_nlls_factorise_no_hessian(monkeypatch):
    """The NLL at a fit's minimum is differentiated by the envelope theorem: a gradient
    of a loss or test statistic (differences of such minima) adds no factorisation to
    the compiled function, while a gradient of the fitted parameters adds the implicit
    function theorem's solve. Counted as LAPACK calls, with every system factorised by
    LAPACK."""
    model = hf.correlated_background([2.0, 5.0], [50.0, 40.0], [55.0, 42.0], [45.0, 38.0])
    data = jnp.concatenate([jnp.asarray([52.0, 47.0]), model.auxdata])
    signal = model.nominal[model.samples.index("signal")]

    def with_signal(s):
        return model.with_yields({(model.channels[0], "signal"): s})

    def cls_loss(s):
        return losses.cls_loss(with_signal(s))

    def qmu(s):
        return infer.qmu_tilde(1.0, data, with_signal(s))

    def mu_hat(s):
        return infer.fit(data, with_signal(s)).pars[model.poi_index]

    monkeypatch.setattr(_solver, "UNROLLED_MAX", 0)
    jax.clear_caches()
    try:
        for fun in (cls_loss, qmu):
            assert _lapack_calls(jax.grad(fun), signal) == _lapack_calls(fun, signal)
        assert _lapack_calls(jax.grad(mu_hat), signal) > _lapack_calls(mu_hat, signal)
    finally:
        jax.clear_caches()


def test_a_fit_started_at_its_minimum_stops_after_one_evaluation():
    """Convergence is tested at each accepted point and the polishing Newton step is not
    evaluated in the loop: a fit started at the minimum takes one iteration."""
    model = hf.correlated_background([2.0, 5.0], [50.0, 40.0], [55.0, 42.0], [45.0, 38.0])
    data = model.expected_data(model.init)
    res = infer.fit(data, model)
    assert bool(res.converged) and int(res.n_iter) == 1
    np.testing.assert_allclose(res.pars, model.init, atol=1e-12)
    np.testing.assert_allclose(res.nll, model.nll(res.pars, data), rtol=1e-15)


def test_second_derivatives_through_a_fit_single_and_batched():
    """`jax.hessian` of a profiled NLL differentiates the solver loop in forward mode,
    through the factorisations: it matches finite differences of the implicit gradient,
    alone and in a vmapped batch."""
    model = hf.correlated_background([2.0, 5.0], [50.0, 40.0], [55.0, 42.0], [45.0, 38.0])
    data = jnp.concatenate([jnp.asarray([52.0, 47.0]), model.auxdata])

    def profiled(d):
        return infer.fit(d, model).nll

    hessian = np.asarray(jax.hessian(profiled)(data))
    grad = jax.jit(jax.grad(profiled))
    eps = 1e-4
    rows = [(grad(data.at[i].add(eps)) - grad(data.at[i].add(-eps))) / (2 * eps) for i in range(2)]
    np.testing.assert_allclose(hessian[:2], np.stack(rows), rtol=1e-5, atol=1e-9)
    batched = jax.vmap(jax.hessian(profiled))(jnp.stack([data] * 12))
    np.testing.assert_allclose(batched, np.stack([hessian] * 12), rtol=1e-9, atol=1e-12)


def _excess_spec() -> dict:
    """Signal x mu over a falling background with a histosys (code 4p) and a normsys."""
    x = np.linspace(0.0, 1.0, 10)
    background = 60.0 * np.exp(-1.5 * x) + 8.0
    hi, lo = background * (1.0 + 0.1 * (1.0 - x)), background * (1.0 - 0.07 * (1.0 - x))
    signal = 10.0 * np.exp(-0.5 * ((x - 0.7) / 0.15) ** 2) + 0.5
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": signal.tolist(),
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": background.tolist(),
                        "modifiers": [
                            {
                                "name": "shape",
                                "type": "histosys",
                                "data": {"hi_data": hi.tolist(), "lo_data": lo.tolist()},
                            },
                            {"name": "norm", "type": "normsys", "data": {"hi": 1.06, "lo": 0.94}},
                        ],
                    },
                ],
            }
        ],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "observations": [
            {"name": "SR", "data": [72.0, 73.0, 61.0, 57.0, 56.0, 40.0, 29.0, 32.0, 26.0, 19.0]}
        ],
        "version": "1.0.0",
    }


def test_a_vmapped_batch_of_fits_matches_the_fits_one_by_one():
    """The batch (unrolled LDL^T) and the single fits (LAPACK) take the same steps, from
    the indefinite starting Hessians of data with an excess, to the same minima."""
    spec = _excess_spec()
    model = hf.Model.from_pyhf(spec)
    data = hf.workspace_data(spec, model)
    factors = np.random.default_rng(3).uniform(0.85, 1.15, (16, model.nbins))
    datasets = jnp.asarray(
        np.asarray(data)[None, :] * np.concatenate([factors, np.ones((16, model.nauxdata))], axis=1)
    )

    def fit(d):
        res = infer.fixed_poi_fit(0.0, d, model)
        return res.pars, res.n_iter

    pars, n_iter = jax.jit(jax.vmap(fit))(datasets)
    one = [jax.jit(fit)(d) for d in datasets]
    np.testing.assert_allclose(pars, np.stack([p for p, _ in one]), rtol=1e-9, atol=1e-10)
    assert np.asarray(n_iter).tolist() == [int(n) for _, n in one]


def test_fit_from_an_indefinite_hessian_converges_fast_to_pyhf_minimum():
    """An excess over the background makes the histosys interpolation curve against the
    data: at the nominal point the background-only Hessian is indefinite, with a small
    diagonal entry for the histosys. The fit (15 iterations before negative curvature
    was shifted to unit curvature) converges in at most 10, at pyhf's minimum."""
    spec = _excess_spec()
    model = hf.Model.from_pyhf(spec)
    data = hf.workspace_data(spec, model)
    start = model.init.at[model.poi_index].set(0.0)
    h = jax.hessian(model.nll)(start, data)
    free = np.array([True, False, True])
    assert np.linalg.eigvalsh(np.asarray(h)[np.ix_(free, free)])[0] < 0
    res = infer.fixed_poi_fit(0.0, data, model)
    assert bool(res.converged) and int(res.n_iter) <= 10
    pyhf.set_backend("numpy", "scipy")
    ws = pyhf.Workspace(spec)
    pmodel = ws.model()
    pars, twice_nll = pyhf.infer.mle.fixed_poi_fit(
        0.0, ws.data(pmodel), pmodel, return_fitted_val=True
    )
    assert float(res.nll) <= float(twice_nll) / 2 + 1e-8
    np.testing.assert_allclose(float(res.nll), float(twice_nll) / 2, rtol=1e-8)
    np.testing.assert_allclose(res.pars, pars, atol=2e-3)  # scipy SLSQP in pyhf: ~1e-4


def test_a_step_too_long_is_shortened_along_its_direction():
    """At the nominal point the background-only Hessian is indefinite, with a small
    curvature for the histosys: the first step of the fit to these data (shifted to unit
    curvature) lands on the bound (`shape = 5`) and raises the NLL. The solver shortens it
    along its direction before it damps, and the fit converges in 6 iterations (8 when
    damped steps crawled back from the bound). Over 1000 Poisson pseudo-datasets no fit
    of a vmapped batch takes more than 6 (the batch runs as many iterations as its
    slowest fit; 8 before), at the same minima as fits with a tighter tolerance."""
    spec = _excess_spec()
    model = hf.Model.from_pyhf(spec)
    data = hf.workspace_data(spec, model)
    start = model.init.at[model.poi_index].set(0.0)
    res = infer.fixed_poi_fit(0.0, data, model)
    assert bool(res.converged) and int(res.n_iter) <= 6

    lam = model.expected_actualdata(start)
    toys = jax.random.poisson(jax.random.key(0), lam, (1000, model.nbins)).astype(float)
    datasets = jnp.concatenate([toys, jnp.broadcast_to(model.auxdata, (1000, model.nauxdata))], 1)

    def fits(d):
        rs = (
            infer.fixed_poi_fit(1.0, d, model),
            infer.fit(d, model),
            infer.fixed_poi_fit(0.0, d, model),
        )
        return (
            jnp.stack([r.n_iter for r in rs]),
            jnp.stack([r.nll for r in rs]),
            jnp.stack([r.converged for r in rs]),
        )

    with infer.runtime_convergence_checks(False):
        n_iter, nll, converged = jax.jit(jax.vmap(fits))(datasets)
    assert bool(jnp.all(converged)) and int(jnp.max(n_iter)) <= 6

    def tight(d):
        return infer.fixed_poi_fit(0.0, d, model, tol=1e-14, maxiter=100).nll

    with infer.runtime_convergence_checks(False):
        np.testing.assert_allclose(nll[:, 2], jax.jit(jax.vmap(tight))(datasets), atol=1e-9)


def _saddle_model():
    """One bin: a signal with `mu`, a background whose histosys moves it up for either
    sign of `alpha` (both templates above the nominal). Data above the background make
    `alpha = 0` a saddle of the fit at `mu = 0`: zero slope, negative curvature."""
    spec = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [50.45],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [132.5],
                        "modifiers": [
                            {
                                "name": "jes",
                                "type": "histosys",
                                "data": {"hi_data": [150.0], "lo_data": [150.0]},
                            }
                        ],
                    },
                ],
            }
        ],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "observations": [{"name": "SR", "data": [182.95]}],
        "version": "1.0.0",
    }
    return hf.Model.from_pyhf(spec), spec


def test_a_fit_started_on_a_saddle_leaves_it():
    """The fit at `mu = 0` starts on the saddle and must leave it for the minimum (pyhf
    0.7.6 with SLSQP stays on the saddle, `jes = 0`, and reports success), alone and in a
    vmapped batch (the unrolled factorisation)."""
    model, spec = _saddle_model()
    data = hf.workspace_data(spec, model)
    jes = model.par_names.index("jes")
    saddle = model.init.at[model.poi_index].set(0.0)
    grad = jax.grad(model.nll)(saddle, data)
    assert abs(float(grad[jes])) < 1e-12
    assert float(jax.hessian(model.nll)(saddle, data)[jes, jes]) < 0

    # the minimum over alpha by a dense scan (an upper bound on the true minimum)
    alphas = jnp.linspace(-5.0, 5.0, 20001)
    nlls = jax.vmap(lambda a: model.nll(saddle.at[jes].set(a), data))(alphas)
    best = float(jnp.min(nlls))
    assert best < float(model.nll(saddle, data)) - 0.1

    res = infer.fixed_poi_fit(0.0, data, model)
    assert bool(res.converged)
    assert abs(float(res.pars[jes])) > 0.1
    assert float(res.nll) <= best + 1e-9
    assert abs(float(jax.grad(model.nll)(res.pars, data)[jes])) < 1e-6

    batch = jnp.stack([data] * 12)
    fits = jax.vmap(lambda d: infer.fixed_poi_fit(0.0, d, model))(batch)
    assert bool(jnp.all(fits.converged))
    np.testing.assert_allclose(fits.nll, float(res.nll), rtol=1e-12)


def test_a_toy_fit_into_a_negative_rate_of_an_empty_bin_stops_early():
    """A bin without observed events whose background a histosys pulls below zero:
    pyhf's Poisson term of that bin, ``lam``, falls without bound, and the minimum over
    the box sits at its corner with a negative rate. An ordinary fit goes there, as
    pyhf's does; a pseudo-experiment's fit stops, not converged, as soon as the
    objective falls below `Model.relative_nll_floor` (it ran to the corner, up to its
    iteration limit, before)."""
    from diffana.infer import _toys

    spec = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [1.0, 2.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [0.5, 10.0],
                        "modifiers": [
                            {
                                "name": "shape",
                                "type": "histosys",
                                "data": {"hi_data": [1.0, 10.5], "lo_data": [-9.5, 9.5]},
                            }
                        ],
                    },
                ],
            }
        ]
    }
    model = hf.Model.from_pyhf(spec)
    data = jnp.asarray([0.0, 11.0, 0.0])
    assert float(model.relative_nll_floor()) == 0.0
    shape = model.par_names.index("shape")
    res = infer.fixed_poi_fit(1.0, data, model)  # pyhf's answer: the corner
    assert bool(res.converged)
    assert float(res.pars[shape]) == pytest.approx(-5.0)
    assert float(model.expected_data(res.pars)[0]) < 0

    init = model.init.at[model.poi_index].set(1.0)
    fixed = jnp.asarray(model.fixed).at[model.poi_index].set(True)
    free = floating(model, fixed)
    toy = _toys.toy_fit(model, data, init, model.bounds, free, jnp.asarray(1e-10), 200)
    assert not bool(toy.converged)
    assert int(toy.n_iter) < int(res.n_iter)
    assert float(toy.value) < 0.0


def test_large_toy_fit_runs_along_a_valley_into_a_corner_of_the_box():
    """A pseudo-experiment of the published 1Lbb workspace (126 parameters) whose
    minimum is at a corner of the box: two degenerate normalisations, ``mu_Top`` at its
    lower bound 0.1 and ``mu_ST`` at its upper bound 5, reached along a slightly concave
    valley. An ordinary fit crawls there for about 400 iterations (more than the default
    200); a toy fit, whose steps stop at the first bound they meet with a margin that
    shrinks while they succeed, converges within 200 to pyhf's minimum (pyhf 0.7.6,
    numpy backend, SLSQP at tolerance 1e-10: NLL 117.05177383013168)."""
    from diffana.infer import _toys

    path = (
        Path(__file__).resolve().parents[3]
        / "shared" / "data" / "workspaces" / "atlas_1Lbb_SUSY-2019-08_C1N2_Wh_hbb_600_300.json"
    )  # fmt: skip
    if not path.is_file():
        pytest.skip(f"published workspace not found at {path}")
    model = hf.Model.from_pyhf(str(path))
    data = hf.workspace_data(str(path), model)
    gen = infer.fixed_poi_fit(1.0, data, model).pars
    toy = infer.sample_data(model, gen, 56, key=jax.random.key(1))[55]
    free = floating(model, jnp.asarray(model.fixed))
    res = _toys.toy_fit(model, toy, gen, model.bounds, free, jnp.asarray(1e-10), 200)
    assert bool(res.converged)
    nll = float(res.value + model.nll_offset(toy))
    assert nll == pytest.approx(117.05177383013168, abs=1e-6)
    names = list(model.par_names)
    assert float(res.x[names.index("mu_Top")]) == pytest.approx(0.1, abs=1e-3)
    assert float(res.x[names.index("mu_ST")]) == pytest.approx(5.0, abs=1e-3)


def test_a_fit_without_polishing_returns_the_minimum_of_its_quadratic_model():
    """Without the polishing step (pseudo-experiments), the fit stops where the Newton
    decrement `d` falls below `tol^(2/3)` and returns `f - d / 2`, the minimum of the
    quadratic model at its last point: within `tol` of the minimum, one Newton step
    earlier than the test `d < tol` (here on a coupled, non-quadratic objective of 12
    parameters: Poisson terms with exponential rates and a smoothness penalty)."""
    counts = jnp.asarray([3.0, 0.0, 7.0, 12.0, 1.0, 5.0, 9.0, 2.0, 0.0, 4.0, 6.0, 8.0])
    rates = jnp.linspace(0.5, 3.0, 12)

    def objective(x):
        poisson = jnp.sum(rates * jnp.exp(x) - counts * x)
        return poisson + 0.5 * jnp.sum((x[1:] - x[:-1]) ** 2) + 0.05 * jnp.sum(x**2)

    def value_grad_hess(x, _):
        return objective(x), jax.grad(objective)(x), jax.hessian(objective)(x)

    def fit(tol, polish):
        n = counts.shape[0]
        return _solver.minimize_bounded(
            value_grad_hess, jnp.zeros(n), jnp.full(n, -10.0), jnp.full(n, 10.0),
            jnp.ones(n, bool), None, tol=tol, maxiter=100, polish=polish,
        )  # fmt: skip

    exact = fit(1e-14, True)
    assert bool(exact.converged)
    for tol in (1e-10, 1e-6):
        polished, quick = fit(tol, True), fit(tol, False)
        assert bool(quick.converged)
        assert abs(float(quick.value - exact.value)) < tol
        # `n_iter` of a polished fit leaves out the polishing step
        assert int(quick.n_iter) <= int(polished.n_iter)
    # at 1e-6 one step earlier; the value at the last point is d / 2 above the estimate
    assert int(quick.n_iter) == int(polished.n_iter) - 1
    assert float(objective(quick.x) - quick.value) > 1e-6
