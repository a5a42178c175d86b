"""Continuous learning: policies per deployment, and the controller that closes the loop.

Traffic and feedback become dataset versions (:mod:`oikyo.data.traffic`), triggers start a
cycle, the cycle trains a challenger from the champion, gates it against the champion on a fixed
evaluation set, canaries it on live traffic and promotes it or rolls it back on quality
(:mod:`oikyo.loop.controller`, :mod:`oikyo.loop.canary`). Every decision is recorded with its
reason (:mod:`oikyo.loop.records`). The loop sits above every other stage: nothing below it
imports it.
"""
