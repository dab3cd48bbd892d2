"""The HistFactory model: an equinox Module that reproduces pyhf's likelihood in JAX."""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from jaxtyping import Array, ArrayLike, Bool, Float

from diffana._config import check_float64
from diffana.errors import DataError, SpecError, SpecWarning
from diffana.hf import _derivatives, _hs3, _spec
from diffana.hf._derivatives import poisson_relative_nll, poisson_saturated_nll
from diffana.hf._interp import (
    code4_coefficients,
    histosys_coefficients,
    normsys_derivatives,
    normsys_factors,
    normsys_logs,
)
from diffana.hf._schema import skeleton
from diffana.hf._schema import validate as validate_schema
from diffana.hf._spec import POI_FROM_SPEC, Structure

__all__ = ["Model", "load_spec", "workspace_data"]

_PLAIN_NUMBERS = frozenset({float, int})
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


# ----------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------
def load_spec(spec_or_workspace: Any) -> tuple[Mapping[str, Any], str]:
    """Read a pyhf workspace or model spec from a dict or a JSON file.

    **Returns:** the JSON object and a description of its source for error messages.

    **Raises:** `SpecError` for an unreadable file, malformed JSON or a non-object.
    """
    return _spec.read_json_object(spec_or_workspace, "pyhf", "a pyhf workspace or model spec")


def _precheck_modifier_types(root: Any, source: str) -> None:
    """Name an unknown modifier type before the schema's less specific report."""
    prefix = f"{source}: " if source else ""
    channels = root.get("channels")
    if not isinstance(channels, list | tuple):
        return
    for chan in channels:
        if not isinstance(chan, Mapping) or not isinstance(chan.get("samples"), list | tuple):
            continue
        for smp in chan["samples"]:
            if not isinstance(smp, Mapping) or not isinstance(smp.get("modifiers"), list | tuple):
                continue
            for mod in smp["modifiers"]:
                skip = not isinstance(mod, Mapping) or "type" not in mod
                if not skip and mod["type"] not in _spec.MODIFIER_TYPES:
                    raise SpecError(
                        f"{prefix}channel {chan.get('name')!r}, sample {smp.get('name')!r}, "
                        f"modifier {mod.get('name')!r}: unknown modifier type "
                        f"{mod['type']!r}; expected one of {list(_spec.MODIFIER_TYPES)}"
                    )


