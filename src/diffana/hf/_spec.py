"""Static analysis of a pyhf specification: names, pyhf's ordering, and index arrays.

Everything here depends only on the *structure* of a specification (names, modifier types,
bin counts, which parameter-config fields are set), never on its numbers, so the result is
cached on the specification's skeleton (see :mod:`diffana.hf._schema`). The numbers are
collected separately into one flat vector (``raw``) whose layout the `Structure` records
as a list of leaves; :mod:`diffana.hf._model` turns that vector into the model's arrays.

Ordering follows pyhf 0.7 exactly:

- channels and samples are sorted by name; the main bins are the channels' bins
  concatenated in that order;
- parameter sets are grouped by modifier type in the order histosys, lumi, normfactor,
  normsys, shapefactor, shapesys, staterror; within a type they come in the order in which
  they are first met walking channels, then samples, then the sample's modifiers sorted by
  (name, type) - except staterror, which is sorted by name;
- the auxiliary data follow the parameter order, one entry per constrained parameter.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from diffana.errors import SpecError
from diffana.hf._interp import HISTOSYS_CODES, NORMSYS_CODES
from diffana.hf._schema import _expand

__all__ = [
    "DEFAULT_MODIFIER_SETTINGS",
    "MODIFIER_TYPES",
    "POI_FROM_SPEC",
    "Leaf",
    "Structure",
    "analyse",
    "freeze_settings",
    "is_workspace",
]

# pyhf's builder order: parameter sets are grouped by type in this order.
MODIFIER_TYPES = (
    "histosys",
    "lumi",
    "normfactor",
    "normsys",
    "shapefactor",
    "shapesys",
    "staterror",
)

# pyhf.Model's default; when a user passes modifier_settings, a type left out of them
# falls back to the per-type default below (pyhf's behaviour).
DEFAULT_MODIFIER_SETTINGS = {
    "normsys": {"interpcode": "code4"},
    "histosys": {"interpcode": "code4p"},
}
_FALLBACK_CODES = {"normsys": "code1", "histosys": "code0"}

_SCALAR_TYPES = ("histosys", "lumi", "normfactor", "normsys")
_CONSTRAINT = {
    "histosys": "normal",
    "lumi": "normal",
    "normsys": "normal",
    "staterror": "normal",
    "shapesys": "poisson",
    "normfactor": None,
    "shapefactor": None,
}
_ALLOWED_CONFIG = {
    "normfactor": ("inits", "bounds", "fixed"),
    "shapefactor": ("inits", "bounds", "fixed"),
    "normsys": ("inits", "bounds", "fixed", "auxdata"),
    "histosys": ("inits", "bounds", "fixed", "auxdata"),
    "staterror": ("inits", "bounds", "fixed", "auxdata", "sigmas"),
    "lumi": ("inits", "bounds", "fixed", "auxdata", "sigmas"),
    "shapesys": ("inits", "bounds", "fixed", "auxdata", "factors"),
}
_DEFAULT_INIT = {
    "histosys": 0.0,
    "normsys": 0.0,
    "normfactor": 1.0,
    "shapefactor": 1.0,
    "shapesys": 1.0,
    "staterror": 1.0,
}
_DEFAULT_BOUNDS = {
    "histosys": (-5.0, 5.0),
    "normsys": (-5.0, 5.0),
    "normfactor": (0.0, 10.0),
    "shapefactor": (0.0, 10.0),
    "shapesys": (1e-10, 10.0),
    "staterror": (1e-10, 10.0),
}
_DEFAULT_AUX = {"histosys": 0.0, "normsys": 0.0, "staterror": 1.0}


class _PoiFromSpec:
    def __repr__(self) -> str:
        return "POI_FROM_SPEC"


#: Marker for "take the POI from the measurement (or 'mu' for a bare model spec)".
POI_FROM_SPEC = _PoiFromSpec()

# value checks applied to raw numbers (bit flags)
CHECK_NONNEG = 1
CHECK_POSITIVE = 2
CHECK_FINITE = 4


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One numeric leaf of the specification: where it is and where it goes in ``raw``."""

    path: tuple[Any, ...]
    shape: tuple[int, ...]
    offset: int
    label: str
    checks: int = 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclasses.dataclass(frozen=True, eq=False)
