"""oikyo.models."""
