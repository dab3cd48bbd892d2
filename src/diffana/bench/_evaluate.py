"""Honest evaluation: the hard twin of a trained pipeline on independent test events,
full profile-likelihood statistics with diffana, and pyhf's numbers on the exported
workspace beside them."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.stats

from diffana import hf, infer
from diffana._config import entry_jit
from diffana.problems import Problem, Sample, TemplateKey
from diffana.problems._workspace import to_json_compatible

__all__ = [
    "CLS_TOYS",
    "COVERAGE_TOYS",
    "METRICS",
    "evaluate_yields",
    "hard_yields",
    "neutralise_empty_bins",
    "profile_width",
    "pyhf_referee",
    "template_key_str",
    "toy_metrics",
]

#: Metrics of every evaluated analysis, with their meaning (the report's legend).
METRICS = {
    "cls": "expected CLs at mu = 1 (qtilde, background-only Asimov data), diffana",
    "z0": "expected discovery significance Z0 (Asimov data at mu = 1), diffana",
    "sigma_poi_fisher": "Cramér-Rao sigma of the POI (Fisher information, nuisances "
    "profiled), physical units",
    "sigma_poi_profile": "half-width of the profile likelihood at Delta NLL = 0.5 "
    "(Asimov data at mu = 1), physical units",
    "pyhf_cls": "expected CLs at mu = 1 from pyhf on the exported workspace (the referee)",
    "pyhf_z0": "expected Z0 from pyhf on the exported workspace (the referee)",
    "cls_toys": "expected CLs at mu = 1 from pseudo-experiments (median of the "
    "background-only toys, qtilde): where it differs from `cls`, the asymptotic formulae "
    "do not hold for this analysis",
    "coverage_mu<v>": "coverage of the 68.27% profile-likelihood interval for mu over "
    "pseudo-experiments thrown at mu = v (nuisance parameters at their nominal values)",
    "interval_width": "mean width of those intervals over all toys, physical units",
    "fair_score": "FAIR Universe HiggsML Uncertainty Challenge score of those intervals "
    "(pooled; widths in units of mu; higher is better)",
}
#: Pseudo-experiments per true value of mu in the coverage study, and per hypothesis for
#: the toy-based CLs, by mode: few in the default mode (minutes for the whole benchmark),
#: more with ``--full``.
COVERAGE_TOYS = {"quick": 20, "default": 200, "full": 1000}
CLS_TOYS = {"quick": 100, "default": 1000, "full": 5000}


def template_key_str(key: TemplateKey) -> str:
    """``("background", "r_up") -> "background/r_up"`` (JSON keys)."""
    return f"{key[0]}/{key[1]}"


@eqx.filter_jit
def _hard_chunk(pipeline, x, w):
    return pipeline.hard_histogram(Sample(x, w))


def hard_yields(
    pipeline: Any, templates: Mapping[TemplateKey, Sample], chunk: int = 65536
) -> tuple[dict[TemplateKey, np.ndarray], dict[TemplateKey, np.ndarray]]:
    """Hard-twin histograms of every template, in chunks of `chunk` events.

    **Returns:** ``(yields, counts)``: weighted yields and raw integer event counts (unit
    weights) per template, numpy float64.
    """
    yields, counts = {}, {}
    for key, s in templates.items():
        x, w = np.asarray(s.x, dtype=np.float64), np.asarray(s.w, dtype=np.float64)
        n = x.shape[0]
        size = min(chunk, max(n, 1))  # one compiled shape for every chunk
        tot_y = tot_c = None
        for start in range(0, max(n, 1), size):
            xc, wc = x[start : start + size], w[start : start + size]
            real = np.ones(size)
            pad = size - xc.shape[0]
            if pad:  # padding events weigh 0 and are not counted
                xc = np.concatenate([xc, np.zeros((pad, x.shape[1]))])
                wc = np.concatenate([wc, np.zeros(pad)])
                real[size - pad :] = 0.0
            y = np.asarray(_hard_chunk(pipeline, jnp.asarray(xc), jnp.asarray(wc)))
            c = np.asarray(_hard_chunk(pipeline, jnp.asarray(xc), jnp.asarray(real)))
            tot_y = y if tot_y is None else tot_y + y
            tot_c = c if tot_c is None else tot_c + c
        yields[key] = np.asarray(tot_y, dtype=np.float64)
        counts[key] = np.rint(np.asarray(tot_c, dtype=np.float64))
    return yields, counts


def profile_width(model: Any, asimov: Any, sigma_guess: float, poi_value: float = 1.0) -> float:
    """Half-width of the profile likelihood in the POI at ``2 Delta NLL = 1``.

    Profiles the nuisance parameters with `diffana.infer.fixed_poi_fit` on `asimov` (data
    generated at `poi_value`, whose minimum is the generating point) and finds the
    crossings on both sides with Brent's method. Returns ``(hi - lo) / 2``, or
    ``hi - poi_value`` if the lower crossing does not exist (an expected yield would turn
    negative); NaN if no crossing is found.
    """
    nll0 = float(_profile_nll(jnp.asarray(poi_value, dtype=jnp.float64), model, asimov))

    def f(mu):
        value = float(_profile_nll(jnp.asarray(mu, dtype=jnp.float64), model, asimov))
        return 2.0 * (value - nll0) - 1.0

    def crossing(sign):
        step = max(sigma_guess, 1e-3) if math.isfinite(sigma_guess) else 0.1
        a = poi_value
        for _ in range(30):
            b = poi_value + sign * step
            fb = f(b)
            if not math.isfinite(fb):
                return None
            if fb > 0:
                return scipy.optimize.brentq(f, a, b, xtol=1e-6 * step, rtol=1e-8)
            a, step = b, step * 2.0
        return None

    hi = crossing(+1.0)
    if hi is None:
        return float("nan")
    lo = crossing(-1.0)
    if lo is None:
        return hi - poi_value
    return 0.5 * (hi - lo)


def pyhf_referee(workspace: Mapping[str, Any], settings: Mapping[str, Any] | None) -> dict:
    """pyhf's expected CLs at mu = 1 and expected Z0 on an exported workspace."""
    import pyhf

    pyhf.set_backend("numpy", "scipy")
    ws = pyhf.Workspace(dict(workspace))
    kwargs = {"modifier_settings": dict(settings)} if settings else {}
    model = ws.model(**kwargs)
    init = np.asarray(model.config.suggested_init(), dtype=np.float64)
    poi = model.config.poi_index
    b_pars, sb_pars = init.copy(), init.copy()
    b_pars[poi], sb_pars[poi] = 0.0, 1.0
    asimov_b = model.expected_data(b_pars)
    asimov_sb = model.expected_data(sb_pars)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls = float(pyhf.infer.hypotest(1.0, asimov_b, model, test_stat="qtilde"))
        p0 = float(pyhf.infer.hypotest(0.0, asimov_sb, model, test_stat="q0"))
    return {"pyhf_cls": cls, "pyhf_z0": float(scipy.stats.norm.isf(p0))}


