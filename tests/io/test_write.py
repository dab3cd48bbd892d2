"""Write-out: hist.Hist, ROOT histogram files and pyhf workspaces, atomically."""

from __future__ import annotations

import doctest
import json

import hist
import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest
import uproot

import diffana
import diffana.io as dio
from diffana.io import _events, _read, _stream, _write


def _workspace(signal, background):
    return {
        "channels": [
            {
                "name": "mumu",
                "samples": [
                    {
                        "name": "signal",
                        "data": signal,
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": background,
                        "modifiers": [
                            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "mumu", "data": [52.0, 61.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def test_to_hist_double_and_weight_storage():
    h = dio.to_hist(
        jnp.array([1.5, 2.0, 0.0]), jnp.array([0.0, 1.0, 2.5, 4.0]), name="m", label="m [GeV]"
    )
    assert isinstance(h, hist.Hist)
    np.testing.assert_array_equal(h.values(), [1.5, 2.0, 0.0])
    np.testing.assert_array_equal(h.axes[0].edges, [0.0, 1.0, 2.5, 4.0])
    assert h.axes[0].label == "m [GeV]"
    hw = dio.to_hist([1.0, 2.0], [0.0, 1.0, 2.0], variances=[0.5, 0.25])
    np.testing.assert_array_equal(hw.variances(), [0.5, 0.25])


@pytest.mark.parametrize(
    ("counts", "edges", "match"),
    [([1.0, 2.0], [0.0, 1.0], "2 bins need 3 edges"), ([1.0, 2.0], [0.0, 2.0, 1.0], "increase")],
)
def test_to_hist_bad_input(counts, edges, match):
    with pytest.raises(diffana.DataError, match=match):
        dio.to_hist(counts, edges)


def test_to_hist_rejects_tracers():
    with pytest.raises(diffana.DataError, match="traced"):
        jax.jit(lambda c: dio.to_hist(c, [0.0, 1.0]).values().sum())(jnp.ones(1))


def test_write_histograms_round_trip(tmp_path):
    path = tmp_path / "hists.root"
    hists = {
        "signal": dio.to_hist([1.0, 2.0], [0.0, 1.0, 2.0]),
        "nominal/background": dio.to_hist([3.0, 4.0], [0.0, 1.0, 2.0], variances=[3.0, 4.0]),
    }
    assert dio.write_histograms(path, hists) == path
    with uproot.open(path) as f:
        np.testing.assert_array_equal(f["signal"].values(), [1.0, 2.0])
        np.testing.assert_array_equal(f["nominal/background"].variances(), [3.0, 4.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hists.root"]  # no temp left
    with pytest.raises(diffana.DataError, match=r"not a hist\.Hist"):
        dio.write_histograms(path, {"x": np.ones(2)})


def test_write_workspace_round_trip_with_pyhf(tmp_path):
    path = tmp_path / "ws.json"
    spec = _workspace(jnp.array([5.0, 10.0]), np.array([50.0, 52.0]))
    dio.write_workspace(path, spec)
    loaded = json.loads(path.read_text())
    ws = pyhf.Workspace(loaded)
    model = ws.model()
    assert model.config.poi_name == "mu"
    np.testing.assert_allclose(
        model.expected_actualdata(model.config.suggested_init()), [55.0, 62.0]
    )


def test_write_workspace_accepts_object_with_to_pyhf(tmp_path):
    class Exported:
        def to_pyhf(self):
            return _workspace([1.0, 2.0], [3.0, 4.0])

    dio.write_workspace(tmp_path / "ws.json", Exported())
    assert pyhf.Workspace(json.loads((tmp_path / "ws.json").read_text()))


def test_write_workspace_is_atomic_and_validates(tmp_path):
    path = tmp_path / "ws.json"
    dio.write_workspace(path, _workspace([1.0, 2.0], [3.0, 4.0]))
    before = path.read_text()
    bad = _workspace([1.0, 2.0], [3.0, 4.0])
    del bad["measurements"]
    with pytest.raises(diffana.SpecError, match="not a valid pyhf workspace"):
        dio.write_workspace(path, bad)
    with pytest.raises(diffana.DataError, match=r"samples\[0\]\.data\[1\] is non-finite"):
        dio.write_workspace(path, _workspace([1.0, float("nan")], [3.0, 4.0]))
    with pytest.raises(diffana.DataError, match=r"samples\[1\]\.data holds non-finite"):
        dio.write_workspace(path, _workspace([1.0, 2.0], jnp.array([3.0, jnp.inf])))
    with pytest.raises(diffana.DataError, match="traced"):
        jax.jit(lambda s: dio.write_workspace(path, _workspace(s, [3.0, 4.0])) and 0.0)(jnp.ones(2))
    with pytest.raises(RuntimeError, match="interrupted"), dio.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws.json"]
    with pytest.raises(diffana.DataError, match="does not exist"):
        dio.write_workspace(tmp_path / "missing" / "ws.json", _workspace([1.0], [2.0]))


@pytest.mark.parametrize("module", [dio, _events, _read, _stream, _write])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
