"""Teacher targets for ``--distill-from``: a trained model's answers on the canonical crops.

Why: consistency training that pulls two augmented views of a face towards each other
made answers steadier but also pulled them towards safe, middling values (older faces
got younger, UTKFace MAE rose). Anchoring every augmented view to what a trained
teacher says on the *un-augmented*, flip-averaged crop asks for the same steadiness
without that drift: the target does not move with the view, and it is an answer the
teacher already gets right as often as it does.

The teacher's outputs are computed once per run (with a progress bar) and cached in the
run folder, keyed by the teacher file's digest and the faces, so ``--resume`` reuses them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

#: The heads whose probabilities are distilled (the age read-out follows from age_dist).
DISTILLED_HEADS = ("age_dist", "gender", "ethnicity")


def _fingerprint(model_path: Path, images: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(Path(model_path).read_bytes())
    digest.update(str(images.shape).encode())
    # Every 97th face is enough to tell one set of cached crops from another.
    digest.update(np.ascontiguousarray(images[::97]).tobytes())
    return digest.hexdigest()


def teacher_outputs(model_path: str | Path, images: np.ndarray, cache_dir: Path | None = None,
                    batch_size: int = 256) -> dict[str, np.ndarray]:
    """Flip-averaged probabilities of ``model_path`` for every face in ``images``.

    Returns float32 arrays by head (DISTILLED_HEADS), rows aligned with ``images``.
    """
    model_path = Path(model_path)
    key = _fingerprint(model_path, images)
    cache = Path(cache_dir) / "teacher_outputs.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            if str(stored["fingerprint"]) == key:
                return {head: stored[head] for head in DISTILLED_HEADS}

    from model.architecture import load_model
    from model.inference import Predictor

    predictor = Predictor(load_model(model_path), flip_tta=True, batch_size=batch_size)
    raw = predictor.raw(images, progress="teacher outputs")
    out = {head: raw[head].astype(np.float32) for head in DISTILLED_HEADS}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, fingerprint=np.array(key), **out)
    return out


def blend(hard, teacher, labelled, beta: float):
    """Per-sample targets mixing a label with the teacher's answer (tensors, any backend).

    ``hard`` is the label target already multiplied by its sample weight w (rows of zeros
    where the head is unlabelled), ``labelled`` is 1.0 where it is labelled.
    Labelled rows become ``(1 - beta) * hard + beta * w * teacher``: the same weight w,
    a target that still sums to w. Unlabelled rows get ``beta * teacher``: with no label the
    face still learns to answer the same whatever its framing or light.
    """
    from keras import ops

    weight = ops.sum(hard, axis=-1, keepdims=True)
    labelled = ops.reshape(labelled, (-1, 1))
    return ops.where(labelled > 0, (1.0 - beta) * hard + beta * weight * teacher, beta * teacher)
