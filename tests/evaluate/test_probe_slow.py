"""The forgetting probe on the real bundled model (slow): the base model's open-ended answers are not
degenerate, and the quickstart's fine-tuned model, asked without its training system prompt, is caught.
"""

from __future__ import annotations

import time

import pytest

from oikyo.evaluate import forgetting

# Measured on the 2-core machine (see docs/evaluation.md): the base model's degenerate share is 0.000
# (0 of 44 answers; 37 of them ran to the 64-token limit while making sense), probe accuracy 0.650.
BASE_BOUND = 0.05  # at most 2 of the 44 answers: room for a kernel's rounding flipping a greedy choice


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_base_models_open_ended_answers_are_not_degenerate(bundled_model_dir, capsys):
    from oikyo.evaluate.backend import ModelBackend

    backend = ModelBackend(bundled_model_dir)
    started = time.perf_counter()
    result = forgetting.run_probe(backend, None)
    seconds = time.perf_counter() - started
    flagged = [(i["id"], i["system"], i["rule"], i["reply"][:80]) for i in result["open_items"] if i["degenerate"]]
    with capsys.disabled():
        print(f"\nbase probe {seconds:.0f} s: accuracy {result['accuracy']:.3f}, perplexity {result['perplexity']:.2f}, "
              f"degenerate {result['degenerate']:.3f}, truncated {result['truncated']:.3f}; flagged {flagged}")
    assert result["degenerate"] <= BASE_BOUND, flagged
    assert 0.4 < result["accuracy"] < 0.9  # the probe is neither trivial nor impossible for the base


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the quickstart's training (~2 min alone on 2 cores) and two probe runs
def test_the_quickstart_model_asked_without_its_system_prompt_is_flagged(bundled_in_workspace, monkeypatch, capsys):
    # The user's report: the quickstart's model answered "My order never arrived..." with a loop of
    # emoji while the probe's accuracy and perplexity barely moved.
    from oikyo.data import sample, versions
    from oikyo.data.split import split_dataset
    from oikyo.evaluate.backend import ModelBackend
    from oikyo.jobs import model_versions, queue, training
    from oikyo.jobs.worker import Worker
    from oikyo.models.catalog import BUNDLED_NAME
    from oikyo.quickstart import TRAIN_OVERRIDES

    monkeypatch.delenv("OIKYO_RECIPE", raising=False)
    imported = versions.import_dataset(sample.sample_path(), name="support-tickets").version
    dataset, _ = split_dataset(imported.id, validation=0.1, test=0.1, seed=0)
    run = training.submit_training(None, TRAIN_OVERRIDES, dataset=dataset.id, model=BUNDLED_NAME)
    Worker(lease_s=120, heartbeat_s=2, poll_s=0.2).run(once=True)
    assert queue.get(run.id).state == "succeeded", queue.get(run.id).error
    [version] = model_versions.list_versions(run_id=run.id)

    backend = ModelBackend(bundled_in_workspace)
    backend.add_adapter("model", version.path)
    base, tuned = forgetting.run_probe(backend, None), forgetting.run_probe(backend, "model")
    summary = forgetting.forgetting(base, tuned)
    with capsys.disabled():
        print(f"\n{forgetting.describe_degeneration(summary)}; accuracy drop {summary['accuracy_drop']:+.3f}, "
              f"perplexity ratio {summary['perplexity_ratio']:.3f}, forgetting {summary['forgetting']:+.3f}")
        print("\n".join(forgetting.example_lines(summary)))
    # Measured in a fresh-clone CI run of `oikyo quickstart` (2026-12-06): degenerate answers 0.000 -> 0.068
    # (3 of 44: the user's complaint answered with a loop of emoji, two sentence loops), forgetting 0.103,
    # flagged at the 0.10 threshold. The probe sees it, and forgetting counts it, whatever accuracy and
    # perplexity say; the bound leaves room for a CPU's rounding flipping one greedy answer.
    assert summary["degenerate_increase"] >= 2 / 44, summary["model"]["degenerate_examples"]
    assert summary["model"]["degenerate_examples"]
    assert summary["forgetting"] >= summary["degenerate_increase"]
