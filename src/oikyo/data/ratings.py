"""What a rating means: the one rule for positive, negative and neutral feedback on an answer.

A deployment's feedback (``POST /v1/feedback``) rates answers on one of two scales: thumbs (-1..1)
or stars (1..5). The scale is read from the deployment's ratings: stars once any rating above 1 was
given, else thumbs (a lone 1 is a thumbs-up until a star rating shows the deployment uses stars).

- negative: thumbs below 0, or one or two stars; and a correction given without a rating (the user
  rewrote the answer, so it was not good enough);
- positive: thumbs above 0, or four or five stars;
- neutral: the rest (thumbs 0, three stars).

:mod:`oikyo.monitor.quality` counts negative feedback with it (signals, alerts, canaries) and
:mod:`oikyo.data.traffic` picks the answers that become training data with it, so the two never
disagree on what a rating says::

    stars = uses_stars(highest_rating_of_the_deployment)
    verdict(rating, corrected=False, stars=stars)      # "positive", "negative", "neutral" or "unrated"
"""

from __future__ import annotations


def uses_stars(highest: float | None) -> bool:
    """Whether a deployment whose highest rating so far is ``highest`` rates with stars (1..5)."""
    return highest is not None and highest > 1


def is_negative(rating: float, *, stars: bool) -> bool:
    """A thumbs-down (< 0 on the -1..1 scale) or one or two stars (on the 1..5 scale)."""
    return rating <= 2 if stars else rating < 0


def is_positive(rating: float, *, stars: bool) -> bool:
    """A thumbs-up (> 0 on the -1..1 scale) or four or five stars (on the 1..5 scale)."""
    return rating >= 4 if stars else rating > 0


def verdict(rating: float | None, *, corrected: bool, stars: bool) -> str:
    """What the feedback on one answer says: ``corrected`` (a correction was given, whatever the
    rating), ``positive``, ``negative``, ``neutral``, or ``unrated`` (no feedback)."""
    if corrected:
        return "corrected"
    if rating is None:
        return "unrated"
    if is_negative(rating, stars=stars):
        return "negative"
    return "positive" if is_positive(rating, stars=stars) else "neutral"


def feedback_is_negative(rating: float | None, *, corrected: bool, stars: bool) -> bool:
    """Whether one piece of feedback counts as negative: a negative rating, or a correction without a
    rating (a correction with a rating goes by its rating: "thumbs up, but say it like this")."""
    if rating is None:
        return corrected
    return is_negative(rating, stars=stars)
