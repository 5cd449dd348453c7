"""Read an input file (CSV in any of its encodings and dialects, .xlsx, Parquet)
into a DuckDB table of normalised text cells (spec section 2).

Reading is vectorised: DuckDB parses CSV and Parquet, calamine (through
fastexcel) reads Excel; text normalisation is SQL plus one Arrow-vectorised
NFKC function. Rows that cannot be parsed at all (wrong number of fields,
unterminated quotes) are kept with their line and raw text so the validation
stage can quarantine them.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import math
import mmap
import re
import shutil
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from twopay.errors import InputSchemaError, UsageError
from twopay.identity.idnumber import mask_text
from twopay.io.schemas import FileKind, header_key, header_map

if TYPE_CHECKING:
    import polars as pl

SNIFF_BYTES = 1 << 16
# The day of a Parquet timestamp with a time zone is taken in China's time.
DATE_TIME_ZONE = "Asia/Shanghai"
CHUNK = 1 << 22


@dataclass(frozen=True)
class LoadedFile:
    table: str
    source_name: str
    path: Path
    sha256: str
    rows: int | None  # None for a lazy load (counting would read the file)
    format: str
    encoding: str | None
    # SQL over ``table``'s columns: a row's raw text. A lazy load builds it
    # from the row's cells only where it is asked for (the rows quarantined),
    # not for every row.
    raw_sql: str = "raw"
    # canonical column -> SQL over ``table``'s columns: its value as the file
    # typed it (a Parquet DATE or DECIMAL column), read without parsing text
    typed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Staged:
    """What a stage view holds besides line_number, raw, parse_error and the
    canonical columns as text."""

    named: set[str]  # the canonical columns the file has
    plain: set[str] = field(default_factory=set)  # text that needs no normalising
    # stage columns that, joined by ``sep``, are a row's raw text where raw is NULL
    raw_cells: list[str] = field(default_factory=list)
    sep: str = ","
    typed: dict[str, str] = field(default_factory=dict)  # canonical -> SQL over stage columns


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """The file's SHA-256, computed once per file version (a run hashes its
    inputs for the batch fingerprint and again when it reads them)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(CHUNK):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


# An empty line (nothing but line-break characters: \r* then \n, or a last
# line of \r alone), found by the \n that ends the line before it; the
# file's first line is looked at apart.
_EMPTY_FIRST = re.compile(rb"\r*\n|\r+\Z")
_EMPTY_NEXT = re.compile(rb"\n(?:\r*(?=\n)|\r+\Z)")


def blank_lines(path: Path) -> list[int]:
    """The numbers of the empty lines outside quoted cells, which DuckDB skips
    without counting them as records."""
    return _blank_lines(path)[0]


def _blank_lines(path: Path) -> tuple[list[int], list[int]]:
    """The empty lines outside quoted cells: their numbers, and the byte
    offset where each starts. Only read when a file's line count says
    that it has lines that are not one record each. No loop over lines: a
    regex finds the empty lines (few), and the line breaks and quotes before
    each are counted a block at a time; a line starts inside a quoted cell
    when an odd number of quotes come before it."""
    if path.stat().st_size == 0:
        return [], []
    blanks: list[int] = []
    offsets: list[int] = []
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        starts = [0] if _EMPTY_FIRST.match(mm) else []
        found = (m.start() + 1 for m in _EMPTY_NEXT.finditer(mm))
        done = newlines = quotes = 0
        for start in itertools.chain(starts, found):
            for at in range(done, start, CHUNK):
                block = mm[at : min(at + CHUNK, start)]
                newlines += block.count(b"\n")
                quotes += block.count(b'"')
            done = start
            if quotes % 2 == 0:
                blanks.append(newlines + 1)
                offsets.append(start)
    return blanks, offsets


def count_newlines(path: Path) -> int:
    n = 0
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            n += block.count(b"\n")
    return n


def count_lines(path: Path) -> int:
    """The lines an editor shows: the line breaks, and a last line without one."""
    lines = count_newlines(path)
    with path.open("rb") as fh:
        fh.seek(max(path.stat().st_size - 1, 0))
        if fh.read(1) not in (b"\n", b""):
            lines += 1
    return lines


def _nfkc(values: pa.Array) -> pa.Array:
    return pc.utf8_normalize(values, form="NFKC")


def register_functions(con: duckdb.DuckDBPyConnection) -> None:
    """NFKC is not built into DuckDB; pyarrow does it a vector at a time."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = 'nfkc'"
    ).fetchall()[0][0]
    if not exists:
        con.create_function("nfkc", _nfkc, ["VARCHAR"], "VARCHAR", type="arrow")


def normalised_cell_sql(col: str) -> str:
    """Spec 2: NFKC, trim, collapse inner white space; empty becomes NULL."""
    # Cheap tests first: a cell is non-ASCII when its byte and character
    # lengths differ, and needs white space collapsed only when it has a run
    # of spaces or a tab or line break; most cells go through trim() alone.
    spaced = (
        f"strpos({col}, '  ') > 0 OR strpos({col}, chr(9)) > 0 OR strpos({col}, chr(10)) > 0"
        f" OR strpos({col}, chr(13)) > 0"
    )
    # ASCII, CJK ideographs (basic block and extension A) and the middle dot
    # are their own NFKC form: Chinese names and unit names skip the Python call.
    stable = (
        f"regexp_full_match({col}, "
        "'[\\x{00}-\\x{7F}\\x{B7}\\x{3400}-\\x{4DBF}\\x{4E00}-\\x{9FFF}]*')"
    )
    return (
        f"nullif(CASE WHEN strlen({col}) <> length({col}) AND NOT {stable} "
        # white space collapsed first, then trimmed: trim() takes spaces alone,
        # and a tab or line break at a cell's edge must go too
        f"THEN trim(regexp_replace(nfkc({col}), '\\s+', ' ', 'g')) "
        f"WHEN {spaced} THEN trim(regexp_replace({col}, '\\s+', ' ', 'g')) "
        f"ELSE trim({col}) END, '')"
    )


def detect_format(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise UsageError(
            f"{path}: this is an old binary Excel file (.xls); save it as .xlsx or CSV."
        )
    return "csv"


_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]")


def _common_hanzi(text: str) -> int:
    """How many characters of ``text`` are common Chinese (GB2312 level 1,
    the 3755 characters of everyday names and words)."""
    n = 0
    for ch in text:
        if "\u4e00" <= ch <= "\u9fff":
            try:
                n += 0xB0 <= ch.encode("gb2312")[0] <= 0xD7
            except UnicodeEncodeError:
                pass
    return n


def detect_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) when the whole file decodes as UTF-8, else
    GB18030; a usage error when Chinese read as UTF-8 comes before the first
    byte that is not (a UTF-8 file with a row in another encoding)."""
    with path.open("rb") as fh:
        head = fh.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"  # Excel's "Unicode text"; transcoded like GB18030
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        lines = 0  # line breaks in the blocks decoded
        first = b""  # the first block: what both readings are weighed on
        cjk = 0  # Chinese characters decoded as UTF-8 (counted up to 2)
        try:
            while block := fh.read(CHUNK):
                first = first or block
                text = decoder.decode(block)
                if cjk < 2:
                    cjk += sum(1 for _ in itertools.islice(_CJK.finditer(text), 2))
                lines += block.count(b"\n")
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            before = exc.object[: exc.start]  # the decoder's buffer up to the bad byte
            if cjk < 2:
                cjk += sum(1 for _ in itertools.islice(_CJK.finditer(before.decode("utf-8")), 2))
            if cjk < 2:  # (a GBK file's first characters are rarely valid UTF-8 Chinese)
                return "gb18030"
            # but some are (濮峰安 in GBK is 姷尲 in UTF-8): a GBK file reads as
            # common Chinese, its UTF-8 reading as rare characters
            valid = (before if exc.object is first else first)[:65536]
            if _common_hanzi(valid.decode("gb18030", "replace")) > _common_hanzi(
                valid.decode("utf-8", "ignore")
            ):
                return "gb18030"
            # UTF-8 Chinese before a byte that is not UTF-8: a file that mixes
            # encodings (rows pasted from a GBK export). Read whole as GB18030,
            # every UTF-8 character before it would turn into mojibake.
            line = lines + before.count(b"\n") + 1
            raise UsageError(
                f"{path}: the file is UTF-8 but line {line} holds a byte that is not "
                "UTF-8 (a row pasted from a GBK file?); save the whole file in one "
                "encoding, or pass --encoding with the encoding to read it all in."
            ) from None
    return "utf-8"


