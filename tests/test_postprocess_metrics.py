import numpy as np
import pytest

from model.labels import NUM_AGE_BINS
from model.postprocess import age_intervals, ethnicity_names, expected_age, gender_names
from training.metrics import (
    age_report,
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    full_report,
)


def _peak(age: int, width: int = 0) -> np.ndarray:
    dist = np.zeros(NUM_AGE_BINS)
    dist[age - width : age + width + 1] = 1.0
    return dist / dist.sum()


def test_expected_age_and_interval_of_peaked_distributions():
    dists = np.stack([_peak(30), _peak(60, 5)])
    np.testing.assert_allclose(expected_age(dists), [30, 60])
    intervals = age_intervals(dists)
    assert intervals[0, 0] == pytest.approx(29.6) and intervals[0, 1] == pytest.approx(30.4)
    assert intervals[1, 0] == pytest.approx(55 - 0.5 + 0.1 * 11) and intervals[1, 1] == pytest.approx(65 + 0.5 - 0.1 * 11)
    assert (intervals[:, 1] - intervals[:, 0])[1] > (intervals[:, 1] - intervals[:, 0])[0]


def test_class_names_from_probabilities():
    names, probs = gender_names(np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert names == ["male", "female"] and probs.tolist() == [0.9, 0.8]
    names, _ = ethnicity_names(np.eye(5)[[4, 2]])
    assert names == ["other", "asian"]


def test_ece_zero_when_calibrated_and_positive_when_overconfident():
    labels = np.array([0, 1] * 50)
    perfect = np.eye(2)[labels]
    assert expected_calibration_error(perfect, labels) == pytest.approx(0.0)
    overconfident = np.tile([0.99, 0.01], (100, 1))  # always says 0, right half the time
    assert expected_calibration_error(overconfident, labels) == pytest.approx(0.49, abs=1e-6)


def test_confusion_matrix_rows_are_true_classes():
    assert confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 2) == [[1, 1], [0, 1]]


def test_classification_and_age_reports():
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    report = classification_report(probs, np.array([0, 1, 1]), ("male", "female"))
    assert report["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["per_class"]["female"]["recall"] == 0.5
    assert report["balanced_accuracy"] == 0.75
    age = age_report(np.array([10, 30, 80]), np.array([12, 30, 70]), np.array([[9, 13], [25, 35], [60, 75]]))
    assert age["mae"] == 4.0 and age["within_5_years"] == pytest.approx(2 / 3, abs=1e-4)
    assert age["by_age_group"]["70+"] == {"n": 1, "mae": 10.0, "bias": -10.0}
    assert age["interval_coverage"] == pytest.approx(2 / 3, abs=1e-4)


def test_full_report_has_the_published_keys():
    rng = np.random.default_rng(0)
    n = 50
    report = full_report(
        ages=rng.integers(1, 90, n),
        genders=rng.integers(0, 2, n),
        ethnicities=rng.integers(0, 5, n),
        predicted_age=rng.uniform(1, 90, n),
        age_interval=np.stack([np.zeros(n), np.full(n, 100)], 1),
        gender_probs=rng.dirichlet([1, 1], n),
        ethnicity_probs=rng.dirichlet([1] * 5, n),
    )
    for key in ("n", "age_mae", "gender_accuracy", "ethnicity_accuracy", "age_within_5_years", "gender_ece", "ethnicity_ece"):
        assert key in report
    assert set(report["by_ethnicity"]) == {"white", "black", "asian", "indian", "other"}
    assert sum(v["n"] for v in report["by_gender"].values()) == n
    assert np.array(report["ethnicity"]["confusion_matrix"]).sum() == n
    assert sum(v["n"] for v in report["by_age_group"].values()) == n


def test_full_report_scores_gender_per_true_age_group():
    ages = np.array([1, 2, 1, 2, 30, 35])
    genders = np.array([0, 1, 1, 0, 0, 1])
    right = np.eye(2)[genders]  # sure and right
    gender_probs = np.where(np.arange(6)[:, None] < 2, 1 - right, right)  # the first two babies wrong
    report = full_report(ages, genders, np.zeros(6, int), ages.astype(float), np.stack([ages, ages], 1),
                         gender_probs, np.eye(5)[np.zeros(6, int)])
    by_age = report["by_age_group"]
    assert by_age["0-2"]["n"] == 4 and by_age["0-2"]["gender_accuracy"] == 0.5
    assert by_age["30-39"] == {"n": 2, "age_mae": 0.0, "gender_accuracy": 1.0, "ethnicity_accuracy": 1.0}
    assert by_age["70+"]["n"] == 0 and by_age["70+"]["gender_accuracy"] is None


def test_balanced_mae_weighs_each_full_age_group_equally():
    from training.metrics import balanced_mae

    # 30 faces in their twenties off by 1 year, 10 over seventy off by 9, 3 toddlers (too few, left out).
    true = np.array([25.0] * 30 + [80.0] * 10 + [1.0] * 3)
    predicted = true + np.array([1.0] * 30 + [-9.0] * 10 + [50.0] * 3)
    assert balanced_mae(true, predicted) == pytest.approx(5.0)  # (1 + 9) / 2, not the face mean
    assert balanced_mae(true, predicted, min_count=3) == pytest.approx((1 + 9 + 50) / 3)
    assert np.isnan(balanced_mae(true[:5], predicted[:5]))
