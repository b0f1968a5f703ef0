"""Compiled reader for plain numeric embeddings CSVs: ids, then one number per dimension.

A submission CSV of 12 000 rows × 1024 dimensions is 126 MB of text, and
parsing it with pandas took about a second, most of an evaluation's reading
time. This kernel parses a plain file, one that has no quotes and a number
in every cell, about three times faster. Anything else (quotes, empty or text
cells, NaN, rows with another number of fields) makes it report the row, and
the caller reads the file with pandas, which also names the cells that are
not numbers.

Numbers are read as sign, decimal digits and an optional exponent. The
first 19 significant digits are kept as an integer and scaled by an exact
power of ten in float64, then rounded to float32. This gives the same float32
as a correctly rounded parser except, rarely, in the last bit.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import import_optional
from ..models.device import usable_cpu_count

numba = import_optional("numba", "reading the embeddings CSV")

_COMMA, _NEWLINE, _RETURN, _DOT, _MINUS, _PLUS = 44, 10, 13, 46, 45, 43
_ZERO, _NINE, _LOWER_E, _UPPER_E = 48, 57, 101, 69
_MAX_DIGITS = 19
_EXACT_POWERS = np.array([10.0**power for power in range(23)])


@numba.njit(cache=True, nogil=True)
def parse_rows(data: np.ndarray, start: int, values: np.ndarray, id_bounds: np.ndarray) -> int:
    """Parse the rows of a plain CSV after its header into ``values`` and ``id_bounds``.

    Args:
        data: The file's bytes as a uint8 array.
        start: Offset of the first row, after the header line.
        values: Output ``(max_rows, columns)`` float32; one row per CSV row.
        id_bounds: Output ``(max_rows, 2)`` int64: start and end offsets of each row's id.

    Returns:
        The number of rows parsed, or ``-(row + 1)`` for the first row that is
        not plain (0-based among the rows after the header).
    """
    size = data.size
    columns = values.shape[1]
    position = start
    row = 0
    while position < size:
        # Empty lines, including a final line ending, hold no row.
        if data[position] == _NEWLINE:
            position += 1
            continue
        if data[position] == _RETURN and position + 1 < size and data[position + 1] == _NEWLINE:
            position += 2
            continue
        if row >= values.shape[0]:
            return -(row + 1)
        id_start = position
        while position < size and data[position] != _COMMA and data[position] != _NEWLINE:
            position += 1
        if position >= size or data[position] != _COMMA:
            return -(row + 1)
        id_bounds[row, 0] = id_start
        id_bounds[row, 1] = position
        position += 1
        for column in range(columns):
            negative = False
            if position < size and (data[position] == _MINUS or data[position] == _PLUS):
                negative = data[position] == _MINUS
                position += 1
            mantissa = 0
            significant = 0
            exponent = 0
            digits = 0
            while position < size and _ZERO <= data[position] <= _NINE:
                digit = data[position] - _ZERO
                if significant < _MAX_DIGITS:
                    if mantissa > 0 or digit > 0:
                        mantissa = mantissa * 10 + digit
                        significant += 1
                else:
                    exponent += 1
                digits += 1
                position += 1
            if position < size and data[position] == _DOT:
                position += 1
                while position < size and _ZERO <= data[position] <= _NINE:
                    digit = data[position] - _ZERO
                    if significant < _MAX_DIGITS:
                        if mantissa > 0 or digit > 0:
                            mantissa = mantissa * 10 + digit
                            significant += 1
                        exponent -= 1
                    digits += 1
                    position += 1
            if digits == 0:
                return -(row + 1)
            if position < size and (data[position] == _LOWER_E or data[position] == _UPPER_E):
                position += 1
                exponent_negative = False
                if position < size and (data[position] == _MINUS or data[position] == _PLUS):
                    exponent_negative = data[position] == _MINUS
                    position += 1
                exponent_digits = 0
                written = 0
                while position < size and _ZERO <= data[position] <= _NINE:
                    if written < 10000:
                        written = written * 10 + (data[position] - _ZERO)
                    exponent_digits += 1
                    position += 1
                if exponent_digits == 0:
                    return -(row + 1)
                exponent += -written if exponent_negative else written
            value = float(mantissa)
            if mantissa != 0:
                if 0 < exponent <= 22:
                    value *= _EXACT_POWERS[exponent]
                elif -22 <= exponent < 0:
                    value /= _EXACT_POWERS[-exponent]
                elif exponent != 0:
                    value *= 10.0**exponent
            values[row, column] = np.float32(-value if negative else value)
            if column < columns - 1:
                if position >= size or data[position] != _COMMA:
                    return -(row + 1)
                position += 1
            elif position < size:
                if data[position] == _RETURN and position + 1 < size and data[position + 1] == _NEWLINE:
                    position += 2
                elif data[position] == _NEWLINE:
                    position += 1
                else:
                    return -(row + 1)
        row += 1
    return row


@numba.njit(cache=True, nogil=True)
def count_line_ends(data: np.ndarray, start: int, end: int) -> int:
    """Return the number of line feeds in ``data[start:end]``."""
    count = 0
    for position in range(start, end):
        if data[position] == _NEWLINE:
            count += 1
    return count


def load() -> None:
    """Compile the kernels, or load them from numba's cache, by reading a one-row file.

    Loading holds the interpreter lock for about 0.1 s, so a caller can read
    the file on another thread meanwhile.
    """
    read_plain_csv(b"id,0\na,1\n", 1, threads=1)


def read_plain_csv(data: bytes, columns: int, threads: int | None = None) -> tuple[list[str], np.ndarray] | None:
    """Return the ids and values of a plain CSV, or None when the file is not plain.

    A large file is cut at line ends into one part per thread, and the parts
    are parsed at once (the kernel releases the interpreter lock).

    Args:
        data: The whole file; its first line is the header.
        columns: Number of dimension columns, which follow the id in every row.
        threads: Parts to parse at once; None uses one per usable CPU, at most
            :data:`MAX_THREADS`.
    """
    if b'"' in data:
        return None
    header_end = data.find(b"\n")
    if header_end < 0:
        return [], np.empty((0, columns), dtype=np.float32)
    buffer = np.frombuffer(data, dtype=np.uint8)
    bounds = _part_bounds(data, header_end + 1, threads or _usable_cpus())
    with ThreadPoolExecutor(max_workers=len(bounds)) as executor:
        # Each part may hold up to one row per line end in it, plus an unterminated last line.
        capacities = [
            count + 1 for count in executor.map(lambda bound: count_line_ends(buffer, *bound), bounds)
        ]
        offsets = np.concatenate([[0], np.cumsum(capacities)])
        values = np.empty((int(offsets[-1]), columns), dtype=np.float32)
        id_bounds = np.empty((int(offsets[-1]), 2), dtype=np.int64)

        def parse_part(part: int) -> int:
            start, end = bounds[part]
            rows = slice(int(offsets[part]), int(offsets[part + 1]))
            return int(parse_rows(buffer[:end], start, values[rows], id_bounds[rows]))

        counts = list(executor.map(parse_part, range(len(bounds))))
    if min(counts) < 0:
        return None
    if all(count == capacity for count, capacity in zip(counts[:-1], capacities[:-1], strict=True)):
        kept_rows = slice(0, int(offsets[-2]) + counts[-1])
    else:  # blank lines inside a part left unused rows
        kept_rows = np.concatenate([np.arange(offsets[part], offsets[part] + count) for part, count in enumerate(counts)])
    try:
        ids = [data[start:end].decode("utf-8") for start, end in id_bounds[kept_rows].tolist()]
    except UnicodeDecodeError:
        return None
    return ids, values[kept_rows]


MAX_THREADS = 4
MIN_PART_BYTES = 4 * 2**20
"""Files under twice this size are parsed in one part."""


def _usable_cpus() -> int:
    """Return the number of CPUs this process may run on, at most :data:`MAX_THREADS`."""
    return max(1, min(usable_cpu_count(), MAX_THREADS))


def _part_bounds(data: bytes, start: int, parts: int) -> list[tuple[int, int]]:
    """Cut ``data[start:]`` into up to ``parts`` ranges of whole lines, each at least :data:`MIN_PART_BYTES`."""
    parts = max(1, min(parts, (len(data) - start) // MIN_PART_BYTES))
    bounds = []
    for part in range(parts):
        end = len(data)
        if part < parts - 1:
            line_end = data.find(b"\n", start + (len(data) - start) // (parts - part))
            end = len(data) if line_end < 0 else line_end + 1
        bounds.append((start, end))
        start = end
        if start >= len(data):
            break
    return bounds