class Structure:
    """The static bookkeeping of a model (hashable by identity, shared through a cache)."""

    # names and order
    channels: tuple[str, ...]
    channel_nbins: tuple[int, ...]
    samples: tuple[str, ...]
    nbins: int
    modifiers: tuple[tuple[str, str], ...]
    par_order: tuple[str, ...]
    par_types: tuple[str, ...]
    par_sizes: tuple[int, ...]
    par_starts: tuple[int, ...]
    par_names: tuple[str, ...]
    npars: int
    naux: int
    poi_name: str | None
    poi_index: int | None
    normsys_code: str
    histosys_code: str
    # numbers of the specification
    leaves: tuple[Leaf, ...]
    nraw: int
    raw_checks: np.ndarray  # (nraw,) bit flags
    nominal_leaf: Mapping[tuple[str, str], int]  # (channel, sample) -> leaf index
    # nominal (S*B flat)
    nom_src: np.ndarray
    nom_dst: np.ndarray
    # histosys: stacked deltas (2 * Mh, S * B)
    hs_par: np.ndarray
    hs_hi_src: np.ndarray
    hs_lo_src: np.ndarray
    hs_nom: np.ndarray
    hs_dst: np.ndarray
    # normsys entries
    ns_par: np.ndarray
    ns_lo_src: np.ndarray
    ns_hi_src: np.ndarray
    # multiplicative factors: indices into [pars, normsys factors, 1.0]
    channel_fac_idx: np.ndarray  # (K, S, C): constant over a channel's bins
    bin_fac_idx: np.ndarray  # (K, S, B): per bin
    # staterror rows (one per staterror parameter)
    st_par: np.ndarray
    st_bin: np.ndarray
    st_users: np.ndarray  # (Pst, S) float 0/1
    st_unc_src: np.ndarray
    st_unc_dst: np.ndarray  # into Pst * S
    # the same placements as gathers from [raw, 0.0] (cheaper than scatters, also under AD)
    nom_gather: np.ndarray  # (S * B,)
    hs_hi_gather: np.ndarray  # (Mh * S * B,)
    hs_lo_gather: np.ndarray
    hs_nom_gather: np.ndarray  # into [nominal_flat, 0.0]
    st_unc_gather: np.ndarray  # (Pst * S,)
    # shapesys parameters
    ss_par: np.ndarray
    ss_nom: np.ndarray  # flat S*B index of the nominal of each shapesys parameter
    ss_unc_src: np.ndarray
    # constraints
    gauss_par: np.ndarray
    gauss_aux: np.ndarray
    gauss_sigma_default: np.ndarray
    gauss_st_pos: np.ndarray  # positions in gauss arrays of staterror params, in st order
    pois_par: np.ndarray
    pois_aux: np.ndarray
    pois_ss_pos: np.ndarray  # positions in pois arrays of shapesys params, in ss order
    aux_default: np.ndarray
    aux_st_pos: np.ndarray  # aux positions of staterror parameters (default 1.0)
    aux_ss_pos: np.ndarray  # aux positions of shapesys parameters (default: factors)
    # parameter configs
    init_default: np.ndarray
    bounds_default: np.ndarray
    fixed_default: np.ndarray
    user_init: tuple[np.ndarray, np.ndarray]  # (parameter index, raw position)
    user_bounds: tuple[np.ndarray, np.ndarray]  # (flat (npars*2) index, raw position)
    user_aux: tuple[np.ndarray, np.ndarray]  # (aux position, raw position)
    user_sigma: tuple[np.ndarray, np.ndarray]  # (gauss position, raw position)
    user_factor: tuple[np.ndarray, np.ndarray]  # (pois position, raw position)
    user_fixed: tuple[np.ndarray, np.ndarray]  # (parameter index, bool value)
    # observations (workspaces only)
    obs_src: np.ndarray | None
    # export
    template: Any
    is_workspace: bool
    measurement_name: str | None
    measurement_index: int | None
    aux_perm: np.ndarray  # concat(gauss, poisson) expected auxdata -> auxdata order

    @property
    def channel_offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.cumsum((0, *self.channel_nbins))[:-1])


def read_json_object(doc_or_path: Any, fmt: str, kind: str) -> tuple[Mapping[str, Any], str]:
    """A JSON object from a dict or a JSON file, and its source (the path, or ``""``).

    `fmt` names the format in messages (``"pyhf"``, ``"HS3"``), `kind` what the object
    should be (``"a pyhf workspace or model spec"``).

    **Raises:** `SpecError` for an unreadable file, malformed JSON or a non-object.
    """
    if isinstance(doc_or_path, str | os.PathLike):
        path = os.fspath(doc_or_path)
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as err:
            raise SpecError(f"cannot read {fmt} JSON file {path!r}: {err.strerror}") from err
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(
                f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
            ) from err
        if not isinstance(obj, Mapping):
            raise SpecError(
                f"{path}: expected a JSON object ({kind}), got a JSON {type(obj).__name__}"
            )
        return obj, path
    if isinstance(doc_or_path, Mapping):
        return doc_or_path, ""
    raise SpecError(
        f"expected {kind} as a dict or a path to a JSON file, got {type(doc_or_path).__name__}"
    )


def is_workspace(root: Mapping[str, Any]) -> bool:
    """Whether a JSON object is a pyhf workspace (rather than a bare model spec)."""
    return any(k in root for k in ("measurements", "observations", "version"))


def freeze_settings(modifier_settings: Any) -> tuple[tuple[str, str], ...] | None:
    """A hashable, checked form of pyhf's ``modifier_settings``."""
    if modifier_settings is None:
        return None
    if not isinstance(modifier_settings, Mapping):
        raise SpecError(
            "modifier_settings must be a dict like {'normsys': {'interpcode': 'code1'}}, "
            f"got {type(modifier_settings).__name__}"
        )
    allowed = {"normsys": NORMSYS_CODES, "histosys": HISTOSYS_CODES}
    frozen = []
    for mtype, settings in modifier_settings.items():
        if mtype not in allowed:
            raise SpecError(
                f"modifier_settings: modifier type {mtype!r} has no settings; only "
                f"{sorted(allowed)} have an interpolation code"
            )
        if not isinstance(settings, Mapping) or set(settings) - {"interpcode"}:
            raise SpecError(
                f"modifier_settings[{mtype!r}] must be {{'interpcode': <code>}}, got {settings!r}"
            )
        code = settings.get("interpcode", _FALLBACK_CODES[mtype])
        if code not in allowed[mtype]:
            raise SpecError(
                f"modifier_settings[{mtype!r}]: interpolation code {code!r} is not supported "
                f"for {mtype}; expected one of {allowed[mtype]}"
            )
        frozen.append((mtype, code))
    return tuple(sorted(frozen))


