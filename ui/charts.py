"""Plotly figures for the app (the model card) and a face's ethnicity probabilities as HTML bars.

Pure functions from FaceResult fields, the model card (model.card.ModelCard) and its
metric sections to figures, so they are testable without Streamlit and the
model page stays a short script. One palette for every chart in the app.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from model.calibration import best_mean_power
from model.card import ModelCard
from model.labels import AGE_GROUP_NAMES, ETHNICITIES, ETHNICITY_DISPLAY, GENDERS

ACCENT = "#4F46E5"
ACCENT_LIGHT = "#A5B4FC"
MUTED = "#94A3B8"
WARN = "#DC2626"
GENDER_COLOURS: dict[str, str] = {"male": "#2563EB", "female": "#DB2777"}
ETHNICITY_COLOURS: dict[str, str] = {
    "white": "#4F46E5", "black": "#059669", "asian": "#D97706", "indian": "#DC2626", "other": "#7C3AED",
}
SEQUENTIAL = "Purples"
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), template="plotly_white", font=dict(size=13))


def short_ethnicity(name: str) -> str:
    """Chart label of an ethnicity ("Other" without the long explanation)."""
    return ETHNICITY_DISPLAY.get(name, name).split(" (")[0]


def style_figure(fig: go.Figure, title: str | None = None, height: int | None = None) -> go.Figure:
    fig.update_layout(**_LAYOUT)
    if title:
        fig.update_layout(title=dict(text=title, x=0, xanchor="left", font=dict(size=15)))
    if height:
        fig.update_layout(height=height)
    return fig


# --- one face ---------------------------------------------------------------------------------


def ethnicity_bars_html(probabilities: dict[str, float]) -> str:
    """The five ethnicity probabilities as plain HTML bars, in label order.

    A face card shows these instead of a Plotly figure: a chart per face cost the server a
    figure build and the browser a Plotly render per card, which under six simultaneous
    uploads delayed every card by about a second (``python -m tools.load``).
    """
    rows = []
    for name in (n for n in ETHNICITIES if n in probabilities):
        p = min(max(float(probabilities[name]), 0.0), 1.0)
        label = short_ethnicity(name)
        rows.append(
            f"<div title='{label}: {p:.1%}' style='display:flex;align-items:center;gap:0.5rem;margin:3px 0'>"
            f"<span style='width:4.5rem;font-size:0.9rem'>{label}</span>"
            "<span style='flex:1;height:0.8rem;background:#EEF0F8;border-radius:3px'>"
            f"<span style='display:block;width:{p * 100:.1f}%;height:100%;background:{ETHNICITY_COLOURS[name]};"
            "border-radius:3px'></span></span>"
            f"<span style='width:2.8rem;text-align:right;font-size:0.9rem'>{p:.0%}</span></div>"
        )
    return "<div class='facelens-ethnicity'>" + "".join(rows) + "</div>"


# --- the model card ---------------------------------------------------------------------------


def headline_metrics(card: ModelCard) -> list[tuple[str, str, str]]:
    """(label, value, help) for the test-split headline numbers."""
    test = card.test_metrics or {}
    n = test.get("n", 0)

    def pct(value) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    mae = test.get("age_mae")
    return [
        ("Age MAE", "n/a" if mae is None else f"{mae:.1f} years", "Mean absolute error of the age estimate."),
        ("Age within 5 years", pct(test.get("age_within_5_years")), "Share of test faces whose age is off by at most 5 years."),
        ("Gender accuracy", pct(test.get("gender_accuracy")), "Share of test faces with the labelled gender."),
        ("Ethnicity accuracy", pct(test.get("ethnicity_accuracy")), "Share of test faces with the labelled UTKFace category."),
        ("Test faces", f"{n:,}", "Held-out faces (content-hash split, never used for training or model selection)."),
    ]


def mae_by_age_group(test: dict) -> go.Figure:
    """Age MAE and mean signed error (bias) per true age group."""
    groups = (test.get("age") or {}).get("by_age_group") or {}
    names = [g for g in AGE_GROUP_NAMES if g in groups]
    mae = [groups[g]["mae"] for g in names]
    bias = [groups[g]["bias"] for g in names]
    counts = [groups[g]["n"] for g in names]
    fig = go.Figure()
    fig.add_bar(x=names, y=mae, name="MAE", marker_color=ACCENT, customdata=counts,
                hovertemplate="%{x}: MAE %{y:.1f} years (n=%{customdata})<extra></extra>")
    fig.add_scatter(x=names, y=bias, name="bias (predicted - true)", mode="markers+lines",
                    marker=dict(color=WARN, size=9), line=dict(dash="dot", color=WARN),
                    hovertemplate="%{x}: bias %{y:+.1f} years<extra></extra>")
    fig.add_hline(y=0, line_color=MUTED, line_width=1)
    fig.update_yaxes(title="years")
    fig.update_xaxes(title="true age group")
    fig.update_layout(legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))
    return style_figure(fig, "Age error by age group", 360)


def _group_rows(test: dict) -> list[tuple[str, str, dict]]:
    rows = []
    for name in GENDERS:
        if name in (test.get("by_gender") or {}):
            rows.append(("gender", name.capitalize(), test["by_gender"][name]))
    for name in ETHNICITIES:
        if name in (test.get("by_ethnicity") or {}):
            rows.append(("ethnicity", short_ethnicity(name), test["by_ethnicity"][name]))
    return rows


def mae_by_group(test: dict) -> go.Figure:
    """Age MAE per gender and per ethnicity (true labels)."""
    rows = [r for r in _group_rows(test) if r[2].get("n")]
    fig = go.Figure(go.Bar(
        x=[label for _, label, _ in rows], y=[m["age_mae"] for _, _, m in rows],
        marker_color=[GENDER_COLOURS.get(label.lower(), ACCENT) if kind == "gender" else ACCENT_LIGHT
                      for kind, label, _ in rows],
        customdata=[m["n"] for _, _, m in rows],
        hovertemplate="%{x}: MAE %{y:.1f} years (n=%{customdata})<extra></extra>",
    ))
    fig.update_yaxes(title="age MAE (years)")
    return style_figure(fig, "Age error by gender and ethnicity", 360)


def _accuracy_bars(rows: list[tuple[str, dict]], title: str, x_title: str | None = None) -> go.Figure:
    """Grouped bars of gender and ethnicity accuracy for (label, group metrics) rows."""
    labels = [label for label, _ in rows]
    fig = go.Figure()
    for key, name, colour in (("gender_accuracy", "gender accuracy", ACCENT),
                              ("ethnicity_accuracy", "ethnicity accuracy", ACCENT_LIGHT)):
        fig.add_bar(x=labels, y=[m[key] for _, m in rows], name=name, marker_color=colour,
                    customdata=[m["n"] for _, m in rows],
                    hovertemplate="%{x}: %{y:.1%} (n=%{customdata})<extra>" + name + "</extra>")
    fig.update_yaxes(title="accuracy", tickformat=".0%", range=[0, 1.05])
    if x_title:
        fig.update_xaxes(title=x_title)
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.25))
    return style_figure(fig, title, 380)


def accuracy_by_group(test: dict) -> go.Figure:
    """Gender and ethnicity accuracy per gender and per ethnicity (true labels)."""
    rows = [(label, m) for _, label, m in _group_rows(test) if m.get("n")]
    return _accuracy_bars(rows, "Accuracy by gender and ethnicity")


def accuracy_by_age_group(test: dict) -> go.Figure | None:
    """Gender and ethnicity accuracy per true age group; None for cards without the breakdown."""
    groups = test.get("by_age_group") or {}
    rows = [(name, groups[name]) for name in AGE_GROUP_NAMES if (groups.get(name) or {}).get("n")]
    return _accuracy_bars(rows, "Accuracy by age group", "true age group") if rows else None


def confusion_matrix(report: dict, title: str) -> go.Figure:
    """Row-normalised confusion matrix (true class per row) annotated with counts."""
    labels = report.get("labels") or []
    matrix = np.asarray(report.get("confusion_matrix") or [], float)
    if matrix.size == 0:
        return style_figure(go.Figure(), title)
    totals = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    names = [short_ethnicity(n) if n in ETHNICITIES else n.capitalize() for n in labels]
    text = [[f"{share[i, j]:.0%}<br>({int(matrix[i, j])})" for j in range(len(names))] for i in range(len(names))]
    fig = go.Figure(go.Heatmap(
        z=share, x=names, y=names, text=text, texttemplate="%{text}", colorscale=SEQUENTIAL, zmin=0, zmax=1,
        showscale=False, hovertemplate="true %{y}, predicted %{x}: %{z:.1%}<extra></extra>",
    ))
    fig.update_yaxes(title="true", autorange="reversed")
    fig.update_xaxes(title="predicted", side="bottom")
    return style_figure(fig, title, 300 + 30 * len(names))


def calibration(test: dict) -> go.Figure:
    """Expected calibration error per classifier and the age interval's coverage vs its nominal 80%."""
    age = test.get("age") or {}
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "Calibration error (ECE, lower is better)", "Age interval: share of true ages inside"))
    heads = [("gender", test.get("gender_ece")), ("ethnicity", test.get("ethnicity_ece"))]
    fig.add_bar(x=[h for h, _ in heads], y=[v for _, v in heads], marker_color=ACCENT, row=1, col=1,
                text=[f"{v:.3f}" if v is not None else "n/a" for _, v in heads], textposition="outside",
                hovertemplate="%{x}: ECE %{y:.3f}<extra></extra>", showlegend=False)
    coverage = age.get("interval_coverage")
    fig.add_bar(x=["measured"], y=[coverage], marker_color=ACCENT_LIGHT, row=1, col=2, showlegend=False,
                text=[f"{coverage:.0%}" if coverage is not None else "n/a"], textposition="outside",
                hovertemplate="coverage %{y:.1%}<extra></extra>")
    fig.add_bar(x=["nominal"], y=[0.8], marker_color=MUTED, row=1, col=2, showlegend=False,
                text=["80%"], textposition="outside", hovertemplate="nominal 80%<extra></extra>")
    top = max([v for _, v in heads if v is not None] + [0.05])
    fig.update_yaxes(range=[0, top * 1.3], row=1, col=1)
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%", row=1, col=2)
    return style_figure(fig, None, 340)


