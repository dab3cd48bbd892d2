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


def test_opt_out_of_x64_warns_on_statistics():
    code = (
        "import os, warnings; os.environ['DIFFANA_DISABLE_X64']='1'\n"
        "import diffana, jax.numpy as jnp\n"
        "assert not diffana.x64_enabled()\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    diffana.check_float64(jnp.zeros(2), 'yields', 'test')\n"
        "assert any(issubclass(x.category, diffana.PrecisionWarning) for x in w), w\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


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
