"""Data layer: UTKFace names, Kaggle CSV, duplicates, content-hash split, summary."""

import json
import shutil

import numpy as np
import pytest

from model.labels import ETHNICITIES, GENDERS
from tests.conftest import write_utkface_folder
from training.cache import cache_key, cached_images
from training.data import (
    SPLITS,
    Labels,
    index_dataset,
    index_kaggle_csv,
    index_utkface_dir,
    load_rgb,
    parse_utkface_name,
    sample_split,
    split_of,
)
from training.summary import imbalance_ratio, summarize


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("100_0_0_20170112213500903.jpg.chip.jpg", Labels(100, 0, 0)),
        ("1_1_4_20161221193016140.jpg.chip.jpg", Labels(1, 1, 4)),
        ("24_0_1_20170116220224657 .jpg.chip.jpg", Labels(24, 0, 1)),  # stray space
        ("/some/dir/35_1_2_20170104.jpg", Labels(35, 1, 2)),
        ("39_1_20170116174525125.jpg.chip.jpg", None),  # missing race field
        ("61_3_20170109150557335.jpg.chip.jpg", None),
        ("abc_0_1_20170116.jpg", None),
        ("0_0_1_20170116.jpg", None),  # age 0 is not a UTKFace label
        ("117_0_1_20170116.jpg", None),
        ("30_2_1_20170116.jpg", None),  # unknown gender
        ("30_0_5_20170116.jpg", None),  # unknown race
        ("30_0_1_.jpg", None),
        ("readme.txt", None),
    ],
)
def test_parse_utkface_name(name, expected):
    assert parse_utkface_name(name) == expected


def test_index_folder_skips_bad_names_and_unreadable_files(tmp_path):
    write_utkface_folder(tmp_path, n=12)
    (tmp_path / "39_1_20170116174525125.jpg.chip.jpg").write_bytes(b"not really")
    (tmp_path / "notes.txt").write_text("ignored: not an image name")
    (tmp_path / "50_0_0_20170101000000000.jpg.chip.jpg").write_bytes(b"\xff\xd8\xff garbage")
    index = index_utkface_dir(tmp_path)
    assert index.unparseable == 1
    assert len(index.samples) == 13  # the garbage file parses; decoding it fails later
    garbage = next(s for s in index.samples if s.age == 50 and s.name.startswith("50_0_0_2017010100"))
    assert load_rgb(garbage) is None
    good = next(s for s in index.samples if s is not garbage)
    rgb = load_rgb(good)
    assert rgb.dtype == np.uint8 and rgb.shape == (200, 200, 3)


