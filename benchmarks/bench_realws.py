"""Fits and hypothesis tests of diffana against pyhf 0.7 (jax backend) on real workspaces.

The published ATLAS full likelihoods in `../shared/data/workspaces/` (relative to the
repository root; the script skips them, saying so, when the folder is absent), 67 to
625 parameters, and optionally workspaces from `diffana.testing.synthetic_workspace` at
about 10, 30, 100, 236, 300 and 1000 parameters (`--generated`). For each workspace:

* first call in a fresh process (compilation included): a worker interpreter imports
  diffana, builds the model (timed apart), then times its first `fit` and its first
  `hypotest` (observed CLs and the 5-point expected band at mu = 1). Again with JAX's
  persistent compilation cache in a temporary folder: the worker runs twice on the same
  folder and the second run's times are reported. pyhf-jax's first calls are timed the
  same way in their own fresh process;
* warm `fit` and `hypotest`: the median of `--repeats` calls after a warm-up, diffana
  and pyhf-jax alternated in this process, and the ratio pyhf / diffana. Then again
  with each library's calls in a row ("in a row"): alternated, every call starts with
  the processor's caches holding the other library's data, which costs a 2 ms diffana
  fit about 1 ms (sbottom) and a 30 ms pyhf fit little; in a row, both run as in a scan
  over mu or a loop over datasets;
* agreement: |CLs_obs diffana - pyhf|, its maximum over the expected band, and the
  difference of the NLL at the global minimum (pyhf's fit returns twice the NLL);
* for the 1Lbb workspace: first call (fresh process) and warm time of
  `jax.jit(jax.grad(f))`, `f(yields)` the median expected CLs (`diffana.losses.cls_loss`)
  as a function of every sample's nominal yields.

pyhf runs with `pyhf.set_backend("jax", pyhf.optimize.scipy_optimizer(tolerance=1e-10))`,
the tolerance of diffana's fits; `--pyhf-max-pars N` skips it above N parameters.

Run (all of it; takes long on a 2-core CPU):
`MPLBACKEND=Agg python benchmarks/bench_realws.py --generated 10,30,100,300,1000
--json realws.json --plot realws.png`; a quick check:
`python benchmarks/bench_realws.py --only sbottom,RJmimic --generated 10,30`
(`--no-real` for generated workspaces only, `--pyhf-max-pars 300` to leave pyhf out of
the largest, `--no-first-call` for warm timings alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACES = REPO_ROOT.parent / "shared" / "data" / "workspaces"
REAL = {
    "sbottom": "atlas_sbottom_multib_SUSY-2018-31_RegionA_synthsig.json",
    "RJmimic": "atlas_3L_RJmimic_SUSY-2018-06_ERJR_350p0_100p0.json",
    "1Lbb": "atlas_1Lbb_SUSY-2019-08_C1N2_Wh_hbb_600_300.json",
    "1Ljets": "atlas_1Ljets_hepdata97041_synthsig.json",
    "EWKinos": "atlas_compressed_EWKinos_SUSY-2018-16_synthsig.json",
    "3Lresonance": "atlas_3L_resonance_hepdata99806_synthsig.json",
}
# approximate parameter count -> synthetic_workspace(n_channels, n_bins, n_normsys,
# n_histosys, n_normfactors); npars = 2 + n_normfactors + n_normsys + n_histosys
# + n_channels * n_bins (signal mu, lumi, staterror per bin)
GENERATED = {
    10: (1, 2, 3, 2, 1),
    30: (3, 3, 10, 6, 3),
    100: (8, 3, 40, 28, 6),
    236: (24, 3, 90, 60, 12),
    300: (30, 3, 110, 86, 12),
    1000: (100, 4, 320, 250, 28),
}
GRAD_WORKSPACE = "1Lbb"  # the workspace on which the gradient of expected CLs is timed
MU_TEST = 1.0
PYHF_TOLERANCE = 1e-10
RESULT_TAG = "RESULT "  # prefix of the worker's JSON line on stdout


# ---- the diffana calls (all of them here: the argument order of diffana.infer may change)
def d_build(ws: dict) -> tuple[Any, Any]:
    """`(model, data)` of a workspace."""
    import diffana.hf

    model = diffana.hf.Model.from_pyhf(ws)
    return model, diffana.hf.workspace_data(ws, model)


def d_fit(model: Any, data: Any) -> Any:
    """Global fit; a `FitResult` with `.nll` (the NLL itself) and `.converged`."""
    import diffana.infer

    return diffana.infer.fit(data, model)


def d_hypotest(model: Any, data: Any) -> Any:
    """`(CLs_obs, expected band (5,))` at mu = MU_TEST, qtilde."""
    import diffana.infer

    return diffana.infer.hypotest(MU_TEST, data, model, return_expected_set=True)


def d_yields(ws: dict, model: Any) -> dict:
    """Nominal yields of every (channel, sample) of the workspace, from the model."""
    import jax.numpy as jnp

    yields = {}
    for channel in ws["channels"]:
        bins = model.channel_slices[channel["name"]]
        for sample in channel["samples"]:
            row = model.samples.index(sample["name"])
            yields[channel["name"], sample["name"]] = jnp.asarray(model.nominal[row, bins])
    return yields


def d_cls_grad(model: Any) -> Any:
    """`jax.jit(jax.grad(f))`, `f(yields)` the median expected CLs of mu = 1."""
    import jax

    import diffana.losses

    def expected_cls(yields):
        return diffana.losses.cls_loss(model.with_yields(yields))

    return jax.jit(jax.grad(expected_cls))


# ---- pyhf calls -----------------------------------------------------------------------
def p_setup() -> None:
    import pyhf

    pyhf.set_backend("jax", pyhf.optimize.scipy_optimizer(tolerance=PYHF_TOLERANCE))


def p_build(ws: dict) -> tuple[Any, Any]:
    import pyhf

    pws = pyhf.Workspace(ws)
    pmodel = pws.model()
    return pmodel, pyhf.tensorlib.astensor(pws.data(pmodel))


def p_fit(pmodel: Any, pdata: Any) -> tuple[Any, float]:
    """`(best-fit parameters, NLL)`: pyhf's fitted value is twice the NLL."""
    import pyhf

    pars, twice_nll = pyhf.infer.mle.fit(pdata, pmodel, return_fitted_val=True)
    return pars, 0.5 * float(twice_nll)


