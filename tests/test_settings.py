from pathlib import Path

from model import settings


def test_paths_are_anchored_at_the_project_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert settings.PROJECT_ROOT == Path(__file__).resolve().parent.parent
    assert settings.DEFAULT_MODEL_PATH.parent == settings.PROJECT_ROOT / "model"
    assert settings.DEFAULT_MODEL_PATH.suffix == ".keras"


def test_environment_overrides(tmp_path, monkeypatch):
    data = tmp_path / "faces"
    data.mkdir()
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"x")
    monkeypatch.setenv("UTKFACE_DIR", str(data))
    monkeypatch.setenv("IMAGENET_WEIGHTS", str(weights))
    monkeypatch.setenv("FACELENS_MODEL", str(tmp_path / "m.keras"))
    monkeypatch.setenv("FACELENS_CACHE", str(tmp_path / "cache"))
    assert settings.utkface_dir() == data
    assert settings.imagenet_weights_path() == weights
    assert settings.model_path() == tmp_path / "m.keras"
    assert settings.cache_dir() == tmp_path / "cache"


def test_the_card_follows_the_served_model(tmp_path, monkeypatch):
    monkeypatch.delenv("FACELENS_MODEL", raising=False)
    monkeypatch.delenv("FACELENS_MODEL_CARD", raising=False)
    assert settings.model_card_path() == settings.DEFAULT_MODEL_CARD_PATH
    monkeypatch.setenv("FACELENS_MODEL", str(tmp_path / "run" / "m.keras"))
    assert settings.model_card_path() == tmp_path / "run" / "model_card.json"  # where export wrote it
    monkeypatch.setenv("FACELENS_MODEL_CARD", str(tmp_path / "card.json"))
    assert settings.model_card_path() == tmp_path / "card.json"


def test_missing_data_paths_give_none(tmp_path, monkeypatch):
    monkeypatch.setenv("UTKFACE_DIR", str(tmp_path / "nope"))
    monkeypatch.setenv("IMAGENET_WEIGHTS", str(tmp_path / "nope.h5"))
    assert settings.utkface_dir() is None
    assert settings.imagenet_weights_path() is None


def test_blank_environment_value_falls_back_to_default(monkeypatch):
    monkeypatch.setenv("FACELENS_MODEL", "  ")
    assert settings.model_path() == settings.DEFAULT_MODEL_PATH


def test_limits_are_sane():
    assert 64 <= settings.INPUT_SIZE <= 224
    assert settings.MAX_IMAGE_PIXELS >= 4000 * 3000
    assert 0.8 < settings.DETECTION_CONFIDENCE < 1.0
    assert settings.MAX_FACES >= 2 and settings.MIN_FACE_SIZE > 0
