"""Loads `lem results export` output with pandas and pyarrow and checks it against
`lem results show`.

Usage: export_pandas.py LEM DATA_DIR ID...

For each level, the CSV, JSON Lines and Parquet exports must load into the same frame,
and the values must be those `lem results show ID --json` (aggregate) and `--raw --json`
(raw results) print. Nulls must load as missing values (Parquet: real nulls in typed
columns). Prints one line per level with the number of values compared; exits non-zero
on the first mismatch.
"""

import io
import json
import math
import os
import subprocess
import sys
import tempfile

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

LEM, DATA, IDS = sys.argv[1], sys.argv[2], sys.argv[3:]


def lem(*args):
    out = subprocess.run(
        [LEM, "--data-dir", DATA, *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.exit(f"lem {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out.stdout


def export(fmt, level):
    if fmt == "parquet":
        return read_parquet(level).to_pandas()
    text = lem("results", "export", *IDS, "--format", fmt, "--level", level)
    if fmt == "csv":
        return pd.read_csv(io.StringIO(text))
    return pd.read_json(io.StringIO(text), lines=True, convert_dates=False)


def read_parquet(level):
    """The level's Parquet export as an Arrow table, after checking its column types:
    one of bool, int64, double, string; unit-suffixed measurements are double."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f"{level}.parquet")
        lem("results", "export", *IDS, "--format", "parquet", "--level", level, "--out", path)
        table = pq.read_table(path)
    allowed = {pa.bool_(), pa.int64(), pa.float64(), pa.string()}
    for field in table.schema:
        if field.type not in allowed:
            sys.exit(f"{level} parquet column {field.name}: type {field.type}")
        if not field.nullable:
            sys.exit(f"{level} parquet column {field.name} is not nullable")
        if field.name.endswith(("_j", "_ms", "_w", "_per_s")) and field.type != pa.float64():
            sys.exit(f"{level} parquet column {field.name}: {field.type}, not double")
    return table


def is_null(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


def same(a, b):
    """Equal values; both null; or floats equal to 1e-9 relative."""
    if is_null(a) or is_null(b):
        return is_null(a) and is_null(b)
    if isinstance(a, str) or isinstance(b, str) or isinstance(a, bool):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def check(what, got, want):
    if not same(got, want):
        sys.exit(f"{what}: export has {got!r}, results show has {want!r}")


def load(level):
    """The level's frame, after checking that CSV, JSON Lines and Parquet agree cell by
    cell."""
    csv = export("csv", level)
    for fmt in ["jsonl", "parquet"]:
        other = export(fmt, level)
        if list(csv.columns) != list(other.columns):
            sys.exit(f"{level}: CSV and {fmt} columns differ")
        if len(csv) != len(other):
            sys.exit(f"{level}: CSV has {len(csv)} rows, {fmt} {len(other)}")
        for col in csv.columns:
            for i in range(len(csv)):
                a, b = csv[col].iloc[i], other[col].iloc[i]
                a = a.item() if hasattr(a, "item") else a
                b = b.item() if hasattr(b, "item") else b
                if not same(a, b):
                    sys.exit(f"{level} row {i} column {col}: CSV {a!r}, {fmt} {b!r}")
    return csv


def cell(row, col):
    v = row[col]
    return v.item() if hasattr(v, "item") else v


def main():
    aggs = {i: json.loads(lem("results", "show", i, "--json")) for i in IDS}
    raws = {i: json.loads(lem("results", "show", i, "--raw", "--json")) for i in IDS}

    # Experiment level: every statistic's mean, n, std and CI half-width; a statistic
    # the aggregate lacks is null.
    df = load("experiment")
    n = 0
    for i, agg in aggs.items():
        row = df[df.experiment_id == i].iloc[0]
        check(f"{i} simulated", bool(cell(row, "simulated")), agg["simulated"])
        check(f"{i} num_cycles", cell(row, "num_cycles"), len(agg["cycles"]))
        for col in df.columns:
            if not col.endswith("_mean"):
                continue
            name = col[: -len("_mean")]
            s = agg["stats"].get(name)
            for field in ["mean", "std", "ci95_half_width", "n"]:
                check(f"{i} {name}_{field}", cell(row, f"{name}_{field}"), s and s[field])
                n += 1
    print(f"experiment: {n} values compared")

    # Cycle level: each cycle of each aggregate.
    df = load("cycle")
    n = 0
    for i, agg in aggs.items():
        for c in agg["cycles"]:
            row = df[(df.experiment_id == i) & (df.cycle == c["cycle"])].iloc[0]
            e = c["energy"]
            want = {
                "attempt": c["attempt"],
                "simulated": e["simulated"],
                "wall_s": c["wall_s"],
                "output_tokens": c["output_tokens"],
                "output_tokens_per_s": c["output_tokens_per_s"],
                "energy_total_j": e["total_j"],
                "energy_gpu_j": e["gpu_j"],
                "energy_unavailable_reason": e["total_unavailable_reason"],
                "j_per_output_token": c["j_per_output_token"],
                "ttft_p50_ms": c["ttft_ms"] and c["ttft_ms"]["p50"],
                "tpot_mean_ms": c["tpot_ms"] and c["tpot_ms"]["mean"],
                "e2e_p99_ms": c["e2e_ms"] and c["e2e_ms"]["p99"],
                "flops_total": c["flops_total"],
                "peak_memory_bytes": c["peak_memory_bytes"],
            }
            for col, v in want.items():
                got = cell(row, col)
                if col == "simulated":
                    got = bool(got)
                check(f"{i} cycle {c['cycle']} {col}", got, v)
                n += 1
    print(f"cycle: {n} values compared")

    # Request level: the requests of the raw result each aggregated cycle used.
    df = load("request")
    n = 0
    for i, agg in aggs.items():
        used = {(c["cycle"], c["attempt"]) for c in agg["cycles"]}
        for raw in raws[i]:
            if (raw["cycle"], raw["attempt"]) not in used:
                continue
            for r in raw["requests"]:
                row = df[
                    (df.experiment_id == i)
                    & (df.cycle == raw["cycle"])
                    & (df.request_index == r["index"])
                ].iloc[0]
                gaps = r["itl_ns"]
                want = {
                    "output_tokens": r["output_tokens"],
                    "ttft_ms": r["ttft_ns"] / 1e6,
                    "e2e_ms": r["e2e_ns"] / 1e6,
                    "itl_mean_ms": sum(gaps) / len(gaps) / 1e6 if gaps else None,
                    "arrival_offset_ms": r.get("arrival_offset_ns") and r["arrival_offset_ns"] / 1e6,
                }
                for col, v in want.items():
                    check(f"{i} cycle {raw['cycle']} request {r['index']} {col}", cell(row, col), v)
                    n += 1
    print(f"request: {n} values compared")

    # Trace level: every sample of every device trace of each aggregated cycle.
    df = load("trace")
    n = 0
    for i, agg in aggs.items():
        used = {(c["cycle"], c["attempt"]) for c in agg["cycles"]}
        for raw in raws[i]:
            if (raw["cycle"], raw["attempt"]) not in used:
                continue
            for reading in raw["energy"]:
                trace = reading.get("trace")
                if not trace:
                    continue
                for k, sample in enumerate(trace["samples"]):
                    row = df[
                        (df.experiment_id == i)
                        & (df.cycle == raw["cycle"])
                        & (df.device_id == reading["device_id"])
                        & (df.sample_index == k)
                    ].iloc[0]
                    want = {
                        "device_kind": reading["device_kind"],
                        "energy_source": reading["source"],
                        "trace_period_ms": trace["period_ms"],
                        "t_ms": sample["t_ns"] / 1e6,
                        "power_avg_w": sample["power_avg_w"],
                        "power_instant_w": sample["power_instant_w"],
                        "energy_counter_mj": sample["energy_counter_mj"],
                        "temperature_c": sample["temperature_c"],
                    }
                    for col, v in want.items():
                        check(f"{i} cycle {raw['cycle']} sample {k} {col}", cell(row, col), v)
                        n += 1
    if n == 0:
        sys.exit("trace: no sample to compare")
    print(f"trace: {n} values compared")


main()