def p_hypotest(pmodel: Any, pdata: Any) -> tuple[float, list[float]]:
    import pyhf

    cls, band = pyhf.infer.hypotest(
        MU_TEST, pdata, pmodel, test_stat="qtilde", return_expected_set=True
    )
    return float(cls), [float(b) for b in band]


# ---- workspaces -------------------------------------------------------------------------
def load_workspace(ident: str) -> dict:
    """`"real:<key>"` (a file of REAL) or `"gen:<npars>"` (a GENERATED configuration)."""
    kind, _, key = ident.partition(":")
    if kind == "real":
        return json.loads((WORKSPACES / REAL[key]).read_text())
    if kind == "gen":
        from diffana.testing import synthetic_workspace

        return synthetic_workspace(*GENERATED[int(key)])
    raise ValueError(f"unknown workspace {ident!r}")


def selected(args: argparse.Namespace) -> list[str]:
    idents = []
    if args.no_real:
        pass
    elif WORKSPACES.is_dir():
        wanted = [w.strip().lower() for w in args.only.split(",")] if args.only else None
        for key, name in REAL.items():
            if wanted is None or any(w in key.lower() or w in name.lower() for w in wanted):
                if (WORKSPACES / name).is_file():
                    idents.append(f"real:{key}")
                else:
                    print(f"skipped {key}: {WORKSPACES / name} not found")
    else:
        print(f"real workspaces skipped: {WORKSPACES} not found")
    for n in [int(v) for v in args.generated.split(",")] if args.generated else []:
        if n not in GENERATED:
            raise SystemExit(f"--generated: choose among {sorted(GENERATED)}; got {n}")
        idents.append(f"gen:{n}")
    return idents


# ---- workers (fresh interpreters) ---------------------------------------------------------
def _block(tree: Any) -> Any:
    import jax

    return jax.block_until_ready(tree)


