"""The feature store's schema: its files, its format version, every column of features.parquet and every dataset of
examples.h5, each declared once.

Columns come from their owners: `feature` (the scorer, here), every criterion's declared columns (the registry
`features.criteria.registry`), the labelability columns (`features.labelability.lbl_columns()`, generated from the
describer registry), the `llm` describer's (`features.labelability.llm.COLUMNS`, filled by `xenofeat explain`)
and the flag's (`features.flags.COLUMNS`). The table's column order is: feature, the gating criteria's columns,
labelability, the tags' columns, the llm describer's, the flag's.
Datasets of examples.h5 are declared here (the examples, histograms, nearest latents, the scored grid, the
vocabulary, LBL's test windows and per-decile AUROC) and by the criteria (C2's matches). STORE.md's two tables are
generated from these declarations (`column_table_md`, `dataset_table_md`; `update_store_md` rewrites them, and a
test checks they agree).
"""

from __future__ import annotations

import re
from pathlib import Path

from features.columns import Column, Dataset
from features.criteria.registry import criteria

STORE_FORMAT = "xenofeat.feature-store"
FORMAT_VERSION = "1.2"
"""1.1: every column declared by its owner and stored in its declared dtype (match_cos, max_cos_other and
meta_recon_cos were float32 in 1.0); 1.2: the `llm` describer's columns (`xenofeat explain`). Older 1.x stores are
read as they are (without the llm columns: not explained)."""
READABLE_MAJOR = 1
FEATURES_DIR = "features"
TMP_DIR = "features.tmp"
TABLE_FILE = "features.parquet"
EXAMPLES_FILE = "examples.h5"
SUMMARY_FILE = "summary.json"
DEFINITION_FILE = "definition.toml"
META_KEY = b"xenofeat"  # parquet schema metadata key holding {"format", "format_version"}
STORE_MD = Path(__file__).resolve().parents[1] / "STORE.md"

SCORE_COLUMNS = (Column("feature", "int64", "latent index", "score"),)


_S = "score"
_LBL = "labelability"
DATASETS = (
    Dataset("top/offsets", "(F+1,)", "int64", "ragged offsets of the top examples", _S),
    Dataset("top/tokens", "(n, W)", "int32", "top activations, largest first: window token ids (-1 outside the "
            "sequence or masked)", _S),
    Dataset("top/acts", "(n, W)", "float16", "the latent's activation on each window token", _S),
    Dataset("top/flat_idx", "(n,)", "int64", "flat index of the centre token", _S),
    Dataset("top/doc", "(n,)", "int32", "document of the centre token", _S),
    Dataset("deciles/offsets", "(F+1,)", "int64", "ragged offsets of the decile samples", _S),
    Dataset("deciles/tokens", "(n, W)", "int32", "samples of each decile of the latent's positive activations", _S),
    Dataset("deciles/acts", "(n, W)", "float16", "the latent's activation on each window token", _S),
    Dataset("deciles/flat_idx", "(n,)", "int64", "flat index of the centre token", _S),
    Dataset("deciles/doc", "(n,)", "int32", "document of the centre token", _S),
    Dataset("deciles/decile", "(n,)", "int8", "activation decile of the sample", _S),
    Dataset("lbl_test/offsets", "(F+1,)", "int64", "ragged offsets of LBL's held-out windows", _LBL),
    Dataset("lbl_test/flat_idx", "(n,)", "int64", "centre of each held-out window", _LBL),
    Dataset("lbl_test/label", "(n,)", "bool", "whether the latent fires at the centre", _LBL),
    Dataset("lbl_test/decile", "(n,)", "int8", "activation decile of positives, -1 for negatives", _LBL),
    Dataset("hist/edges", "(F, B+1)", "float32", "equal-width histogram edges on [0, max activation]", _S),
    Dataset("hist/counts", "(F, B)", "int64", "firing tokens per histogram bin", _S),
    Dataset("nearest/index", "(F, K)", "int32", "latents with the largest decoder cosine, itself excluded", _S),
    Dataset("nearest/cos", "(F, K)", "float32", "their decoder cosines, descending", _S),
    Dataset("decile_auroc", "(F, 10)", "float32", "AUROC of the best describer per activation decile (NaN when "
            "not scored)", _LBL),
    Dataset("grid/tokens", "(n_seq, L)", "int32", "token ids of the scored part of the cache", _S),
    Dataset("grid/mask", "(n_seq, L)", "bool", "excluded positions of the scored part (True = excluded)", _S),
    Dataset("grid/doc_ids", "(n_seq, L)", "int32", "document ids of the scored part", _S),
    Dataset("vocab", "(V,)", "utf-8", "the tokenizer's vocabulary", _S),
    Dataset("downstream/<name>", "(F,)", "float32", "per-latent downstream effects where recorded", _S,
            required=False),
)  # fmt: skip
"""The datasets of examples.h5 that the scorer writes (the criteria declare theirs)."""


