"""The one exception type for bad input.

Its message is a single line naming the file, the row or image, and what is
wrong; the CLI prints it and exits non-zero without a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input data: the message names file, row/image and the problem."""

    def __init__(self, file: object, problem: str, where: object | None = None) -> None:
        self.file = str(file)
        self.where = None if where is None else str(where)
        self.problem = problem
        location = f"{self.file}" + (f" [{self.where}]" if self.where else "")
        message = f"{location}: {problem}".replace("\n", " ")
        # a lone surrogate (from bad input) could not be printed or logged: escape it
        super().__init__(message.encode("utf-8", "backslashreplace").decode("utf-8"))
