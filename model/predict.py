"""Command line: analyse photos (files or folders) with the same pipeline as the app.

    python -m model.predict photo.jpg holiday/            # readable table
    python -m model.predict --json photo.jpg > faces.json  # one JSON list, an object per image
    python -m model.predict --gradcam-dir cams/ photo.jpg  # also Grad-CAM overlays + heat maps

A bad file gives an ``error`` entry and the run goes on; the exit code is 1 only
when no file could be read (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from model.image_io import IMAGE_SUFFIXES

#: Keys of a face in ``--json`` output.
JSON_FACE_KEYS: tuple[str, ...] = (
    "box",
    "detection_confidence",
    "age",
    "age_interval",
    "gender",
    "gender_probability",
    "ethnicity",
    "ethnicity_probabilities",
    "unfamiliarity",
    "unfamiliar",
)


def collect_paths(paths: list[str]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted, not recursive).

    A missing path is kept so that it gets its own error entry.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(path)
    return out


def face_json(face) -> dict[str, Any]:
    """The ``--json`` view of a FaceResult (plain Python numbers)."""
    full = face.to_dict()
    return {key: full[key] for key in JSON_FACE_KEYS}


def write_gradcam(analyzer, photo, faces: list, stem: str, out_dir: Path) -> list[Path]:
    """``S_face{i}_{head}.png`` (overlay) and ``.npy`` (heat map in photo pixels) per face and head."""
    from model.heatmap_draw import save_explanation
    from model.labels import HEAD_NAMES

    written = []
    for face in faces:
        for head in HEAD_NAMES:
            written += save_explanation(analyzer.explain(photo, face, head), out_dir, stem, face.index)
    return written


def gradcam_stems(paths: list[Path]) -> list[str]:
    """File stems for the Grad-CAM files, made unique: a/me.jpg and b/me.png give me, me-2.

    Two inputs with one stem would otherwise overwrite each other's heat maps.
    """
    taken: set[str] = set()
    stems = []
    for path in paths:
        stem, n = path.stem, 1
        while stem in taken:  # also skips a real file already called me-2
            n += 1
            stem = f"{path.stem}-{n}"
        taken.add(stem)
        stems.append(stem)
    return stems


def analyze_file(analyzer, path: Path, gradcam_dir: Path | None, stem: str | None = None) -> dict[str, Any]:
    """One image -> ``{"image", "faces", "error"}``; never raises for a bad image.

    ``stem`` names the Grad-CAM files (default: the file's own stem).
    """
    from model.analyzer import ImageError, TooManyFacesError

    entry: dict[str, Any] = {"image": str(path), "faces": [], "error": None}
    try:
        photo = analyzer.load_photo(path)
        faces = analyzer.analyze(photo)
    except (ImageError, TooManyFacesError) as exc:
        entry["error"] = str(exc)
        return entry
    except Exception as exc:  # noqa: BLE001 - one broken file must not stop a batch
        entry["error"] = f"{type(exc).__name__}: {exc}"
        return entry
    entry["faces"] = [face_json(f) for f in faces]
    if gradcam_dir is not None and faces:
        try:
            write_gradcam(analyzer, photo, faces, stem or path.stem, gradcam_dir)
        except Exception as exc:  # noqa: BLE001 - the analysis stands; say what failed and go on
            print(f"warning: Grad-CAM for {path} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return entry


def format_table(entries: list[dict[str, Any]]) -> str:
    """A readable per-face table."""
    from model.labels import ETHNICITY_DISPLAY

    lines = [f"{'image':32s} {'face':>4s}  {'box (x,y,w,h)':20s} {'age (80% range)':18s} {'gender':14s} ethnicity"]
    for entry in entries:
        name = entry["image"] if len(entry["image"]) <= 32 else "..." + entry["image"][-29:]
        if entry["error"]:
            lines.append(f"{name:32s} error: {entry['error']}")
            continue
        if not entry["faces"]:
            lines.append(f"{name:32s} no face found")
            continue
        for i, face in enumerate(entry["faces"]):
            box = ",".join(str(v) for v in face["box"])
            low, high = face["age_interval"]
            age = f"{face['age']:.0f} ({low:.0f}-{high:.0f})"
            gender = f"{face['gender']} {face['gender_probability']:.0%}"
            eth = face["ethnicity"]
            eth_text = f"{ETHNICITY_DISPLAY.get(eth, eth)} {face['ethnicity_probabilities'][eth]:.0%}"
            flag = (f"  ! unlike the training photos (unfamiliarity {face['unfamiliarity']:.1f})"
                    if face.get("unfamiliar") else "")
            lines.append(f"{name:32s} {i:4d}  {box:20s} {age:18s} {gender:14s} {eth_text}{flag}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.predict",
        description="Estimate age, gender and ethnicity for every face in photos.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    parser.add_argument("--json", action="store_true", help="print one JSON list (an object per image)")
    parser.add_argument("--gradcam-dir", type=Path, default=None, metavar="DIR",
                        help="also write Grad-CAM overlays (.png) and heat maps (.npy) per face and head")
    parser.add_argument("--model", type=Path, default=None, help="model file (default: FACELENS_MODEL or the shipped one)")
    return parser


def main(argv: list[str] | None = None, analyzer=None) -> int:
    """CLI entry point; ``analyzer`` may be injected (tests) instead of loading ``--model``."""
    args = build_parser().parse_args(argv)
    paths = collect_paths(args.paths)
    if not paths:
        print("no image files found in the given paths", file=sys.stderr)
        return 1
    if analyzer is None:
        from model.analyzer import FaceAnalyzer

        try:
            analyzer = FaceAnalyzer(args.model)
        except FileNotFoundError as exc:
            print(str(exc), file=sys.stderr)
            return 1
    from tqdm import tqdm

    entries = []
    stems = gradcam_stems(paths)
    for path, stem in zip(tqdm(paths, desc="photos", unit="img", file=sys.stderr, disable=len(paths) < 2), stems,
                          strict=True):
        if args.gradcam_dir is not None and stem != path.stem:
            print(f"note: Grad-CAM files of {path} are named {stem}_face*", file=sys.stderr)
        entries.append(analyze_file(analyzer, path, args.gradcam_dir, stem))
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        print(format_table(entries))
    return 0 if any(entry["error"] is None for entry in entries) else 1


if __name__ == "__main__":
    raise SystemExit(main())
