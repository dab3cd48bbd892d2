"""The ``diffana`` command line, through click's CliRunner."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from diffana.cli import main

TINY = """
schema = 1
[problem]
name = "cli_blobs"
kind = "gaussian_blobs"
[generator]
means.signal = [-1.0, 1.0]
means.background = [1.0, -1.0]
means.background_up = [2.5, 2.0]
means.background_down = [-2.5, -1.5]
n_train = 300
n_valid = 300
n_test = 1000
[analysis]
bins = 3
signal_yield = 20.0
background_yield = 100.0
[scenarios.default]
[methods.bce]
hidden = [8, 8]
steps = 3
batch_size = 32
"""


@pytest.fixture
def runner():
    return CliRunner()


def one_line_error(result) -> str:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


def test_unknown_problem_is_a_one_line_error(runner, tmp_path):
    result = runner.invoke(main, ["bench", "no_such_problem", "--out", str(tmp_path)])
    line = one_line_error(result)
    assert "unknown problem 'no_such_problem'" in line and "inferno3d" in line


def test_bad_definition_file_is_a_one_line_error(runner, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(textwrap.dedent(TINY).replace("schema = 1", "schema = 99"))
    line = one_line_error(runner.invoke(main, ["bench", str(bad), "--out", str(tmp_path)]))
    assert "bad.toml" in line and "schema" in line
    broken = tmp_path / "broken.toml"
    broken.write_text("[problem\nname = 1")
    line = one_line_error(runner.invoke(main, ["bench", str(broken), "--out", str(tmp_path)]))
    assert "not valid TOML" in line
    missing = tmp_path / "missing.toml"
    line = one_line_error(runner.invoke(main, ["bench", str(missing), "--out", str(tmp_path)]))
    assert "does not exist" in line


def test_unwritable_output_folder_is_a_one_line_error(runner, tmp_path):
    definition = tmp_path / "cli_blobs.toml"
    definition.write_text(textwrap.dedent(TINY))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = runner.invoke(main, ["bench", str(definition), "--out", str(blocker / "results")])
    line = one_line_error(result)
    assert "not writable" in line and "a_file" in line


def test_unknown_method_is_a_one_line_error(runner, tmp_path):
    result = runner.invoke(
        main, ["bench", "gaussian_blobs", "--methods", "magic", "--out", str(tmp_path)]
    )
    assert "unknown method" in one_line_error(result)


def test_list_shows_packaged_problems(runner):
    result = runner.invoke(main, ["bench", "--list"])
    assert result.exit_code == 0
    names = [line.split("\t")[0] for line in result.output.splitlines()]
    assert {"gaussian_blobs", "inferno3d", "cut_scan"} <= set(names)


def test_bench_runs_and_resumes(runner, tmp_path):
    definition = tmp_path / "cli_blobs.toml"
    definition.write_text(textwrap.dedent(TINY))
    out = tmp_path / "out"
    args = ["bench", str(definition), "--out", str(out), "--no-plots", "--no-referee",
            "--no-toys", "--no-tensorboard", "--seeds", "1"]  # fmt: skip
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "1 runs (1 ran, 0 reused" in result.output
    summary = json.loads((out / "results.json").read_text())
    assert summary["problems"]["cli_blobs"]["runs"][0]["method"] == "bce"
    evaluation = json.loads((out / "cli_blobs" / "bce" / "seed0" / "result.json").read_text())[
        "evaluation"
    ]
    for entry in evaluation.values():  # --no-toys: no pseudo-experiment metrics
        assert "cls" in entry and not {"cls_toys", "fair_score", "interval_width"} & set(entry)
    assert (out / "results.md").read_text().startswith("# diffana bench results")
    result_file = out / "cli_blobs" / "bce" / "seed0" / "result.json"
    before = result_file.stat().st_mtime_ns
    again = runner.invoke(main, args)
    assert again.exit_code == 0 and result_file.stat().st_mtime_ns == before
    assert "1 runs (0 ran, 1 reused" in again.output
    # Other settings in the same folder: refused before anything runs, nothing touched.
    other = runner.invoke(main, [*args, "--steps", "2"])
    line = one_line_error(other)
    assert other.exit_code == 2
    assert "made with other settings" in line and "steps: 3 -> 2" in line
    assert "--out" in line and result_file.stat().st_mtime_ns == before


def test_report_without_results_is_a_one_line_error(runner, tmp_path):
    result = runner.invoke(main, ["report", str(tmp_path), "--page", str(tmp_path / "r.md")])
    assert result.exit_code != 0
    assert "results.json does not exist" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bench_on_a_one_device_mesh(runner, tmp_path):
    definition = tmp_path / "cli_blobs.toml"
    definition.write_text(textwrap.dedent(TINY))
    out = tmp_path / "out"
    args = ["bench", str(definition), "--out", str(out), "--no-plots", "--no-referee",
            "--no-toys", "--no-tensorboard", "--seeds", "1", "--devices", "1"]  # fmt: skip
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "results.json").read_text())["meta"]["devices"] == 1


def test_bench_on_two_cpu_devices_in_a_fresh_process(tmp_path):
    # `diffana bench --devices 2` splits the CPU into two devices before JAX starts.
    import os
    import subprocess
    import sys

    definition = tmp_path / "cli_blobs.toml"
    definition.write_text(textwrap.dedent(TINY))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-m", "diffana.cli", "bench", str(definition), "--out", str(out),
         "--no-plots", "--no-referee", "--no-toys", "--no-tensorboard", "--seeds", "1",
         "--devices", "2"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["devices"] == 2 and len(meta["environment"]["devices"]) == 2


def test_bench_devices_errors_are_one_line(runner, tmp_path):
    import jax

    jax.devices()  # JAX has started with its CPU devices: no more can be made now
    definition = tmp_path / "cli_blobs.toml"
    definition.write_text(textwrap.dedent(TINY))
    n = len(jax.devices()) + 1
    result = runner.invoke(main, ["bench", str(definition), "--devices", str(n)])
    assert result.exit_code != 0
    assert "already started" in result.output or "devices requested" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(main, ["bench", str(definition), "--devices", "0"])
    assert result.exit_code != 0 and "--devices" in result.output


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("bins = 3", "bins = -1"), "[analysis].bins must be an integer >= 1, got -1"),
        (("steps = 3", 'steps = 3\nlearning_rate = "fast"'),
         "[methods.bce].learning_rate must be a number > 0, got 'fast'"),
        (("steps = 3", "steps = 3\nlearning_rat = 0.1"),
         "[methods.bce] has unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
    ],
)  # fmt: skip
def test_definition_mistakes_are_one_line_exit_2_and_write_nothing(
    runner, tmp_path, edit, expected
):
    definition = tmp_path / "cli_blobs.toml"
    definition.write_text(textwrap.dedent(TINY).replace(*edit))
    out = tmp_path / "out"
    result = runner.invoke(main, ["bench", str(definition), "--out", str(out)])
    line = one_line_error(result)
    assert result.exit_code == 2
    assert str(definition) in line and expected in line
    assert not out.exists()


def test_quick_and_full_exclude_each_other(runner, tmp_path):
    result = runner.invoke(main, ["bench", "gaussian_blobs", "--quick", "--full"])
    assert result.exit_code == 2 and "--quick and --full" in result.output
    assert "Traceback" not in result.output


def test_interrupt_says_how_to_resume(runner, tmp_path, monkeypatch):
    import diffana.bench

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(diffana.bench, "run_bench", interrupted)
    out = tmp_path / "out"
    result = runner.invoke(main, ["bench", "gaussian_blobs", "--quick", "--out", str(out)])
    assert result.exit_code == 130
    assert "rerun the same command to resume" in result.output and str(out) in result.output
    assert "Aborted!" not in result.output


def _fake_results(out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    (out / "plots" / "p_loss.png").write_bytes(b"\x89PNG" + bytes(100))
    summary = {
        "schema": "diffana.bench.results/1", "created": "2026-01-01T00:00:00+00:00",
        "wall_time_s": 1.0, "complete": True,
        "meta": {"command": "diffana bench p", "mode": "quick",
                 "environment": {"cpu_count": 2, "diffana": "0", "jax": "0"}},
        "problems": {"p": {"definition": "/somewhere/p.toml", "summary": [],
                           "plots": ["plots/p_loss.png"]}},
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(summary))


def test_report_writes_into_the_run_folder_and_never_overwrites(runner, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _fake_results(out)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text("the project's own page")
    result = runner.invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").read_text().startswith("# Benchmark results")
    assert (out / "report" / "p_loss.png").exists()
    assert (tmp_path / "docs" / "results.md").read_text() == "the project's own page"
    again = runner.invoke(main, ["report", str(out)])
    line = one_line_error(again)
    assert again.exit_code == 2 and "exists" in line and "--force" in line
    page = tmp_path / "docs" / "results.md"
    refused = runner.invoke(main, ["report", str(out), "--page", str(page)])
    assert refused.exit_code == 2 and page.read_text() == "the project's own page"
    forced = runner.invoke(main, ["report", str(out), "--page", str(page), "--force"])
    assert forced.exit_code == 0 and page.read_text().startswith("# Benchmark results")


def test_version(runner):
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and "diffana" in result.output
