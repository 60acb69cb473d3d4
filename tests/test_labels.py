import pytest

from model import labels


def test_gender_and_ethnicity_codes_follow_utkface():
    assert labels.GENDERS == ("male", "female")
    assert labels.gender_name(0) == "male" and labels.gender_name(1) == "female"
    assert labels.ETHNICITIES == ("white", "black", "asian", "indian", "other")
    assert [labels.ethnicity_name(i) for i in range(5)] == list(labels.ETHNICITIES)
    assert set(labels.ETHNICITY_DISPLAY) == set(labels.ETHNICITIES)


@pytest.mark.parametrize("bad", [-1, 2, 7])
def test_unknown_gender_code_raises(bad):
    with pytest.raises(ValueError):
        labels.gender_name(bad)


@pytest.mark.parametrize("bad", [-1, 5, 9])
def test_unknown_ethnicity_code_raises(bad):
    with pytest.raises(ValueError):
        labels.ethnicity_name(bad)


def test_age_groups_cover_every_age_once_in_order():
    groups = labels.AGE_GROUPS
    assert groups[0].low == labels.AGE_MIN and groups[-1].high == labels.AGE_MAX
    for previous, current in zip(groups, groups[1:]):
        assert current.low == previous.high + 1
    for age in range(labels.AGE_MIN, labels.AGE_MAX + 1):
        assert sum(g.contains(age) for g in groups) == 1


@pytest.mark.parametrize(
    ("age", "group"),
    [(0, "0-2"), (2.9, "0-2"), (3, "3-9"), (19.5, "10-19"), (29, "20-29"), (70, "70+"), (116, "70+"), (500, "70+"), (-4, "0-2")],
)
def test_age_group_lookup(age, group):
    assert labels.age_group(age) == group


def test_age_bins_span_the_label_range():
    assert labels.NUM_AGE_BINS == labels.AGE_MAX - labels.AGE_MIN + 1
    assert labels.valid_age(1) and labels.valid_age(116)
    assert not labels.valid_age(0) and not labels.valid_age(117)


def test_head_names():
    assert labels.HEAD_NAMES == ("age", "gender", "ethnicity")


def test_age_group_names_match_age_group_for_every_age():
    import numpy as np

    from model.labels import age_group, age_group_names

    ages = np.concatenate([np.arange(-3, 125, 0.5), [2.999, 9.5, 19.99, 69.999, 70.0, 116.0, 200.0]])
    assert list(age_group_names(ages)) == [age_group(a) for a in ages]
    assert age_group_names(np.array([[1.0, 75.0]])).tolist() == [["0-2", "70+"]]  # any shape
