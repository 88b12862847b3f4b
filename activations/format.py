"""Names and version of the activation-cache file format (the spec is FORMAT.md beside this file).

Every name the writer, the reader and the validator use for a dataset or attribute lives here, so the three can
never drift apart.
"""

from __future__ import annotations

ENCODING_TYPE = "xenofeat.activation-cache"
FORMAT_VERSION = "1.1"  # 1.1 added sharded caches (A_SHARDS, A_SHARD); a 1.0 file is a valid 1.1 file
# Versions this reader can read. A file from a newer major version is refused with a clear message.
READABLE_VERSIONS = ("1.0", "1.1")

# datasets
TOKENS = "tokens"  # (n_seq, L) int32
DOC_IDS = "doc_ids"  # (n_seq, L) int32, -1 on padding
POSITIONS = "positions"  # (n_seq, L) int32, position of the token in its document, -1 on padding
MASK = "mask"  # (n_seq, L) bool, True = excluded from training and scoring (padding, special tokens)
ACTS_GROUP = "acts"  # acts/<hook name>: (n_seq, L, d_model) float16 or float32
VOCAB = "vocab"  # (vocab_size,) variable-length UTF-8 strings

ROW_DATASETS = (TOKENS, DOC_IDS, POSITIONS, MASK)

# root attributes
A_ENCODING_TYPE = "encoding_type"
A_FORMAT_VERSION = "format_version"
A_MODEL_ID = "model_id"
A_MODEL_FINGERPRINT = "model_fingerprint"
A_HOOKS = "hooks"  # JSON list of hook names
A_D_MODEL = "d_model"
A_CONTEXT_SIZE = "context_size"
A_DTYPE = "dtype"
A_CORPUS = "corpus"
A_CORPUS_FINGERPRINT = "corpus_fingerprint"
A_SEQS_WRITTEN = "seqs_written"
A_TOKENS_WRITTEN = "tokens_written"
A_COMPLETE = "complete"
A_XENOFEAT_VERSION = "xenofeat_version"
A_SETTINGS = "settings"  # JSON object: every setting that determines the file's content (compared on resume)
A_SOURCE = "source"  # "model", "import" or "synthetic"
A_SHARDS = "shards"  # index of a sharded cache: JSON {run_id, world_size, files, ranges} (shards.py)
A_SHARD = "shard"  # one shard of a sharded cache: JSON {run_id, rank, world_size, seq_start, seq_stop}

REQUIRED_ATTRS = (
    A_ENCODING_TYPE,
    A_FORMAT_VERSION,
    A_MODEL_ID,
    A_MODEL_FINGERPRINT,
    A_HOOKS,
    A_D_MODEL,
    A_CONTEXT_SIZE,
    A_DTYPE,
    A_CORPUS_FINGERPRINT,
    A_SEQS_WRITTEN,
    A_TOKENS_WRITTEN,
    A_COMPLETE,
    A_XENOFEAT_VERSION,
    A_SETTINGS,
)

DTYPES = ("float16", "float32")


def acts_path(hook: str) -> str:
    """The dataset path of a hook's activations; hook names are TransformerLens names used verbatim."""
    return f"{ACTS_GROUP}/{hook}"
