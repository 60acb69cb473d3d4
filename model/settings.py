"""Settings in one place: file locations (overridable by environment) and limits.

Paths derive from this file's location, so everything works from any working
directory. Nothing here touches the disk at import time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PROJECT_ROOT: Path = Path(__file__).resolve().parent.parent
MODEL_DIR: Path = PROJECT_ROOT / "model"
ASSETS_DIR: Path = PROJECT_ROOT / "assets"
SHARED_DATA_DIR: Path = PROJECT_ROOT.parent / "shared" / "data"

#: Side length of the square face crop the network sees.
INPUT_SIZE: int = 160
#: Side of the UTKFace "aligned & cropped" images the model was trained on.
UTKFACE_CROP_SIZE: int = 200

#: The shipped model and its card (metrics, data summary, history).
DEFAULT_MODEL_PATH: Path = MODEL_DIR / "facelens_mobilenetv2_160.keras"
DEFAULT_MODEL_CARD_PATH: Path = MODEL_DIR / "model_card.json"

# Image intake limits: refuse decompression bombs, downscale big photos before detection.
MAX_UPLOAD_MB: int = 25
MAX_IMAGE_PIXELS: int = 60_000_000
MAX_IMAGE_SIDE: int = 20_000
DETECTION_MAX_SIDE: int = 1280
MIN_FACE_SIZE: int = 24
MAX_FACES: int = 20
DETECTION_CONFIDENCE: float = 0.90
#: When no face is found, detect once more with the borders replicated by this share of the
#: longer side (a face filling the image gives MTCNN no margin): see model.face_detect.
DETECTION_PAD_RETRY: float = 0.15
#: Below this probability the gender call is shown as "Unsure" rather than as a verdict:
#: the probabilities are calibrated (the model card's gender ECE), so a call under 65% is
#: right little more often than a coin flip, and a big bold "Male" at 55% would overstate it.
GENDER_UNSURE_BELOW: float = 0.65
#: A face card notes that gender is hard to read at the face's estimated age when the model
#: card's held-out gender accuracy for that age group is below this (babies and toddlers:
#: near a coin flip even when the probability looks sure).
GENDER_NOTE_BELOW: float = 0.85


def _path_from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else default


def model_path() -> Path:
    """The model file to serve: ``FACELENS_MODEL`` or the shipped one."""
    return _path_from_env("FACELENS_MODEL", DEFAULT_MODEL_PATH)


def model_card_path() -> Path:
    """The served model's card: ``FACELENS_MODEL_CARD``, else ``model_card.json`` beside the
    model file (where export writes it; the shipped card for the shipped model). Not the
    shipped card for any model: a retrained model served with ``FACELENS_MODEL`` must not
    show the shipped model's figures as its own."""
    return _path_from_env("FACELENS_MODEL_CARD", model_path().with_name(DEFAULT_MODEL_CARD_PATH.name))


def utkface_dir() -> Path | None:
    """A local UTKFace folder: ``UTKFACE_DIR``, else ``../shared/data/utkface/UTKFace``
    when it exists, else None (the app and tests then run without real data)."""
    path = _path_from_env("UTKFACE_DIR", SHARED_DATA_DIR / "utkface" / "UTKFace")
    return path if path.is_dir() else None


def utkface_dir_from_env() -> bool:
    """True when ``UTKFACE_DIR`` itself names an existing folder (not the ../shared default)."""
    value = os.environ.get("UTKFACE_DIR", "").strip()
    return bool(value) and Path(value).expanduser().is_dir()


def imagenet_weights_path() -> Path | None:
    """Local ImageNet weights for the MobileNetV2 backbone, or None when absent."""
    path = _path_from_env(
        "IMAGENET_WEIGHTS",
        SHARED_DATA_DIR / "weights" / "mobilenet_v2_1.0_imagenet_notop.weights.h5",
    )
    return path if path.is_file() else None


def _env_switch(name: str) -> bool | None:
    """An on/off environment variable: True for 1/true/yes/on, False for 0/false/no/off,
    None when unset or anything else."""
    value = os.environ.get(name, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    return None


def public_mode() -> bool:
    """``FACELENS_PUBLIC=1`` for a deployment open to strangers: visitors may not point
    the dataset explorer at folders of the server (only ``UTKFACE_DIR`` is shown)."""
    return _env_switch("FACELENS_PUBLIC") is True


def flip_tta_override() -> bool | None:
    """``FACELENS_FLIP_TTA=0`` or ``1`` overrides the model card's flip-averaging choice.

    Flip averaging runs the network twice per face (``python -m model.bench`` times both)
    for a slightly better validation score; a deployment that wants speed can switch it
    off. Unset (or anything else): the card decides.
    """
    return _env_switch("FACELENS_FLIP_TTA")


def inference_engine() -> str:
    """``FACELENS_ENGINE``: "litert" (default: the network compiled for LiteRT, several
    times faster on CPU) or "keras" (the reference path, e.g. to compare the two)."""
    return os.environ.get("FACELENS_ENGINE", "").strip().lower() or "litert"


def cache_dir() -> Path:
    """Where training keeps decoded-image caches and the app its LiteRT models (``FACELENS_CACHE``)."""
    return _path_from_env("FACELENS_CACHE", Path.home() / ".cache" / "facelens")


def ice_servers() -> list[dict]:
    """WebRTC ICE servers for the Live page from ``FACELENS_ICE_SERVERS``; none by default.

    The value is JSON: a list of RTCIceServer objects (one object alone is accepted), e.g.
    ``[{"urls": "stun:stun.example.org:3478"}, {"urls": "turn:turn.example.org:3478",
    "username": "user", "credential": "secret"}]``. With none, browser and server only
    offer their own addresses: a browser on the same machine or network connects with no
    STUN lookup and no internet; a server behind NAT needs STUN, often TURN too.
    Raises ValueError with a readable message for a malformed value.
    """
    raw = os.environ.get("FACELENS_ICE_SERVERS", "").strip()
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"FACELENS_ICE_SERVERS is not valid JSON ({exc})") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, dict) and s.get("urls") for s in value):
        raise ValueError('FACELENS_ICE_SERVERS must be a JSON list of objects with "urls" '
                         '(and "username"/"credential" for TURN)')
    return value
