"""oikyo.data."""