def worker(mode: str, ident: str, cache_dir: str | None) -> dict:
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    import jax

    if cache_dir:
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    else:
        jax.config.update("jax_enable_compilation_cache", False)
    out: dict[str, Any] = {}
    if mode == "first-call-pyhf":
        import pyhf  # noqa: F401

        p_setup()
        out["import_s"] = time.perf_counter() - start
        ws = load_workspace(ident)
        t = time.perf_counter()
        pmodel, pdata = p_build(ws)
        out["build_s"] = time.perf_counter() - t
        t = time.perf_counter()
        p_fit(pmodel, pdata)
        out["fit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        p_hypotest(pmodel, pdata)
        out["hypotest_s"] = time.perf_counter() - t
        return out

    import diffana  # noqa: F401

    out["import_s"] = time.perf_counter() - start
    ws = load_workspace(ident)
    t = time.perf_counter()
    model, data = _block(d_build(ws))
    out["build_s"] = time.perf_counter() - t
    if mode == "first-call":
        t = time.perf_counter()
        _block(d_fit(model, data))
        out["fit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        _block(d_hypotest(model, data))
        out["hypotest_s"] = time.perf_counter() - t
    elif mode == "first-grad":
        yields = d_yields(ws, model)
        t = time.perf_counter()
        _block(d_cls_grad(model)(yields))
        out["grad_s"] = time.perf_counter() - t
    else:
        raise ValueError(f"unknown worker mode {mode!r}")
    return out


def spawn(mode: str, ident: str, timeout: float, cache_dir: str | None = None) -> dict:
    """Run a worker in a fresh interpreter; its figures, or `{"error": ...}`."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, ident]
    if cache_dir:
        cmd += ["--cache-dir", cache_dir]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}


# ---- warm timings and agreement (this process) ---------------------------------------------
def timed(fn) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def warm(ident: str, ws: dict, args: argparse.Namespace) -> dict:
    import numpy as np

    model, data = _block(d_build(ws))
    row: dict[str, Any] = {"npars": int(model.npars), "nbins": int(model.nbins)}
    run_pyhf = model.npars <= args.pyhf_max_pars
    calls = {
        "diffana_fit": lambda: _block(d_fit(model, data)),
        "diffana_hypotest": lambda: _block(d_hypotest(model, data)),
    }
    if run_pyhf:
        pmodel, pdata = p_build(ws)
        calls["pyhf_fit"] = lambda: p_fit(pmodel, pdata)
        calls["pyhf_hypotest"] = lambda: p_hypotest(pmodel, pdata)
    results = {name: fn() for name, fn in calls.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for what in ("fit", "hypotest"):  # diffana and pyhf alternated
            for name in (f"diffana_{what}", f"pyhf_{what}"):
                if name in calls:
                    t, results[name] = timed(calls[name])
                    times[name].append(t)
    for name, ts in times.items():
        row[f"{name}_warm_s"] = statistics.median(ts)
    for name, fn in calls.items():  # each call repeated in a row
        row[f"{name}_row_s"] = statistics.median(timed(fn)[0] for _ in range(args.repeats))

    fit, (cls, band) = results["diffana_fit"], results["diffana_hypotest"]
    row.update(
        diffana_converged=bool(fit.converged),
        diffana_nll=float(fit.nll),
        diffana_cls=float(cls),
        diffana_band=[float(b) for b in np.asarray(band)],
    )
    if run_pyhf:
        p_cls, p_band = results["pyhf_hypotest"]
        row.update(
            pyhf_nll=results["pyhf_fit"][1],
            pyhf_cls=p_cls,
            pyhf_band=p_band,
            d_cls_obs=abs(row["diffana_cls"] - p_cls),
            d_cls_band=float(np.max(np.abs(np.asarray(row["diffana_band"]) - p_band))),
            d_nll=row["diffana_nll"] - results["pyhf_fit"][1],
        )
        for what in ("fit", "hypotest"):
            row[f"{what}_ratio"] = row[f"pyhf_{what}_warm_s"] / row[f"diffana_{what}_warm_s"]
            row[f"{what}_row_ratio"] = row[f"pyhf_{what}_row_s"] / row[f"diffana_{what}_row_s"]

    if ident == f"real:{GRAD_WORKSPACE}":
        yields = d_yields(ws, model)
        grad = d_cls_grad(model)
        g = _block(grad(yields))  # warm-up
        ts = [timed(lambda: _block(grad(yields)))[0] for _ in range(args.repeats)]
        row["grad_warm_s"] = statistics.median(ts)
        row["grad_n_yields"] = int(sum(np.size(v) for v in yields.values()))
        row["grad_finite"] = bool(all(np.all(np.isfinite(np.asarray(v))) for v in g.values()))
    return row


def first_calls(ident: str, args: argparse.Namespace) -> dict:
    row: dict[str, Any] = {"first": spawn("first-call", ident, args.worker_timeout)}
    with tempfile.TemporaryDirectory(prefix="diffana-jax-cache-") as cache:
        row["first_cache_cold"] = spawn("first-call", ident, args.worker_timeout, cache)
        row["first_cached"] = spawn("first-call", ident, args.worker_timeout, cache)
    if ident == f"real:{GRAD_WORKSPACE}":
        row["first_grad"] = spawn("first-grad", ident, args.worker_timeout)
    return row


def pyhf_first_call(ident: str, args: argparse.Namespace) -> dict:
    return {"pyhf_first": spawn("first-call-pyhf", ident, args.worker_timeout)}


# ---- report ---------------------------------------------------------------------------------
def _f(value: Any, scale: float = 1.0, fmt: str = "8.1f") -> str:
    if value is None:
        return f"{'-':>{int(fmt.split('.')[0] or 1)}}"
    return format(value * scale, fmt)


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'workspace':14s} {'pars':>5s} {'bins':>4s} | {'fit ms':>8s} {'pyhf':>8s} {'x':>5s}"
        f" | {'hypo ms':>8s} {'pyhf':>8s} {'x':>5s} | {'1st fit s':>9s} {'hypo s':>7s}"
        f" {'cached':>7s} {'hypo':>6s} {'build':>6s} | {'pyhf 1st':>8s} {'hypo':>6s}"
        f" | {'dCLs obs':>8s} {'dCLs exp':>8s} {'dNLL':>8s}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        first, cached = r.get("first", {}), r.get("first_cached", {})
        pfirst = r.get("pyhf_first", {})
        print(
            f"{r['name']:14s} {r['npars']:5d} {r['nbins']:4d} |"
            f" {_f(r.get('diffana_fit_warm_s'), 1e3)} {_f(r.get('pyhf_fit_warm_s'), 1e3)}"
            f" {_f(r.get('fit_ratio'), 1, '5.1f')} |"
            f" {_f(r.get('diffana_hypotest_warm_s'), 1e3)}"
            f" {_f(r.get('pyhf_hypotest_warm_s'), 1e3)}"
            f" {_f(r.get('hypotest_ratio'), 1, '5.1f')} |"
            f" {_f(first.get('fit_s'), 1, '9.2f')} {_f(first.get('hypotest_s'), 1, '7.2f')}"
            f" {_f(cached.get('fit_s'), 1, '7.2f')} {_f(cached.get('hypotest_s'), 1, '6.2f')}"
            f" {_f(first.get('build_s'), 1, '6.2f')} |"
            f" {_f(pfirst.get('fit_s'), 1, '8.2f')} {_f(pfirst.get('hypotest_s'), 1, '6.2f')} |"
            f" {_f(r.get('d_cls_obs'), 1, '8.1e')} {_f(r.get('d_cls_band'), 1, '8.1e')}"
            f" {_f(r.get('d_nll'), 1, '8.1e')}"
        )
        for key in ("first", "first_cache_cold", "first_cached", "first_grad", "pyhf_first"):
            if "error" in r.get(key, {}):
                print(f"    {key}: {r[key]['error']}")
        if "diffana_fit_row_s" in r:
            print(
                f"    in a row: fit {_f(r.get('diffana_fit_row_s'), 1e3, '.1f')}"
                f" / {_f(r.get('pyhf_fit_row_s'), 1e3, '.1f')} ms"
                f" ({_f(r.get('fit_row_ratio'), 1, '.1f')}x), hypotest"
                f" {_f(r.get('diffana_hypotest_row_s'), 1e3, '.1f')}"
                f" / {_f(r.get('pyhf_hypotest_row_s'), 1e3, '.1f')} ms"
                f" ({_f(r.get('hypotest_row_ratio'), 1, '.1f')}x)"
            )
        if "grad_warm_s" in r:
            g1 = r.get("first_grad", {}).get("grad_s")
            print(
                f"    grad of expected CLs w.r.t. {r['grad_n_yields']} yield bins (jit(grad)):"
                f" warm {r['grad_warm_s'] * 1e3:.1f} ms, first call {_f(g1, 1, '.2f')} s"
                f" (fresh process), finite: {r['grad_finite']}"
            )
    print(
        "warm: median ms of one call after a warm-up, diffana and pyhf alternated (in a row:"
        " each repeated); x: pyhf-jax / diffana. First call:"
        " seconds in a fresh process, compilation included; cached: the same with JAX's"
        " persistent compilation cache filled by a previous process; build: Model.from_pyhf."
        " dCLs: |diffana - pyhf| at mu = 1 (observed; max over the expected band); dNLL:"
        " diffana - pyhf at the global minimum."
    )


def plot(rows: list[dict], path: str) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 8), sharex=True)
    series = [  # (row getter, label, color)
        ("warm", "fit", lambda r: r.get("diffana_fit_warm_s"), "diffana", "C0"),
        ("warm", "fit", lambda r: r.get("pyhf_fit_warm_s"), "pyhf-jax", "C1"),
        ("warm", "hypotest", lambda r: r.get("diffana_hypotest_warm_s"), "diffana", "C0"),
        ("warm", "hypotest", lambda r: r.get("pyhf_hypotest_warm_s"), "pyhf-jax", "C1"),
        ("first", "fit", lambda r: r.get("first", {}).get("fit_s"), "diffana", "C0"),
        (
            "first",
            "fit",
            lambda r: r.get("first_cached", {}).get("fit_s"),
            "diffana (cache)",
            "C2",
        ),
        ("first", "fit", lambda r: r.get("pyhf_first", {}).get("fit_s"), "pyhf-jax", "C1"),
        ("first", "hypotest", lambda r: r.get("first", {}).get("hypotest_s"), "diffana", "C0"),
        (
            "first",
            "hypotest",
            lambda r: r.get("first_cached", {}).get("hypotest_s"),
            "diffana (cache)",
            "C2",
        ),
        (
            "first",
            "hypotest",
            lambda r: r.get("pyhf_first", {}).get("hypotest_s"),
            "pyhf-jax",
            "C1",
        ),
    ]
    panels = {("warm", "fit"): 0, ("warm", "hypotest"): 1, ("first", "fit"): 2}
    panels[("first", "hypotest")] = 3
    for when, what, get, label, color in series:
        ax = axes.flat[panels[when, what]]
        for kind, fill in (("real", color), ("gen", "none")):
            pts = sorted(
                (r["npars"], get(r))
                for r in rows
                if r["ident"].startswith(kind) and get(r) is not None
            )
            if pts:
                x, y = zip(*pts, strict=True)
                kind_label = "real" if kind == "real" else "generated"
                ax.plot(
                    x,
                    y,
                    "o-" if kind == "gen" else "o",
                    color=color,
                    markerfacecolor=fill,
                    label=f"{label}, {kind_label}",
                    alpha=0.9,
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{what}, {'warm' if when == 'warm' else 'first call (fresh process)'}")
        ax.set_ylabel("seconds per call")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("number of parameters")
    for ax in axes.flat:
        ax.legend(fontsize=7)
    fig.suptitle("diffana vs pyhf-jax: filled = published workspaces, open = generated")
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def write_json(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=None, help=f"real workspaces, comma-separated parts of {list(REAL)}"
    )
    parser.add_argument(
        "--generated", default="", help=f"generated sizes, comma-separated, of {sorted(GENERATED)}"
    )
    parser.add_argument("--no-real", action="store_true", help="generated workspaces only")
    parser.add_argument("--repeats", type=int, default=3, help="warm calls (median)")
    parser.add_argument("--pyhf-max-pars", type=int, default=10**9, help="skip pyhf above")
    parser.add_argument("--no-first-call", action="store_true", help="skip the fresh processes")
    parser.add_argument("--worker-timeout", type=float, default=3600.0)
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument("--plot", default=None, help="write the figure to this PNG file")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "WORKSPACE"), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = worker(*args.worker, args.cache_dir)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return

    warnings.simplefilter("ignore")  # pyhf's and the fits' warnings
    import jax
    import pyhf

    import diffana

    idents = selected(args)
    if not idents:
        raise SystemExit("nothing to run")
    p_setup()
    dev = jax.devices()[0]
    payload: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "device": f"{dev.platform} ({dev.device_kind})",
            "python": platform.python_version(),
            "jax": jax.__version__,
            "pyhf": pyhf.__version__,
            "diffana": getattr(diffana, "__version__", "?"),
        },
        "argv": sys.argv[1:],
        "workspaces": [],
    }
    print(
        f"device: {payload['machine']['device']}, {os.cpu_count()} CPUs; {len(idents)} workspaces"
    )
    rows = payload["workspaces"]
    for ident in idents:
        name = ident.split(":", 1)[1] if ident.startswith("real") else f"gen{ident[4:]}"
        print(f"-- {name}", flush=True)
        ws = load_workspace(ident)
        row: dict[str, Any] = {"ident": ident, "name": name}
        row.update(warm(ident, ws, args))
        if not args.no_first_call:
            row.update(first_calls(ident, args))
            if row["npars"] <= args.pyhf_max_pars:
                row.update(pyhf_first_call(ident, args))
        rows.append(row)
        if args.json:  # after each workspace, so that a long run keeps what it measured
            write_json(args.json, payload)
    print()
    print_table(rows)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
