"""oikyo.jobs."""
