"""Errors that carry a reason a person can act on."""


class BadUpload(ValueError):
    """An upload that ls4 cannot process as it is; retrying will not help.

    The message says what is wrong and what the uploader can do about it.
    """

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class UploadsUnprocessed(RuntimeError):
    """A run left uploads unprocessed. Each one's own notice said why when it was met, so
    the run's failure is not a problem to tell again."""
