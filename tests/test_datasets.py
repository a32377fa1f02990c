"""The bundled weather data and the rain task built from it."""

import csv

import numpy as np
import pytest

from dnnblocks import datasets


def test_bundled_csv_is_the_raw_record():
    with datasets.weather_csv_path().open("r", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1461
    assert list(rows[0]) == ["date", "precipitation", "temp_max", "temp_min", "wind", "weather"]
    assert rows[0]["date"] == "2012/01/01" and rows[-1]["date"] == "2015/12/31"


def test_load_weather_shapes_labels_and_names():
    X, y, names = datasets.load_weather()
    assert X.shape == (1461, 5) and X.dtype == np.float64
    assert y.shape == (1461,) and set(np.unique(y)) == {0, 1}
    assert names == ["temp_max", "temp_min", "wind", "day_sin", "day_cos"]
    # 623 of the 1461 days have precipitation > 0 (counted from the raw file).
    assert int(y.sum()) == 623
    # First day: 2012/01/01, 0.0 mm, 12.8 / 5.0 C, wind 4.7, day 0 of the year.
    np.testing.assert_allclose(X[0], [12.8, 5.0, 4.7, 0.0, 1.0], atol=1e-12)
    assert y[0] == 0 and y[1] == 1  # 2012/01/02 had 10.9 mm


def test_load_weather_does_not_leak_the_label():
    X, y, names = datasets.load_weather()
    assert "precipitation" not in names and "weather" not in names
    # No single feature column equals the label or precipitation.
    for j in range(X.shape[1]):
        assert not np.array_equal(X[:, j] > 0, y.astype(bool))


def test_season_is_a_point_on_the_unit_circle():
    X, _, _ = datasets.load_weather()
    np.testing.assert_allclose(X[:, 3] ** 2 + X[:, 4] ** 2, 1.0, atol=1e-12)


def test_weather_features_day_of_year_and_leap_years():
    X = datasets.weather_features(
        ["2012-01-01", "2012/07/02", "2013-07-02", "2012-12-31", "2013-12-31"],
        [1, 2, 3, 4, 5], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1],
    )
    angle = np.arctan2(X[:, 3], X[:, 4]) % (2 * np.pi)
    # 2 July 2012 is day index 183 of a 366-day year: exactly half-way.
    np.testing.assert_allclose(angle[:2], [0.0, np.pi], atol=1e-12)
    np.testing.assert_allclose(angle[2], 2 * np.pi * 182 / 365, atol=1e-12)
    np.testing.assert_allclose(angle[3], 2 * np.pi * 365 / 366, atol=1e-12)
    np.testing.assert_allclose(angle[4], 2 * np.pi * 364 / 365, atol=1e-12)
    np.testing.assert_array_equal(X[:, 0], [1, 2, 3, 4, 5])


@pytest.mark.parametrize("bad", ["2012-13-01", "yesterday", ""])
def test_weather_features_rejects_bad_dates(bad):
    with pytest.raises(ValueError, match="date"):
        datasets.weather_features(["2012-01-01", bad], [1, 2], [0, 0], [1, 1])


def test_weather_features_rejects_ragged_columns():
    with pytest.raises(ValueError, match="temp_min"):
        datasets.weather_features(["2012-01-01", "2012-01-02"], [1, 2], [0], [1, 1])
