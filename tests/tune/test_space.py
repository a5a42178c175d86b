"""Search spaces: YAML in, every problem listed at once, trials drawn in bounds, overrides a run accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from oikyo.train.config import DataSettings
from oikyo.tune.space import Param, Space, SpaceError, default_space, load_space

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "oikyo" / "configs"


def _write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _study(seed: int = 0):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))  # in memory


def test_default_space_is_the_lora_space_of_the_issue():
    space = load_space(None)
    assert space == default_space()
    assert space["train.lr"] == Param("train.lr", "float", low=1e-5, high=5e-4, log=True)
    assert space["lora.rank"].choices == (8, 16, 32, 64)
    assert space["train.batch_size"].choices == (4, 8, 16)
    assert {"lora.alpha_ratio", "lora.dropout", "train.max_steps", "train.warmup_ratio"} <= set(space.names)
    # data.mix is searched where this install's config has the field (checked at call time).
    assert ("data.mix" in space.names) == ("mix" in DataSettings.model_fields)


def test_round_trips_through_json_and_the_yaml_file_form(tmp_path):
    space = default_space()
    again = Space.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space and again.names == space.names
    from_file = load_space(_write(tmp_path / "space.yaml", space.to_dict()))
    assert from_file == space
    assert set(space.distributions()) == set(space.names)


def test_the_shipped_space_file_is_the_default_space_and_documents_itself():
    path = CONFIGS / "space-lora.yaml"
    assert load_space(path) == default_space()
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# Run: oikyo tune")
    for i, line in enumerate(lines):
        if line.startswith("  ") and not line.lstrip().startswith("#"):
            assert lines[i - 1].lstrip().startswith("#"), f"no comment above {line!r}"


def test_every_problem_is_listed_together_naming_the_file_and_the_param(tmp_path):
    bad = _write(tmp_path / "bad-space.yaml", {
        "params": {
            "train.lrr": {"type": "float", "low": 1e-5, "high": 1e-4},
            "train.lr": {"type": "float", "low": 0.1, "high": 2.0},
            "lora.rank": {"type": "categorical", "choices": [8, "16"]},
            "train.batch_size": {"type": "categorical", "choices": []},
            "lora.dropout": {"type": "gaussian", "low": 0.0, "high": 0.1},
            "train.epochs": {"type": "int", "low": 3, "high": 1},
            "train.max_steps": {"type": "int", "low": 20, "high": 205, "step": 10},
            "train.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.1, "log": True},
            "train.grad_accum": {"type": "int", "low": 1},
            "train.seed": {"type": "int", "low": 0, "high": 3, "choices": [1]},
            "train.weight_decay": {"type": "float", "low": 0.0, "high": 0.1, "step": 0.03},
        },
        "sampler": "tpe",
    })
    with pytest.raises(SpaceError) as caught:
        load_space(bad)
    error = caught.value
    assert "bad-space.yaml" in str(error)
    expected = {
        "train.lrr": "did you mean train.lr?",
        "train.lr": "outside what the config accepts",
        "lora.rank": "mix types",
        "train.batch_size": "non-empty list",
        "lora.dropout": "type must be one of float, int, categorical",
        "train.epochs": "low must be below high",
        "train.max_steps": "does not divide",
        "train.warmup_ratio": "log range needs low > 0",
        "train.grad_accum": "int needs high",
        "train.seed": "choices is not a field",
        "train.weight_decay": "does not divide",
        "sampler": "unknown top-level key",
    }
    for param, message in expected.items():
        assert any(p.startswith(f"{param}: ") and message in p for p in error.problems), (param, error.problems)
    assert len(error.problems) == len(expected)
    assert str(error).count("\n  - ") == len(error.problems)


def test_a_missing_file_bad_yaml_and_a_non_mapping_are_clear_errors(tmp_path):
    with pytest.raises(SpaceError, match="space file not found"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(_write(tmp_path / "broken.yaml", "params: {train.lr: [\n"))
    with pytest.raises(SpaceError, match="must be a mapping") as caught:
        load_space(_write(tmp_path / "list.yaml", "- train.lr\n- lora.rank\n"))
    assert "list.yaml" in str(caught.value)


def test_a_derived_key_and_the_key_it_sets_are_not_searched_together():
    with pytest.raises(SpaceError) as caught:
        Space.from_dict({"params": {
            "lora.alpha": {"type": "float", "low": 8.0, "high": 64.0},
            "lora.alpha_ratio": {"type": "categorical", "choices": [1.0, 2.0]},
            "train.batch_size": {"type": "float", "low": 4.0, "high": 16.0},
        }})
    assert any(p.startswith("lora.alpha_ratio: sets lora.alpha") for p in caught.value.problems)
    assert any(p.startswith("train.batch_size: is a whole-number setting") for p in caught.value.problems)


def test_suggest_draws_inside_the_bounds_with_an_in_memory_study():
    space = default_space()
    study = _study(seed=1)
    seen = {name: set() for name in space.names}
    for _ in range(40):
        trial = study.ask()
        values = space.suggest(trial)
        assert set(values) == set(space.names) and values == trial.params
        assert 1e-5 <= values["train.lr"] <= 5e-4
        assert values["lora.rank"] in (8, 16, 32, 64)
        assert 20 <= values["train.max_steps"] <= 200 and values["train.max_steps"] % 10 == 0
        assert 0.0 <= values["lora.dropout"] <= 0.1 and 0.0 <= values["train.warmup_ratio"] <= 0.2
        for name, value in values.items():
            seen[name].add(value)
        study.tell(trial, values["train.lr"])
    assert len(seen["lora.rank"]) == 4 and len(seen["train.lr"]) == 40  # it does explore


def test_enqueued_values_come_back_from_suggest():
    space = default_space()
    study = _study()
    fixed = {"train.lr": 1e-4, "lora.rank": 8, "lora.alpha_ratio": 2.0, "lora.dropout": 0.05,
             "train.max_steps": 50, "train.warmup_ratio": 0.1, "train.batch_size": 4}
    if "data.mix" in space.names:
        fixed["data.mix"] = 0.1
    study.enqueue_trial(fixed)
    assert space.suggest(study.ask()) == pytest.approx(fixed)


def test_overrides_resolve_derived_keys_and_read_back_as_floats():
    space = default_space()
    values = {"train.lr": 1e-5, "lora.rank": 16, "lora.alpha_ratio": 2.0, "train.batch_size": 8}
    assert space.overrides(values) == ["train.lr=1.0e-05", "lora.rank=16", "lora.alpha=32.0", "train.batch_size=8"]
    # alpha_ratio without the rank in the values: the rank comes from the base config
    assert space.overrides({"lora.alpha_ratio": 4.0}, base={"lora": {"rank": 8}}) == ["lora.alpha=32.0"]
    assert space.overrides({"lora.alpha_ratio": 4.0}) == ["lora.alpha=64.0"]  # the schema's rank 16


def test_overrides_are_accepted_by_the_training_job_on_a_real_config(tmp_path):
    from oikyo.data import split, versions
    from oikyo.jobs import training

    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"{2 * i}."}]} for i in range(30)]
    _write(tmp_path / "sums.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    versions.import_dataset(tmp_path / "sums.jsonl", name="sums")
    dataset, _ = split.split_dataset("sums", validation=0.2, test=0.0)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"never loaded here")

    space = default_space()
    base = yaml.safe_load((CONFIGS / "sft-lora.yaml").read_text())
    assert space.check_against(base) == []
    study = _study(seed=3)
    for _ in range(3):
        values = space.suggest(study.ask())
        overrides = space.overrides(values, base=base)
        prepared = training.prepare(CONFIGS / "sft-lora.yaml", overrides, dataset=dataset.id, model=str(model))
        config = prepared.config
        assert config.train.lr == pytest.approx(values["train.lr"])
        assert config.lora.rank == values["lora.rank"]
        assert config.lora.alpha == pytest.approx(values["lora.rank"] * values["lora.alpha_ratio"])
        assert config.train.max_steps == values["train.max_steps"]
        # the REST API's form: the same values set into the config mapping
        mapping = yaml.safe_load((CONFIGS / "sft-lora.yaml").read_text())
        mapping["data"]["dataset"], mapping["model"]["name"] = dataset.id, str(model)
        for key, value in space.resolve(values, base).items():
            group, name = key.split(".")
            mapping[group][name] = value
        assert training.prepare_config(mapping).config_hash == prepared.config_hash


def test_check_against_names_the_param_a_base_config_rejects():
    space = default_space()
    dpo = yaml.safe_load((CONFIGS / "dpo.yaml").read_text())
    problems = space.check_against(dpo)
    if "data.mix" in space.names:
        assert any(p.startswith("data.mix: 0.3 is rejected by the config: data.mix: replay mixing") for p in problems)
    assert space.check_against({"train": {"warmup_steps": 5}}) == [
        "train.warmup_ratio: has no effect: the base config sets train.warmup_steps, which overrides it "
        "(set train.warmup_steps to null, or search train.warmup_steps)"]
    from oikyo.train.config import TrainConfig

    assert space.check_against(TrainConfig()) == []  # a TrainConfig serves as the base too
    full = space.check_against({"method": {"finetune": "full"}})
    assert {p.split(":")[0] for p in full} == {"lora.rank", "lora.alpha_ratio", "lora.dropout"}
    assert space.check_against({"train": {"lr": "fast"}}) == ["base config: train.lr: Input should be a valid "
                                                              "number, unable to parse string as a number "
                                                              "(got 'fast')"]
    # a cross-field check of the config: early stopping needs evaluations, which this base turns off
    patience = Space.from_dict({"params": {"train.early_stopping_patience": {"type": "categorical",
                                                                              "choices": [None, 3]}}})
    assert patience.check_against({}) == []
    assert patience.check_against({"train": {"eval_every": None}}) == [
        "train.early_stopping_patience: 3 is rejected by the config: train.early_stopping_patience: early "
        "stopping needs train.eval_every and data.eval_split"]


def test_a_param_another_key_overrides_is_refused():
    both = {"train.epochs": {"type": "int", "low": 1, "high": 3},
            "train.max_steps": {"type": "int", "low": 20, "high": 200, "step": 10}}
    with pytest.raises(SpaceError) as caught:
        Space.from_dict({"params": both})
    assert caught.value.problems == ["train.epochs: has no effect: the space also searches train.max_steps, which "
                                     "overrides it (search one of the two, or add null to train.max_steps's choices)"]
    # with null among max_steps' choices, epochs counts in those trials
    either = Space.from_dict({"params": {**both, "train.max_steps": {"type": "categorical", "choices": [None, 50]}}})
    assert either.check_against({}) == []
    assert Space.from_dict({"params": {"train.epochs": both["train.epochs"]}}).check_against(
        {"train": {"max_steps": 30}})[0].startswith("train.epochs: has no effect: the base config sets train.max_steps")


def test_a_derived_key_takes_positive_numbers_only():
    with pytest.raises(SpaceError) as caught:
        Space.from_dict({"params": {"lora.alpha_ratio": {"type": "categorical", "choices": [None, 2.0, -1.0]},
                                    "lora.rank": {"type": "categorical", "choices": [8, "sixteen"]}}})
    assert ("lora.alpha_ratio: every value must be a positive number, as lora.alpha = lora.rank x alpha_ratio "
            "(got null, -1.0)") in caught.value.problems
    assert any(p.startswith("lora.rank: choices mix types") for p in caught.value.problems)
