"""Package-level behaviour: float64 policy, errors, testing helpers."""

from __future__ import annotations

import subprocess
import sys
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import diffana
from diffana.testing import assert_grad_matches_fd, finite_difference_grad


def test_import_enables_x64():
    assert diffana.x64_enabled()
    assert jnp.zeros(1).dtype == jnp.float64


def test_opt_out_of_x64_warns_once_at_the_users_line_and_refuses_cls():
    """With DIFFANA_DISABLE_X64=1 a short analysis gets one PrecisionWarning, pointing
    at its own line (not at diffana's or jax's), and CLs/limits raise PrecisionError."""
    code = (
        "import os, warnings; os.environ['DIFFANA_DISABLE_X64']='1'\n"
        "import diffana, jax.numpy as jnp\n"
        "from diffana import hf, infer\n"
        "assert not diffana.x64_enabled()\n"
        "with warnings.catch_warnings(record=True) as w:  # the default filters\n"
        "    model = hf.simple_model([5.0, 10.0], [50.0, 60.0])\n"
        "    data = jnp.asarray([55.0, 70.0])\n"
        "    infer.fit(data, model)  # line 8\n"
        "    infer.fixed_poi_fit(1.0, data, model)\n"
        "    for call in (lambda: infer.hypotest(1.0, data, model),\n"
        "                 lambda: infer.upper_limit(data, model)):\n"
        "        try:\n"
        "            call()\n"
        "        except diffana.PrecisionError as e:\n"
        "            assert 'needs float64' in str(e) and 'DIFFANA_DISABLE_X64' in str(e)\n"
        "        else:\n"
        "            raise AssertionError('no PrecisionError')\n"
        "assert [(x.category, x.lineno) for x in w] == [(diffana.PrecisionWarning, 8)], [\n"
        "    (x.category.__name__, x.filename, x.lineno, str(x.message)) for x in w]\n"
        "assert w[0].filename == '<string>', w[0].filename\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"DIFFANA_CPU_ASYNC_DISPATCH": "1"}, True),
        ({"JAX_CPU_ENABLE_ASYNC_DISPATCH": "1"}, True),
    ],
)
def test_import_switches_cpu_dispatch_to_synchronous_unless_opted_out(env, expected):
    import os

    code = (
        "import diffana, jax\n"
        f"assert jax.config.read('jax_cpu_enable_async_dispatch') is {expected}\n"
    )
    clean = {k: v for k, v in os.environ.items() if "ASYNC_DISPATCH" not in k}
    subprocess.run([sys.executable, "-c", code], check=True, env={**clean, **env})


def test_compiler_options_change_no_result():
    """The recommended options compile (they are probed) and a vmapped batch of
    hypothesis tests with them equals the one compiled with the defaults."""
    import jax

    from diffana import hf, infer

    opts = diffana.compiler_options()
    assert isinstance(opts, dict)
    if jax.default_backend() == "cpu" and jax.__version_info__ >= (0, 10):
        assert opts  # known to this XLA: the probe must not fail silently
    model = hf.correlated_background([2.0, 5.0], [50.0, 40.0], [55.0, 42.0], [45.0, 38.0])
    data = jnp.stack([model.expected_data(model.init) + k for k in (0.0, 3.0, -4.0)])

    def cls(d):
        return jax.value_and_grad(lambda d_: infer.hypotest(1.0, d_, model))(d)

    with infer.runtime_convergence_checks(False):
        default = jax.jit(jax.vmap(cls))(data)
        tuned = jax.jit(jax.vmap(cls), compiler_options=opts)(data)
    for a, b in zip(default, tuned, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_unknown_compiler_options_are_dropped(monkeypatch):
    from diffana import _config

    monkeypatch.setattr(_config, "_CPU_OPTIONS", {"xla_cpu_no_such_option": "1"})
    _config.compiler_options.cache_clear()
    try:
        if _config.jax.default_backend() == "cpu":
            assert _config.compiler_options() == {}
    finally:
        _config.compiler_options.cache_clear()


def test_entry_points_give_one_result_at_the_top_level_and_inside_transformations():
    """A fit compiles with the entry options when called directly and with the outer
    program's inside `jit`, `vmap` and `grad` (JAX refuses options on a nested `jit`);
    the best-fit point is the same either way."""
    import jax

    from diffana import _config, hf, infer

    opts = _config.entry_compiler_options()
    if jax.default_backend() == "cpu" and jax.__version_info__ >= (0, 10):
        assert opts == _config._ENTRY_CPU_OPTIONS  # the probe must not fail silently
    model = hf.correlated_background([2.0, 5.0], [50.0, 40.0], [55.0, 42.0], [45.0, 38.0])
    data = model.expected_data(model.init) + jnp.asarray([3.0, -2.0, 0.0])
    direct = infer.fit(data, model).pars
    with infer.runtime_convergence_checks(False):
        jitted = jax.jit(lambda d: infer.fit(d, model).pars)(data)
        batched = jax.vmap(lambda d: infer.fit(d, model).pars)(data[None])[0]
        nll_grad = jax.grad(lambda d: infer.fit(d, model).nll)(data)
    np.testing.assert_allclose(jitted, direct, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(batched, direct, rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(nll_grad))


def test_under_vmap_sees_a_batching_trace_at_any_depth():
    """Fits choose their algorithm by `under_vmap` (vmapped batches of small models, or
    fits one after the other): it must see `vmap` through `jit` and `grad`, and only
    `vmap`."""
    import jax

    from diffana import _config

    seen = []

    def probe(x):
        seen.append(_config.under_vmap())
        return x * 2.0

    x = jnp.ones(2)
    probe(1.0)
    jax.jit(probe)(1.5)
    jax.grad(probe)(2.0)
    assert seen == [False, False, False]
    jax.vmap(probe)(x)
    jax.jit(jax.vmap(jax.grad(probe)))(x)
    jax.vmap(jax.jit(probe))(x + 1.0)
    jax.jacfwd(lambda v: probe(v) ** 2)(x)
    assert seen[3:] == [True, True, True, True]


def test_float32_input_warns_naming_argument():
    with pytest.warns(diffana.PrecisionWarning, match="'yields'"):
        diffana.check_float64(jnp.zeros(2, dtype=jnp.float32), "yields", "Model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diffana.check_float64(jnp.zeros(2), "yields", "Model")


def test_spec_error_is_value_error():
    assert issubclass(diffana.SpecError, ValueError)
    assert issubclass(diffana.SpecError, diffana.DiffanaError)


def test_finite_differences_of_known_function():
    x = np.array([0.3, -1.2, 4.0])
    fd = finite_difference_grad(lambda v: jnp.sum(v**3), x)
    np.testing.assert_allclose(fd, 3 * x**2, rtol=1e-8)


def test_grad_check_catches_wrong_gradient():
    import jax

    @jax.custom_jvp
    def wrong(x):
        return jnp.sum(x**2)

    @wrong.defjvp
    def _wrong_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return wrong(x), jnp.sum(3 * x * t)  # deliberately wrong: 3x instead of 2x

    with pytest.raises(AssertionError):
        assert_grad_matches_fd(wrong, jnp.array([1.0, 2.0]))
    assert_grad_matches_fd(lambda v: jnp.sum(v**2), jnp.array([1.0, 2.0]))
