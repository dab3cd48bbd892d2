"""Definition files: discovery in a checkout and a wheel, validation, modes, plug-ins."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import diffana.problems._definition as definition_module
from diffana.errors import ProblemDefinitionError
from diffana.problems import (
    MODES,
    Problem,
    available_problems,
    definition_dirs,
    find_definition,
    load_definition,
    load_problem,
    problem_kinds,
    register_problem,
)

SHIPPED = ("cut_scan", "dimuon", "gaussian_blobs", "inferno3d")

MINIMAL = """
schema = 1
[problem]
name = "mini"
kind = "gaussian_blobs"
[generator]
means.signal = [-1.0, 1.0]
means.background = [1.0, -1.0]
means.background_up = [2.0, 2.0]
means.background_down = [-2.0, -1.0]
n_train = 100
n_valid = 100
n_test = 100
[analysis]
bins = 3
signal_yield = 10.0
background_yield = 50.0
[scenarios.default]
[methods.bce]
steps = 5
batch_size = 10
[modes.quick]
methods.bce = { steps = 2 }
"""


def write(tmp_path: Path, text: str, name: str = "mini.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("mode", MODES)
def test_shipped_definitions_load_in_every_mode(name, mode):
    problem = load_problem(name, mode=mode)
    assert problem.name == name
    assert problem.definition.mode == mode
    assert problem.scenarios
    for method in problem.definition.bench.get("methods", []):
        assert method in problem.definition.methods


REPO = Path(__file__).resolve().parents[2]


def test_checkout_definitions_are_found(monkeypatch):
    monkeypatch.chdir(REPO)  # an installed diffana used from its checkout
    found = available_problems()
    assert set(SHIPPED) <= set(found)
    repo_dir = REPO / "toy_problems"
    assert repo_dir in definition_dirs()
    # The installed copy (if any) is the checkout's own.
    for name in SHIPPED:
        assert found[name].read_text() == (repo_dir / f"{name}.toml").read_text()


def test_packaged_definitions_come_first(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    # An installed wheel carries the definitions as diffana/_toy_problems.
    pkg = tmp_path / "diffana"
    (pkg / "_toy_problems").mkdir(parents=True)
    text = Path(find_definition("gaussian_blobs")).read_text()
    (pkg / "_toy_problems" / "gaussian_blobs.toml").write_text(text)
    monkeypatch.setattr(definition_module.importlib.resources, "files", lambda name: pkg)
    assert definition_dirs()[0] == pkg / "_toy_problems"
    assert available_problems()["gaussian_blobs"] == pkg / "_toy_problems" / "gaussian_blobs.toml"
    assert "inferno3d" in available_problems()  # the checkout still fills in the rest


def test_user_definition_by_path_and_mode_override(tmp_path):
    path = write(tmp_path, MINIMAL)
    d = load_definition(str(path))
    assert d.name == "mini" and d.methods["bce"]["steps"] == 5 and d.path == path
    assert load_definition(path, mode="quick").methods["bce"]["steps"] == 2
    assert d.with_mode("quick").methods["bce"]["steps"] == 2
    assert load_problem(path).n_bins == 3


def test_unknown_problem_names_the_available_ones():
    with pytest.raises(ProblemDefinitionError, match=r"unknown problem 'nope'.*inferno3d"):
        load_definition("nope")


def test_missing_file():
    with pytest.raises(ProblemDefinitionError, match="does not exist"):
        load_definition("/no/such/problem.toml")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("schema = 1", "schema = 7"), "'schema' must be 1"),
        (lambda t: t.replace("[methods.bce]", "[methods.magic]"), "unknown method"),
        (lambda t: t.replace('kind = "gaussian_blobs"', 'kind = "warp_drive"'), "unknown .*kind"),
        (lambda t: t.replace("[scenarios.default]\n", ""), r"\[scenarios\]"),
        (lambda t: t + "\n[extra]\n", "unknown top-level"),
        (lambda t: t.replace("bins = 3", 'bins = "three"'), r"\[analysis\].bins must be an int"),
        (lambda t: t.replace("n_test = 100", ""), r"\[generator\].n_test is required"),
        (lambda t: t.replace("[modes.quick]", "[modes.turbo]"), "unknown mode"),
        (lambda t: t + '\n[bench]\nmethods = ["neos"]\n', r"\[bench\].methods"),
        (lambda t: t.replace("[problem]", "[problem\n"), "not valid TOML"),
        (lambda t: t.replace('kind = "gaussian_blobs"', 'kind = "os:nothing_here"'), "has no"),
    ],
)
def test_malformed_definitions_name_the_field(tmp_path, edit, match):
    path = write(tmp_path, edit(textwrap.dedent(MINIMAL)))
    with pytest.raises(ProblemDefinitionError, match=match):
        load_problem(path)


def _sub(old, new):
    return lambda text: text.replace(old, new)


def _add(extra):
    return lambda text: text + extra


M_BCE = r"\[methods\.bce\]"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        # ranges
        (_sub("bins = 3", "bins = -1"), r"\[analysis\]\.bins must be an integer >= 1, got -1"),
        (_sub("bins = 3", "bins = 0"), r"\[analysis\]\.bins must be an integer >= 1"),
        (_sub("n_test = 100", "n_test = -5"), r"\[generator\]\.n_test must be"),
        (_sub("signal_yield = 10.0", "signal_yield = -1.0"), r"signal_yield must be a number > 0"),
        (_sub("steps = 5", "steps = -5"), M_BCE + r"\.steps must be an integer >= 0"),
        (_sub("batch_size = 10", "batch_size = 0"), M_BCE + r"\.batch_size"),
        # types
        (_sub("steps = 5", 'steps = 5\nlearning_rate = "fast"'),
         M_BCE + r"\.learning_rate must be a number > 0, got 'fast'"),
        (_sub("steps = 5", "steps = 5.5"), M_BCE + r"\.steps must be an int"),
        (_sub("steps = 5", "steps = true"), M_BCE + r"\.steps must be an int"),
        (_sub("steps = 5", 'steps = 5\nhidden = [8, "x"]'), M_BCE + r"\.hidden\[1\]"),
        (_sub("steps = 5", 'steps = 5\noptimizer = "adma"'), r"optimizer must be one of 'adam'"),
        (_sub("steps = 5", "steps = 5\nbandwidth = { start = 0.1 }"),
         M_BCE + r"\.bandwidth\.end is required"),
        (_sub("means.signal = [-1.0, 1.0]", "means.signal = [-1.0]"),
         r"\[generator\]\.means\.signal must be a list of 2"),
        # unknown keys, with a suggestion
        (_sub("steps = 5", "steps = 5\nlearning_rat = 0.1"),
         M_BCE + r" has unknown key 'learning_rat' \(did you mean 'learning_rate'\?\)"),
        (_sub("bins = 3", "bins = 3\nsignal_yeild = 3.0"),
         r"\[analysis\] has unknown key 'signal_yeild' \(did you mean 'signal_yield'\?\)"),
        (_sub("n_test = 100", "n_test = 100\nn_tset = 1"), r"did you mean 'n_test'"),
        (_sub('kind = "gaussian_blobs"', 'kind = "gaussian_blobs"\ndescripton = ""'),
         r"\[problem\] has unknown key 'descripton' \(did you mean 'description'\?\)"),
        (_add("\n[bench]\nseed = 2\n"),
         r"\[bench\] has unknown key 'seed' \(did you mean 'seeds'\?\)"),
        (_add("\n[bench]\nseeds = 0\n"), r"\[bench\]\.seeds must be an integer >= 1"),
        (_sub("[scenarios.default]", "[scenarios.default]\nthresholds = 2"),
         r"\[scenarios\.default\] has unknown key 'thresholds'"),
        (_sub("[methods.bce]", "[methods.bec]"), r"did you mean 'bce'"),
        (_add("\n[note]\n"), r"unknown top-level field 'note' \(did you mean 'notes'\?\)"),
        # mistakes in another mode's overrides are found when any mode is loaded
        (_sub("methods.bce = { steps = 2 }", "methods.bce = { steps = -2 }"),
         r"steps must be an integer >= 0, got -2 \(with \[modes\.quick\] applied\)"),
        (_add("generator = { n_tets = 5 }\n"), r"did you mean 'n_test'.*\[modes\.quick\]"),
    ],
)  # fmt: skip
def test_definitions_are_checked_completely_when_loaded(tmp_path, edit, match):
    path = write(tmp_path, edit(textwrap.dedent(MINIMAL)))
    with pytest.raises(ProblemDefinitionError, match=match) as info:
        load_problem(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_the_shipped_cut_and_inferno_kinds_check_their_tables(tmp_path):
    text = find_definition("cut_scan").read_text()
    bad = write(tmp_path, text.replace('direction = ">" }', 'direction = ">=" }', 1), "c.toml")
    with pytest.raises(ProblemDefinitionError, match=r"\[analysis\]\.cuts\[0\]\.direction"):
        load_problem(bad)
    bad = write(tmp_path, text.replace("thresholds = 1", "threshold = 1"), "c.toml")
    with pytest.raises(ProblemDefinitionError, match=r"did you mean 'thresholds'"):
        load_problem(bad)
    text = find_definition("inferno3d").read_text()
    bad = write(tmp_path, text.replace('free = ["s", "r"]', 'free = ["s", "q"]'), "i.toml")
    with pytest.raises(ProblemDefinitionError, match=r"\[scenarios\.b1\]\.free\[1\]"):
        load_problem(bad)


def test_bad_mode_name():
    with pytest.raises(ProblemDefinitionError, match="mode must be one of"):
        load_definition("inferno3d", mode="fastest")


class _Plugin(Problem):
    feature_names = ("a",)

    def generate(self, seed, split):
        raise NotImplementedError

    def templates(self, samples):
        raise NotImplementedError

    def workspace(self, yields, scenario):
        raise NotImplementedError


def test_plugin_kinds_by_registry_and_by_import_path(tmp_path):
    register_problem("test_plugin_kind", _Plugin)
    assert "test_plugin_kind" in problem_kinds()
    text = textwrap.dedent(MINIMAL).replace('kind = "gaussian_blobs"', 'kind = "test_plugin_kind"')
    assert isinstance(load_problem(write(tmp_path, text)), _Plugin)
    # "module:attribute" needs no registration: a realistic problem can live anywhere.
    text = textwrap.dedent(MINIMAL).replace(
        'kind = "gaussian_blobs"', 'kind = "diffana.problems._gaussian_blobs:GaussianBlobs"'
    )
    assert load_problem(write(tmp_path, text, "other.toml")).n_bins == 3


def test_factory_must_build_a_problem(tmp_path):
    register_problem("test_not_a_problem", lambda d: object())
    text = textwrap.dedent(MINIMAL).replace(
        'kind = "gaussian_blobs"', 'kind = "test_not_a_problem"'
    )
    with pytest.raises(ProblemDefinitionError, match=r"not a diffana\.problems\.Problem"):
        load_problem(write(tmp_path, text))
    with pytest.raises(ValueError, match="without ':'"):
        register_problem("a:b", _Plugin)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_cuts_spend_no_more_evaluations_than_the_scan(mode):
    from diffana.bench import method_settings

    problem = load_problem("cut_scan", mode=mode)
    grad = method_settings(problem, "cuts_grad")
    scan = method_settings(problem, "cuts_scan")
    restarts = grad.get("restarts", 1)
    spent = grad["steps"] * restarts
    if restarts > 1:  # the random candidates and the final comparison of the runs
        spent += grad["restart_candidates"] + restarts
    assert spent <= scan["budget"]
