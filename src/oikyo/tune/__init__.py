"""oikyo.tune."""