def test_progress_callback_reaches_the_end(tmp_path):
    write_utkface_folder(tmp_path, n=5)
    calls = []
    index_utkface_dir(tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (5, 5)


def test_missing_folder_raises_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        index_utkface_dir(tmp_path / "nope")


def test_duplicates_collapse_and_conflicts_are_dropped(tmp_path):
    paths = write_utkface_folder(tmp_path, n=6)
    same = paths[0].name.split("_", 3)
    shutil.copy(paths[0], tmp_path / f"{same[0]}_{same[1]}_{same[2]}_29990101000000001.jpg.chip.jpg")
    age = int(paths[1].name.split("_")[0])
    conflict = f"{age % 90 + 1}_{paths[1].name.split('_')[1]}_{paths[1].name.split('_')[2]}_29990101000000002.jpg.chip.jpg"
    shutil.copy(paths[1], tmp_path / conflict)
    index = index_utkface_dir(tmp_path)
    assert index.duplicate_groups == 2
    assert index.duplicates_removed == 1
    assert index.conflicting_groups == 1 and index.conflicting_removed == 2
    assert len(index.samples) == 6 - 1
    assert len({s.digest for s in index.samples}) == len(index.samples)
    kept_all = index_utkface_dir(tmp_path, dedupe=False)
    assert len(kept_all.samples) == 8
    assert kept_all.duplicate_groups == 2 and kept_all.conflicting_groups == 1
    assert kept_all.duplicates_removed == 0 and kept_all.conflicting_removed == 0


def test_split_is_deterministic_stable_and_leak_free(tmp_path):
    write_utkface_folder(tmp_path, n=40, seed=3)
    first = {s.name: s.split for s in index_utkface_dir(tmp_path).samples}
    assert first == {s.name: s.split for s in index_utkface_dir(tmp_path).samples}
    write_utkface_folder(tmp_path / "more", n=20, seed=4)  # adding files moves nothing
    second = {s.name: s.split for s in index_utkface_dir(tmp_path).samples}
    assert all(second[name] == split for name, split in first.items())
    # identical content -> identical split, whatever the name
    assert split_of("ab" * 20) == split_of("ab" * 20)


def test_split_fractions_on_many_hashes():
    import hashlib

    splits = [split_of(hashlib.sha1(str(i).encode()).hexdigest()) for i in range(20000)]
    shares = {s: splits.count(s) / len(splits) for s in SPLITS}
    assert abs(shares["train"] - 0.8) < 0.02
    assert abs(shares["val"] - 0.1) < 0.01 and abs(shares["test"] - 0.1) < 0.01


def _write_csv(path, rows):
    lines = ["age,ethnicity,gender,img_name,pixels"] + [",".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_kaggle_csv_source(tmp_path):
    rng = np.random.default_rng(0)
    pix = [" ".join(map(str, rng.integers(0, 256, 48 * 48))) for _ in range(4)]
    rows = [
        (25, 2, 1, "a.jpg", pix[0]),
        (60, 0, 0, "b.jpg", pix[1]),
        (60, 0, 0, "b_copy.jpg", pix[1]),  # duplicate pixels, same labels
        (7, 9, 0, "bad_race.jpg", pix[2]),
        (30, 1, 1, "short.jpg", "1 2 3"),  # not a square image
        ("x", 1, 1, "bad_age.jpg", pix[3]),
    ]
    path = tmp_path / "age_gender.csv"
    _write_csv(path, rows)
    index = index_dataset(path)
    assert index.files_seen == 6
    assert index.unparseable == 3
    assert index.duplicates_removed == 1
    assert sorted((s.age, s.gender, s.ethnicity) for s in index.samples) == [(25, 1, 2), (60, 0, 0)]
    rgb = load_rgb(index.samples[0])
    assert rgb.shape == (48, 48, 3) and rgb.dtype == np.uint8


def test_kaggle_csv_without_pixels_column_is_rejected(tmp_path):
    path = tmp_path / "wrong.csv"
    path.write_text("age,gender\n3,1\n")
    with pytest.raises(ValueError, match="pixels"):
        index_kaggle_csv(path)


def test_summary_counts_and_json(tmp_path):
    write_utkface_folder(tmp_path, n=30, seed=5)
    index = index_utkface_dir(tmp_path)
    summary = summarize(index)
    json.dumps(summary)  # JSON-able
    assert summary["n"] == 30
    assert sum(summary["gender_counts"].values()) == 30
    assert list(summary["ethnicity_counts"]) == list(ETHNICITIES)
    assert sum(summary["age_group_counts"].values()) == 30
    assert sum(sum(row.values()) for row in summary["gender_by_ethnicity"].values()) == 30
    assert list(summary["gender_by_ethnicity"]) == list(GENDERS)
    assert sum(summary["splits"].values()) == 30
    assert summary["quality"]["kept"] == 30


def test_imbalance_ratio():
    assert imbalance_ratio({"a": 10, "b": 5, "c": 0}) == 2.0
    assert imbalance_ratio({"a": 0}) is None


def test_sample_split_is_reproducible_and_stays_in_its_split(utkface_dir):
    first = sample_split(utkface_dir, "train", 10, seed=3)
    assert [s.path for s in first] == [s.path for s in sample_split(utkface_dir, "train", 10, seed=3)]
    assert len(first) == 10 and all(s.split == "train" for s in first)
    assert [s.path for s in first] == sorted(s.path for s in first)
    assert {s.path for s in first} != {s.path for s in sample_split(utkface_dir, "train", 10, seed=4)}
    every_test = sample_split(utkface_dir, "test", 10_000)
    assert 0 < len(every_test) < 48 and all(s.split == "test" for s in every_test)


def test_cache_round_trip(tmp_path, utkface_dir):
    samples = index_utkface_dir(utkface_dir).samples[:6]
    images, ok = cached_images(samples, 64, tmp_path)
    assert images.shape == (6, 64, 64, 3) and ok.all()
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again, _ = cached_images(samples, 64, tmp_path)
    np.testing.assert_array_equal(images, again)
    assert cache_key(samples, 64) != cache_key(samples[:5], 64) != cache_key(samples, 96)
