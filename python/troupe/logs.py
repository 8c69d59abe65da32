"""Turning a job's log bytes into text: UTF-8 with replacement, split sequences carried over."""

import codecs


class LogDecoder:
    """Decodes log chunks one after another; a multibyte character cut between chunks is kept whole."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        """The text of `data`, less any incomplete sequence at its end (held for the next chunk)."""
        return self._decoder.decode(data, final=False)

    def finish(self) -> str:
        """What is left once the log ended: a held incomplete sequence becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)