def analyse(skel: Any, measurement: Any, settings: Any, poi_name: Any) -> Structure:
    """The `Structure` of a specification skeleton (cached)."""
    return _analyse_cached(skel, measurement, settings, poi_name)


@functools.lru_cache(maxsize=256)
def _analyse_cached(skel: Any, measurement: Any, settings: Any, poi_name: Any) -> Structure:
    root = _expand(skel)
    try:
        return _Analysis(root, measurement, settings, poi_name).run()
    except SpecError:
        raise
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as err:
        raise SpecError(
            f"malformed pyhf specification ({type(err).__name__}: {err}); validate it against "
            "pyhf's schema (validate=True) for a detailed report"
        ) from err


def _where(channel: str, sample: str | None = None, modifier: str | None = None) -> str:
    out = f"channel {channel!r}"
    if sample is not None:
        out += f", sample {sample!r}"
    if modifier is not None:
        out += f", modifier {modifier!r}"
    return out


def _shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, float | int):
        return ()
    return tuple(np.shape(value))


class _Analysis:
    """One pass over a specification; `run` returns the `Structure`."""

    def __init__(self, root: Any, measurement: Any, settings: Any, poi_name: Any):
        self.root = root
        self.measurement = measurement
        self.settings = settings
        self.poi_request = poi_name
        self.leaves: list[Leaf] = []
        self.nraw = 0

    # -- leaves -----------------------------------------------------------------------
    def leaf(
        self, path: tuple[Any, ...], value: Any, shape: tuple[int, ...], label: str, checks=0
    ) -> np.ndarray:
        actual = _shape(value)
        if actual != shape:
            raise SpecError(f"{label}: expected shape {shape}, got {actual}")
        leaf = Leaf(path, shape, self.nraw, label, checks)
        self.leaves.append(leaf)
        self.nraw += leaf.size
        return np.arange(leaf.offset, leaf.offset + leaf.size).reshape(shape)

    # -- main -------------------------------------------------------------------------
    def run(self) -> Structure:
        root = self.root
        workspace = is_workspace(root)
        codes = dict(self.settings) if self.settings is not None else None
        if codes is None:
            normsys_code = DEFAULT_MODIFIER_SETTINGS["normsys"]["interpcode"]
            histosys_code = DEFAULT_MODIFIER_SETTINGS["histosys"]["interpcode"]
        else:
            normsys_code = codes.get("normsys", _FALLBACK_CODES["normsys"])
            histosys_code = codes.get("histosys", _FALLBACK_CODES["histosys"])

        # ---- measurement --------------------------------------------------------
        if workspace:
            measurements = root.get("measurements") or []
            names = [m["name"] for m in measurements]
            if not measurements:
                raise SpecError("the workspace defines no measurements")
            if self.measurement is None:
                index = 0
            elif isinstance(self.measurement, str):
                if self.measurement not in names:
                    raise SpecError(
                        f"measurement {self.measurement!r} not found in the workspace; "
                        f"it defines {names}"
                    )
                index = names.index(self.measurement)
            elif isinstance(self.measurement, int) and not isinstance(self.measurement, bool):
                if not -len(names) <= self.measurement < len(names):
                    raise SpecError(
                        f"measurement index {self.measurement} is out of range; the workspace "
                        f"defines {len(names)} measurement(s): {names}"
                    )
                index = self.measurement % len(names)
            else:
                raise SpecError(
                    f"measurement must be a name (str), an index (int) or None, "
                    f"got {self.measurement!r}"
                )
            meas = measurements[index]
            measurement_name = meas["name"]
            measurement_index: int | None = index
            parameters = meas["config"].get("parameters", [])
            param_path: tuple[Any, ...] = ("measurements", index, "config", "parameters")
            poi_default: str | None = meas["config"]["poi"] or None
            poi_soft = False
        else:
            if self.measurement is not None:
                raise SpecError(
                    f"measurement {self.measurement!r} was asked for, but the input is a bare "
                    "model spec {'channels': ...} without measurements"
                )
            measurement_name = None
            measurement_index = None
            parameters = root.get("parameters", []) or []
            param_path = ("parameters",)
            poi_default = "mu"
            poi_soft = True

        # ---- channels and samples ------------------------------------------------
        chan_specs = root["channels"]
        if not chan_specs:
            raise SpecError("the specification has no channels")
        channel_nbins: dict[str, int] = {}
        spec_index: dict[str, int] = {}
        entries: dict[tuple[str, str], tuple[int, Any]] = {}  # (c, s) -> (sample idx, spec)
        all_samples: set[str] = set()
        all_modifiers: set[tuple[str, str]] = set()
        for ci, chan in enumerate(chan_specs):
            cname = chan["name"]
            if cname in spec_index:
                raise SpecError(f"channel {cname!r} is defined twice")
            spec_index[cname] = ci
            samples = chan["samples"]
            if not samples:
                raise SpecError(f"{_where(cname)}: has no samples")
            nb = len(samples[0]["data"])
            if nb == 0:
                raise SpecError(f"{_where(cname, samples[0]['name'])}: 'data' has no bins")
            channel_nbins[cname] = nb
            for si, smp in enumerate(samples):
                sname = smp["name"]
                if (cname, sname) in entries:
                    raise SpecError(f"{_where(cname, sname)}: sample is defined twice")
                n = _shape(smp["data"])
                if n != (nb,):
                    raise SpecError(
                        f"{_where(cname, sname)}: 'data' has {n[0] if n else 0} bins but the "
                        f"channel has {nb} (from its first sample {samples[0]['name']!r}); "
                        "every sample of a channel needs the same bin count"
                    )
                entries[(cname, sname)] = (si, smp)
                all_samples.add(sname)
                seen = set()
                for mod in smp["modifiers"]:
                    mtype, mname = mod["type"], mod["name"]
                    if mtype not in MODIFIER_TYPES:
                        raise SpecError(
                            f"{_where(cname, sname, mname)}: unknown modifier type {mtype!r}; "
                            f"expected one of {list(MODIFIER_TYPES)}"
                        )
                    if (mname, mtype) in seen:
                        raise SpecError(
                            f"{_where(cname, sname, mname)}: the {mtype} modifier is listed "
                            "twice for this sample"
                        )
                    seen.add((mname, mtype))
                    all_modifiers.add((mname, mtype))

        channels = tuple(sorted(channel_nbins))
        samples = tuple(sorted(all_samples))
        nbins_c = tuple(channel_nbins[c] for c in channels)
        offsets = dict(zip(channels, np.cumsum((0, *nbins_c))[:-1].tolist(), strict=True))
        nbins = int(sum(nbins_c))
        nsamp = len(samples)
        s_index = {s: i for i, s in enumerate(samples)}

        # ---- pyhf traversal: parameter sets in order ------------------------------
        first_seen: dict[str, dict[str, tuple[str, str]]] = {t: {} for t in MODIFIER_TYPES}
        uses: dict[tuple[str, str], list[tuple[str, str, int, Any]]] = {}
        for c in channels:
            for s in samples:
                if (c, s) not in entries:
                    continue
                si, smp = entries[(c, s)]
                mods = sorted(
                    ((m["name"], m["type"], mi, m) for mi, m in enumerate(smp["modifiers"])),
                    key=lambda x: (x[0], x[1]),
                )
                for mname, mtype, mi, mod in mods:
                    first_seen[mtype].setdefault(mname, (c, s))
                    uses.setdefault((mname, mtype), []).append((c, s, mi, mod))
        first_seen["staterror"] = dict(sorted(first_seen["staterror"].items()))

        types_of: dict[str, list[str]] = {}
        for mtype in MODIFIER_TYPES:
            for mname in first_seen[mtype]:
                types_of.setdefault(mname, []).append(mtype)
        for mname, mtypes in types_of.items():
            if len(mtypes) > 1 and set(mtypes) != {"normsys", "histosys"}:
                raise SpecError(
                    f"parameter {mname!r} is shared by modifiers of types {mtypes}, which need "
                    "different parameters; use distinct modifier names (only normsys and "
                    "histosys may share a name)"
                )
        for mname, _ in ((n, t) for (n, t) in uses if t == "shapesys"):
            shapesys_uses = uses[(mname, "shapesys")]
            if len(shapesys_uses) > 1:
                where = [f"{c!r}/{s!r}" for c, s, _, _ in shapesys_uses]
                raise SpecError(
                    f"shapesys modifier {mname!r} is used by several samples ({', '.join(where)}); "
                    "a shapesys modifier cannot be shared, give each one its own name"
                )

        par_order: list[str] = []
        par_type: dict[str, str] = {}
        for mtype in MODIFIER_TYPES:
            for mname in first_seen[mtype]:
                if mname not in par_type:
                    par_order.append(mname)
                    par_type[mname] = mtype

        # sizes
        par_size: dict[str, int] = {}
        st_channels: dict[str, tuple[str, ...]] = {}
        st_users: dict[str, tuple[str, ...]] = {}
        for mname in par_order:
            mtype = par_type[mname]
            if mtype in _SCALAR_TYPES:
                par_size[mname] = 1
            elif mtype == "shapesys":
                c, s = first_seen[mtype][mname]
                par_size[mname] = channel_nbins[c]
            elif mtype == "shapefactor":
                c, s = first_seen[mtype][mname]
                par_size[mname] = channel_nbins[c]
                for c2, s2, _, _ in uses[(mname, mtype)]:
                    if channel_nbins[c2] > par_size[mname]:
                        raise SpecError(
                            f"{_where(c2, s2, mname)}: shapefactor {mname!r} has "
                            f"{par_size[mname]} parameters (from channel {c!r}) but channel "
                            f"{c2!r} has {channel_nbins[c2]} bins"
                        )
            else:  # staterror
                per_sample: dict[str, set[str]] = {}
                for c, s, _, _ in uses[(mname, mtype)]:
                    per_sample.setdefault(s, set()).add(c)
                masks = {s: tuple(sorted(cs)) for s, cs in per_sample.items()}
                reference = next(iter(masks.items()))
                for s, cs in masks.items():
                    if cs != reference[1]:
                        raise SpecError(
                            f"staterror modifier {mname!r}: sample {reference[0]!r} uses it in "
                            f"channels {list(reference[1])} but sample {s!r} in {list(cs)}; "
                            "every sample with a staterror modifier must use it in the same "
                            "channels"
                        )
                st_channels[mname] = reference[1]
                st_users[mname] = tuple(sorted(masks))
                par_size[mname] = sum(channel_nbins[c] for c in reference[1])

        par_starts: dict[str, int] = {}
        start = 0
        for mname in par_order:
            par_starts[mname] = start
            start += par_size[mname]
        npars = start
        par_names: list[str] = []
        for mname in par_order:
            if par_type[mname] in _SCALAR_TYPES:
                par_names.append(mname)
            else:
                par_names.extend(f"{mname}[{i}]" for i in range(par_size[mname]))

        # ---- POI ----------------------------------------------------------------
        poi = poi_default if self.poi_request is POI_FROM_SPEC else self.poi_request
        if poi == "":
            poi = None
        if poi is not None:
            if not isinstance(poi, str):
                raise SpecError(f"poi_name must be a parameter name or None, got {poi!r}")
            if poi not in par_type:
                if poi_soft and self.poi_request is POI_FROM_SPEC:
                    poi = None
                else:
                    raise SpecError(
                        f"the parameter of interest {poi!r} is not a parameter of the model; "
                        f"its parameters are {par_order}"
                    )
            elif par_type[poi] not in _SCALAR_TYPES:
                raise SpecError(
                    f"the parameter of interest {poi!r} is a {par_type[poi]} with "
                    f"{par_size[poi]} components; a POI must be a single parameter"
                )
        poi_index = par_starts[poi] if poi is not None else None

        # ---- nominal leaves -------------------------------------------------------
        nominal_leaf: dict[tuple[str, str], int] = {}
        nom_src, nom_dst = [], []
        for c in channels:
            ci = spec_index[c]
            for s in samples:
                if (c, s) not in entries:
                    continue
                si, smp = entries[(c, s)]
                nominal_leaf[(c, s)] = len(self.leaves)
                src = self.leaf(
                    ("channels", ci, "samples", si, "data"),
                    smp["data"],
                    (channel_nbins[c],),
                    f"{_where(c, s)}: 'data'",
                    CHECK_FINITE,
                )
                nom_src.append(src)
                nom_dst.append(s_index[s] * nbins + offsets[c] + np.arange(channel_nbins[c]))

        def bins_of(c: str) -> np.ndarray:
            return offsets[c] + np.arange(channel_nbins[c])

        def mod_path(c: str, s: str, mi: int) -> tuple[Any, ...]:
            return ("channels", spec_index[c], "samples", entries[(c, s)][0], "modifiers", mi)

        # multiplicative factor lists per (c, s)
        factor_lists: dict[tuple[str, str], list[Any]] = {k: [] for k in entries}

        # ---- histosys ------------------------------------------------------------
        hs_names = [m for m in par_order if m in first_seen["histosys"]]
        hs_names += [m for m in first_seen["histosys"] if m not in hs_names]
        hs_par, hs_hi, hs_lo, hs_nom, hs_dst = [], [], [], [], []
        for h, mname in enumerate(hs_names):
            hs_par.append(par_starts[mname])
            for c, s, mi, mod in uses[(mname, "histosys")]:
                n = channel_nbins[c]
                data = mod["data"]
                for key in ("hi_data", "lo_data"):
                    got = _shape(data[key])
                    if got != (n,):
                        raise SpecError(
                            f"{_where(c, s, mname)}: histosys {key!r} has "
                            f"{got[0] if got else 0} bins, expected {n} like the sample's data"
                        )
                path = mod_path(c, s, mi)
                hs_hi.append(
                    self.leaf(
                        (*path, "data", "hi_data"),
                        data["hi_data"],
                        (n,),
                        f"{_where(c, s, mname)}: histosys 'hi_data'",
                        CHECK_FINITE,
                    )
                )
                hs_lo.append(
                    self.leaf(
                        (*path, "data", "lo_data"),
                        data["lo_data"],
                        (n,),
                        f"{_where(c, s, mname)}: histosys 'lo_data'",
                        CHECK_FINITE,
                    )
                )
                flat = s_index[s] * nbins + bins_of(c)
                hs_nom.append(flat)
                hs_dst.append(h * nsamp * nbins + flat)

        # ---- normsys -------------------------------------------------------------
        ns_par, ns_lo, ns_hi = [], [], []
        ns_checks = CHECK_NONNEG | (CHECK_POSITIVE if normsys_code == "code4" else 0)
        for mname in (m for m in par_order if m in first_seen["normsys"]):
            for c, s, mi, mod in uses[(mname, "normsys")]:
                path = mod_path(c, s, mi)
                e = len(ns_par)
                ns_par.append(par_starts[mname])
                for key, dst in (("lo", ns_lo), ("hi", ns_hi)):
                    dst.append(
                        self.leaf(
                            (*path, "data", key),
                            mod["data"][key],
                            (),
                            f"{_where(c, s, mname)}: normsys {key!r}",
                            ns_checks,
                        )
                    )
                factor_lists[(c, s)].append(("normsys", e))
        n_entries = len(ns_par)

        # ---- normfactor, lumi, shapefactor ---------------------------------------
        for mtype in ("normfactor", "lumi", "shapefactor"):
            for mname in (m for m in par_order if m in first_seen[mtype]):
                for c, s, _, _ in uses[(mname, mtype)]:
                    if mtype == "shapefactor":
                        idx = par_starts[mname] + np.arange(channel_nbins[c])
                    else:
                        idx = par_starts[mname]
                    factor_lists[(c, s)].append(("par", idx))

        # ---- staterror -----------------------------------------------------------
        st_par, st_bin, st_user_rows, st_unc_src, st_unc_dst = [], [], [], [], []
        st_row_of: dict[str, dict[str, np.ndarray]] = {}
        for mname in (m for m in par_order if m in first_seen["staterror"]):
            row0 = len(st_par)
            rows: dict[str, np.ndarray] = {}
            k = 0
            for c in st_channels[mname]:
                n = channel_nbins[c]
                rows[c] = row0 + k + np.arange(n)
                st_par.extend((par_starts[mname] + k + np.arange(n)).tolist())
                st_bin.extend(bins_of(c).tolist())
                user_row = np.zeros(nsamp)
                user_row[[s_index[u] for u in st_users[mname]]] = 1.0
                st_user_rows.extend([user_row] * n)
                k += n
            st_row_of[mname] = rows
            for c, s, mi, mod in uses[(mname, "staterror")]:
                n = channel_nbins[c]
                got = _shape(mod["data"])
                if got != (n,):
                    raise SpecError(
                        f"{_where(c, s, mname)}: staterror 'data' has {got[0] if got else 0} "
                        f"bins, expected {n} like the sample's data"
                    )
                st_unc_src.append(
                    self.leaf(
                        (*mod_path(c, s, mi), "data"),
                        mod["data"],
                        (n,),
                        f"{_where(c, s, mname)}: staterror 'data'",
                        CHECK_NONNEG,
                    )
                )
                st_unc_dst.append(rows[c] * nsamp + s_index[s])
                factor_lists[(c, s)].append(("par", par_starts[mname] + (rows[c] - row0)))

        # ---- shapesys ------------------------------------------------------------
        ss_par, ss_nom, ss_unc_src = [], [], []
        for mname in (m for m in par_order if m in first_seen["shapesys"]):
            ((c, s, mi, mod),) = uses[(mname, "shapesys")]
            n = channel_nbins[c]
            got = _shape(mod["data"])
            if got != (n,):
                raise SpecError(
                    f"{_where(c, s, mname)}: shapesys 'data' has {got[0] if got else 0} bins, "
                    f"expected {n} like the sample's data"
                )
            ss_unc_src.append(
                self.leaf(
                    (*mod_path(c, s, mi), "data"),
                    mod["data"],
                    (n,),
                    f"{_where(c, s, mname)}: shapesys 'data'",
                    CHECK_NONNEG,
                )
            )
            idx = par_starts[mname] + np.arange(n)
            ss_par.extend(idx.tolist())
            ss_nom.extend((s_index[s] * nbins + bins_of(c)).tolist())
            factor_lists[(c, s)].append(("par", idx))

        # ---- multiplicative tables ---------------------------------------------------
        # factors constant over a channel (normfactor, lumi, normsys) are multiplied per
        # (sample, channel) and broadcast to the bins; per-bin parameters (staterror,
        # shapesys, shapefactor) are gathered per bin. Small gathers are much cheaper than
        # one big (factors, samples, bins) gather, forward and backward.
        one = npars + n_entries
        channel_index = {c: i for i, c in enumerate(channels)}
        per_channel: dict[tuple[str, str], list[int]] = {}
        per_bin: dict[tuple[str, str], list[np.ndarray]] = {}
        for (c, s), items in factor_lists.items():
            for kind, idx in items:
                if kind == "normsys":
                    per_channel.setdefault((c, s), []).append(npars + idx)
                elif np.ndim(idx) == 0:
                    per_channel.setdefault((c, s), []).append(int(idx))
                else:
                    per_bin.setdefault((c, s), []).append(np.asarray(idx))
        k_channel = max((len(v) for v in per_channel.values()), default=0)
        channel_fac_idx = np.full((k_channel, nsamp, len(channels)), one, dtype=np.int64)
        for (c, s), idxs in per_channel.items():
            channel_fac_idx[: len(idxs), s_index[s], channel_index[c]] = idxs
        k_bin = max((len(v) for v in per_bin.values()), default=0)
        bin_fac_idx = np.full((k_bin, nsamp, nbins), one, dtype=np.int64)
        for (c, s), rows in per_bin.items():
            sl = slice(offsets[c], offsets[c] + channel_nbins[c])
            for k, idx in enumerate(rows):
                bin_fac_idx[k, s_index[s], sl] = idx

        # ---- constraints and auxdata ----------------------------------------------
        gauss_par, gauss_aux, gauss_sigma = [], [], []
        pois_par, pois_aux = [], []
        aux_default: list[float] = []
        gauss_pos_of: dict[int, int] = {}
        pois_pos_of: dict[int, int] = {}
        aux_pos_of: dict[int, int] = {}
        for mname in par_order:
            mtype = par_type[mname]
            kind = _CONSTRAINT[mtype]
            if kind is None:
                continue
            for j in range(par_starts[mname], par_starts[mname] + par_size[mname]):
                aux_pos_of[j] = len(aux_default)
                if kind == "normal":
                    gauss_pos_of[j] = len(gauss_par)
                    gauss_par.append(j)
                    gauss_aux.append(len(aux_default))
                    gauss_sigma.append(1.0)
                else:
                    pois_pos_of[j] = len(pois_par)
                    pois_par.append(j)
                    pois_aux.append(len(aux_default))
                aux_default.append(_DEFAULT_AUX.get(mtype, np.nan))
        naux = len(aux_default)

        # ---- parameter configs ------------------------------------------------------
        init_default = np.full(npars, np.nan)
        bounds_default = np.full((npars, 2), np.nan)
        fixed_default = np.zeros(npars, dtype=bool)
        for mname in par_order:
            mtype = par_type[mname]
            sl = slice(par_starts[mname], par_starts[mname] + par_size[mname])
            if mtype in _DEFAULT_INIT:
                init_default[sl] = _DEFAULT_INIT[mtype]
                bounds_default[sl] = _DEFAULT_BOUNDS[mtype]

        user: dict[str, list[Any]] = {k: [] for k in ("init", "bounds", "aux", "sigma", "factor")}
        user_fixed_idx: list[int] = []
        user_fixed_val: list[bool] = []
        configured: dict[str, set[str]] = {}
        for pi, cfg in enumerate(parameters):
            pname = cfg["name"]
            if pname in configured:
                raise SpecError(
                    f"parameter config {pname!r} is given twice in the "
                    f"{'measurement ' + repr(measurement_name) if workspace else 'spec'}"
                )
            configured[pname] = set(cfg) - {"name"}
            if pname not in par_type:
                # pyhf ignores configs of parameters the model does not have; their numbers
                # are still kept so that an exported workspace reproduces them
                for key, value in cfg.items():
                    if key not in ("name", "fixed"):
                        self.leaf(
                            (*param_path, pi, key),
                            value,
                            _shape(value),
                            f"parameter config {pname!r}: {key!r}",
                        )
                continue
            mtype = par_type[pname]
            n = par_size[pname]
            j0 = par_starts[pname]
            for key in cfg:
                if key == "name":
                    continue
                if key not in _ALLOWED_CONFIG[mtype]:
                    raise SpecError(
                        f"parameter config {pname!r}: a {mtype} parameter does not use "
                        f"{key!r}; it accepts {list(_ALLOWED_CONFIG[mtype])}"
                    )
                path = (*param_path, pi, key)
                label = f"parameter config {pname!r}: {key!r}"
                if key == "fixed":
                    if not isinstance(cfg[key], bool):
                        raise SpecError(f"{label} must be true or false, got {cfg[key]!r}")
                    user_fixed_idx.extend(range(j0, j0 + n))
                    user_fixed_val.extend([cfg[key]] * n)
                    continue
                got = _shape(cfg[key])
                want = (n, 2) if key == "bounds" else (n,)
                if got != want:
                    raise SpecError(
                        f"{label}: expected {want[0]} value{'s' if n > 1 else ''}"
                        f"{' (pairs [low, high])' if key == 'bounds' else ''} "
                        f"for the {mtype} parameter "
                        f"{pname!r}, got shape {got}"
                    )
                checks = CHECK_NONNEG | CHECK_POSITIVE if key in ("sigmas", "factors") else 0
                src = self.leaf(path, cfg[key], want, label, checks)
                if key == "inits":
                    user["init"].append((np.arange(j0, j0 + n), src))
                elif key == "bounds":
                    flat = (np.arange(j0, j0 + n)[:, None] * 2 + np.arange(2)[None, :]).ravel()
                    user["bounds"].append((flat, src.ravel()))
                elif key == "auxdata":
                    user["aux"].append((np.array([aux_pos_of[j] for j in range(j0, j0 + n)]), src))
                elif key == "sigmas":
                    user["sigma"].append(
                        (np.array([gauss_pos_of[j] for j in range(j0, j0 + n)]), src)
                    )
                elif key == "factors":
                    user["factor"].append(
                        (np.array([pois_pos_of[j] for j in range(j0, j0 + n)]), src)
                    )
        if "lumi" in par_type:
            missing = [
                k
                for k in ("inits", "bounds", "auxdata", "sigmas")
                if k not in configured.get("lumi", set())
            ]
            if missing:
                raise SpecError(
                    f"modifier 'lumi' (type lumi) needs a parameter config with the luminosity "
                    f"and its uncertainty in the "
                    f"{'measurement ' + repr(measurement_name) if workspace else 'spec'}; "
                    f"missing {missing}"
                )

        def pack(items: list[Any]) -> tuple[np.ndarray, np.ndarray]:
            if not items:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            dst = np.concatenate([np.ravel(d) for d, _ in items]).astype(np.int64)
            src = np.concatenate([np.ravel(s) for _, s in items]).astype(np.int64)
            return dst, src

        # ---- observations ------------------------------------------------------------
        obs_src = None
        if workspace:
            observations = root.get("observations") or []
            by_name = {}
            for oi, obs in enumerate(observations):
                by_name.setdefault(obs["name"], (oi, obs))
            srcs = []
            for c in channels:
                if c not in by_name:
                    raise SpecError(
                        f"{_where(c)}: the workspace has no observation for this channel "
                        f"(observations: {sorted(by_name)})"
                    )
                oi, obs = by_name[c]
                got = _shape(obs["data"])
                if got != (channel_nbins[c],):
                    raise SpecError(
                        f"observation {c!r}: 'data' has {got[0] if got else 0} bins but channel "
                        f"{c!r} has {channel_nbins[c]} (bin-count mismatch between the samples "
                        "and the data)"
                    )
                srcs.append(
                    self.leaf(
                        ("observations", oi, "data"),
                        obs["data"],
                        (channel_nbins[c],),
                        f"observation {c!r}: 'data'",
                        CHECK_NONNEG,
                    )
                )
            obs_src = np.concatenate(srcs)

        raw_checks = np.zeros(self.nraw, dtype=np.int8)
        for leaf in self.leaves:
            raw_checks[leaf.offset : leaf.offset + leaf.size] = leaf.checks

        def cat(parts: list[Any], dtype=np.int64) -> np.ndarray:
            if not parts:
                return np.zeros(0, dtype=dtype)
            return np.concatenate([np.ravel(np.asarray(p)) for p in parts]).astype(dtype)

        def gather_of(size: int, dst: np.ndarray, src: np.ndarray, zero: int) -> np.ndarray:
            out = np.full(size, zero, dtype=np.int64)
            out[dst] = src
            return out

        nom_src_a, nom_dst_a = cat(nom_src), cat(nom_dst)
        hs_size = len(hs_par) * nsamp * nbins
        hs_dst_a = cat(hs_dst)
        st_size = len(st_par) * nsamp
        gathers = {
            "nom_gather": gather_of(nsamp * nbins, nom_dst_a, nom_src_a, self.nraw),
            "hs_hi_gather": gather_of(hs_size, hs_dst_a, cat(hs_hi), self.nraw),
            "hs_lo_gather": gather_of(hs_size, hs_dst_a, cat(hs_lo), self.nraw),
            "hs_nom_gather": gather_of(hs_size, hs_dst_a, cat(hs_nom), nsamp * nbins),
            "st_unc_gather": gather_of(st_size, cat(st_unc_dst), cat(st_unc_src), self.nraw),
        }
        st_par_arr = cat([st_par])
        ss_par_arr = cat([ss_par])
        i64 = np.int64
        return Structure(
            channels=channels,
            channel_nbins=nbins_c,
            samples=samples,
            nbins=nbins,
            modifiers=tuple(sorted(all_modifiers)),
            par_order=tuple(par_order),
            par_types=tuple(par_type[m] for m in par_order),
            par_sizes=tuple(par_size[m] for m in par_order),
            par_starts=tuple(par_starts[m] for m in par_order),
            par_names=tuple(par_names),
            npars=npars,
            naux=naux,
            poi_name=poi,
            poi_index=poi_index,
            normsys_code=normsys_code,
            histosys_code=histosys_code,
            leaves=tuple(self.leaves),
            nraw=self.nraw,
            raw_checks=raw_checks,
            nominal_leaf=dict(nominal_leaf),
            nom_src=cat(nom_src),
            nom_dst=cat(nom_dst),
            hs_par=np.asarray(hs_par, dtype=i64),
            hs_hi_src=cat(hs_hi),
            hs_lo_src=cat(hs_lo),
            hs_nom=cat(hs_nom),
            hs_dst=cat(hs_dst),
            ns_par=np.asarray(ns_par, dtype=i64),
            ns_lo_src=cat(ns_lo),
            ns_hi_src=cat(ns_hi),
            channel_fac_idx=channel_fac_idx,
            bin_fac_idx=bin_fac_idx,
            st_par=st_par_arr,
            st_bin=cat([st_bin]),
            st_users=(np.asarray(st_user_rows, dtype=np.float64).reshape(len(st_par), nsamp)),
            st_unc_src=cat(st_unc_src),
            st_unc_dst=cat(st_unc_dst),
            ss_par=ss_par_arr,
            ss_nom=cat([ss_nom]),
            ss_unc_src=cat(ss_unc_src),
            gauss_par=np.asarray(gauss_par, dtype=i64),
            gauss_aux=np.asarray(gauss_aux, dtype=i64),
            gauss_sigma_default=np.asarray(gauss_sigma, dtype=np.float64),
            gauss_st_pos=np.asarray([gauss_pos_of[j] for j in st_par_arr.tolist()], dtype=i64),
            pois_par=np.asarray(pois_par, dtype=i64),
            pois_aux=np.asarray(pois_aux, dtype=i64),
            pois_ss_pos=np.asarray([pois_pos_of[j] for j in ss_par_arr.tolist()], dtype=i64),
            aux_default=np.asarray(aux_default, dtype=np.float64),
            aux_st_pos=np.asarray([aux_pos_of[j] for j in st_par_arr.tolist()], dtype=i64),
            aux_ss_pos=np.asarray([aux_pos_of[j] for j in ss_par_arr.tolist()], dtype=i64),
            init_default=init_default,
            bounds_default=bounds_default,
            fixed_default=fixed_default,
            user_init=pack(user["init"]),
            user_bounds=pack(user["bounds"]),
            user_aux=pack(user["aux"]),
            user_sigma=pack(user["sigma"]),
            user_factor=pack(user["factor"]),
            user_fixed=(
                np.asarray(user_fixed_idx, dtype=i64),
                np.asarray(user_fixed_val, dtype=bool),
            ),
            obs_src=obs_src,
            **gathers,
            template=root,
            is_workspace=workspace,
            measurement_name=measurement_name,
            measurement_index=measurement_index,
            aux_perm=np.argsort(
                np.concatenate([gauss_aux, pois_aux]).astype(np.int64), kind="stable"
            )
            if naux
            else np.zeros(0, dtype=np.int64),
        )
