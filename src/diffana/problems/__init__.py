"""Shared benchmark problems: generators, systematics, statistical models, definitions.

A *problem* is two things:

1. **A declarative definition file** (TOML) in ``toy_problems/`` of the checkout, shipped
   inside the wheel as ``diffana/_toy_problems``, or anywhere on disk (give its path to
   ``diffana bench``). Its tables:

   ```toml
   schema = 1                       # the definition format (DEFINITION_SCHEMA)
   [problem]
   name = "my_problem"             # unique; equals the file's stem for packaged files
   kind = "inferno3d"              # a registered kind, or "package.module:Factory"
   description = "..."
   [generator]                      # read by the kind: sample sizes, seed, shapes, ...
   [analysis]                       # read by the kind: bins, yields, systematics, ...
   [scenarios.<name>]               # >= 1 variants of the statistical model
   [methods.<method>]               # neos, discovery, inferno, bce, cuts_grad, cuts_scan
                                    # (or a method the kind brings): pipeline, network,
                                    # optimiser, steps, annealing, ...
   [bench]                          # defaults of `diffana bench`: seeds, methods, scenarios
   [modes.quick] / [modes.full]     # overrides of any table above for --quick / --full
   [references]                     # published numbers, compared in the report
   notes = "..."                    # deviations from the publication, choices made
   ```

2. **A kind**: a `Problem` subclass registered under a name (`register_problem`) or
   addressed as ``"package.module:Factory"`` in ``[problem].kind``. It is built from the
   `ProblemDefinition` and implements

   - `Problem.generate(seed, split) -> {sample: Sample}`: events (features ``x`` and
     weights ``w`` normalised to expected yields) for ``split`` in ``train``, ``valid``,
     ``test``; deterministic in the seed;
   - `Problem.templates(samples) -> {(sample, variation): Sample}`: the events behind
     each histogram of the model, the nominal ones and the systematic variations
     (JAX-traceable: it runs inside training steps);
   - `Problem.workspace(yields, scenario) -> dict`: a pyhf JSON workspace from the
     template histograms (traceable; POI = signal strength);

   and may override the hooks `Problem.modifier_settings` (interpolation codes),
   `Problem.poi_scale` (physical units per unit of POI), `Problem.extra_metrics`
   (problem-specific figures of merit of the hard evaluation, e.g. the INFERNO paper's
   metric), `Problem.native_loss` (a problem-specific training loss),
   `Problem.cuts` (the thresholds that cut-based methods optimise) and
   `Problem.own_methods` (methods with pipelines and training of the problem's own,
   `ProblemMethod`, run by the bench like the generic ones).

`diffana bench` trains every method on `generate(seed, "train")` through
`templates` -> soft histograms -> `workspace` -> ``diffana.hf.Model`` -> loss, and
evaluates the hard twin on `generate(seed, "test")`.

Example:

>>> from diffana.problems import available_problems, load_problem
>>> sorted(available_problems())[:4]
['cut_scan', 'dimuon', 'gaussian_blobs', 'inferno3d']
>>> problem = load_problem("gaussian_blobs", mode="quick")
>>> events = problem.generate(seed=0, split="train")
>>> sorted(problem.templates(events))[0]
('background', 'nominal')
"""

from __future__ import annotations

from diffana.problems._base import (
    SPLITS,
    CutVariable,
    Problem,
    ProblemMethod,
    Sample,
    TemplateKey,
    Yields,
    split_seed,
    subsample,
)
from diffana.problems._cut_scan import CUT_FEATURES, CutScan, generate_cut_scan
from diffana.problems._definition import (
    DEFINITION_SCHEMA,
    METHOD_FIELDS,
    METHOD_NAMES,
    MODES,
    Field,
    ProblemDefinition,
    available_problems,
    check_table,
    definition_dirs,
    find_definition,
    load_definition,
)
from diffana.problems._gaussian_blobs import GaussianBlobs, generate_blobs
from diffana.problems._inferno3d import (
    INFERNO_PARAMETERS,
    Inferno3D,
    generate_inferno3d,
    inferno_fisher_sigma,
    interpolate_quad_lin,
    transform_background,
)
from diffana.problems._registry import load_problem, problem_kinds, register_problem
from diffana.problems._workspace import histosys, make_workspace, normfactor, normsys, staterror

__all__ = [
    "CUT_FEATURES",
    "DEFINITION_SCHEMA",
    "INFERNO_PARAMETERS",
    "METHOD_FIELDS",
    "METHOD_NAMES",
    "MODES",
    "SPLITS",
    "CutScan",
    "CutVariable",
    "Field",
    "GaussianBlobs",
    "Inferno3D",
    "Problem",
    "ProblemDefinition",
    "ProblemMethod",
    "Sample",
    "TemplateKey",
    "Yields",
    "available_problems",
    "check_table",
    "definition_dirs",
    "find_definition",
    "generate_blobs",
    "generate_cut_scan",
    "generate_inferno3d",
    "histosys",
    "inferno_fisher_sigma",
    "interpolate_quad_lin",
    "load_definition",
    "load_problem",
    "make_workspace",
    "normfactor",
    "normsys",
    "problem_kinds",
    "register_problem",
    "split_seed",
    "staterror",
    "subsample",
    "transform_background",
]
