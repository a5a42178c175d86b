"""`oikyo quickstart --tune`: which Pareto point it promotes, and its shipped search space."""

from __future__ import annotations

from importlib.resources import files

from oikyo.quickstart import QUICK_SPACE, TRAIN_OVERRIDES, pick_trial


def _trial(number: int, accuracy: float, forgetting: float, state: str = "complete") -> dict:
    return {"number": number, "state": state, "values": {"json_field_accuracy": accuracy, "forgetting": forgetting}}


def test_the_most_accurate_trial_that_forgets_little_is_promoted():
    trials = [_trial(0, 0.9, 0.2), _trial(1, 0.7, 0.01), _trial(2, 0.8, 0.04), _trial(3, 0.95, 0.0, "pruned")]
    assert pick_trial(trials)["number"] == 2


def test_when_every_trial_forgets_too_much_the_one_that_forgets_least_is_promoted():
    trials = [_trial(0, 0.9, 0.3), _trial(1, 0.5, 0.12), _trial(2, 0.8, 0.2)]
    assert pick_trial(trials)["number"] == 1


def test_the_quickstart_space_loads_and_fits_its_recipe(tmp_path):
    from oikyo.tune.space import load_space
    from oikyo.train.config import load_config

    space = load_space(str(files("oikyo") / "configs" / QUICK_SPACE))
    assert {"train.lr", "data.mix", "train.max_steps"} <= set(space.names)
    base = load_config(None, list(TRAIN_OVERRIDES)).model_dump(mode="json")
    assert space.check_against(base) == []