def ethnicity_mix(card: ModelCard) -> go.Figure | None:
    """Ethnicity accuracy (the home data's mix of people) and balanced accuracy (an even mix) on
    validation, against how much of the training mix the read-out divides out; the served power
    marked. None for cards exported before the trade-off was measured."""
    fitted = (card.calibration or {}).get("fitted") or {}
    table = fitted.get("ethnicity_by_prior_power") or {}
    if not table:
        return None
    powers = sorted(table, key=float)
    fig = go.Figure()
    for key, name, colour in (("accuracy", "accuracy (home mix)", ACCENT),
                              ("balanced_accuracy", "balanced accuracy (even mix)", ETHNICITY_COLOURS["asian"])):
        fig.add_trace(go.Scatter(x=[float(p) for p in powers], y=[table[p][key] for p in powers], name=name,
                                 mode="lines+markers", line=dict(color=colour),
                                 hovertemplate="power %{x:.1f}: %{y:.1%}<extra>" + name + "</extra>"))
    served = float(fitted.get("ethnicity_prior_power", 0.0))
    fig.add_vline(x=served, line=dict(color=MUTED, dash="dash"), annotation_text="served",
                  annotation_position="top right")
    fig.update_xaxes(title="share of the training mix divided out (power)")
    fig.update_yaxes(title="validation", tickformat=".0%")
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    return style_figure(fig, "Ethnicity: whose mix of people the answer favours", height=340)


