"""Hypothesis tests with gradients: diffana against relaxed 0.4.0 and pyhf, and vmap vs loop.

`benchmarks/bench_infer.py` compares diffana's `hypotest` with pyhf; this script adds what
it does not cover, all measured alternately in one run (warm-up, then the median over
`--rounds` x `--repeats` timed calls):

1. **neos model against relaxed.** The 4-bin, 2-parameter model of the neos step (signal
   with a normfactor `mu`, background with a histosys), templates from the neos demo's
   initial network. Value and gradient with respect to the four templates of
   - diffana `losses.cls_loss` (the neos loss: expected CLs at `mu = 1` on background-only
     Asimov data; a conditional fit, the free one in closed form, gradients by the
     envelope theorem),
   - diffana `infer.hypotest(1, asimov_b, model, return_expected=True)` (pyhf's full
     asymptotic calculator: five fits, the free Asimov one in closed form),
   - `relaxed.infer.hypotest(1, asimov_b, ..., test_stat="q", expected_pars=bonly)` as
     neos calls it (one conditional fit with jaxopt's L-BFGS-B and implicit gradients),
     in relaxed's own interpreter (`--python`, see `requirements-relaxed.txt`).
2. **pyhf model.** A 10-bin model with a signal normfactor, a background histosys and a
   normsys: diffana `hypotest` (qtilde) value + gradient with respect to the signal
   yields against pyhf 0.7 `hypotest` (qtilde, value only: pyhf cannot differentiate its
   fits) with the jax and numpy backends.
3. **vmap vs loop.** The value + gradient of 1. and 2. over `--batch` items (templates
   scaled by random factors, or Poisson pseudo-datasets): one jitted `vmap` call against
   a Python loop over the jitted single-item function (per item). The `vmap` is timed
   twice: jitted with JAX's defaults, and with `compiler_options=diffana.compiler_options()`
   (on a CPU: no YNNPACK fusions for reductions).
   The first call of each neos function (`cls`, `full`, `cls_vmap`: compilation
   included, in this order in a fresh process) is reported too.
4. **The Newton systems of a batched fit.** One iteration's three scaled systems
   (Newton, damped, shifted) for `3 x --batch` random 3x3 Hessians, as a vmapped fit
   solves them: diffana's unrolled LDL^T against LAPACK's eigendecomposition (what the
   solver used before), per matrix.

Usage:

    python benchmarks/bench_hypotest.py [--python /tmp/relaxed-venv/bin/python] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Histograms of the neos demo's initial network (4 bins of its output on [0, 1]), scaled
# to 20 signal and 100 background events: signal, background, background up, down.
NEOS_TEMPLATES = np.array(
    [
        [1.5, 3.2, 6.1, 9.2],
        [42.0, 30.5, 18.0, 9.5],
        [60.0, 25.0, 10.0, 5.0],
        [20.0, 30.0, 30.0, 20.0],
    ]
)
NBINS_PYHF = 10


def pyhf_spec() -> dict:
    """A 10-bin workspace: signal x mu, background with a histosys and a normsys."""
    x = np.linspace(0.0, 1.0, NBINS_PYHF)
    signal = 10.0 * np.exp(-0.5 * ((x - 0.7) / 0.15) ** 2) + 0.5
    background = 60.0 * np.exp(-1.5 * x) + 8.0
    hi = background * (1.0 + 0.1 * (1.0 - x))
    lo = background * (1.0 - 0.07 * (1.0 - x))
    lst = lambda a: [float(v) for v in a]  # noqa: E731
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": lst(signal),
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": lst(background),
                        "modifiers": [
                            {
                                "name": "shape",
                                "type": "histosys",
                                "data": {"hi_data": lst(hi), "lo_data": lst(lo)},
                            },
                            {"name": "norm", "type": "normsys", "data": {"hi": 1.06, "lo": 0.94}},
                        ],
                    },
                ],
            }
        ],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "observations": [{"name": "SR", "data": lst(np.round(background + 0.3 * signal))}],
        "version": "1.0.0",
    }


def without_convergence_callback():
    """Trace without the run-time convergence callback
    (`diffana.infer.runtime_convergence_checks(False)`). Until 2026-12-02 the check was a
    `jax.debug.callback`, whose effect took a jitted function off JAX's fast dispatch
    path even when it never fired; it is now a `jax.pure_callback` and costs little."""
    from diffana import infer

    return infer.runtime_convergence_checks(False)


def _warm(fns, first_calls: dict | None = None):
    """Call each function once (compiling it); its time in seconds goes to `first_calls`."""
    import jax

    for k, f in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        if first_calls is not None:
            first_calls[k] = time.perf_counter() - t0
    return fns


def _timer(fn, reps):
    import jax

    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return out


def _med_us(ts, per=1):
    return 1e6 * float(np.median(ts)) / per


def neos_functions(batch: int):
    """diffana's jitted value+grad functions on the neos model, single and vmapped."""
    import jax
    import jax.numpy as jnp

    import diffana
    from diffana import hf, infer, losses

    h0 = jnp.asarray(NEOS_TEMPLATES)

    def model_of(h):
        return hf.correlated_background(h[0], h[1], h[2], h[3])

    def cls(h):
        return losses.cls_loss(model_of(h))

    def full(h):
        m = model_of(h)
        asimov = infer.asimov_data(m, 0.0)
        return infer.hypotest(1.0, asimov, m, return_expected=True)[1]

    rng = np.random.default_rng(0)
    hb = h0[None] * jnp.asarray(rng.uniform(0.8, 1.2, (batch, *h0.shape)))
    vg_cls = jax.jit(jax.value_and_grad(cls))
    vg_full = jax.jit(jax.value_and_grad(full))
    vg_cls_vmap = jax.jit(jax.vmap(jax.value_and_grad(cls)))
    vg_cls_vmap_opt = jax.jit(
        jax.vmap(jax.value_and_grad(cls)), compiler_options=diffana.compiler_options()
    )
    return {
        "cls": (lambda: vg_cls(h0)),
        "full": (lambda: vg_full(h0)),
        "cls_vmap": (lambda: vg_cls_vmap(hb)),
        "cls_vmap_opt": (lambda: vg_cls_vmap_opt(hb)),
        "cls_loop": (lambda: [vg_cls(h) for h in hb]),
    }, hb


