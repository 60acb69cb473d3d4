"""What the app does with photos, minus Streamlit: one photo's outcome, drawing boxes,
texts and the per-face table.

The face pipeline (model.analyzer, which pulls in TensorFlow) is imported only when
its errors are classified. Uploaded photos stay in memory: everything here works on
``bytes`` and arrays, nothing is written to disk or logged.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from model import image_io, settings
from model.card import map_verdict
from model.labels import gender_headline
from model.results import CAM_METHODS, photo_notes

#: File types the app reads (lower case, without the dot), and the same for people to read.
UPLOAD_TYPES: tuple[str, ...] = image_io.IMAGE_FORMATS
UPLOAD_TYPE_NAMES: str = image_io.FORMAT_NAMES
MAX_UPLOAD_BYTES: int = settings.MAX_UPLOAD_MB * 1024 * 1024
SAMPLE_NAME: str = "sample_astronaut.png"
#: Longest side of photos shown in the browser (Streamlit re-encodes an image wider than 1460 px
#: on every run; at this size the page's own JPEG goes out as it is).
DISPLAY_MAX_SIDE: int = 1400
#: Longest side of a face thumbnail on its card.
THUMB_MAX_SIDE: int = 320
#: Box colours (RGB) cycled by face number; same order as the card badges.
BOX_COLOURS: tuple[tuple[int, int, int], ...] = (
    (79, 70, 229), (219, 39, 119), (5, 150, 105), (217, 119, 6), (37, 99, 235), (124, 58, 237),
)

_log = logging.getLogger(__name__)


@dataclass
class PhotoAnalysis:
    """One photo's outcome: its faces and what the page shows of it, or why there are none.

    What a session keeps is small and bounded: the uploaded file's bytes (compressed; the
    decoded photo, ~10x larger, is decoded again on demand by :attr:`photo` for Grad-CAM
    and the Explain page), and the annotated photo and face thumbnails encoded once as
    JPEG at screen size, so reruns and other sessions never pay for encoding them again.
    A photo without faces keeps nothing but its message.
    """

    name: str
    digest: str
    status: str  # ok | no_face | too_many | too_large | unreadable | error
    message: str = ""
    data: bytes = field(default=b"", repr=False)  # the upload (kept for photos with faces only)
    faces: list = field(default_factory=list)
    faces_found: int = 0  # faces detected; more than len(faces) when only the largest were analysed
    frames: int = 1  # frames in the file (animated GIF/WebP, multi-page TIFF); frame 1 is analysed
    shape: tuple[int, ...] | None = None  # the decoded photo's (H, W, 3)
    display: bytes = field(default=b"", repr=False)  # JPEG: the photo with numbered boxes, screen size
    thumbs: dict[int, bytes] = field(default_factory=dict, repr=False)  # JPEG per face index: its crop

    @property
    def photo(self) -> np.ndarray | None:
        """The analysed photo (first frame, EXIF applied), decoded from the upload; None without one."""
        if not self.data:
            return None
        return _decoded(self.data)

    @property
    def kept_bytes(self) -> int:
        """Memory this outcome holds in a session (upload, encoded images, the faces' model inputs)."""
        faces = sum(int(getattr(f, "face_input", np.empty(0)).nbytes) for f in self.faces)
        return len(self.data) + len(self.display) + sum(len(t) for t in self.thumbs.values()) + faces

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def notes(self) -> list[str]:
        """What the user should know about a photo that was analysed: faces left out, frames not looked at."""
        if not self.ok:
            return []
        return [f"{self.name}: {note}." for note in photo_notes(len(self.faces), self.faces_found, self.frames)]


# --- photos -----------------------------------------------------------------------------------


def digest_of(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _classify(exc: Exception, name: str) -> tuple[str, str]:
    """(status, user-facing message) for an exception from the face pipeline."""
    from model.image_io import ImageError

    if isinstance(exc, ImageError):
        return "unreadable", f"Could not read {name}: {exc}."
    from model.analyzer import TooManyFacesError  # already imported by whoever raised it

    if isinstance(exc, TooManyFacesError):
        return "too_many", f"Too many faces in {name}: {exc}."
    _log.error("photo analysis failed: %s", type(exc).__name__, exc_info=exc)  # the traceback, never the photo
    return "error", f"Something went wrong while analysing {name} ({type(exc).__name__}). Try another photo."


def analyze_bytes(analyzer, name: str, data: bytes) -> PhotoAnalysis:
    """Decode and analyse one uploaded photo; never raises, the outcome says what happened."""
    digest = digest_of(data)
    if len(data) > MAX_UPLOAD_BYTES:
        size_mb = len(data) / 1024 / 1024
        return PhotoAnalysis(name, digest, "too_large",
                             f"{name} is too large ({size_mb:.1f} MB); the limit is {settings.MAX_UPLOAD_MB} MB per photo.")
    if not data:
        return PhotoAnalysis(name, digest, "unreadable", f"Could not read {name}: the file is empty.")
    try:
        # A crowd is not refused: its MAX_FACES largest faces are analysed and the page says so.
        result = analyzer.analyze_photo(data, largest=settings.MAX_FACES)
    except Exception as exc:  # the app must survive any photo
        status, message = _classify(exc, name)
        return PhotoAnalysis(name, digest, status, message)
    if not result.faces:
        where = name + "".join(f" ({note})" for note in result.notes)
        return PhotoAnalysis(name, digest, "no_face", (
            f"No face found in {where}. Faces should be at least {settings.MIN_FACE_SIZE} px wide, "
            "roughly frontal and well lit."
        ), frames=result.frames, shape=tuple(result.photo.shape))
    faces = list(result.faces)
    return PhotoAnalysis(name, digest, "ok", data=bytes(data), faces=faces, faces_found=result.faces_found,
                         frames=result.frames, shape=tuple(result.photo.shape),
                         display=jpeg_bytes(for_display(annotate(result.photo, faces))),
                         thumbs={f.index: jpeg_bytes(for_display(crop_box(result.photo, f.box), THUMB_MAX_SIDE))
                                 for f in faces})


@functools.lru_cache(maxsize=2)
def _decoded(data: bytes) -> np.ndarray:
    """The last uploads' pixels, read-only: a page rerun reads its photo several times (the
    preview, one heat map per head) and a 12-megapixel JPEG takes a few hundred ms to decode.
    Sessions keep only the bytes (memory under load), so the cache holds two photos at most."""
    photo = image_io.load_image(data)
    photo.flags.writeable = False
    return photo


@functools.lru_cache(maxsize=1)
def sample_photo_bytes() -> bytes:
    """A real portrait shipped by scikit-image (astronaut Eileen Collins), as PNG bytes."""
    from skimage import data

    return png_bytes(data.astronaut())


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    """Encode an HxWx3 uint8 RGB array as JPEG in memory (what the page shows)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an HxWx3 uint8 RGB array as PNG in memory."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def for_display(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Shrink big photos before they are sent to the browser (the analysis keeps full size)."""
    import cv2

    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    factor = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


def age_text(age: float) -> str:
    years = round(float(age))
    return f"{years} year{'' if years == 1 else 's'}"




def gender_text(gender: str, probability: float) -> tuple[str, str]:
    """(headline, detail) for a gender call, honest about coin flips."""
    headline = gender_headline(gender, probability)
    if headline == "Unsure":
        return headline, f"leans {gender} ({probability:.0%}); the model cannot tell"
    return headline, f"probability {probability:.0%}"


def gender_age_note(card, age_group: str) -> str | None:
    """A note for a face card when gender is hard to read at this (estimated) age: the model
    card's held-out accuracy for the group is below settings.GENDER_NOTE_BELOW; else None."""
    found = card.gender_accuracy_at(age_group) if card is not None else None
    if found is None or found[0] >= settings.GENDER_NOTE_BELOW:
        return None
    accuracy, n = found
    verdict = "about a coin flip" if accuracy < 0.6 else "often wrong"
    return (f"Gender is hard to read at this age: on {n} held-out faces aged {age_group} the model was right "
            f"{accuracy:.0%} of the time ({verdict}), whatever its probability says.")


#: How the Explain page words model.card.map_verdict's three cases.
MAP_VERDICT_TEXT: dict[str, str] = {"trusted": "it points at what matters", "unclear": "no clearer than chance",
                                    "against": "random patches mattered more"}


def _map_check_text(check, head: str) -> str:
    scale, unit = (1.0, "years") if head == "age" else (100.0, "points")
    hot, random = (round(scale * v, 1) + 0.0 for v in (check.drop_hot, check.drop_random))  # no "-0.0"
    return (f"by {hot:.1f} against {random:.1f} {unit} on "
            f"{check.faces_label} ({MAP_VERDICT_TEXT[map_verdict(check.t_stat)]}, t = {check.t_stat:.1f})")


def map_trust_note(card, method: str, head: str) -> str:
    """Under a heat map: how far to trust it, from the served model's own occlusion study
    (training.gradcam_faithfulness --card). A map that looks plausible can still point at
    pixels the network does not use; the card says whether hiding the hottest fifth of the
    face moved the answer more than hiding random patches of the same size (largest face
    set first; the verdict follows it)."""
    checks = card.map_checks(method, head) if card is not None else []
    if not checks:
        return ("This model's heat maps were not checked by occlusion "
                "(`python -m training.gradcam_faithfulness --card`): read them as hints.")
    what = "the age" if head == "age" else "the probability"
    text = (f"Hiding this map's hottest fifth, against random patches of the same size, moved {what} "
            + ", and ".join(_map_check_text(c, head) for c in checks) + ".")
    if not checks[0].trusted:
        better = [name for m, name in CAM_METHODS.items()
                  if m != method and (other := card.map_checks(m, head)) and other[0].trusted]
        text += f" Prefer {better[0]} for this head." if better else " Read it as a hint."
    return text


def box_colour(index: int) -> tuple[int, int, int]:
    return BOX_COLOURS[index % len(BOX_COLOURS)]


def box_colour_hex(index: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*box_colour(index))


def annotate(photo: np.ndarray, faces: list) -> np.ndarray:
    """A copy of ``photo`` with a numbered, coloured box per face (numbers start at 1)."""
    import cv2

    out = np.ascontiguousarray(photo, np.uint8).copy()
    scale = max(out.shape[:2]) / 600.0
    thick = max(2, int(round(2 * scale)))
    for face in faces:
        x, y, w, h = (int(v) for v in face.box)
        colour = box_colour(face.index)
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thick)
        label = str(face.index + 1)
        font_scale = 0.7 * max(scale, 0.6)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        top = max(0, y - th - base - 2 * thick)
        cv2.rectangle(out, (x, top), (x + tw + 2 * thick + 4, top + th + base + 2 * thick), colour, -1)
        cv2.putText(out, label, (x + thick + 2, top + th + thick), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return out


def crop_box(image: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.35) -> np.ndarray:
    """The face box grown by ``margin`` on each side, clipped to the image."""
    x, y, w, h = (int(v) for v in box)
    dx, dy = int(w * margin), int(h * margin)
    height, width = image.shape[:2]
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return image[y0:y1, x0:x1]


# --- tables -----------------------------------------------------------------------------------

TABLE_COLUMNS: tuple[str, ...] = (
    "photo", "face", "age", "age_low", "age_high", "age_group", "gender", "gender_probability",
    "ethnicity", "ethnicity_probability", "detection_confidence", "unfamiliarity", "unfamiliar",
    "box_x", "box_y", "box_w", "box_h",
)


def faces_frame(analyses: list[PhotoAnalysis]) -> pd.DataFrame:
    """One row per face over all photos (face numbers start at 1, as drawn)."""
    rows = []
    for analysis in analyses:
        for face in analysis.faces:
            x, y, w, h = (int(v) for v in face.box)
            rows.append({
                "photo": analysis.name,
                "face": face.index + 1,
                "age": round(float(face.age), 1),
                "age_low": round(float(face.age_interval[0]), 1),
                "age_high": round(float(face.age_interval[1]), 1),
                "age_group": face.age_group,
                "gender": face.gender,
                "gender_probability": round(float(face.gender_probability), 3),
                "ethnicity": face.ethnicity,
                "ethnicity_probability": round(float(face.ethnicity_probabilities[face.ethnicity]), 3),
                "detection_confidence": round(float(face.detection_confidence), 3),
                "unfamiliarity": None if face.unfamiliarity is None else round(float(face.unfamiliarity), 2),
                "unfamiliar": bool(face.unfamiliar),
                "box_x": x, "box_y": y, "box_w": w, "box_h": h,
            })
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def faces_csv(analyses: list[PhotoAnalysis]) -> str:
    return faces_frame(analyses).to_csv(index=False)


def faces_json(analyses: list[PhotoAnalysis]) -> str:
    """Every photo with its outcome and full per-face results (FaceResult.to_dict)."""
    payload = [
        {"photo": a.name, "status": a.status, "message": a.message, "faces_found": a.faces_found,
         "frames": a.frames, "faces": [f.to_dict() for f in a.faces]}
        for a in analyses
    ]
    return json.dumps(payload, indent=2)
