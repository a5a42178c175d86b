"""oikyo.serve."""