def check_encoding(encoding: str) -> None:
    """A usage error unless ``encoding`` (--encoding) names a text encoding
    Python knows (codecs.lookup alone also accepts base64, zlib, rot13...)."""
    try:
        "".encode(encoding)
        b"".decode(encoding)
    except (LookupError, UnicodeError):
        raise UsageError(
            f"unknown encoding {encoding!r} given with --encoding; "
            "name a text encoding such as utf-8, gb18030 or utf-16."
        ) from None


def _to_utf8(path: Path, encoding: str, workdir: Path) -> Path:
    """DuckDB reads UTF-8 only (its encodings extension downloads at run time):
    transcode other encodings once, streaming."""
    target = workdir / (hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16] + ".csv")
    try:
        with (
            path.open("r", encoding=encoding, newline="") as src,
            target.open("w", encoding="utf-8", newline="") as dst,
        ):
            shutil.copyfileobj(src, dst, CHUNK)
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{path}: cannot be read as {encoding} (byte {exc.start}); "
            "pass --encoding with the file's real encoding."
        ) from None
    except UnicodeError as exc:  # e.g. utf-16 without a byte-order mark
        raise UsageError(
            f"{path}: cannot be read as {encoding} ({exc}); "
            "pass --encoding with the file's real encoding."
        ) from None
    return target


def _rows_below(sample: str, delim: str, n: int = 10) -> list[tuple[int, list[str]]]:
    """The rows after the first of a CSV's sample, with the line each starts
    on (for _header_below)."""
    out: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(sample), delimiter=delim)
    try:
        next(reader, None)
        for _ in range(n):
            line = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            out.append((line, row))
    except csv.Error:
        pass
    return out


