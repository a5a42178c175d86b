"""oikyo.api."""
