"""Property-based agreement with pyhf on random workspaces (hypothesis).

1-3 channels of 1-30 bins, every modifier type, modifiers shared across samples and
channels (including a normsys and a histosys with the same name), zero-yield bins,
parameter configs from the measurement, and parameters at and near their bounds.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import diffana.hf as hf

SAMPLES = ("bkg1", "bkg2", "bkg3", "sig")
SETTINGS = (
    None,
    {"normsys": {"interpcode": "code1"}},
    {"histosys": {"interpcode": "code4p"}},
    {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code0"}},
)


def _histogram(rng: np.random.Generator, n: int, zero_fraction: float) -> list[float]:
    values = rng.uniform(0.5, 80.0, n) * (rng.uniform(size=n) >= zero_fraction)
    return values.round(3).tolist()


@st.composite
def random_specs(draw: st.DrawFn) -> tuple[dict, dict | None, int]:
    """A random pyhf workspace or model spec, its modifier settings and a numpy seed."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    channel_names = draw(st.permutations(["SR", "CRa", "CRb", "VR"]))[: draw(st.integers(1, 3))]
    nbins = {c: draw(st.integers(1, 30)) for c in channel_names}
    widest = max(nbins.values())
    zero_fraction = draw(st.sampled_from([0.0, 0.2, 0.5]))
    uses_lumi = False
    channels = []
    for c in channel_names:
        n = nbins[c]
        samples = []
        for s in draw(st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=3, unique=True)):
            data = _histogram(rng, n, zero_fraction)
            nominal = np.asarray(data)
            mods: list[dict[str, Any]] = []
            if draw(st.booleans()):
                mods.append({"name": draw(st.sampled_from(["mu", "k"])), "type": "normfactor"})
            for _ in range(draw(st.integers(0, 2))):
                name = draw(st.sampled_from(["n1", "n2", "shared"]))
                lo, hi = rng.uniform(0.6, 1.1), rng.uniform(0.9, 1.5)
                mods.append({"name": name, "type": "normsys", "data": {"lo": lo, "hi": hi}})
            for _ in range(draw(st.integers(0, 2))):
                name = draw(st.sampled_from(["h1", "h2", "shared"]))
                hi = (nominal * rng.uniform(0.85, 1.3, n)).round(3).tolist()
                lo = (nominal * rng.uniform(0.7, 1.15, n)).round(3).tolist()
                mods.append(
                    {"name": name, "type": "histosys", "data": {"hi_data": hi, "lo_data": lo}}
                )
            if draw(st.booleans()):
                unc = nominal * rng.uniform(0.0, 0.3, n) * (rng.uniform(size=n) > 0.1)
                mods.append({"name": f"stat_{c}", "type": "staterror", "data": unc.tolist()})
            if draw(st.booleans()):
                unc = nominal * rng.uniform(0.0, 0.3, n) * (rng.uniform(size=n) > 0.1)
                mods.append({"name": f"ss_{c}_{s}", "type": "shapesys", "data": unc.tolist()})
            if draw(st.booleans()):
                mods.append({"name": "lumi", "type": "lumi"})
                uses_lumi = True
            if draw(st.booleans()):
                shared = n == widest and draw(st.booleans())
                mods.append({"name": "sf" if shared else f"sf_{c}", "type": "shapefactor"})
            # pyhf forbids two modifiers of one (name, type) on a sample
            unique = {(m["name"], m["type"]): m for m in mods}
            mods = [{**m, "data": m.get("data")} for m in unique.values()]
            samples.append({"name": s, "data": data, "modifiers": mods})
        channels.append({"name": c, "samples": samples})
    if not any(m for ch in channels for smp in ch["samples"] for m in smp["modifiers"]):
        channels[0]["samples"][0]["modifiers"].append(
            {"name": "mu", "type": "normfactor", "data": None}
        )

    names = {m["name"] for ch in channels for smp in ch["samples"] for m in smp["modifiers"]}
    parameters: list[dict[str, Any]] = []
    if uses_lumi:
        sigma = float(rng.uniform(0.01, 0.2))
        parameters.append(
            {"name": "lumi", "auxdata": [1.0], "sigmas": [sigma], "inits": [1.0],
             "bounds": [[1.0 - 5 * sigma, 1.0 + 5 * sigma]]}
        )  # fmt: skip
    if "mu" in names and draw(st.booleans()):
        parameters.append({"name": "mu", "bounds": [[0.0, 5.0]], "inits": [0.5]})
    if "n1" in names and draw(st.booleans()):
        parameters.append({"name": "n1", "auxdata": [0.3], "fixed": draw(st.booleans())})
    stat = sorted(n for n in names if n.startswith("stat_"))
    if stat and draw(st.booleans()):
        parameters.append({"name": stat[0], "fixed": True})
    if draw(st.booleans()):
        parameters.append({"name": "not_in_model", "inits": [2.0], "bounds": [[0.0, 3.0]]})

    spec: dict[str, Any] = {"channels": channels}
    if draw(st.booleans()):
        model = hf.Model.from_pyhf({"channels": channels, "parameters": parameters}, poi_name=None)
        observed = rng.poisson(np.asarray(model.nominal).sum(axis=0)).astype(float)
        poi = "mu" if "mu" in names else ""
        spec["measurements"] = [{"name": "meas", "config": {"poi": poi, "parameters": parameters}}]
        spec["observations"] = [
            {"name": c, "data": observed[sl].tolist()} for c, sl in model.channel_slices.items()
        ]
        spec["version"] = "1.0.0"
    else:
        spec["parameters"] = parameters
    return spec, draw(st.sampled_from(SETTINGS)), seed


