"""HS3 (the HEP Statistics Serialization Standard, version 0.2.0) for HistFactory models.

diffana reads and writes the HistFactory part of HS3 by converting it to and from a pyhf
workspace: an HS3 document becomes a pyhf workspace (one measurement) plus interpolation
codes, which `Model.from_pyhf` builds, so that traced yields, validation and pyhf's
numbers carry over unchanged.

Mapping (pyhf <-> HS3):

- channel <-> ``histfactory_dist`` (one axis ``obs_x_<channel>`` with one unit bin per
  pyhf bin); observations <-> ``binned`` data ``obsData_<channel>``; measurement <->
  likelihood and analysis (POI, ``product_domain`` bounds, ``parameter_points`` inits,
  ``const`` for fixed parameters).
- normfactor, normsys, histosys, shapefactor, shapesys keep their names; a scalar
  modifier's HS3 ``parameter`` is its pyhf name, a per-bin modifier's ``parameters`` are
  pyhf's ``name[i]``.
- staterror: no ``data``; its absolute uncertainties are the sample's ``data.errors``
  (the standard's Barlow-Beeston-lite convention).
- lumi: a ``normfactor`` whose parameter is constrained by a ``gaussian_dist`` in the
  likelihood's ``aux_distributions`` (HS3 has no lumi modifier).
- interpolation codes: ``data.interpolation`` of normsys (``code1``, ``code4``) and
  histosys (``code0``, ``code4p``), as pyhs3 reads them; the standard's names ``log``
  (= code1), ``lin`` (= code0) and ``poly6`` (= code4p) are read as well.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diffana.errors import SpecError
from diffana.hf import _spec

__all__ = [
    "HS3_VERSION",
    "hs3_to_pyhf",
    "is_hs3",
    "load_document",
    "pyhf_to_hs3",
]

HS3_VERSION = "0.2.0"

_SCALAR = ("normfactor", "normsys", "histosys")
_PER_BIN = ("staterror", "shapesys", "shapefactor")
SUPPORTED_MODIFIERS = _SCALAR + _PER_BIN
_DEFAULT_CONSTRAINT = {
    "normsys": "Gauss",
    "histosys": "Gauss",
    "staterror": "Gauss",
    "shapesys": "Poisson",
}
_CODES = {
    "normsys": {"code1": "code1", "log": "code1", "code4": "code4"},
    "histosys": {"code0": "code0", "lin": "code0", "code4p": "code4p", "poly6": "code4p"},
}
_DEFAULT_CODES = {"normsys": "code4", "histosys": "code4p"}
_LUMI_BOUNDS = (0.0, 10.0)


# ----------------------------------------------------------------------------------------
# reading documents
# ----------------------------------------------------------------------------------------
def load_document(
    doc_or_path: Any, what: str = "HS3", kind: str = "an HS3 document"
) -> tuple[Mapping[str, Any], str]:
    """A JSON object from a dict or a file, and its source (the path, or ``""``); `what`
    names the format and `kind` the expected document in error messages.

    **Raises:** `SpecError` for an unreadable file, malformed JSON or a non-object.
    """
    return _spec.read_json_object(doc_or_path, what, kind)


def is_hs3(doc: Mapping[str, Any]) -> bool:
    """Whether a JSON object looks like an HS3 document (``distributions`` or
    ``metadata.hs3_version``) rather than a pyhf workspace (``channels``)."""
    meta = doc.get("metadata")
    return "distributions" in doc or (isinstance(meta, Mapping) and "hs3_version" in meta)


def _describe(kind: str, index: int, item: Any) -> str:
    """``distributions[3] (name 'x', type 'gaussian_dist')``: a JSON path with the element's
    name and type where it has them."""
    tags = []
    if isinstance(item, Mapping):
        if "name" in item:
            tags.append(f"name {item['name']!r}")
        if "type" in item:
            tags.append(f"type {item['type']!r}")
    return f"{kind}[{index}]" + (f" ({', '.join(tags)})" if tags else "")


class _Reader:
    """Error messages with the source and the JSON path of the element at fault."""

    def __init__(self, source: str):
        self.prefix = f"{source}: " if source else ""

    def error(self, where: str, message: str) -> SpecError:
        return SpecError(f"{self.prefix}{where}: {message}")

    def field(self, obj: Any, key: str, where: str, kinds: Any = None, what: str = "") -> Any:
        if not isinstance(obj, Mapping):
            raise self.error(where, f"expected a JSON object, got {type(obj).__name__}")
        if key not in obj:
            raise self.error(where, f"missing field {key!r}{f' ({what})' if what else ''}")
        value = obj[key]
        if kinds is not None and not isinstance(value, kinds):
            raise self.error(
                f"{where}.{key}", f"expected {what or kinds}, got {type(value).__name__}"
            )
        return value

    def array(self, obj: Any, key: str, where: str, nbins: int | None = None) -> Any:
        """A numeric array field (list, numpy or JAX array, possibly traced), unchanged."""
        value = self.field(obj, key, where, what="an array of numbers")
        if isinstance(value, str | bytes | Mapping) or np.ndim(value) != 1:
            raise self.error(f"{where}.{key}", "expected a one-dimensional array of numbers")
        if nbins is not None and np.shape(value)[0] != nbins:
            raise self.error(
                f"{where}.{key}",
                f"has {np.shape(value)[0]} entries but the distribution has {nbins} bins",
            )
        return value

    def named_list(self, doc: Mapping[str, Any], key: str) -> dict[str, tuple[int, Any]]:
        """A top-level list of named objects as ``{name: (index, object)}``."""
        items = doc.get(key, [])
        if not isinstance(items, Sequence) or isinstance(items, str):
            raise self.error(key, f"expected an array, got {type(items).__name__}")
        out: dict[str, tuple[int, Any]] = {}
        for i, item in enumerate(items):
            name = self.field(item, "name", _describe(key, i, item), str, "a string")
            if name in out:
                raise self.error(_describe(key, i, item), f"the name {name!r} is used twice")
            out[name] = (i, item)
        return out


# ----------------------------------------------------------------------------------------
# HS3 -> pyhf
# ----------------------------------------------------------------------------------------
def _nbins(r: _Reader, axes: Any, where: str) -> int:
    if not isinstance(axes, Sequence) or isinstance(axes, str) or not axes:
        raise r.error(f"{where}.axes", "expected a non-empty array of axes")
    total = 1
    for i, axis in enumerate(axes):
        at = f"{where}.axes[{i}]"
        if isinstance(axis, Mapping) and "nbins" in axis:
            n = axis["nbins"]
        elif isinstance(axis, Mapping) and "edges" in axis:
            n = len(axis["edges"]) - 1
        else:
            raise r.error(at, "missing field 'nbins' (or 'edges') of a binned axis")
        if not isinstance(n, int) or n < 1:
            raise r.error(at, f"expected a positive number of bins, got {n!r}")
        total *= n
    return total


def _pick(r: _Reader, table: dict[str, tuple[int, Any]], key: str, ref: Any, where: str) -> Any:
    if not isinstance(ref, str):
        raise r.error(where, f"expected the name of an entry of {key!r}, got {ref!r}")
    if ref not in table:
        known = sorted(table)[:10]
        raise r.error(
            where, f"refers to {key[:-1] if key != 'data' else 'data'} {ref!r}, which the "
            f"document does not define (its {key}: {known}{' ...' if len(table) > 10 else ''})"
        )  # fmt: skip
    return table[ref]


class _Import:
    """The state of one HS3 -> pyhf conversion."""

    def __init__(self, doc: Mapping[str, Any], source: str, analysis: Any):
        self.doc, self.r = doc, _Reader(source)
        r = self.r
        self.dists = r.named_list(doc, "distributions")
        self.data = r.named_list(doc, "data")
        self.likelihoods = r.named_list(doc, "likelihoods")
        self.domains = r.named_list(doc, "domains")
        self.points = r.named_list(doc, "parameter_points")
        self.analyses = r.named_list(doc, "analyses")
        self.analysis_name, self.analysis = self._analysis(analysis)
        # HS3 parameter name -> (pyhf parameter set, bin index or None)
        self.par_of: dict[str, tuple[str, int | None]] = {}
        self.set_type: dict[str, str] = {}
        self.set_size: dict[str, int] = {}
        self.per_bin_names: dict[tuple[str, ...], str] = {}
        self.codes: dict[str, tuple[str, str]] = {}
        self.lumi: dict[str, tuple[float, float]] = {}

    # ---- which likelihood ------------------------------------------------------------
    def _analysis(self, analysis: Any) -> tuple[str, Mapping[str, Any] | None]:
        r = self.r
        if analysis is None:
            if self.analyses:
                name = next(iter(self.analyses))
                return name, self.analyses[name][1]
            if not self.likelihoods:
                raise r.error("document", "defines no 'analyses' and no 'likelihoods'")
            return next(iter(self.likelihoods)), None
        if isinstance(analysis, int) and not isinstance(analysis, bool):
            names = list(self.analyses)
            if not -len(names) <= analysis < len(names):
                raise r.error("analyses", f"has {len(names)} entries; no index {analysis}")
            return names[analysis], self.analyses[names[analysis]][1]
        if analysis in self.analyses:
            return analysis, self.analyses[analysis][1]
        if analysis in self.likelihoods:
            return analysis, None
        raise r.error(
            "analyses",
            f"no analysis or likelihood named {analysis!r} (analyses: {list(self.analyses)}, "
            f"likelihoods: {list(self.likelihoods)})",
        )

    def likelihood(self) -> tuple[str, Mapping[str, Any]]:
        if self.analysis is None:
            i, lh = self.likelihoods[self.analysis_name]
            return _describe("likelihoods", i, lh), lh
        ai, _ = self.analyses[self.analysis_name]
        where = _describe("analyses", ai, self.analysis)
        ref = self.r.field(self.analysis, "likelihood", where, what="a likelihood's name")
        i, lh = _pick(self.r, self.likelihoods, "likelihoods", ref, f"{where}.likelihood")
        return _describe("likelihoods", i, lh), lh

    # ---- channels --------------------------------------------------------------------
    def _code(self, mtype: str, data: Mapping[str, Any], where: str) -> None:
        given = data.get("interpolation", _DEFAULT_CODES[mtype])
        code = _CODES[mtype].get(given) if isinstance(given, str) else None
        if code is None:
            raise self.r.error(
                f"{where}.data.interpolation",
                f"interpolation {given!r} is not supported for {mtype}; diffana supports "
                f"{sorted(_CODES[mtype])}",
            )
        first = self.codes.setdefault(mtype, (code, where))
        if first[0] != code:
            raise self.r.error(
                where,
                f"{mtype} interpolation {code!r} differs from {first[0]!r} at {first[1]}; "
                f"diffana (like pyhf) uses one interpolation code per modifier type",
            )

    def _constraint(self, mtype: str, mod: Mapping[str, Any], where: str) -> None:
        want = _DEFAULT_CONSTRAINT.get(mtype)
        got = mod.get("constraint", want)
        if got != want:
            allowed = f"constraint {want!r}" if want else "no constraint"
            raise self.r.error(
                f"{where}.constraint",
                f"a {mtype} modifier with constraint {got!r} is not supported; diffana "
                f"(pyhf's HistFactory) supports {allowed} for {mtype}",
            )

    def _register(self, hs3_name: str, set_name: str, index: int | None, where: str) -> None:
        old = self.par_of.setdefault(hs3_name, (set_name, index))
        if old != (set_name, index):
            raise self.r.error(
                where,
                f"parameter {hs3_name!r} is used by modifiers of different kinds "
                f"({old[0]!r} and {set_name!r})",
            )

    def _set(self, name: str, mtype: str, size: int, where: str) -> None:
        kind = "lumi" if mtype == "normfactor" and name in self.lumi else mtype
        old = self.set_type.setdefault(name, kind)
        compatible = {old, kind} <= {"normsys", "histosys"} or old == kind
        if not compatible:
            raise self.r.error(
                where, f"parameter {name!r} drives a {old} and a {kind} modifier; pyhf "
                "shares a parameter only between normsys and histosys"
            )  # fmt: skip
        if self.set_size.setdefault(name, size) != size:
            raise self.r.error(where, f"parameters of {name!r} differ in number between uses")

    def _modifier(
        self, mod: Any, where: str, nbins: int, channel: str, sample: Any
    ) -> dict[str, Any]:
        r = self.r
        mtype = r.field(mod, "type", where, str, "a modifier type")
        if mtype not in SUPPORTED_MODIFIERS:
            raise r.error(
                where, f"modifier type {mtype!r} is not part of diffana's HistFactory subset; "
                f"supported: {list(SUPPORTED_MODIFIERS)} (and lumi as a constrained normfactor)"
            )  # fmt: skip
        self._constraint(mtype, mod, where)
        if mtype in _SCALAR:
            par = r.field(mod, "parameter", where, str, "the name of its parameter")
            self._register(par, par, None, where)
            self._set(par, mtype, 1, where)
            out: dict[str, Any] = {"name": par, "type": mtype}
            if mtype == "normfactor":
                out["type"] = "lumi" if par in self.lumi else "normfactor"
                out["data"] = None
            elif mtype == "normsys":
                data = r.field(mod, "data", where, Mapping, "an object with 'hi' and 'lo'")
                self._code("normsys", data, where)
                out["data"] = {
                    "hi": r.field(data, "hi", f"{where}.data"),
                    "lo": r.field(data, "lo", f"{where}.data"),
                }
            else:
                data = r.field(mod, "data", where, Mapping, "an object with 'hi' and 'lo'")
                self._code("histosys", data, where)
                hi = r.field(data, "hi", f"{where}.data", Mapping, "an object with 'contents'")
                lo = r.field(data, "lo", f"{where}.data", Mapping, "an object with 'contents'")
                out["data"] = {
                    "hi_data": r.array(hi, "contents", f"{where}.data.hi", nbins),
                    "lo_data": r.array(lo, "contents", f"{where}.data.lo", nbins),
                }
            return out
        pars = mod.get("parameters")
        if pars is None and mtype == "staterror":
            pars = [f"staterror_{channel}_bin{i}" for i in range(nbins)]  # pyhs3's default
        if pars is None:
            raise r.error(where, "missing field 'parameters' (one parameter name per bin)")
        if not isinstance(pars, Sequence) or not all(isinstance(p, str) for p in pars):
            raise r.error(f"{where}.parameters", "expected an array of parameter names")
        if len(pars) != nbins:
            raise r.error(
                f"{where}.parameters", f"has {len(pars)} names but the distribution has "
                f"{nbins} bins"
            )  # fmt: skip
        name = self.per_bin_names.setdefault(tuple(pars), str(mod.get("name", pars[0])))
        if list(self.per_bin_names.values()).count(name) > 1:
            raise r.error(
                where, f"modifier name {name!r} is used with different parameters elsewhere; "
                "per-bin modifiers of one name must share their parameters"
            )  # fmt: skip
        self._set(name, mtype, nbins, where)
        for i, p in enumerate(pars):
            self._register(p, name, i, f"{where}.parameters[{i}]")
        if mtype == "shapefactor":
            return {"name": name, "type": mtype, "data": None}
        if mtype == "shapesys":
            data = r.field(mod, "data", where, Mapping, "an object with 'vals'")
            return {"name": name, "type": mtype, "data": r.array(data, "vals", f"{where}.data")}
        data = mod.get("data")
        if isinstance(data, Mapping) and "uncertainties" in data:  # given on the modifier
            unc = r.array(data, "uncertainties", f"{where}.data", nbins)
        else:
            sdata = sample["data"]
            if "errors" not in sdata:
                raise r.error(
                    where, "a staterror modifier needs the sample's 'data.errors' (its "
                    "absolute statistical uncertainties)"
                )  # fmt: skip
            unc = r.array(sdata, "errors", where.rsplit(".modifiers", 1)[0] + ".data", nbins)
        return {"name": name, "type": mtype, "data": unc}

    def _channel(self, index: int, dist: Any) -> tuple[dict[str, Any], int]:
        r = self.r
        where = _describe("distributions", index, dist)
        nbins = _nbins(r, r.field(dist, "axes", where), where)
        method = dist.get("barlow_beeston_method", "lite")
        if method != "lite":
            raise r.error(
                f"{where}.barlow_beeston_method", f"{method!r} is not supported; diffana "
                "(pyhf's staterror) combines the samples' uncertainties per bin ('lite')"
            )  # fmt: skip
        samples = r.field(dist, "samples", where, Sequence, "an array of samples")
        if not samples:
            raise r.error(f"{where}.samples", "is empty; a channel needs at least one sample")
        out = []
        for si, smp in enumerate(samples):
            at = f"{where}.{_describe('samples', si, smp)}"
            sname = r.field(smp, "name", at, str, "a string")
            sdata = r.field(smp, "data", at, Mapping, "an object with 'contents'")
            contents = r.array(sdata, "contents", f"{at}.data", nbins)
            if "errors" in sdata:
                r.array(sdata, "errors", f"{at}.data", nbins)
            mods = smp.get("modifiers", [])
            if not isinstance(mods, Sequence):
                raise r.error(f"{at}.modifiers", "expected an array of modifiers")
            converted = [
                self._modifier(m, f"{at}.{_describe('modifiers', mi, m)}", nbins, dist["name"], smp)
                for mi, m in enumerate(mods)
            ]
            staterrors = {m["name"] for m in converted if m["type"] == "staterror"}
            if len(staterrors) > 1:
                raise r.error(at, f"has several staterror modifiers {sorted(staterrors)}")
            out.append({"name": sname, "data": contents, "modifiers": converted})
        return {"name": dist["name"], "samples": out}, nbins

    # ---- auxiliary constraints (lumi) ------------------------------------------------
    def _value(self, ref: Any, where: str) -> float:
        """A number, or the value of a parameter point entry named `ref`."""
        if isinstance(ref, int | float) and not isinstance(ref, bool):
            return float(ref)
        entries = self._point_entries() + [
            e for _, pset in self.points.values() for e in (pset.get("parameters") or [])
        ]  # the analysis's point first, then any point that has the name
        for entry in entries:
            if isinstance(entry, Mapping) and entry.get("name") == ref and "value" in entry:
                return float(entry["value"])
        raise self.r.error(where, f"expected a number or a parameter with a value, got {ref!r}")

    def _aux(self, lh: Mapping[str, Any], where: str) -> None:
        r = self.r
        aux = lh.get("aux_distributions") or []
        modifier_pars = self._normfactor_parameters()
        for k, ref in enumerate(aux):
            at = f"{where}.aux_distributions[{k}]"
            i, dist = _pick(r, self.dists, "distributions", ref, at)
            dwhere = _describe("distributions", i, dist)
            if dist.get("type") != "gaussian_dist":
                raise r.error(
                    dwhere, "is not supported as an auxiliary distribution; diffana supports "
                    "a gaussian_dist constraining a normfactor parameter (a luminosity)"
                )  # fmt: skip
            x = r.field(dist, "x", dwhere)
            mean = r.field(dist, "mean", dwhere)
            par, other = (mean, x) if mean in modifier_pars else (x, mean)
            if not isinstance(par, str) or par not in modifier_pars:
                raise r.error(
                    dwhere, "constrains no normfactor parameter of the likelihood; diffana "
                    "supports a gaussian_dist on a normfactor parameter (a luminosity)"
                )  # fmt: skip
            sigma = self._value(r.field(dist, "sigma", dwhere), f"{dwhere}.sigma")
            self.lumi[par] = (self._value(other, dwhere), sigma)

    def _normfactor_parameters(self) -> set[str]:
        out = set()
        for _, dist in self.dists.values():
            if not isinstance(dist, Mapping) or dist.get("type") != "histfactory_dist":
                continue
            for smp in dist.get("samples") or []:
                for mod in (smp.get("modifiers") or []) if isinstance(smp, Mapping) else []:
                    if isinstance(mod, Mapping) and mod.get("type") == "normfactor":
                        out.add(mod.get("parameter"))
        return out

    # ---- parameters ------------------------------------------------------------------
    def _point_entries(self) -> list[Mapping[str, Any]]:
        if self.analysis is None or "init" not in self.analysis:
            return []
        ai, _ = self.analyses[self.analysis_name]
        where = f"{_describe('analyses', ai, self.analysis)}.init"
        i, point = _pick(self.r, self.points, "parameter_points", self.analysis["init"], where)
        entries = self.r.field(point, "parameters", _describe("parameter_points", i, point))
        return [e for e in entries if isinstance(e, Mapping)]

    def _bounds(self) -> dict[str, tuple[float, float]]:
        if self.analysis is None:
            return {}
        ai, _ = self.analyses[self.analysis_name]
        where = _describe("analyses", ai, self.analysis)
        refs = self.r.field(self.analysis, "domains", where, Sequence, "an array of domains")
        out: dict[str, tuple[float, float]] = {}
        for k, ref in enumerate(refs):
            i, dom = _pick(self.r, self.domains, "domains", ref, f"{where}.domains[{k}]")
            dwhere = _describe("domains", i, dom)
            if dom.get("type") != "product_domain":
                raise self.r.error(dwhere, "only domains of type 'product_domain' are supported")
            for j, axis in enumerate(self.r.field(dom, "axes", dwhere)):
                name = self.r.field(axis, "name", f"{dwhere}.axes[{j}]", str, "a string")
                lo, hi = axis.get("min", -math.inf), axis.get("max", math.inf)
                out[name] = (float(lo), float(hi))
        return out

    def parameters(self) -> tuple[list[dict[str, Any]], dict[str, tuple[str, int]]]:
        """pyhf parameter configs, and the parameters marked ``const``: HS3 name ->
        (pyhf parameter set, index in the set)."""
        values = {e["name"]: e for e in self._point_entries() if "name" in e}
        bounds = self._bounds()
        configs = []
        const: dict[str, tuple[str, int]] = {}
        members: dict[str, list[str]] = {}
        for hs3_name, (set_name, _) in self.par_of.items():
            members.setdefault(set_name, []).append(hs3_name)
        for set_name, names in members.items():
            mtype = self.set_type[set_name]
            names = sorted(names, key=lambda p: self.par_of[p][1] or 0)
            cfg: dict[str, Any] = {"name": set_name}
            default_init = self.lumi[set_name][0] if mtype == "lumi" else _spec._DEFAULT_INIT[mtype]
            default_bounds = _LUMI_BOUNDS if mtype == "lumi" else _spec._DEFAULT_BOUNDS[mtype]
            if any(p in values for p in names) or mtype == "lumi":
                cfg["inits"] = [float(values.get(p, {}).get("value", default_init)) for p in names]
            if any(p in bounds for p in names) or mtype == "lumi":
                cfg["bounds"] = [list(bounds.get(p, default_bounds)) for p in names]
            flags = [bool(values.get(p, {}).get("const", False)) for p in names]
            const.update(
                (p, (set_name, k)) for k, (p, f) in enumerate(zip(names, flags, strict=True)) if f
            )
            if all(flags):
                cfg["fixed"] = True
            if mtype == "lumi":
                cfg["auxdata"] = [self.lumi[set_name][0]]
                cfg["sigmas"] = [self.lumi[set_name][1]]
            if len(cfg) > 1:
                configs.append(cfg)
        return configs, const

    def poi(self) -> str:
        if self.analysis is None:
            return ""
        pois = self.analysis.get("parameters_of_interest") or []
        ai, _ = self.analyses[self.analysis_name]
        where = f"{_describe('analyses', ai, self.analysis)}.parameters_of_interest"
        if len(pois) > 1:
            raise self.r.error(where, f"has {len(pois)} entries; diffana supports one POI")
        if not pois:
            return ""
        if pois[0] not in self.par_of or self.par_of[pois[0]][1] is not None:
            raise self.r.error(where, f"{pois[0]!r} is not a scalar parameter of the likelihood")
        return self.par_of[pois[0]][0]

    def run(self) -> tuple[dict[str, Any], dict[str, dict[str, str]], dict[str, Any]]:
        r = self.r
        lwhere, lh = self.likelihood()
        dists = r.field(lh, "distributions", lwhere, Sequence, "an array of distribution names")
        datas = r.field(lh, "data", lwhere, Sequence, "an array of data names")
        if len(dists) != len(datas):
            raise r.error(
                lwhere, f"pairs {len(dists)} distributions with {len(datas)} data; expected "
                "one data entry per distribution"
            )  # fmt: skip
        self._aux(lh, lwhere)
        channels, observations = [], []
        for k, (dref, oref) in enumerate(zip(dists, datas, strict=True)):
            i, dist = _pick(r, self.dists, "distributions", dref, f"{lwhere}.distributions[{k}]")
            if dist.get("type") != "histfactory_dist":
                raise r.error(
                    _describe("distributions", i, dist),
                    "is outside the HistFactory subset diffana reads; supported: "
                    "'histfactory_dist' channels (and a 'gaussian_dist' luminosity constraint "
                    "in aux_distributions)",
                )
            channel, nbins = self._channel(i, dist)
            j, datum = _pick(r, self.data, "data", oref, f"{lwhere}.data[{k}]")
            dwhere = _describe("data", j, datum)
            if datum.get("type") != "binned":
                raise r.error(dwhere, "expected data of type 'binned' for a histfactory_dist")
            channels.append(channel)
            observations.append(
                {"name": channel["name"], "data": r.array(datum, "contents", dwhere, nbins)}
            )
        configs, const = self.parameters()
        workspace = {
            "channels": channels,
            "measurements": [
                {"name": self.analysis_name, "config": {"poi": self.poi(), "parameters": configs}}
            ],
            "observations": observations,
            "version": "1.0.0",
        }
        settings = {
            mtype: {"interpcode": self.codes.get(mtype, (_DEFAULT_CODES[mtype], ""))[0]}
            for mtype in ("normsys", "histosys")
        }
        return workspace, settings, const


def hs3_to_pyhf(
    doc_or_path: Any, analysis: str | int | None = None
) -> tuple[dict[str, Any], dict[str, dict[str, str]], dict[str, Any], str]:
    """An HS3 document's HistFactory likelihood as a pyhf workspace.

    **Returns:** ``(workspace, modifier_settings, const, source)``: the workspace
    (one measurement named after the analysis), the interpolation codes for
    `Model.from_pyhf`, the parameters marked ``const`` (HS3 name -> pyhf parameter set
    and index in it) and the file path
    (``""`` for a dict). Numbers are passed through as they are (JAX arrays and tracers
    included).

    **Raises:** `SpecError` naming the JSON path of an unsupported, missing or dangling
    element.
    """
    doc, source = load_document(doc_or_path)
    if not is_hs3(doc):
        prefix = f"{source}: " if source else ""
        raise SpecError(
            f"{prefix}not an HS3 document (no 'distributions' and no 'metadata.hs3_version'); "
            "for a pyhf workspace use Model.from_pyhf"
        )
    workspace, settings, const = _Import(doc, source, analysis).run()
    return workspace, settings, const, source


# ----------------------------------------------------------------------------------------
# pyhf -> HS3
# ----------------------------------------------------------------------------------------
def _as_list(values: Any) -> list[float]:
    return np.asarray(values, dtype=np.float64).ravel().tolist()


def _modifier_to_hs3(
    mod: Mapping[str, Any], names: Mapping[str, list[str]], codes: Mapping[str, str]
) -> dict[str, Any]:
    name, mtype = mod["name"], mod["type"]
    if mtype in ("normfactor", "lumi"):
        return {"name": name, "type": "normfactor", "parameter": name}
    if mtype == "normsys":
        data = {
            "hi": float(mod["data"]["hi"]),
            "lo": float(mod["data"]["lo"]),
            "interpolation": codes["normsys"],
        }
        return {"name": name, "type": mtype, "parameter": name, "constraint": "Gauss", "data": data}
    if mtype == "histosys":
        data = {
            "hi": {"contents": _as_list(mod["data"]["hi_data"])},
            "lo": {"contents": _as_list(mod["data"]["lo_data"])},
            "interpolation": codes["histosys"],
        }
        return {"name": name, "type": mtype, "parameter": name, "constraint": "Gauss", "data": data}
    out: dict[str, Any] = {"name": name, "type": mtype, "parameters": list(names[name])}
    if mtype == "staterror":
        out["constraint"] = "Gauss"
    elif mtype == "shapesys":
        out["constraint"] = "Poisson"
        out["data"] = {"vals": _as_list(mod["data"])}
    return out


def _sample_to_hs3(
    smp: Mapping[str, Any], names: Mapping[str, list[str]], codes: Mapping[str, str], where: str
) -> dict[str, Any]:
    data: dict[str, Any] = {"contents": _as_list(smp["data"])}
    staterrors = [m for m in smp.get("modifiers", []) if m["type"] == "staterror"]
    if len(staterrors) > 1:
        raise SpecError(
            f"{where}: has {len(staterrors)} staterror modifiers; HS3 keeps one statistical "
            "uncertainty per sample (its data.errors)"
        )
    if staterrors:
        data["errors"] = _as_list(staterrors[0]["data"])
    mods = [_modifier_to_hs3(m, names, codes) for m in smp.get("modifiers", [])]
    return {"name": smp["name"], "data": data, "modifiers": mods}


def _check_channel_staterror(channel: Mapping[str, Any]) -> None:
    names = {
        m["name"] for s in channel["samples"] for m in s.get("modifiers", [])
        if m["type"] == "staterror"
    }  # fmt: skip
    if len(names) > 1:
        raise SpecError(
            f"channel {channel['name']!r}: staterror modifiers {sorted(names)}; an HS3 "
            "histfactory_dist has one staterror per channel (Barlow-Beeston lite)"
        )


def _parameter_tables(
    model: Any, config: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, list[str]], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """HS3 parameter names per pyhf set, the parameter point, the domain axes and the
    lumi constraints (``{name: (auxdata, sigma)}``)."""
    types = dict(model.modifiers)
    cfg = {c["name"]: c for c in config}
    for name, c in cfg.items():
        if types.get(name) == "lumi":
            continue
        extra = sorted(set(c) & {"auxdata", "sigmas", "factors"})
        if extra and name in types:
            raise SpecError(
                f"parameter config {name!r}: {extra} cannot be written in HS3, whose "
                f"{types[name]} constraints have a fixed width and centre"
            )
    names: dict[str, list[str]] = {}
    init = np.asarray(model.init, dtype=np.float64)
    bounds = np.asarray(model.bounds, dtype=np.float64)
    fixed = model.fixed
    point, axes = [], []
    for name, sl in model.par_slices.items():
        par_names = list(model.par_names[sl])
        names[name] = par_names
        for j, p in zip(range(sl.start, sl.stop), par_names, strict=True):
            entry: dict[str, Any] = {"name": p, "value": float(init[j])}
            if fixed[j]:
                entry["const"] = True
            point.append(entry)
            axes.append({"name": p, "min": float(bounds[j, 0]), "max": float(bounds[j, 1])})
    lumi = {
        name: (float(cfg[name]["auxdata"][0]), float(cfg[name]["sigmas"][0]))
        for name, t in types.items()
        if t == "lumi"
    }
    return names, point, axes, lumi


def pyhf_to_hs3(
    model: Any,
    workspace: Mapping[str, Any],
    codes: Mapping[str, str],
    version: str,
) -> dict[str, Any]:
    """The HS3 document of a one-measurement pyhf `workspace` (from ``model.to_pyhf``).

    **Arguments:**

    - `model`: the `Model` built from `workspace` (parameter order, inits, bounds, fixed).
    - `workspace`: the pyhf workspace, with one measurement and concrete numbers.
    - `codes`: ``{"normsys": code, "histosys": code}``.
    - `version`: diffana's version, recorded in ``metadata.packages``.

    **Returns:** the HS3 document (a JSON-serialisable dict).
    """
    meas = workspace["measurements"][0]
    names, point, axes, lumi = _parameter_tables(model, meas["config"].get("parameters", []))
    obs = {o["name"]: o["data"] for o in workspace["observations"]}
    distributions, data, dist_names, data_names = [], [], [], []
    for channel in workspace["channels"]:
        _check_channel_staterror(channel)
        cname = channel["name"]
        nbins = len(channel["samples"][0]["data"])
        binning = [{"name": f"obs_x_{cname}", "min": 0.0, "max": float(nbins), "nbins": nbins}]
        samples = [
            _sample_to_hs3(s, names, codes, f"channel {cname!r}, sample {s['name']!r}")
            for s in channel["samples"]
        ]
        distributions.append(
            {"name": cname, "type": "histfactory_dist", "axes": binning, "samples": samples}
        )
        data.append(
            {"name": f"obsData_{cname}", "type": "binned", "contents": _as_list(obs[cname]),
             "axes": binning}
        )  # fmt: skip
        dist_names.append(cname)
        data_names.append(f"obsData_{cname}")
    aux_names = []
    for name, (aux, sigma) in lumi.items():
        distributions.append(
            {"name": f"{name}_constraint", "type": "gaussian_dist", "x": aux, "mean": name,
             "sigma": sigma}
        )  # fmt: skip
        aux_names.append(f"{name}_constraint")
    mname = meas["name"]
    likelihood: dict[str, Any] = {
        "name": f"{mname}_likelihood",
        "distributions": dist_names,
        "data": data_names,
    }
    if aux_names:
        likelihood["aux_distributions"] = aux_names
    analysis: dict[str, Any] = {
        "name": mname,
        "likelihood": likelihood["name"],
        "domains": [f"{mname}_domain"],
        "init": f"{mname}_init",
    }
    if model.poi_name is not None:
        analysis["parameters_of_interest"] = [model.poi_name]
    return {
        "distributions": distributions,
        "data": data,
        "likelihoods": [likelihood],
        "domains": [{"name": f"{mname}_domain", "type": "product_domain", "axes": axes}],
        "parameter_points": [{"name": f"{mname}_init", "parameters": point}],
        "analyses": [analysis],
        "metadata": {
            "hs3_version": HS3_VERSION,
            "packages": [{"name": "diffana", "version": version}],
        },
    }


# ----------------------------------------------------------------------------------------
# public functions (re-exported by diffana.hf)
# ----------------------------------------------------------------------------------------
def _with_source(err: SpecError, source: str) -> SpecError:
    return SpecError(f"{source}: {err}") if source and not str(err).startswith(source) else err


def check_const(model: Any, const: Mapping[str, tuple[str, int]], source: str) -> None:
    """Raise `SpecError` for a ``const`` parameter the model leaves free: pyhf fixes
    whole modifiers, and per-bin parameters only where they have no effect."""
    slices = model.par_slices
    loose = [name for name, (s, k) in const.items() if not model.fixed[slices[s].start + k]]
    if loose:
        prefix = f"{source}: " if source else ""
        raise SpecError(
            f"{prefix}parameter_points: {loose[:5]} {'are' if len(loose) > 1 else 'is'} "
            "'const' while other bins of the same modifier are not; diffana (like pyhf) "
            "fixes whole modifiers"
        )


def model_from_hs3(cls: Any, doc_or_path: Any, analysis: Any, validate: bool) -> Any:
    """`Model.from_hs3`'s body (see there)."""
    workspace, settings, const, source = hs3_to_pyhf(doc_or_path, analysis)
    try:
        model = cls.from_pyhf(workspace, modifier_settings=settings, validate=validate)
    except SpecError as err:
        raise _with_source(err, source) from err
    check_const(model, const, source)
    return model
