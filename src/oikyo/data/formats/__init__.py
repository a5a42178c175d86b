"""oikyo.data.formats."""
