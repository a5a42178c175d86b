"""The docs stay true to the code: every config field is documented, every command has --help."""

from __future__ import annotations

from pathlib import Path

import typer.main

ROOT = Path(__file__).resolve().parents[1]


def _fields(model, prefix=""):
    for name, field in model.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        if sub is not None:
            yield from _fields(field.annotation, prefix + name + ".")
        else:
            yield prefix + name


def test_every_training_config_field_is_in_the_reference():
    from oikyo.train.config import TrainConfig

    reference = (ROOT / "docs" / "training.md").read_text()
    missing = [name for name in _fields(TrainConfig) if f"`{name}`" not in reference]
    assert not missing, f"docs/training.md lacks {missing}: regenerate its configuration reference"


def _commands(command, path=()):
    # Typer ships its own copy of click, so look for the group interface rather than a class.
    yield path, command
    if hasattr(command, "list_commands"):
        ctx = type(command).context_class(command) if hasattr(type(command), "context_class") else None
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), (*path, name))


def test_every_cli_command_has_help_text():
    from oikyo.cli.main import app

    root = typer.main.get_command(app)
    commands = list(_commands(root))
    assert len(commands) > 20
    undocumented = [" ".join(path) for path, command in commands if path and not (command.help or "").strip()]
    assert not undocumented, f"commands without help: {undocumented}"
    for path, command in commands:
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option" and not getattr(param, "hidden", False):
                assert (param.help or "").strip() or param.name in ("help",), f"{' '.join(path)} {param.opts} has no help"


def test_every_doc_that_the_code_or_docs_name_exists():
    """A help text or doc that says "see docs/X.md" points at a file that is there."""
    import re

    texts = [p.read_text() for p in (ROOT / "src").rglob("*.py")] + [p.read_text() for p in (ROOT / "docs").glob("*.md")]
    named = {m for text in texts for m in re.findall(r"docs/[A-Za-z0-9_-]+\.md", text)}
    assert named and not [n for n in sorted(named) if not (ROOT / n).is_file()]
