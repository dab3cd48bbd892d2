"""The INFERNO synthetic 3-D mixture (de Castro & Dorigo, arXiv:1806.04743).

The generator follows the authors' published code (``synthetic_3D_example.py``), not
the paper's text: the signal sits at (0, 0), which is what reproduces the paper's table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from diffana.errors import ProblemDefinitionError
from diffana.problems._base import (
    ANALYSIS_FIELDS,
    SAMPLE_SIZE_FIELDS,
    Problem,
    Sample,
    TemplateKey,
    Yields,
    split_seed,
)
from diffana.problems._definition import Field
from diffana.problems._workspace import histosys, make_workspace, normfactor, normsys

__all__ = [
    "INFERNO_PARAMETERS",
    "Inferno3D",
    "generate_inferno3d",
    "inferno_fisher_sigma",
    "interpolate_quad_lin",
    "transform_background",
]

#: The model parameters of the INFERNO benchmark, in the paper's order.
INFERNO_PARAMETERS = ("s", "r", "lambda", "b")
#: How the INFERNO loss makes the background depend on (r, lambda): ``"exact"`` (the
#: events transformed, the paper's loss) or ``"templates"`` (the paper's metric: 3-point
#: interpolation between the histograms of the events transformed to the
#: ``paper_shifts``).
LOSS_SHAPES = ("exact", "templates")


def generate_inferno3d(
    n: int, seed: int, r: float = 2.0, lam: float = 3.0
) -> dict[str, np.ndarray]:
    """Signal and background events of the INFERNO 3-D problem.

    Background: ``(x0, x1) ~ N((r, 0), diag(5, 9))``, ``x2 ~ Exp(rate lam)``; signal:
    ``(x0, x1) ~ N((0, 0), I)``, ``x2 ~ Exp(rate 2)``.

    **Arguments:**

    - `n`: events per sample.
    - `seed`: numpy seed.
    - `r`, `lam`: the background nuisance parameters.

    **Returns:** ``{"signal": (n, 3), "background": (n, 3)}``.

    Example:

    >>> ev = generate_inferno3d(20000, seed=0)
    >>> round(float(ev["background"][:, 0].mean()), 1), round(float(ev["signal"][:, 2].mean()), 1)
    (2.0, 0.5)
    """
    rng = np.random.default_rng(seed)
    bkg = np.empty((n, 3))
    bkg[:, 0] = rng.normal(r, np.sqrt(5.0), n)
    bkg[:, 1] = rng.normal(0.0, 3.0, n)
    bkg[:, 2] = rng.exponential(1.0 / lam, n)
    sig = np.empty((n, 3))
    sig[:, :2] = rng.standard_normal((n, 2))
    sig[:, 2] = rng.exponential(1.0 / 2.0, n)
    return {"signal": sig, "background": bkg}


def transform_background(
    x: Float[Array, "events 3"],
    r: Float[Array, ""],
    lam: Float[Array, ""],
    r0: float = 2.0,
    lam0: float = 3.0,
) -> Float[Array, "events 3"]:
    """Move background events generated at (`r0`, `lam0`) to (`r`, `lam`).

    ``x0 -> x0 - r0 + r`` and ``x2 -> x2 * lam0 / lam``: an exact change of the
    nuisance parameters, differentiable in `r` and `lam` (the authors' ``transform_bkg``).
    """
    return jnp.stack([x[:, 0] - r0 + r, x[:, 1], x[:, 2] * (lam0 / lam)], axis=1)


def interpolate_quad_lin(
    alpha: Float[Array, " nuis"],
    nominal: Float[Array, " bins"],
    up: Float[Array, "nuis bins"],
    down: Float[Array, "nuis bins"],
) -> Float[Array, " bins"]:
    """Three-point interpolation per nuisance: quadratic for |alpha| <= 1, linear outside.

    The INFERNO paper's template model (pyhf's ``code2``): at ``alpha = +-1`` it returns
    ``up``/``down``; value and slope are continuous at ``|alpha| = 1``. (The authors'
    ``int_quad_lin`` extrapolates with slope ``2b + a`` instead of ``b + 2a``; the two
    agree for ``|alpha| <= 1`` and so give the same Fisher information at nominal.)
    """
    nom = nominal[None, :]
    a = 0.5 * (up + down) - nom
    b = 0.5 * (up - down)
    al = alpha[:, None]
    sign = jnp.sign(al)
    edge = jnp.where(al < 0.0, down - nom, up - nom)
    outside = (b + 2.0 * sign * a) * (al - sign) + edge
    inside = a * al**2 + b * al
    return nominal + jnp.sum(jnp.where(jnp.abs(al) > 1.0, outside, inside), axis=0)


def _poisson_asimov_hessian(
    nu_fn: Callable[[Array], Array], theta0: Array
) -> Float[Array, "pars pars"]:
    """Hessian of the Poisson NLL at `theta0` on its own Asimov data.

    At the Asimov point ``n = nu(theta0)`` the second-derivative terms of the NLL vanish,
    so the Hessian is exactly ``J^T diag(1/nu) J`` with ``J = d nu / d theta``.
    """
    nu = nu_fn(theta0)
    jac = jax.jacfwd(nu_fn)(theta0)
    return (jac.T / nu[None, :]) @ jac


def _sigma_poi(hessian: Array, constraints: Array, free: tuple[int, ...]) -> Array:
    """sqrt of the (POI, POI) element of the inverse Fisher restricted to `free`."""
    h = hessian + jnp.diag(constraints)
    idx = jnp.asarray(free)
    sub = h[idx][:, idx]
    # free[0] is the POI: solve rather than invert.
    e0 = jnp.zeros(len(free)).at[0].set(1.0)
    var = jnp.linalg.solve(sub, e0)[0]
    return jnp.sqrt(var)


def inferno_fisher_sigma(
    signal: Float[Array, " bins"],
    background: Float[Array, " bins"],
    background_up: Float[Array, "2 bins"],
    background_down: Float[Array, "2 bins"],
    free: tuple[str, ...],
    constraints: Mapping[str, float],
    s: float = 50.0,
    b: float = 1000.0,
    shifts: tuple[float, float] = (0.2, 0.5),
) -> float:
    """The INFERNO paper's expected sigma of s from hard template histograms.

    Follows the authors' ``template_model.py`` / ``benchmarking.py``: templates are
    normalised; bins where the signal or the nominal background is empty are dropped;
    the background shape is a 3-point quadratic/linear interpolation in
    ``alpha_r = (r - 2) / shift_r`` and ``alpha_lambda = (lambda - 3) / shift_lambda``;
    the expected counts are ``s * signal + b * background``; the Fisher matrix is the
    Hessian of the Asimov Poisson NLL in (s, r, lambda, b) at nominal plus
    ``1 / sigma^2`` for each constrained parameter; the result is
    ``sqrt((F_free^-1)_ss)``.

    **Arguments:**

    - `signal`, `background`: histograms (counts or weights) of the nominal samples.
    - `background_up`, `background_down`: rows (r, lambda) of the shifted backgrounds at
      ``r +- shift_r`` and ``lambda +- shift_lambda``.
    - `free`: the free parameters, the POI ``"s"`` first, e.g. ``("s", "r", "lambda")``.
    - `constraints`: ``{parameter: sigma}`` of the Gaussian constraints.
    - `s`, `b`: the nominal expected signal and background counts.
    - `shifts`: ``(shift_r, shift_lambda)`` of the templates.

    **Returns:** sigma of s, in events.
    """
    if not free or free[0] != "s":
        raise ValueError(f"free must start with the POI 's', got {free!r}")
    for p in (*free, *constraints):
        if p not in INFERNO_PARAMETERS:
            raise ValueError(f"unknown INFERNO parameter {p!r}; known {INFERNO_PARAMETERS}")
    sig = np.asarray(signal, dtype=np.float64)
    nom = np.asarray(background, dtype=np.float64)
    up = np.asarray(background_up, dtype=np.float64)
    dw = np.asarray(background_down, dtype=np.float64)
    keep = (sig != 0.0) & (nom != 0.0)
    sig_shape = sig[keep] / sig.sum()
    nom_shape = nom[keep] / nom.sum()
    up_shape = up[:, keep] / up.sum(axis=1, keepdims=True)
    dw_shape = dw[:, keep] / dw.sum(axis=1, keepdims=True)
    sig_shape, nom_shape, up_shape, dw_shape = map(
        jnp.asarray, (sig_shape, nom_shape, up_shape, dw_shape)
    )
    shift = jnp.asarray(shifts, dtype=jnp.float64)

    def nu_fn(theta):
        alpha = (theta[1:3] - jnp.asarray([2.0, 3.0])) / shift
        shape = interpolate_quad_lin(alpha, nom_shape, up_shape, dw_shape)
        return theta[0] * sig_shape + theta[3] * shape

    theta0 = jnp.asarray([s, 2.0, 3.0, b], dtype=jnp.float64)
    hess = _poisson_asimov_hessian(nu_fn, theta0)
    aux = jnp.asarray(
        [1.0 / constraints[p] ** 2 if p in constraints else 0.0 for p in INFERNO_PARAMETERS]
    )
    idx = tuple(INFERNO_PARAMETERS.index(p) for p in free)
    return float(_sigma_poi(hess, aux, idx))


class Inferno3D(Problem):
    """The INFERNO synthetic 3-D benchmark with its five scenarios (benchmarks 0-4).

    Definition fields: ``[generator]`` ``n_train``/``n_valid``/``n_test`` (events per
    sample), ``seed``; ``[analysis]`` ``bins``, ``signal_yield`` (s = 50),
    ``background_yield`` (b = 1000), ``paper_shifts = {r, lambda}`` (the templates of the
    paper's metric), ``export_sigmas = {r, lambda, b}`` (the +-1 sigma variations of the
    HistFactory export), ``loss_shapes`` (`LOSS_SHAPES`: how the INFERNO loss moves the
    background with r and lambda; default ``"exact"``). Each scenario lists ``free`` (the
    POI ``"s"`` first) and ``constraints = {parameter: sigma}``.

    The HistFactory export has the signal normfactor ``mu`` (s = 50 mu), histosys ``r`` and
    ``lambda`` when they are free and a normsys ``b_norm`` when b is. HistFactory has no
    unconstrained shape nuisance, so a free r or lambda without a constraint in the paper
    gets the unit-Gaussian constraint of its ``export_sigmas`` variation; the paper's own
    metric (`inferno_fisher_sigma`) keeps them free, as the paper does.
    """

    feature_names = ("x0", "x1", "x2")
    definition_fields: ClassVar[Mapping[str, Mapping[str, Field]]] = {
        "generator": dict(SAMPLE_SIZE_FIELDS),
        "analysis": {
            **ANALYSIS_FIELDS,
            "bins": Field("int", required=True, minimum=1),
            "signal_yield": Field("number", required=True, positive=True),
            "background_yield": Field("number", required=True, positive=True),
            "paper_shifts": Field(
                "table", required=True, keys={p: Field("number", True) for p in ("r", "lambda")}
            ),
            "export_sigmas": Field(
                "table",
                required=True,
                keys={p: Field("number", True, positive=True) for p in ("r", "lambda", "b")},
            ),
            "loss_shapes": Field("str", choices=LOSS_SHAPES),
        },
        "scenarios": {
            "description": Field("str"),
            "free": Field("list", required=True, items=Field("str", choices=INFERNO_PARAMETERS)),
            "constraints": Field(
                "table", keys={p: Field("number", positive=True) for p in INFERNO_PARAMETERS}
            ),
        },
    }

    def __init__(self, definition):
        super().__init__(definition)
        path = definition.path
        self.sizes = {s: self.param("generator", f"n_{s}", int) for s in ("train", "valid", "test")}
        self.base_seed = self.param("generator", "seed", int, 0)
        self.s = self.param("analysis", "signal_yield", float)
        self.b = self.param("analysis", "background_yield", float)
        shifts = self.param("analysis", "paper_shifts", dict)
        sig = self.param("analysis", "export_sigmas", dict)
        try:
            self.shifts = (float(shifts["r"]), float(shifts["lambda"]))
            self.export_sigmas = {k: float(sig[k]) for k in ("r", "lambda", "b")}
        except (KeyError, TypeError, ValueError):
            raise ProblemDefinitionError(
                f"{path}: [analysis].paper_shifts needs r and lambda, "
                "[analysis].export_sigmas needs r, lambda and b (numbers)"
            ) from None
        self.loss_shapes = self.param("analysis", "loss_shapes", str, "exact")
        _ = self.n_bins
        self._scen = {}
        for name, scen in definition.scenarios.items():
            free = tuple(scen.get("free", ()))
            cons = dict(scen.get("constraints", {}))
            if not free or free[0] != "s" or any(p not in INFERNO_PARAMETERS for p in free):
                raise ProblemDefinitionError(
                    f"{path}: [scenarios.{name}].free must list parameters of "
                    f"{INFERNO_PARAMETERS} starting with 's', got {list(free)!r}"
                )
            for p, v in cons.items():
                if p not in free or not isinstance(v, int | float) or v <= 0:
                    raise ProblemDefinitionError(
                        f"{path}: [scenarios.{name}].constraints.{p} must be a positive "
                        "width of a free parameter"
                    )
            self._scen[name] = (free, {p: float(v) for p, v in cons.items()})

    @property
    def poi_scale(self) -> float:
        return self.s

    def free_and_constraints(self, scenario: str) -> tuple[tuple[str, ...], dict[str, float]]:
        self.scenario(scenario)
        return self._scen[scenario]

    def generate(self, seed: int, split: str) -> dict[str, Sample]:
        run = 0 if split == "test" else seed
        ev = generate_inferno3d(self.sizes[split], split_seed(self.base_seed, split, run))
        return {
            "signal": Sample(ev["signal"], np.full(len(ev["signal"]), self.s / len(ev["signal"]))),
            "background": Sample(
                ev["background"], np.full(len(ev["background"]), self.b / len(ev["background"]))
            ),
        }

    def templates(self, samples: Mapping[str, Sample]) -> dict[TemplateKey, Sample]:
        bkg = samples["background"]
        out = {("signal", "nominal"): samples["signal"], ("background", "nominal"): bkg}
        variations = {
            "paper_r": (self.shifts[0], 0.0),
            "paper_lambda": (0.0, self.shifts[1]),
            "r": (self.export_sigmas["r"], 0.0),
            "lambda": (0.0, self.export_sigmas["lambda"]),
        }
        for name, (dr, dl) in variations.items():
            for sign, tag in ((1.0, "up"), (-1.0, "down")):
                x = transform_background(bkg.x, 2.0 + sign * dr, 3.0 + sign * dl)
                out[("background", f"{name}_{tag}")] = Sample(x, bkg.w)
        return out

    def workspace(self, yields: Yields, scenario: str) -> dict[str, Any]:
        free, _ = self.free_and_constraints(scenario)
        mods = []
        for p in ("r", "lambda"):
            if p in free:
                mods.append(
                    histosys(
                        p, yields[("background", f"{p}_up")], yields[("background", f"{p}_down")]
                    )
                )
        if "b" in free:
            rel = self.export_sigmas["b"] / self.b
            mods.append(normsys("b_norm", 1.0 + rel, 1.0 - rel))
        bkg = yields[("background", "nominal")]
        return make_workspace(
            "inferno3d",
            [
                ("signal", yields[("signal", "nominal")], [normfactor("mu")]),
                ("background", bkg, mods),
            ],
            observed=jnp.asarray(bkg),
        )

    def modifier_settings(self, scenario: str) -> dict[str, Any]:
        # Smooth interpolation at nominal (pyhf's polynomial codes), so that Fisher
        # information at the nominal point is well defined.
        return {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}}

    def extra_metrics(self, yields: Yields, scenario: str) -> dict[str, float]:
        free, cons = self.free_and_constraints(scenario)
        up = np.stack([yields[("background", f"paper_{p}_up")] for p in ("r", "lambda")])
        dw = np.stack([yields[("background", f"paper_{p}_down")] for p in ("r", "lambda")])
        sigma = inferno_fisher_sigma(
            yields[("signal", "nominal")],
            yields[("background", "nominal")],
            up,
            dw,
            free=free,
            constraints=cons,
            s=self.s,
            b=self.b,
            shifts=self.shifts,
        )
        return {"inferno_sigma_s": sigma}

    def selection_metric(self, loss: str) -> tuple[str, bool] | None:
        # The INFERNO loss is the paper's sigma of s: restarts are compared by it.
        return ("inferno_sigma_s", False) if loss == "native" else super().selection_metric(loss)

    def native_loss(self, method: str, scenario: str):
        if method != "inferno":
            return None
        free, cons = self.free_and_constraints(scenario)
        aux = jnp.asarray([1.0 / cons[p] ** 2 if p in cons else 0.0 for p in INFERNO_PARAMETERS])
        idx = tuple(INFERNO_PARAMETERS.index(p) for p in free)
        s0, b0 = self.s, self.b
        templates = self.loss_shapes == "templates"
        shift = jnp.asarray(self.shifts)

        def loss(hist, batch):
            # The paper's INFERNO loss: Asimov Poisson likelihood of the soft summary in
            # (s, r, lambda, b). The background shape follows the events' exact
            # transformation, or (``loss_shapes = "templates"``) the 3-point interpolation
            # of the paper's metric between the batch's histograms at the shifted
            # parameters, the model the evaluation measures.
            sig, bkg = batch["signal"], batch["background"]
            sig_shape = hist(Sample(sig.x, sig.w / jnp.sum(sig.w)))
            wb = bkg.w / jnp.sum(bkg.w)

            def shifted(r, lam):
                return hist(Sample(transform_background(bkg.x, r, lam), wb))

            if templates:
                # Soft histograms keep all of the (unit) weight, so these templates are
                # normalised as the metric's are.
                nominal = hist(Sample(bkg.x, wb))
                up = jnp.stack([shifted(2.0 + shift[0], 3.0), shifted(2.0, 3.0 + shift[1])])
                down = jnp.stack([shifted(2.0 - shift[0], 3.0), shifted(2.0, 3.0 - shift[1])])

                def nu_fn(theta):
                    alpha = (theta[1:3] - jnp.asarray([2.0, 3.0])) / shift
                    shape = interpolate_quad_lin(alpha, nominal, up, down)
                    return theta[0] * sig_shape + theta[3] * shape
            else:

                def nu_fn(theta):
                    return theta[0] * sig_shape + theta[3] * shifted(theta[1], theta[2])

            theta0 = jnp.asarray([s0, 2.0, 3.0, b0])
            sigma = _sigma_poi(_poisson_asimov_hessian(nu_fn, theta0), aux, idx)
            return sigma, sigma

        return loss
