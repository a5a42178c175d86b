"""The promise of the platform, end to end on the real bundled model (slow: a few minutes on 2 CPU cores).

SmolLM2-135M-Instruct, fine-tuned with LoRA through the job system on the bundled support-ticket task
(support message -> JSON with category, priority and sentiment), is evaluated through the job system
against its base model on the task's test split: the gain in JSON field accuracy has a paired
bootstrap confidence interval that excludes zero, and the forgetting probe shows the model kept its
general abilities. The same probe checks itself: the base model's open-ended answers are not
degenerate, and the fine-tuned model's degenerate answers, asked without its training system prompt,
are caught (one training serves both checks: the quickstart's training is the suite's costliest step).
"""

from __future__ import annotations

import math
import time

import pytest

from oikyo.evaluate import forgetting as probing
from oikyo.evaluate import jobs, records
from oikyo.evaluate.runner import EvalSpec
from oikyo.evaluate.summary import format_lines, side_by_side
from oikyo.jobs import model_versions, queue
from oikyo.jobs.worker import Worker
from oikyo.quickstart import TRAIN_OVERRIDES

# The quickstart's recipe (40 steps x 8 examples, lr 1e-4): JSON validity ~1.0 and field accuracy ~0.53
# against 0 for the base model, forgetting 0.05-0.11 (0.103 in the latest run), measured on the 2-core machine. torch's default
# threads (the machine's cores), as the quickstart: the suite runs one test at a time. With one thread
# this test took 520 s instead of 372 s on the 2-core machine, with the same metrics to the last digit.
TRAIN = TRAIN_OVERRIDES
EVAL_LIMIT = 30  # half the test split of the 600-row sample (60 rows): the gains below are 5-10 CIs wide
# Measured on the 2-core machine (see docs/evaluation.md): the base model's degenerate share is 0.000
# (0 of 44 answers; 37 of them ran to the 64-token limit while making sense), probe accuracy 0.650.
BASE_BOUND = 0.05  # at most 2 of the 44 answers: room for a kernel's rounding flipping a greedy choice


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes of real training and generation on 2 CPU cores; 10 under heavy load
def test_lora_on_the_sample_task_beats_its_base_model_significantly(bundled_in_workspace, monkeypatch, capsys):
    from oikyo.data import sample, versions
    from oikyo.data.split import split_dataset
    from oikyo.jobs import training
    from oikyo.models.catalog import BUNDLED_NAME

    monkeypatch.delenv("OIKYO_RECIPE", raising=False)
    started = time.perf_counter()
    imported = versions.import_dataset(sample.sample_path(), name="support-tickets").version
    dataset, _ = split_dataset(imported.id, validation=0.1, test=0.1, seed=0)
    run = training.submit_training(None, TRAIN, dataset=dataset.id, model=BUNDLED_NAME)
    worker = Worker(lease_s=120, heartbeat_s=2, poll_s=0.2)
    worker.run(once=True)
    trained = queue.get(run.id)
    assert trained.state == "succeeded", trained.error
    train_s = time.perf_counter() - started

    [mv] = model_versions.list_versions(run_id=run.id)
    job = jobs.submit_evaluation(EvalSpec(model=mv.id, limit=EVAL_LIMIT, few_shot_k=0))
    worker.run(once=True)
    assert queue.get(job.id).state == "succeeded", queue.get(job.id).error
    eval_s = time.perf_counter() - started - train_s

    group = records.group(records.list_evaluations(group_id=job.id, limit=1)[0])
    model, base = group[0], group[1]
    assert (model.role, base.role) == ("model", "base") and model.split == "test" and not model.forced_overlap
    table = side_by_side(group, resamples=2000, seed=0)
    with capsys.disabled():
        print(f"\ntrain {train_s:.0f} s ({', '.join(TRAIN)}); evaluation {eval_s:.0f} s on {model.rows} test rows")
        for line in format_lines(table):
            print(line)
        print(f"{probing.describe_degeneration(model.forgetting)}; accuracy drop "
              f"{model.forgetting['accuracy_drop']:+.3f}, forgetting {model.forgetting['forgetting']:+.3f}")
        print("\n".join(probing.example_lines(model.forgetting)))
    gain = table["deltas"]["base"]["json_field_accuracy"]
    assert gain["low"] > 0, gain  # fine-tuning helped, and not by chance
    assert model.metrics["json_valid"] >= 0.9
    assert table["deltas"]["base"]["loss"]["high"] < 0  # the references became much more likely
    forgetting = model.forgetting
    assert forgetting is not None and math.isfinite(forgetting["forgetting"])
    assert 0 < forgetting["base"]["accuracy"] < 1  # the probe is neither trivial nor impossible for the base
    # The recipe keeps the model's general abilities (0.05-0.11 measured; 0.74 with lr 1e-3, where the
    # model answered general questions in JSON). The bound leaves room for the probe's item-level noise.
    assert forgetting["forgetting"] < 0.25, forgetting

    # The probe itself. The base model's open-ended answers are not degenerate, and the probe is
    # neither trivial nor impossible for it.
    base_side = forgetting["base"]
    assert base_side["degenerate"] <= BASE_BOUND, probing.example_lines(forgetting, "base")
    assert 0.4 < base_side["accuracy"] < 0.9
    # The user's report: the quickstart's model answered "My order never arrived..." with a loop of emoji
    # while the probe's accuracy and perplexity barely moved. Measured in a fresh-clone CI run of
    # `oikyo quickstart` (2026-12-06): degenerate answers 0.000 -> 0.068 (3 of 44: the complaint answered
    # with a loop of emoji, two sentence loops), forgetting 0.103. The probe sees it, and forgetting
    # counts it, whatever accuracy and perplexity say; the bound leaves room for a CPU's rounding
    # flipping one greedy answer.
    assert forgetting["degenerate_increase"] >= 2 / 44, forgetting["model"]["degenerate_examples"]
    assert forgetting["model"]["degenerate_examples"]
    assert forgetting["forgetting"] >= forgetting["degenerate_increase"]