def pseudo_datasets(model, batch: int):
    """Poisson pseudo-datasets at `mu = 0` and nominal nuisance parameters, with auxdata."""
    import jax
    import jax.numpy as jnp

    lam = model.expected_actualdata(model.init.at[model.poi_index].set(0.0))
    toys = jax.random.poisson(jax.random.key(0), lam, (batch, model.nbins)).astype(float)
    return jnp.concatenate([toys, jnp.broadcast_to(model.auxdata, (batch, model.nauxdata))], 1)


def pyhf_functions(batch: int):
    import jax

    import diffana
    from diffana import hf, infer

    spec = pyhf_spec()
    model = hf.Model.from_pyhf(spec)
    data = hf.workspace_data(spec, model)
    sig0 = model.nominal[model.samples.index("signal")]

    def cls_of(s, d):
        return infer.hypotest(1.0, d, model.with_yields({("SR", "signal"): s}))

    vg = jax.jit(jax.value_and_grad(cls_of))
    datasets = pseudo_datasets(model, batch)
    vg_vmap = jax.jit(jax.vmap(jax.value_and_grad(cls_of), in_axes=(None, 0)))
    vg_vmap_opt = jax.jit(
        jax.vmap(jax.value_and_grad(cls_of), in_axes=(None, 0)),
        compiler_options=diffana.compiler_options(),
    )
    return {
        "vg": (lambda: vg(sig0, data)),
        "vmap": (lambda: vg_vmap(sig0, datasets)),
        "vmap_opt": (lambda: vg_vmap_opt(sig0, datasets)),
        "loop": (lambda: [vg(sig0, d) for d in datasets]),
    }, float(vg(sig0, data)[0])


