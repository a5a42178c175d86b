"""SQLAlchemy models: the records of the store.

Each table's columns are created by a named migration in ``migrations/versions``; a change to a
model here needs a new migration there (append-only: existing migrations never change).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class DatasetVersion(Base):
    """An immutable dataset version, named by the hash of its canonical content.

    ``id`` is the first 12 hex digits of ``content_hash`` (what users type); the full hash is unique.
    The rows live in the artifact store as Parquet (``artifact``); ``lineage`` records where they
    came from: the source file and its hash and the import options, or the parent version and the
    operation (split) that made this one.
    """

    __tablename__ = "dataset_versions"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    format: Mapped[str | None] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    artifact: Mapped[str] = mapped_column(String(200), nullable=False)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    lineage: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    splits: Mapped[dict | None] = mapped_column(JSON)
    is_eval_set: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    dropped_artifact: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class BaseModel(Base):
    """A base model in the catalog: a name for a Hugging Face folder of safetensors weights.

    ``source`` is local, gguf or hub; ``origin`` is what the user added (folder, file or Hub id);
    ``info`` caches parameters, context length, architecture, chat template and license.
    The bundled default model is not stored here: it is always available.
    """

    __tablename__ = "base_models"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    origin: Mapped[str] = mapped_column(Text, nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    trust_remote_code: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    info: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


# --- Training jobs (migration 0002_runs_jobs) ------------------------------------------------------


class Run(Base):
    """A training run: a durable job in the queue (queued → running → succeeded | failed | cancelled).

    ``config`` is the resolved config (dataset pinned to a version id), ``config_hash`` its hash.
    A worker owns a running run while ``lease_expires_at`` is in the future (``lease_owner`` names
    it); a run whose lease has expired is claimed again and resumes from its last complete
    checkpoint. ``attempts`` counts claims since the run was last queued; ``resume_count`` counts the
    attempts that continued from a complete checkpoint an earlier attempt left (after a lost lease, a
    killed worker, a shutdown or a user's resume), counted as each such attempt starts; an attempt that
    starts over from step 0 is no resume. The run's files live in ``run_dir`` (config.yaml, checkpoints/,
    output/, train.log).
    """

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    # "train" or "eval" (migration 0004_evaluations): the worker dispatches a claimed job by kind.
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="train", server_default="train")
    config: Mapped[dict] = mapped_column(JSON, nullable=False)
    config_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    dataset_version_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    base_model: Mapped[str] = mapped_column(String(500), nullable=False)
    seed: Mapped[int | None] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    error: Mapped[str | None] = mapped_column(Text)
    run_dir: Mapped[str] = mapped_column(String(500), nullable=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    resume_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reproduced_from: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A run launched by a tuning study's trial (migration 0007_tune_studies); None for ordinary runs.
    study_id: Mapped[str | None] = mapped_column(String(16))
    trial_number: Mapped[int | None] = mapped_column(Integer)


class Metric(Base):
    """One scalar a run reported at one step (loss, lr, tokens_per_s, eval_loss ...)."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_name_step", "run_id", "name", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class RunEvent(Base):
    """A line in a run's history: submitted, claimed by a worker, reclaimed, cancelled, failed ...

    The recipe's own log lines go to ``<run_dir>/train.log``, not here.
    """

    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)


