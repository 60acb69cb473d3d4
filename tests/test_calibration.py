"""The unfamiliarity measure and the read-out corrections, on small generated data."""

from __future__ import annotations

import numpy as np
import pytest

from model.calibration import Calibration, calibration_path, load_for_model, scale_intervals, temper
from model.familiarity import Familiarity


def _features(rng, n, d=40, shift=0.0, scale=1.0):
    basis = np.linspace(3.0, 0.2, d)  # anisotropic, like real features
    return (rng.normal(size=(n, d)) * basis * scale + shift).astype(np.float32)


def test_unfamiliarity_is_about_one_at_home_and_grows_away_from_it():
    rng = np.random.default_rng(0)
    fam = Familiarity.fit(_features(rng, 2000), k=8).with_reference(_features(rng, 500))
    home = fam.unfamiliarity(_features(rng, 500))
    assert 0.9 < np.median(home) < 1.1
    near = fam.unfamiliarity(_features(rng, 500, shift=1.0))
    far = fam.unfamiliarity(_features(rng, 500, shift=4.0))
    noisy = fam.unfamiliarity(_features(rng, 500, scale=3.0))
    assert np.median(home) < np.median(near) < np.median(far)
    assert np.median(noisy) > 2.0
    with pytest.raises(ValueError, match="features"):
        Familiarity.fit(np.zeros((1, 5)))


def test_temper_flattens_and_keeps_the_order():
    p = np.array([[0.9, 0.1], [0.3, 0.7]])
    same = temper(p, np.ones(2))
    assert np.allclose(same, p)
    flat = temper(p, np.array([2.0, 2.0]))
    assert np.allclose(flat.sum(1), 1.0)
    assert 0.5 < flat[0, 0] < 0.9 and flat[1, 1] > 0.5 and flat[1, 1] < 0.7


def test_intervals_stretch_around_the_centre_within_the_age_range():
    centre = np.array([30.0, 2.0])
    iv = np.array([[25.0, 40.0], [0.0, 6.0]])
    out = scale_intervals(centre, iv, np.array([2.0, 2.0]), np.array([2.0, 2.0]), 0.0, 116.0)
    assert out[0].tolist() == [20.0, 50.0]
    assert out[1].tolist() == [0.0, 10.0]  # clipped at age 0
    lopsided = scale_intervals(centre, iv, np.array([1.0, 1.0]), np.array([1.5, 1.5]), 0.0, 116.0)
    assert lopsided[0].tolist() == [25.0, 45.0]  # only the upper half grew


def test_a_calibration_file_with_one_interval_scale_loads_it_for_both_sides(tmp_path):
    """Calibration files written before the sides were fitted apart stay readable."""
    path = tmp_path / "old.calibration.npz"
    np.savez(path, interval_scale=np.array([0.8, 0.1]), age_prior_power=np.float64(0.0))
    cal = Calibration.load(path)
    assert cal.interval_below == cal.interval_above == (0.8, 0.1)


def _dist(ages, k=117, sd=4.0):
    bins = np.arange(k)
    d = np.exp(-0.5 * ((bins[None, :] - np.asarray(ages)[:, None]) / sd) ** 2)
    return d / d.sum(1, keepdims=True)


def test_identity_calibration_changes_nothing():
    dist = _dist([30, 70])
    g = np.array([[0.8, 0.2], [0.4, 0.6]])
    e = np.full((2, 5), 0.2)
    out = Calibration().apply(dist, g, e, features=np.zeros((2, 3)))
    assert Calibration().is_identity
    assert np.allclose(out["age"], [30, 70], atol=0.01) and np.allclose(out["gender"], g)
    assert np.isnan(out["unfamiliarity"]).all()


