"""Builders shared by the tests and benchmarks (not tests themselves).

- `common`: the repository root, the fixtures folder, a small prose corpus, `run_cli` and `error_line`;
- `scored_run`: the session-wide scored synthetic run (registered as a fixture by tests/conftest.py);
- `training`: planted-feature caches for the training tests;
- `demo_store`: a random feature store written through the store's one writer (viewer tests and benchmark);
- `served`: `xenofeat view` in a subprocess and a chromium page on it (browser tests).

Test modules import these as `tests.helpers.X`; no test imports another test module.
"""
