"""Run outputs on disk. Each table is a Parquet dataset folder ``<run_dir>/tables/<name>/part-*.parquet``.

Read one with :func:`read_table` (pyarrow) or ``pandas.read_parquet(<run_dir>/tables/<name>)`` or
``dask.dataframe.read_parquet`` alike.
"""

from __future__ import annotations

import json
import posixpath

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from labeler.schemas import TABLES, TableSpec, empty


def table_dir(run_dir: str, name: str) -> str:
    return posixpath.join(str(run_dir), "tables", name)


def write_part(run_dir: str, spec: TableSpec, table: pa.Table, part: str) -> str:
    """Write one part of a table (schema checked). Returns its path."""
    if table.schema != spec.schema:
        table = table.cast(spec.schema)
    fs, d = fsspec.core.url_to_fs(table_dir(run_dir, spec.name))
    fs.makedirs(d, exist_ok=True)
    path = posixpath.join(d, f"part-{part}.parquet")
    with fs.open(path, "wb") as f:
        pq.write_table(table, f)
    return path


def read_table(run_dir: str, name: str, filters=None) -> pa.Table:
    """Read a table of a run (an empty table of the right schema when the run wrote no rows)."""
    spec = TABLES[name]
    fs, d = fsspec.core.url_to_fs(table_dir(run_dir, name))
    if not fs.exists(d):
        return empty(spec)
    files = sorted(p for p in fs.ls(d, detail=False) if p.endswith(".parquet"))
    if not files:
        return empty(spec)
    parts = []
    for p in files:
        with fs.open(p, "rb") as f:
            parts.append(pq.read_table(f, filters=filters, schema=spec.schema))
    return pa.concat_tables(parts)


def reset_run_dir(run_dir: str) -> None:
    """Remove a previous run's tables and record (same night re-run): outputs are replaced, never appended."""
    fs, d = fsspec.core.url_to_fs(str(run_dir))
    for sub in ("tables", "run.json"):
        p = posixpath.join(d, sub)
        if fs.exists(p):
            fs.rm(p, recursive=True)
    fs.makedirs(d, exist_ok=True)


def write_run_record(run_dir: str, record: dict) -> str:
    fs, d = fsspec.core.url_to_fs(str(run_dir))
    path = posixpath.join(d, "run.json")
    with fs.open(path, "w") as f:
        f.write(json.dumps(record, indent=2, default=str))
    return path


def read_run_record(run_dir: str) -> dict:
    fs, d = fsspec.core.url_to_fs(str(run_dir))
    with fs.open(posixpath.join(d, "run.json"), "r") as f:
        return json.loads(f.read())