def _nominal_pars(model) -> np.ndarray:
    pars = np.asarray(model.init, dtype=np.float64).copy()
    return pars


def neutralise_empty_bins(
    problem: Problem, yields: Mapping[TemplateKey, np.ndarray], floor: float = 1e-6
) -> tuple[dict[TemplateKey, np.ndarray], int]:
    """Take bins without nominal background out of the statistics.

    A hard selection can leave a bin with signal but no background Monte Carlo event; its
    expected background is then zero and the bin would claim unlimited sensitivity from
    Monte Carlo statistics alone. The INFERNO paper drops such bins. Dropping changes the
    number of bins (and so recompiles every fit); instead every template is set to a
    constant `floor` in those bins and the signal to zero, which makes their Poisson
    terms independent of every parameter: the same statistics as dropping them.

    **Returns:** ``(yields, n_neutralised)``.
    """
    nominal_b = sum(np.asarray(yields[(b, "nominal")]) for b in problem.background_samples)
    empty = ~(np.asarray(nominal_b) > 0)
    if not empty.any():
        return {k: np.asarray(v, dtype=np.float64) for k, v in yields.items()}, 0
    out = {}
    for (sample, variation), v in yields.items():
        v = np.asarray(v, dtype=np.float64).copy()
        if sample in problem.signal_samples:
            v[empty] = 0.0
        else:  # a sum-of-squared-weights template gets floor**2: 100% relative uncertainty
            v[empty] = floor**2 if variation == "sumw2" else floor
        out[(sample, variation)] = v
    return out, int(empty.sum())


