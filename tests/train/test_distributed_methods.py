"""train.nproc=2 (gloo) beyond sft: dpo, orpo, kto and grpo (LoRA under DDP), kto with full fine-tuning
(FSDP2), pretrain (packed) and sft with replay mixing follow the 1-process run step for step; a KTO
checkpoint saved at 2 processes resumes at 1.

The 2-process runs all train in one torchrun group (dist_methods_child.py: starting the processes costs
more than the runs); the worker's launch path around them is test_distributed_exact.py's subject.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from disthelpers import largest_difference, train
from test_kto import kto_rows
from test_pretrain import text_rows
from trainhelpers import chat_rows, preference_rows

# 13 rows in batches of 3: shares of 1 and 2, and each epoch's last batch holds one row, so one rank
# runs a zero-weighted stand-in (KTO's reference point must leave it out). 3 steps per epoch: 12 steps
# are 4 epochs, each ending with a stand-in.
STEPS = 12
SHORT = [f"train.max_steps={STEPS}", f"train.eval_every={STEPS}", "data.max_length=64"]
CHILD = Path(__file__).with_name("dist_methods_child.py")  # the 2-process side, in one torchrun group
UNCOMPARED = {"tokens_per_s", "memory_mb", "generation_s", "generated_tokens_per_s"}  # the machine, not the training

CASES = {
    "dpo": (["method.name=dpo"], preference_rows(13)),
    "orpo": (["method.name=orpo"], preference_rows(13)),
    # Checkpoints at 6 (with an eval loss, so best-k keeps it) and 12: step 6 is resumed at 1 process.
    "kto": (["method.name=kto", "checkpoint.save_every=6", "train.eval_every=6", "checkpoint.keep_best=3"],
            kto_rows(13)),
    # Full fine-tuning (FSDP2): a frozen reference copy, and a no-grad forward of the sharded policy (the
    # mismatched pairs) before the one with gradients. 20 steps: its loss moves slowly (by ~0.017 in 12).
    "kto-full": (["method.name=kto", "method.finetune=full", "train.lr=1e-4", "train.max_steps=20",
                  "train.eval_every=20"], kto_rows(13)),
    "pretrain": (["method.name=pretrain", "data.max_length=32"], text_rows(13)),
    "sft-replay": (["data.mix=0.25"], chat_rows(13)),
    # Generation inside each step (seeded per prompt and sample, so both runs sample the same groups); its
    # engine is slow to start and to run, so 4 steps. Its loss is ~0 by construction (advantages sum to 0).
    "grpo": (["method.name=grpo", "grpo.rewards=[{name: length_penalty, args: {target: 40}}]", "train.lr=5e-3",
              "grpo.num_generations=4", "grpo.max_new_tokens=8", "data.max_length=128", "train.max_steps=4",
              "train.eval_every=4"], chat_rows(13)),
}
# Every GRPO group agrees (the tiny model never writes JSON): nothing to learn, no step may move the weights
# (with weight decay, AdamW would move them on the zero gradients the ranks' backward passes leave).
AGREE = (["method.name=grpo", "grpo.rewards=json_valid", "grpo.num_generations=2", "grpo.max_new_tokens=4",
          "train.max_steps=3", "train.eval_every=3", "train.weight_decay=0.1"], chat_rows(13))


def overrides_of(case: str) -> list[str]:
    return [*SHORT, *CASES[case][0]]


@pytest.fixture(scope="module")
def two_processes(tiny_dir, tmp_path_factory) -> tuple[Path, dict]:
    """Every case trained once by 2 processes: (their run folders' parent, {case: {metrics, logs}} and
    "global_mean": the child's global_mean check)."""
    root = tmp_path_factory.mktemp("two-processes")
    cases = {case: {"overrides": overrides_of(case), "rows": rows, "model_dir": str(tiny_dir),
                    "run_dir": str(root / case)} for case, (_, rows) in CASES.items()}
    cases["grpo-agree"] = {"overrides": AGREE[0], "rows": AGREE[1], "model_dir": str(tiny_dir),
                           "run_dir": str(root / "grpo-agree")}
    (root / "cases.json").write_text(json.dumps(cases))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "--max-restarts=0", str(CHILD), str(root / "cases.json"), str(root / "result.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OIKYO_DIST_TIMEOUT_S="120", PYTHONUNBUFFERED="1"))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    results = json.loads((root / "result.json").read_text())
    means = results.pop("global_mean")
    return root, {"global_mean": means, **{case: {"metrics": {int(s): m for s, m in r["metrics"].items()},
                                                  "logs": r["logs"]} for case, r in results.items()}}


def metric_differences(one: dict[int, dict], two: dict[int, dict]) -> dict[str, float]:
    """The largest difference of every reported metric over the steps (both runs report the same keys)."""
    assert sorted(one) == sorted(two) == list(range(1, len(one) + 1))
    assert all(set(one[step]) == set(two[step]) for step in one)
    keys = set().union(*one.values()) - UNCOMPARED
    return {key: max(abs(one[s][key] - two[s][key]) for s in one if key in one[s]) for key in sorted(keys)}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_follow_the_one_process_run(tiny_dir, tmp_path, two_processes, case):
    root, results = two_processes
    _, one, _ = train(tiny_dir, tmp_path / "one", 1, overrides_of(case), CASES[case][1])
    two, logs = results[case]["metrics"], results[case]["logs"]

    assert any("processes=2" in line for line in logs)
    if case == "sft-replay":  # replay rows were really trained on, by both processes
        assert any(m.get("replay_share", 0) > 0 for m in two.values())
    # The run learns: the comparison below means something.
    if case == "grpo":
        assert all(m["grad_norm"] > 0 for m in one.values()) and one[1]["reward_std"] > 0
    else:
        assert one[max(one)]["loss"] < one[1]["loss"] - 0.02
    differences = metric_differences(one, two)
    worst = max(differences, key=differences.get)
    print(f"{case}: largest difference over {len(one)} float32 steps, 1 vs 2 processes: loss "
          f"{differences['loss']:.2e}, every metric {differences[worst]:.2e} ({worst})")
    assert differences["loss"] <= 1e-5 and differences["eval_loss"] <= 1e-5
    assert differences[worst] <= 1e-4, differences  # the method's own metrics too (kl, reward margins, ...)


def test_a_grpo_step_with_nothing_to_learn_leaves_the_weights_as_one_process_does(tiny_dir, tmp_path,
                                                                                  two_processes):
    from safetensors.torch import load_file

    root, results = two_processes
    result, one, _ = train(tiny_dir, tmp_path / "one", 1, *AGREE)
    assert all(m["zero_std_groups"] == 1.0 and m["grad_norm"] == 0.0 for m in one.values())
    assert all(m["grad_norm"] == 0.0 for m in results["grpo-agree"]["metrics"].values())
    a = load_file(str(result.output_dir / "adapter_model.safetensors"))
    b = load_file(str(root / "grpo-agree" / "output" / "adapter_model.safetensors"))
    assert sorted(a) == sorted(b) and all(a[k].equal(b[k]) for k in a)


def test_kto_saved_at_two_processes_resumes_at_one(tiny_dir, tmp_path, two_processes):
    root, results = two_processes
    run_dir = tmp_path / "kto"
    shutil.copytree(root / "kto", run_dir)
    assert (run_dir / "checkpoints" / "step-000006" / "dcp" / ".metadata").is_file()
    shutil.rmtree(run_dir / "checkpoints" / f"step-{STEPS:06d}")  # as if the run had died right after step 6
    shutil.rmtree(run_dir / "output")
    result, resumed, logs = train(tiny_dir, run_dir, 1, overrides_of("kto"), CASES["kto"][1])
    assert any(line.startswith("Resumed from step-000006") and "saved by 2 processes" in line for line in logs)
    assert sorted(resumed) == list(range(7, STEPS + 1)) and result.status == "succeeded"
    difference = largest_difference(results["kto"]["metrics"], resumed, range(7, STEPS + 1))
    print(f"kto saved at 2 processes, resumed at 1: largest loss difference to the uninterrupted run {difference:.2e}")
    assert difference <= 1e-5


def test_a_stand_in_share_counts_for_nothing_in_a_global_mean(two_processes):
    """KTO's z0 over the global batch: a stand-in (zero-weighted copy) share must not count. At 2 ranks a
    stand-in copies the batch's only item, so the training runs cannot tell; here the shares differ."""
    means = two_processes[1]["global_mean"]
    assert means["marked"] == 2.5  # (1 + 4) / 2: rank 0's stand-in left out
    assert means["unmarked"] == pytest.approx(10 / 3)  # (5 + 1 + 4) / 3: what counting it would give


def test_grpo_full_and_the_parent_replay_stay_single_process_with_a_clear_message():
    from oikyo.train.config import load_config

    with pytest.raises(Exception) as caught:
        load_config(None, ["train.nproc=2", "method.name=grpo", "method.finetune=full", "grpo.rewards=json_valid"])
    assert "grpo runs in several processes with method.finetune lora only for now" in str(caught.value)
    with pytest.raises(Exception) as caught:
        load_config(None, ["train.nproc=2", "data.mix=0.2", "data.mix_dataset=parent", "model.name=mv-1"])
    assert "data.mix_dataset=parent) runs in one process only" in str(caught.value)
    for method in ("dpo", "orpo", "kto", "pretrain", "grpo"):
        config = load_config(None, ["train.nproc=2", f"method.name={method}", "grpo.rewards=json_valid"])
        assert config.method.name == method
    assert load_config(None, ["train.nproc=2", "data.mix=0.2"]).data.mix == 0.2
