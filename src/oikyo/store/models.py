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
    checkpoint. ``attempts`` counts claims since the run was last queued; ``resume_count`` counts
    user resumes. The run's files live in ``run_dir`` (config.yaml, checkpoints/, output/, train.log).
    """

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
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
    """A complete checkpoint folder of a run, as found on disk (``path``) at ``step``."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_checkpoints_run_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True)
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    path: Mapped[str] = mapped_column(String(500), nullable=False)
    eval_loss: Mapped[float | None] = mapped_column(Float)
    is_best: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
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
