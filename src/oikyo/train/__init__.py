"""oikyo.train."""
