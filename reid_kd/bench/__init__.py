"""Benchmark suites (every method, several seeds, resumable) and the leaderboards rebuilt from their runs."""

LAUNCHERS = ("slurm", "local")  # submitit executors: a Slurm cluster, or local processes (trying it out)
VALIDATION_FRACTION = 0.2  # `reidkd tune`: the train identities held out as validation query and gallery
EXTEND = 2  # `reidkd tune`: rounds of extension past a grid edge its best point sits on (one point per axis each)
