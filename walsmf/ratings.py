"""The lab's rating rule: a read's duration scaled by the median duration, capped.

    rating = 0.3 · (1 + (duration − median) / median), at most 1

so a read of median length rates 0.3 and one of 3.33× the median or longer
rates 1.  In-process preprocessing, the Beam pipeline and the serving
export's default for a new visitor's reads all use this module.
"""
import numpy as np

RATING_SCALE = 0.3
MAX_RATING = 1.0
# What a read of median length rates: rating_of(median, median).
MEDIAN_READ_RATING = RATING_SCALE


def rating_of(duration, median, minimum=np.minimum):
    """The rating of a duration (a number, an array, or with ``minimum=tf.minimum`` a tensor) given the median
    duration."""
    return minimum(RATING_SCALE * (1 + (duration - median) / median), MAX_RATING)


def duration_of(rating, median):
    """A duration that rates ``rating`` given the median duration (rating_of's inverse; a rating of 1 comes back as
    the shortest duration that rates 1, 3.33× the median)."""
    return rating * median / RATING_SCALE


def add_ratings(df):
    """(visitorId, contentId, rating) rows of extracted (visitorId, contentId, session_duration) rows,
    and the median duration."""
    median = float(df["session_duration"].median())
    out = df[["visitorId", "contentId"]].copy()
    out["rating"] = rating_of(df["session_duration"].values, median)
    return out, median
