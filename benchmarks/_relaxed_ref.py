"""The relaxed 0.4.0 reference for the side-by-side benchmarks (runs in relaxed's own venv).

relaxed 0.4.0 needs an old JAX stack (see ``requirements-relaxed.txt``), so the benchmark
scripts start this file as a long-lived worker in that environment and talk to it through
JSON lines on stdin/stdout. The worker builds the same computations as the diffana side
from the same numbers (events and network weights arrive in an ``.npz`` file):

- ``setup_step``: the neos training step on relaxed's API (neos 0.3.0 itself does not run
  against relaxed 0.4.0): network -> ``relaxed.hist`` (KDE) -> a HistFactory model with a
  normfactor ``mu`` on the signal and a histosys on the background (pyhf's ``code4p``
  interpolation, Gaussian constraint) -> ``relaxed.infer.hypotest`` at ``mu = 1`` on the
  background-only Asimov data (``test_stat="q"``, the Asimov parameters passed as
  ``expected_pars`` as neos does) -> adam. Also the network's own forward+backward pass
  alone (the floor).
- ``setup_hypotest``: value and gradient (with respect to the four templates) of
  ``relaxed.infer.hypotest`` on that model.
- ``time``: run a prepared function `reps` times and return the wall times.

Only the standard library, numpy and the relaxed stack are imported here.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def _setup_jax():
    import jax

    # relaxed's fits are meant for 64-bit mode (as pyhf's); RELAXED_X64=0 keeps JAX's
    # default 32-bit mode, making the whole step float32.
    jax.config.update("jax_enable_x64", os.environ.get("RELAXED_X64", "1") != "0")
    return jax


class _Handlers:
    def __init__(self):
        self.jax = _setup_jax()
        self.fns = {}

    # ---- the model ---------------------------------------------------------------------
    def _model_class(self):
        import equinox as eqx
        import jax.numpy as jnp
        from jax.scipy.special import gammaln

        def code4p(alpha, up, nom, down):
            """pyhf's histosys code4p: polynomial inside |alpha| <= 1, linear outside."""
            d_up, d_dn = up - nom, nom - down
            s = 0.5 * (d_up + d_dn)
            a = 0.0625 * (d_up - d_dn)
            inner = alpha * (s + alpha * a * (15.0 + alpha**2 * (3.0 * alpha**2 - 10.0)))
            outer = jnp.where(alpha > 1.0, alpha * d_up, alpha * d_dn)
            return jnp.where(jnp.abs(alpha) > 1.0, outer, inner)

        class NeosModel(eqx.Module):
            """Signal x mu + background with a histosys; pars is a dict (relaxed's API)."""

            sig: object
            bkg: object
            up: object
            down: object

            def expected_data(self, pars):
                mu, alpha = pars["mu"], pars["shape"]
                main = mu * self.sig + self.bkg + code4p(alpha, self.up, self.bkg, self.down)
                return jnp.concatenate([main, jnp.zeros(1)])

            def logpdf(self, pars, data):
                lam = self.expected_data(pars)[:-1]
                n, aux = data[:-1], data[-1]
                pois = n * jnp.log(lam) - lam - gammaln(n + 1.0)
                gauss = -0.5 * (aux - pars["shape"]) ** 2 - 0.5 * np.log(2.0 * np.pi)
                return jnp.sum(pois) + gauss

        return NeosModel

    def _cls_fn(self):
        import jax.numpy as jnp
        import relaxed

        model_cls = self._model_class()
        bonly = {"mu": jnp.asarray(0.0), "shape": jnp.asarray(0.0)}
        init = {"mu": jnp.asarray(1.0), "shape": jnp.asarray(0.0)}
        bounds = {"mu": jnp.asarray([0.0, 10.0]), "shape": jnp.asarray([-5.0, 5.0])}

        def cls(hists):
            model = model_cls(hists[0], hists[1], hists[2], hists[3])
            data = model.expected_data(bonly)
            return relaxed.infer.hypotest(
                1.0, data, model, init, bounds, test_stat="q", expected_pars=bonly
            )

        return cls

    # ---- commands ----------------------------------------------------------------------
    def setup_step(self, npz, net_dtype, bandwidth, **_):
        jax = self.jax
        import jax.numpy as jnp
        import optax
        import relaxed

        arrays = dict(np.load(npz))
        dt = jnp.dtype(net_dtype)
        params = [
            (jnp.asarray(arrays[f"W{i}"], dt), jnp.asarray(arrays[f"b{i}"], dt)) for i in range(3)
        ]
        x = jnp.asarray(arrays["x"])  # (samples, events, features), float64
        n_samples, n_events = x.shape[0], x.shape[1]
        scale = jnp.asarray(arrays["scale"])
        edges = jnp.asarray(arrays["edges"])
        cls = self._cls_fn()

        def network(params, x2):
            h = x2.astype(dt)
            for w, b in params[:-1]:
                h = jax.nn.relu(h @ w + b)
            w, b = params[-1]
            return jax.nn.sigmoid(h @ w + b)[:, 0]

        x2 = x.reshape(-1, x.shape[-1])

        def loss(params):
            s = network(params, x2).astype(float).reshape(n_samples, n_events)
            hists = [
                relaxed.hist(s[k], edges, bandwidth) * scale[k] + 1e-3 for k in range(n_samples)
            ]
            return cls(hists)

        def floor(params):
            return jnp.sum(network(params, x2))

        opt = optax.adam(1e-3)
        state = opt.init(params)

        @jax.jit
        def step(params, state):
            value, grad = jax.value_and_grad(loss)(params)
            updates, state = opt.update(grad, state, params)
            return optax.apply_updates(params, updates), state, value

        vg = jax.jit(jax.value_and_grad(loss))
        vg_floor = jax.jit(jax.value_and_grad(floor))
        t0 = time.perf_counter()
        value, grad = jax.block_until_ready(vg(params))
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(step(params, state))
        jax.block_until_ready(vg_floor(params))
        self.fns |= {
            "step": lambda: step(params, state),
            "vg": lambda: vg(params),
            "floor": lambda: vg_floor(params),
        }
        leaves = jax.tree_util.tree_leaves(grad)
        gnorm = float(sum(jnp.sum(jnp.square(g.astype(float))) for g in leaves))
        return {
            "loss": float(value),
            "grad_norm": gnorm**0.5,
            "first_call_s": compile_s,
            "versions": self.versions(),
        }

    def setup_analysis(self, n_events, n_bins, bandwidth, **_):
        """Histograms of given summaries -> model -> CLs, value and gradient w.r.t. the
        summaries (the analysis part of the step, without a network)."""
        jax = self.jax
        import jax.numpy as jnp
        import relaxed

        rng = np.random.default_rng(0)
        s = jnp.asarray(rng.uniform(0.0, 1.0, (4, int(n_events))))
        s = s.at[0].set(jnp.sqrt(s[0]))  # signal peaks towards 1
        edges = jnp.linspace(0.0, 1.0, int(n_bins) + 1)
        scale = jnp.asarray([20.0, 100.0, 100.0, 100.0]) / n_events
        cls = self._cls_fn()

        def loss(s):
            hists = [relaxed.hist(s[k], edges, bandwidth) * scale[k] + 1e-3 for k in range(4)]
            return cls(hists)

        vg = jax.jit(jax.value_and_grad(loss))
        value, _ = jax.block_until_ready(vg(s))
        self.fns["analysis"] = lambda: vg(s)
        return {"loss": float(value), "versions": self.versions()}

    def setup_hypotest(self, hists, batch=0, **_):
        jax = self.jax
        import jax.numpy as jnp

        cls = self._cls_fn()
        h = jnp.asarray(hists, dtype=float)
        vg = jax.jit(jax.value_and_grad(lambda h: cls(list(h))))
        value, grad = jax.block_until_ready(vg(h))
        self.fns["hypotest_vg"] = lambda: vg(h)
        out = {"cls": float(value), "grad": np.asarray(grad).tolist(), "versions": self.versions()}
        if batch:
            rng = np.random.default_rng(0)
            hb = h[None] * jnp.asarray(rng.uniform(0.8, 1.2, (batch, *h.shape)))
            vg_batch = jax.jit(jax.vmap(jax.value_and_grad(lambda h: cls(list(h)))))
            jax.block_until_ready(vg_batch(hb))
            self.fns["hypotest_vg_vmap"] = lambda: vg_batch(hb)
        return out

    def time(self, what, reps, **_):
        fn = self.fns[what]
        times = []
        for _ in range(int(reps)):
            t0 = time.perf_counter()
            self.jax.block_until_ready(fn())
            times.append(time.perf_counter() - t0)
        return {"times": times}

    def versions(self):
        from importlib.metadata import version

        names = ("relaxed", "jax", "jaxlib", "jaxopt", "optax", "equinox", "numpy")
        return {"python": sys.version.split()[0], **{n: version(n) for n in names}}


def serve() -> None:
    """Answer JSON-line commands on stdin until EOF or ``{"cmd": "quit"}``."""
    handlers = _Handlers()
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = {"ok": True, **getattr(handlers, cmd)(**request)}
        except Exception as err:  # reported to the driver, which raises
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class RelaxedWorker:
    """Driver side: a relaxed worker process in another interpreter (used by the scripts)."""

    def __init__(self, python: str, x64: bool = True):
        import subprocess

        env = {**os.environ, "RELAXED_X64": "1" if x64 else "0"}
        self.proc = subprocess.Popen(
            [python, __file__],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def call(self, cmd: str, **kwargs):
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"relaxed worker exited (code {self.proc.wait()})")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(f"relaxed worker: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    serve()
