"""Figures and display tables of the Dataset explorer, from a dataset summary (the model
card's ``data``, or training.explorer.index_folder of a UTKFace folder) or per-face rows.

Pure functions from plain dicts and frames to Plotly figures and pandas tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from model.labels import AGE_GROUP_NAMES, ETHNICITIES, GENDERS
from ui.charts import ACCENT, ETHNICITY_COLOURS, GENDER_COLOURS, SEQUENTIAL, short_ethnicity, style_figure


def age_histogram(age_counts: dict[str, int], bin_width: int = 5) -> go.Figure:
    """Faces per age bin of ``bin_width`` years, from per-year counts."""
    bin_width = max(1, int(bin_width))
    ages = np.array([int(a) for a in age_counts], int)
    counts = np.array([int(c) for c in age_counts.values()], int)
    if ages.size == 0:
        return style_figure(go.Figure(), "Age distribution")
    starts = np.arange(ages.max() // bin_width + 1) * bin_width
    binned = np.bincount(ages // bin_width, weights=counts, minlength=len(starts))
    labels = [f"{s}" if bin_width == 1 else f"{s}-{s + bin_width - 1}" for s in starts]
    fig = go.Figure(go.Bar(x=starts + bin_width / 2, y=binned, width=bin_width * 0.95, marker_color=ACCENT,
                           customdata=labels, hovertemplate="age %{customdata}: %{y:,} faces<extra></extra>"))
    fig.update_xaxes(title="age (years)")
    fig.update_yaxes(title="faces")
    return style_figure(fig, "Age distribution", 360)


def category_bar(counts: dict[str, int], attribute: str) -> go.Figure:
    """Faces per gender or per ethnicity, with shares."""
    colours = GENDER_COLOURS if attribute == "gender" else ETHNICITY_COLOURS
    names = list(counts)
    values = [int(counts[n]) for n in names]
    total = max(sum(values), 1)
    labels = [short_ethnicity(n) if attribute == "ethnicity" else n.capitalize() for n in names]
    fig = go.Figure(go.Bar(
        x=labels, y=values, marker_color=[colours.get(n, ACCENT) for n in names],
        text=[f"{v / total:.0%}" for v in values], textposition="outside", cliponaxis=False,
        hovertemplate="%{x}: %{y:,} faces<extra></extra>",
    ))
    fig.update_yaxes(title="faces")
    return style_figure(fig, f"Faces by {attribute}", 330)


def age_by_ethnicity(frame: pd.DataFrame, kind: str = "box") -> go.Figure:
    """Age distribution per ethnicity as box plots or violins (needs per-face rows)."""
    fig = go.Figure()
    for name in ETHNICITIES:
        ages = frame.loc[frame["ethnicity"] == name, "age"]
        if ages.empty:
            continue
        trace = go.Violin(y=ages, name=short_ethnicity(name), box_visible=True, meanline_visible=True,
                          line_color=ETHNICITY_COLOURS[name], points=False) if kind == "violin" else \
            go.Box(y=ages, name=short_ethnicity(name), marker_color=ETHNICITY_COLOURS[name], boxmean=True)
        fig.add_trace(trace)
    fig.update_yaxes(title="age (years)")
    fig.update_layout(showlegend=False)
    return style_figure(fig, "Age by ethnicity", 380)


def age_group_by_ethnicity(summary: dict) -> go.Figure:
    """Stacked share of age groups within each ethnicity (from summary counts)."""
    table = summary.get("age_group_by_ethnicity") or {}
    fig = go.Figure()
    totals = {e: sum(table.get(g, {}).get(e, 0) for g in AGE_GROUP_NAMES) for e in ETHNICITIES}
    colours = _sequential(len(AGE_GROUP_NAMES))
    for group, colour in zip(AGE_GROUP_NAMES, colours):
        counts = [table.get(group, {}).get(e, 0) for e in ETHNICITIES]
        shares = [c / totals[e] if totals[e] else 0 for c, e in zip(counts, ETHNICITIES)]
        fig.add_bar(x=[short_ethnicity(e) for e in ETHNICITIES], y=shares, name=group, marker_color=colour,
                    customdata=counts, hovertemplate=group + ": %{y:.0%} (%{customdata:,} faces)<extra></extra>")
    fig.update_layout(barmode="stack", legend=dict(title="age group", traceorder="normal"))
    fig.update_yaxes(tickformat=".0%", title="share of faces")
    return style_figure(fig, "Age groups within each ethnicity", 380)


def _sequential(n: int) -> list[str]:
    from plotly.colors import sample_colorscale

    return sample_colorscale(SEQUENTIAL, [0.25 + 0.75 * i / max(n - 1, 1) for i in range(n)])


def gender_ethnicity_heatmap(summary: dict) -> go.Figure:
    """Faces per gender x ethnicity cell."""
    table = summary.get("gender_by_ethnicity") or {}
    z = [[int(table.get(g, {}).get(e, 0)) for e in ETHNICITIES] for g in GENDERS]
    fig = go.Figure(go.Heatmap(
        z=z, x=[short_ethnicity(e) for e in ETHNICITIES], y=[g.capitalize() for g in GENDERS],
        colorscale=SEQUENTIAL, text=[[f"{v:,}" for v in row] for row in z], texttemplate="%{text}",
        hovertemplate="%{y}, %{x}: %{z:,} faces<extra></extra>", showscale=False,
    ))
    return style_figure(fig, "Gender x ethnicity", 330)


def imbalance_table(summary: dict) -> pd.DataFrame:
    """Per attribute: largest / smallest class and their ratio (1.0 = balanced)."""
    rows = []
    for attribute, key in (("gender", "gender_counts"), ("ethnicity", "ethnicity_counts"),
                           ("age group", "age_group_counts")):
        counts = {k: int(v) for k, v in (summary.get(key) or {}).items() if int(v) > 0}
        if not counts:
            continue
        big, small = max(counts, key=counts.get), min(counts, key=counts.get)
        rows.append({
            "attribute": attribute,
            "largest class": f"{_display(attribute, big)} ({counts[big]:,})",
            "smallest class": f"{_display(attribute, small)} ({counts[small]:,})",
            "ratio": round(counts[big] / counts[small], 2),
        })
    return pd.DataFrame(rows, columns=["attribute", "largest class", "smallest class", "ratio"])


def _display(attribute: str, name: str) -> str:
    return short_ethnicity(name) if attribute == "ethnicity" else name


_QUALITY_LABELS: tuple[tuple[str, str], ...] = (
    ("files_seen", "image files seen"),
    ("kept", "faces kept"),
    ("unparseable_names", "names that do not parse"),
    ("unreadable_files", "unreadable files"),
    ("duplicate_groups", "groups of identical images"),
    ("duplicates_removed", "duplicate copies removed"),
    ("conflicting_label_groups", "identical images with conflicting labels"),
    ("conflicting_removed", "images dropped for conflicting labels"),
)


def quality_table(quality: dict) -> pd.DataFrame:
    """Data-quality counts with plain-language names."""
    rows = [{"check": label, "count": int(quality[key])} for key, label in _QUALITY_LABELS if key in quality]
    return pd.DataFrame(rows, columns=["check", "count"])


def sources_table(sources: dict) -> pd.DataFrame:
    """One row per training source of a multi-source model: faces, labels it carries, weight."""
    rows = []
    for name, info in sources.items():
        splits = info.get("splits") or {}
        rows.append({
            "source": name,
            "aligned faces": info.get("n", 0),
            "train / val / test": " / ".join(f"{splits.get(s, 0):,}" for s in ("train", "val", "test")),
            "exact ages": info.get("with_exact_age", 0),
            "age ranges": info.get("with_age_range", 0),
            "genders": info.get("with_gender", 0),
            "ethnicities": info.get("with_ethnicity", 0),
            "people": info.get("identities", 0) or "",
            "sampling weight": info.get("weight", 1.0),
        })
    return pd.DataFrame(rows)
