"""The application: config models, runs, sweeps, ablations and the results store.

The package is also the API call ``hybridlt.sweep(spec_or_path, overrides=(), resume=False, ...)``
(see ``hybridlt.api.sweep``): ``hybridlt.sweep`` names both, and calling it runs a sweep.
"""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from hybridlt.api import sweep

        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
