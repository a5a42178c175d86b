"""oikyo.evaluate."""