def ethnicity_mix_text(card: ModelCard) -> str:
    """What :func:`ethnicity_mix` shows, in words, with the served and the best-balanced read-outs' figures."""
    fitted = (card.calibration or {}).get("fitted") or {}
    table = fitted.get("ethnicity_by_prior_power") or {}
    if not table:
        return ""
    served = str(float(fitted.get("ethnicity_prior_power", 0.0)))
    between = best_mean_power(table)
    text = ("UTKFace, the training data, is mostly White and has few faces of the Other group, and a network trained "
            "on it calls close faces by the commoner group's name. Dividing part of that mix out of the answer "
            "(a larger power) raises the recall of rarer groups (balanced accuracy) and lowers accuracy on "
            "UTKFace's own mix. ")
    if served in table:
        text += (f"Served: power {float(served):.1f}, accuracy {table[served]['accuracy']:.1%}, balanced accuracy "
                 f"{table[served]['balanced_accuracy']:.1%} on validation faces. ")
    if between != served:
        text += (f"The best mean of the two is at power {float(between):.1f} ({table[between]['accuracy']:.1%} / "
                 f"{table[between]['balanced_accuracy']:.1%}); `python -m training.train --recalibrate MODEL "
                 "--ethnicity-mix between` serves it.")
    return text


def per_class_table(report: dict) -> pd.DataFrame:
    """Recall, precision and support per class of one classifier."""
    rows = [
        {"class": short_ethnicity(name) if name in ETHNICITIES else name, "test faces": v.get("n"),
         "recall": v.get("recall"), "precision": v.get("precision")}
        for name, v in (report.get("per_class") or {}).items()
    ]
    return pd.DataFrame(rows, columns=["class", "test faces", "recall", "precision"])


