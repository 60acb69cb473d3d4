"""Typed results of the face pipeline, importable without TensorFlow.

A :class:`Detection` per face found, a :class:`FaceResult` per face analysed, the
batched :class:`HeadOutputs` behind them and an :class:`Explanation` per heat map.
The saliency methods an explanation can come from are listed here too, so the app
can offer them without loading the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Saliency methods (as ``Explanation.method`` names them) and their display names, in
#: the order the app offers them. Grad-CAM and Grad-CAM++ cost one shared backbone
#: pass plus a small head model per head; Score-CAM runs the whole network once per
#: masked channel (``gradcam.SCORECAM_MAX_N`` per head): slower, offered last.
CAM_METHODS: dict[str, str] = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}
DEFAULT_CAM_METHOD: str = "gradcam"


@dataclass(frozen=True)
class Detection:
    """One detected face in photo pixels (floats; the analyzer rounds the box)."""

    box: tuple[float, float, float, float]  # x, y, w, h
    confidence: float
    landmarks: dict[str, tuple[float, float]]  # align.LANDMARK_NAMES -> (x, y)


@dataclass(frozen=True)
class HeadOutputs:
    """Per-face head outputs for a batch of N faces (numpy, float32/64)."""

    age: np.ndarray  # (N,) expected age in years
    age_interval: np.ndarray  # (N, 2) central 80% interval
    age_dist: np.ndarray  # (N, K)
    gender: np.ndarray  # (N, 2) probabilities over labels.GENDERS
    ethnicity: np.ndarray  # (N, 5) probabilities over labels.ETHNICITIES
    unfamiliarity: np.ndarray | None = None  # (N,) 1 = an ordinary training-like face; NaN = not measured

    def __len__(self) -> int:
        return len(self.age)


@dataclass
class FaceResult:
    """Everything the pipeline knows about one face of a photo."""

    index: int  # 0.. left to right
    box: tuple[int, int, int, int]  # x, y, w, h in original photo pixels (after EXIF transpose)
    detection_confidence: float
    landmarks: dict[str, tuple[float, float]]  # left_eye, right_eye, nose, mouth_left, mouth_right (photo px)
    age: float
    age_interval: tuple[float, float]
    age_group: str
    gender: str
    gender_probability: float
    ethnicity: str
    ethnicity_probabilities: dict[str, float]  # all five, in labels.ETHNICITIES order
    gender_probabilities: dict[str, float]
    face_input: np.ndarray = field(repr=False)  # (128, 128, 3) uint8, exactly what the model saw
    crop_affine: np.ndarray = field(repr=False)  # 2x3 float64: photo (x, y) -> face_input pixel (x, y)
    # How far the face's features are from the training data's (1 = an ordinary training-like
    # face; None when the model has no calibration file), and whether that is too far to trust.
    unfamiliarity: float | None = None
    unfamiliar: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able public fields (plain Python ints/floats/strings)."""
        return {
            "index": int(self.index),
            "box": [int(v) for v in self.box],
            "detection_confidence": float(self.detection_confidence),
            "landmarks": {k: [float(v[0]), float(v[1])] for k, v in self.landmarks.items()},
            "age": float(self.age),
            "age_interval": [float(v) for v in self.age_interval],
            "age_group": self.age_group,
            "gender": self.gender,
            "gender_probability": float(self.gender_probability),
            "gender_probabilities": {k: float(v) for k, v in self.gender_probabilities.items()},
            "ethnicity": self.ethnicity,
            "ethnicity_probabilities": {k: float(v) for k, v in self.ethnicity_probabilities.items()},
            "unfamiliarity": None if self.unfamiliarity is None else round(float(self.unfamiliarity), 3),
            "unfamiliar": bool(self.unfamiliar),
        }


@dataclass(frozen=True)
class Explanation:
    """One head's heat map for one face, on the crop and on the photo, plus its overlay."""

    head: str  # one of labels.HEAD_NAMES
    target: int | None  # class index explained; None for age
    target_name: str  # class name, or gradcam.AGE_TARGET_NAME
    method: str  # one of CAM_METHODS
    crop_heatmap: np.ndarray = field(repr=False)  # (S, S) float32 in [0, 1] on face_input
    photo_heatmap: np.ndarray = field(repr=False)  # (H, W) float32 in [0, 1], 0 outside the face region
    overlay: np.ndarray = field(repr=False)  # (H, W, 3) uint8 RGB: photo with the colour map blended in


@dataclass
class PhotoResult:
    """One photo's analysis: its faces, how many were found, and which frame was looked at.

    ``faces`` may be fewer than ``faces_found`` when only the largest faces were analysed
    (``FaceAnalyzer.analyze_photo(..., largest=N)`` on a crowd). ``frames`` counts the
    frames of the file (animated GIF/WebP, multi-page TIFF); ``frame`` (0-based) is the
    one analysed, always the first.
    """

    photo: np.ndarray = field(repr=False)  # HxWx3 uint8 RGB, the frame analysed
    faces: list[FaceResult]
    faces_found: int
    frames: int = 1
    frame: int = 0

    @property
    def limited(self) -> bool:
        """True when some faces were found but not analysed (only the largest were)."""
        return self.faces_found > len(self.faces)

    @property
    def notes(self) -> list[str]:
        """What a reader should know about this photo's results (see :func:`photo_notes`)."""
        return photo_notes(len(self.faces), self.faces_found, self.frames)

    def to_dict(self) -> dict[str, Any]:
        return {
            "faces": [face.to_dict() for face in self.faces],
            "faces_found": int(self.faces_found),
            "frames": int(self.frames),
            "frame": int(self.frame),
        }


def photo_notes(shown: int, found: int, frames: int) -> list[str]:
    """What a reader of an analysed photo should know: faces left out (only the largest
    ``shown`` of ``found`` were analysed) and frames not looked at (only the first of
    ``frames``). The one wording that the app, the command line and :class:`PhotoResult` show.
    """
    notes = []
    if found > shown:
        notes.append(f"showing {shown} of {found} faces, the {shown} largest")
    if frames > 1:
        notes.append(f"the file has {frames} frames; only frame 1 was analysed")
    return notes
