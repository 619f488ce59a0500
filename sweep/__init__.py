"""The application: config models, the ``hybridlt`` CLI, runs, sweeps and the results store."""