def _points(model: hf.Model, rng: np.random.Generator) -> list[np.ndarray]:
    init = np.asarray(model.init)
    lo, hi = np.asarray(model.bounds).T
    span = hi - lo
    points = [init]
    for _ in range(5):
        candidates = np.stack(
            [
                init,
                lo,
                hi,
                lo + 1e-7 * span,
                hi - 1e-7 * span,
                lo + rng.uniform(0.0, 1.0, init.size) * span,
                np.clip(init + rng.normal(0.0, 0.3, init.size), lo, hi),
            ]
        )
        choice = rng.integers(0, len(candidates), init.size)
        points.append(candidates[choice, np.arange(init.size)])
    return points


def _data(model: hf.Model, rng: np.random.Generator) -> np.ndarray:
    main = np.asarray(model.nominal).sum(axis=0)
    main = rng.poisson(main).astype(float) + rng.choice([0.0, 0.5], main.size)
    aux = np.asarray(model.auxdata) * rng.uniform(0.9, 1.1, model.nauxdata)
    return np.concatenate([main, aux])


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=random_specs())
def test_random_workspaces_agree_with_pyhf(case, pyhf_referee):
    spec, modifier_settings, seed = case
    rng = np.random.default_rng(seed + 1)
    is_workspace = "measurements" in spec
    model = hf.Model.from_pyhf(spec, modifier_settings=modifier_settings)
    poi = None if is_workspace else ("mu" if "mu" in model.par_order else None)
    pyhf_referee(
        spec,
        modifier_settings=modifier_settings,
        poi_name=poi,
        points=_points(model, rng),
        data=_data(model, rng),
        model=model,
    )


def _split_numbers(obj: Any, arrays: list[jax.Array]) -> Any:
    """The spec with every numeric list/number replaced by a slot; arrays collected."""
    if isinstance(obj, dict):
        return {k: _split_numbers(v, arrays) for k, v in obj.items()}
    if (
        isinstance(obj, list)
        and obj
        and all(isinstance(x, float | int) and not isinstance(x, bool) for x in np.ravel(obj))
    ):
        arrays.append(jnp.asarray(obj, dtype=float))
        return ("slot", len(arrays) - 1)
    if isinstance(obj, float) and not isinstance(obj, bool):
        arrays.append(jnp.asarray(obj))
        return ("slot", len(arrays) - 1)
    if isinstance(obj, list):
        return [_split_numbers(v, arrays) for v in obj]
    return obj


def _fill(template: Any, arrays: list[jax.Array]) -> Any:
    if isinstance(template, dict):
        return {k: _fill(v, arrays) for k, v in template.items()}
    if isinstance(template, tuple) and template[:1] == ("slot",):
        return arrays[template[1]]
    if isinstance(template, list):
        return [_fill(v, arrays) for v in template]
    return template


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=random_specs())
def test_traced_construction_agrees_with_pyhf(case, pyhf_model, assert_logpdf_close):
    # the model is built inside jit from traced numbers (the path of differentiable
    # analyses); its numbers must be the same as pyhf's
    spec, modifier_settings, seed = case
    rng = np.random.default_rng(seed + 2)
    concrete = hf.Model.from_pyhf(spec, modifier_settings=modifier_settings)
    points = np.stack(_points(concrete, rng))
    data = _data(concrete, rng)
    arrays: list[jax.Array] = []
    template = _split_numbers(spec, arrays)

    @jax.jit
    def evaluate(arrays: list[jax.Array]) -> tuple[jax.Array, ...]:
        model = hf.Model.from_pyhf(_fill(template, arrays), modifier_settings=modifier_settings)
        return (
            model.init,
            model.bounds,
            model.auxdata,
            jax.vmap(model.expected_data)(jnp.asarray(points)),
            jax.vmap(model.logpdf, in_axes=(0, None))(jnp.asarray(points), jnp.asarray(data)),
        )

    init, bounds, auxdata, expected, logpdf = (np.asarray(x) for x in evaluate(arrays))
    poi = None if "measurements" in spec else ("mu" if "mu" in concrete.par_order else None)
    ref = pyhf_model(spec, modifier_settings, poi)
    np.testing.assert_allclose(init, ref.config.suggested_init(), rtol=1e-12)
    np.testing.assert_allclose(bounds, np.array(ref.config.suggested_bounds()), rtol=1e-12)
    np.testing.assert_allclose(auxdata, ref.config.auxdata, rtol=1e-12)
    for pars, exp, lp in zip(points, expected, logpdf, strict=True):
        exp_ref = ref.expected_data(pars)
        np.testing.assert_allclose(exp, exp_ref, rtol=1e-9, atol=1e-12 * np.max(exp_ref))
        assert_logpdf_close(float(lp), float(ref.logpdf(pars, data)[0]), f"pars={pars}")
