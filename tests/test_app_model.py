"""AppTest of the Model page: held-out metrics, group charts, confusion matrices,
calibration, training curves and the responsible-use note, from a generated card."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.app_support import FakeAnalyzer, chart_figures, open_page, serving, values, write_model_card


@pytest.fixture(autouse=True)
def fake_analyzer():
    """The app opens on the Analyze page; serve a fake so no model is loaded here."""
    with serving(FakeAnalyzer()) as analyzer:
        yield analyzer


PAGE = "pages/model_card.py"


def _page(monkeypatch, card_path) -> AppTest:
    monkeypatch.setenv("FACELENS_MODEL_CARD", str(card_path))
    at = open_page(PAGE)
    assert not at.exception
    return at


def test_model_page_shows_every_section(monkeypatch, tmp_path):
    card = write_model_card(tmp_path / "card.json", n_test=321)
    at = _page(monkeypatch, card)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Age MAE": "5.4 years", "Age within 5 years": "60.0%", "Gender accuracy": "91.0%",
                       "Ethnicity accuracy": "80.0%", "Test faces": "321"}
    charts = chart_figures(at)
    assert set(charts) == {"chart_mae_age_group", "chart_mae_group", "chart_accuracy_group",
                           "chart_accuracy_age_group", "chart_confusion_gender", "chart_confusion_ethnicity", "chart_calibration",
                           "chart_training"}
    assert len(values(charts["chart_mae_group"]["data"][0]["x"])) == 7  # 2 genders + 5 ethnicities
    confusion = charts["chart_confusion_ethnicity"]["data"][0]
    rows = values(confusion["z"])
    assert len(rows) == 5 and all(abs(sum(row) - 1) < 1e-6 for row in rows)  # row-normalised
    headers = [h.value for h in at.header]
    assert headers == ["Where it is more and less accurate", "Off its home data", "Knowing when it is out of its depth",
                       "Confusion matrices", "Calibration", "Training", "Limits and responsible use"]
    evaluations, jitter = at.dataframe[0].value, at.dataframe[1].value  # the first two tables of the page
    uncertainty = at.dataframe[2].value
    assert list(uncertainty["data"]) == ["UTKFace", "UTKFace, JPEG quality 20"]
    assert uncertainty["80% interval covers: before"].tolist() == [0.86, 0.7]
    assert uncertainty["80% interval covers: after"].tolist() == [0.8, 0.79]
    assert uncertainty["flagged unfamiliar"].tolist() == [0.01, 0.2]
    assert "ethnicity ECE: after" not in uncertainty  # no set has it
    assert any("above 1.80 are flagged" in c.value for c in at.caption)
    assert list(evaluations["data"]) == ["UTKFace", "UTKFace", "UTKFace, grayscale", "CelebA (held-out people)"]
    assert list(evaluations["split"]) == ["validation", "test", "test", "validation"]
    assert evaluations["gender accuracy"].tolist()[2:] == [0.88, 0.95]
    assert jitter["age spread (years)"].tolist() == [1.1]
    note = " ".join(m.value for m in at.markdown)
    assert "coarse" in note.lower() and "can be wrong" in note
    assert "Non-commercial" in " ".join(c.value for c in at.caption)


def test_accuracy_by_age_group_follows_the_card_and_is_left_out_of_older_cards(monkeypatch, tmp_path):
    card = write_model_card(tmp_path / "card.json")
    bars = chart_figures(_page(monkeypatch, card))["chart_accuracy_age_group"]["data"]
    assert values(bars[0]["x"])[:3] == ["0-2", "3-9", "10-19"] and values(bars[0]["y"])[:3] == [0.48, 0.7, 0.93]
    data = json.loads(card.read_text())
    del data["test_metrics"]["by_age_group"]  # cards exported before the breakdown
    card.write_text(json.dumps(data))
    at = _page(monkeypatch, card)
    assert "chart_accuracy_age_group" not in chart_figures(at) and "chart_accuracy_group" in chart_figures(at)


def test_training_curves_follow_the_history(monkeypatch, tmp_path):
    card = write_model_card(tmp_path / "card.json")
    data = json.loads(card.read_text())
    data["training"]["history"] = data["training"]["history"][:2]
    card.write_text(json.dumps(data))
    traces = chart_figures(_page(monkeypatch, card))["chart_training"]["data"]
    assert len(traces) == 8  # train + validation for four quantities
    assert all(len(values(t["x"])) == 2 for t in traces)


def test_a_soup_says_what_it_averages(monkeypatch, tmp_path):
    card = write_model_card(tmp_path / "card.json")
    assert not any("model soup" in c.value for c in _page(monkeypatch, card).caption)
    data = json.loads(card.read_text())
    data["training"]["soup"] = {"models": ["start.keras", "run best"], "weights": [0.5, 0.5]}
    card.write_text(json.dumps(data))
    captions = [c.value for c in _page(monkeypatch, card).caption]
    soup = [c for c in captions if "model soup" in c]
    assert len(soup) == 1 and "50% start.keras; 50% run best" in soup[0]
    assert any("minutes for the last training run on" in c for c in captions)  # not the whole chain's time


def test_the_steadiness_table_adds_whole_photo_rows_when_the_card_has_them(monkeypatch, tmp_path):
    card = write_model_card(tmp_path / "card.json")
    data = json.loads(card.read_text())
    data["photo_jitter"] = {"utkface": {"faces": 90, "views": 8, "gender_probability_sd": 0.011, "age_sd_years": 0.63,
                                        "gender_call_flips": 0.03, "age_group_changes": 0.19, "photos": 95}}
    card.write_text(json.dumps(data))
    jitter = _page(monkeypatch, card).dataframe[1].value
    assert list(jitter["data"]) == ["UTKFace", "UTKFace, whole photos"]
    assert jitter["age spread (years)"].tolist() == [1.1, 0.63] and jitter["faces"].tolist() == [100, 90]


def test_the_hidden_hair_table_shows_adults_gender_with_the_hair_greyed_when_the_card_has_it(monkeypatch, tmp_path):
    card = write_model_card(tmp_path / "card.json")
    def hair_tables(at):
        return [d.value for d in at.dataframe if "women: sides hidden" in d.value.columns]

    assert not hair_tables(_page(monkeypatch, card))
    data = json.loads(card.read_text())
    data["hidden_hair"] = {"utkface": {"n_women": 731, "n_men": 860, "split": "test",
                                       "plain": {"women": 0.955, "men": 0.98}, "sides": {"women": 0.878, "men": 0.987},
                                       "top": {"women": 0.927, "men": 0.978}}}
    card.write_text(json.dumps(data))
    at = _page(monkeypatch, card)
    (hair,) = hair_tables(at)
    assert hair["data"].tolist() == ["UTKFace (test), adults"]
    assert hair["women: sides hidden"].tolist() == [0.878] and hair["men: faces"].tolist() == [860]
    assert any("headscarf" in c.value for c in at.caption)


def test_the_ethnicity_mix_trade_off_is_shown_when_the_card_measured_it(monkeypatch, tmp_path):
    card = write_model_card(tmp_path / "card.json")
    data = json.loads(card.read_text())
    table = {str(p): {"accuracy": a, "balanced_accuracy": b, "score": (a + b) / 2}
             for p, a, b in ((0.0, 0.85, 0.78), (0.5, 0.84, 0.81), (1.0, 0.80, 0.80))}
    data["calibration"]["fitted"].update(ethnicity_by_prior_power=table, ethnicity_prior_power=0.0)
    card.write_text(json.dumps(data))
    at = _page(monkeypatch, card)
    traces = chart_figures(at)["chart_ethnicity_mix"]["data"]
    assert [t["name"] for t in traces] == ["accuracy (home mix)", "balanced accuracy (even mix)"]
    assert values(traces[1]["y"]) == [0.78, 0.81, 0.80]
    text = " ".join(c.value for c in at.caption)
    assert "Served: power 0.0, accuracy 85.0%, balanced accuracy 78.0%" in text
    assert "best mean of the two is at power 0.5 (84.0% / 81.0%)" in text and "--ethnicity-mix between" in text
    data["calibration"]["fitted"]["ethnicity_prior_power"] = 0.5  # serving the best mean: nothing to suggest
    card.write_text(json.dumps(data))
    assert not any("--ethnicity-mix" in c.value for c in _page(monkeypatch, card).caption)


def test_a_card_written_for_another_model_file_is_flagged(monkeypatch, tmp_path):
    from model.card import file_sha256

    model = tmp_path / "served.keras"
    model.write_bytes(b"the served weights")
    monkeypatch.setenv("FACELENS_MODEL", str(model))
    card = write_model_card(tmp_path / "card.json")
    assert not _page(monkeypatch, card).warning  # a card without the hash cannot tell: no warning
    data = json.loads(card.read_text())
    for sha, flagged in ((file_sha256(model), False), ("0" * 64, True)):
        card.write_text(json.dumps({**data, "model_sha256": sha}))
        warnings = [w.value for w in _page(monkeypatch, card).warning]
        assert bool(warnings) == flagged
    assert "written for another model file" in warnings[0] and str(model) in warnings[0]


def test_the_model_files_hash_is_remembered_until_the_file_is_written_again(tmp_path, monkeypatch):
    import builtins
    import os

    from model.card import file_sha256

    model = tmp_path / "served.keras"
    model.write_bytes(b"first weights")
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    first = file_sha256(model)
    assert file_sha256(model) == first and len(opened) == 1  # a rerun of the Model page reads nothing
    model.write_bytes(b"other weights")  # the same size: only the modification time tells
    os.utime(model, ns=(0, model.stat().st_mtime_ns + 1))  # a new export, even within one clock tick
    assert file_sha256(model) != first and len(opened) == 2


def test_missing_card_is_a_warning_not_a_crash(monkeypatch, tmp_path):
    at = _page(monkeypatch, tmp_path / "absent.json")
    assert "No model card" in at.warning[0].value
    assert not at.metric


def test_card_without_metrics_still_renders(monkeypatch, tmp_path):
    (tmp_path / "bare.json").write_text(json.dumps({"name": "bare"}))
    at = _page(monkeypatch, tmp_path / "bare.json")
    assert {m.label: m.value for m in at.metric}["Age MAE"] == "n/a"
