"""Face detection with MTCNN (its weights ship inside the ``mtcnn`` package).

MTCNN is created once per :class:`FaceDetector`. Big photos are detected on a
downscaled copy (detection cost grows with pixels, accuracy doesn't need them) and
boxes/landmarks are mapped back to the original pixels. Weak false positives score
around 0.8, so detections below ``min_confidence`` (0.90 by default) are dropped.
A face that fills the whole image (a tight crop, a baby held close to the camera)
leaves MTCNN no margin and is often missed; when nothing is found, the detector
tries once more on a copy with replicated borders (``pad_retry`` of the longer side).
Parsing and filtering are pure functions, tested without the network.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from model.align import LANDMARK_NAMES
from model.image_io import downscale
from model.results import Detection
from model.settings import DETECTION_CONFIDENCE, DETECTION_MAX_SIDE, DETECTION_PAD_RETRY, MAX_FACES, MIN_FACE_SIZE

#: MTCNN's smallest pyramid window; images smaller than this cannot hold a face.
_MTCNN_MIN_INPUT = 12


class TooManyFacesError(ValueError):
    """More faces than the pipeline analyses at once (a crowd photo)."""

    def __init__(self, count: int, limit: int):
        self.count = count
        self.limit = limit
        super().__init__(
            f"found {count} faces; at most {limit} are analysed per photo — crop the photo to fewer people"
        )


class PhotoDetector(Protocol):
    """What ``FaceAnalyzer`` needs of a detector (:class:`FaceDetector` has it): every face,
    and the limit above which a photo without ``largest=N`` is refused. The analyzer
    applies the limit itself, so asking for the largest faces of a crowd never raises."""

    max_faces: int

    def detect_all(self, photo: np.ndarray) -> list[Detection]: ...


def check_face_count(detections: list[Detection], max_faces: int) -> list[Detection]:
    """``detections`` as they are, or :class:`TooManyFacesError` when there are more than ``max_faces``."""
    if len(detections) > max_faces:
        raise TooManyFacesError(len(detections), max_faces)
    return detections


def parse_mtcnn_rows(rows: np.ndarray, scale: float = 1.0) -> list[Detection]:
    """MTCNN ``output_type="numpy", box_format="xyxy"`` rows -> detections in photo pixels.

    A row is ``[image_id, x1, y1, x2, y2, confidence, 5 landmark x, 5 landmark y]``;
    ``scale`` is detection-image px per photo px (coordinates are divided by it).
    Values become plain Python floats (MTCNN returns numpy scalars, which JSON refuses).
    """
    rows = np.asarray(rows, np.float64).reshape(-1, 16) if np.size(rows) else np.zeros((0, 16))
    out = []
    for row in rows:
        x1, y1, x2, y2 = (float(v) / scale for v in row[1:5])
        landmarks = {
            name: (float(row[6 + i]) / scale, float(row[11 + i]) / scale) for i, name in enumerate(LANDMARK_NAMES)
        }
        out.append(Detection((x1, y1, x2 - x1, y2 - y1), float(row[5]), landmarks))
    return out


def filter_detections(
    detections: list[Detection], min_confidence: float = DETECTION_CONFIDENCE, min_face_size: float = MIN_FACE_SIZE
) -> list[Detection]:
    """Keep confident faces at least ``min_face_size`` px on their shorter box side,
    sorted left to right (then top to bottom) so face numbers read like the photo."""
    kept = [
        d
        for d in detections
        if d.confidence >= min_confidence and min(d.box[2], d.box[3]) >= min_face_size and np.isfinite(d.box).all()
    ]
    return sorted(kept, key=lambda d: (d.box[0], d.box[1]))


def shift_detection(det: Detection, dx: float, dy: float) -> Detection:
    """``det`` moved by (dx, dy) px: from a padded copy's pixels back to the photo's."""
    x, y, w, h = det.box
    landmarks = {name: (px + dx, py + dy) for name, (px, py) in det.landmarks.items()}
    return Detection((x + dx, y + dy, w, h), det.confidence, landmarks)


class FaceDetector:
    """MTCNN wrapper: confidence threshold, minimum face size, downscaling, face limit."""

    def __init__(
        self,
        min_confidence: float = DETECTION_CONFIDENCE,
        min_face_size: int = MIN_FACE_SIZE,
        max_side: int = DETECTION_MAX_SIDE,
        max_faces: int = MAX_FACES,
        pad_retry: float = DETECTION_PAD_RETRY,
        mtcnn=None,
    ):
        if mtcnn is None:
            from mtcnn import MTCNN

            mtcnn = MTCNN()
        self.mtcnn = mtcnn
        self.min_confidence = float(min_confidence)
        self.min_face_size = int(min_face_size)
        self.max_side = int(max_side)
        self.max_faces = int(max_faces)
        self.pad_retry = float(pad_retry)

    def detect(self, photo: np.ndarray, *, pad_retry: bool = True) -> list[Detection]:
        """All faces in an HxWx3 uint8 RGB photo, left to right; [] when there is none.

        Raises :class:`TooManyFacesError` above ``max_faces``.
        """
        return check_face_count(self.detect_all(photo, pad_retry=pad_retry), self.max_faces)

    def detect_all(self, photo: np.ndarray, *, pad_retry: bool = True) -> list[Detection]:
        """Like :meth:`detect` with no face limit (a crowd gives every face it holds).

        When nothing is found, once more on a copy padded by ``pad_retry`` of the longer
        side with replicated borders: of the UTKFace crops (200 px, tight) where MTCNN
        finds no face, mostly babies, that finds 129 of 200. Coordinates come back in the
        photo's pixels (a box may reach past its edge; alignment replicates borders too).
        ``pad_retry=False`` skips that second try, which costs about twice the first on an
        empty 640x480 frame (live video asks for it only now and then, see model.live).
        """
        found = self._detect_once(photo)
        if found or not pad_retry or self.pad_retry <= 0 or min(photo.shape[:2]) < _MTCNN_MIN_INPUT:
            return found
        pad = int(round(self.pad_retry * max(photo.shape[:2])))
        padded = cv2.copyMakeBorder(np.ascontiguousarray(photo), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        return [shift_detection(d, -pad, -pad) for d in self._detect_once(padded)]

    def _detect_once(self, photo: np.ndarray) -> list[Detection]:
        small, scale = downscale(photo, self.max_side)
        if min(small.shape[:2]) < _MTCNN_MIN_INPUT:
            return []
        # MTCNN's own pyramid (min_face_size=20 detection px) is kept: mtcnn 1.0 sizes the
        # pyramid from the image alone, so other values shift every level and can step
        # over a face (an 80 px face is missed at 24). Small faces are dropped afterwards.
        rows = self.mtcnn.detect_faces(np.ascontiguousarray(small), box_format="xyxy", output_type="numpy")
        return filter_detections(parse_mtcnn_rows(rows, scale), self.min_confidence, self.min_face_size)

    def warm_up(self) -> None:
        """Run MTCNN once on a drawn face in a 640x480 frame, the commonest photo size.

        All three stages (PNet, RNet, ONet) then have run once, so the first real
        photo skips their one-off setup; random noise, by contrast, never gets past
        PNet. (The drawn face scores below the threshold: nothing is reported.)
        """
        self.mtcnn.detect_faces(_drawn_face(), output_type="numpy")


def largest_faces(detections: list[Detection], n: int) -> list[Detection]:
    """The ``n`` largest detections by box area, back in left-to-right order."""
    if len(detections) <= n:
        return list(detections)
    keep = sorted(range(len(detections)), key=lambda i: -detections[i].box[2] * detections[i].box[3])[:n]
    return [detections[i] for i in sorted(keep)]


def _drawn_face(height: int = 480, width: int = 640) -> np.ndarray:
    """A crude face (skin ellipse, eyes, nose, mouth) that MTCNN's three stages all process."""
    import cv2

    img = np.full((height, width, 3), 90, np.uint8)
    cx, cy = width // 2, height // 2
    cv2.ellipse(img, (cx, cy + 5), (48, 62), 0, 0, 360, (205, 165, 140), -1)
    for dx in (-20, 20):
        cv2.ellipse(img, (cx + dx, cy - 10), (9, 5), 0, 0, 360, (40, 30, 30), -1)
    cv2.line(img, (cx, cy - 5), (cx, cy + 20), (170, 120, 100), 3)
    cv2.ellipse(img, (cx, cy + 38), (18, 6), 0, 0, 360, (150, 60, 60), -1)
    return cv2.GaussianBlur(img, (0, 0), 2)