def fit_iterations(batch: int) -> dict:
    """Newton iterations of the four fits behind `hypotest` on the pseudo-datasets of
    part 2 (public API, so the script measures earlier versions too): at `mu = 1`, free
    and at `mu = 0` on each dataset, then at `mu = 1` on the Asimov data generated at the
    `mu = 0` fit, starting from that fit's parameters (as `hypotest` does; it started
    from the model's init before 2026-12-01). A vmapped call runs as many iterations as
    its slowest fit."""
    import jax

    from diffana import hf, infer

    spec = pyhf_spec()
    model = hf.Model.from_pyhf(spec)
    datasets = pseudo_datasets(model, batch)

    def iterations(d):
        at1 = infer.fixed_poi_fit(1.0, d, model)
        free = infer.fit(d, model)
        at0 = infer.fixed_poi_fit(0.0, d, model)
        asimov = model.expected_data(at0.pars, include_auxdata=True)
        at1_asimov = infer.fixed_poi_fit(1.0, asimov, model, init=at0.pars)
        return [r.n_iter for r in (at1, free, at0, at1_asimov)]

    with infer.runtime_convergence_checks(False):
        n = np.asarray(jax.jit(jax.vmap(iterations))(datasets))
    return {"fit_iterations_mean": n.mean(axis=1).tolist(), "fit_iterations_max": n.max(1).tolist()}


def pyhf_reference(backend: str):
    import pyhf

    pyhf.set_backend(backend)
    ws = pyhf.Workspace(pyhf_spec())
    model = ws.model()
    data = pyhf.tensorlib.astensor(ws.data(model))

    def call():
        return pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde")

    value = float(call())
    return call, value


# Trace events that are not XLA operations: Python frames ($...), JAX's dispatch and the
# runtime's bookkeeping, control flow (its body's operations are counted).
_NOT_OPERATIONS = (
    "$",
    "ThunkExecutor",
    "end:",
    "Slinky",
    "while",
    "cond",
    "Pjit",
    "Execute",
    "CommonPjRt",
    "BatchedCopy",
    "batched_copy",
    "shard_args",
    "Handle inputs",
    "Allocate",
    "ParseArguments",
    "PythonRefManager",
    "ThreadpoolListener",
    "Wait for",
)


def xla_ops_per_call(fn, calls: int = 20) -> float | None:
    """Operations (XLA's CPU thunks: fusions, dots, custom calls such as `eigh`) executed
    per call of `fn`, counted from a `jax.profiler` trace; `None` if the profiler's trace
    reader is not available. Explains a single call's latency: on a CPU each operation
    costs a roughly fixed overhead, whatever the size of its tiny operands."""
    import glob
    import shutil

    import jax

    try:
        from jax.profiler import ProfileData
    except ImportError:
        return None
    tmp = tempfile.mkdtemp(prefix="diffana-trace-")
    try:
        jax.profiler.start_trace(tmp)
        try:
            for _ in range(calls):
                jax.block_until_ready(fn())
        finally:
            jax.profiler.stop_trace()
        paths = glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)
        if len(paths) != 1:
            return None
        n = 0
        for plane in ProfileData.from_file(paths[0]).planes:
            for line in plane.lines:  # the executor's threads, and the caller's (synchronous)
                n += sum(not event.name.startswith(_NOT_OPERATIONS) for event in line.events)
        return n / calls
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def newton_systems(batch: int, reps: int, rounds: int) -> dict:
    """ns per matrix of one iteration's three scaled Newton systems, batched, solved by
    the unrolled LDL^T and through LAPACK's eigendecomposition."""
    import jax
    import jax.numpy as jnp

    from diffana.infer import _solver

    rng = np.random.default_rng(0)
    a = rng.normal(size=(batch, 3, 3))
    h = jnp.asarray(a @ a.transpose(0, 2, 1) + 0.5 * np.eye(3))
    g = jnp.asarray(rng.normal(size=(batch, 3)))
    shifts = jnp.asarray([0.0, 0.1, 2.0])
    mask = jnp.ones(3, dtype=bool)

    def solver(solve):
        def one(h, g):
            _, hs = _solver._scaled_system(h, mask)
            return _solver._solve_with(solve, hs, g, shifts)

        return jax.jit(jax.vmap(one))

    fns = {k: solver(getattr(_solver, f"_solve_{k}")) for k in ("unrolled", "cholesky")}
    ys = {k: jax.block_until_ready(f(h, g))[0] for k, f in fns.items()}
    out = {"newton_systems_max_abs_diff": float(jnp.max(jnp.abs(ys["unrolled"] - ys["cholesky"])))}
    times: dict[str, list] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            times[k] += _timer(lambda f=f: f(h, g), reps * 4)
    for k, ts in times.items():
        out[f"newton_systems_{k}_ns_per_matrix"] = 1e3 * _med_us(ts, batch)
    return out