def test_calibration_widens_intervals_and_tempers_unfamiliar_faces_and_divides_the_prior(tmp_path):
    rng = np.random.default_rng(1)
    fam = Familiarity.fit(_features(rng, 1000), k=8).with_reference(_features(rng, 300))
    prior = _dist([28], sd=12.0)[0]
    cal = Calibration(familiarity=fam, age_prior=prior, age_prior_power=0.5, interval_below=(0.9, 0.5),
                      interval_above=(1.2, 0.5),
                      gender_temperature=(1.0, 1.0), ethnicity_temperature=(1.0, 1.0), warn_above=2.0)
    features = np.concatenate([_features(rng, 1), _features(rng, 1, shift=6.0)])
    dist = _dist([70, 70])
    g = np.array([[0.9, 0.1], [0.9, 0.1]])
    out = cal.apply(dist, g, np.full((2, 5), 0.2), features)
    u = out["unfamiliarity"]
    assert u[0] < 2.0 < u[1]
    assert not cal.is_unfamiliar(u[0]) and cal.is_unfamiliar(u[1]) and not cal.is_unfamiliar(float("nan"))
    width = out["age_interval"][:, 1] - out["age_interval"][:, 0]
    assert width[1] > width[0]
    assert out["gender"][1, 0] < out["gender"][0, 0] <= 0.9 + 1e-9
    assert (out["age"] > 70.0).all()  # dividing out a young prior moves old answers up
    # round trip through the file stored beside a model
    path = cal.save(calibration_path(tmp_path / "m.keras"))
    assert path.name == "m.calibration.npz"
    back = load_for_model(tmp_path / "m.keras")
    again = back.apply(dist, g, np.full((2, 5), 0.2), features)
    for key in ("age", "age_interval", "gender", "unfamiliarity"):
        assert np.allclose(again[key], out[key])
    assert back.warn_above == 2.0 and (back.interval_below, back.interval_above) == ((0.9, 0.5), (1.2, 0.5))
    assert load_for_model(tmp_path / "other.keras").is_identity


def test_fit_calibration_widens_where_faces_are_unfamiliar_and_keeps_its_promise():
    """A home set with small errors and an off-home set with larger errors and unfamiliar
    features: after fitting, the 80% interval covers ~80% of each, and off-home gender
    probabilities are tempered."""
    from training.calibrate import EvalSet, before_after, fit_calibration, training_age_prior

    rng = np.random.default_rng(3)
    n = 600

    def make(shift, err_sd, gender_noise, name):
        ages = rng.integers(18, 70, n)
        guess = ages + rng.normal(0, err_sd, n)
        gender = rng.integers(0, 2, n)
        right = rng.random(n) > gender_noise  # confident answers, wrong for a share of faces
        p_male = np.where((gender == 0) == right, 0.95, 0.05)
        raw = {"age_dist": _dist(guess, sd=4.0), "gender": np.stack([p_male, 1 - p_male], 1),
               "ethnicity": np.full((n, 5), 0.2), "features": _features(rng, n, shift=shift)}
        labels = {"age": ages, "age_low": ages, "age_high": ages, "gender": gender, "ethnicity": np.full(n, -1)}
        return EvalSet(name, raw, labels)

    home, away = make(0.0, 4.0, 0.03, "home"), make(3.0, 10.0, 0.25, "away")
    labels = home.labels
    prior = training_age_prior(labels, np.full(n, 1.0 / n), np.ones(n))
    assert prior.shape == (117,) and np.isclose(prior.sum(), 1.0) and prior[40] > prior[100]
    cal, fitted = fit_calibration(_features(rng, 3000), _features(rng, 300), prior, [home, away], k=8)
    assert max(fitted["interval_below"][1], fitted["interval_above"][1]) > 0
    assert fitted["gender_temperature"][1] > 0
    report = before_after([home, away], cal)
    assert report["away"]["before"]["interval_coverage"] < 0.6
    for name in ("home", "away"):
        assert 0.7 < report[name]["after"]["interval_coverage"] < 0.9
    assert report["away"]["after"]["gender_ece"] < report["away"]["before"]["gender_ece"]
    assert report["home"]["after"]["flagged_unfamiliar"] <= 0.02 < report["away"]["after"]["flagged_unfamiliar"]


def test_interval_sides_lean_towards_where_the_truth_lies_and_every_set_reaches_the_floor():
    """An off-home set read 6 years too young, with features as ordinary as home's, so the
    unfamiliarity cannot help: the upper side grows more than the lower, and the 80%
    interval covers at least the floor on both sets without covering nearly everything at home."""
    from training.calibrate import COVERAGE_FLOOR, EvalSet, fit_interval_sides, interval_sides

    rng = np.random.default_rng(3)
    n = 800

    def make(bias, name):
        ages = rng.integers(20, 60, n)
        guess = ages - bias + rng.normal(0, 5.0, n)
        raw = {"age_dist": _dist(guess, sd=5.0)}
        return EvalSet(name, raw, {"age": ages, "gender": np.full(n, -1), "ethnicity": np.full(n, -1)})

    sets = [make(0.0, "home"), make(6.0, "young-looking")]
    sides = [interval_sides(Calibration(), s, np.ones(n)) for s in sets]
    below, above = fit_interval_sides(sides)
    assert above[0] > below[0] + 0.2
    covered = [1.0 - sum(side.missed(below, above)) for side in sides]
    assert min(covered) >= COVERAGE_FLOOR
    assert covered[0] < 0.93
    # without the off-home set, the sides stay near symmetric and home near 80%
    below_home, above_home = fit_interval_sides(sides[:1])
    assert abs(above_home[0] - below_home[0]) < 0.15
    assert 0.76 < 1.0 - sum(sides[0].missed(below_home, above_home)) < 0.84


