"""Labelled sources with partial labels: labels.csv folders, FairFace CSV, splits by identity,
and the prepare step that runs images through the detector and aligner once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import synthetic_face, write_utkface_folder
from training.sources import (
    label_arrays,
    parse_age_range,
    parse_ethnicity,
    parse_gender,
    read_fairface_csv,
    read_labels_csv,
    read_source,
)


def write_labels_folder(folder: Path, rows: list[dict], seed: int = 0) -> Path:
    """A labels.csv folder whose images are distinct synthetic faces (missing files stay missing)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    columns = ["file", "age", "age_low", "age_high", "gender", "ethnicity", "identity"]
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
            if row.get("file") and not row.get("_missing"):
                img = synthetic_face(rng)
                cv2.imwrite(str(folder / row["file"]), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return folder


def test_label_parsers_accept_common_spellings_and_refuse_nonsense():
    assert parse_gender("Male") == 0 and parse_gender(" f ") == 1 and parse_gender("") is None
    assert parse_ethnicity("East Asian") == 2 and parse_ethnicity("Latino_Hispanic") == 4
    assert parse_ethnicity("Middle Eastern") == 4 and parse_ethnicity("3") == 3 and parse_ethnicity(None) is None
    assert parse_age_range("30-39") == (30, 39) and parse_age_range("more than 70") == (70, 116)
    assert parse_age_range("70+") == (70, 116) and parse_age_range("34") == (34, 34)
    for bad in ("old", "40-30", "200"):
        with pytest.raises(ValueError):
            parse_age_range(bad)
    with pytest.raises(ValueError):
        parse_gender("maybe")


def test_labels_csv_keeps_partial_labels_and_counts_what_it_skips(tmp_path):
    rows = [
        {"file": "images/a.jpg", "gender": "female", "identity": "p1"},
        {"file": "images/b.jpg", "age": "34", "ethnicity": "white", "identity": "p1"},
        {"file": "images/c.jpg", "age_low": "30", "age_high": "39"},
        {"file": "images/d.jpg", "gender": "robot"},
        {"file": "images/e.jpg", "gender": "male", "_missing": True},
        {"file": "images/f.jpg"},
    ]
    records, report = read_labels_csv(write_labels_folder(tmp_path / "set", rows), "set")
    assert [r.name for r in records] == ["images/a.jpg", "images/b.jpg", "images/c.jpg"]
    assert report.rows == 6 and report.kept == 3
    assert report.skipped == {"unparseable label": 1, "missing or unreadable file": 1, "no label": 1}
    a, b, c = records
    assert (a.gender, a.age, a.ethnicity) == (1, None, None)
    assert (b.age, b.age_low, b.age_high, b.ethnicity) == (34, 34, 34, 0)
    assert (c.age, c.age_low, c.age_high) == (None, 30, 39)
    assert a.split == b.split, "one person's photos must sit on one side of the split"
    arrays = label_arrays(records)
    np.testing.assert_array_equal(arrays["gender"], [1, -1, -1])
    np.testing.assert_array_equal(arrays["age"], [-1, 34, -1])
    np.testing.assert_array_equal(arrays["age_low"], [-1, 34, 30])


def test_split_by_identity_never_puts_a_person_on_both_sides(tmp_path):
    rows = [{"file": f"images/{i}.jpg", "gender": "male" if i % 2 else "female", "identity": f"p{i // 2}"}
            for i in range(120)]
    records, _ = read_labels_csv(write_labels_folder(tmp_path / "set", rows), "set")
    sides: dict[str, set[str]] = {}
    for r in records:
        sides.setdefault(r.identity, set()).add(r.split)
    assert all(len(s) == 1 for s in sides.values())
    assert {r.split for r in records} == {"train", "val", "test"}


def test_group_by_age_and_custom_fractions(tmp_path):
    rows = [{"file": f"images/{i}.jpg", "age": str(20 + 2 * (i % 10))} for i in range(40)]
    records, _ = read_labels_csv(write_labels_folder(tmp_path / "set", rows), "set", group_by="age",
                                 fractions=(0.5, 0.5, 0.0))
    by_age: dict[int, set[str]] = {}
    for r in records:
        by_age.setdefault(r.age, set()).add(r.split)
    assert all(len(s) == 1 for s in by_age.values())
    assert {r.split for r in records} <= {"train", "val"}


def test_fairface_csv_maps_groups_and_seven_races(tmp_path):
    folder = tmp_path / "fairface"
    (folder / "train").mkdir(parents=True)
    rng = np.random.default_rng(3)
    lines = ["file,age,gender,race,service_test"]
    for i, (age, gender, race) in enumerate([("30-39", "Male", "East Asian"), ("more than 70", "Female", "Middle Eastern"),
                                             ("0-2", "Female", "Southeast Asian"), ("20-29", "Male", "Martian")]):
        cv2.imwrite(str(folder / "train" / f"{i}.jpg"), synthetic_face(rng))
        lines.append(f"train/{i}.jpg,{age},{gender},{race},True")
    (folder / "fairface_label_train.csv").write_text("\n".join(lines) + "\n")
    records, report = read_source(folder / "fairface_label_train.csv")
    assert report.kind == "fairface" and report.skipped == {"unparseable label": 1}
    assert [(r.age, r.age_low, r.age_high, r.gender, r.ethnicity) for r in records] == [
        (None, 30, 39, 0, 2), (None, 70, 116, 1, 4), (None, 0, 2, 1, 2)]
    again, _ = read_fairface_csv(folder / "fairface_label_train.csv")
    assert [r.split for r in again] == [r.split for r in records]


def test_read_source_still_reads_utkface_names(tmp_path):
    write_utkface_folder(tmp_path / "utk", n=12, seed=4)
    records, report = read_source(tmp_path / "utk", "utk")
    assert report.kind == "utkface" and len(records) == 12
    assert all(r.age == r.age_low == r.age_high and r.gender in (0, 1) for r in records)


class _CentreDetector:
    """A stand-in for MTCNN: one face with landmarks where UTKFace framing puts them."""

    def detect(self, photo):
        from model.align import LANDMARK_NAMES, TEMPLATE
        from model.face_detect import Detection

        h, w = photo.shape[:2]
        if photo.mean() < 5:  # a black image has no face
            return []
        pts = TEMPLATE * np.array([w / 200.0, h / 200.0])
        return [Detection((0.0, 0.0, float(w), float(h)), 0.99, {n: tuple(p) for n, p in zip(LANDMARK_NAMES, pts)})]


def test_prepare_aligns_once_counts_failures_and_resumes(tmp_path):
    from training.prepare import SourceSpec, load_prepared, prepare_source

    rows = [{"file": f"images/{i}.jpg", "gender": "male", "identity": f"p{i}"} for i in range(5)]
    folder = write_labels_folder(tmp_path / "set", rows)
    cv2.imwrite(str(folder / "images" / "3.jpg"), np.zeros((60, 60, 3), np.uint8))  # no face
    (folder / "images" / "4.jpg").write_bytes(b"not a jpeg")  # unreadable
    spec = SourceSpec.parse(f"set={folder},weight=0.5")
    assert spec.weight == 0.5
    report = prepare_source(spec, tmp_path / "out", input_size=64, detector=_CentreDetector(), progress=False)
    assert report["images"] == 5 and report["aligned"] == 3
    assert report["failed"] == {"unreadable": 1, "no face": 1, "alignment failed": 0}
    assert json.loads((tmp_path / "out" / "set" / "report.json").read_text())["aligned"] == 3
    records, faces = load_prepared(spec, tmp_path / "out", input_size=64)
    assert faces.shape == (3, 64, 64, 3) and faces.dtype == np.uint8 and faces.std() > 10
    assert [r.name for r in records] == ["images/0.jpg", "images/1.jpg", "images/2.jpg"]
    for split in ("train", "val", "test"):
        part, part_faces = load_prepared(spec, tmp_path / "out", input_size=64, split=split)
        assert [r.name for r in part] == [r.name for r in records if r.split == split]
        assert len(part_faces) == len(part)

    class Exploding:
        def detect(self, photo):
            raise AssertionError("finished chunks must not be redone")

    again = prepare_source(spec, tmp_path / "out", input_size=64, detector=Exploding(), progress=False)
    assert again["aligned"] == 3
    # Another crop size shares the folder: its chunks are added, the 64 px ones stay.
    prepare_source(spec, tmp_path / "out", input_size=32, detector=_CentreDetector(), progress=False)
    assert load_prepared(spec, tmp_path / "out", input_size=32)[1].shape == (3, 32, 32, 3)
    assert load_prepared(spec, tmp_path / "out", input_size=64)[1].shape == (3, 64, 64, 3)
    # A chunk left by an older record list (same size) is removed.
    stale = tmp_path / "out" / "set" / "part_00007_000000000000.npz"
    np.savez(stale, faces=np.zeros((1, 64, 64, 3), np.uint8), reasons=np.zeros(1, np.int8), several=0)
    prepare_source(spec, tmp_path / "out", input_size=64, detector=Exploding(), progress=False)
    assert not stale.exists()


@pytest.mark.slow
def test_prepare_runs_the_real_detector_on_a_real_portrait(tmp_path):
    """The real path: MTCNN finds the astronaut's face and the crop is UTKFace-framed."""
    from skimage import data

    from model.settings import INPUT_SIZE
    from training.prepare import SourceSpec, load_prepared, prepare_source

    folder = tmp_path / "set"
    (folder / "images").mkdir(parents=True)
    cv2.imwrite(str(folder / "images" / "astronaut.jpg"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    (folder / "labels.csv").write_text("file,age,gender\nimages/astronaut.jpg,42,female\n")
    spec = SourceSpec.parse(f"set={folder}")
    report = prepare_source(spec, tmp_path / "out", progress=False)
    assert report["aligned"] == 1
    records, faces = load_prepared(spec, tmp_path / "out")
    assert records[0].age == 42 and faces.shape == (1, INPUT_SIZE, INPUT_SIZE, 3)  # the shipped model's size


def test_source_spec_refuses_bad_options():
    from training.prepare import SourceSpec

    spec = SourceSpec.parse("ea=/x,group=age,split=50/50/0")
    assert spec.group_by == "age" and spec.fractions == (0.5, 0.5, 0.0)
    for bad in ("nopath", "a=/x,colour=red", "a=/x,split=50/40/0"):
        with pytest.raises(ValueError):
            SourceSpec.parse(bad)
