"""AppTest of the Dataset explorer: the model card's summary by default, a UTKFace
folder (generated, UTKFace-style) when one is given."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.app_support import FakeAnalyzer, chart_figures, open_page, serving, values, write_model_card
from tests.conftest import write_utkface_folder


@pytest.fixture(autouse=True)
def fake_analyzer():
    """The app opens on the Analyze page; serve a fake so no model is loaded here."""
    with serving(FakeAnalyzer()) as analyzer:
        yield analyzer


PAGE = "pages/dataset.py"


@pytest.fixture
def card(monkeypatch, tmp_path):
    monkeypatch.delenv("UTKFACE_DIR", raising=False)
    path = write_model_card(tmp_path / "card.json")
    monkeypatch.setenv("FACELENS_MODEL_CARD", str(path))
    return path


def _page() -> AppTest:
    at = open_page(PAGE)
    assert not at.exception
    return at


def _charts(at: AppTest) -> dict:
    return chart_figures(at)


def test_default_shows_the_shipped_models_training_data(card):
    at = _page()
    assert at.radio(key="explorer_source").value == "card"
    assert "1,000 UTKFace faces behind the shipped model" in " ".join(c.value for c in at.caption)
    charts = _charts(at)
    assert set(charts) == {"chart_age_hist", "chart_gender", "chart_ethnicity", "chart_age_by_ethnicity",
                           "chart_gender_ethnicity"}
    assert sum(values(charts["chart_gender"]["data"][0]["y"])) == 1000
    imbalance = at.dataframe[0].value
    assert list(imbalance["attribute"]) == ["gender", "ethnicity", "age group"]
    assert imbalance["ratio"].iloc[1] == 6.0
    quality = at.dataframe[1].value.set_index("check")["count"]
    assert quality["names that do not parse"] == 3 and quality["duplicate copies removed"] == 4


def test_a_multi_source_card_lists_its_sources(card):
    data = json.loads(card.read_text())
    data["data"]["sources"] = {
        "utkface": {"n": 900, "splits": {"train": 700, "val": 100, "test": 100}, "with_exact_age": 900,
                    "with_gender": 900, "with_ethnicity": 900, "weight": 1.0},
        "celeba": {"n": 300, "splits": {"train": 240, "val": 30, "test": 30}, "with_gender": 300, "identities": 150,
                   "weight": 0.7},
    }
    card.write_text(json.dumps(data))
    at = _page()
    sources = at.dataframe[0].value
    assert list(sources["source"]) == ["utkface", "celeba"]
    assert sources["genders"].tolist() == [900, 300] and sources["exact ages"].tolist() == [900, 0]
    assert sources["train / val / test"].iloc[1] == "240 / 30 / 30"


def test_age_bins_are_adjustable(card):
    at = _page()
    five = values(_charts(at)["chart_age_hist"]["data"][0]["y"])
    at.slider(key="explorer_bins").set_value(10).run()
    ten = values(_charts(at)["chart_age_hist"]["data"][0]["y"])
    faces = sum(json.loads(card.read_text())["data"]["age_counts"].values())
    assert len(ten) < len(five) and sum(ten) == sum(five) == faces


def test_folder_is_indexed_with_box_plots_and_a_sample_grid(card, tmp_path, monkeypatch):
    folder = tmp_path / "utk"
    write_utkface_folder(folder, n=30, seed=3)
    (folder / "not_a_label.jpg").write_bytes((folder.iterdir().__next__()).read_bytes())
    monkeypatch.setenv("UTKFACE_DIR", str(folder))
    at = _page()
    assert at.radio(key="explorer_source").value == "folder"
    assert any("Indexed 30 faces" in c.value for c in at.caption)
    charts = _charts(at)
    assert charts["chart_age_by_ethnicity"]["data"][0]["type"] == "box"
    assert sum(values(charts["chart_gender"]["data"][0]["y"])) == 30
    quality = at.dataframe[1].value.set_index("check")["count"]
    assert quality["image files seen"] == 31 and quality["names that do not parse"] == 1
    grid = at.get("image")[-1]
    assert len(grid.value) == 24

    at.segmented_control(key="explorer_kind").set_value("violin").run()
    assert _charts(at)["chart_age_by_ethnicity"]["data"][0]["type"] == "violin"
    at.multiselect(key="grid_gender").set_value(["female"]).run()
    captions = at.get("image")[-1].captions
    assert captions and all(" female " in c for c in captions)
    at.slider(key="grid_ages").set_value((1, 30)).run()
    ages = [int(c.split(" ")[0]) for c in at.get("image")[-1].captions]
    assert ages and max(ages) <= 30
    assert not at.exception


def test_a_wrong_folder_path_is_a_warning(card):
    at = _page()
    at.radio(key="explorer_source").set_value("folder").run()
    at.text_input(key="explorer_dir").set_value("/nonexistent/utkface").run()
    assert not at.exception
    assert "Not a folder: /nonexistent/utkface" in at.warning[0].value


def test_without_a_card_or_folder_it_says_what_to_do(monkeypatch, tmp_path):
    from model import settings

    monkeypatch.delenv("UTKFACE_DIR", raising=False)
    monkeypatch.setattr(settings, "SHARED_DATA_DIR", tmp_path / "no_shared")  # no ../shared folder either
    monkeypatch.setenv("FACELENS_MODEL_CARD", str(tmp_path / "missing.json"))
    at = open_page(PAGE)
    assert not at.exception
    assert at.radio(key="explorer_source").value == "folder"  # no card to show: it starts on a folder
    assert "Not a folder: (empty)" in at.warning[0].value
    at.radio(key="explorer_source").set_value("card").run()
    assert not at.exception and "No model card" in at.info[0].value


def test_an_unreadable_folder_is_an_error_not_a_crash(card, tmp_path, monkeypatch):
    from training import explorer

    def denied(folder, progress=None):
        raise PermissionError(13, "Permission denied", str(folder))

    folder = tmp_path / "locked"
    folder.mkdir()
    monkeypatch.setattr(explorer, "index_folder", denied)
    monkeypatch.setenv("UTKFACE_DIR", str(folder))
    at = _page()
    assert not at.exception
    assert "Permission denied" in at.error[0].value


def test_a_public_server_does_not_let_visitors_browse_its_folders(card, tmp_path, monkeypatch):
    folder = tmp_path / "utk"
    write_utkface_folder(folder, n=12)
    monkeypatch.setenv("UTKFACE_DIR", str(folder))
    monkeypatch.setenv("FACELENS_PUBLIC", "1")
    at = _page()
    box = at.text_input(key="explorer_dir")
    assert box.disabled
    assert not at.exception and not at.warning
    assert any(str(folder) in c.value for c in at.caption)
