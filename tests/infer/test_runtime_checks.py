"""Run-time convergence checks of traced fits: a host call only for a fit that did not
converge, one per batch under vmap, and none at all when traced with the checks off.

These are the guarantees behind "no host round trip inside a converged training step"
(also on a GPU): the compiled step may hold a host callback only inside a conditional
branch that a converged fit never takes.
"""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import diffana
import diffana.infer._mle as mle
from diffana import hf, infer, losses, relax

TEMPLATES = jnp.asarray(
    [
        [1.5, 3.2, 6.1, 9.2],
        [42.0, 30.5, 18.0, 9.5],
        [60.0, 25.0, 10.0, 5.0],
        [20.0, 30.0, 30.0, 20.0],
    ]
)
_EDGE = re.compile(
    r"(calls|to_apply|body|condition|true_computation|false_computation)=%([\w.\-]+)"
    r"|branch_computations=\{([^}]*)\}"
)


def _host_calls_outside_conditionals(hlo: str) -> tuple[int, int]:
    """`(callbacks reachable from ENTRY without passing a conditional, all callbacks)` in
    a compiled module's text."""
    comps: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo.splitlines():
        head = re.match(r"^(ENTRY )?%([\w.\-]+) .*\{$", line)
        if head:
            current = head.group(2)
            comps[current] = []
            entry = current if head.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None:
            comps[current].append(line)

    def is_callback(line: str) -> bool:
        return re.search(r'custom_call_target="[^"]*callback[^"]*"', line) is not None

    assert entry is not None, "no ENTRY computation found in the compiled module's text"
    total = sum(is_callback(line) for lines in comps.values() for line in lines)
    seen, stack, unconditional = set(), [entry], 0
    while stack:
        name = stack.pop()
        if name in seen or name not in comps:
            continue
        seen.add(name)
        for line in comps[name]:
            unconditional += is_callback(line)
            if " conditional(" in line:
                continue  # its branches run only when the predicate selects them
            for m in _EDGE.finditer(line):
                targets = [m.group(2)] if m.group(2) else re.findall(r"%([\w.\-]+)", m.group(3))
                stack.extend(targets)
    return unconditional, total


def _neos_step(n_events: int = 200):
    """A small neos training step: network -> KDE histograms -> model -> CLs -> adam."""
    key = jax.random.PRNGKey(0)
    k1, k2, k3 = jax.random.split(key, 3)
    params = {
        "w1": 0.5 * jax.random.normal(k1, (2, 8), dtype=jnp.float32),
        "w2": 0.5 * jax.random.normal(k2, (8, 1), dtype=jnp.float32),
    }
    means = jnp.asarray([[-1.0, 1.0], [1.0, -1.0], [2.5, 2.0], [-2.5, -1.5]])
    x = jax.random.normal(k3, (4, n_events, 2)) + means[:, None, :]
    scale = jnp.asarray([20.0, 100.0, 100.0, 100.0]) / n_events
    edges = jnp.linspace(0.0, 1.0, 5)
    opt = optax.adam(1e-3)

    def loss(p):
        s = jax.nn.sigmoid(jnp.tanh(x.astype(jnp.float32) @ p["w1"]) @ p["w2"])[..., 0]
        h = jax.vmap(lambda v: relax.hist(v.astype(jnp.float64), edges, 0.09))(s)
        h = h * scale[:, None] + 1e-3
        return losses.cls_loss(hf.correlated_background(h[0], h[1], h[2], h[3]))

    def step(p, state):
        value, grad = jax.value_and_grad(loss)(p)
        updates, state = opt.update(grad, state, p)
        return optax.apply_updates(p, updates), state, value

    return step, params, opt.init(params)


def test_training_step_holds_host_calls_only_in_conditional_branches():
    step, params, state = _neos_step()
    hlo = jax.jit(step).lower(params, state).compile().as_text()
    unconditional, total = _host_calls_outside_conditionals(hlo)
    assert total >= 1  # the convergence check is compiled in...
    assert unconditional == 0  # ...but only behind the "not converged" branch
    # the setting is read at trace time, so trace a new function (jax.jit would reuse
    # the trace of `step` made above)
    step_off, params, state = _neos_step()
    with infer.runtime_convergence_checks(False):
        hlo_off = jax.jit(step_off).lower(params, state).compile().as_text()
    assert _host_calls_outside_conditionals(hlo_off) == (0, 0)