def lbl_columns() -> tuple[Column, ...]:
    """The labelability columns, as the describer registry declares them (`features.labelability.lbl_columns`)."""
    from features import labelability

    return tuple(labelability.lbl_columns())


def table_columns() -> tuple[Column, ...]:
    """Every column of features.parquet, in stored order."""
    from features.flags import COLUMNS as FLAG_COLUMNS
    from features.labelability.llm import COLUMNS as LLM_COLUMNS

    crits = criteria()
    gating = tuple(col for c in crits if c.gates for col in c.columns)
    tags = tuple(col for c in crits if not c.gates for col in c.columns)
    cols = SCORE_COLUMNS + gating + lbl_columns() + tags + LLM_COLUMNS + FLAG_COLUMNS
    names = [c.name for c in cols]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"columns declared twice: {', '.join(dup)}")
    return cols


def datasets() -> tuple[Dataset, ...]:
    """Every dataset of examples.h5: the scorer's, then each criterion's."""
    return DATASETS + tuple(d for c in criteria() for d in c.datasets)


def declared_dataset(name: str) -> Dataset | None:
    """The declaration a dataset path falls under (`downstream/x` under `downstream/<name>`), or None."""
    for d in datasets():
        if d.name == name or ("<name>" in d.name and re.fullmatch(re.escape(d.name).replace(
                re.escape("<name>"), "[^/]+"), name)):  # fmt: skip
            return d
    return None


# ---- STORE.md --------------------------------------------------------------------------------------------------


def column_table_md() -> str:
    """STORE.md's table of features.parquet columns."""
    rows = ["| column | type | meaning | written by |", "| --- | --- | --- | --- |"]
    rows += [f"| {c.name} | {c.dtype} | {c.meaning} | {c.owner} |" for c in table_columns()]
    return "\n".join(rows)


def dataset_table_md() -> str:
    """STORE.md's table of examples.h5 datasets."""
    rows = ["| dataset | shape | type | meaning | written by |", "| --- | --- | --- | --- | --- |"]
    for d in datasets():
        may = "" if d.required else "MAY: "
        rows.append(f"| {d.name} | {d.shape} | {d.dtype} | {may}{d.meaning} | {d.owner} |")
    return "\n".join(rows)


def _markers(what: str) -> tuple[str, str]:
    return f"<!-- {what}: generated from features/store/schema.py -->", f"<!-- end of {what} -->"


def render_store_md(text: str) -> str:
    """STORE.md's text with its generated tables (between the markers) replaced by the schema's."""
    for what, table in (("columns", column_table_md()), ("datasets", dataset_table_md())):
        begin, end = _markers(what)
        i, j = text.index(begin) + len(begin), text.index(end)
        text = text[:i] + "\n" + table + "\n" + text[j:]
    return text


def update_store_md(path: Path = STORE_MD) -> bool:
    """Regenerate STORE.md's tables in place; True if the file changed."""
    old = path.read_text(encoding="utf-8")
    new = render_store_md(old)
    if new != old:
        path.write_text(new, encoding="utf-8")
    return new != old