def _sniff_delimiter(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def _shown_header(headers: list[str]) -> str:
    """A header row for an error message, ID- and account-like runs masked
    (spec 7): a file saved without its header row has its first data row
    here."""
    return mask_text(", ".join(h for h in headers if h)) or "(empty)"


def _header_below(
    rows: Sequence[tuple[int, list[str]]], kind: FileKind, aliases: Mapping[str, list[str]] | None
) -> str:
    """Where a header missing from the first row is, among the next rows (line,
    cells): a title or a date line above the table, as exports have. A hint
    for the error, or ''."""
    mapping = header_map(kind, aliases)
    for line, cells in rows:
        seen = {mapping.get(header_key(c or "")) for c in cells}
        if all(c in seen for c in kind.required):
            return (
                f" The header looks to be on line {line}: delete the line(s) above it "
                "(a title?) and run again."
            )
    return ""


def _check_header(
    path: Path,
    headers: list[str],
    kind: FileKind,
    aliases: Mapping[str, list[str]] | None,
    below: Sequence[tuple[int, list[str]]] = (),
) -> list[str | None]:
    """Canonical name of each header (None for extra columns); a missing
    required column or a duplicate is a usage error naming file and column
    (and, when one of the rows ``below`` (line, cells) is the header, where)."""
    mapping = header_map(kind, aliases)
    canon: list[str | None] = []
    seen: dict[str, str] = {}
    for h in headers:
        name = mapping.get(header_key(h or ""))
        if name is not None and name in seen:
            raise InputSchemaError(
                f"{path}: columns {mask_text(repr(seen[name]))} and {mask_text(repr(h))} both "
                f"mean {name!r}; keep one."
            )
        if name is not None:
            seen[name] = h
        canon.append(name)
    missing = [c for c in kind.required if c not in seen]
    if missing:
        col = kind.column(missing[0])
        zh = f" ({col.aliases[0]})" if col.aliases else ""
        raise InputSchemaError(
            f"{path}: the {kind.label} file has no column {missing[0]!r}{zh}; "
            f"its header is: {_shown_header(headers)}.{_header_below(below, kind, aliases)}"
        )
    for group in kind.one_of:
        if not any(c in seen for c in group):
            names = " nor ".join(
                f"{c!r} ({kind.column(c).aliases[0]})" if kind.column(c).aliases else repr(c)
                for c in group
            )
            raise InputSchemaError(
                f"{path}: the {kind.label} file has neither column {names}; one of them says "
                f"whose row it is; its header is: {_shown_header(headers)}."
            )
    return canon


def load_input(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    kind: FileKind,
    table: str,
    *,
    workdir: Path,
    encoding: str | None = None,
    aliases: Mapping[str, list[str]] | None = None,
    source_name: str | None = None,
    lazy: bool = False,
) -> LoadedFile:
    """Load ``path`` into ``table``: columns source_file, line_number, raw,
    parse_error (a structural problem with the row, else NULL) and every
    column of ``kind`` as normalised VARCHAR (NULL when absent or empty).

    ``lazy``: ``table`` is a view, read when a query uses it (one pass over a
    large file instead of a copy per step); the caller reads it while
    ``workdir`` exists and then calls drop_loaded."""
    register_functions(con)
    if encoding is not None:
        check_encoding(encoding)
    if not path.is_file():
        raise UsageError(f"{path}: no such file.")
    if path.stat().st_size == 0:
        raise UsageError(f"{path}: the file is empty (no header row).")
    source = source_name or path.name
    fmt = detect_format(path)
    digest = file_sha256(path)
    used_encoding: str | None = None
    stage = f"{table}_staged"
    drop_loaded(con, table)
    if fmt == "csv":
        used_encoding = encoding or detect_encoding(path)
        staged = _stage_csv(con, path, kind, aliases, used_encoding, workdir, table, lazy)
    elif fmt == "xlsx":
        staged = _stage_xlsx(con, path, kind, aliases, stage)
    else:
        staged = _stage_parquet(con, path, kind, aliases, stage, lazy)

    def cell(name: str) -> str:
        if name not in staged.named:
            return "NULL::VARCHAR"
        return f"c.{name}" if name in staged.plain else normalised_cell_sql(f"c.{name}")

    cols = ", ".join(f"{cell(c.name)} AS {c.name}" for c in kind.columns)
    sep = sql_literal(staged.sep)
    raw_cells = f" || {sep} || ".join(
        f"coalesce(CAST({{p}}{c} AS VARCHAR), '')" for c in staged.raw_cells
    )
    if not staged.raw_cells:
        raw, keep, raw_sql, typed = "c.raw", "", "raw", {}
    elif lazy:
        # the cells pass through untouched (free); raw_sql joins them on demand
        raw, keep = "c.raw", "".join(f", c.{c}" for c in staged.raw_cells)
        raw_sql, typed = f"coalesce(raw, {raw_cells.format(p='')})", staged.typed
    else:
        raw, keep = f"coalesce(c.raw, {raw_cells.format(p='c.')})", ""
        raw_sql, typed = "raw", {}
    con.execute(
        f"""
        CREATE OR REPLACE TEMP {"VIEW" if lazy else "TABLE"} {table} AS
        SELECT {sql_literal(source)}::VARCHAR AS source_file, c.line_number, {raw} AS raw,
               c.parse_error, {cols}{keep}
        FROM {stage} AS c
        """
    )
    if lazy:
        return LoadedFile(table, source, path, digest, None, fmt, used_encoding, raw_sql, typed)
    rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    drop_loaded(con, table, keep_table=True)
    return LoadedFile(table, source, path, digest, rows, fmt, used_encoding)


def _stage_csv(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    kind: FileKind,
    aliases: Mapping[str, list[str]] | None,
    encoding: str,
    workdir: Path,
    table: str,
    lazy: bool,
) -> _Staged:
    stage, csv_t, rej_t = f"{table}_staged", f"{table}_csv", f"{table}_rej"
    enc = codecs.lookup(encoding).name
    if enc in ("utf-8", "utf-8-sig"):
        text_path = path
    else:
        text_path = _to_utf8(path, encoding, workdir)
    with text_path.open("rb") as fh:
        sample_bytes = fh.read(SNIFF_BYTES)
    if b"\x00" in sample_bytes:
        raise UsageError(f"{path}: this is not a text table (binary content).")
    try:
        # A block boundary may cut a character: decode incrementally, not final.
        sample = codecs.getincrementaldecoder("utf-8")().decode(sample_bytes).lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{path}: cannot be read as {encoding} (byte {exc.start}); "
            "pass --encoding with the file's real encoding (e.g. gb18030)."
        ) from None
    delim = _sniff_delimiter(sample)
    try:
        first = next(csv.reader(io.StringIO(sample), delimiter=delim), None)
    except csv.Error as exc:  # e.g. old Mac line ends (CR only), which DuckDB cannot split
        raise UsageError(
            f"{path}: line 1 cannot be read as a CSV header ({exc}); save the file with "
            "Windows or Unix line ends (CRLF or LF)."
        ) from None
    if not first or not any(h.strip() for h in first):
        raise UsageError(f"{path}: the first line is empty; expected a header row.")
    canon = _check_header(path, first, kind, aliases, below=_rows_below(sample, delim))
    n = len(first)
    # a header cell written over two lines puts every row a line further down
    header_nl = sum(h.count("\n") for h in first)
    if header_nl:
        # DuckDB reads no record at all (and no error) from a file whose
        # header has a quoted line break when the file mixes CRLF and LF,
        # which is what Excel saves (CRLF row ends, LF in a wrapped cell):
        # read it with LF alone (every line stays where it was)
        text_path = _lf_copy(text_path, workdir) or text_path
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(n)) + "}"
    con.execute("DROP TABLE IF EXISTS _rej_err; DROP TABLE IF EXISTS _rej_scan")
    # A record's place in the file is its rowid (+ 1): the scan runs on every
    # core and preserve_insertion_order keeps the insert in file order. (A
    # row_number() window would hold the whole file in memory; the insert
    # streams and spills.)
    keep_order = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = true")
    read_sql = f"""
            CREATE OR REPLACE TEMP TABLE {csv_t} AS
            SELECT *
            FROM read_csv(?, delim = ?, quote = '"', escape = '"', header = true,
                          auto_detect = false, columns = {columns},
                          store_rejects = true, rejects_table = '_rej_err',
                          rejects_scan = '_rej_scan', max_line_size = 4000000, buffer_size = 8000000,
                          strict_mode = true, parallel = true)
            """
    try:
        for attempt in (0, 1):
            try:
                con.execute(read_sql, [str(text_path), delim])
                break
            except duckdb.OutOfMemoryException:
                raise  # not the file's fault: the CLI says to raise memory_limit
            except duckdb.Error as exc:
                # DuckDB refuses a file that mixes CRLF and LF line ends (a
                # row added in another editor): read it with LF alone
                fixed = None if attempt else _lf_copy(text_path, workdir)
                if fixed is None:
                    raise UsageError(
                        f"{path}: cannot be read as CSV ({_first_line(exc)})."
                    ) from None
                text_path = fixed
                con.execute("DROP TABLE IF EXISTS _rej_err; DROP TABLE IF EXISTS _rej_scan")
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if keep_order else 'false'}")
    # Line numbers as an editor shows them (header = line 1). DuckDB numbers
    # the rows it could not parse by record (header = 1); a good row's record
    # number follows from its rank among good rows and the rejected records
    # before it; the physical line then adds the quoted newlines of every
    # record before it.
    nl = " + ".join(
        f"coalesce(length(c{i}) - length(replace(c{i}, chr(10), '')), 0)" for i in range(n)
    )
    rejects_exist = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = '_rej_err'"
    ).fetchall()[0][0]
    if rejects_exist:
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE {rej_t} AS
            SELECT line AS rec, any_value(csv_line) AS csv_line,
                   any_value(error_type) AS error_type,
                   any_value(error_message) AS error_message,
                   min(byte_position) AS byte_pos
            FROM _rej_err GROUP BY line
            """
        )
    else:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {rej_t} (rec BIGINT, csv_line VARCHAR, "
            "error_type VARCHAR, error_message VARCHAR, byte_pos BIGINT)"
        )
    named = {name: i for i, name in enumerate(canon) if name is not None}
    select_cols = ", ".join(f"c{i} AS {name}" for name, i in named.items())
    null_cols = ", ".join(f"NULL::VARCHAR AS {name}" for name in named)
    # a record's cells as read; joined, they are its raw text (load_input)
    cells = ", ".join(f"c{i} AS _src{i}" for i in range(n))
    null_cells = ", ".join(f"NULL::VARCHAR AS _src{i}" for i in range(n))
    rejects = con.execute(f"SELECT count(*) FROM {rej_t}").fetchall()[0][0]
    any_rejects = rejects > 0
    # When the file has exactly one line per record (no quoted line breaks),
    # a record's line is its number: skip the running sum of line breaks.
    records = (
        con.execute(f"SELECT count(*) FROM {csv_t}").fetchall()[0][0] + rejects + 1 + header_nl
    )
    lines = count_lines(text_path)
    if records == 1 + header_nl and lines > records:
        # no record read, no row refused, and lines after the header that are
        # not empty: DuckDB found none in them (line ends or quotes it did not
        # expect). Never a silent drop (spec 2).
        others = lines - records - sum(b > records for b in _blank_lines(text_path)[0])
        if others > 0:
            raise UsageError(
                f"{path}: none of the {others} line(s) after the header could be read as a "
                "CSV row; save the file again as CSV (UTF-8 or GBK) and run again."
            )
    one_line_each = lines == records
    line_number = (
        "rec"
        if one_line_each
        else "rec + coalesce(sum(nl) OVER (ORDER BY rec ROWS BETWEEN UNBOUNDED PRECEDING "
        "AND 1 PRECEDING), 0)"
    )
    # Empty lines between records are not records: a record's line as counted
    # without them (L) moves down by each empty line before it. The j-th empty
    # line, on line p, has p - j other lines before it, so it comes before
    # every record with L > p - j.
    blank_t = f"{table}_blank"
    blanks, offsets = ([], []) if one_line_each else _blank_lines(text_path)
    if blanks:
        _register_blanks(con, blank_t, blanks, offsets)
        # DuckDB numbers a row it could not parse counting the empty lines
        # before it (and puts them in front of its text) but not the line
        # breaks inside quoted cells: count it like the others, without the
        # empty lines. Which come before it is told by byte offset (DuckDB
        # gives the byte where it found the error, within or just after the
        # row's line), not by line number, which counts differently.
        con.execute(
            f"""
            UPDATE {rej_t} SET
                rec = rec - coalesce(
                    (SELECT max(b.k) FROM {blank_t} b WHERE b.o < {rej_t}.byte_pos), 0),
                csv_line = ltrim(csv_line, chr(13) || chr(10))
            """
        )
    # rejected records before a good row shift it; with none, skip the count
    shift = "(SELECT count(*) FROM rej WHERE rej.slot <= 2 + rowid)" if any_rejects else "0"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP {"VIEW" if lazy else "TABLE"} {stage} AS
        WITH rej AS (
            SELECT *, rec - (row_number() OVER (ORDER BY rec) - 1) AS slot FROM {rej_t}
        ),
        good AS (
            SELECT 2 + rowid + {shift} AS rec,
                   NULL::VARCHAR AS raw, NULL::VARCHAR AS parse_error,
                   {"0" if one_line_each else nl} AS nl, {select_cols}, {cells}
            FROM {csv_t}
            -- a row of empty cells (',,,,', what a spreadsheet leaves below its
            -- table) is no data row, like a blank line and like an empty .xlsx row
            WHERE NOT ({" AND ".join(f"c{i} IS NULL" for i in range(n))})
        ),
        records AS (
            SELECT * FROM good
            UNION ALL
            SELECT rec, csv_line,
                CASE WHEN error_type IN ('TOO MANY COLUMNS', 'MISSING COLUMNS')
                    THEN 'wrong_field_count' ELSE 'unparsable_row' END
                    || ': ' || error_message,
                -- its own quoted line breaks move the rows after it down too
                length(trim(csv_line, chr(13) || chr(10)))
                    - length(replace(trim(csv_line, chr(13) || chr(10)), chr(10), '')),
                {null_cols}, {null_cells}
            FROM {rej_t}
        )
        {
            "SELECT ln + coalesce(b.k, 0) AS line_number, r.* EXCLUDE (rec, nl, ln)"
            if blanks
            else "SELECT ln AS line_number, * EXCLUDE (rec, nl, ln)"
        }
        FROM (SELECT {line_number} + {header_nl} AS ln, * FROM records) r
        {f"ASOF LEFT JOIN {blank_t} b ON r.ln > b.pos" if blanks else ""}
        """
    )
    for t in ("_rej_err", "_rej_scan"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    if any_rejects:
        _refuse_a_quote_left_open(con, path, stage, rej_t)
    return _Staged(set(named), raw_cells=[f"_src{i}" for i in range(n)], sep=delim)


def _lf_copy(path: Path, workdir: Path) -> Path | None:
    """A copy of ``path`` in ``workdir`` with every CRLF made LF, when the
    file mixes CRLF and LF line ends; None when it does not. Every line
    stays where it was, so line numbers do not change."""
    crlf = lf = 0
    last = b""
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            lf += block.count(b"\n")
            crlf += block.count(b"\r\n") + (last == b"\r" and block[:1] == b"\n")
            last = block[-1:]
    if not 0 < crlf < lf:
        return None
    target = workdir / (hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16] + "-lf.csv")
    with path.open("rb") as src, target.open("wb") as dst:
        carry = b""
        while block := src.read(CHUNK):
            block = carry + block
            carry = b"\r" if block.endswith(b"\r") else b""
            dst.write((block[:-1] if carry else block).replace(b"\r\n", b"\n"))
        dst.write(carry)
    return target