_CONFIG_KEYS: tuple[str, ...] = (
    "input_size", "batch_size", "head_epochs", "epochs", "lr", "fine_tune_from", "schedule", "age_loss_weight",
    "label_smoothing", "class_weight_power", "seed", "augment", "hair_occlusion", "hair_occlusion_min_age",
)


#: How the card's evaluation sets are named on the Model page.
EVALUATION_NAMES: dict[str, str] = {
    "utkface": "UTKFace",
    "celeba": "CelebA (held-out people)",
    "east_asian": "East Asian adults (held-out ages)",
}
DEGRADATION_NAMES: dict[str, str] = {
    "quarter_resolution": "1/4 resolution", "jpeg_20": "JPEG quality 20", "grayscale": "grayscale", "blur": "blur",
}


def evaluations_table(card: ModelCard) -> pd.DataFrame:
    """One row per evaluation the model had (per source and split, plus degraded copies of
    the test photos), so users see side by side how it does off its home data."""
    rows = []

    def row(label: str, split: str, report: dict | None) -> None:
        if not report or not report.get("n"):
            return
        rng = report.get("age_range") or {}
        rows.append({
            "data": label, "split": split, "faces": int(report["n"]),
            "age MAE (years)": report.get("age_mae"), "age bias (years)": report.get("age_bias"),
            "age in labelled range": rng.get("in_range"),
            "gender accuracy": report.get("gender_accuracy"), "ethnicity accuracy": report.get("ethnicity_accuracy"),
            "gender ECE": report.get("gender_ece"),
        })

    for name, entry in (card.evaluations or {}).items():
        label = EVALUATION_NAMES.get(name, name)
        row(label, "validation", entry.get("val"))
        row(label, "test", entry.get("test"))
        for kind, report in (entry.get("test_degraded") or {}).items():
            row(f"{label}, {DEGRADATION_NAMES.get(kind, kind)}", "test", report)
    frame = pd.DataFrame(rows)
    return frame.loc[:, frame.notna().any()] if len(frame) else frame  # drop figures no set has


def set_label(name: str) -> str:
    """A calibration set's key ("utkface" or "utkface, jpeg_20") as the Model page names it."""
    source, _, kind = name.partition(", ")
    label = EVALUATION_NAMES.get(source, source)
    return f"{label}, {DEGRADATION_NAMES.get(kind, kind)}" if kind else label


#: Figures of the uncertainty table: (column title, key in training.calibrate.set_report, number format).
CALIBRATION_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("80% interval covers", "interval_coverage", "percent"),
    ("interval width (years)", "interval_mean_width", "%.1f"),
    ("age bias (years)", "age_bias", "%+.2f"),
    ("gender ECE", "gender_ece", "%.3f"),
    ("ethnicity ECE", "ethnicity_ece", "%.3f"),
)


def calibration_table(card: ModelCard) -> pd.DataFrame:
    """Per validation set, what the read-out calibration changed: interval coverage and width,
    age bias, calibration error (before -> after), and the share of faces flagged as unfamiliar."""
    rows = []
    for name, entry in ((card.calibration or {}).get("validation") or {}).items():
        before, after = entry.get("before") or {}, entry.get("after") or {}
        row = {"data": set_label(name), "faces": after.get("n")}
        for title, key, _ in CALIBRATION_FIGURES:
            row[f"{title}: before"] = before.get(key)
            row[f"{title}: after"] = after.get(key)
        row["flagged unfamiliar"] = after.get("flagged_unfamiliar")
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.loc[:, frame.notna().any()] if len(frame) else frame


