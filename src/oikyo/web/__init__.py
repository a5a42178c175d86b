"""oikyo.web."""
