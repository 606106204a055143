"""Render a plan (``greencpn.plan/1`` dict) into ``report.md``, a self-contained ``report.html``
and PNG plots.

The report is built once as a list of neutral blocks (headings, paragraphs, tables, images)
and then written twice, as Markdown and as HTML, so both always say the same thing. The
HTML embeds every plot as a ``data:image/png;base64`` URI and its CSS inline: it opens
offline as one file. A small inline script sets ``data-images-loaded`` on ``<body>`` to the
number of images that decoded (``naturalWidth > 0``); the headless-browser test reads it.

Modules by role: :mod:`~greencpn.report.elements` (blocks, number formatting),
:mod:`~greencpn.report.sections` (the sections and their order), :mod:`~greencpn.report.tables`,
:mod:`~greencpn.report.writers` (Markdown and HTML); this module writes the files and re-exports
the public names.

Usage::

    from greencpn.report.render import render_report
    paths = render_report(plan_dict, Path("out"))   # {"md": ..., "html": ..., "carbon_load.png": ...}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from greencpn.report.elements import (
    BASELINES,
    METRICS,
    SCHEMA_PREFIX,
    Block,
    Image,
    Table,
    _check_plan,
    currency_label,
    fmt_num,
    pct_diff,
)
from greencpn.report.plots import make_plots
from greencpn.report.sections import (
    actuation_warning,
    build_blocks,
    extra_blocks,
    headline,
    signal_blocks,
    solver_blocks,
)
from greencpn.report.tables import (
    comparison_table,
    late_table,
    pool_table,
    site_table,
    tradeoff_table,
)
from greencpn.report.writers import CSS, IMG_SCRIPT, to_html, to_markdown

__all__ = [
    "BASELINES",
    "Block",
    "CSS",
    "IMG_SCRIPT",
    "Image",
    "METRICS",
    "SCHEMA_PREFIX",
    "Table",
    "actuation_warning",
    "build_blocks",
    "comparison_table",
    "currency_label",
    "extra_blocks",
    "fmt_num",
    "headline",
    "late_table",
    "pct_diff",
    "pool_table",
    "render_report",
    "signal_blocks",
    "site_table",
    "solver_blocks",
    "to_html",
    "to_markdown",
    "tradeoff_table",
]


# ----------------------------------------------------------------------------- entry point


def render_report(plan: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNG plots of ``plan`` into ``out_dir``.

    Args:
        plan: a plan dict as in docs/plan-schema.md (``schema = "greencpn.plan/1"``).
        out_dir: folder to write into (created if missing).

    Returns:
        ``{"md": path, "html": path, "<plot>.png": path, ...}``.

    Raises:
        ConfigError: the dict is not a ``greencpn.plan/1`` plan.
    """
    _check_plan(plan)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = make_plots(plan, out_dir)
    blocks = build_blocks(plan, list(pngs))
    md_path = out_dir / "report.md"
    md_path.write_text(to_markdown(blocks), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(
        to_html(blocks, {n: p.read_bytes() for n, p in pngs.items()}), encoding="utf-8"
    )
    return {"md": md_path, "html": html_path, **pngs}
