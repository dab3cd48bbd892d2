"""HistFactory models in pure JAX with pyhf's semantics.

`Model.from_pyhf` reads a pyhf workspace or model spec (validated against pyhf's JSON
schema) and gives pyhf's numbers for `expected_data` and `logpdf`, in the same parameter
order. Its yields and modifier data may be JAX tracers, so a model can be built inside a
differentiated, jitted or vmapped function from (soft) histograms.

Example:

>>> import jax
>>> import jax.numpy as jnp
>>> import diffana.hf
>>> def nll_at_nominal(signal):
...     spec = {"channels": [{"name": "SR", "samples": [
...         {"name": "sig", "data": signal,
...          "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
...         {"name": "bkg", "data": jnp.array([50.0, 60.0]), "modifiers": []}]}]}
...     model = diffana.hf.Model.from_pyhf(spec)
...     data = jnp.array([52.0, 75.0] + model.auxdata.tolist())
...     return model.nll(model.init, data)
>>> jax.grad(nll_at_nominal)(jnp.array([5.0, 10.0])).round(4).tolist()
[0.0545, -0.0714]
"""

from diffana.hf._builders import (
    correlated_background,
    histosys_from_variations,
    normsys_from_variations,
    simple_model,
    uncorrelated_background,
)
from diffana.hf._hs3_model import hs3_data, to_hs3
from diffana.hf._model import Model, load_spec, workspace_data

__all__ = [
    "Model",
    "correlated_background",
    "histosys_from_variations",
    "hs3_data",
    "load_spec",
    "normsys_from_variations",
    "simple_model",
    "to_hs3",
    "uncorrelated_background",
    "workspace_data",
]
