"""The feature store of a scored run (`RUN/features/`, spec in STORE.md): its schema, its one writer, its one reader.

- `schema`: file names, the format version, every column of features.parquet and every dataset of examples.h5
  (declared by their owners: criteria, labelability, flag, scorer) and STORE.md's generated tables;
- `writer`: `write_store(folder, StoreContent)` and its parts, conforming what is written to the schema;
- `reader`: `FeatureStore.open(run_dir)` and the per-latent records it returns;
- `publish`: how a finished `RUN/features.tmp/` becomes `RUN/features/` (recoverable at every instant), and the run's
  store lock;
- `sets`, `labels`: the person's data beside the store (`sets.json`, `labels.jsonl`), written under that lock.

`xenofeat score` writes four files into `RUN/features.tmp/` and publishes the folder as `RUN/features/` only when all
are complete, so a folder named `features/` is always a whole store.
"""

from features.store.reader import FeatureStore, LatentExamples, TestSet, Windows, check_version
from features.store.schema import (
    DEFINITION_FILE,
    EXAMPLES_FILE,
    FEATURES_DIR,
    FORMAT_VERSION,
    META_KEY,
    READABLE_MAJOR,
    STORE_FORMAT,
    SUMMARY_FILE,
    TABLE_FILE,
    TMP_DIR,
)
from features.store.writer import (
    ExamplesAttrs,
    StoreContent,
    ragged_offsets,
    write_data,
    write_examples,
    write_json,
    write_store,
    write_summary,
    write_table,
)

__all__ = [
    "DEFINITION_FILE",
    "EXAMPLES_FILE",
    "FEATURES_DIR",
    "FORMAT_VERSION",
    "META_KEY",
    "READABLE_MAJOR",
    "STORE_FORMAT",
    "SUMMARY_FILE",
    "TABLE_FILE",
    "TMP_DIR",
    "ExamplesAttrs",
    "FeatureStore",
    "LatentExamples",
    "StoreContent",
    "TestSet",
    "Windows",
    "check_version",
    "ragged_offsets",
    "write_data",
    "write_examples",
    "write_json",
    "write_store",
    "write_summary",
    "write_table",
]