def _refuse_a_quote_left_open(
    con: duckdb.DuckDBPyConnection, path: Path, stage: str, rejects: str
) -> None:
    """A quote never closed makes the rest of the file one cell: one
    quarantined row that holds every row after it, which the counts would
    not show (spec 2: never a silent drop). The file must be fixed first.
    (The few rejected records are looked at first; the file's rows only
    when one is such a record, for its line number. A record's text may
    start with the line break of a CRLF before it: trimmed both ends.)"""
    open_quote = (
        "error_message LIKE '%unterminated quote%' "
        "AND strpos(trim(csv_line, chr(13) || chr(10)), chr(10)) > 0"
    )
    if not con.execute(f"SELECT count(*) FROM {rejects} WHERE {open_quote}").fetchall()[0][0]:
        return
    found = con.execute(
        f"""
        SELECT line_number
        FROM (SELECT *, trim(raw, chr(13) || chr(10)) AS r FROM {stage})
        WHERE parse_error LIKE '%unterminated quote%' AND strpos(r, chr(10)) > 0
        ORDER BY line_number LIMIT 1
        """
    ).fetchall()
    if found:
        (line,) = found[0]
        # counted in the file: the text DuckDB keeps of the bad record is cut
        # short (3,000 lines swallowed were told as 153)
        swallowed = max(count_lines(path) - int(line), 0)
        raise InputSchemaError(
            f"{path}: line {line} opens a quote that is never closed, so the {swallowed} "
            f"line(s) after it would be read as one cell; close or remove that quote and "
            "run again."
        )


# -- Excel number cells ------------------------------------------------------
#
# fastexcel writes a number cell out as its binary value: 1.10105199001011E+17
# (what Excel keeps of 110105199001011005 typed as a number) becomes
# 110105199001011008, and 100000000.07 becomes 100000000.069999993. Excel
# holds and shows 15 significant digits (spec 3: such an ID is Excel-mangled,
# never guessed; spec 2: an amount is what Excel shows). Only the sheet's XML
# says which cells are numbers (fastexcel's typed reads coerce numeric text
# too), so a streaming pass over it lists the number cells that fastexcel
# writes otherwise than Excel shows them: found by their stored value (the
# <v> text), then checked to be a number cell.


# What reading a damaged zip raises (a member cut short is EOFError, an
# encrypted one RuntimeError): such a workbook is calamine's to refuse (exit 2).
_ZIP_BROKEN = (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError)


def _rounds_away(n: int) -> str:
    """A regex: n digits and what follows, which rounding at the n-th
    digit turns into zeros (all 0 then below 5, or all 9 then above 5)."""
    return rf"(?:0{{{n}}}[0-4][0-9]*|9{{{n}}}(?:[6-9][0-9]*|5[0-9]*[1-9]))"


# fastexcel writes a number rounded to 9 decimals (trailing zeros dropped);
# Excel shows it rounded to 15 significant digits. The two agree on every
# stored value of at most 10 characters but a fraction of 7 integer digits
# or more (whose 9 decimals can show its binary value: 8388608.61 is written
# 8388608.609999999), and on these longer ones:
_SAME_AS_EXCEL = [
    r"[1-9][0-9]{0,14}",  # an integer of at most 15 digits
    r"[0-9]{1,6}\.[0-9]{1,9}",  # at most 6 + 9 digits
    r"[1-9][0-9]{5}\.[0-9]+",  # 6 integer digits: Excel shows 9 decimals too
    # k integer digits (k < 6): Excel rounds at decimal 15 - k, which leaves
    # no digit past the 9th when decimals 10 to 15 - k are all 0 and the next
    # is below 5, or all 9 and what follows above 5 (a float artefact
    # such as 9365.889999999999 or 576.0700000000001; a 5 alone may stand for
    # a binary value just below it)
    *(rf"[1-9][0-9]{{{k - 1}}}\.[0-9]{{9}}{_rounds_away(6 - k)}" for k in range(1, 6)),
    # below 1, with z zeros after the point: Excel rounds at decimal z + 15
    # (0.30000000000000004)
    *(rf"0\.0{{{z}}}[1-9][0-9]{{{8 - z}}}{_rounds_away(z + 6)}" for z in range(9)),
]
_STORED_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[Ee][-+]?[0-9]+)?")


def _number_cells() -> pl.DataFrame:
    """No number cells, in the frame that lists a sheet's: column and row
    (numbered from 1), and stored value."""
    import polars as pl

    return pl.DataFrame(schema={"column": pl.Int64, "row": pl.Int64, "stored": pl.String})


def _column(letters: bytes | str) -> int:
    """A column's number (A = 1) from its letters."""
    data = letters.encode() if isinstance(letters, str) else letters
    return sum((b - 64) * 26**i for i, b in enumerate(reversed(data)))


def excel_number_text(stored: str) -> str | None:
    """A number cell's stored value (its XML text) as Excel holds and shows
    it: 15 significant digits, written out without an exponent
    (1.10105199001011E+17 -> 110105199001011000, 0.30000000000000004 -> 0.3,
    1E-10 -> 0.0000000001). None for a value that is no finite number."""
    if not _STORED_NUMBER.fullmatch(stored):
        return None
    value = float(stored)
    if not math.isfinite(value):
        return None
    text = format(value, ".15g")
    if "e" in text:
        text = format(Decimal(text), "f")
    return "0" if text == "-0" else text