def jitter_table(card: ModelCard) -> pd.DataFrame:
    """How much answers move when the same face is re-framed: the card's framing_jitter (the
    aligned crop re-framed) and photo_jitter (the whole photo re-framed, then detected and aligned)."""
    rows = [
        {"data": EVALUATION_NAMES.get(name, name) + label, "faces": r.get("faces"),
         "gender probability spread": r.get("gender_probability_sd"), "age spread (years)": r.get("age_sd_years"),
         "gender call flips": r.get("gender_call_flips"), "age group changes": r.get("age_group_changes")}
        for section, label in ((card.framing_jitter, ""), (card.photo_jitter, ", whole photos"))
        for name, r in (section or {}).items()
    ]
    frame = pd.DataFrame(rows)
    return frame.loc[:, frame.notna().any()] if len(frame) else frame  # cards from before a figure existed


#: The hidden-hair study's views (training.robustness.HAIR_HIDINGS) as the Model page names them.
HAIR_VIEW_LABELS: dict[str, str] = {"plain": "as photographed", "sides": "sides hidden", "top": "top hidden"}


def hidden_hair_table(card: ModelCard) -> pd.DataFrame:
    """Adults' gender accuracy with the hair around the face greyed out (the card's hidden_hair):
    how much the model reads gender from hair, which short hair, a hat or a headscarf hide."""
    rows = []
    for name, r in (card.hidden_hair or {}).items():
        row = {"data": EVALUATION_NAMES.get(name, name) + f" ({r.get('split', '?')}), adults"}
        for who in ("women", "men"):
            row[f"{who}: faces"] = r.get(f"n_{who}")
            for view, label in HAIR_VIEW_LABELS.items():
                row[f"{who}: {label}"] = (r.get(view) or {}).get(who)
        rows.append(row)
    return pd.DataFrame(rows)


def card_details(card: ModelCard) -> pd.DataFrame:
    """The model card's identity, input contract, splits and main training settings as rows."""
    splits = card.splits or {}
    config = (card.training or {}).get("config") or {}
    rows = [
        ("name", card.name), ("created", card.created), ("architecture", card.architecture),
        ("input", ", ".join(f"{k}: {v}" for k, v in (card.input or {}).items())),
        ("flip test-time averaging", card.flip_tta),
        ("train / val / test faces", " / ".join(f"{splits.get(s, 0):,}" for s in ("train", "val", "test"))),
    ]
    rows += [(f"training {key.replace('_', ' ')}", config[key]) for key in _CONFIG_KEYS if key in config]
    return pd.DataFrame([(k, "" if v is None else str(v)) for k, v in rows], columns=["field", "value"])


_CURVES: tuple[tuple[str, str, str], ...] = (
    ("loss", "Total loss", ""),
    ("age_mae", "Age MAE (years)", ""),
    ("gender_acc", "Gender accuracy", ".0%"),
    ("ethnicity_acc", "Ethnicity accuracy", ".0%"),
)


def training_curves(history: list[dict]) -> go.Figure:
    """Train vs validation curves per epoch, one panel per quantity."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t, _ in _CURVES],
                        horizontal_spacing=0.1, vertical_spacing=0.16)
    steps = [row.get("step", i + 1) for i, row in enumerate(history)]
    for i, (key, _, fmt) in enumerate(_CURVES):
        r, c = divmod(i, 2)
        for prefix, name, colour in (("", "train", ACCENT), ("val_", "validation", WARN)):
            values = [row.get(prefix + key) for row in history]
            if all(v is None for v in values):
                continue
            fig.add_scatter(x=steps, y=values, name=name, mode="lines+markers", line=dict(color=colour),
                            marker=dict(size=5), legendgroup=name, showlegend=i == 0, row=r + 1, col=c + 1)
        if fmt:
            fig.update_yaxes(tickformat=fmt, row=r + 1, col=c + 1)
    fig.update_xaxes(title="epoch", row=2)
    fig.update_layout(legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return style_figure(fig, None, 560)
