"""Turn a sequence's generated tokens into text as they arrive: streaming deltas and stop strings.

Decoding the whole output at every step costs O(length) per token; instead :class:`TextTracker`
decodes a short window (the approach of vLLM and TGI): the text of the tokens since the last
emitted boundary, minus the text of that window's already-read part. A window that ends inside a
multi-byte character decodes to U+FFFD and is held until the character completes.

Stop strings are searched only where new text could complete them. Text that might be the start
of a stop string is held back from the stream until the next tokens show whether it is one, so a
client never receives part of a stop string; the stop string itself is never part of the output::

    tracker = TextTracker(tokenizer, stop=["\\n\\n"])
    for token in tokens:
        if tracker.add(token):     # True: a stop string completed; tracker.text ends before it
            break
        send(tracker.take_delta())
"""

from __future__ import annotations

REPLACEMENT_CHAR = "\ufffd"


class TextTracker:
    """The decoded output of one sequence, grown one token at a time."""

    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.ids: list[int] = []
        self.text = ""  # decoded so far (truncated before the stop string once one is found)
        self.stopped = False
        self._sent = 0  # characters of self.text already handed out by take_delta
        self._prefix_offset = 0  # window start: a token boundary already decoded into self.text
        self._read_offset = 0  # tokens up to here are in self.text

    def add(self, token_id: int) -> bool:
        """Append one generated token; True when a stop string has now appeared (the text is cut before it)."""
        if self.stopped:
            return True
        self.ids.append(token_id)
        window = self.ids[self._prefix_offset :]
        before = self._decode(self.ids[self._prefix_offset : self._read_offset])
        after = self._decode(window)
        if len(after) <= len(before) or after.endswith(REPLACEMENT_CHAR):
            return False  # nothing printable yet (a special token, or half a character)
        old_length = len(self.text)
        self.text += after[len(before) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
        return self._check_stop(old_length)

    def flush(self) -> None:
        """At the end of generation, take in what the last held tokens decode to, even half a character."""
        if self.stopped or self._read_offset == len(self.ids):
            return
        before = self._decode(self.ids[self._prefix_offset : self._read_offset])
        after = self._decode(self.ids[self._prefix_offset :])
        old_length = len(self.text)
        self.text += after[len(before) :]
        self._prefix_offset = self._read_offset = len(self.ids)
        self._check_stop(old_length)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""

    def _check_stop(self, old_length: int) -> bool:
        """Cut the text at the earliest stop string that ends in the new text."""
        cut = None
        for s in self.stop:
            index = self.text.find(s, max(0, old_length - len(s) + 1))
            if index >= 0 and (cut is None or index < cut):
                cut = index
        if cut is None:
            return False
        self.text = self.text[:cut]
        self.stopped = True
        return True

    def take_delta(self, final: bool = False) -> str:
        """Text not handed out yet, minus a tail that could still grow into a stop string (unless ``final``)."""
        end = len(self.text) if (final or self.stopped) else len(self.text) - self._held_back()
        if end <= self._sent:
            return ""
        delta = self.text[self._sent : end]
        self._sent = end
        return delta

    def _held_back(self) -> int:
        """Length of the longest end of the text that is a proper prefix of some stop string."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:k]):
                    longest = k
                    break
        return longest