def test_converged_steps_make_no_host_call(monkeypatch):
    calls = []
    monkeypatch.setattr(mle, "_warn_unconverged", lambda *a: calls.append(a))
    step, params, state = _neos_step()
    jitted = jax.jit(step)
    for _ in range(3):
        params, state, value = jitted(params, state)
    jax.block_until_ready(value)
    assert np.isfinite(float(value))
    assert calls == []


def test_one_host_call_per_batch_of_unconverged_fits(monkeypatch):
    calls = []
    monkeypatch.setattr(mle, "_warn_unconverged", lambda c, *a: calls.append(np.asarray(c)))
    model = hf.correlated_background(*TEMPLATES)
    # Data away from the start: one iteration cannot converge (at the start it would,
    # the fit then only polishing its result).
    away = model.init.at[model.poi_index].set(2.0)
    data = jnp.stack([model.expected_data(away)] * 3)
    batched = jax.jit(jax.vmap(lambda d: infer.fit(d, model, maxiter=1).converged))
    converged = jax.block_until_ready(batched(data))
    jax.effects_barrier()
    assert not np.any(np.asarray(converged))
    assert len(calls) == 1 and calls[0].shape == (3,)


def test_checks_off_trace_without_callbacks_and_keep_the_flags():
    model = hf.correlated_background(*TEMPLATES)
    data = model.expected_data(model.init.at[model.poi_index].set(0.5))
    with infer.runtime_convergence_checks(False):
        f = jax.jit(lambda d: infer.fit(d, model, maxiter=1))
        hlo = f.lower(data).compile().as_text()
    assert _host_calls_outside_conditionals(hlo) == (0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no run-time warning...
        res = jax.block_until_ready(f(data))
    assert not bool(res.converged)  # ...but the flag is there
    # the setting is read at trace time: functions traced afterwards warn again
    with pytest.warns(diffana.ConvergenceWarning, match="did not converge"):
        jax.block_until_ready(jax.jit(lambda d: infer.fit(d, model, maxiter=1))(data))
        jax.effects_barrier()


def test_traced_checks_keep_the_fast_dispatch_path():
    """The check is a callback without side effects (`jax.pure_callback`): the traced
    function holds no effect, which would take it off JAX's fast dispatch path, and its
    values and gradients are those traced without the check (to the rounding of a
    differently fused program)."""
    model = hf.correlated_background(*TEMPLATES)
    data = model.expected_data(model.init.at[model.poi_index].set(0.5))

    def f(h, d):
        m = hf.correlated_background(*h)
        return infer.hypotest(1.0, d, m, return_expected=True)[0] + losses.cls_loss(m)

    vg = jax.value_and_grad(f)
    assert jax.make_jaxpr(vg)(TEMPLATES, data).effects == set()
    hlo = jax.jit(vg).lower(TEMPLATES, data).compile().as_text()
    assert _host_calls_outside_conditionals(hlo)[1] >= 1  # the check is there
    with infer.runtime_convergence_checks(False):
        off = jax.jit(jax.value_and_grad(f))(TEMPLATES, data)
    on = jax.jit(vg)(TEMPLATES, data)
    np.testing.assert_allclose(on[0], off[0], rtol=1e-13)
    np.testing.assert_allclose(on[1], off[1], rtol=1e-12)


@pytest.mark.parametrize("part", ["pars", "nll", "converged"])
def test_any_part_of_a_result_keeps_its_check(part):
    """The check is tied to every part of a result, so a function that uses only one of
    them, or only a gradient, still warns."""
    model = hf.correlated_background(*TEMPLATES)
    away = model.init.at[model.poi_index].set(2.0)
    data = model.expected_data(away)

    def f(d):
        res = infer.fixed_poi_fit(1.0, d, model, maxiter=1)
        return jnp.sum(getattr(res, part).astype(jnp.float64))

    fn = jax.grad(f) if part != "converged" else f
    with pytest.warns(diffana.ConvergenceWarning, match="fixed_poi_fit"):
        jax.block_until_ready(jax.jit(fn)(data))


def test_a_gradient_of_hypotest_alone_warns():
    model = hf.correlated_background(*TEMPLATES)
    data = model.expected_data(model.init.at[model.poi_index].set(2.0))
    grad = jax.jit(jax.grad(lambda d: infer.hypotest(1.0, d, model, maxiter=1)))
    with pytest.warns(diffana.ConvergenceWarning, match="hypotest"):
        jax.block_until_ready(grad(data))
