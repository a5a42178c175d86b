"""oikyo.store."""