class _CellPatterns:
    """The worksheet XML's patterns (Rust regex syntax, for polars), for its
    namespace prefix (``x:`` in ``<x:c r="A1">``; most writers use none)."""

    def __init__(self, head: bytes) -> None:
        found = re.search(rb"<(?:([A-Za-z_][\w.-]*):)?worksheet[\s>]", head)
        prefix = found.group(1).decode() + ":" if found and found.group(1) else ""
        p = re.escape(prefix)
        self.cell = b"<" + prefix.encode() + b"c"  # where a cell element starts
        self.row = b"<" + prefix.encode() + b"row"  # where a row element starts
        self.open, self.close = f"<{prefix}v>", f"</{prefix}v>"
        # a stored value worth a look (_SAME_AS_EXCEL)
        stored = r"(?:[^<]{11,}|[^<Ee]*[Ee][^<]*|-?[0-9]{7,}\.[^<]*)"
        self.values = rf"<{p}v>{stored}</{p}v>"  # every <v> element with one
        # those in a cell written <c r="A1" ... (the reference is optional)
        self.cells = (
            rf'<{p}c r="[A-Z]+[0-9]+"[^>]*>\s*'
            rf"(?:<{p}f\b[^>]*/>\s*|<{p}f\b[^>]*>[^<]*</{p}f>\s*)?<{p}v>{stored}</{p}v>"
        )
        # in a cell ``cells`` matches: its column letters, row and type
        self.letters = rf'^<{p}c r="([A-Z]+)'
        self.row_number = rf'^<{p}c r="[A-Z]+([0-9]+)'
        self.type = rf"""^<{p}c r="[^"]*"[^>]*?\st\s*=\s*["']([^"']*)["']"""
        # split at self.row or self.cell, what follows a row's or cell's
        # name: its reference, and a cell's type and value
        self.row_ref = r"""^[^>]*?\sr\s*=\s*["']([0-9]{1,9})["']"""
        self.ref_letters = r"""^[^>]*?\sr\s*=\s*["']\$?([A-Z]{1,3})\$?[0-9]"""
        self.ref_row = r"""^[^>]*?\sr\s*=\s*["']\$?[A-Z]{1,3}\$?([0-9]{1,9})["']"""
        self.any_type = r"""^[^>]*?\st\s*=\s*["']([^"']*)["']"""
        self.any_value = rf"<{p}v\b[^>]*>([^<]*)<"

    def wanted(self, xml: pl.Expr) -> pl.Expr:
        """How many stored values worth a look ``xml`` holds that fastexcel
        writes otherwise than Excel shows them."""
        import polars as pl

        return (
            xml.str.extract_all(self.values)
            .list.eval(
                pl.element()
                .str.strip_prefix(self.open)
                .str.strip_suffix(self.close)
                # (not a NOT inside the regex, which RE2-like engines cannot say)
                .str.contains(_OTHER_THAN_EXCEL)
                .not_()
            )
            .list.sum()
            .fill_null(0)
        )


_OTHER_THAN_EXCEL = rf"^-?(?:{'|'.join(_SAME_AS_EXCEL)})$"


def _sheet_batches(
    z: zipfile.ZipFile, part: str, *, rows: bool = False
) -> Iterator[tuple[_CellPatterns, pl.Series]]:
    """A worksheet part's XML as text, in batches of up to 16 blocks (64 MB,
    scanned in parallel), each cut just before the last cell or row (only a
    row when ``rows``) that starts in it, so that it holds whole ones."""
    import polars as pl

    def text(blocks: list[bytes]) -> pl.Series:
        try:
            return pl.Series(blocks, dtype=pl.Binary).cast(pl.String)
        except pl.exceptions.ComputeError:  # not UTF-8
            return pl.Series([b.decode("utf-8", "replace") for b in blocks])

    pats: _CellPatterns | None = None
    with z.open(part) as fh:
        tail, batch, end = b"", [], False
        while not end:
            block = fh.read(CHUNK)
            end = not block
            block = tail + block
            if pats is None:
                pats = _CellPatterns(block)
            if end:
                cut = len(block)
            else:
                cut = block.rfind(pats.row)
                if not rows:
                    cut = max(cut, block.rfind(pats.cell))
                if cut <= 0 and not rows:
                    cut = block.rfind(b"<")
                if cut <= 0:
                    tail = block
                    continue
            batch.append(block[:cut])
            tail = block[cut:]
            if end or len(batch) == 16:
                yield pats, text(batch)
                batch = []


def _scan_sheet(z: zipfile.ZipFile, part: str, suspicious: str) -> tuple[bool, pl.DataFrame]:
    """One streaming pass over a worksheet part: whether the regex
    ``suspicious`` (a cell reference far out) matches in it, and the number
    cells that fastexcel writes otherwise than Excel shows them (_number_cells).
    The regexes run in polars. When such a value's cell is not written
    <c r="A1" ..., a second pass reads the rows that hold one
    (_number_cells_by_row)."""
    import polars as pl

    suspect = irregular = False
    cells: list[pl.DataFrame] = []
    x = pl.col("x")
    for pats, text in _sheet_batches(z, part):
        frame = pl.DataFrame({"x": text})
        found = frame.select(
            x.str.contains(suspicious).any().alias("seen"), pats.wanted(x).alias("wanted")
        )
        suspect = suspect or bool(found["seen"][0])
        wanted = found["wanted"]
        if irregular or not wanted.sum():
            continue
        got = (
            frame.filter(wanted > 0)
            .select(x.str.extract_all(pats.cells))
            .explode("x")
            .drop_nulls()
            .select(
                x.str.extract(pats.letters).alias("letters"),
                x.str.extract(pats.row_number).cast(pl.Int64, strict=False).alias("row"),
                x.str.extract(pats.type).alias("type"),
                x.str.split(pats.open).list.last().str.strip_suffix(pats.close).alias("stored"),
            )
            .filter(~pl.col("stored").str.contains(_OTHER_THAN_EXCEL))
        )
        irregular = got.height != wanted.sum()
        cells.append(got)
    if irregular:
        return suspect, _number_cells_by_row(z, part)
    found = pl.concat(cells).filter(pl.col("type").fill_null("n") == "n") if cells else None
    if found is None or found.is_empty():  # (a number cell has no t, or t="n")
        return suspect, _number_cells()
    letters = found["letters"].unique().to_list()  # a few columns
    column = pl.col("letters").replace_strict(
        letters, [_column(c) if len(c) <= 3 else None for c in letters], return_dtype=pl.Int64
    )
    return suspect, found.select(column.alias("column"), "row", "stored")


