"""The HS3 functions that need the model: data of a document, a model's document.

Apart from `_hs3` (the conversion between HS3 and pyhf JSON, which `Model.from_hs3`
uses) so that the modules import in one direction: `_hs3` <- `_model` <- this one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from diffana.errors import SpecError
from diffana.hf._hs3 import _with_source, hs3_to_pyhf, pyhf_to_hs3
from diffana.hf._model import Model, workspace_data

__all__ = ["hs3_data", "to_hs3"]


def hs3_data(
    doc_or_path: Mapping[str, Any] | str | os.PathLike,
    model: Any,
    analysis: str | int | None = None,
    include_auxdata: bool = True,
) -> Any:
    """The observed data of an HS3 analysis in the model's channel order, plus auxdata.

    **Arguments:**

    - `doc_or_path`: the HS3 document (dict, whose numbers may be arrays or tracers) or
      a path to its JSON file.
    - `model`: the `Model` built from it (`Model.from_hs3`), which fixes the channel order.
    - `analysis`: name or index of the analysis (or the name of a likelihood); default:
      the first analysis.
    - `include_auxdata`: append `model.auxdata`, as pyhf's ``workspace.data``.

    **Returns:** the data vector, shape `(nbins + nauxdata,)` (or `(nbins,)`).

    **Raises:** `SpecError` naming the JSON path of a missing or dangling element.

    Example:

    >>> import diffana.hf
    >>> model = diffana.hf.simple_model([5.0, 10.0], [50.0, 60.0], [5.0, 12.0])
    >>> doc = diffana.hf.to_hs3(model, data=[52.0, 65.0])
    >>> back = diffana.hf.Model.from_hs3(doc)
    >>> diffana.hf.hs3_data(doc, back, include_auxdata=False).tolist()
    [52.0, 65.0]
    """
    workspace, _, _, source = hs3_to_pyhf(doc_or_path, analysis)
    try:
        return workspace_data(workspace, model, include_auxdata)
    except SpecError as err:
        raise _with_source(err, source) from err


def to_hs3(
    workspace_or_model: Any,
    data: Any = None,
    *,
    measurement: str | int | None = None,
    modifier_settings: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The HS3 document (standard version 0.2.0) of a pyhf workspace or a diffana model.

    **Arguments:**

    - `workspace_or_model`: a pyhf workspace (dict or path to its JSON file) or a `Model`.
    - `data`: observations, main bins (optionally followed by auxiliary data, which HS3
      does not store). Default: the workspace's observations, else the expected data at
      the model's `init` (Asimov).
    - `measurement`: the workspace's measurement (name or index; default the first).
    - `modifier_settings`: interpolation codes of a workspace, as for `Model.from_pyhf`
      (default pyhf's: normsys ``code4``, histosys ``code4p``). A model keeps its own.

    **Returns:** a JSON-serialisable dict with ``distributions`` (one ``histfactory_dist``
    per channel, a ``gaussian_dist`` per luminosity), ``data``, ``likelihoods``,
    ``domains``, ``parameter_points``, ``analyses`` and ``metadata``.

    **Raises:** `SpecError` for what HS3 cannot hold: several staterror modifiers in one
    channel, Gaussian constraints of non-unit width or non-zero centre (other than lumi).

    Example:

    >>> import diffana.hf
    >>> doc = diffana.hf.to_hs3(diffana.hf.simple_model([5.0], [50.0], [7.0]))
    >>> [d["type"] for d in doc["distributions"]], doc["metadata"]["hs3_version"]
    (['histfactory_dist'], '0.2.0')
    """
    import diffana

    if isinstance(workspace_or_model, Model):
        if measurement is not None or modifier_settings is not None:
            raise SpecError("to_hs3: measurement and modifier_settings apply to workspaces only")
        model = workspace_or_model
    else:
        model = Model.from_pyhf(workspace_or_model, measurement, modifier_settings)
    codes = {"normsys": model.structure.normsys_code, "histosys": model.structure.histosys_code}
    workspace = model.to_pyhf(data)
    return pyhf_to_hs3(model, workspace, codes, diffana.__version__)
