"""The training config: shipped files validate, every problem is listed at once, YAML round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from oikyo.train.config import (
    ConfigError,
    TrainConfig,
    config_hash,
    dump_yaml,
    load_config,
    resolve_runtime,
)

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "oikyo" / "configs"
# space-*.yaml are search spaces of `oikyo tune`, not training configs (tests/tune/test_space.py checks them).
SHIPPED = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("space-"))


def test_the_expected_configs_are_shipped():
    assert {p.name for p in SHIPPED} >= {"sft-lora.yaml", "full.yaml", "dpo.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates_and_documents_itself(path):
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    lines = path.read_text().splitlines()
    # Opens with the exact command that runs it.
    assert lines[0].startswith(f"# Run: oikyo train --config src/oikyo/configs/{path.name}")
    # Every knob carries a comment on the line before it.
    for i, line in enumerate(lines):
        if line.startswith("  ") and not line.lstrip().startswith("#"):
            assert lines[i - 1].lstrip().startswith("#"), f"{path.name}: no comment above {line!r}"


def test_shipped_configs_differ_where_they_should():
    assert load_config(CONFIGS / "sft-lora.yaml").method.finetune == "lora"
    assert load_config(CONFIGS / "full.yaml").method.finetune == "full"
    assert load_config(CONFIGS / "dpo.yaml").method.name == "dpo"


def test_every_field_has_a_description():
    for group, info in TrainConfig.model_fields.items():
        assert info.description, group
        for name, field in info.annotation.model_fields.items():
            assert field.description, f"{group}.{name}"


def test_all_problems_are_listed_together_one_line_each_with_the_dotted_path():
    with pytest.raises(ConfigError) as caught:
        load_config(
            None,
            [
                "train.lr=-1",
                "train.batch_size=0",
                "method.name=ppo",
                "train.lrr=1e-4",
                "lora.target_modules=[]",
                "not-an-override",
            ],
            bogus=3,
        )
    problems = caught.value.problems
    text = str(caught.value)
    assert len(problems) == 7, text
    for expected in ("train.lr:", "train.batch_size:", "method.name:", "lora.target_modules:", "not-an-override:", "bogus:"):
        assert any(p.startswith(expected) for p in problems), (expected, text)
    assert any("train.lrr: unknown setting; did you mean train.lr?" in p for p in problems)
    assert text.startswith("Invalid training config (7 problems):")
    assert len(text.splitlines()) == 8


def test_cross_field_problems_are_listed_together():
    with pytest.raises(ConfigError) as caught:
        load_config(
            None,
            [
                "method.name=dpo",
                "data.packing=true",
                "train.early_stopping_patience=2",
                "train.eval_every=null",
                "train.device=cpu",
                "train.dtype=bfloat16",
            ],
        )
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == ["data.packing", "train.early_stopping_patience", "train.dtype"]


def test_qlora_without_cuda_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="method.finetune: qlora needs a CUDA GPU"):
        load_config(None, ["method.finetune=qlora"])


def test_auto_resolves_to_float32_and_physical_cores_on_a_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from oikyo.train.hardware import detect

    runtime = resolve_runtime(load_config())
    assert runtime.device in ("cpu", "mps")
    assert runtime.dtype == "float32"  # never bf16 autocast on a CPU
    assert runtime.num_threads == detect().physical_cores >= 1


def test_quick_overrides_and_dotted_values_parse_as_yaml():
    config = load_config(None, ["train.lr=1e-4", "lora.target_modules=[q_proj, v_proj]", "data.eval_split=null"],
                         dataset="support@abc", model="/models/x", rank=8, max_steps=None)
    assert config.train.lr == 1e-4
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.data.eval_split is None
    assert config.data.dataset == "support@abc"
    assert config.model.name == "/models/x"
    assert config.lora.rank == 8
    assert config.train.max_steps is None


def test_yaml_file_plus_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 3.0e-4\n  epochs: 2\nlora:\n  rank: 4\n")
    config = load_config(path, ["train.epochs=3"])
    assert (config.train.lr, config.train.epochs, config.lora.rank) == (3e-4, 3, 4)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_dump_yaml_round_trips_and_the_hash_is_stable(tmp_path):
    config = load_config(None, ["train.lr=1e-5", "lora.target_modules=[q_proj]", "train.num_threads=3"])
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_yaml(config, header="a header"))
    again = load_config(path)
    assert again == config
    assert config_hash(again) == config_hash(config)
    assert len(config_hash(config)) == 64
    assert config_hash(load_config(None, ["train.lr=2e-5"])) != config_hash(config)
    assert path.read_text().startswith("# a header\n")
