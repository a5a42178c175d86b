"""Drift detection: calibrated false alarms on reference-like traffic, alarms on planted drift, records,
events, the router's drift metrics and `oikyo deployments drift`.

Traffic is crafted (tests/monitor/drift_traffic.py): support requests about billing and shipping as
the reference; planted drift switches 30% of requests to another topic (or script), or makes answers
1.5x longer. Embeddings come from the tiny random model (fast); the real model is measured by hand.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # the deployment test fixtures
import drift_traffic as traffic  # noqa: E402
from serving_fixtures import *  # noqa: E402,F401,F403
from serving_fixtures import DEPLOYMENT, metric_sample  # noqa: E402

from oikyo.monitor import calibration, drift, drift_records, events  # noqa: E402
from oikyo.monitor.drift import Checker, DriftSettings, Reference  # noqa: E402

WINDOW = 50
EVERY = 500  # stated: one false alarm per 500 requests, i.e. at most 0.1 per check of 50


def _reference(n: int = 600) -> Reference:
    return Reference("support@test", "test", traffic.reference_items(n))


def _alarms(checker: Checker, windows: list[list]) -> dict[str, int]:
    counts = {x.name: 0 for x in checker.detectors}
    for items in windows:
        for finding in checker.check(items):
            counts[finding.detector] += finding.alarm
    return counts


@pytest.fixture(scope="module")
def cheap_checker() -> Checker:
    """Every detector but embeddings, calibrated for one false alarm per 500 requests."""
    settings = DriftSettings(window=WINDOW, false_alarm_every=EVERY, embeddings=False)
    return Checker(_reference(), settings, quality=drift.quality_function())


# ----------------------------------------------------------------------------- the maths


def test_per_check_alpha_is_the_stated_rate_split_over_checks_and_detectors():
    assert calibration.per_check_alpha(10000, stride=200, detectors=4) == pytest.approx(200 / 40000)
    # Checking half as often (stride 400) allows each check twice the false-alarm probability.
    assert calibration.per_check_alpha(10000, 400, 4) == pytest.approx(2 * calibration.per_check_alpha(10000, 200, 4))


def test_tails_extrapolate_thresholds_beyond_what_the_draws_resolve():
    rng = np.random.default_rng(0)
    normal = calibration.calibrate(rng.normal(size=2000), alpha=1e-4, kind="two_sided")
    assert normal.method == "normal" and normal.threshold == pytest.approx(3.89, abs=0.2)
    chi2 = (rng.normal(size=(4000, 4)) ** 2).sum(1)  # chi-square, 4 degrees of freedom: 0.999 quantile 18.47
    gamma = calibration.calibrate(chi2, alpha=1e-3, kind="positive")
    assert gamma.method == "gamma" and gamma.threshold == pytest.approx(18.47, rel=0.1)
    empirical = calibration.calibrate(rng.normal(size=2000), alpha=0.05, kind="one_sided")
    assert empirical.method == "empirical" and empirical.threshold == pytest.approx(1.645, abs=0.15)


def test_a_category_never_seen_in_the_reference_needs_more_than_chance_to_alarm():
    floor = calibration.unseen_floor(window=200, reference_rows=500, alpha=0.001)
    assert 1 / 200 < floor < 0.1  # one odd request is not drift; 10% of the window is
    assert calibration.unseen_floor(200, 500, 0.1) < floor  # a looser rate lowers the floor


# ----------------------------------------------------------------------------- false alarms and drift


def test_reference_traffic_raises_false_alarms_at_about_the_stated_rate(cheap_checker):
    # The rate holds on average over references (each is a random sample of the traffic's source):
    # 12 references, 50 fresh windows each.
    alpha = cheap_checker.alpha
    assert alpha == pytest.approx(WINDOW / (EVERY * len(cheap_checker.detectors)))
    settings = DriftSettings(window=WINDOW, false_alarm_every=EVERY, embeddings=False)
    alarms = {x.name: 0 for x in cheap_checker.detectors}
    checks = 0
    for r in range(12):
        checker = Checker(Reference("support@test", "test", traffic.reference_items(600, seed=100 + r)), settings,
                          quality=drift.quality_function())
        for name, count in _alarms(checker, [traffic.items(WINDOW, 1000 * r + i) for i in range(50)]).items():
            alarms[name] += count
        checks += 50
    expected = alpha * checks  # per detector: 12
    for name, count in alarms.items():  # binomial(600, alpha): mean 12, far below 12 + 4 sd
        assert count <= expected + 4 * math.sqrt(expected), (name, alarms)
    for name in ("input_length", "output_length"):  # continuous statistics: close to the rate, not far below
        assert alarms[name] >= expected / 4, (name, alarms)
    budget = checks * WINDOW / EVERY  # the stated false alarms over these requests: 60
    assert sum(alarms.values()) <= 1.5 * budget


def test_centred_thresholds_cover_the_error_of_the_centre():
    # A mean against the centre a calibration pool of 100 rows gives: over many pools, fresh windows
    # of the population cross the threshold at the stated rate only when the centre's own error is
    # drawn into the null (without it: far more often).
    rng = np.random.default_rng(0)
    alpha, pool_size, window = 0.05, 100, 50
    rates = {"with": [], "without": []}
    for _ in range(200):
        pool = rng.normal(size=pool_size)
        null = pool[calibration.bootstrap_windows(rng, pool_size, window, 1000)].mean(1)
        centers = pool[calibration.center_windows(rng, pool_size, 1000)].mean(1)
        live = rng.normal(size=(100, window)).mean(1)  # fresh traffic of the population
        for label, draws in (("with", centers), ("without", None)):
            cal = calibration.calibrate(null, alpha, "two_sided", center_draws=draws)
            rates[label].append(np.mean([cal.statistic(x) > cal.threshold for x in live]))
    assert 0.5 * alpha < np.mean(rates["with"]) < 1.5 * alpha, rates
    assert np.mean(rates["without"]) > 2 * alpha


def test_planted_drift_alarms_and_says_what_moved(cheap_checker):
    topic = {f.detector: f for f in cheap_checker.check(traffic.items(WINDOW, 1001, switch=0.3))}
    assert topic["input_oov"].alarm and topic["input_oov"].score > 1
    assert "unseen in the reference" in topic["input_oov"].what
    assert all(ex["input"] and "unseen words" in ex["why"] for ex in topic["input_oov"].examples)
    assert any(w in topic["input_oov"].examples[0]["input"] for w in traffic.TOPICS["astronomy"])

    longer = {f.detector: f for f in cheap_checker.check(traffic.items(WINDOW, 2001, answer_scale=1.5))}
    assert longer["output_length"].alarm and "answers 1." in longer["output_length"].what
    assert "x longer" in longer["output_length"].what
    assert not longer["input_length"].alarm and not longer["input_oov"].alarm

    script = {f.detector: f for f in cheap_checker.check(traffic.items(WINDOW, 3001, switch=0.3, to="cyrillic"))}
    assert script["input_script"].alarm and "Cyrillic vs 0%" in script["input_script"].what


def test_stricter_rates_raise_every_threshold():
    loose = Checker(_reference(), DriftSettings(window=WINDOW, false_alarm_every=100, embeddings=False))
    strict = Checker(_reference(), DriftSettings(window=WINDOW, false_alarm_every=100000, embeddings=False))
    assert strict.alpha < loose.alpha
    for name, cal in strict.calibrations.items():
        assert cal.threshold >= loose.calibrations[name].threshold, name
    for name in ("input_length", "output_length"):
        assert strict.calibrations[name].threshold > 1.3 * loose.calibrations[name].threshold


def test_label_drift_on_a_classification_reference():
    rows = traffic.items(600, 77, labelled=True)
    for item in rows:
        item.label = item.output  # a classification set: the answer is the label
    checker = Checker(Reference("labels", "t", rows), DriftSettings(window=WINDOW, false_alarm_every=EVERY,
                                                                         embeddings=False))
    assert "output_labels" in {x.name for x in checker.detectors}
    stable = {f.detector: f for f in checker.check(traffic.items(WINDOW, 5, labelled=True))}
    assert not stable["output_labels"].alarm
    # 30% of the requests switch to astronomy, answered "other": a label the reference never had.
    moved = {f.detector: f for f in checker.check(traffic.items(WINDOW, 6, switch=0.3, labelled=True))}
    assert moved["output_labels"].alarm and "other" in moved["output_labels"].what


def test_embedding_detector_is_calibrated_and_points_at_the_switched_inputs(tiny_model_dir):
    from oikyo.monitor.embeddings import Embedder, cache_dir

    embedder = Embedder(tiny_model_dir)
    settings = DriftSettings(window=WINDOW, false_alarm_every=250)
    checker = Checker(_reference(400), settings, embedder=embedder)
    assert list(cache_dir().glob("*.npy"))  # the reference's embeddings are cached for the next check
    assert checker.calibrations["input_embedding"].threshold > 0
    windows = [traffic.items(WINDOW, seed) for seed in range(40)]
    alarms = _alarms(checker, windows)
    expected = checker.alpha * len(windows)
    assert alarms["input_embedding"] <= expected + 4 * math.sqrt(expected) + 1
    switched = {f.detector: f for f in checker.check(traffic.items(WINDOW, 9, switch=1.0))}
    assert switched["input_embedding"].alarm
    window = traffic.items(WINDOW, 10, switch=0.3)
    partial = {f.detector: f for f in checker.check(window)}
    top = partial["input_embedding"].examples  # the inputs where the witness function is largest
    assert any(w in top[0]["input"] for w in traffic.TOPICS["astronomy"]), top
    detector = next(x for x in checker.detectors if x.name == "input_embedding")
    _, witness = detector.mmd.raw(embedder.embed([it.input for it in window]))
    moved = np.array([any(w in it.input for w in traffic.TOPICS["astronomy"]) for it in window])
    assert witness[moved].mean() > witness[~moved].mean()  # the witness sides with the switched inputs


def test_the_embedding_worker_yields_the_cpu_and_embeds_the_same(tiny_model_dir):
    """``nice`` > 0: the model runs in a child at that priority, in a session of its own (on Linux its
    autogroup too, which is what orders it against the deployment's processes); same vectors."""
    import os

    import psutil

    from oikyo.monitor.embeddings import Embedder

    texts = [it.input for it in traffic.items(20, 1)]
    here = Embedder(tiny_model_dir)
    worker = Embedder(tiny_model_dir, nice=7)
    try:
        assert here.worker_pid is None
        child = psutil.Process(worker.worker_pid)
        assert child.ppid() == os.getpid() and child.nice() == min(19, os.nice(0) + 7)
        assert os.getsid(child.pid) == child.pid != os.getsid(0)  # it leads a session of its own
        autogroup = Path(f"/proc/{child.pid}/autogroup")
        if autogroup.exists():
            assert autogroup.read_text().split()[-1] == "7"
        np.testing.assert_allclose(worker.embed(texts), here.embed(texts), rtol=1e-5, atol=1e-6)
        assert worker.token_counts(texts) == here.token_counts(texts)
    finally:
        worker.close()
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


# ----------------------------------------------------------------------------- records, events, metrics, CLI


def _deployment(tmp_path, model_dir, *, name="bot", log_requests=True) -> str:
    """A deployment of a model version trained (per its lineage) on the crafted reference."""
    from oikyo.data import versions
    from oikyo.serve.gateway import deployments
    from oikyo.store import db
    from oikyo.store.models import ModelVersion, utcnow

    path = traffic.write_reference(tmp_path / "support.jsonl", 300)
    version = versions.import_dataset(path, name="support").version
    mv = f"mv-{name}0001"
    with db.session() as s:
        s.add(ModelVersion(id=mv, run_id=None, base_model="tiny", kind="full", path=str(model_dir),
                           lineage={"dataset_version": version.id}, created_at=utcnow()))
    deployments._save(name, None, variants=deployments.make_variants(mv, None), host=None, port=0, replicas=None,
                      log_requests=log_requests, engine=None, settings=None)
    return mv


def _log(name: str, variant: str, items) -> None:
    """Record requests as the router does (with --log-requests)."""
    from oikyo.serve.gateway.request_log import RequestRecord, RequestRecorder

    recorder = RequestRecorder()
    for item in items:
        recorder.add(RequestRecord(id=item.id, deployment=name, variant=variant, model=variant, endpoint="chat",
                                   status=200, latency_s=0.1, response=item.output,
                                   request={"messages": [{"role": "user", "content": item.input}]}))
    recorder.close()


def _cli(*args):
    from oikyo.cli.main import app

    return CliRunner().invoke(app, list(args))


def test_a_check_records_every_detector_an_event_and_the_metric_readings(tmp_path, tiny_model_dir):
    mv = _deployment(tmp_path, tiny_model_dir)
    _log("bot", mv, traffic.items(WINDOW, 1))
    settings = DriftSettings(window=WINDOW, false_alarm_every=EVERY, reference_rows=300)
    calm = drift.check("bot", settings=settings)
    (variant,) = calm.variants
    assert variant.reference.startswith("support@") and variant.requests == WINDOW
    assert not events.list_events("bot", kinds=[events.DRIFT])

    _log("bot", mv, traffic.items(WINDOW, 2, switch=0.3, answer_scale=1.5))
    report = drift.check("bot", settings=settings)
    alarmed = {f.detector for f in report.variants[0].findings if f.alarm}
    assert {"input_oov", "output_length"} <= alarmed
    rows = drift.history("bot", limit=100)
    detectors = {f.detector for f in report.variants[0].findings}
    assert len(rows) == 2 * len(detectors) and {"input_embedding", "output_quality"} <= detectors
    newest = drift.history("bot", detector="input_oov", limit=1)[0]
    assert newest["alarm"] and newest["score"] == pytest.approx(newest["statistic"] / newest["threshold"])
    assert newest["details"]["examples"] and newest["details"]["false_alarm_every"] == EVERY
    (event,) = events.list_events("bot", kinds=[events.DRIFT])
    assert "input_oov" in event.title and event.details["examples"]

    drift_records.clear_cache()
    readings = drift_records.metric_readings("bot")
    assert readings["scores"][(mv, "input_oov")] == pytest.approx(newest["score"])
    assert readings["checks"][(mv, "input_oov", "true")] == 1 and readings["checks"][(mv, "input_oov", "false")] == 1


def test_watch_checks_again_only_after_a_stride_of_new_requests(tmp_path, tiny_model_dir):
    mv = _deployment(tmp_path, tiny_model_dir)
    _log("bot", mv, traffic.items(WINDOW, 1))
    settings = DriftSettings(window=WINDOW, false_alarm_every=EVERY, reference_rows=300, embeddings=False)
    seen = []
    drift.watch("bot", every=1, settings=settings, iterations=3, on_report=seen.append, sleep=lambda s: None)
    assert len(seen) == 1  # nothing new after the first check: no second one
    _log("bot", mv, traffic.items(WINDOW, 2))
    drift.watch("bot", every=1, settings=settings, iterations=1, on_report=seen.append, sleep=lambda s: None)
    assert len(seen) == 2 and not seen[1].skipped


def test_cli_says_what_changed_with_examples(tmp_path, tiny_model_dir):
    mv = _deployment(tmp_path, tiny_model_dir)
    _log("bot", mv, traffic.items(WINDOW, 3, switch=0.3, to="cyrillic"))
    result = _cli("deployments", "drift", "bot", "--window", str(WINDOW), "--false-alarm-every", str(EVERY),
                  "--reference-rows", "300")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "DRIFT" in text and "input_script" in text and "Cyrillic vs 0%" in text
    assert "Most distinctive inputs" in text and any(w in text for w in traffic.TOPICS["cyrillic"])
    as_json = _cli("deployments", "drift", "bot", "--window", str(WINDOW), "--json", "--no-embeddings",
                   "--reference-rows", "300")
    assert as_json.exit_code == 0 and '"alarm": true' in as_json.output


def test_cli_errors_are_clear(tmp_path, tiny_model_dir):
    assert _cli("deployments", "drift", "nobody").exit_code == 2
    mv = _deployment(tmp_path, tiny_model_dir, name="quiet", log_requests=False)
    quiet = _cli("deployments", "drift", "quiet")
    assert quiet.exit_code == 2 and "does not log requests" in " ".join(quiet.output.split())
    mv = _deployment(tmp_path, tiny_model_dir, name="young")
    _log("young", mv, traffic.items(10, 1))
    few = _cli("deployments", "drift", "young", "--window", str(WINDOW), "--no-embeddings")
    assert few.exit_code == 1
    assert "only 10 logged request(s)" in " ".join(few.output.split()) and "--window" in few.output
    unknown = _cli("deployments", "drift", "young", "--reference", "no-such-data")
    assert unknown.exit_code == 2 and "no dataset version matches" in unknown.output


def test_a_base_model_variant_needs_a_named_reference():
    with pytest.raises(drift.DriftError, match="--reference"):
        drift.reference_version("SmolLM2-135M-Instruct")


def test_the_router_exports_the_latest_drift_scores(routed, versions):
    """GET /metrics of a running router reads the drift checks' records (written by another process)."""
    import httpx

    from oikyo.store import db
    from oikyo.store.models import DriftCheck, utcnow

    variant = next(iter(versions.values()))
    with db.session() as s:
        for score, alarm in ((0.4, False), (2.5, True)):  # the latest check is the one exported
            s.add(DriftCheck(deployment=DEPLOYMENT, variant=variant, detector="input_embedding", reference="support@x",
                             requests=200, statistic=score, threshold=1.0, score=score, alarm=alarm, created_at=utcnow()))
    drift_records.clear_cache()
    body = httpx.get(f"{routed.url}/metrics", headers={"Authorization": f"Bearer {routed.key}"}).text
    labels = {"deployment": DEPLOYMENT, "variant": variant, "detector": "input_embedding"}
    assert metric_sample(body, "oikyo_drift_score", **labels) == 2.5
    assert metric_sample(body, "oikyo_drift_checks_total", **labels, alarm="true") == 1.0
    assert metric_sample(body, "oikyo_drift_checks_total", **labels, alarm="false") == 1.0


def test_a_length_detector_takes_its_expected_mean_from_the_whole_reference():
    from oikyo.monitor import detectors

    items = traffic.reference_items(400, seed=7)
    ref, pool = items[:200], items[200:]
    x = detectors.LengthDetector.build("input", ref, pool)
    logs = np.log1p([len(it.input) for it in items])
    assert x.ref_mean == pytest.approx(logs.mean())  # every reference row, not the comparison half alone
    assert x.pool_values.mean() == pytest.approx(0.0, abs=1e-12)  # null windows centred on the pool's own mean
    draws = x.center_draws(np.random.default_rng(0), len(pool), 4000)
    # the centre's error is that of a mean of all 400 rows, not of the 200 calibration rows
    assert draws.std() == pytest.approx(logs.std() / math.sqrt(400), rel=0.1)