def _number_cells_by_row(z: zipfile.ZipFile, part: str) -> pl.DataFrame:
    """_scan_sheet's number cells, in a sheet whose cells are not all written
    <c r="A1" ...: the cells of the rows that hold a value worth a look, read
    whatever their form. A row or cell without a reference is the one after
    the one before it, as calamine reads it."""
    import polars as pl

    def split(text: pl.Expr, at: bytes) -> pl.Expr:
        """The pieces of ``text`` after each ``at`` that starts an element
        (not, say, <rowBreaks where ``at`` is <row)."""
        return (
            text.str.split(at.decode())
            .list.slice(1)
            .list.eval(pl.element().filter(pl.element().str.contains(r"^[\s/>]")))
        )

    x, i = pl.col("x"), pl.col("i").cast(pl.Int64)
    found: list[pl.DataFrame] = []
    last = 0  # the number of the row before the batch
    for pats, text in _sheet_batches(z, part, rows=True):
        rows = (
            pl.DataFrame({"x": text})
            .select(split(x, pats.row))
            .explode("x")
            .drop_nulls()
            .with_row_index("i")
            .select(
                "i",
                "x",
                # its own reference, or the one of a row before it and the rows between
                (x.str.extract(pats.row_ref).cast(pl.Int64, strict=False) - i)
                .forward_fill()
                .fill_null(last + 1)
                .add(i)
                .alias("row"),
                pats.wanted(x).alias("wanted"),
            )
        )
        if rows.height:
            last = rows["row"][-1]
        found.append(
            rows.filter(pl.col("wanted") > 0)
            .select("i", "row", split(x, pats.cell))
            .explode("x")
            .drop_nulls()
            .select(
                "i",
                "row",
                pl.int_range(1, pl.len() + 1).over("i").alias("at"),  # its place in the row
                x.str.extract(pats.ref_letters).alias("letters"),
                x.str.extract(pats.ref_row).cast(pl.Int64, strict=False).alias("ref_row"),
                x.str.extract(pats.any_type).alias("type"),
                x.str.extract(pats.any_value).alias("stored"),
            )
        )
    cells = pl.concat(found) if found else pl.DataFrame()
    if cells.is_empty():
        return _number_cells()
    letters = cells["letters"].drop_nulls().unique().to_list()
    column = pl.col("letters").replace_strict(
        letters, [_column(c) for c in letters], default=None, return_dtype=pl.Int64
    )
    at = pl.col("at").cast(pl.Int64)
    return (
        cells.select(
            # its own reference, or the one of a cell before it and the cells between
            ((column - at).forward_fill().over("i").fill_null(0) + at).alias("column"),
            pl.coalesce("ref_row", "row").alias("row"),
            "type",
            "stored",
        )
        .filter(
            pl.col("type").fill_null("n") == "n",  # a number cell has no t, or t="n"
            pl.col("stored").is_not_null(),
            ~pl.col("stored").str.contains(_OTHER_THAN_EXCEL),
        )
        .select("column", "row", "stored")
    )


# a number cell of a worksheet: its attributes and stored value (a formula may come first)
_STYLED_NUMBER = (
    r"<(?:\w+:)?c\b[^>]*>\s*(?:<(?:\w+:)?f\b[^>]*/>\s*|"
    r"<(?:\w+:)?f\b[^>]*>[^<]*</(?:\w+:)?f>\s*)?<(?:\w+:)?v>[0-9]+(?:\.[0-9]+)?</(?:\w+:)?v>"
)


def _overlay_cells(body: pl.DataFrame, column: str, shown: pl.DataFrame) -> pl.DataFrame:
    """``body``'s ``column`` with the texts of ``shown`` (its rows: sheet row
    ``row`` is frame row idx + 1) put over what calamine gave, where it gave
    a number (a date cell it writes as a date is left alone)."""
    import polars as pl

    if not shown.height:
        return body
    over = shown.select(
        (pl.col("row") - 1).cast(body.schema["idx"], strict=False).alias("idx"),
        pl.col("shown").alias("_shown"),
    ).unique("idx", keep="last")
    return (
        body.join(over, on="idx", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col(column).str.contains(r"^-?[0-9]+(?:\.[0-9]+)?$"))
            .then(pl.col("_shown").fill_null(pl.col(column)))
            .otherwise(pl.col(column))
            .alias(column)
        )
        .drop("_shown")
    )