def evaluate_yields(
    problem: Problem,
    yields: Mapping[TemplateKey, np.ndarray],
    scenarios: Sequence[str],
    *,
    referee: bool = True,
    progress: Callable[[str, str], None] | None = None,
    seed: int = 0,
    toys: bool = True,
) -> dict[str, dict[str, Any]]:
    """All metrics of hard template histograms, per scenario.

    `progress`: called as ``progress(scenario, stage)`` when a stage starts, `stage`
    ``"fits"`` (diffana's profile-likelihood fits), ``"toys"`` (pseudo-experiments:
    coverage and toy-based CLs) or ``"referee"`` (pyhf's). `seed` keys the
    pseudo-experiments (`COVERAGE_TOYS`, `CLS_TOYS` per mode of the problem's definition);
    with `toys` false they are skipped and their metrics left out.

    Bins without nominal background are taken out of the statistics first
    (`neutralise_empty_bins`). Each scenario's entry holds the metrics of `METRICS`, the
    problem's `extra_metrics` (computed on the untouched histograms), the number of
    neutralised bins, the exported pyhf workspace and any warning raised on the way.
    """
    reduced, n_empty = neutralise_empty_bins(problem, yields)
    out: dict[str, dict[str, Any]] = {}
    for scenario in scenarios:
        entry: dict[str, Any] = {"bins_dropped": n_empty}
        caught: list[str] = []
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            try:
                entry.update(problem.extra_metrics(yields, scenario))
            except (ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
                caught.append(f"extra_metrics: {err}")
            if n_empty < len(next(iter(reduced.values()))):
                _model_metrics(
                    problem, reduced, scenario, entry, caught, referee, progress, seed, toys
                )
            else:
                caught.append("no background event selected: no statistical model")
                for m in METRICS:
                    entry[m] = float("nan")
        caught += [
            f"{w.category.__name__}: {w.message}"
            for w in rec
            if not issubclass(w.category, DeprecationWarning | PendingDeprecationWarning)
        ]
        entry["warnings"] = sorted(set(caught))
        out[scenario] = entry
    return out


@entry_jit
def _statistics(model, asimov_b, asimov_sb, pars, init):
    cls = infer.hypotest(1.0, asimov_b, model, test_stat="qtilde", init=init)
    z0 = infer.discovery(asimov_sb, model, init=init).z0
    sigma = infer.poi_uncertainty(model, pars)
    return cls, z0, sigma


def fit_starts(model: Any, workspace: Mapping[str, Any]) -> np.ndarray:
    """Starting points of the fits: the model's init, then each histosys parameter moved
    to -1 and +1 (at most 8 of them). `(starts, npars)`.

    Histosys interpolation with templates on the same side of the nominal makes the
    likelihood non-convex, and a Newton fit then stops in the local minimum nearest to
    its start.
    """
    names = sorted(
        {
            m["name"]
            for c in workspace["channels"]
            for s in c["samples"]
            for m in s["modifiers"]
            if m["type"] == "histosys"
        }
    )
    init = np.asarray(model.init, dtype=np.float64)
    starts = [init]
    for name in names[:8]:
        i = model.par_slices[name].start
        for shift in (-1.0, 1.0):
            x = init.copy()
            x[i] = np.clip(init[i] + shift, *np.asarray(model.bounds)[i])
            starts.append(x)
    return np.stack(starts)


def robust_statistics(model, workspace, asimov_b, asimov_sb, pars) -> tuple[float, float, float]:
    """Expected CLs (mu = 1), Z0 and Fisher sigma(POI), with the fits started from every
    point of `fit_starts`.

    Both expected figures come from Asimov data, whose free fit has its global minimum at
    the generating point: a fit that stops in a local minimum can only overstate the
    sensitivity (a larger test statistic). So the largest CLs and the smallest Z0 over
    the starts whose fits converged are the ones of the deepest conditional minimum found.
    Warnings of the first start (the model's init) are raised as usual.
    """
    from diffana.errors import ConvergenceWarning

    values = []
    for k, init in enumerate(fit_starts(model, workspace)):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always", ConvergenceWarning)
            out = [
                float(v) for v in _statistics(model, asimov_b, asimov_sb, pars, jnp.asarray(init))
            ]
        failed = any(issubclass(w.category, ConvergenceWarning) for w in rec)
        if k == 0:
            for w in rec:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            values.append(out)
        elif not failed and all(np.isfinite(out)):
            values.append(out)
    cls = max(v[0] for v in values)
    z0 = min(v[1] for v in values)
    return cls, z0, values[0][2]


@entry_jit
def _profile_nll(mu, model, data):
    return infer.fixed_poi_fit(mu, data, model).nll


def toy_metrics(problem: Problem, model: Any, asimov_b: Any, seed: int) -> dict[str, float]:
    """Pseudo-experiment metrics of a hard-evaluated analysis (see `METRICS`): coverage
    and mean width of the 68.27% interval for mu at each of the problem's
    `coverage_poi_values`, the pooled FAIR Universe score, and the toy-based expected
    CLs at mu = 1. `model` is the analysis' `diffana.hf.Model`, `asimov_b` its
    background-only Asimov data."""
    mode = problem.definition.mode
    k_cov, k_cls = jax.random.split(jax.random.key(seed))
    values = tuple(float(v) for v in problem.coverage_poi_values)
    cov = infer.coverage(model, jnp.asarray(values), COVERAGE_TOYS[mode], key=k_cov)
    out = {f"coverage_mu{v:g}": float(c) for v, c in zip(values, cov.coverage, strict=True)}
    widths = np.asarray(cov.upper - cov.lower)[np.asarray(cov.converged)]
    out["interval_width"] = float(np.mean(widths)) * problem.poi_scale
    out["fair_score"] = float(cov.overall_score)
    _, cls_exp = infer.hypotest(
        1.0, asimov_b, model, calctype="toybased", ntoys=CLS_TOYS[mode], key=k_cls,
        return_expected=True,
    )  # fmt: skip
    out["cls_toys"] = float(cls_exp)
    return out


def _model_metrics(
    problem, reduced, scenario, entry, caught, referee, progress=None, seed=0, toys=True
) -> None:
    if progress is not None:
        progress(scenario, "fits")
    settings = problem.modifier_settings(scenario)
    ws = to_json_compatible(problem.workspace(reduced, scenario))
    entry["workspace"] = ws
    model = hf.Model.from_pyhf(ws, modifier_settings=settings)
    scale = problem.poi_scale
    asimov_b = infer.asimov_data(model, 0.0)
    asimov_sb = infer.asimov_data(model, 1.0)
    pars = _nominal_pars(model)
    pars[model.poi_index] = 1.0
    cls, z0, sigma_f = robust_statistics(model, ws, asimov_b, asimov_sb, jnp.asarray(pars))
    entry["cls"], entry["z0"] = cls, z0
    entry["sigma_poi_fisher"] = sigma_f * scale
    try:
        entry["sigma_poi_profile"] = profile_width(model, asimov_sb, sigma_f) * scale
    except (ValueError, RuntimeError) as err:
        caught.append(f"profile width: {err}")
        entry["sigma_poi_profile"] = float("nan")
    if toys:
        if progress is not None:
            progress(scenario, "toys")
        try:
            entry.update(toy_metrics(problem, model, asimov_b, seed))
        except (ValueError, RuntimeError) as err:
            caught.append(f"pseudo-experiments: {err}")
    if referee:
        if progress is not None:
            progress(scenario, "referee")
        try:
            entry.update(pyhf_referee(ws, settings))
        except Exception as err:  # the referee's own failure is reported, not fatal
            caught.append(f"pyhf: {type(err).__name__}: {err}")
            entry["pyhf_cls"] = entry["pyhf_z0"] = float("nan")
