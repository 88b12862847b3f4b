"""The `csv` and `parquet` exports: the selected rows of the feature table, all columns, in latent order."""

from __future__ import annotations

from pathlib import Path

from features.exporters.context import ExportContext

CSV_FILE = "features.csv"
PARQUET_FILE = "features.parquet"


def write_csv(ctx: ExportContext, folder: Path) -> None:
    ctx.rows.to_csv(folder / CSV_FILE, index=False)


def write_parquet(ctx: ExportContext, folder: Path) -> None:  # noqa: ANN401
    ctx.rows.to_parquet(folder / PARQUET_FILE, index=False)
