"""Subcommands of this package (placeholder until its commands land)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `xenofeat` parser."""
