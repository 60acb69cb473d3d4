"""Helpers for the app tests: a small fake analyzer on the contract's dataclasses,
photo bytes, and a generated model card.

The fake decodes photos with the real model.image_io (so bad files fail exactly as
in the app), "finds" a configurable number of faces in any photo that is not a flat
colour, and returns smooth synthetic heat maps. No TensorFlow, so UI tests are fast.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from model.card import ModelCard
from model.heatmap_draw import OVERLAY_ALPHA
from model.labels import AGE_GROUP_NAMES, ETHNICITIES, GENDERS, age_group
from model.results import DEFAULT_CAM_METHOD

APP_PATH = str(Path(__file__).resolve().parent.parent / "app.py")
#: Generous per-run timeout for AppTest (the first run imports Plotly and pandas).
RUN_TIMEOUT = 120


def image_bytes(image: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def portrait_bytes(fmt: str = "PNG") -> bytes:
    """skimage's astronaut portrait (the app's sample photo) encoded as ``fmt``."""
    from skimage import data

    return image_bytes(data.astronaut(), fmt)


def blank_bytes(size: int = 200) -> bytes:
    """A flat grey photo: the fake (and MTCNN) find no face in it."""
    return image_bytes(np.full((size, size, 3), 128, np.uint8))


class FakeAnalyzer:
    """Implements the FaceAnalyzer interface the app uses, deterministically."""

    #: The fake's crops are 128 px, not the shipped model's size: pages must ask the analyzer.
    input_size = 128

    def __init__(self, faces: int = 1, unfamiliar: bool = False):
        self.faces = faces
        self.unfamiliar = unfamiliar  # every face far from the training data (unfamiliarity 2.5)
        self.explain_calls: list[tuple] = []  # (face index, head, target, method, alpha) per heat map
        self.explain_batches: list[tuple[str, ...]] = []  # the heads of each explain_heads call

    def load_photo(self, image) -> np.ndarray:
        from model.image_io import load_image

        return load_image(image)

    def analyze(self, image, *, largest: int | None = None) -> list:
        return self.analyze_photo(image, largest=largest).faces

    def analyze_photo(self, image, *, largest: int | None = None):
        """Faces in the first frame; like the real analyzer, ``largest=N`` keeps N of a crowd."""
        from model.face_detect import TooManyFacesError
        from model.image_io import read_image
        from model.results import PhotoResult
        from model.settings import MAX_FACES

        decoded = read_image(image)
        photo = decoded.pixels
        if float(photo.std()) < 1.0:
            return PhotoResult(photo=photo, faces=[], faces_found=0, frames=decoded.frames)
        if largest is None and self.faces > MAX_FACES:
            raise TooManyFacesError(self.faces, MAX_FACES)
        faces = self._faces(photo)
        return PhotoResult(photo=photo, faces=faces[:largest] if largest else faces, faces_found=len(faces),
                           frames=decoded.frames)

    def _faces(self, photo: np.ndarray) -> list:
        from model.results import FaceResult

        h, w = photo.shape[:2]
        side = max(8, min(h, w // max(self.faces, 1)) // 2)
        results = []
        for i in range(self.faces):
            x = int((i + 0.25) * w / self.faces)
            y = h // 4
            eth = np.full(len(ETHNICITIES), 0.05)
            eth[i % len(ETHNICITIES)] = 0.8
            eth_probs = {name: float(p) for name, p in zip(ETHNICITIES, eth)}
            age = 20.0 + 7 * i
            gender = GENDERS[i % 2]
            affine = np.array([[128 / side, 0, -x * 128 / side], [0, 128 / side, -y * 128 / side]], np.float64)
            results.append(FaceResult(
                index=i, box=(x, y, side, side), detection_confidence=0.99,
                landmarks={k: (float(x + side / 2), float(y + side / 2)) for k in
                           ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")},
                age=age, age_interval=(age - 5, age + 6), age_group=age_group(age), gender=gender,
                gender_probability=0.9, ethnicity=ETHNICITIES[i % len(ETHNICITIES)],
                ethnicity_probabilities=eth_probs,
                gender_probabilities={g: (0.9 if g == gender else 0.1) for g in GENDERS},
                face_input=np.zeros((128, 128, 3), np.uint8), crop_affine=affine,
                unfamiliarity=2.5 if self.unfamiliar else 0.9, unfamiliar=self.unfamiliar,
            ))
        return results

    def explain(self, image, face, head, target=None, method=DEFAULT_CAM_METHOD, alpha=OVERLAY_ALPHA):
        return self.explain_heads(image, face, [(head, target)], method=method, alpha=alpha)[head]

    def explain_heads(self, image, face, requests, method=DEFAULT_CAM_METHOD, alpha=OVERLAY_ALPHA) -> dict:
        """Like the real analyzer: one call (``explain_batches``) for several heads of a face."""
        self.explain_batches.append(tuple(head for head, _ in requests))
        photo = self.load_photo(image)
        return {head: self._explanation(photo, face, head, target, method, alpha) for head, target in requests}

    def _explanation(self, photo, face, head, target, method, alpha):
        from model.results import Explanation

        self.explain_calls.append((face.index, head, target, method, alpha))
        h, w = photo.shape[:2]
        x, y, bw, bh = face.box
        yy, xx = np.mgrid[0:h, 0:w]
        heat = np.exp(-(((xx - x - bw / 2) / bw) ** 2 + ((yy - y - bh / 2) / bh) ** 2) * 3).astype(np.float32)
        red = np.zeros_like(photo)
        red[..., 0] = 255
        blend = (1 - alpha * heat[..., None]) * photo + alpha * heat[..., None] * red
        names = {"gender": GENDERS, "ethnicity": ETHNICITIES}
        target_name = names[head][target] if target is not None and head in names else "predicted"
        return Explanation(head=head, target=target, target_name=target_name, method=method,
                           crop_heatmap=np.zeros((128, 128), np.float32), photo_heatmap=heat,
                           overlay=np.clip(blend, 0, 255).astype(np.uint8))


def write_model_card(path: Path, n_test: int = 200) -> Path:
    """A small model card with every key training/export.py writes (values made up)."""
    rng = np.random.default_rng(0)

    def classifier(names: tuple[str, ...]) -> dict:
        matrix = rng.integers(0, 10, (len(names), len(names))) + np.eye(len(names), dtype=int) * 40
        return {
            "accuracy": 0.8, "balanced_accuracy": 0.75, "ece": 0.04,
            "per_class": {n: {"n": int(matrix[i].sum()), "recall": 0.8, "precision": 0.78}
                          for i, n in enumerate(names)},
            "confusion_matrix": matrix.tolist(), "labels": list(names),
        }

    def group(n: int) -> dict:
        return {"n": n, "age_mae": 5.5, "gender_accuracy": 0.9, "ethnicity_accuracy": 0.8}

    test = {
        "n": n_test, "age_mae": 5.4, "gender_accuracy": 0.91, "ethnicity_accuracy": 0.8,
        "age_within_5_years": 0.6, "gender_ece": 0.03, "ethnicity_ece": 0.05,
        "age": {"mae": 5.4, "median_absolute_error": 4.0, "within_5_years": 0.6, "within_10_years": 0.85,
                "by_age_group": {g: {"n": 20, "mae": 3.0 + i, "bias": i - 4.0} for i, g in enumerate(AGE_GROUP_NAMES)},
                "interval_coverage": 0.78, "interval_mean_width": 14.0},
        "gender": classifier(GENDERS), "ethnicity": classifier(ETHNICITIES),
        "by_gender": {g: group(100) for g in GENDERS}, "by_ethnicity": {e: group(40) for e in ETHNICITIES},
        "by_age_group": {g: {**group(40), "gender_accuracy": {"0-2": 0.48, "3-9": 0.7}.get(g, 0.93)}
                         for g in AGE_GROUP_NAMES},
        "undecodable": 0, "flip_tta": True,
    }
    data = {
        "n": 1000, "age_counts": {str(a): int(5 + (a % 7)) for a in range(1, 100)},
        "age_group_counts": {g: 100 + 10 * i for i, g in enumerate(AGE_GROUP_NAMES)},
        "gender_counts": {"male": 520, "female": 480},
        "ethnicity_counts": {"white": 420, "black": 190, "asian": 150, "indian": 170, "other": 70},
        "gender_by_ethnicity": {g: {e: 50 for e in ETHNICITIES} for g in GENDERS},
        "age_group_by_ethnicity": {g: {e: 10 for e in ETHNICITIES} for g in AGE_GROUP_NAMES},
        "imbalance": {"gender": 1.083, "ethnicity": 6.0, "age_group": 1.8},
        "source": "generated", "quality": {
            "files_seen": 1010, "kept": 1000, "unparseable_names": 3, "unparseable_examples": ["x.jpg"],
            "unreadable_files": 1, "duplicate_groups": 4, "duplicates_removed": 4,
            "conflicting_label_groups": 1, "conflicting_removed": 2},
        "splits": {"train": 800, "val": 100, "test": 100},
    }
    history = [{"step": i + 1, "epoch": float(i), "loss": 5.0 - i, "val_loss": 5.2 - i, "age_mae": 9.0 - i,
                "val_age_mae": 9.5 - i, "gender_acc": 0.7 + 0.05 * i, "val_gender_acc": 0.68 + 0.05 * i,
                "ethnicity_acc": 0.5 + 0.05 * i, "val_ethnicity_acc": 0.5 + 0.04 * i} for i in range(4)]
    card = ModelCard(**{
        "name": "test_model", "created": "2026-01-01 00:00:00 UTC", "architecture": "MobileNetV2 + three heads",
        "input": {"size": 128, "channels": "RGB"}, "labels": {"gender": list(GENDERS)}, "flip_tta": True,
        "data": data, "splits": data["splits"], "validation_metrics": {"flip_tta": test, "plain": test},
        "test_metrics": test,
        "evaluations": {
            "utkface": {"val": test, "test": test, "test_degraded": {"grayscale": {**test, "gender_accuracy": 0.88}}},
            "celeba": {"val": {"n": 50, "n_gender": 50, "gender_accuracy": 0.95, "gender_ece": 0.02, "age_mae": None},
                       "test": {"n": 0}},
        },
        "calibration": {
            "fitted": {"age_prior_power": 0.25, "warn_above": 1.8, "interval_below": [0.9, 1.5], "interval_above": [1.1, 1.5]},
            "validation": {
                "utkface": {"before": {"n": 100, "interval_coverage": 0.86, "interval_mean_width": 16.4},
                            "after": {"n": 100, "interval_coverage": 0.8, "interval_mean_width": 14.9,
                                      "flagged_unfamiliar": 0.01}},
                "utkface, jpeg_20": {"before": {"n": 100, "interval_coverage": 0.7, "gender_ece": 0.06},
                                     "after": {"n": 100, "interval_coverage": 0.79, "gender_ece": 0.03,
                                               "flagged_unfamiliar": 0.2}},
            },
        },
        "framing_jitter": {"utkface": {"faces": 100, "views": 8, "gender_probability_sd": 0.03, "age_sd_years": 1.1,
                                       "gender_call_flips": 0.04}},
        "training": {"minutes": 12.5, "machine": "2 CPU cores, no GPU", "config": {}, "history": history},
        # Grad-CAM's age map faithful on the larger set only; Score-CAM's age map not at all
        "faithfulness": {"fraction": 0.2, "sets": {
            "utkface": {"label": "200 UTKFace faces", "faces": 200, "results": {
                "gradcam": {"age": {"drop_hot": 2.3, "drop_random": 1.5, "wins": 120, "t": 2.9},
                            "gender": {"drop_hot": 0.05, "drop_random": 0.02, "wins": 130, "t": 3.1}},
                "scorecam": {"age": {"drop_hot": 1.0, "drop_random": 1.6, "wins": 80, "t": -3.2}}}},
            "lfw": {"label": "100 LFW faces", "faces": 100, "results": {
                "gradcam": {"age": {"drop_hot": 10.9, "drop_random": 11.3, "wins": 40, "t": -2.2}}}}}},
        "licence": "Non-commercial research use only (UTKFace).",
    })
    return card.write(path)


def chart_figures(at) -> dict[str, dict]:
    """The app's Plotly charts by widget key, as JSON dicts."""
    return {c.key: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def values(array) -> list:
    """A Plotly JSON array as a list: plain lists pass, typed arrays ({dtype, bdata}) are decoded."""
    import base64

    if isinstance(array, dict) and "bdata" in array:
        flat = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
        shape = tuple(int(v) for v in str(array.get("shape", flat.size)).split(","))
        return flat.reshape(shape).tolist()
    return list(array)


@contextlib.contextmanager
def serving(analyzer):
    """Serve ``analyzer`` to the app for the duration of the block."""
    from ui import state

    state.set_analyzer_override(analyzer)
    try:
        yield analyzer
    finally:
        state.set_analyzer_override(None)


def open_page(page: str | None = None, timeout: float = RUN_TIMEOUT):
    """Run the app once (so st.navigation registers its pages), then switch to ``page``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP_PATH, default_timeout=timeout)
    at.run()
    if page:
        at.switch_page(page).run()
    return at
