"""Data sets shipped with dnnblocks.

Only one, small and public domain: the Seattle daily weather record that the
``dnnblocks train`` command uses when it is given no CSV file.
"""

from importlib import resources

import numpy as np

__all__ = ["WEATHER_FEATURES", "load_weather", "weather_csv_path", "weather_features"]

#: Names of the columns of X returned by :func:`load_weather`, in order.
WEATHER_FEATURES = ("temp_max", "temp_min", "wind", "day_sin", "day_cos")

#: Columns of the raw CSV that :func:`weather_features` needs.
WEATHER_INPUT_COLUMNS = ("date", "temp_max", "temp_min", "wind")


def weather_csv_path():
    """Path of the bundled ``seattle-weather.csv``.

    Returns
    -------
    path : importlib.resources.abc.Traversable
        A path-like object; ``open()`` it, or ``str()`` it when dnnblocks is
        installed as ordinary files (the usual case).

    Examples
    --------
    >>> import dnnblocks.datasets as ds
    >>> ds.weather_csv_path().name
    'seattle-weather.csv'
    """
    return resources.files("dnnblocks").joinpath("data", "seattle-weather.csv")


def weather_features(date, temp_max, temp_min, wind):
    """Build the rain task's features from the raw weather columns.

    The season enters as the day of the year on a circle, ``sin`` and ``cos``
    of ``2 pi (day - 1) / days_in_year``, so that 31 December and 1 January
    are neighbours.

    Parameters
    ----------
    date : sequence of str
        Dates as ``YYYY-MM-DD`` or ``YYYY/MM/DD``.
    temp_max, temp_min, wind : array_like of float
        Daily maximum and minimum temperature (degrees C) and mean wind
        speed (m/s), one value per date.

    Returns
    -------
    X : ndarray of shape (n_days, 5), float64
        Columns in the order of :data:`WEATHER_FEATURES`.

    Raises
    ------
    ValueError
        If a date cannot be read or the columns differ in length.
    """
    text = np.asarray(date, dtype=str)
    if text.ndim != 1:
        raise ValueError(f"date must be a 1-D sequence of strings; got shape {text.shape}")
    try:
        days = np.char.replace(np.char.strip(text), "/", "-").astype("datetime64[D]")
    except ValueError:
        bad = next(i for i, s in enumerate(text) if not _is_date(s))
        raise ValueError(
            f"date: cannot read {str(text[bad])!r} (row {bad + 1}) as a date; expected YYYY-MM-DD"
        ) from None
    if np.isnat(days).any():
        bad = int(np.flatnonzero(np.isnat(days))[0])
        raise ValueError(f"date: row {bad + 1} is empty or 'NaT'; every row needs a date")
    year_start = days.astype("datetime64[Y]").astype("datetime64[D]")
    next_year = (days.astype("datetime64[Y]") + 1).astype("datetime64[D]")
    day_index = (days - year_start).astype(np.float64)  # 0 for 1 January
    year_length = (next_year - year_start).astype(np.float64)
    angle = 2.0 * np.pi * day_index / year_length
    columns = [np.asarray(c, dtype=np.float64) for c in (temp_max, temp_min, wind)]
    for name, c in zip(("temp_max", "temp_min", "wind"), columns):
        if c.shape != days.shape:
            raise ValueError(f"{name} must have one value per date ({days.shape[0]}); got shape {c.shape}")
    return np.column_stack(columns + [np.sin(angle), np.cos(angle)])


def _is_date(s):
    try:
        np.datetime64(s.strip().replace("/", "-"), "D")
    except ValueError:
        return False
    return True


def load_weather():
    """The Seattle daily weather record 2012-2015 as the "did it rain?" task.

    Data: daily observations at Seattle (Seattle-Tacoma airport) from
    1 January 2012 to 31 December 2015, 1,461 days, from NOAA's Global
    Historical Climatology Network (GHCN-Daily). US government data, in the
    public domain. The raw file ships with dnnblocks (see
    :func:`weather_csv_path`) with the columns ``date``, ``precipitation``
    (mm), ``temp_max``, ``temp_min`` (degrees C), ``wind`` (m/s) and
    ``weather`` (drizzle, rain, sun, snow or fog).

    The task: did it rain that day (``precipitation > 0``; 42.6% of days)?
    The features are the day's temperatures, wind and season (see
    :func:`weather_features`). Neither ``precipitation`` (it *is* the answer)
    nor ``weather`` (a label derived from it, which leaks the answer) is a
    feature. A plain logistic regression reaches about 78% accuracy on this
    task; the features do not determine the answer, so no model gets close
    to 100%.

    Returns
    -------
    X : ndarray of shape (1461, 5), float64
        Examples as rows (the scikit-learn convention), columns
        :data:`WEATHER_FEATURES`; not standardised.
    y : ndarray of shape (1461,), int64
        1 if it rained, 0 if not.
    feature_names : list of str
        ``["temp_max", "temp_min", "wind", "day_sin", "day_cos"]``.

    Examples
    --------
    >>> from dnnblocks.datasets import load_weather
    >>> X, y, names = load_weather()
    >>> X.shape, int(y.sum())
    ((1461, 5), 623)
    """
    import csv

    with weather_csv_path().open("r", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    col = {name: [r[name] for r in rows] for name in rows[0]}
    X = weather_features(col["date"], col["temp_max"], col["temp_min"], col["wind"])
    y = (np.asarray(col["precipitation"], dtype=np.float64) > 0).astype(np.int64)
    return X, y, list(WEATHER_FEATURES)
