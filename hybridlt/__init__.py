"""hybridlt: sweeps of contrastive-learning hybrid networks for long-tailed image classification.

The Python API (each function validates exactly as the CLI does and raises ``HybridLTError``
subclasses instead of printing and exiting)::

    import hybridlt
    run = hybridlt.train("configs/quickstart.yaml", overrides=["train.epochs=5"], out="runs/q5")
    runs = hybridlt.train_seeds("configs/quickstart.yaml", [0, 1, 2], out="runs/q3", fuse=True)
    res = hybridlt.sweep("configs/sweeps/quickstart.yaml", overrides=["name=my-sweep"])
    hybridlt.export_best(res.store, "best.yaml")
    tables = hybridlt.load_results(res.store)   # .trials, .epochs, .per_class (pandas)

Importing this package is cheap and needs nothing beyond the standard library: ``hybridlt.model``
and ``hybridlt.data`` run on a machine that has only torch, torchvision, numpy and scikit-learn.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from hybridlt.errors import HybridLTError, InputError

try:
    __version__ = version("hybridlt")
except PackageNotFoundError:  # a source tree used without installing
    __version__ = "0+unknown"

# A source checkout used without installing (a bare GPU machine: ``PYTHONPATH=. python3 bench/step.py``):
# the rooms are folders beside this package, so they are searched there as ``hybridlt.model`` etc.
# An installed wheel has no pyproject.toml beside it and maps them through setuptools' package-dir.
_SOURCE_ROOT = Path(__file__).resolve().parent.parent
if (_SOURCE_ROOT / "pyproject.toml").is_file() and (_SOURCE_ROOT / "model" / "__init__.py").is_file():
    __path__.append(str(_SOURCE_ROOT))  # noqa: F821  (the package's own __path__)

_API = ("train", "train_seeds", "sweep", "ablate", "export_best", "load_results", "Results", "TrainResult",
        "SweepResult")


def __getattr__(name: str):
    """The API functions, imported on first use (they pull in torch, Ray, pydantic)."""
    if name == "sweep":  # the subpackage, which is also the callable ``hybridlt.sweep(...)``
        import importlib

        return importlib.import_module("hybridlt.sweep")
    if name in _API:
        from hybridlt import api

        return getattr(api, name)
    raise AttributeError(f"module 'hybridlt' has no attribute {name!r}")


__all__ = [*_API, "HybridLTError", "InputError", "__version__"]
