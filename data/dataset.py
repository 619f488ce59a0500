"""The dataset registry and the interface every dataset offers the run builder.

``DATASETS`` maps ``data.dataset`` names to loaders that take ``data.*`` config fields as keyword
arguments (each takes the ones it needs; a parameter without a default is a required field) and
return a ``Dataset``. Every module of ``hybridlt.data`` is imported on first use, so a new dataset
is one module that registers its loader (``@DATASETS.register("name")``) plus its test.

A ``Dataset`` (``InMemoryData``, ``ImageListData``) has ``class_names``, ``num_classes``,
``in_channels``, ``train_labels`` and ``test_labels`` (int64 tensors), and:

- ``train_streams(con_sampler, ce_sampler, *, seed, device, batch_size, world_size, augment,
  image_size, loader_workers)``: the two training streams (see ``data.streams``);
- ``eval_batches(*, rank, world_size, batch_size, device, image_size, loader_workers)``: a function
  returning this rank's share of the test set as normalised ``(images, labels)`` batches.

``augment`` is the ``augment.*`` config section as a dict.
"""

from __future__ import annotations

import inspect

from hybridlt.registry import Registry

DATASETS = Registry("data.dataset", discover="hybridlt.data")


def required_fields(name: str) -> list[str]:
    """The ``data.*`` fields the loader of ``name`` needs a value for (its parameters without default)."""
    params = inspect.signature(DATASETS[name]).parameters.values()
    return [p.name for p in params if p.default is inspect.Parameter.empty]