class Checkpoint(Base):
    """A complete checkpoint folder of a run, as found on disk (``path``) at ``step``.

    ``manifest``: with a shared artifact store (``OIKYO_ARTIFACTS_URL``), the key of the folder's
    manifest there (see :mod:`oikyo.store.manifests`), so another machine can resume from it.
    """

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_checkpoints_run_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True)
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    path: Mapped[str] = mapped_column(String(500), nullable=False)
    eval_loss: Mapped[float | None] = mapped_column(Float)
    is_best: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    manifest: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class ModelVersion(Base):
    """An immutable trained model (adapter, full or merged) with its full lineage.

    ``lineage``: base model, dataset version id and hash, resolved config and its hash, code version
    (oikyo version + git commit when known), seed, package versions, and the parent version for a merge.
    """

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), index=True)
    base_model: Mapped[str] = mapped_column(String(500), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    path: Mapped[str] = mapped_column(String(500), nullable=False)
    lineage: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class Worker(Base):
    """A worker process that is (or was) taking jobs; ``last_seen_at`` is its heartbeat."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    current_run_id: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


# --- Evaluation (migration 0004_evaluations) -------------------------------------------------------


class Evaluation(Base):
    """One model evaluated on one dataset split: metrics, settings, and where the per-example outputs are.

    ``role`` says what was evaluated within an evaluation job: ``model`` (what the user asked for),
    ``base`` (its base model, same prompts) or ``few_shot`` (the base model with k training examples
    as prior turns). Evaluations made together share ``group_id`` (the job's run id when run as a job).
    ``model_version_id`` is set for fine-tuned models; ``base_model`` always names the base model.
    ``metrics`` maps metric name to value; ``metric_versions`` records the version of each metric's
    code; ``generation`` the decoding settings; ``settings`` the rest (limit, few-shot k and seed,
    the examples used as shots). Per-example predictions and scores live in the artifact store as
    JSONL (``artifact``). ``forced_overlap`` is true when the user evaluated on rows the model was
    trained on (``--force``); ``overlap`` holds the counts the guard found.
    """

    __tablename__ = "evaluations"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    model_ref: Mapped[str] = mapped_column(String(500), nullable=False)
    model_version_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"), index=True)
    base_model: Mapped[str] = mapped_column(String(500), nullable=False)
    dataset_version_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), nullable=False, index=True)
    split: Mapped[str | None] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    metrics: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    metric_versions: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    generation: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    settings: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    forgetting: Mapped[dict | None] = mapped_column(JSON)
    forced_overlap: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    overlap: Mapped[dict | None] = mapped_column(JSON)
    artifact: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


# --- Deployments (migration 0005_deployments) ------------------------------------------------------


class Deployment(Base):
    """A served endpoint: what it serves, how (host, port, replicas, engine) and its last known state.

    ``variants`` is the traffic split ``[{"label", "model", "weight"}]`` (one entry without a split);
    ``model`` the model the user deployed (the first variant). ``state``: starting, running,
    stopping, stopped or failed, written by the router process ``pid`` on ``hostname``; a record
    that says running while that process is gone is shown as such and can be started again.
    ``settings`` holds the rest (batch size, adapter bound, threads, autoscaling policy).
    """

    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    model: Mapped[str] = mapped_column(String(500), nullable=False)
    variants: Mapped[list] = mapped_column(JSON, nullable=False)
    host: Mapped[str] = mapped_column(String(200), nullable=False)
    port: Mapped[int] = mapped_column(Integer, nullable=False)
    replicas_min: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    replicas_max: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    engine: Mapped[str] = mapped_column(String(16), nullable=False, default="native")
    log_requests: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    settings: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    pid: Mapped[int | None] = mapped_column(Integer)
    hostname: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    """An API key for the serving endpoints. Only the sha256 of the secret is stored (never the secret).

    ``prefix`` is the secret's first characters, enough for a person to tell keys apart.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ServedRequest(Base):
    """One request a deployment answered: variant, model, status, latency and tokens (always recorded).

    ``request`` (messages or prompt and settings, JSON) and ``response`` (the generated text) are
    filled only when the deployment logs requests (``--log-requests``). ``id`` is the response id the
    client saw (``chatcmpl-...``), which feedback refers to.
    """

    __tablename__ = "served_requests"
    __table_args__ = (Index("ix_served_requests_deployment_created", "deployment", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deployment: Mapped[str] = mapped_column(String(100), nullable=False)
    variant: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(500), nullable=False)
    endpoint: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    stream: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    latency_s: Mapped[float] = mapped_column(Float, nullable=False)
    ttft_s: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    request: Mapped[dict | None] = mapped_column(JSON)
    response: Mapped[str | None] = mapped_column(Text)
    # Cheap quality signals of the answer (migration 0009_monitoring), computed off the hot path.
    quality: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class Feedback(Base):
    """Feedback on one served response: a rating (-1..1 thumbs or 1..5 stars), a correction (the ideal
    answer, migration 0010_feedback_corrections), or both, with an optional comment.

    ``rating`` is None for a correction given without a rating; such feedback counts as negative
    (:mod:`oikyo.data.ratings`). ``oikyo data from-traffic`` trains on the correction instead of the answer.
    """

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    response_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    variant: Mapped[str | None] = mapped_column(String(200))
    rating: Mapped[float | None] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text)
    correction: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


# --- Human ratings (migration 0006_human_ratings) --------------------------------------------------


class RatingSession(Base):
    """A blind pairwise rating session: two systems' answers to the same prompts, shown side by side.

    ``system_a``/``system_b`` name what was compared (a model version id or a base model name, as
    evaluations name it); their answers come from the stored evaluations ``evaluation_a``/``evaluation_b``
    on one dataset version and split. ``seed`` drew the left/right order of every pair.
    """

    __tablename__ = "rating_sessions"
    __table_args__ = (Index("ix_rating_sessions_systems", "system_a", "system_b"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    system_a: Mapped[str] = mapped_column(String(500), nullable=False)
    system_b: Mapped[str] = mapped_column(String(500), nullable=False)
    evaluation_a: Mapped[str] = mapped_column(ForeignKey("evaluations.id"), nullable=False)
    evaluation_b: Mapped[str] = mapped_column(ForeignKey("evaluations.id"), nullable=False)
    dataset_version_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), nullable=False)
    split: Mapped[str | None] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class RatingPair(Base):
    """One prompt of a rating session: which side shows A (kept here, never sent to the rater) and the rating.

    ``example_key`` is the example's row hash (the per-example outputs of both evaluations hold it).
    ``choice`` is what the rater picked (left, right or tie), ``winner`` what that means (a, b or tie);
    both stay empty until the pair is rated, and a pair is rated once.
    """

    __tablename__ = "rating_pairs"

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("rating_sessions.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    example_key: Mapped[str] = mapped_column(String(64), nullable=False)
    a_on_left: Mapped[bool] = mapped_column(Boolean, nullable=False)
    choice: Mapped[str | None] = mapped_column(String(8))
    winner: Mapped[str | None] = mapped_column(String(8))
    rated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- Tuning studies (migration 0007_tune_studies) --------------------------------------------------


class TuneStudy(Base):
    """oikyo's record of a hyperparameter study (Optuna keeps the trials in its own storage).

    ``base_config`` is the resolved training config every trial starts from (dataset pinned to a
    version id); ``space`` the search space (``Space.to_dict()``); ``objectives`` and ``directions``
    the objective names and minimize/maximize for each. ``cv`` is the number of folds (None: one run
    per trial on the dataset's own splits) and ``fold_datasets`` their dataset version ids.
    ``launched`` counts trial slots taken: a driver takes one with a conditional UPDATE
    (``launched < n_trials``), so several drivers never start more than ``n_trials`` trials.
    ``state``: running, interrupted, finished or failed. ``optuna_name`` names the Optuna study.
    """

    __tablename__ = "tune_studies"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    optuna_name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    base_config: Mapped[dict] = mapped_column(JSON, nullable=False)
    space: Mapped[dict] = mapped_column(JSON, nullable=False)
    objectives: Mapped[list] = mapped_column(JSON, nullable=False)
    directions: Mapped[list] = mapped_column(JSON, nullable=False)
    sampler: Mapped[str] = mapped_column(String(16), nullable=False)
    pruner: Mapped[str] = mapped_column(String(16), nullable=False)
    cv: Mapped[int | None] = mapped_column(Integer)
    fold_datasets: Mapped[list | None] = mapped_column(JSON)
    n_trials: Mapped[int] = mapped_column(Integer, nullable=False)
    parallel: Mapped[int] = mapped_column(Integer, nullable=False)
    budget: Mapped[str | None] = mapped_column(String(32))
    seed: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    launched: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    dataset_version_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TunePromotion(Base):
    """A study's trial promoted to a final model (migration 0008_tune_promotions).

    ``oikyo tune promote`` trains the trial's config on the study's dataset (``run_id``), then
    evaluates that model once on the test split (``eval_job_id``, an ordinary evaluation job). One
    row per (study, trial): promoting the same trial again follows or shows this one, so the test
    split is never scored twice for one trial. ``state``: training, evaluating, done or failed.
    """

    __tablename__ = "tune_promotions"
    __table_args__ = (UniqueConstraint("study_id", "trial_number", name="uq_tune_promotions_trial"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("tune_studies.id"), nullable=False)
    trial_number: Mapped[int] = mapped_column(Integer, nullable=False)
    params: Mapped[dict] = mapped_column(JSON, nullable=False)
    run_id: Mapped[str | None] = mapped_column(String(16))
    eval_job_id: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- Monitoring (migration 0009_monitoring) --------------------------------------------------------


class DeploymentEvent(Base):
    """Something that happened to a deployment that its owner should see: an alert that fired or
    resolved (delivered by Alertmanager to oikyo's webhook), a drift alarm, ...

    ``kind``: alert_firing, alert_resolved, drift, ...; ``source``: alertmanager, drift, oikyo ...;
    ``details`` the rest (labels, annotations, values, examples). ``dedupe_key`` (unique, optional)
    makes a redelivered notification land once.
    """

    __tablename__ = "deployment_events"
    __table_args__ = (Index("ix_deployment_events_deployment_time", "deployment", "time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment: Mapped[str] = mapped_column(String(100), nullable=False)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    severity: Mapped[str | None] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text, nullable=False)
    details: Mapped[dict | None] = mapped_column(JSON)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)


class DriftCheck(Base):
    """One drift detector's verdict on one window of a deployment's live traffic against a reference.

    ``reference`` is the dataset version compared against (the deployed model's training data, found
    through lineage, or one the user named). ``statistic`` is the detector's raw value, ``threshold``
    the value that keeps false alarms at the stated rate, ``score`` = statistic / threshold (what the
    ``oikyo_drift_score`` metric and alert rules read: above 1 is an alarm).
    """

    __tablename__ = "drift_checks"
    __table_args__ = (Index("ix_drift_checks_deployment_created", "deployment", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment: Mapped[str] = mapped_column(String(100), nullable=False)
    variant: Mapped[str | None] = mapped_column(String(200))
    detector: Mapped[str] = mapped_column(String(64), nullable=False)
    reference: Mapped[str] = mapped_column(String(200), nullable=False)
    window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    requests: Mapped[int] = mapped_column(Integer, nullable=False)
    statistic: Mapped[float] = mapped_column(Float, nullable=False)
    threshold: Mapped[float] = mapped_column(Float, nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    alarm: Mapped[bool] = mapped_column(Boolean, nullable=False)
    details: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


# --- Continuous learning (migration 0011_loop) -----------------------------------------------------


class LoopPolicy(Base):
    """A deployment's continuous-training policy as applied (``oikyo loop apply``).

    ``policy`` is the validated policy (:class:`oikyo.loop.policy.Policy`, training config inline);
    ``source`` the YAML text it came from. ``paused`` is the user's switch: a paused loop decides
    nothing. ``owner``/``lease_until``: the controller acting on it now (one at a time, taken with a
    conditional UPDATE like the job queue's leases); ``checked_at``: its last look at the triggers.
    """

    __tablename__ = "loop_policies"

    deployment: Mapped[str] = mapped_column(String(100), primary_key=True)
    policy: Mapped[dict] = mapped_column(JSON, nullable=False)
    source: Mapped[str | None] = mapped_column(Text)
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class LoopCycle(Base):
    """One turn of the loop: trigger, data from traffic, training, gate, canary, and its outcome.

    ``state`` is where the cycle is (collecting, training, evaluating, canary_prepare, canary) or how
    it ended (promoted, rolled_back, gate_failed, skipped, failed, cancelled, overridden).
    ``champion`` is the model version served when it began, ``challenger`` the one it trained;
    ``run_id`` the training run and ``eval_jobs`` the evaluation jobs ({"challenger": id,
    "champion": id}); their ids are written before the jobs are queued, so a controller that
    restarts finds them instead of queuing them twice. ``details`` keeps the gate's and the
    canary's figures.
    """

    __tablename__ = "loop_cycles"
    __table_args__ = (Index("ix_loop_cycles_deployment_created", "deployment", "created_at"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    deployment: Mapped[str] = mapped_column(String(100), nullable=False)
    state: Mapped[str] = mapped_column(String(24), nullable=False)
    trigger: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    champion: Mapped[str] = mapped_column(String(500), nullable=False)
    challenger: Mapped[str | None] = mapped_column(String(64))
    dataset_version_id: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(16))
    eval_jobs: Mapped[dict | None] = mapped_column(JSON)
    details: Mapped[dict | None] = mapped_column(JSON)
    canary_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoopDecision(Base):
    """Something the loop decided, with its reason: a trigger fired, a run queued, a gate passed or
    failed, a canary started, a promotion or a rollback, a manual action seen. ``dedupe_key``
    (unique) makes each decision of a cycle land once, however often a restarted controller
    retries it."""

    __tablename__ = "loop_decisions"
    __table_args__ = (Index("ix_loop_decisions_deployment_time", "deployment", "time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment: Mapped[str] = mapped_column(String(100), nullable=False)
    cycle_id: Mapped[str | None] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    details: Mapped[dict | None] = mapped_column(JSON)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
