"""SQLAlchemy models: the records of the store.

Each table's columns are created by a named migration in ``migrations/versions``; a change to a
model here needs a new migration there (append-only: existing migrations never change).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text
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
