"""Figures of merit of an analysis as scalar losses, ready for `jax.value_and_grad`.

Each loss takes a `diffana.hf.Model` — typically rebuilt inside the loss caller from
traced yields (`Model.from_pyhf(spec)` or `model.with_yields(...)`) — and returns a
float64 scalar whose gradient with respect to the model's arrays is exact: fits enter
through the implicit-function theorem. No observed data is involved: the losses use
Asimov data at the model's nominal parameters (`model.init`), which is how an analysis
is optimised before unblinding.

Example:

>>> import jax, diffana.hf, diffana.losses
>>> model = diffana.hf.simple_model([5.0, 10.0], [50.0, 60.0])  # doctest: +SKIP
>>> def loss(signal):  # doctest: +SKIP
...     m = model.with_yields({("singlechannel", "signal"): signal})
...     return diffana.losses.cls_loss(m)
>>> value, grad = jax.value_and_grad(loss)(jax.numpy.array([5.0, 10.0]))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import log_ndtr
from jaxtyping import Array, ArrayLike, Float

from diffana._config import check_float64, entry_jit
from diffana.infer._fisher import poi_uncertainty
from diffana.infer._mle import DEFAULT_MAXITER, DEFAULT_TOL, report_convergence
from diffana.infer._teststat import _Setup, safe_sqrt

__all__ = ["bce_loss", "cls_loss", "discovery_loss", "floor_background", "poi_uncertainty_loss"]


def _asimov_q(setup: _Setup, generate_mu, test_mu):
    """Test statistic `2 (nll(test_mu) - nll_min)` on Asimov data at `generate_mu`.

    The Asimov data are the expected data at `init` with the POI at `generate_mu`; their
    free fit is that point where the closed form applies (see
    :meth:`diffana.infer._teststat._Setup.asimov_free_fit`). Returns
    `(q, mu_hat, converged)`.
    """
    pars = setup.init.at[setup.poi_index].set(generate_mu)
    data = setup.model.expected_data(pars, include_auxdata=True)
    cond = setup.fixed_poi_fit(test_mu, data)
    free = setup.asimov_free_fit(pars, data)
    q = jnp.maximum(2.0 * (cond.nll - free.nll), 0.0)
    return q, free.pars[setup.poi_index], cond.converged & free.converged


@entry_jit
def _cls_jit(mu_test, model, data, init, bounds, *, fixed, tol, maxiter):
    setup = _Setup.core(model, data, init, bounds, fixed, tol, maxiter)
    q_a, mu_hat, converged = _asimov_q(setup, jnp.asarray(0.0, dtype=jnp.float64), mu_test)
    q_a = jnp.where(mu_hat > mu_test, 0.0, q_a)
    # Median expected CLs = CLs+b / CLb with CLb = 1/2 at the median.
    return jnp.exp(log_ndtr(-safe_sqrt(q_a)) - jnp.log(0.5)), converged


def cls_loss(model: Any, mu_test: Float[ArrayLike, ""] = 1.0) -> Float[Array, ""]:
    """Median expected CLs of `mu = mu_test` for background-only data (the neos loss).

    Equal to `pyhf.infer.hypotest(mu_test, asimov_b, model, test_stat="qtilde",
    return_expected=True)` (both observed and median expected) with `asimov_b` the
    Asimov data at `mu = 0` and nominal nuisance parameters: `CLs = 2 Phi(-sqrt(q~_A))`.
    Minimising it maximises the expected exclusion power. It needs no observed data;
    `diffana.infer.hypotest(..., return_expected=True)` instead generates its Asimov
    data with the nuisance parameters fitted to the observed data (pyhf's expected
    CLs), which differs where the data pull them: use this one to optimise an analysis,
    that one to quote the expected limit of an observed result.

    **Arguments:**

    - `model`: a `diffana.hf.Model` with a parameter of interest.
    - `mu_test`: the tested signal strength (may be traced), default 1.

    **Returns:** expected CLs in `(0, 1]`, `()`.
    """
    where = "diffana.losses.cls_loss"
    setup = _Setup(model, None, None, None, None, where, DEFAULT_TOL, DEFAULT_MAXITER)
    value, converged = _cls_jit(
        jnp.asarray(mu_test, dtype=jnp.float64), *setup.args(), **setup.kwargs()
    )
    return report_convergence(converged, model, where, value)


@entry_jit
def _z0_jit(model, data, init, bounds, *, fixed, tol, maxiter, background_floor=0.0):
    model = floor_background(model, background_floor)
    setup = _Setup.core(model, data, init, bounds, fixed, tol, maxiter)
    q0_a, mu_hat, converged = _asimov_q(
        setup, jnp.asarray(1.0, dtype=jnp.float64), jnp.asarray(0.0, dtype=jnp.float64)
    )
    q0_a = jnp.where(mu_hat < 0, 0.0, q0_a)
    return safe_sqrt(q0_a), converged


BACKGROUND_FLOOR = 1e-3


def floor_background(model: Any, floor: float = BACKGROUND_FLOOR) -> Any:
    """`model` with its background-only expected rate raised to at least `floor`
    events in every main bin, at the model's nominal parameters with the POI at 0.

    A bin with signal but no background makes the discovery significance infinite (the
    background-only hypothesis is excluded with certainty by one event), and its
    gradient zero. The missing `floor - b` (zero where `b >= floor`, so other bins are
    untouched) is added to the nominal yields of the samples that contribute at
    `mu = 0`, divided among them and scaled by their modifiers' factors there, so that
    the background-only rate is exactly `floor`; the signal is unchanged. Models
    without `nominal` and `expected_by_sample` (not a `diffana.hf.Model`) are returned
    as they are.
    """
    if floor <= 0 or not hasattr(model, "nominal") or not hasattr(model, "expected_by_sample"):
        return model
    pars0 = jnp.asarray(model.init).at[model.poi_index].set(0.0)
    background = jnp.sum(model.expected_by_sample(pars0), axis=0)
    missing = jnp.maximum(floor - background, 0.0)
    # each sample's multiplicative factor at pars0 (its rate for a nominal yield of 1)
    factors = eqx.tree_at(lambda m: m.nominal, model, jnp.ones_like(model.nominal))
    factors = jax.lax.stop_gradient(factors.expected_by_sample(pars0))
    contributes = factors > 0
    share = contributes / jnp.maximum(jnp.sum(contributes, axis=0, keepdims=True), 1)
    extra = missing[None, :] * share / jnp.where(contributes, factors, 1.0)
    return eqx.tree_at(lambda m: m.nominal, model, model.nominal + extra)


def discovery_loss(model: Any, *, background_floor: float = BACKGROUND_FLOOR) -> Float[Array, ""]:
    """Negative median expected discovery significance, `-Z0_A = -sqrt(q0_A)`.

    `q0_A` is the discovery statistic on the Asimov data at `mu = 1` with nominal
    nuisance parameters (profiled in the fit at `mu = 0`), i.e. `-discovery(...).z0` on
    those data, or pyhf's `hypotest(0, asimov_sb, model, test_stat="q0")` as
    `Z = Phi^-1(1 - p0)`.

    A bin with signal and no background would make `Z0` infinite and its gradient zero
    (a training step could not move away from it): the background-only rate is floored
    at `background_floor` events per bin (:func:`floor_background`), which leaves any
    bin with at least that much background unchanged.

    **Arguments:**

    - `model`: a `diffana.hf.Model` with a parameter of interest.
    - `background_floor`: the least background-only rate per bin, in events (default
      `1e-3`; `0` switches the floor off).

    **Returns:** `-Z0`, `()`.
    """
    where = "diffana.losses.discovery_loss"
    setup = _Setup(model, None, None, None, None, where, DEFAULT_TOL, DEFAULT_MAXITER)
    z0, converged = _z0_jit(
        *setup.args(), **setup.kwargs(), background_floor=float(background_floor)
    )
    return -report_convergence(converged, model, where, z0)


def poi_uncertainty_loss(model: Any) -> Float[Array, ""]:
    """Cramér-Rao `sigma(POI)` at the model's nominal parameters (the INFERNO loss).

    The expected Fisher information at `model.init` is inverted over the floating
    parameters, so nuisance parameters are profiled (see
    :func:`diffana.infer.poi_uncertainty`). No fit is needed.

    **Arguments:**

    - `model`: a `diffana.hf.Model` with a parameter of interest.

    **Returns:** `sigma(POI)`, `()`.
    """
    return poi_uncertainty(model, None)


def bce_loss(
    logits: Float[ArrayLike, " events"],
    labels: Float[ArrayLike, " events"],
    weights: Float[ArrayLike, " events"] | None = None,
) -> Float[Array, ""]:
    """Mean binary cross-entropy of classifier logits (the standard-classifier baseline).

    Computed from logits in the numerically stable form
    (`optax.sigmoid_binary_cross_entropy`), optionally event-weighted:
    `sum(w * bce) / sum(w)`.

    **Arguments:**

    - `logits`: classifier outputs before the sigmoid, `(events,)`.
    - `labels`: targets in `[0, 1]` (1 = signal), `(events,)`.
    - `weights`: per-event weights, `(events,)`, or `None`.

    **Returns:** the mean loss, `()`.

    Example:

    >>> import jax.numpy as jnp
    >>> from diffana.losses import bce_loss
    >>> round(float(bce_loss(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0]))), 6)
    0.693147
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels, dtype=logits.dtype)
    if logits.shape != labels.shape:
        raise ValueError(
            f"bce_loss: 'logits' {logits.shape} and 'labels' {labels.shape} must match"
        )
    per_event = optax.sigmoid_binary_cross_entropy(logits, labels)
    if weights is None:
        return jnp.mean(per_event)
    check_float64(weights, "weights", "diffana.losses.bce_loss")
    weights = jnp.asarray(weights)
    if weights.shape != logits.shape:
        raise ValueError(f"bce_loss: 'weights' {weights.shape} must match 'logits' {logits.shape}")
    return jnp.sum(weights * per_event) / jnp.sum(weights)
