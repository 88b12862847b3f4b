"""`python -m features.cli ARGS`: the same as `xenofeat ARGS` without the console script."""

from features.cli import entry

entry()