def run(args) -> dict:
    import jax

    import diffana  # noqa: F401

    warnings.simplefilter("ignore")  # pyhf's jsonschema deprecation warnings
    res: dict = {"settings": vars(args).copy(), "device": str(jax.devices()[0])}
    res["load_average_at_start"] = os.getloadavg()
    reps, rounds, batch = args.repeats, args.rounds, args.batch

    # ---- 1. neos model: diffana vs relaxed ------------------------------------------------
    res["neos_first_call_s"] = {}
    fns = _warm(neos_functions(batch)[0], res["neos_first_call_s"])
    with without_convergence_callback():
        fns_nocb = _warm(neos_functions(batch)[0])
    fns.update({f"{k}_nocb": f for k, f in fns_nocb.items()})
    cls_value, cls_grad = fns["cls"]()
    res["neos_cls_diffana"] = float(cls_value)
    worker = None
    if args.python:
        from _relaxed_ref import RelaxedWorker

        worker = RelaxedWorker(args.python)
        ref = worker.call("setup_hypotest", hists=NEOS_TEMPLATES.tolist(), batch=batch)
        res["neos_cls_relaxed"] = ref["cls"]
        res["neos_grad_max_rel_diff"] = float(
            np.max(np.abs(np.asarray(cls_grad) - np.asarray(ref["grad"])))
            / np.max(np.abs(ref["grad"]))
        )
        res["relaxed_versions"] = ref["versions"]
    singles = ("cls", "full", "cls_nocb", "full_nocb")
    batched = tuple(f"cls_{k}{sfx}" for sfx in ("", "_nocb") for k in ("vmap", "vmap_opt", "loop"))
    times: dict[str, list] = {k: [] for k in (*singles, "relaxed")}
    times_batch: dict[str, list] = {k: [] for k in (*batched, "relaxed_vmap")}
    for _ in range(rounds):  # alternate diffana and relaxed
        for k in singles:
            times[k] += _timer(fns[k], reps * 20)
        if worker:
            times["relaxed"] += worker.call("time", what="hypotest_vg", reps=reps * 20)["times"]
        for k in batched:
            times_batch[k] += _timer(fns[k], reps if "vmap" in k else 1)
        if worker:
            times_batch["relaxed_vmap"] += worker.call("time", what="hypotest_vg_vmap", reps=reps)[
                "times"
            ]
    for k, ts in times.items():
        if ts:
            res[f"neos_{k}_vg_us"] = _med_us(ts)
    res["neos_cls_nocb_xla_ops"] = xla_ops_per_call(fns["cls_nocb"])
    for k, ts in times_batch.items():
        if ts:
            res[f"neos_{k}_us_per_item"] = _med_us(ts, batch)
    if worker:
        worker.close()

    # ---- 2. pyhf model: diffana value+grad vs pyhf value ----------------------------------
    pf, value = pyhf_functions(batch)
    _warm(pf)
    with without_convergence_callback():
        pf.update({f"{k}_nocb": f for k, f in _warm(pyhf_functions(batch)[0]).items()})
    res["pyhf_model_cls_diffana"] = value
    ref_calls = {}
    for backend in ("jax", "numpy"):
        call, v = pyhf_reference(backend)
        call()
        ref_calls[backend] = call
        res[f"pyhf_model_cls_pyhf_{backend}"] = v
    t2: dict[str, list] = {k: [] for k in (*pf, "pyhf_jax", "pyhf_numpy")}
    import pyhf

    for _ in range(rounds):
        for k, f in pf.items():
            t2[k] += _timer(f, 1 if "loop" in k else (reps if "vmap" in k else reps * 10))
        for backend, call in ref_calls.items():
            pyhf.set_backend(backend)
            t2[f"pyhf_{backend}"] += _timer(call, reps)
    pyhf.set_backend("numpy")
    for sfx in ("", "_nocb"):
        res[f"pyhf_model_diffana_vg{sfx}_us"] = _med_us(t2[f"vg{sfx}"])
        res[f"pyhf_model_diffana_vmap{sfx}_us_per_item"] = _med_us(t2[f"vmap{sfx}"], batch)
        res[f"pyhf_model_diffana_vmap_opt{sfx}_us_per_item"] = _med_us(t2[f"vmap_opt{sfx}"], batch)
        res[f"pyhf_model_diffana_loop{sfx}_us_per_item"] = _med_us(t2[f"loop{sfx}"], batch)
    for backend in ("jax", "numpy"):
        res[f"pyhf_model_pyhf_{backend}_us"] = _med_us(t2[f"pyhf_{backend}"])
    res["pyhf_model_vg_nocb_xla_ops"] = xla_ops_per_call(pf["vg_nocb"])
    res.update(fit_iterations(batch))

    # ---- 4. the Newton systems of a batched fit -------------------------------------------
    res.update(newton_systems(3 * batch, reps, rounds))
    res["load_average_at_end"] = os.getloadavg()
    return res