def _stage_xlsx(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    kind: FileKind,
    aliases: Mapping[str, list[str]] | None,
    stage: str,
) -> _Staged:
    """The first sheet: the first row with a cell is the header; a row with no
    cell at all is not a data row (like a blank line in a CSV file); each row's
    line_number is its row number in the sheet; an Excel error value (#DIV/0!,
    #N/A, ...) in a column twopay reads is a parse error of its row, not an
    empty cell."""
    import xml.etree.ElementTree as ET

    import fastexcel
    import polars as pl

    def first_sheet_parts(z: zipfile.ZipFile) -> list[str]:
        """The zip part of the first sheet (workbook order); every worksheet
        part when the workbook does not say."""
        names = set(z.namelist())
        try:
            rid = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
            book = ET.fromstring(z.read("xl/workbook.xml"))
            first = next(e for e in book.iter() if e.tag.endswith("}sheet"))
            rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
            target = next(e.get("Target", "") for e in rels if e.get("Id") == first.get(rid))
            part = target[1:] if target.startswith("/") else "xl/" + target
            if part in names:
                return [part]
        except (KeyError, StopIteration, ET.ParseError):
            pass
        return sorted(n for n in names if n.startswith("xl/worksheets/"))

    # the cheap pass (_scan_sheet) looks for a reference far out; a
    # single-quoted r='...' (legal, but no writer does it) goes the slow way
    quick = r"""r="(?:[A-Z]{2,}[0-9]|[A-Z]*[0-9]{7})|r='"""
    cell_ref = re.compile(rb"""\br=["']([A-Z]*)([0-9]+)["']""")

    def used_range(z: zipfile.ZipFile, part: str) -> tuple[int, int, int, str]:
        """(rows, columns, filled cells, last cell) of the part's used range
        (read when the cheap pass of _scan_sheet finds a column past Z or a
        row past 999999)."""
        rows: list[int] = []
        cols: list[bytes] = []
        cells = 0
        order = lambda c: (len(c), c)  # noqa: E731 - column letters in column order
        with z.open(part) as fh:
            tail = b""
            while block := fh.read(CHUNK):
                block = tail + block
                cut = block.rfind(b"<")  # a tag cut at the block's end waits for the next
                block, tail = block[:cut], block[cut:]
                refs = cell_ref.findall(block)
                if refs:
                    numbers = [int(r) for _, r in refs]
                    rows += [min(numbers), max(numbers)]
                named = [c for c, _ in refs if c]  # a row's r has no column letters
                cells += len(named)
                cols += [min(named, key=order), max(named, key=order)] if named else []
        if not rows:
            return 1, 1, 1, "A1"
        first, last = (min(cols, key=order), max(cols, key=order)) if cols else (b"A", b"A")
        width = _column(last) - _column(first) + 1
        return max(rows) - min(rows) + 1, width, cells, f"{last.decode()}{max(rows)}"

    def scan_sheet() -> pl.DataFrame:
        """Refuse a sheet whose used range would be absurd, and list its
        number cells worth reading from the XML (_scan_sheet)."""
        # calamine allocates the sheet's whole used range, first cell to last:
        # one stray cell at XFD1048576 asks for 17 billion cells and aborts the
        # process. Refuse such a sheet, naming the cell, before reading it.
        numbers = _number_cells()
        try:
            with zipfile.ZipFile(path) as z:
                parts = first_sheet_parts(z)
                for part in parts:
                    suspect, found = _scan_sheet(z, part, quick)
                    if len(parts) == 1:  # else which sheet calamine reads is unknown
                        numbers = found
                    if not suspect:
                        continue
                    height, width, cells, last = used_range(z, part)
                    if height * width > 4 * cells + 5_000_000:
                        raise UsageError(
                            f"{path}: the sheet's used range reaches cell {last} "
                            f"although it has only {cells} filled cells; delete the stray cells "
                            "beyond the table (or save the sheet as CSV) and run again."
                        )
        except _ZIP_BROKEN:
            return _number_cells()  # not a readable zip: calamine says so below
        return numbers

    numbers = scan_sheet()

    def date1904() -> bool:
        """Whether the workbook counts its serial numbers from 1904 (old Mac
        Excel): calamine converts the cells it knows to be dates, but gives
        a date cell in a format it does not know (a CJK built-in one) as
        its serial, which date_sql reads from 1900."""
        try:
            with zipfile.ZipFile(path) as z:
                book = ET.fromstring(z.read("xl/workbook.xml"))
        except (KeyError, ET.ParseError, *_ZIP_BROKEN):
            return False  # a member cut short or missing: calamine says so below
        pr = next((e for e in book.iter() if e.tag.endswith("}workbookPr")), None)
        return pr is not None and pr.get("date1904", "").lower() in ("1", "true")

    shift_serials = date1904()

    def formatted_numbers() -> pl.DataFrame:
        """The number cells whose format makes Excel show them otherwise than
        calamine gives them, as (column, row, shown, date): a code padded
        with zeros by a format "0000000000" (how clerks keep the leading zeros
        of a code Excel made a number: 101050001 shows 0101050001), and a day
        in one of Excel's CJK built-in date formats (numFmtId 27-36, 50-58),
        which calamine gives as its serial: read here whatever the serial
        (9999-12-31 is 2958465), where date_sql takes only 20000..79999. The
        sheet is streamed and its cells matched in polars, as _scan_sheet does."""
        none = pl.DataFrame(
            schema={"column": pl.Int64, "row": pl.Int64, "shown": pl.String, "date": pl.Boolean}
        )
        try:
            with zipfile.ZipFile(path) as z:
                styles = ET.fromstring(z.read("xl/styles.xml"))
                codes = {
                    e.get("numFmtId"): e.get("formatCode", "")
                    for e in styles.iter()
                    if e.tag.endswith("}numFmt")
                }
                xfs = next((e for e in styles if e.tag.endswith("}cellXfs")), None)
                padded: dict[str, int] = {}  # style index -> width
                dated: list[str] = []
                for i, xf in enumerate(xfs if xfs is not None else []):
                    fmt = xf.get("numFmtId", "0")
                    if re.fullmatch("0{2,}", codes.get(fmt, "")):
                        padded[str(i)] = len(codes[fmt])
                    elif fmt.isdigit() and (27 <= int(fmt) <= 36 or 50 <= int(fmt) <= 58):
                        dated.append(str(i))
                parts = first_sheet_parts(z)
                if not (padded or dated) or len(parts) != 1:
                    return none
                x = pl.col("x")
                cells = [
                    pl.DataFrame({"x": text})
                    .select(x.str.extract_all(_STYLED_NUMBER))
                    .explode("x")
                    .drop_nulls()
                    for _pats, text in _sheet_batches(z, parts[0])
                ]
        except (KeyError, ET.ParseError, *_ZIP_BROKEN):
            return none  # no styles part: nothing is formatted
        x = pl.col("x")
        # the attributes of <c> alone: a formula's <f t="shared" ...> (a fill-down)
        # or <f t="array" ...> has a t of its own, which is not the cell's type
        tag = x.str.extract(r"^(<(?:\w+:)?c\b[^>]*>)")
        found = (
            pl.concat(cells)
            .select(
                tag.str.extract(r"""\sr=["']([A-Z]{1,3})[0-9]+["']""").alias("letters"),
                tag.str.extract(r"""\sr=["'][A-Z]{1,3}([0-9]+)["']""")
                .cast(pl.Int64, strict=False)
                .alias("row"),
                tag.str.extract(r"""\ss=["']([0-9]+)["']""").alias("style"),
                tag.str.extract(r"""\st=["'](\w*)["']""").fill_null("n").alias("type"),
                x.str.extract(r"<(?:\w+:)?v>([0-9.]+)<").alias("value"),
            )
            .filter(pl.col("type") == "n", pl.col("row").is_not_null())
        )
        # strict=False: a number of 19 digits and more (written whole by some
        # writers) is no serial, and must not stop the read
        serial = pl.col("value").cast(pl.Float64, strict=False).floor().cast(pl.Int64, strict=False)
        base = date(1904, 1, 1) if shift_serials else date(1899, 12, 30)
        width = pl.col("style").replace_strict(padded, default=None, return_dtype=pl.Int64)
        texts = found.filter(
            pl.col("style").is_in(list(padded)), pl.col("value").str.contains("^[0-9]+$")
        ).select("letters", "row", pl.col("value").str.zfill(width).alias("shown"), date=False)
        days = found.filter(pl.col("style").is_in(dated), serial.is_between(1, 2958465)).select(
            "letters",
            "row",
            (pl.lit(base) + pl.duration(days=serial)).cast(pl.String).alias("shown"),
            date=True,
        )
        both = pl.concat([texts, days])
        letters = both["letters"].unique().to_list()  # a few columns
        return both.select(
            pl.col("letters")
            .replace_strict(letters, [_column(c) for c in letters], return_dtype=pl.Int64)
            .alias("column"),
            "row",
            "shown",
            "date",
        )

    formatted = formatted_numbers()
    try:
        reader = fastexcel.read_excel(str(path))
        # skip_rows=0: keep the blank rows above the table, so that frame row i
        # is sheet row i + 1
        sheet = reader.load_sheet(0, header_row=None, dtypes="string", skip_rows=0)
        batch, cell_errors = sheet.to_arrow_with_errors()
        frame = pl.from_arrow(batch)
        # frame column -> its sheet column (calamine starts at the first used one)
        sheet_column = {c.name: c.absolute_index + 1 for c in sheet.selected_columns}
    except Exception as exc:  # fastexcel raises its own error types
        raise UsageError(
            f"{path}: cannot be read as an Excel workbook ({_first_line(exc)})."
        ) from None
    assert isinstance(frame, pl.DataFrame)
    cols = frame.columns
    errors: dict[int, dict[int, str]] = {}  # frame row -> frame column -> Excel error
    for e in cell_errors.errors if cell_errors is not None else []:
        m = re.search(r"Error\((\w+)\)", e.detail)
        code = m.group(1) if m else e.detail
        text = {"Div0": "#DIV/0!", "NA": "#N/A", "Value": "#VALUE!", "Ref": "#REF!",
                "Name": "#NAME?", "Num": "#NUM!", "Null": "#NULL!"}.get(code, code)  # fmt: skip
        errors.setdefault(int(e.position[0]), {})[int(e.position[1])] = text
    # a cell that shows nothing (a formula giving "", an empty inline string)
    # is as blank as no cell: Excel's own CSV export writes such a row ",,,"
    frame = frame.with_columns(pl.col(c).replace("", None) for c in cols)
    frame = frame.with_row_index("idx").filter(
        pl.any_horizontal(*[pl.col(c).is_not_null() for c in cols], pl.lit(False))
        | pl.col("idx").is_in(list(errors))
    )
    if frame.height == 0:
        raise UsageError(f"{path}: the first sheet is empty; expected a header row.")
    header = [str(v) if v is not None else "" for v in frame.select(cols).row(0)]
    below = [
        (int(r[0]) + 1, [str(v) if v is not None else "" for v in r[1:]])
        for r in frame.slice(1, 10).iter_rows()
    ]
    canon = _check_header(path, header, kind, aliases, below=below)
    body = frame.slice(1)
    named = {name: i for i, name in enumerate(canon) if name is not None}
    bad_cells = {
        row: "; ".join(
            f"column {canon[j]} ({header[j]!r}) holds the Excel error {text}"
            for j, text in sorted(by_col.items())
            if j < len(canon) and canon[j] is not None
        )
        for row, by_col in errors.items()
    }
    bad_cells = {row: text for row, text in bad_cells.items() if text}
    parse_error = (
        pl.col("idx").replace_strict(bad_cells, default=None, return_dtype=pl.String)
        if bad_cells
        else pl.lit(None, dtype=pl.String)
    )
    # A number cell in a text or money column is the number Excel holds and
    # shows, not its binary value written out (_scan_sheet). A date column
    # needs none: a date cell is read as a date, and a plain number there
    # (20240305, a serial) has fewer than 11 digits, which fastexcel writes
    # as Excel does.
    wanted = {  # sheet column -> frame column
        sheet_column[c]: c
        for c, name in zip(cols, canon, strict=False)
        if name is not None and kind.column(name).type in ("text", "money") and c in sheet_column
    }
    numbers = numbers.filter(pl.col("column").is_in(list(wanted)), pl.col("row") >= 1).unique(
        ["column", "row"], keep="last"
    )
    if numbers.height:
        stored = numbers["stored"].unique()
        texts = pl.Series([excel_number_text(v) for v in stored.to_list()], dtype=pl.String)
        numbers = numbers.select(
            "column", "row", pl.col("stored").replace_strict(stored, texts).alias("shown")
        )
    for col, c in wanted.items():
        body = _overlay_cells(body, c, numbers.filter(pl.col("column") == col))
    for name, i in named.items():
        # a zero-padded code over the digits calamine gave; a CJK-format day
        # (ISO, which the 1904 shift below leaves alone) over its serial
        ctype = kind.column(name).type
        if ctype in ("text", "date") and cols[i] in sheet_column:
            shown = formatted.filter(
                pl.col("column") == sheet_column[cols[i]], pl.col("date") == (ctype == "date")
            )
            body = _overlay_cells(body, cols[i], shown)
    if shift_serials:
        for name, i in named.items():
            if kind.column(name).type == "date":
                c = cols[i]
                body = body.with_columns(
                    pl.when(pl.col(c).str.contains(r"^[0-9]{5}(?:\.[0-9]+)?$"))
                    .then(
                        (pl.col(c).cast(pl.Float64, strict=False).floor() + 1462)
                        .cast(pl.Int64)
                        .cast(pl.String)
                    )
                    .otherwise(pl.col(c))
                    .alias(c)
                )
    body = body.select(
        (pl.col("idx") + 1).cast(pl.Int64).alias("line_number"),
        pl.concat_str([pl.col(c).fill_null("") for c in cols], separator=",").alias("raw"),
        parse_error.alias("parse_error"),
        *[pl.col(cols[i]).alias(name) for name, i in named.items()],
    )
    con.register("_xlsx_frame", body)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {stage} AS SELECT * FROM _xlsx_frame")
    con.unregister("_xlsx_frame")
    return _Staged(set(named))