def test_ethnicity_prior_moves_close_calls_to_rare_groups_and_survives_the_file(tmp_path):
    prior = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    e = np.array([[0.40, 0.10, 0.10, 0.10, 0.30], [0.05, 0.90, 0.02, 0.02, 0.01]])
    g = np.array([[0.5, 0.5], [0.5, 0.5]])
    plain = Calibration(ethnicity_prior=prior, ethnicity_prior_power=0.0)
    assert plain.is_identity and np.allclose(plain.apply(_dist([30, 30]), g, e)["ethnicity"], e)
    cal = Calibration(ethnicity_prior=prior, ethnicity_prior_power=0.5)
    out = cal.apply(_dist([30, 30]), g, e)["ethnicity"]
    assert not cal.is_identity and np.allclose(out.sum(1), 1.0)
    assert out[0].argmax() == 4 and out[1].argmax() == 1  # a close call moves, a clear one stays
    back = Calibration.load(cal.save(tmp_path / "c.calibration.npz"))
    assert back.ethnicity_prior_power == 0.5 and np.allclose(back.apply(_dist([30, 30]), g, e)["ethnicity"], out)


def test_ethnicity_prior_power_is_chosen_where_both_mixes_gain_and_is_zero_when_nothing_gains():
    """A classifier that calls rare groups' close faces by the commonest group's name: dividing
    out part of the training mix wins back the rare groups at little cost to the common one.
    A classifier that is already right keeps the plain read-out (ties go to the smaller power)."""
    from training.calibrate import EvalSet, choose_ethnicity_prior_power, training_class_prior

    rng = np.random.default_rng(5)
    mix = np.array([0.45, 0.2, 0.15, 0.13, 0.07])
    codes = rng.choice(5, size=2000, p=mix)
    prior = training_class_prior(np.concatenate([codes, [-1, -1]]), np.full(2002, 1 / 2002))
    assert np.allclose(prior, mix, atol=0.03) and np.isclose(prior.sum(), 1.0)

    def evalset(p_true, p_common):
        probs = np.full((len(codes), 5), (1 - p_true - p_common) / 3)
        probs[np.arange(len(codes)), codes] = p_true
        probs[codes != 0, 0] = p_common
        probs[codes == 0] = np.full(5, (1 - 0.8) / 4)
        probs[codes == 0, 0] = 0.8
        probs /= probs.sum(1, keepdims=True)
        n = len(codes)
        return EvalSet("val", {"age_dist": _dist(np.full(n, 30.0)), "gender": np.full((n, 2), 0.5), "ethnicity": probs},
                       {"age": np.full(n, -1), "age_low": np.full(n, -1), "age_high": np.full(n, -1),
                        "gender": np.full(n, -1), "ethnicity": codes})

    base = Calibration(ethnicity_prior=prior)
    power, scores = choose_ethnicity_prior_power([evalset(0.35, 0.45)], base, "between")
    assert sorted(scores) == [i / 10 for i in range(11)]
    assert choose_ethnicity_prior_power([evalset(0.35, 0.45)], base, "training") == (0.0, scores)
    assert power > 0 and scores[power]["balanced_accuracy"] > scores[0.0]["balanced_accuracy"] + 0.3
    assert scores[power]["score"] > scores[0.0]["score"]
    power, scores = choose_ethnicity_prior_power([evalset(0.7, 0.1)], base, "between")
    assert power == 0.0 and scores[0.0]["accuracy"] == 1.0
    assert choose_ethnicity_prior_power([evalset(0.7, 0.1)], Calibration(), "between") == (0.0, {})
    with pytest.raises(ValueError, match="mix"):
        choose_ethnicity_prior_power([evalset(0.7, 0.1)], base, "even")


def test_best_mean_power_is_one_rule_for_float_and_card_keys_and_ties_go_to_the_smaller_power():
    from model.calibration import best_mean_power

    table = {0.0: {"score": 0.80}, 0.3: {"score": 0.83}, 0.5: {"score": 0.83}, 1.0: {"score": 0.79}}
    assert best_mean_power(table) == 0.3
    as_read_from_a_card = {str(k): v for k, v in reversed(list(table.items()))}
    assert best_mean_power(as_read_from_a_card) == "0.3"
