"""The forgetting probe: held-out general text and general instructions with checkable answers (see build.py)."""