def _stage_parquet(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    kind: FileKind,
    aliases: Mapping[str, list[str]] | None,
    stage: str,
    lazy: bool,
) -> _Staged:
    try:
        # the file's top-level columns (a list or struct column is one column,
        # kept as an extra like any other, not its leaf fields)
        types = dict(
            con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                f"read_parquet({sql_literal(str(path))}))"
            ).fetchall()
        )
        names = list(types)
    except duckdb.Error as exc:
        raise UsageError(f"{path}: cannot be read as Parquet ({_first_line(exc)}).") from None
    canon = _check_header(path, names, kind, aliases)
    named = {name: names[i] for i, name in enumerate(canon) if name is not None}

    def ident(n: str) -> str:  # a column name from the file, quoted for SQL
        return '"' + n.replace('"', '""') + '"'

    src = {n: f"_src{i}" for i, n in enumerate(names)}

    def text(col: str) -> str:
        """A cell as text, as a person would read it: a string written as
        bytes (BYTE_ARRAY without the UTF8 annotation: older Hive/Spark/Impala
        writers) decoded as UTF-8, and a float as Excel shows it (15
        significant digits: 240100002.0 is 240100002, as in an .xlsx cell)."""
        ctype = types.get(col, "VARCHAR")
        if ctype == "BLOB":
            return f"coalesce(try(decode({ident(col)})), CAST({ident(col)} AS VARCHAR))"
        if ctype == "DOUBLE":
            return (
                f"CASE WHEN isfinite({ident(col)}) THEN printf('%.15g', {ident(col)}) "
                f"ELSE CAST({ident(col)} AS VARCHAR) END"
            )
        return f"CAST({ident(col)} AS VARCHAR)"

    sel = ", ".join(f"{text(col)} AS {name}" for name, col in named.items())
    # the cells of the raw text (and of the typed reads below): a float or
    # bytes column as read above, so that raw shows what was read
    cells = ", ".join(
        f"{text(n) if types.get(n) in ('DOUBLE', 'BLOB') else ident(n)} AS {src[n]}" for n in names
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP {"VIEW" if lazy else "TABLE"} {stage} AS
        SELECT file_row_number + 2 AS line_number, NULL::VARCHAR AS raw,
               NULL::VARCHAR AS parse_error, {sel}, {cells}
        FROM read_parquet({sql_literal(str(path))}, file_row_number = true)
        """
    )
    plain, typed = set(), {}
    for name, col in named.items():
        ctype = types.get(col, "VARCHAR")
        # a number, date or time written as text is ASCII with no outer or
        # repeated white space: it is its own normalised form
        if _PLAIN_TYPE.fullmatch(ctype):
            plain.add(name)
        if kind.column(name).type == "date" and ctype == "DATE":
            typed[name] = src[col]
        elif kind.column(name).type == "date" and ctype.startswith("TIMESTAMP WITH TIME ZONE"):
            # an instant: its calendar day where the settlements happen
            typed[name] = f"CAST(timezone('{DATE_TIME_ZONE}', {src[col]}) AS DATE)"
        elif kind.column(name).type == "date" and ctype.startswith("TIMESTAMP"):
            typed[name] = f"CAST({src[col]} AS DATE)"
        elif kind.column(name).type == "money" and _MONEY_TYPE.fullmatch(ctype):
            # what money_sql accepts: at most 13 digits before the point, 2 after
            typed[name] = (
                f"CASE WHEN abs({src[col]}) < 10000000000000 "
                f"THEN CAST({src[col]} AS DECIMAL(18,2)) END"
            )
    return _Staged(set(named), plain, [src[n] for n in names], ",", typed)


_INTEGER_TYPES = "TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT"
_PLAIN_TYPE = re.compile(
    rf"BOOLEAN|{_INTEGER_TYPES}|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\)|DATE|TIME|TIMESTAMP(_S|_MS|_NS)?"
)
_MONEY_TYPE = re.compile(rf"{_INTEGER_TYPES}|DECIMAL\(\d+,[012]\)")


def _register_blanks(
    con: duckdb.DuckDBPyConnection, table: str, blanks: list[int], offsets: list[int]
) -> None:
    """(pos, k, p, o): k empty lines come before every record whose line,
    counted without empty lines, is above pos; and before every byte after o.
    A row is one group of consecutive empty lines (the last at line p, byte o):
    no record lies inside a group, so its last line and byte stand for it."""
    frame = pa.table({"p": pa.array(blanks, pa.int64()), "o": pa.array(offsets, pa.int64())})
    con.register("_blank_arrow", frame)
    try:
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE {table} AS
            SELECT p - k AS pos, max(k) AS k, max(p) AS p, max(o) AS o
            FROM (SELECT p, o, row_number() OVER (ORDER BY p) AS k FROM _blank_arrow)
            GROUP BY ALL
            """
        )
    finally:
        con.unregister("_blank_arrow")


def sql_literal(text: str) -> str:
    """A text as a SQL string literal (for views, which take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def drop_loaded(con: duckdb.DuckDBPyConnection, table: str, *, keep_table: bool = False) -> None:
    """Drop what a (lazy) load_input left behind for ``table`` (and the
    table or view itself unless ``keep_table``)."""
    own = [] if keep_table else [table]
    names = [*own, f"{table}_staged", f"{table}_csv", f"{table}_rej", f"{table}_blank"]
    # DROP VIEW on a table is an error: ask the catalogue which each one is
    found = con.execute(
        """
        SELECT 'VIEW', view_name FROM duckdb_views() WHERE temporary AND list_contains($n, view_name)
        UNION ALL
        SELECT 'TABLE', table_name FROM duckdb_tables()
        WHERE temporary AND list_contains($n, table_name)
        """,
        {"n": names},
    ).fetchall()
    for kind, name in found:
        con.execute(f"DROP {kind} {name}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return re.sub(r"\s+", " ", text[0]) if text else type(exc).__name__
