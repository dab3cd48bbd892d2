"""Systematic variations as first-class inputs, turned into HistFactory modifiers.

A *variation* says how the input events change at ±1σ of a nuisance parameter:

- `ColumnShift`: one or more columns are replaced by shifted values (a muon momentum
  scale, a jet energy scale with its propagation to the missing momentum). The analysis
  is re-run on the shifted events, so selections and observables move consistently.
- `WeightVariation`: the event weights change (pileup reweighting, a scale-factor
  uncertainty, a cross-section uncertainty).

`evaluate_variations` runs a pipeline `fn(params, events)` on the nominal events and on
every up/down variant, vectorised with `jax.vmap` over the varied inputs only (the
unchanged collections are shared, not copied). `sample_modifiers` and `build_workspace`
turn the resulting histograms into histosys/normsys modifiers and a pyhf workspace. All
of it is traceable, so the gradient of a fit result with respect to the analysis
parameters flows through the systematic templates too.

Example:

>>> import jax.numpy as jnp
>>> from diffana.io import Events, Objects
>>> from diffana.systematics import ColumnShift, evaluate_variations
>>> muons = Objects({"pt": jnp.array([[30.0, 18.0]])}, jnp.array([[True, True]]))
>>> events = Events({"Muon": muons}, {}, jnp.ones(1))
>>> scale = ColumnShift("mu_scale", {"Muon.pt": (1.01, 0.99)})
>>> out = evaluate_variations(lambda p, ev: ev["Muon.pt"].sum(), None, events, [scale])
>>> {k: round(float(v), 2) for k, v in out.items()}
{'nominal': 48.0, 'mu_scale_up': 48.48, 'mu_scale_down': 47.52}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from diffana.errors import DataError, SpecError
from diffana.io import Events

__all__ = [
    "MODIFIER_KINDS",
    "ColumnShift",
    "Variation",
    "WeightVariation",
    "build_workspace",
    "evaluate_variations",
    "sample_histograms",
    "sample_modifiers",
    "variant_labels",
    "vary",
]

#: How a variation enters the model: a histosys (shape and normalisation together), a
#: normsys (normalisation only, from the total yields), or both with the effect split
#: (a normsys for the normalisation and a histosys of the shape-only templates, both
#: driven by the same nuisance parameter).
MODIFIER_KINDS = ("histosys", "normsys", "normsys+histosys")

#: A shifted value: a name in the events (`"Jet.pt_jesUp"`, `"MET_pt_jesUp"`), a
#: multiplicative factor, or a function `events -> array` of the target's shape.
Shift = str | float | Callable[[Events], Array]


def _check_common(name, modifier, samples, what):
    if not isinstance(name, str) or not name:
        raise DataError(f"{what}: name must be a non-empty string, got {name!r}")
    if modifier not in MODIFIER_KINDS:
        raise DataError(
            f"{what} '{name}': modifier must be one of {MODIFIER_KINDS}, got {modifier!r}"
        )
    if samples is not None and (
        isinstance(samples, str) or not all(isinstance(s, str) for s in samples)
    ):
        raise DataError(f"{what} '{name}': samples must be a list of sample names or None")


def _check_shift(value, where):
    if isinstance(value, bool) or (
        not isinstance(value, str | int | float) and not callable(value)
    ):
        raise DataError(
            f"{where}: a shift is a name in the events, a multiplicative factor or a "
            f"function of the events, got {value!r}"
        )


@dataclasses.dataclass(frozen=True)
class ColumnShift:
    """A systematic that shifts input columns (re-running the selection on them).

    **Arguments:**

    - `name`: the nuisance parameter (modifier) name, e.g. `"jes"`.
    - `shifts`: `{target: (up, down)}`; a target is `"Collection.field"` or an
      event-level column; `up`/`down` is another name in the events (a field of the same
      collection may be given without its prefix: `"pt_jesUp"`), a multiplicative factor
      (`1.01`), or a function `events -> array` of the target's shape. Several targets
      move together (e.g. jet pT and the missing momentum).
    - `modifier`: one of `MODIFIER_KINDS` (default `"histosys"`).
    - `samples`: the samples it applies to (default: all).

    Object order is not re-sorted after a shift; a pipeline that relies on a pT order
    should not assume it survives a per-object shift. The variation is hashable (the
    shifts are stored as a tuple of `(target, (up, down))`; `targets` gives the mapping),
    so it can be a static argument of a jitted function.
    """

    name: str
    shifts: Mapping[str, tuple[Shift, Shift]]
    modifier: Literal["histosys", "normsys", "normsys+histosys"] = "histosys"
    samples: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_common(self.name, self.modifier, self.samples, "ColumnShift")
        shifts = self.shifts
        if isinstance(shifts, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in shifts):
            shifts = dict(shifts)  # the frozen form, e.g. from dataclasses.replace
        if not isinstance(shifts, Mapping) or not shifts:
            raise DataError(f"ColumnShift '{self.name}': shifts must be a non-empty mapping")
        for target, pair in shifts.items():
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise DataError(
                    f"ColumnShift '{self.name}': shifts['{target}'] must be (up, down), "
                    f"got {pair!r}"
                )
            for v in pair:
                _check_shift(v, f"ColumnShift '{self.name}', '{target}'")
        # stored as a tuple of (target, (up, down)) so that variations are hashable and
        # can be static arguments of jitted functions
        frozen = tuple((str(t), (pair[0], pair[1])) for t, pair in shifts.items())
        object.__setattr__(self, "shifts", frozen)
        if self.samples is not None:
            object.__setattr__(self, "samples", tuple(self.samples))

    @property
    def targets(self) -> dict[str, tuple[Shift, Shift]]:
        """`{target: (up, down)}`."""
        return dict(self.shifts)


@dataclasses.dataclass(frozen=True)
class WeightVariation:
    """A systematic that changes the event weights.

    **Arguments:**

    - `name`: the nuisance parameter (modifier) name, e.g. `"pileup"`.
    - `up`, `down`: a column of the events holding the varied weight factor, a constant
      factor (`1.05`), or a function `events -> new weights`.
    - `nominal`: the column holding the nominal factor that the nominal weights already
      include (e.g. `"puWeight"`); a column variation then replaces it:
      `w * up / nominal` (events with `nominal == 0` keep weight 0). `None`: the factor
      multiplies the nominal weights.
    - `modifier`: one of `MODIFIER_KINDS` (default `"histosys"`).
    - `samples`: the samples it applies to (default: all).
    """

    name: str
    up: Shift
    down: Shift
    nominal: str | None = None
    modifier: Literal["histosys", "normsys", "normsys+histosys"] = "histosys"
    samples: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_common(self.name, self.modifier, self.samples, "WeightVariation")
        for v in (self.up, self.down):
            _check_shift(v, f"WeightVariation '{self.name}'")
        if self.nominal is not None and not isinstance(self.nominal, str):
            raise DataError(f"WeightVariation '{self.name}': nominal must be a column name or None")
        if self.samples is not None:
            object.__setattr__(self, "samples", tuple(self.samples))


Variation = ColumnShift | WeightVariation


def _lookup(events: Events, key: str, target: str | None, where: str) -> Array:
    try:
        return events[key]
    except KeyError:
        pass
    if target is not None and "." in target and "." not in key:
        coll = target.split(".", 1)[0]
        try:
            return events[f"{coll}.{key}"]
        except KeyError:
            pass
    raise DataError(
        f"{where}: no column or field '{key}' in the events; collections: "
        f"{ {c: sorted(o.fields) for c, o in events.objects.items()} }, "
        f"columns: {sorted(events.columns)}"
    )


def _resolve(events: Events, target: str, value: Shift, where: str) -> Array:
    nominal = _lookup(events, target, None, where)
    if isinstance(value, str):
        out = _lookup(events, value, target, where)
    elif callable(value):
        out = jnp.asarray(value(events), dtype=jnp.float64)
    else:
        return nominal * float(value)
    if jnp.shape(out) != jnp.shape(nominal):
        raise DataError(
            f"{where}: shifted values have shape {jnp.shape(out)}, "
            f"'{target}' has {jnp.shape(nominal)}"
        )
    return out


def vary(events: Events, variation: Variation, direction: Literal["up", "down"]) -> Events:
    """The events at the `direction` (``"up"`` = +1σ, ``"down"`` = -1σ) of `variation`.

    **Arguments:**

    - `events`: the nominal events (`diffana.io.Events`).
    - `variation`: a `ColumnShift` or `WeightVariation`.
    - `direction`: ``"up"`` or ``"down"``.

    **Returns:** new `Events`; every unchanged array is the nominal one (shared).
    """
    if direction not in ("up", "down"):
        raise DataError(f"vary: direction must be 'up' or 'down', got {direction!r}")
    i = 0 if direction == "up" else 1
    if isinstance(variation, ColumnShift):
        where = f"ColumnShift '{variation.name}' ({direction})"
        new = {t: _resolve(events, t, pair[i], where) for t, pair in variation.shifts}
        for target, values in new.items():
            try:
                events = events.replace(target, values)
            except KeyError as err:
                raise DataError(f"{where}: {err.args[0]}") from None
        return events
    if isinstance(variation, WeightVariation):
        where = f"WeightVariation '{variation.name}' ({direction})"
        value = variation.up if direction == "up" else variation.down
        w = events.weights
        if callable(value) and not isinstance(value, str):
            new_w = jnp.asarray(value(events), dtype=jnp.float64)
            if new_w.shape != w.shape:
                raise DataError(
                    f"{where}: new weights have shape {new_w.shape}, expected {w.shape}"
                )
        elif isinstance(value, str):
            factor = _lookup(events, value, None, where)
            if variation.nominal is not None:
                nom = _lookup(events, variation.nominal, None, where)
                ok = nom != 0
                factor = jnp.where(ok, factor / jnp.where(ok, nom, 1.0), 0.0)
            new_w = w * factor
        else:
            new_w = w * float(value)
        return events.replace("weights", new_w)
    raise DataError(
        f"vary: expected a ColumnShift or WeightVariation, got {type(variation).__name__}"
    )


def _applies(variation: Variation, sample: str | None) -> bool:
    return sample is None or variation.samples is None or sample in variation.samples


def _check_unique(variations: Sequence[Variation]) -> list[Variation]:
    variations = list(variations)
    names = [v.name for v in variations]
    for v in variations:
        if not isinstance(v, ColumnShift | WeightVariation):
            raise DataError(f"expected ColumnShift/WeightVariation objects, got {v!r}")
    if len(set(names)) != len(names):
        raise DataError(f"variation names must be unique, got {names}")
    return variations


def variant_labels(variations: Sequence[Variation], sample: str | None = None) -> list[str]:
    """``["nominal", "<name>_up", "<name>_down", ...]`` for the variations of `sample`."""
    labels = ["nominal"]
    for v in _check_unique(variations):
        if _applies(v, sample):
            labels += [f"{v.name}_up", f"{v.name}_down"]
    return labels


def evaluate_variations(
    fn: Callable[[Any, Events], PyTree],
    params: Any,
    events: Events,
    variations: Sequence[Variation],
    *,
    sample: str | None = None,
    vectorize: bool = True,
) -> dict[str, PyTree]:
    """Run `fn(params, events)` on the nominal events and each up/down variant.

    With `vectorize=True` the variants run in one `jax.vmap` over the arrays that the
    variations change (stacked along a new axis); arrays no variation touches are passed
    unbatched. Variations keep array shapes, so this always applies; `vectorize=False`
    loops in Python instead (same numbers, less memory).

    **Arguments:**

    - `fn`: the pipeline, `(params, events) -> PyTree` (e.g. a soft histogram).
    - `params`: the analysis parameters (any PyTree; may be traced).
    - `events`: the nominal events of one sample.
    - `variations`: `ColumnShift`/`WeightVariation`s; those whose `samples` exclude
      `sample` are skipped.
    - `sample`: the sample's name (for the variations' `samples` filter).
    - `vectorize`: vmap over variants (default) or loop.

    **Returns:** `{label: fn output}` with labels from `variant_labels`.
    """
    variations = [v for v in _check_unique(variations) if _applies(v, sample)]
    labels = variant_labels(variations)
    variants = [events]
    for v in variations:
        variants += [vary(events, v, "up"), vary(events, v, "down")]
    if not vectorize or len(variants) == 1:
        return {lab: fn(params, ev) for lab, ev in zip(labels, variants, strict=True)}
    nominal_leaves, treedef = jax.tree.flatten(events)
    all_leaves = [jax.tree.flatten(ev)[0] for ev in variants]
    batched, axes = [], []
    for i, leaf in enumerate(nominal_leaves):
        column = [leaves[i] for leaves in all_leaves]
        if all(x is leaf for x in column):
            batched.append(leaf)
            axes.append(None)
        else:
            batched.append(jnp.stack([jnp.asarray(x) for x in column]))
            axes.append(0)
    stacked = jax.tree.unflatten(treedef, batched)
    in_axes = jax.tree.unflatten(treedef, axes)
    out = jax.vmap(lambda ev: fn(params, ev), in_axes=(in_axes,))(stacked)
    return {lab: jax.tree.map(lambda x, i=i: x[i], out) for i, lab in enumerate(labels)}


def sample_histograms(
    fn: Callable[[Any, Events], Float[Array, " bins"]],
    params: Any,
    samples: Mapping[str, Events],
    variations: Sequence[Variation],
    *,
    vectorize: bool = True,
) -> dict[str, dict[str, Float[Array, " bins"]]]:
    """`evaluate_variations` for every sample: `{sample: {label: histogram}}`."""
    if not isinstance(samples, Mapping) or not samples:
        raise DataError("sample_histograms: samples must be a non-empty mapping {name: Events}")
    return {
        name: evaluate_variations(fn, params, ev, variations, sample=name, vectorize=vectorize)
        for name, ev in samples.items()
    }


def _shape_only(hist: Array, nominal: Array) -> Array:
    total = jnp.sum(hist)
    ok = total > 0
    return jnp.where(ok, hist * (jnp.sum(nominal) / jnp.where(ok, total, 1.0)), nominal)


def sample_modifiers(
    sample: str,
    histograms: Mapping[str, Float[Array, " bins"]],
    variations: Sequence[Variation],
) -> list[dict[str, Any]]:
    """The histosys/normsys modifiers of one sample from its variant histograms.

    **Arguments:**

    - `sample`: the sample's name.
    - `histograms`: `{label: (bins,)}` with `"nominal"` and `"<name>_up"/"_down"` for
      every variation that applies to `sample` (the output of `evaluate_variations`).
    - `variations`: the variations.

    **Returns:** a list of pyhf modifier dicts, in the order of `variations`; values stay
    JAX arrays (traceable). A `"normsys+histosys"` variation yields a normsys from the
    total yields and a histosys of the templates rescaled to the nominal total, sharing
    the nuisance parameter.
    """
    from diffana.hf import histosys_from_variations, normsys_from_variations

    mods: list[dict[str, Any]] = []
    for v in _check_unique(variations):
        if not _applies(v, sample):
            continue
        try:
            nom = jnp.asarray(histograms["nominal"])
            up = jnp.asarray(histograms[f"{v.name}_up"])
            down = jnp.asarray(histograms[f"{v.name}_down"])
        except KeyError as err:
            raise SpecError(
                f"sample '{sample}': no histogram {err.args[0]!r} for variation '{v.name}'; "
                f"have {sorted(histograms)}"
            ) from None
        if v.modifier in ("normsys", "normsys+histosys"):
            mods.append(normsys_from_variations(v.name, nom, up, down))
        if v.modifier == "histosys":
            mods.append(histosys_from_variations(v.name, up, down))
        elif v.modifier == "normsys+histosys":
            mods.append(
                histosys_from_variations(v.name, _shape_only(up, nom), _shape_only(down, nom))
            )
    return mods


def build_workspace(
    histograms: Mapping[str, Mapping[str, Float[Array, " bins"]]],
    variations: Sequence[Variation] = (),
    *,
    signal: str | Sequence[str] = "signal",
    normsys: Mapping[str, Mapping[str, float | tuple[float, float]]] | None = None,
    observed: Float[Array, " bins"] | None = None,
    channel: str = "SR",
    poi: str = "mu",
    poi_bounds: tuple[float, float] = (0.0, 10.0),
    measurement: str = "meas",
) -> dict[str, Any]:
    """A one-channel pyhf workspace from per-sample variant histograms.

    **Arguments:**

    - `histograms`: `{sample: {label: (bins,)}}` (the output of `sample_histograms`).
    - `variations`: the variations behind the labels; each becomes modifiers
      (`sample_modifiers`) on the samples it applies to.
    - `signal`: the signal sample(s), scaled by the normfactor `poi`.
    - `normsys`: flat normalisation uncertainties `{modifier: {sample: rel or (hi, lo)}}`,
      e.g. `{"lumi": {"signal": 0.025, "dy": 0.025}, "ttbar_xsec": {"ttbar": 0.1}}`.
    - `observed`: the channel's observed counts; default the sum of the nominal
      background histograms (Asimov data for μ = 0, up to rounding).
    - `channel`, `poi`, `poi_bounds`, `measurement`: names and the POI range.

    **Returns:** the workspace dict (arrays left as JAX arrays; `diffana.hf.Model.from_pyhf`
    accepts it inside jit/grad, and `diffana.io.write_workspace` writes it).
    """
    if not isinstance(histograms, Mapping) or not histograms:
        raise SpecError("build_workspace: histograms must be a non-empty {sample: {label: hist}}")
    signals = (signal,) if isinstance(signal, str) else tuple(signal)
    missing = [s for s in signals if s not in histograms]
    if missing:
        raise SpecError(f"build_workspace: signal sample(s) {missing} not in {sorted(histograms)}")
    normsys = dict(normsys or {})
    for mod, per_sample in normsys.items():
        unknown = set(per_sample) - set(histograms)
        if unknown:
            raise SpecError(
                f"build_workspace: normsys '{mod}' names unknown sample(s) {sorted(unknown)}; "
                f"samples: {sorted(histograms)}"
            )
    samples = []
    backgrounds = []
    for name, hists in histograms.items():
        if "nominal" not in hists:
            raise SpecError(f"build_workspace: sample '{name}' has no 'nominal' histogram")
        nominal = jnp.asarray(hists["nominal"], dtype=jnp.float64)
        mods: list[dict[str, Any]] = []
        if name in signals:
            mods.append({"name": poi, "type": "normfactor", "data": None})
        else:
            backgrounds.append(nominal)
        for mod, per_sample in normsys.items():
            if name in per_sample:
                spec = per_sample[name]
                hi, lo = (1.0 + spec, 1.0 - spec) if isinstance(spec, int | float) else spec
                mods.append({"name": mod, "type": "normsys", "data": {"hi": hi, "lo": lo}})
        mods += sample_modifiers(name, hists, variations)
        samples.append({"name": name, "data": nominal, "modifiers": mods})
    if observed is None:
        if not backgrounds:
            raise SpecError("build_workspace: no background sample to build observed data from")
        observed = sum(backgrounds[1:], backgrounds[0])
    return {
        "channels": [{"name": channel, "samples": samples}],
        "observations": [{"name": channel, "data": observed}],
        "measurements": [
            {
                "name": measurement,
                "config": {
                    "poi": poi,
                    "parameters": [{"name": poi, "bounds": [list(poi_bounds)], "inits": [1.0]}],
                },
            }
        ],
        "version": "1.0.0",
    }