def _get(root: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        root = root[step]
    return root


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _contains_jax(x: Any) -> bool:
    if isinstance(x, jax.Array):
        return True
    if isinstance(x, list | tuple):
        if set(map(type, x)) <= _PLAIN_NUMBERS:
            return False
        return any(_contains_jax(v) for v in x)
    return False


def _leaf_value(value: Any, leaf: _spec.Leaf, where: str) -> Any:
    """A leaf as a float numpy array, or a JAX array when it holds JAX values."""
    try:
        if _contains_jax(value):
            arr = jnp.asarray(value)
            if not jnp.issubdtype(arr.dtype, jnp.number):
                raise TypeError(f"dtype {arr.dtype}")
            check_float64(arr, leaf.label, where)
            return arr.astype(float)
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SpecError(f"{leaf.label}: expected numbers, got {value!r:.80} ({err})") from err


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a workspace is walked: the walk
    creates ~10^5 small tuples and no cycles, and the collections that they trigger
    took half of a published workspace's build time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _collect_raw(root: Any, st: Structure, where: str) -> Any:
    """All numbers of the specification as one flat vector (numpy unless traced)."""
    pieces = [_leaf_value(_get(root, leaf.path), leaf, where) for leaf in st.leaves]
    for piece, leaf in zip(pieces, st.leaves, strict=True):
        if tuple(np.shape(piece)) != leaf.shape:
            raise SpecError(f"{leaf.label}: expected shape {leaf.shape}, got {np.shape(piece)}")
    if any(_is_tracer(p) for p in pieces):
        if not pieces:
            return jnp.zeros(0)
        return jnp.concatenate([jnp.ravel(jnp.asarray(p, dtype=float)) for p in pieces])
    if not pieces:
        return np.zeros(0)
    return np.concatenate([np.ravel(np.asarray(p, dtype=np.float64)) for p in pieces])


def _check_values(raw: np.ndarray, st: Structure, source: str) -> None:
    """Raise `SpecError` for NaN, negative yields and similar (concrete numbers only)."""
    bad_nan = np.isnan(raw)
    nonneg = (st.raw_checks & _spec.CHECK_NONNEG) != 0
    positive = (st.raw_checks & _spec.CHECK_POSITIVE) != 0
    finite = (st.raw_checks & _spec.CHECK_FINITE) != 0
    bad = bad_nan | (nonneg & ((raw < 0) | ~np.isfinite(raw))) | (positive & (raw <= 0))
    bad |= finite & ~np.isfinite(raw)
    if not bad.any():
        return
    first = int(np.flatnonzero(bad)[0])
    offsets = np.array([leaf.offset for leaf in st.leaves])
    leaf = st.leaves[int(np.searchsorted(offsets, first, side="right")) - 1]
    value = raw[first]
    index = np.unravel_index(first - leaf.offset, leaf.shape) if leaf.shape else ()
    at = f" in bin {index[0]}" if len(index) == 1 else (f" at {index}" if index else "")
    if np.isnan(value):
        what = "is NaN"
    elif positive[first] and value <= 0 and value >= 0:
        prefix = f"{source}: " if source else ""
        if "normsys" in leaf.label:
            raise SpecError(
                f"{prefix}{leaf.label}{at} is 0, but interpolation code4 needs positive "
                "normsys factors (> 0)"
            )
        raise SpecError(f"{prefix}{leaf.label}{at} is 0; expected a positive value (> 0)")
    elif not np.isfinite(value):
        what = f"is {value}"
    else:
        what = f"is negative ({value})"
    prefix = f"{source}: " if source else ""
    expected = "finite values" if finite[first] else "finite values >= 0"
    raise SpecError(f"{prefix}{leaf.label}{at} {what}; expected {expected}")


def _warn_nonpositive_rates(model: Model, source: str) -> None:
    """Warn, naming channel and bin, where the nominal rate is negative (or zero where
    the workspace observes events): samples may have negative bins
    (negative-weight simulation), as pyhf allows, but a bin's total must be positive
    for its Poisson term to be finite."""
    # the nominal rates (all samples summed; numpy: no compilation at build time)
    rates = np.sum(np.asarray(model.nominal), axis=0)
    observed = np.zeros_like(rates) if model.observed is None else np.asarray(model.observed)
    # an empty bin (rate 0) is fine where nothing is observed (0 log 0 = 0)
    bad = np.flatnonzero((rates < 0) | ((rates == 0) & (observed > 0)) | np.isnan(rates))
    if not bad.size:
        return
    offsets = np.asarray(model.structure.channel_offsets)
    where = []
    for i in bad[:5]:
        c = int(np.searchsorted(offsets, i, side="right")) - 1
        where.append(f"channel {model.channels[c]!r} bin {i - offsets[c]} ({rates[i]:.4g})")
    more = f" and {bad.size - 5} more" if bad.size > 5 else ""
    prefix = f"{source}: " if source else ""
    warnings.warn(
        f"{prefix}the nominal expected rate (all samples) is not positive in "
        f"{', '.join(where)}{more}: the likelihood is -inf there for any observed count "
        "above zero (samples may have negative bins, their sum may not be negative)",
        SpecWarning,
        stacklevel=4,
    )


# ----------------------------------------------------------------------------------------
# numbers -> model arrays (numpy for concrete numbers, jax.numpy when traced)
# ----------------------------------------------------------------------------------------
def _set(xp: Any, arr: Any, idx: np.ndarray, values: Any) -> Any:
    if idx.size == 0:
        return arr
    if xp is np:
        out = np.array(arr, dtype=np.float64, copy=True)
        out[idx] = values
        return out
    return jnp.asarray(arr, dtype=float).at[idx].set(values)


def _derive(xp: Any, st: Structure, raw: Any) -> tuple[dict[str, Any], Any, Any]:
    """The model's arrays from the flat vector of numbers.

    **Returns:** the arrays, and the value-dependent ``fixed`` flags of staterror parameters
    (relative uncertainty 0) and shapesys parameters (no yield or no uncertainty).
    """
    nsamp, nbins = len(st.samples), st.nbins
    raw_ext = xp.concatenate([raw, xp.zeros(1)])  # index st.nraw is a zero
    nominal_flat = raw_ext[st.nom_gather]
    nominal = nominal_flat.reshape(nsamp, nbins)

    n_hs = st.hs_par.size
    if n_hs:
        nom_vals = xp.concatenate([nominal_flat, xp.zeros(1)])[st.hs_nom_gather]
        up = raw_ext[st.hs_hi_gather] - nom_vals
        dn = nom_vals - raw_ext[st.hs_lo_gather]
        hs_deltas = xp.concatenate([up, dn]).reshape(2 * n_hs, nsamp, nbins)
    else:
        hs_deltas = xp.zeros((0, nsamp, nbins))

    ns_lo, ns_hi = raw[st.ns_lo_src], raw[st.ns_hi_src]
    ns_coef = code4_coefficients(xp, ns_lo, ns_hi) if st.normsys_code == "code4" else None
    ns_log = normsys_logs(xp, ns_lo, ns_hi)

    gauss_sigma = xp.asarray(st.gauss_sigma_default)
    pois_factor = xp.ones(st.pois_par.size)
    auxdata = xp.asarray(st.aux_default)
    st_zero = ss_invalid = None
    if st.st_par.size:
        unc = raw_ext[st.st_unc_gather].reshape(st.st_par.size, nsamp)
        nomsall = xp.sum(st.st_users * nominal[:, st.st_bin].T, axis=1)
        has_yield = nomsall > 0
        rel = xp.where(has_yield[:, None], unc / xp.where(has_yield, nomsall, 1.0)[:, None], 0.0)
        rel2 = xp.sum(rel**2, axis=1)
        nonzero = rel2 > 0
        sigma = xp.where(nonzero, xp.sqrt(xp.where(nonzero, rel2, 1.0)), 1.0)
        gauss_sigma = _set(xp, gauss_sigma, st.gauss_st_pos, sigma)
        st_zero = ~nonzero
    if st.ss_par.size:
        nom = nominal_flat[st.ss_nom]
        unc = raw[st.ss_unc_src]
        valid = (nom > 0) & (unc > 0)
        factor = xp.where(valid, nom**2 / xp.where(valid, unc, 1.0) ** 2, 1.0)
        pois_factor = _set(xp, pois_factor, st.pois_ss_pos, factor)
        auxdata = _set(xp, auxdata, st.aux_ss_pos, factor)
        ss_invalid = ~valid

    init = _set(xp, st.init_default, st.user_init[0], raw[st.user_init[1]])
    bounds = _set(xp, st.bounds_default.ravel(), st.user_bounds[0], raw[st.user_bounds[1]])
    auxdata = _set(xp, auxdata, st.user_aux[0], raw[st.user_aux[1]])
    gauss_sigma = _set(xp, gauss_sigma, st.user_sigma[0], raw[st.user_sigma[1]])
    pois_factor = _set(xp, pois_factor, st.user_factor[0], raw[st.user_factor[1]])
    observed = raw[st.obs_src] if st.obs_src is not None else None

    arrays = {
        "nominal": nominal,
        "hs_deltas": hs_deltas,
        "ns_lo": ns_lo,
        "ns_hi": ns_hi,
        "ns_coef": ns_coef,
        "ns_log": ns_log,
        "gauss_sigma": gauss_sigma,
        "pois_factor": pois_factor,
        "auxdata": auxdata,
        "init": xp.asarray(init, dtype=float) if xp is not np else init,
        "bounds": bounds.reshape(st.npars, 2),
        "observed": observed,
    }
    return arrays, st_zero, ss_invalid


def _fixed_flags(st: Structure, st_zero: Any, ss_invalid: Any) -> tuple[bool, ...]:
    fixed = st.fixed_default.copy()
    if st_zero is not None and not _is_tracer(st_zero):
        fixed[st.st_par] = np.asarray(st_zero)
    if ss_invalid is not None and not _is_tracer(ss_invalid):
        fixed[st.ss_par] = np.asarray(ss_invalid)
    fixed[st.user_fixed[0]] = st.user_fixed[1]
    return tuple(bool(f) for f in fixed)


def _value_fixed(st: Structure, st_zero: Any, ss_invalid: Any) -> Any:
    """`(npars,)` flags of the staterror and shapesys parameters that traced numbers
    leave without effect (a bin without uncertainty), or `None` with concrete numbers,
    where such parameters are fixed (`Model.fixed`) instead."""
    traced = [(idx, flags) for idx, flags in ((st.st_par, st_zero), (st.ss_par, ss_invalid))]
    traced = [(idx, flags) for idx, flags in traced if flags is not None and _is_tracer(flags)]
    if not traced:
        return None
    out = jnp.zeros(st.npars, dtype=bool)
    for idx, flags in traced:
        out = out.at[idx].set(flags)
    return out


def _build(st: Structure, raw: Any, source: str) -> Model:
    traced = _is_tracer(raw)
    if not traced:
        raw = np.asarray(raw, dtype=np.float64)
        _check_values(raw, st, source)
    xp = jnp if traced else np
    arrays, st_zero, ss_invalid = _derive(xp, st, raw)
    fixed = _fixed_flags(st, st_zero, ss_invalid)
    arrays["raw"] = raw
    arrays["value_fixed"] = _value_fixed(st, st_zero, ss_invalid)
    present = {k: v for k, v in arrays.items() if v is not None}
    if traced:
        present = {
            k: v if k == "value_fixed" else jnp.asarray(v, dtype=float) for k, v in present.items()
        }
    else:
        present = jax.device_put(present)  # one batched transfer
    as_jax = {k: present.get(k) for k in arrays}
    model = Model(st, fixed, **as_jax)
    if not traced:
        _warn_nonpositive_rates(model, source)
    return model


# ----------------------------------------------------------------------------------------
# likelihood pieces
# ----------------------------------------------------------------------------------------
def _poisson_logpdf(n: Array, lam: Array) -> Array:
    """``n log(lam) - lam - lgamma(n + 1)``, continuous in `n`, without NaN gradients.

    At ``lam = 0`` the first term is 0 for ``n = 0`` and ``-inf`` otherwise (as pyhf's
    ``xlogy``); a negative rate with ``n > 0`` also gives ``-inf`` (pyhf: NaN).
    """
    positive = lam > 0
    log_term = n * jnp.log(jnp.where(positive, lam, 1.0))
    edge = jnp.where(n == 0, 0.0, -jnp.inf)
    return jnp.where(positive, log_term, edge) - lam - gammaln(n + 1.0)


# Largest number of factors multiplied term by term (see :func:`_product`).
_UNROLLED_PRODUCT_MAX = 8


def _product(stacked: Array) -> Array:
    """Product over the first axis.

    A few factors (a toy model) are multiplied term by term, element-wise operations that
    fuse with their neighbours; more (a published model has dozens of normsys factors on
    a sample) in one reduction, so that the compiled graph does not grow with the number
    of modifiers. Both have exact derivatives where factors are zero.
    """
    if stacked.shape[0] > _UNROLLED_PRODUCT_MAX:
        return jnp.prod(stacked, axis=0)
    out = stacked[0]
    for k in range(1, stacked.shape[0]):
        out = out * stacked[k]
    return out


# Largest static index array taken element by element (see :func:`_take`).
_SLICED_TAKE_MAX = 32


def _take(x: Array, idx: np.ndarray) -> Array:
    """`x[idx]` along the first axis of a 1-d `x`, for a static index array of any shape.

    Consecutive 1-d indices (the usual case) are one slice; a small index array is
    assembled from single-element slices. Slices fuse with their neighbours and their
    gradients are pads, where a gather's gradient is a scatter, an operation of its own
    on a CPU. Larger index arrays are gathered.
    """
    flat = idx.reshape(-1)
    n = flat.shape[0]
    if idx.ndim == 1 and n and np.array_equal(idx, np.arange(idx[0], idx[0] + n)):
        return x[int(idx[0]) : int(idx[0]) + n]
    if 0 < n <= _SLICED_TAKE_MAX:
        return jnp.stack([x[int(i)] for i in flat]).reshape(idx.shape)
    return x[idx]


# Largest histosys template stack (`2 n_histosys x samples x bins` entries) contracted with
# element-wise operations rather than a dot; see :func:`_contract`.
_ELEMENTWISE_CONTRACTION_MAX = 128


def _contract(coeff: Array, deltas: Array) -> Array:
    """`sum_k coeff[k] deltas[k]`, `(k,)` x `(k, samples, bins)` -> `(samples, bins)`.

    A small stack is summed term by term, element-wise operations that XLA fuses with
    their neighbours: on a CPU a dot this small is a library call that costs more than
    its arithmetic (docs/performance.md, "Tiny contractions"). Larger stacks use the
    dot, which suits them better.
    """
    if deltas.size <= _ELEMENTWISE_CONTRACTION_MAX:
        out = coeff[0] * deltas[0]
        for k in range(1, deltas.shape[0]):
            out = out + coeff[k] * deltas[k]
        return out
    return jnp.tensordot(coeff, deltas, axes=1)


def _normal_logpdf(x: Array, mu: Array, sigma: Array) -> Array:
    return -jnp.log(sigma) - _LOG_SQRT_2PI - jnp.square((x - mu) / (np.sqrt(2.0) * sigma))


# ----------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------
class Model(eqx.Module):
    """A HistFactory model with pyhf's semantics, written in JAX.

    Build it with `Model.from_pyhf` from a pyhf workspace or model spec. A parameter vector
    in pyhf's order means the same thing here, and `logpdf` gives pyhf's number (numpy
    backend, float64). The model is a PyTree: its yields and modifier data are arrays that
    `jit`, `grad` and `vmap` trace, and `Model.from_pyhf` itself works on traced yields.

    Static metadata (pyhf's names and order): `par_names`, `par_slices`, `par_order`,
    `poi_name`, `poi_index`, `channels`, `samples`, `channel_nbins`, `modifiers`, `npars`,
    `nbins`, `nauxdata`, `fixed` (numpy bool, `(npars,)`). Arrays: `init (npars,)`,
    `bounds (npars, 2)`, `auxdata (nauxdata,)`, `nominal (samples, bins)`.

    Example:

    >>> import diffana.hf
    >>> spec = {"channels": [{"name": "SR", "samples": [
    ...     {"name": "signal", "data": [5.0, 10.0],
    ...      "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
    ...     {"name": "background", "data": [50.0, 60.0],
    ...      "modifiers": [{"name": "bkg_unc", "type": "shapesys", "data": [5.0, 12.0]}]}]}]}
    >>> model = diffana.hf.Model.from_pyhf(spec)
    >>> model.par_names
    ('mu', 'bkg_unc[0]', 'bkg_unc[1]')
    >>> model.expected_actualdata(model.init).tolist()
    [55.0, 70.0]
    >>> data = model.expected_data(model.init)
    >>> round(float(model.logpdf(model.init, data)), 6)
    -11.722563
    """

    structure: Structure = eqx.field(static=True, repr=False)
    fixed_flags: tuple[bool, ...] = eqx.field(static=True, repr=False)
    raw: Float[Array, " nraw"] = eqx.field(repr=False)
    nominal: Float[Array, "samples bins"]
    hs_deltas: Float[Array, "twice_histosys samples bins"] = eqx.field(repr=False)
    ns_lo: Float[Array, " normsys_entries"] = eqx.field(repr=False)
    ns_hi: Float[Array, " normsys_entries"] = eqx.field(repr=False)
    ns_coef: Float[Array, "normsys_entries 6"] | None = eqx.field(repr=False)
    ns_log: Float[Array, "normsys_entries 2"] = eqx.field(repr=False)
    gauss_sigma: Float[Array, " gaussian_constraints"] = eqx.field(repr=False)
    pois_factor: Float[Array, " poisson_constraints"] = eqx.field(repr=False)
    auxdata: Float[Array, " nauxdata"]
    init: Float[Array, " npars"]
    bounds: Float[Array, "npars 2"]
    observed: Float[Array, " bins"] | None = eqx.field(repr=False)
    # Parameters that fits keep at their initial values, as if fixed (see
    # `_value_fixed`); `None` when built from concrete numbers, whose such parameters
    # are in `fixed` instead.
    value_fixed: Bool[Array, " npars"] | None = eqx.field(default=None, repr=False)

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def from_pyhf(
        cls,
        spec_or_workspace: Mapping[str, Any] | str | os.PathLike,
        measurement: str | int | None = None,
        modifier_settings: Mapping[str, Mapping[str, str]] | None = None,
        validate: bool = True,
        *,
        poi_name: Any = POI_FROM_SPEC,
    ) -> Model:
        """Build a model from a pyhf workspace or a bare model spec ``{"channels": [...]}``.

        The numbers in the specification (sample ``data``, ``hi_data``/``lo_data``,
        normsys ``hi``/``lo``, staterror/shapesys uncertainties, parameter configs,
        observations) may be lists, numpy arrays or JAX arrays - also tracers inside
        `jit`/`grad`/`vmap`, which is how a model is built from differentiable histograms.

        **Arguments:**

        - `spec_or_workspace`: a dict, or a path to a JSON file.
        - `measurement`: name or index of the workspace's measurement (default: the first).
          A bare spec takes its parameter configs from its optional ``"parameters"``.
        - `modifier_settings`: pyhf's interpolation settings, e.g.
          ``{"normsys": {"interpcode": "code1"}}``. Default as pyhf: normsys ``code4``,
          histosys ``code4p``; as in pyhf, a type missing from a given dict falls back to
          normsys ``code1`` / histosys ``code0``.
        - `validate`: check the input against pyhf's JSON schema (cached per structure).
        - `poi_name`: override the parameter of interest (``None`` for none). Default: the
          measurement's POI, or ``"mu"`` for a bare spec when such a parameter exists.

        **Returns:** the `Model`.

        **Raises:** `SpecError` naming the channel/sample/modifier/measurement at fault.

        Without concrete numbers (inside `jit`), value checks (negative or NaN yields) are
        skipped, and staterror/shapesys parameters cannot be auto-fixed for bins without
        uncertainty: they stay free (their constraint keeps them finite).
        """
        root, source = load_spec(spec_or_workspace)
        with _collection_paused():
            skel = skeleton(root)
        settings = _spec.freeze_settings(modifier_settings)
        if validate:
            _precheck_modifier_types(root, source)
            schema = "workspace.json" if _spec.is_workspace(root) else "model.json"
            validate_schema(root, schema, skel=skel, source=source)
        try:
            hash(measurement)
            hash(poi_name)
        except TypeError as err:
            raise SpecError(f"measurement and poi_name must be names, got {err}") from err
        try:
            st = _spec.analyse(skel, measurement, settings, poi_name)
        except SpecError as err:
            if source:
                raise SpecError(f"{source}: {err}") from err
            raise
        with _collection_paused():
            raw = _collect_raw(root, st, "Model.from_pyhf")
        return _build(st, raw, source)

    @classmethod
    def from_hs3(
        cls,
        doc_or_path: Mapping[str, Any] | str | os.PathLike,
        analysis: str | int | None = None,
        validate: bool = True,
    ) -> Model:
        """Build a model from the HistFactory likelihood of an HS3 document (the HEP
        Statistics Serialization Standard, version 0.2.0).

        The document is converted to a pyhf workspace and built with `from_pyhf`, so the
        numbers may be JAX arrays or tracers, as there. Read: ``histfactory_dist``
        channels with normfactor, normsys, histosys, staterror, shapesys and shapefactor
        modifiers (their default constraints), a luminosity as a normfactor constrained by
        a ``gaussian_dist`` in the likelihood's ``aux_distributions``, one interpolation
        code per modifier type, the analysis's POI, domain bounds, and its ``init``
        parameter point (values as inits, ``const`` as fixed).

        **Arguments:**

        - `doc_or_path`: the HS3 document as a dict, or a path to its JSON file.
        - `analysis`: name or index of the analysis, or the name of a likelihood (no
          POI, bounds or inits then). Default: the first analysis.
        - `validate`: check the converted workspace against pyhf's JSON schema.

        **Returns:** the `Model`; `diffana.hf.hs3_data` gives its observed data.

        **Raises:** `SpecError` naming the JSON path of an element outside the
        HistFactory subset (e.g. ``distributions[3] (name 'x', type 'gaussian_dist')``),
        a missing field or a dangling reference.

        Example:

        >>> import diffana.hf
        >>> doc = diffana.hf.to_hs3(diffana.hf.simple_model([5.0, 10.0], [50.0, 60.0], [5.0, 6.0]))
        >>> diffana.hf.Model.from_hs3(doc).par_names
        ('mu', 'uncorr_bkguncrt[0]', 'uncorr_bkguncrt[1]')
        """
        return _hs3.model_from_hs3(cls, doc_or_path, analysis, validate)

    def with_yields(self, yields: Mapping[tuple[str, str], ArrayLike]) -> Model:
        """A copy of the model with some samples' nominal yields replaced.

        Cheap: no parsing; the derived quantities (histosys deltas, staterror relative
        uncertainties, shapesys constraint factors and auxdata) are recomputed, exactly as if
        the specification had held the new yields. Modifier data (``hi_data``/``lo_data``
        templates, absolute staterror/shapesys uncertainties) stay as they are.

        **Arguments:**

        - `yields`: ``{(channel, sample): Float[Array, "channel_bins"]}``; may be traced.

        **Returns:** the new `Model`.

        Example:

        >>> import diffana.hf
        >>> model = diffana.hf.simple_model([5.0, 10.0], [50.0, 60.0])
        >>> model.with_yields({("singlechannel", "signal"): [1.0, 2.0]}).nominal.tolist()
        [[50.0, 60.0], [1.0, 2.0]]
        """
        st = self.structure
        if not isinstance(yields, Mapping):
            raise SpecError("with_yields expects a dict {(channel, sample): yields}")
        positions, values = [], []
        for key, value in yields.items():
            if key not in st.nominal_leaf:
                raise SpecError(
                    f"with_yields: no sample {key!r} in the model; its (channel, sample) pairs "
                    f"are {sorted(st.nominal_leaf)}"
                )
            leaf = st.leaves[st.nominal_leaf[key]]
            arr = _leaf_value(value, leaf, "Model.with_yields")
            if tuple(np.shape(arr)) != leaf.shape:
                raise SpecError(
                    f"with_yields: {leaf.label} needs {leaf.shape[0]} bins, got shape "
                    f"{np.shape(arr)}"
                )
            positions.append(np.arange(leaf.offset, leaf.offset + leaf.size))
            values.append(arr)
        if not positions:
            return self
        idx = np.concatenate(positions)
        if _is_tracer(self.raw) or any(_is_tracer(v) for v in values):
            new = jnp.concatenate([jnp.ravel(jnp.asarray(v, dtype=float)) for v in values])
            raw = jnp.asarray(self.raw).at[idx].set(new)
        else:
            raw = np.array(self.raw, dtype=np.float64, copy=True)
            raw[idx] = np.concatenate([np.ravel(np.asarray(v)) for v in values])
        return _build(st, raw, "")

    # ---- static metadata ---------------------------------------------------------------
    @property
    def par_names(self) -> tuple[str, ...]:
        """Parameter names in pyhf's order and expansion (``'gamma[3]'`` for bin 3)."""
        return self.structure.par_names

    @property
    def par_order(self) -> tuple[str, ...]:
        """Names of the parameter sets (modifiers), in pyhf's order."""
        return self.structure.par_order

    @property
    def par_slices(self) -> dict[str, slice]:
        """Slice of each parameter set in the parameter vector."""
        st = self.structure
        return {
            name: slice(start, start + size)
            for name, start, size in zip(st.par_order, st.par_starts, st.par_sizes, strict=True)
        }

    @property
    def poi_name(self) -> str | None:
        """Name of the parameter of interest (``None`` if the model has none)."""
        return self.structure.poi_name

    @property
    def poi_index(self) -> int | None:
        """Index of the parameter of interest in the parameter vector."""
        return self.structure.poi_index

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names, sorted (the order of the main bins)."""
        return self.structure.channels

    @property
    def samples(self) -> tuple[str, ...]:
        """Sample names, sorted (the rows of `nominal`)."""
        return self.structure.samples

    @property
    def channel_nbins(self) -> dict[str, int]:
        """Number of bins of each channel."""
        return dict(zip(self.structure.channels, self.structure.channel_nbins, strict=True))

    @property
    def channel_slices(self) -> dict[str, slice]:
        """Slice of each channel in the main bins."""
        st = self.structure
        return {
            c: slice(o, o + n)
            for c, o, n in zip(st.channels, st.channel_offsets, st.channel_nbins, strict=True)
        }

    @property
    def modifiers(self) -> tuple[tuple[str, str], ...]:
        """Sorted ``(name, type)`` pairs of the model's modifiers."""
        return self.structure.modifiers

    @property
    def npars(self) -> int:
        """Number of parameters."""
        return self.structure.npars

    @property
    def nbins(self) -> int:
        """Number of main bins (all channels)."""
        return self.structure.nbins

    @property
    def nauxdata(self) -> int:
        """Number of auxiliary data (one per constrained parameter)."""
        return self.structure.naux

    @property
    def fixed(self) -> Bool[np.ndarray, " npars"]:
        """Suggested fixed parameters, as pyhf's ``suggested_fixed`` (numpy bool)."""
        return np.array(self.fixed_flags, dtype=bool)

    # ---- likelihood ------------------------------------------------------------------
    def _pars(self, pars: ArrayLike, where: str) -> Array:
        check_float64(pars, "pars", where)
        pars = jnp.asarray(pars, dtype=float)
        if pars.shape != (self.npars,):
            raise ValueError(
                f"{where}: pars must have shape ({self.npars},) in the order of "
                f"model.par_names, got {pars.shape}; use jax.vmap for batches"
            )
        return pars

    def _factor_sources(self, pars: Array, derivatives: bool = False) -> Any:
        """``[pars, normsys factors, 1]``, the vector the multiplicative tables index;
        with `derivatives`, also its first and second derivatives, each entry in its own
        parameter (``(source, d1, d2)``)."""
        st = self.structure
        one = jnp.ones(1, dtype=pars.dtype)
        zero = jnp.zeros(1, dtype=pars.dtype)
        if not st.ns_par.size:
            if not derivatives:
                return jnp.concatenate([pars, one])
            ones, zeros = jnp.ones_like(pars), jnp.zeros_like(pars)
            return (
                jnp.concatenate([pars, one]),
                jnp.concatenate([ones, zero]),
                jnp.concatenate([zeros, zero]),
            )
        alpha = _take(pars, st.ns_par)

        def factors(a: Array) -> Array:
            return normsys_factors(
                st.normsys_code, a, self.ns_lo, self.ns_hi, self.ns_coef, self.ns_log
            )

        if not derivatives:
            return jnp.concatenate([pars, factors(alpha), one])
        ns_f, ns_d1, ns_d2 = normsys_derivatives(
            st.normsys_code, alpha, self.ns_lo, self.ns_hi, self.ns_coef, self.ns_log
        )
        return (
            jnp.concatenate([pars, ns_f, one]),
            jnp.concatenate([jnp.ones_like(pars), ns_d1, zero]),
            jnp.concatenate([jnp.zeros_like(pars), ns_d2, zero]),
        )

    def _factor_product(self, source: Array) -> Array:
        """The product of each sample's multiplicative factors in each bin, `(S, B)`,
        from `source` (:meth:`_factor_sources`)."""
        st = self.structure
        nsamp, nbins = len(st.samples), st.nbins
        out = None
        if st.channel_fac_idx.shape[0]:
            per_channel = _product(_take(source, st.channel_fac_idx))  # (samples, channels)
            out = jnp.concatenate(
                [
                    jnp.broadcast_to(per_channel[:, i : i + 1], (nsamp, n))
                    for i, n in enumerate(st.channel_nbins)
                ],
                axis=1,
            )
        if st.bin_fac_idx.shape[0]:
            per_bin = _product(_take(source, st.bin_fac_idx))
            out = per_bin if out is None else out * per_bin
        if out is None:
            return jnp.ones((nsamp, nbins), dtype=source.dtype)
        return out

    def _expected_by_sample(self, pars: Array) -> Array:
        st = self.structure
        rates = self.nominal
        if st.hs_par.size:
            c_up, c_dn = histosys_coefficients(st.histosys_code, _take(pars, st.hs_par))
            coeff = jnp.concatenate([c_up, c_dn])
            rates = rates + _contract(coeff, self.hs_deltas)
        if st.channel_fac_idx.shape[0] or st.bin_fac_idx.shape[0]:
            rates = rates * self._factor_product(self._factor_sources(pars))
        return rates

    def expected_by_sample(self, pars: Float[ArrayLike, " npars"]) -> Float[Array, "samples bins"]:
        """Expected yield of each sample (rows in `samples` order) in each main bin."""
        return self._expected_by_sample(self._pars(pars, "Model.expected_by_sample"))

    def expected_actualdata(self, pars: Float[ArrayLike, " npars"]) -> Float[Array, " bins"]:
        """Expected main-bin counts for parameters `pars` (pyhf's order).

        **Arguments:**

        - `pars`: the parameters, shape `(npars,)`.

        **Returns:** the expected counts, shape `(nbins,)`, channels in `channels` order.
        """
        pars = self._pars(pars, "Model.expected_actualdata")
        return jnp.sum(self._expected_by_sample(pars), axis=0)

    def expected_auxdata(self, pars: Float[ArrayLike, " npars"]) -> Float[Array, " nauxdata"]:
        """Expected auxiliary data: the constrained parameters (Gaussian constraints) and
        parameter times factor (Poisson constraints of shapesys), in pyhf's order."""
        pars = self._pars(pars, "Model.expected_auxdata")
        return self._expected_aux(pars)

    def _expected_aux(self, pars: Array) -> Array:
        st = self.structure
        values = jnp.concatenate(
            [_take(pars, st.gauss_par), _take(pars, st.pois_par) * self.pois_factor]
        )
        return _take(values, st.aux_perm)

    def expected_data(
        self, pars: Float[ArrayLike, " npars"], include_auxdata: bool = True
    ) -> Float[Array, " data"]:
        """Expected main data followed (by default) by the expected auxiliary data."""
        pars = self._pars(pars, "Model.expected_data")
        main = jnp.sum(self._expected_by_sample(pars), axis=0)
        if not include_auxdata:
            return main
        return jnp.concatenate([main, self._expected_aux(pars)])

    def logpdf(self, pars: Float[ArrayLike, " npars"], data: Float[ArrayLike, " data"]) -> Array:
        """Log-likelihood: Poisson terms of the main bins plus the constraint terms.

        Same value as pyhf's ``model.logpdf(pars, data)`` (including the normalisation
        constants, ``lgamma`` for non-integer counts), but a scalar.

        **Arguments:**

        - `pars`: parameters, shape `(npars,)`, pyhf's order.
        - `data`: main bins followed by auxiliary data, shape `(nbins + nauxdata,)`,
          e.g. from `workspace_data` or `expected_data`.

        **Returns:** the log-likelihood, a scalar.
        """
        st = self.structure
        pars = self._pars(pars, "Model.logpdf")
        check_float64(data, "data", "Model.logpdf")
        data = jnp.asarray(data, dtype=float)
        if data.shape != (st.nbins + st.naux,):
            raise DataError(
                f"Model.logpdf: data must have shape ({st.nbins + st.naux},) = {st.nbins} main "
                f"bins + {st.naux} auxiliary data, got {data.shape}"
            )
        main, aux = data[: st.nbins], data[st.nbins :]
        rates = jnp.sum(self._expected_by_sample(pars), axis=0)
        result = jnp.sum(_poisson_logpdf(main, rates))
        if st.gauss_par.size:
            result = result + jnp.sum(
                _normal_logpdf(
                    _take(aux, st.gauss_aux), _take(pars, st.gauss_par), self.gauss_sigma
                )
            )
        if st.pois_par.size:
            result = result + jnp.sum(
                _poisson_logpdf(
                    _take(aux, st.pois_aux), _take(pars, st.pois_par) * self.pois_factor
                )
            )
        return result

    def nll(self, pars: Float[ArrayLike, " npars"], data: Float[ArrayLike, " data"]) -> Array:
        """Negative log-likelihood, ``-logpdf(pars, data)``."""
        return -self.logpdf(pars, data)

    # ---- the fit objective -------------------------------------------------------------
    def _data(self, data: ArrayLike, where: str) -> Array:
        st = self.structure
        check_float64(data, "data", where)
        data = jnp.asarray(data, dtype=float)
        if data.shape != (st.nbins + st.naux,):
            raise DataError(
                f"{where}: data must have shape ({st.nbins + st.naux},) = {st.nbins} main "
                f"bins + {st.naux} auxiliary data, got {data.shape}"
            )
        return data

    def _constraint_relative_nll(self, pars: Array, aux: Array) -> Array:
        st = self.structure
        out = jnp.zeros((), dtype=pars.dtype)
        if st.gauss_par.size:
            z = (_take(aux, st.gauss_aux) - _take(pars, st.gauss_par)) / self.gauss_sigma
            out = out + jnp.sum(0.5 * z * z + jnp.log(self.gauss_sigma))
        if st.pois_par.size:
            rate = _take(pars, st.pois_par) * self.pois_factor
            out = out + jnp.sum(poisson_relative_nll(_take(aux, st.pois_aux), rate))
        return out

    def _constraint_derivatives(self, pars: Array, aux: Array) -> tuple[Array, Array]:
        """Gradient and Hessian diagonal of the constraint terms, `(npars,)` each."""
        st = self.structure
        grad = jnp.zeros_like(pars)
        curv = jnp.zeros_like(pars)
        if st.gauss_par.size:
            inv_var = 1.0 / self.gauss_sigma**2
            delta = _take(pars, st.gauss_par) - _take(aux, st.gauss_aux)
            grad = grad.at[st.gauss_par].set(delta * inv_var)
            curv = curv.at[st.gauss_par].set(inv_var)
        if st.pois_par.size:
            counts = _take(aux, st.pois_aux)
            rate = _take(pars, st.pois_par) * self.pois_factor
            rate_safe = jnp.where(rate > 0, rate, 1.0)
            w = jnp.where(counts > 0, 1.0 - counts / rate_safe, 1.0)
            grad = grad.at[st.pois_par].set(self.pois_factor * w)
            curv = curv.at[st.pois_par].set(self.pois_factor**2 * counts / rate_safe**2)
        return grad, curv

    def relative_nll(
        self, pars: Float[ArrayLike, " npars"], data: Float[ArrayLike, " data"]
    ) -> Array:
        """The NLL less a constant of the data: ``nll(pars, data) - nll_offset(data)``.

        Each Poisson term (main bins, shapesys constraints) is measured from its value at
        ``rate = count`` and each Gaussian constraint omits ``log sqrt(2 pi)``; the sum of
        these small terms is exact to round-off where the NLL itself, carrying constants
        such as ``lgamma`` of a count of 1e11, is resolved only to ``1e-3``. Fits minimise
        it, and test statistics are differences of it. Its derivatives, with respect to
        the parameters, the data and the model's arrays, are the NLL's.

        **Arguments:** as :meth:`logpdf`. **Returns:** a scalar.
        """
        st = self.structure
        pars = self._pars(pars, "Model.relative_nll")
        data = self._data(data, "Model.relative_nll")
        main, aux = data[: st.nbins], data[st.nbins :]
        rates = jnp.sum(self._expected_by_sample(pars), axis=0)
        return jnp.sum(poisson_relative_nll(main, rates)) + self._constraint_relative_nll(pars, aux)

    def relative_nll_floor(self) -> Array:
        """A lower bound of :meth:`relative_nll` wherever every expected main-bin rate
        is positive: its Poisson terms are then non-negative and each Gaussian
        constraint at least ``log sigma``. Below it, a main bin without observed events
        has a negative rate, where pyhf's Poisson term, ``-log P(0 | lam) = lam``, falls
        without bound; fits stop there (:func:`diffana.infer.fit` reports them as not
        converged) instead of following it to a corner of the parameter box.

        **Returns:** a scalar.
        """
        if not self.structure.gauss_par.size:
            return jnp.zeros(())
        return jnp.sum(jnp.log(self.gauss_sigma))

    def nll_offset(self, data: Float[ArrayLike, " data"]) -> Array:
        """``nll(pars, data) - relative_nll(pars, data)``, the same for every `pars`:
        the saturated Poisson terms and the Gaussian normalisations. No derivatives
        flow through it (those of `relative_nll` are the NLL's)."""
        st = self.structure
        data = jax.lax.stop_gradient(self._data(data, "Model.nll_offset"))
        main, aux = data[: st.nbins], data[st.nbins :]
        out = jnp.sum(poisson_saturated_nll(main)) + st.gauss_par.size * _LOG_SQRT_2PI
        if st.pois_par.size:
            out = out + jnp.sum(poisson_saturated_nll(_take(aux, st.pois_aux)))
        return out

    def nll_derivatives(
        self, pars: Float[ArrayLike, " npars"], data: Float[ArrayLike, " data"]
    ) -> tuple[Array, Float[Array, " npars"], Float[Array, "npars npars"]]:
        """`relative_nll`, its gradient and its Hessian in `pars`, in closed form.

        The Hessian is assembled from the model's structure (a few matrix products whose
        number does not depend on the number of modifiers) rather than by differentiating
        the gradient once per parameter; it equals ``jax.hessian(relative_nll)`` to
        round-off. Differentiable again, in any mode.

        **Returns:** ``(value (), gradient (npars,), hessian (npars, npars))``.
        """
        pars = self._pars(pars, "Model.nll_derivatives")
        data = self._data(data, "Model.nll_derivatives")
        if not _derivatives.layout(self.structure).closed_form:

            def grad_aux(p: Array) -> tuple[Array, tuple[Array, Array]]:
                f, g = jax.value_and_grad(self.relative_nll)(p, data)
                return g, (f, g)

            h, (f, g) = jax.jacfwd(grad_aux, has_aux=True)(pars)
            return f, g, h
        return _derivatives.value_grad_hess(self, pars, data)

    # ---- export ----------------------------------------------------------------------
    def to_pyhf(self, data: Float[ArrayLike, " data"] | None = None) -> dict[str, Any]:
        """The model as a pyhf workspace (a JSON-serialisable dict, schema-valid).

        **Arguments:**

        - `data`: observations, main bins (optionally followed by auxiliary data, which a
          workspace cannot store and are dropped). Default: the workspace's observations
          the model was built from, else the expected data at `init` (Asimov).

        **Returns:** a dict with ``channels``, one measurement, ``observations``, ``version``.
        Interpolation codes (`modifier_settings`) are not part of pyhf's format.
        """
        st = self.structure
        if _is_tracer(self.raw):
            raise SpecError("to_pyhf needs concrete numbers; call it outside jit/grad/vmap")
        raw = np.asarray(self.raw, dtype=np.float64)
        tree = copy.deepcopy(st.template)
        for leaf in st.leaves:
            values = raw[leaf.offset : leaf.offset + leaf.size].reshape(leaf.shape)
            parent = _get(tree, leaf.path[:-1])
            parent[leaf.path[-1]] = values.tolist() if leaf.shape else float(values)

        if data is not None:
            if _is_tracer(data):
                raise SpecError("to_pyhf needs concrete data; call it outside jit/grad/vmap")
            main = np.asarray(data, dtype=np.float64)
            if main.shape not in ((st.nbins,), (st.nbins + st.naux,)):
                raise DataError(
                    f"to_pyhf: data must have {st.nbins} main bins (optionally followed by "
                    f"{st.naux} auxiliary data), got shape {main.shape}"
                )
            main = main[: st.nbins]
        elif self.observed is not None:
            main = np.asarray(self.observed, dtype=np.float64)
        else:
            main = np.asarray(self.expected_actualdata(self.init), dtype=np.float64)
        observations = [
            {"name": c, "data": main[sl].tolist()} for c, sl in self.channel_slices.items()
        ]
        if st.is_workspace:
            meas = tree["measurements"][st.measurement_index]
            name, parameters = meas["name"], meas["config"].get("parameters", [])
        else:
            name, parameters = "measurement", tree.get("parameters", [])
        return {
            "channels": tree["channels"],
            "measurements": [
                {"name": name, "config": {"poi": st.poi_name or "", "parameters": parameters}}
            ],
            "observations": observations,
            "version": "1.0.0",
        }


def workspace_data(
    workspace: Mapping[str, Any] | str | os.PathLike, model: Model, include_auxdata: bool = True
) -> Float[Array, " data"]:
    """The workspace's observed data in the model's channel order, plus its auxdata.

    **Arguments:**

    - `workspace`: a pyhf workspace (dict or path to a JSON file); observations may be
      arrays or tracers.
    - `model`: the `Model` built from it (it fixes the channel order and the auxdata).
    - `include_auxdata`: append `model.auxdata` (as pyhf's ``workspace.data``).

    **Returns:** the data vector, shape `(nbins + nauxdata,)` (or `(nbins,)`).

    **Raises:** `SpecError` for a missing observation or a bin-count mismatch.
    """
    root, source = load_spec(workspace)
    prefix = f"{source}: " if source else ""
    observations = root.get("observations")
    if not isinstance(observations, list | tuple):
        raise SpecError(f"{prefix}the workspace has no 'observations'")
    by_name = {}
    for obs in observations:
        by_name.setdefault(obs["name"], obs["data"])
    pieces = []
    for c, n in model.channel_nbins.items():
        if c not in by_name:
            raise SpecError(
                f"{prefix}the workspace has no observation for channel {c!r} "
                f"(observations: {sorted(by_name)})"
            )
        leaf = _spec.Leaf(("observations",), (n,), 0, f"observation {c!r}: 'data'")
        value = _leaf_value(by_name[c], leaf, "workspace_data")
        if tuple(np.shape(value)) != (n,):
            raise SpecError(
                f"{prefix}observation {c!r}: 'data' has shape {np.shape(value)} but channel "
                f"{c!r} has {n} bins (bin-count mismatch between the samples and the data)"
            )
        if not _is_tracer(value):
            value = np.asarray(value)
            if np.any(np.isnan(value)) or np.any(value < 0):
                raise SpecError(
                    f"{prefix}observation {c!r}: 'data' must be finite counts >= 0, got {value}"
                )
        pieces.append(jnp.asarray(value, dtype=float))
    if include_auxdata:
        pieces.append(model.auxdata)
    return jnp.concatenate(pieces)
