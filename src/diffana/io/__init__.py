"""ROOT input and analysis output.

Read TTrees and RNTuples with uproot into awkward arrays, turn object collections into
dense float64 JAX arrays with validity masks (`Objects`, `Events`), stream large files
chunk by chunk and accumulate histograms and gradients over the chunks, and write hard
histograms (`hist.Hist`, ROOT) and pyhf workspaces (atomically).

Example:

>>> import awkward as ak
>>> import diffana.io
>>> muons = diffana.io.pad_objects({"pt": ak.Array([[30.0, 12.0, 7.0], [41.0]])}, n_max=2)
>>> muons["pt"].shape, muons.mask.tolist()
((2, 2), [[True, True], [True, False]])
"""

from diffana.io._events import Collection as Collection
from diffana.io._events import Events as Events
from diffana.io._events import Objects as Objects
from diffana.io._events import Schema as Schema
from diffana.io._events import events_from_arrays as events_from_arrays
from diffana.io._events import pad_events as pad_events
from diffana.io._events import pad_objects as pad_objects
from diffana.io._events import to_dense as to_dense
from diffana.io._read import list_trees as list_trees
from diffana.io._read import open_tree as open_tree
from diffana.io._read import read_arrays as read_arrays
from diffana.io._stream import EventStream as EventStream
from diffana.io._stream import iterate_events as iterate_events
from diffana.io._stream import loss_and_grad_over_chunks as loss_and_grad_over_chunks
from diffana.io._stream import read_events as read_events
from diffana.io._stream import sum_over_chunks as sum_over_chunks
from diffana.io._stream import value_and_grad_over_chunks as value_and_grad_over_chunks
from diffana.io._write import atomic_path as atomic_path
from diffana.io._write import to_hist as to_hist
from diffana.io._write import write_histograms as write_histograms
from diffana.io._write import write_workspace as write_workspace

__all__ = [
    "Collection",
    "EventStream",
    "Events",
    "Objects",
    "Schema",
    "atomic_path",
    "events_from_arrays",
    "iterate_events",
    "list_trees",
    "loss_and_grad_over_chunks",
    "open_tree",
    "pad_events",
    "pad_objects",
    "read_arrays",
    "read_events",
    "sum_over_chunks",
    "to_dense",
    "to_hist",
    "value_and_grad_over_chunks",
    "write_histograms",
    "write_workspace",
]