def report(res) -> None:
    b = res["settings"]["batch"]
    print(f"device: {res['device']}; load average at start {res['load_average_at_start']}")
    print("(*: traced inside diffana.infer.runtime_convergence_checks(False);")
    print(" vmap+: jitted with compiler_options=diffana.compiler_options())")
    print("1. neos model (4 bins, mu + histosys), value + gradient w.r.t. the 4 templates")
    line = f"   CLs: diffana {res['neos_cls_diffana']:.8g}"
    if "neos_cls_relaxed" in res:
        line += (
            f", relaxed {res['neos_cls_relaxed']:.8g} "
            f"(gradients differ by {res['neos_grad_max_rel_diff']:.1e} relative)"
        )
    print(line)
    r = res.get("neos_relaxed_vg_us")
    for key, label in [
        ("cls", "diffana cls_loss"),
        ("cls_nocb", "diffana cls_loss*"),
        ("full", "diffana infer.hypotest"),
        ("full_nocb", "diffana infer.hypotest*"),
    ]:
        d = res[f"neos_{key}_vg_us"]
        ratio = f"  relaxed/diffana {r / d:5.2f}x" if r else ""
        print(f"   {label:25s} {d:10.1f} us{ratio}")
    if r:
        print(f"   {'relaxed hypotest':25s} {r:10.1f} us")
    first = res.get("neos_first_call_s", {})
    if first:
        print(
            "   first calls (compilation included): "
            + ", ".join(f"{k} {first[k]:.2f} s" for k in ("cls", "full", "cls_vmap") if k in first)
        )
    _print_ops(res["neos_cls_nocb_xla_ops"], res["neos_cls_nocb_vg_us"], "cls_loss*")
    for sfx in ("", "_nocb"):
        loop = res[f"neos_cls_loop{sfx}_us_per_item"]
        star = "*" if sfx else " "
        for opt in ("", "_opt"):
            vm = res[f"neos_cls_vmap{opt}{sfx}_us_per_item"]
            print(
                f"   cls_loss{star} vmap{'+' if opt else ' '} over {b}: {vm:7.1f} us/item, loop"
                f" {loop:7.1f} us/item -> {loop / vm:5.1f}x"
            )
    if "neos_relaxed_vmap_us_per_item" in res:
        print(f"   relaxed vmap over {b}: {res['neos_relaxed_vmap_us_per_item']:.1f} us/item")
    print("2. 10-bin model (mu, histosys, normsys), hypotest qtilde")
    print(
        f"   CLs: diffana {res['pyhf_model_cls_diffana']:.8g}, pyhf numpy "
        f"{res['pyhf_model_cls_pyhf_numpy']:.8g}, pyhf jax {res['pyhf_model_cls_pyhf_jax']:.8g}"
    )
    for sfx in ("", "_nocb"):
        d = res[f"pyhf_model_diffana_vg{sfx}_us"]
        star = "*" if sfx else " "
        ratios = ", ".join(
            f"pyhf {bk} / diffana {res[f'pyhf_model_pyhf_{bk}_us'] / d:6.1f}x"
            for bk in ("jax", "numpy")
        )
        print(f"   diffana value+grad{star}  {d:10.1f} us   ({ratios})")
        loop = res[f"pyhf_model_diffana_loop{sfx}_us_per_item"]
        for opt in ("", "_opt"):
            vm = res[f"pyhf_model_diffana_vmap{opt}{sfx}_us_per_item"]
            print(
                f"   diffana{star} vmap{'+' if opt else ' '} over {b}: {vm:7.1f} us/item, loop"
                f" {loop:7.1f} us/item -> {loop / vm:5.1f}x, pyhf jax / vmap"
                f" {res['pyhf_model_pyhf_jax_us'] / vm:5.0f}x"
            )
    for bk in ("jax", "numpy"):
        print(f"   pyhf[{bk:5s}] value only {res[f'pyhf_model_pyhf_{bk}_us']:10.1f} us")
    ops, us = res["pyhf_model_vg_nocb_xla_ops"], res["pyhf_model_diffana_vg_nocb_us"]
    _print_ops(ops, us, "value+grad*")
    mean = ", ".join(f"{v:.2f}" for v in res["fit_iterations_mean"])
    top = ", ".join(str(v) for v in res["fit_iterations_max"])
    print(f"   fit iterations (mu=1, free, mu=0, mu=1 on Asimov): mean {mean}; slowest {top}")
    unrolled, eigh = (res[f"newton_systems_{k}_ns_per_matrix"] for k in ("unrolled", "cholesky"))
    print(f"4. one fit iteration's Newton systems, vmapped over {3 * b} 3x3 Hessians")
    print(
        f"   unrolled LDL^T {unrolled:6.0f} ns/matrix, LAPACK eigh {eigh:6.0f} ns/matrix "
        f"-> {eigh / unrolled:5.1f}x (solutions differ by "
        f"{res['newton_systems_max_abs_diff']:.1e})"
    )


def _print_ops(ops, us, label) -> None:
    if ops:
        print(
            f"   {label}: {ops:.0f} XLA operations per call, {1e3 * us / ops:.0f} ns per operation"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--python", default="/tmp/relaxed-venv/bin/python")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.python and not Path(args.python).exists():
        print(f"no relaxed interpreter at {args.python}; skipping relaxed", file=sys.stderr)
        args.python = ""
    res = run(args)
    report(res)
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
