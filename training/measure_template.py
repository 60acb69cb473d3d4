"""Measure where MTCNN puts the five landmarks in real UTKFace aligned crops.

The mean positions become ``model.align.TEMPLATE``: aligning a photo's face onto
them reproduces the framing the model was trained on. The script also scores how
well each landmark weighting recovers a crop's own framing (the ideal transform of
a UTKFace crop onto the template is the identity), which picks
``model.align.LANDMARK_WEIGHTS``.

    python -m training.measure_template --n 1500 [--dir ../shared/data/utkface/UTKFace]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

#: Weightings compared (left_eye, right_eye, nose, mouth_left, mouth_right).
WEIGHTINGS: dict[str, tuple[float, ...]] = {
    "all five": (1, 1, 1, 1, 1),
    "no nose": (1, 1, 0, 1, 1),
    "half nose": (1, 1, 0.5, 1, 1),
    "eyes x2": (2, 2, 1, 1, 1),
}


def pick_face(detections: list, size: int):
    """The detection nearest the crop centre (a UTKFace crop holds one main face)."""
    if not detections:
        return None
    centre = np.array([size / 2, size / 2])

    def distance(d) -> float:
        x, y, w, h = d.box
        return float(np.linalg.norm(np.array([x + w / 2, y + h / 2]) - centre))

    return min(detections, key=distance)


def transform_error(m: np.ndarray, size: int = 200) -> tuple[float, float, float]:
    """How far a 2x3 similarity is from the identity: |log scale|, centre shift (px), |angle| (deg)."""
    from model.align import affine_scale, apply_affine

    scale = affine_scale(m)
    c = np.array([[(size - 1) / 2, (size - 1) / 2]])
    shift = float(np.linalg.norm(apply_affine(m, c) - c))
    angle = float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))
    return abs(float(np.log(scale))), shift, abs(angle)


def collect_landmarks(paths: list[Path]) -> np.ndarray:
    """(K, 5, 2) landmarks of the faces MTCNN finds in the given crops."""
    from tqdm import tqdm

    from model.align import landmarks_array
    from model.face_detect import FaceDetector
    from model.image_io import ImageError, load_image

    detector = FaceDetector()
    found = []
    for path in tqdm(paths, desc="detect", file=sys.stderr):
        try:
            rgb = load_image(path)
        except ImageError:
            continue
        face = pick_face(detector.detect(rgb), rgb.shape[1])
        if face is not None:
            found.append(landmarks_array(face.landmarks))
    return np.array(found).reshape(-1, 5, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="UTKFace folder (default: settings.utkface_dir())")
    parser.add_argument("--n", type=int, default=1500, help="number of train-split crops to measure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from model import settings
    from model.align import similarity_transform
    from training.data import sample_split

    folder = args.dir or settings.utkface_dir()
    if folder is None:
        print("no UTKFace folder (set UTKFACE_DIR or pass --dir)", file=sys.stderr)
        return 2
    chosen = sample_split(folder, "train", args.n, args.seed)
    points = collect_landmarks([s.path for s in chosen])
    print(f"detected a face in {len(points)} of {len(chosen)} crops")
    template = points.mean(0)
    std = points.std(0)
    print("TEMPLATE (mean x, y in a 200 px crop) and std:")
    for name, (x, y), (sx, sy) in zip(("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"), template, std, strict=True):
        print(f"    [{x:.1f}, {y:.1f}],  # {name}  (std {sx:.1f}, {sy:.1f})")
    eye_dist = np.linalg.norm(points[:, 1] - points[:, 0], axis=1)
    eye_mouth = np.linalg.norm(points[:, 3:].mean(1) - points[:, :2].mean(1), axis=1)
    print(f"inter-eye distance {eye_dist.mean():.1f} px ({eye_dist.mean() / 200:.3f} of the crop), "
          f"eye-to-mouth {eye_mouth.mean():.1f} px ({eye_mouth.mean() / 200:.3f})")
    print("weighting: mean |log scale|, mean centre shift px, mean |angle| deg (0 = crop's own framing)")
    for name, weights in WEIGHTINGS.items():
        errors = np.array([transform_error(similarity_transform(p, template, np.array(weights))) for p in points])
        print(f"  {name:10s} {errors[:, 0].mean():.4f}  {errors[:, 1].mean():.2f}  {errors[:, 2].mean():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
