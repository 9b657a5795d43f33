"""Line numbers of the keys and values in a TOML document, for error messages.

tomllib returns plain data without positions, so this module scans the same text once more and
records, for every key path, the line where it starts. A key path is a tuple of table keys and
array indexes as in the parsed data, such as ("companies", 0, "numbers", 3, "source").

The scan assumes the text is valid TOML (tomllib has already accepted it). It follows tables,
arrays of tables, dotted keys, inline tables, arrays and all four string forms.
"""

from __future__ import annotations

import bisect
import tomllib
from collections.abc import Iterable

KeyPath = tuple[str | int, ...]

_BARE_KEY_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
)
# Characters that end an unquoted value: a number, a boolean or a date-time.
_SCALAR_END = frozenset(",]}#\r\n")


class Positions:
    """The line of every key path in one TOML text."""

    def __init__(self, lines: dict[KeyPath, int]) -> None:
        self._lines = lines

    def line_of(self, path: Iterable[str | int]) -> int | None:
        """Return the line of `path`, or of its nearest enclosing key when `path` is absent.

        A missing key gets the line of the table that should contain it. None means the path is
        the document itself.
        """
        path = tuple(path)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None


def scan_positions(text: str) -> Positions:
    """Scan valid TOML text and return the line of each key, table and array element."""
    scanner = _Scanner(text)
    scanner.scan_document()
    return Positions(scanner.lines)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0
        self.lines: dict[KeyPath, int] = {}
        self._line_starts = [0] + [index + 1 for index, char in enumerate(text) if char == "\n"]
        # Arrays of tables seen so far, keyed by their path, with the count of elements.
        self._table_array_sizes: dict[KeyPath, int] = {}

    def line_at(self, position: int) -> int:
        return bisect.bisect_right(self._line_starts, position)

    def peek(self, length: int = 1) -> str:
        return self.text[self.position : self.position + length]

    def scan_document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_blank(newlines=True)
            if self.position >= len(self.text):
                return
            if self.peek(2) == "[[":
                table = self.scan_table_header(array=True)
            elif self.peek() == "[":
                table = self.scan_table_header(array=False)
            else:
                self.scan_key_value(table)

    def scan_table_header(self, *, array: bool) -> KeyPath:
        line = self.line_at(self.position)
        self.position += 2 if array else 1
        keys = self.scan_key()
        self.skip_blank(newlines=False)
        self.position += 2 if array else 1

        path: KeyPath = ()
        for key in keys[:-1]:
            path = self.resolve(path + (key,))
        path += (keys[-1],)
        if array:
            index = self._table_array_sizes.get(path, 0)
            self._table_array_sizes[path] = index + 1
            self.lines.setdefault(path, line)
            path += (index,)
        self.lines.setdefault(path, line)
        return path

    def resolve(self, path: KeyPath) -> KeyPath:
        """Append the index of the last element when `path` names an array of tables."""
        if path in self._table_array_sizes:
            return path + (self._table_array_sizes[path] - 1,)
        return path

    def scan_key_value(self, table: KeyPath) -> None:
        line = self.line_at(self.position)
        keys = self.scan_key()
        path = table
        for key in keys[:-1]:
            path = self.resolve(path + (key,))
        path += (keys[-1],)
        self.lines[path] = line

        self.skip_blank(newlines=False)
        self.position += 1  # the "=" sign
        self.skip_blank(newlines=False)
        self.scan_value(path)

    def scan_key(self) -> list[str]:
        """Read a possibly dotted key and return its parts, unquoted."""
        parts: list[str] = []
        while True:
            self.skip_blank(newlines=False)
            start = self.position
            char = self.peek()
            if char == '"' or char == "'":
                self.skip_string()
                parts.append(_unquote_key(self.text[start : self.position]))
            else:
                while self.peek() and self.peek() in _BARE_KEY_CHARACTERS:
                    self.position += 1
                parts.append(self.text[start : self.position])
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return parts
            self.position += 1

    def scan_value(self, path: KeyPath) -> None:
        char = self.peek()
        if char == "[":
            self.scan_array(path)
        elif char == "{":
            self.scan_inline_table(path)
        elif char == '"' or char == "'":
            self.skip_string()
        else:
            while self.position < len(self.text) and self.text[self.position] not in _SCALAR_END:
                self.position += 1

    def scan_array(self, path: KeyPath) -> None:
        self.position += 1
        index = 0
        while True:
            self.skip_blank(newlines=True)
            if self.peek() in ("]", ""):
                self.position += 1
                return
            self.lines[path + (index,)] = self.line_at(self.position)
            self.scan_value(path + (index,))
            self.skip_blank(newlines=True)
            if self.peek() == ",":
                self.position += 1
            index += 1

    def scan_inline_table(self, path: KeyPath) -> None:
        self.position += 1
        while True:
            # TOML 1.0 keeps inline tables on one line. Newlines are skipped anyway, as TOML 1.1 allows them.
            self.skip_blank(newlines=True)
            if self.peek() in ("}", ""):
                self.position += 1
                return
            line = self.line_at(self.position)
            keys = self.scan_key()
            key_path = path + tuple(keys)
            self.lines[key_path] = line
            self.skip_blank(newlines=False)
            self.position += 1  # the "=" sign
            self.skip_blank(newlines=False)
            self.scan_value(key_path)
            self.skip_blank(newlines=True)
            if self.peek() == ",":
                self.position += 1

    def skip_string(self) -> None:
        quote = self.peek()
        if self.peek(3) == quote * 3:
            self.position += 3
            while self.position < len(self.text) and self.peek(3) != quote * 3:
                if quote == '"' and self.peek() == "\\":
                    self.position += 1
                self.position += 1
            self.position += 3
            # A multi-line string may end with one or two quotes of its own before the closing three.
            for _ in range(2):
                if self.peek() == quote:
                    self.position += 1
            return

        self.position += 1
        while self.position < len(self.text) and self.peek() != quote:
            if quote == '"' and self.peek() == "\\":
                self.position += 1
            self.position += 1
        self.position += 1

    def skip_blank(self, *, newlines: bool) -> None:
        """Skip spaces, tabs and comments, and also line breaks when `newlines` is set."""
        while self.position < len(self.text):
            char = self.text[self.position]
            if char == " " or char == "\t":
                self.position += 1
            elif char == "#":
                end = self.text.find("\n", self.position)
                self.position = len(self.text) if end < 0 else end
            elif newlines and (char == "\n" or char == "\r"):
                self.position += 1
            else:
                return


def _unquote_key(quoted: str) -> str:
    # tomllib decodes the escapes exactly as it did for the data, so the two paths agree.
    return next(iter(tomllib.loads(f"{quoted} = 0")))
