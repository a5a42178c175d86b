"""oikyo.cli."""
