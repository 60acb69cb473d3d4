"""The face pipeline's public facade: photo in, one typed result per face out.

    analyzer = FaceAnalyzer()          # loads the model and MTCNN once, warms both up
    faces = analyzer.analyze("photo.jpg")

Stages: intake (model.image_io) -> detection (model.face_detect) -> alignment to
UTKFace framing (model.align) -> one batched compiled call for all faces
(model.inference.Predictor) -> results. The app, the predict CLI, the benchmark and
the tests all go through this class, so they see the same numbers.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model import settings
from model.align import align_face
from model.card import read_card
from model.face_detect import FaceDetector, PhotoDetector, TooManyFacesError, check_face_count, largest_faces
from model.heatmap_draw import OVERLAY_ALPHA, face_explanations, reblend
from model.image_io import ImageError, ImageSource, load_image, read_image
from model.labels import ETHNICITIES, GENDERS, age_group, check_head
from model.lru import LRUCache
from model.postprocess import ethnicity_names, gender_names
from model.results import DEFAULT_CAM_METHOD, Detection, Explanation, FaceResult, PhotoResult

__all__ = ["FaceAnalyzer", "FaceResult", "ImageError", "PhotoResult", "TooManyFacesError", "card_flip_tta"]

#: Explanations an analyzer keeps, one per (face, head, target, method) of one photo. Each holds a
#: photo-sized heat map and overlay (about 7 bytes a pixel: 84 MB for 12 megapixels), so few:
#: the Explain page's three heads for a few targets or methods. Opacity is not in the key.
EXPLAIN_CACHE_SIZE: int = 12
#: ...and at most this many bytes of them, so a huge photo keeps fewer (the newest is always kept).
EXPLAIN_CACHE_BYTES: int = 768 * 1024 * 1024


def _explanation_bytes(entry: tuple[float, Explanation]) -> int:
    explanation = entry[1]
    return sum(a.nbytes for a in (explanation.crop_heatmap, explanation.photo_heatmap, explanation.overlay))


def card_flip_tta(model_path: Path | None, default: bool = True) -> bool:
    """The model card's ``flip_tta`` choice (made on validation data at export), if a card is found.

    Looks beside the model file, then at ``settings.model_card_path()`` when the
    model is the configured one; a missing or unreadable card gives ``default``.
    ``FACELENS_FLIP_TTA`` (see :func:`settings.flip_tta_override`) beats both.
    """
    override = settings.flip_tta_override()
    if override is not None:
        return override
    candidates: list[Path] = []
    if model_path is not None:
        candidates.append(Path(model_path).with_name("model_card.json"))
        if Path(model_path).resolve() == settings.model_path().resolve():
            candidates.append(settings.model_card_path())
    for path in candidates:
        card = read_card(path)
        if card is not None and isinstance(card.flip_tta, bool):
            return card.flip_tta
    return default


def _box_ints(box: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    x, y, w, h = box
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


class FaceAnalyzer:
    """Detect, align and analyse every face of a photo. Load once, call many times.

    ``model_path`` defaults to ``settings.model_path()`` (``FACELENS_MODEL`` or the
    shipped model); ``model`` injects a loaded Keras model instead; ``detector`` a
    :class:`FaceDetector` (or any :class:`~model.face_detect.PhotoDetector`: ``detect_all``
    and ``max_faces``).
    ``flip_tta`` defaults to the model card's choice, else True.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model=None,
        detector: PhotoDetector | None = None,
        flip_tta: bool | None = None,
        warm_up: bool = True,
    ):
        from model.architecture import load_model
        from model.calibration import load_for_model
        from model.inference import Predictor

        self.model_path: Path | None = None
        if model is None:
            self.model_path = Path(model_path) if model_path is not None else settings.model_path()
            if not self.model_path.is_file():
                raise FileNotFoundError(
                    f"model file not found: {self.model_path} (train one, or set FACELENS_MODEL)"
                )
            model = load_model(self.model_path)
        if flip_tta is None:
            flip_tta = card_flip_tta(self.model_path)
        self.model = model
        # The read-out corrections stored beside the model file (identity for an injected model).
        self.predictor = Predictor(model, flip_tta=bool(flip_tta), calibration=load_for_model(self.model_path))
        self.input_size = self.predictor.input_size
        self.detector: PhotoDetector = detector if detector is not None else FaceDetector()
        #: Seconds per stage of the latest :meth:`analyze` call (decode, detect, align, model, total).
        self.last_timings: dict[str, float] = {}
        self._lock = threading.Lock()
        # One detection + model run at a time: the app shares one analyzer between
        # sessions (st.cache_resource), two cores gain nothing from running two photos
        # at once, and last_timings must belong to the call that wrote it.
        self._analyze_lock = threading.Lock()
        self._explainer = None
        # Explanations of one photo at a time (fingerprint below): (face, head, target,
        # method) -> (alpha, Explanation). Bounded: each holds two photo-sized arrays.
        self._explain_photo: str | None = None
        self._explain_cache = LRUCache(EXPLAIN_CACHE_SIZE, EXPLAIN_CACHE_BYTES, _explanation_bytes)
        if warm_up:
            self.warm_up()

    @property
    def flip_tta(self) -> bool:
        return self.predictor.flip_tta

    def warm_up(self) -> None:
        """Trace the compiled model call and MTCNN once, so the first photo isn't slow."""
        self.predictor(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))
        warm = getattr(self.detector, "warm_up", None)
        if callable(warm):
            warm()

    def load_photo(self, image: ImageSource) -> np.ndarray:
        """path | bytes | file object | PIL image | array -> HxWx3 uint8 RGB, EXIF applied.

        Raises :class:`ImageError` with a message meant for the user.
        """
        return load_image(image)

    def analyze(self, image: ImageSource, *, largest: int | None = None) -> list[FaceResult]:
        """Every face in the photo, left to right; [] when there is none.

        Raises :class:`ImageError` for unusable input and :class:`TooManyFacesError`
        for crowds above ``settings.MAX_FACES``, unless ``largest=N`` is given: then
        the N largest faces are analysed (see :meth:`analyze_photo` for how many were found).
        """
        return self.analyze_photo(image, largest=largest).faces

    def analyze_photo(self, image: ImageSource, *, largest: int | None = None) -> PhotoResult:
        """The photo's faces with how many were found and which frame was analysed.

        ``largest=N`` analyses only the N largest faces (by box area) of a crowd
        instead of raising :class:`TooManyFacesError`; ``faces_found`` says how many
        there were. A multi-frame file (animated GIF/WebP, multi-page TIFF) is
        analysed on its first frame; ``frames`` says how many it holds.
        """
        if largest is not None and int(largest) < 1:
            raise ValueError(f"largest must be at least 1, got {largest}")
        t0 = time.perf_counter()
        decoded = read_image(image)  # decoding needs no lock
        photo = decoded.pixels
        decode = time.perf_counter() - t0
        with self._analyze_lock:
            t1 = time.perf_counter()  # waiting for another photo counts in no stage
            detections: list[Detection] = self.detector.detect_all(photo)
            found = len(detections)
            if largest is None:
                check_face_count(detections, self.detector.max_faces)
            else:
                detections = largest_faces(detections, int(largest))
            t2 = time.perf_counter()
            pairs = []
            for det in detections:
                try:
                    pairs.append((det, align_face(photo, det.landmarks, input_size=self.input_size)))
                except ValueError:  # degenerate landmarks (all on one point): not a usable face
                    found -= 1
                    continue
            detections = [det for det, _ in pairs]
            aligned = [face for _, face in pairs]
            t3 = time.perf_counter()
            results: list[FaceResult] = []
            if aligned:
                # All faces in one compiled call (never one model call per face).
                outputs = self.predictor(np.stack([a.face_input for a in aligned]))
                h, w = photo.shape[:2]
                for i, (det, face) in enumerate(zip(detections, aligned, strict=True)):
                    results.append(self._result(i, det, face, outputs, h, w))
            t4 = time.perf_counter()
            self.last_timings = {
                "decode": decode,
                "detect": t2 - t1,
                "align": t3 - t2,
                "model": t4 - t3,
                "total": decode + (t4 - t1),
            }
            return PhotoResult(photo=photo, faces=results, faces_found=found,
                               frames=decoded.frames, frame=decoded.frame)

    def _result(self, i: int, det: Detection, face, outputs, height: int, width: int) -> FaceResult:
        gender_p = {name: float(p) for name, p in zip(GENDERS, outputs.gender[i], strict=True)}
        eth_p = {name: float(p) for name, p in zip(ETHNICITIES, outputs.ethnicity[i], strict=True)}
        gender = gender_names(outputs.gender[i : i + 1])[0][0]
        ethnicity = ethnicity_names(outputs.ethnicity[i : i + 1])[0][0]
        age = float(outputs.age[i])
        low, high = (float(v) for v in outputs.age_interval[i])
        return FaceResult(
            index=i,
            box=_box_ints(det.box, height, width),
            detection_confidence=float(det.confidence),
            landmarks={k: (float(v[0]), float(v[1])) for k, v in det.landmarks.items()},
            age=age,
            age_interval=(low, high),
            age_group=age_group(age),
            gender=gender,
            gender_probability=gender_p[gender],
            ethnicity=ethnicity,
            ethnicity_probabilities=eth_p,
            gender_probabilities=gender_p,
            face_input=face.face_input,
            crop_affine=face.crop_affine,
            **self._familiarity(outputs, i),
        )

    def _familiarity(self, outputs, i: int) -> dict[str, Any]:
        u = None if outputs.unfamiliarity is None else float(outputs.unfamiliarity[i])
        if u is None or not np.isfinite(u):
            return {"unfamiliarity": None, "unfamiliar": False}
        return {"unfamiliarity": u, "unfamiliar": self.predictor.calibration.is_unfamiliar(u)}

    def explain(
        self,
        image: ImageSource,
        face: FaceResult,
        head: str,
        target: int | str | None = None,
        method: str = DEFAULT_CAM_METHOD,
        alpha: float = OVERLAY_ALPHA,
    ) -> Explanation:
        """Grad-CAM (or another of results.CAM_METHODS) for one head of one face.

        One head of :meth:`explain_heads`; to explain several heads, ask for them together.
        """
        return self.explain_heads(image, face, [(head, target)], method=method, alpha=alpha)[head]

    def explain_heads(
        self,
        image: ImageSource,
        face: FaceResult,
        requests: Sequence[tuple[str, int | str | None]],
        method: str = DEFAULT_CAM_METHOD,
        alpha: float = OVERLAY_ALPHA,
    ) -> dict[str, Explanation]:
        """Explanations of several heads of one face: {head: Explanation} in request order.

        ``requests`` holds (head, target) pairs, each head at most once (None = the
        predicted class). The photo is fingerprinted once; explanations cached for it
        are reused (at another ``alpha`` only the overlay is blended again) and all
        the missing heads are computed in one batched Grad-CAM call, which shares the
        backbone pass. The cache holds one photo's latest ``EXPLAIN_CACHE_SIZE`` (face,
        head, target, method) explanations, within ``EXPLAIN_CACHE_BYTES``; a new photo
        clears it (memory only).
        """
        heads = [head for head, _ in requests]
        for head in heads:
            check_head(head)
        if len(set(heads)) != len(heads):
            raise ValueError(f"each head may be asked for once per call, got {heads}")
        photo = self.load_photo(image)
        # Hash the pixels in place (tobytes() would first copy a 12-megapixel photo: ~20 ms per rerun).
        fingerprint = hashlib.blake2b(np.ascontiguousarray(photo).data, digest_size=16).hexdigest() + str(photo.shape)
        keys = {head: (face.index, tuple(face.box), head, target, method) for head, target in requests}
        out: dict[str, Explanation] = {}
        with self._lock:
            if self._explain_photo != fingerprint:
                self._explain_photo = fingerprint
                self._explain_cache.clear()
            missing: dict[str, int | str | None] = {}
            for head, target in requests:
                cached = self._explain_cache.get(keys[head])
                if cached is None:
                    missing[head] = target
                    continue
                cached_alpha, explanation = cached
                if cached_alpha != float(alpha):
                    explanation = reblend(explanation, photo, face, alpha)
                    self._explain_cache.put(keys[head], (float(alpha), explanation))
                out[head] = explanation
            if missing:
                if self._explainer is None:
                    from model.gradcam import GradCamExplainer

                    self._explainer = GradCamExplainer(self.model)
                fresh = face_explanations(self._explainer, photo, face, tuple(missing), missing,
                                          method=method, alpha=alpha)
                for head, explanation in fresh.items():
                    self._explain_cache.put(keys[head], (float(alpha), explanation))
                    out[head] = explanation
        return {head: out[head] for head in heads}

    def clear_explain_cache(self) -> None:
        """Forget cached explanations and heat maps (benchmarks and tests start cold)."""
        with self._lock:
            self._explain_cache.clear()
            if self._explainer is not None:
                self._explainer.clear_cache()
