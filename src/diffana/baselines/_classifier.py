"""The standard baseline: a binary classifier trained with cross-entropy, then binned."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from diffana.losses import bce_loss
from diffana.train import RunTracker, Sample, TrainResult, run_training
from diffana.train._pipelines import Classifier, Network, standardisation

__all__ = ["classifier_loss", "make_classifier", "train_classifier"]


def make_classifier(
    train: Mapping[str, Sample],
    n_bins: int,
    hidden: Sequence[int],
    key: PRNGKeyArray,
    dtype=jnp.float32,
    standardise: bool = True,
) -> Classifier:
    """An untrained `Classifier`; with `standardise` its inputs are standardised on
    `train`'s events (otherwise fed as they are)."""
    allx = np.concatenate([np.asarray(s.x) for s in train.values()])
    shift, scale = standardisation(allx) if standardise else (None, None)
    n_features = allx.shape[1]
    net = Network(n_features, 1, hidden, key=key, shift=shift, scale=scale, dtype=dtype)
    return Classifier(net, int(n_bins))


def classifier_loss(signal: Sequence[str], background: Sequence[str]):
    """``loss_fn(classifier, batch, relax) -> (bce, bce)`` for `diffana.train.run_training`.

    Signal events are labelled 1, background events 0. Each class is balanced to equal
    total weight and, within a class, samples count in proportion to their expected
    yields, so several background processes are mixed as in the analysis. Equal
    arguments return the same function (one compiled training step for all seeds).
    """
    return _classifier_loss(tuple(signal), tuple(background))


@functools.lru_cache(maxsize=64)
def _classifier_loss(signal: tuple[str, ...], background: tuple[str, ...]):

    def class_weights(batch, names) -> Float[Array, " events"]:
        ws = [batch[n].w for n in names]
        total = sum(jnp.sum(w) for w in ws)
        return jnp.concatenate(ws) / total

    def loss(clf: Classifier, batch: Mapping[str, Sample], relax_value):
        x = jnp.concatenate([batch[n].x for n in signal + background])
        labels = jnp.concatenate(
            [jnp.ones(batch[n].x.shape[0]) for n in signal]
            + [jnp.zeros(batch[n].x.shape[0]) for n in background]
        )
        w = jnp.concatenate([class_weights(batch, signal), class_weights(batch, background)])
        value = bce_loss(clf.logits(x), labels, weights=w)
        return value, value

    return loss


def train_classifier(
    train: Mapping[str, Sample],
    signal: Sequence[str],
    background: Sequence[str],
    *,
    n_bins: int,
    hidden: Sequence[int],
    steps: int,
    batch_size: int,
    key: PRNGKeyArray,
    learning_rate: float = 1e-3,
    optimizer: str = "adam",
    lr_schedule: str = "constant",
    tracker: RunTracker | None = None,
    callback=None,
    standardise: bool = True,
    mesh=None,
) -> TrainResult:
    """Train a cross-entropy classifier of `signal` against `background` samples.

    **Arguments:**

    - `train`: ``{sample: Sample}`` training events (only the named samples are used).
    - `signal`, `background`: the sample names of each class.
    - `n_bins`: bins of the signal probability on [0, 1] used afterwards.
    - `hidden`, `steps`, `batch_size`, `learning_rate`, `optimizer`, `lr_schedule`:
      network and optimisation (`batch_size` events per sample per step).
    - `key`: PRNG key (initialisation and batches).
    - `tracker`, `callback`: as in `diffana.train.run_training`.
    - `standardise`: standardise the inputs on the training events.
    - `mesh`: split every batch over these devices (see `diffana.train.run_training`).

    **Returns:** the `TrainResult`; its `pipeline` is the trained `Classifier`.
    """
    data = {n: train[n] for n in (*signal, *background)}
    k_init, k_fit = jax.random.split(key)
    clf = make_classifier(data, n_bins, hidden, k_init, standardise=standardise)
    return run_training(
        classifier_loss(signal, background),
        clf,
        data,
        steps=steps,
        batch_size=batch_size,
        key=k_fit,
        optimizer=optimizer,
        learning_rate=learning_rate,
        lr_schedule=lr_schedule,
        tracker=tracker,
        callback=callback,
        mesh=mesh,
    )
