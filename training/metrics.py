"""Pure metric functions over numpy arrays (no TensorFlow): MAE by group,
accuracy, confusion matrices, expected calibration error."""

from __future__ import annotations

import numpy as np

from model.labels import AGE_GROUP_NAMES, ETHNICITIES, GENDERS, age_group_names


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence: sum over bins of |accuracy - confidence| x share."""
    probs = np.asarray(probabilities, np.float64)
    if len(probs) == 0:
        return float("nan")
    confidence = probs.max(1)
    correct = probs.argmax(1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> list[list[int]]:
    """Rows = true class, columns = predicted class."""
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix.tolist()


def _rounded(value: float, digits: int = 4) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), digits)


def classification_report(probabilities: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
    probs = np.asarray(probabilities)
    labels = np.asarray(labels)
    predicted = probs.argmax(1)
    per_class = {}
    for code, name in enumerate(names):
        true_here = labels == code
        pred_here = predicted == code
        tp = int((true_here & pred_here).sum())
        recall = tp / true_here.sum() if true_here.any() else float("nan")
        precision = tp / pred_here.sum() if pred_here.any() else float("nan")
        per_class[name] = {
            "n": int(true_here.sum()),
            "recall": _rounded(recall),
            "precision": _rounded(precision),
        }
    recalls = [v["recall"] for v in per_class.values() if v["recall"] is not None]
    return {
        "accuracy": _rounded((predicted == labels).mean() if len(labels) else float("nan")),
        "balanced_accuracy": _rounded(float(np.mean(recalls)) if recalls else float("nan")),
        "ece": _rounded(expected_calibration_error(probs, labels)),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, predicted, len(names)),
        "labels": list(names),
    }


def age_report(true_age: np.ndarray, predicted_age: np.ndarray, intervals: np.ndarray | None = None) -> dict:
    true_age = np.asarray(true_age, np.float64)
    predicted_age = np.asarray(predicted_age, np.float64)
    errors = np.abs(true_age - predicted_age)
    groups = age_group_names(true_age)
    by_group = {}
    for name in AGE_GROUP_NAMES:
        here = groups == name
        by_group[name] = {
            "n": int(here.sum()),
            "mae": _rounded(errors[here].mean()) if here.any() else None,
            "bias": _rounded((predicted_age[here] - true_age[here]).mean()) if here.any() else None,
        }
    report = {
        "mae": _rounded(errors.mean() if len(errors) else float("nan")),
        "median_absolute_error": _rounded(np.median(errors) if len(errors) else float("nan")),
        "within_5_years": _rounded((errors <= 5).mean() if len(errors) else float("nan")),
        "within_10_years": _rounded((errors <= 10).mean() if len(errors) else float("nan")),
        "by_age_group": by_group,
    }
    if intervals is not None and len(errors):
        intervals = np.asarray(intervals)
        inside = (true_age >= intervals[:, 0]) & (true_age <= intervals[:, 1])
        report["interval_coverage"] = _rounded(inside.mean())
        report["interval_mean_width"] = _rounded((intervals[:, 1] - intervals[:, 0]).mean())
    return report


def balanced_mae(true_age: np.ndarray, predicted: np.ndarray, min_count: int = 10) -> float:
    """Mean over the report's age groups (with at least ``min_count`` faces) of the group MAE,
    so a 75-year-old counts as much as a 25-year-old (unrounded: it ranks read-outs)."""
    true_age = np.asarray(true_age, np.float64)
    groups = age_group_names(true_age)
    maes = []
    for name in AGE_GROUP_NAMES:
        inside = groups == name
        if inside.sum() >= min_count:
            maes.append(np.abs(predicted[inside] - true_age[inside]).mean())
    return float(np.mean(maes)) if maes else float("nan")


def full_report(
    ages: np.ndarray,
    genders: np.ndarray,
    ethnicities: np.ndarray,
    predicted_age: np.ndarray,
    age_interval: np.ndarray,
    gender_probs: np.ndarray,
    ethnicity_probs: np.ndarray,
) -> dict:
    """Everything the evaluate CLI and the model card report, as one JSON-able dict."""
    ages, genders, ethnicities = (np.asarray(a) for a in (ages, genders, ethnicities))
    age = age_report(ages, predicted_age, age_interval)
    gender = classification_report(gender_probs, genders, GENDERS)
    ethnicity = classification_report(ethnicity_probs, ethnicities, ETHNICITIES)
    errors = np.abs(ages - np.asarray(predicted_age))
    age_groups = age_group_names(ages)
    g_pred = np.asarray(gender_probs).argmax(1)
    e_pred = np.asarray(ethnicity_probs).argmax(1)

    def group_metrics(mask: np.ndarray) -> dict:
        if not mask.any():
            return {"n": 0, "age_mae": None, "gender_accuracy": None, "ethnicity_accuracy": None}
        return {
            "n": int(mask.sum()),
            "age_mae": _rounded(errors[mask].mean()),
            "gender_accuracy": _rounded((g_pred[mask] == genders[mask]).mean()),
            "ethnicity_accuracy": _rounded((e_pred[mask] == ethnicities[mask]).mean()),
        }

    return {
        "n": int(len(ages)),
        "age_mae": age["mae"],
        "gender_accuracy": gender["accuracy"],
        "ethnicity_accuracy": ethnicity["accuracy"],
        "age_within_5_years": age["within_5_years"],
        "gender_ece": gender["ece"],
        "ethnicity_ece": ethnicity["ece"],
        "age": age,
        "gender": gender,
        "ethnicity": ethnicity,
        "by_gender": {name: group_metrics(genders == code) for code, name in enumerate(GENDERS)},
        "by_ethnicity": {name: group_metrics(ethnicities == code) for code, name in enumerate(ETHNICITIES)},
        # Gender from a baby's face is near a coin flip: the app quotes this per age group.
        "by_age_group": {name: group_metrics(age_groups == name) for name in AGE_GROUP_NAMES},
    }


def partial_report(
    labels: dict[str, np.ndarray],
    predicted_age: np.ndarray,
    age_interval: np.ndarray,
    gender_probs: np.ndarray,
    ethnicity_probs: np.ndarray,
) -> dict:
    """Metrics for faces with partial labels (-1 = missing; see training.sources.label_arrays).

    Each head is scored on the faces that carry its label: exact ages give the age
    report; age ranges give the share of predictions inside the range and the mean
    distance to it. Heads without any label report ``None``.
    """
    predicted_age = np.asarray(predicted_age, np.float64)
    exact = labels["age"] >= 0
    ranged = (~exact) & (labels["age_low"] >= 0)
    has_gender = labels["gender"] >= 0
    has_eth = labels["ethnicity"] >= 0
    report: dict = {
        "n": int(len(predicted_age)),
        "n_exact_age": int(exact.sum()),
        "n_age_range": int(ranged.sum()),
        "n_gender": int(has_gender.sum()),
        "n_ethnicity": int(has_eth.sum()),
        "age_mae": None,
        "age_bias": None,
        "gender_accuracy": None,
        "ethnicity_accuracy": None,
    }
    if exact.any():
        age = age_report(labels["age"][exact], predicted_age[exact], np.asarray(age_interval)[exact])
        report["age"] = age
        report["age_mae"] = age["mae"]
        report["age_bias"] = _rounded((predicted_age[exact] - labels["age"][exact]).mean())
        report["age_within_5_years"] = age["within_5_years"]
    if ranged.any():
        low, high = labels["age_low"][ranged], labels["age_high"][ranged] + 1.0
        guess = predicted_age[ranged]
        distance = np.maximum(0.0, np.maximum(low - guess, guess - high))
        report["age_range"] = {"in_range": _rounded((distance == 0).mean()),
                               "mean_distance_years": _rounded(distance.mean())}
    if has_gender.any():
        gender = classification_report(np.asarray(gender_probs)[has_gender], labels["gender"][has_gender], GENDERS)
        report["gender"] = gender
        report["gender_accuracy"] = gender["accuracy"]
        report["gender_ece"] = gender["ece"]
    if has_eth.any():
        eth = classification_report(np.asarray(ethnicity_probs)[has_eth], labels["ethnicity"][has_eth], ETHNICITIES)
        report["ethnicity"] = eth
        report["ethnicity_accuracy"] = eth["accuracy"]
        report["ethnicity_ece"] = eth["ece"]
    if exact.all() and has_gender.all() and has_eth.all():  # fully labelled: the full report too
        report.update(full_report(labels["age"], labels["gender"], labels["ethnicity"], predicted_age,
                                  age_interval, gender_probs, ethnicity_probs))
    return report
