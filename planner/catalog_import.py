"""Import price sheets: LiteLLM's API prices and SkyPilot's cloud GPU prices.

LiteLLM (MIT) keeps USD-per-token prices for thousands of offerings; this converts the chat
models among them into rows of ``api_prices.csv`` (USD per million tokens), so users can keep
their prices current: ``planner catalog import-litellm FILE --out my_prices.csv``.

SkyPilot's open catalog (``skypilot-org/skypilot-catalog``, one ``vms.csv`` per cloud) lists
instance prices in USD per hour; :func:`import_skypilot` turns them into ``cloud_prices.csv``
rows: ``planner catalog import-skypilot DIR --clouds aws,lambda --out cloud_prices.csv``.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from planner.errors import PlannerError

API_COLUMNS = [
    "id", "provider", "model", "llm", "quality_score", "quality_tier", "input_usd_per_mtok",
    "output_usd_per_mtok", "cached_input_usd_per_mtok", "batch_input_usd_per_mtok",
    "batch_output_usd_per_mtok", "long_context_threshold_tokens", "long_input_usd_per_mtok",
    "long_output_usd_per_mtok", "ft_train_usd_per_mtok", "ft_input_usd_per_mtok",
    "ft_output_usd_per_mtok", "max_context_tokens", "ttft_s", "output_tokens_per_s",
    "tokenizer", "source", "as_of",
]


def _mtok(v) -> float | None:
    return None if v is None else round(float(v) * 1e6, 6)


def litellm_rows(data: dict, *, providers: list[str] | None = None, as_of: str = "",
                 source: str = "LiteLLM model_prices_and_context_window.json") -> pd.DataFrame:
    """Rows in ``api_prices.csv`` layout for LiteLLM chat entries with input+output prices."""
    rows = []
    for key, e in data.items():
        if not isinstance(e, dict) or e.get("mode") != "chat":
            continue
        prov = e.get("litellm_provider")
        if providers and prov not in providers:
            continue
        if e.get("input_cost_per_token") is None or e.get("output_cost_per_token") is None:
            continue
        long_key = next(
            (k for k in e if k.startswith("input_cost_per_token_above_") and k.endswith("_tokens")),
            None,
        )
        threshold = long_in = long_out = None
        if long_key:
            tag = long_key[len("input_cost_per_token_above_"):-len("_tokens")]
            mult = 1000 if tag.endswith("k") else 1
            try:
                threshold = float(tag.rstrip("k")) * mult
            except ValueError:
                threshold = None
            long_in = _mtok(e.get(long_key))
            long_out = _mtok(e.get(f"output_cost_per_token_above_{tag}_tokens"))
        model = key.split("/", 1)[1] if key.startswith(f"{prov}/") else key
        rows.append({
            "id": f"{prov}/{model}", "provider": prov, "model": model,
            "input_usd_per_mtok": _mtok(e.get("input_cost_per_token")),
            "output_usd_per_mtok": _mtok(e.get("output_cost_per_token")),
            "cached_input_usd_per_mtok": _mtok(e.get("cache_read_input_token_cost")),
            "batch_input_usd_per_mtok": _mtok(e.get("input_cost_per_token_batches")),
            "batch_output_usd_per_mtok": _mtok(e.get("output_cost_per_token_batches")),
            "long_context_threshold_tokens": threshold,
            "long_input_usd_per_mtok": long_in, "long_output_usd_per_mtok": long_out,
            "max_context_tokens": e.get("max_input_tokens"),
            "source": f"{source} key {key!r}" + (f" ({e['source']})" if e.get("source") else ""),
            "as_of": as_of,
        })
    df = pd.DataFrame(rows, columns=API_COLUMNS)
    return df.drop_duplicates("id", keep="first").reset_index(drop=True)


def import_litellm(path: str | Path, *, providers: list[str] | None = None,
                   as_of: str = "") -> pd.DataFrame:
    """Read a LiteLLM price JSON file and return api_prices rows."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlannerError(f"{p}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlannerError(f"{p}: not a LiteLLM price JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise PlannerError(f"{p}: expected a JSON object of model -> prices")
    return litellm_rows(data, providers=providers, as_of=as_of or _mtime_date(p))


def _mtime_date(p: Path) -> str:
    import datetime as dt

    return dt.date.fromtimestamp(p.stat().st_mtime).isoformat()


# ------------------------------------------------------------------------------- SkyPilot

#: ``cloud_prices.csv`` columns (docs/catalog-schema.md), in order.
CLOUD_COLUMNS = [
    "id", "provider", "accelerator", "instance_type", "gpus_per_instance", "plan",
    "usd_per_gpu_hour", "usd_per_instance_hour", "min_billing_s", "startup_s",
    "interruption_overhead", "source", "as_of",
]

#: SkyPilot ``vms.csv`` columns the importer needs (the order differs by cloud).
SKYPILOT_REQUIRED = ("InstanceType", "AcceleratorName", "AcceleratorCount", "Price", "Region")

SKYPILOT_SOURCE = "skypilot-org/skypilot-catalog (SkyPilot catalog, Apache-2.0)"


@dataclass
class SkyPilotImport:
    """Rows in ``cloud_prices.csv`` layout plus what was left out and why."""

    rows: pd.DataFrame
    #: cloud -> counts: ``read`` (rows with an accelerator), ``rows`` (catalog rows written),
    #: ``unmapped``, ``no_price``, ``spot_above_on_demand``, ``accelerator_only`` (GCP)
    clouds: dict[str, dict[str, int]] = field(default_factory=dict)
    #: (cloud, AcceleratorName) -> {"rows": source rows, "why": reason, "instances": set}
    unmapped: dict[tuple[str, str], dict] = field(default_factory=dict)

    def unmapped_table(self) -> pd.DataFrame:
        """One line per unmapped (cloud, name): rows skipped, why, instance types seen."""
        return pd.DataFrame(
            [{"cloud": c, "accelerator_name": n, "rows": u["rows"], "why": u["why"],
              "instance_types": " ".join(sorted(u["instances"]))}
             for (c, n), u in sorted(self.unmapped.items())],
            columns=["cloud", "accelerator_name", "rows", "why", "instance_types"])

    def report(self) -> str:
        lines = []
        for cloud, c in self.clouds.items():
            extra = [f"{c[k]} {k.replace('_', ' ')}" for k in
                     ("unmapped", "no_price", "spot_above_on_demand", "accelerator_only")
                     if c.get(k)]
            lines.append(f"{cloud}: {c['read']} accelerator rows -> {c['rows']} catalog rows"
                         + (f" ({', '.join(extra)})" if extra else ""))
        if self.unmapped:
            lines.append("unmapped accelerator names (no catalog accelerator id; rows skipped):")
            for (cloud, name), u in sorted(self.unmapped.items()):
                inst = sorted(u["instances"])
                shown = ", ".join(inst[:3]) + (f" and {len(inst) - 3} more" if len(inst) > 3
                                               else "")
                lines.append(f"  {cloud} {name!r}: {u['rows']} rows - {u['why']}"
                             + (f" ({shown})" if shown else ""))
        return "\n".join(lines)


def skypilot_mapping(path: str | Path | None = None) -> list[dict[str, str]]:
    """The SkyPilot accelerator name -> catalog accelerator id table (first match wins).

    Shipped as ``planner/data/skypilot_accelerators.csv`` (columns cloud, accelerator_name,
    instance_regex, accelerator, note); cloud ``*`` matches every cloud and cloud-specific rows
    are tried first. A name with cloud-specific rows that do not match the instance type is
    unmapped, never guessed.
    """
    p = Path(path) if path else Path(__file__).parent / "data" / "skypilot_accelerators.csv"
    with p.open(encoding="utf-8", newline="") as fh:
        rows = [{k: (v or "") for k, v in r.items()} for r in csv.DictReader(fh)]
    return sorted(rows, key=lambda r: r["cloud"] == "*")  # stable: file order within a kind


def _map_accelerator(mapping: list[dict[str, str]], cloud: str, name: str,
                     instance: str) -> tuple[str | None, str]:
    specific = [m for m in mapping if m["cloud"] == cloud and m["accelerator_name"] == name]
    generic = [m for m in mapping if m["cloud"] == "*" and m["accelerator_name"] == name]
    for m in specific or generic:
        if not m["instance_regex"] or re.search(m["instance_regex"], instance, re.IGNORECASE):
            return m["accelerator"], ""
    if specific:
        return None, (f"instance type matches none of the {cloud} mapping rows for this name "
                      "(another variant, e.g. NVL or PCIe 40 GB)")
    return None, "no catalog accelerator for this name"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-")


def _cloud_of(p: Path) -> str:
    """``.../<cloud>/vms.csv`` or ``<cloud>_vms*.csv`` -> cloud name."""
    if p.stem == "vms":
        return p.parent.name.lower()
    return p.stem.split("_vms", 1)[0].lower()


def skypilot_files(path: str | Path) -> list[Path]:
    """The ``vms.csv`` files of a SkyPilot catalog copy (a file, or a directory searched
    recursively for ``vms.csv`` and ``<cloud>_vms*.csv``)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.exists():
        raise PlannerError(f"{p}: file or directory not found")
    files = sorted({f for pat in ("vms.csv", "*_vms*.csv") for f in p.rglob(pat)})
    if not files:
        raise PlannerError(f"{p}: no SkyPilot vms.csv or <cloud>_vms*.csv files in it")
    return files


def _number(text: str, what: str, where: str, *, positive: bool = False) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        v = float(text)
    except ValueError:
        raise PlannerError(f"{where}: {what} {text!r} is not a number") from None
    if v != v or v < 0 or (positive and v == 0) or v == float("inf"):
        raise PlannerError(f"{where}: {what} {text!r} must be a "
                           + ("positive" if positive else "non-negative") + " number")
    return v


def import_skypilot(path: str | Path, *, clouds: list[str] | None = None, as_of: str = "",
                    source: str = SKYPILOT_SOURCE, cheapest: bool = False,
                    mapping: list[dict[str, str]] | None = None) -> SkyPilotImport:
    """Read SkyPilot catalog ``vms.csv`` files and return ``cloud_prices.csv`` rows.

    One on-demand row (``Price``) and one spot row (``SpotPrice``, when listed and positive)
    per instance type and region, the cheapest over the region's zones; ``usd_per_gpu_hour`` is
    the instance price over ``AcceleratorCount``. With ``cheapest`` one row per instance type
    and plan, at its cheapest region (named in ``source``). Rows whose accelerator name has no
    catalog id are skipped and counted in ``unmapped``. Spot prices above the on-demand price
    (a known source anomaly) are skipped and counted. GCP accelerator rows (empty
    ``InstanceType``) price the accelerators only, without the host VM; they are kept, named
    ``... accelerators only`` and say so in ``source``.

    A malformed row (missing cells, a count or price that is not a number) raises a
    :class:`PlannerError` naming the file and line.
    """
    mapping = mapping if mapping is not None else skypilot_mapping()
    want = {c.strip().lower() for c in clouds} if clouds else None
    out = SkyPilotImport(rows=pd.DataFrame(columns=CLOUD_COLUMNS))
    best: dict[tuple, dict] = {}
    files = [f for f in skypilot_files(path) if want is None or _cloud_of(f) in want]
    if want and not files:
        raise PlannerError(f"--clouds {','.join(sorted(want))}: no vms.csv file for these "
                           f"clouds under {path}")
    for f in files:
        cloud = _cloud_of(f)
        stats = out.clouds.setdefault(cloud, dict.fromkeys(
            ("read", "rows", "unmapped", "no_price", "spot_above_on_demand",
             "accelerator_only"), 0))
        file_as_of = as_of or _mtime_date(f)
        try:
            fh = f.open(encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise PlannerError(f"{f}: cannot read ({exc.strerror})") from None
        with fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise PlannerError(f"{f}: empty file (expected a SkyPilot vms.csv header)")
            col = {name.strip(): i for i, name in enumerate(header)}
            missing = [c for c in SKYPILOT_REQUIRED if c not in col]
            if missing:
                raise PlannerError(f"{f}:1: not a SkyPilot vms.csv header: missing column(s) "
                                   f"{', '.join(missing)}")
            for cells in reader:
                where = f"{f}:{reader.line_num}"
                if not cells or not any(c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    raise PlannerError(f"{where}: {len(cells)} cells, the header has "
                                       f"{len(header)} (unquoted comma?)")

                def cell(name: str, cells=cells, col=col) -> str:
                    return cells[col[name]].strip() if name in col else ""

                name = cell("AcceleratorName")
                if not name:
                    continue  # a host VM or CPU-only instance
                stats["read"] += 1
                count = _number(cell("AcceleratorCount"), "AcceleratorCount", where,
                                positive=True)
                if count is None:
                    raise PlannerError(f"{where}: AcceleratorCount is empty")
                price = _number(cell("Price"), "Price", where)
                spot = _number(cell("SpotPrice"), "SpotPrice", where)
                region, zone = cell("Region"), cell("AvailabilityZone")
                instance = cell("InstanceType")
                acc, why = _map_accelerator(mapping, cloud, name, instance)
                if acc is None:
                    stats["unmapped"] += 1
                    u = out.unmapped.setdefault((cloud, name),
                                                {"rows": 0, "why": why, "instances": set()})
                    u["rows"] += 1
                    if instance:
                        u["instances"].add(instance)
                    continue
                n = int(count) if float(count).is_integer() else count
                note = ""
                if not instance:
                    stats["accelerator_only"] += 1
                    instance = f"{n}x {name} accelerators only"
                    note = "; accelerator-only price: the host VM is priced apart and NOT included"
                if price is None and not spot:
                    stats["no_price"] += 1
                    continue
                if spot and price is not None and spot > price:
                    stats["spot_above_on_demand"] += 1
                    spot = None
                for plan, value in (("on-demand", price), ("spot", spot)):
                    if not value:  # empty, or vast's 0.00 spot meaning no spot offer
                        continue
                    key = (cloud, instance, plan) if cheapest else (cloud, instance, region, plan)
                    if key in best and best[key]["usd_per_instance_hour"] <= value:
                        continue
                    place = f"region {region}" + (f" zone {zone}" if zone else "")
                    rid = "/".join(_slug(x) for x in (
                        (cloud, instance, plan) if cheapest else (cloud, instance, region, plan)))
                    best[key] = {
                        "id": rid, "provider": cloud, "accelerator": acc,
                        "instance_type": instance, "gpus_per_instance": n, "plan": plan,
                        "usd_per_gpu_hour": round(value / count, 6),
                        "usd_per_instance_hour": value,
                        "source": (f"{source} {cloud} vms.csv ({f.name} line {reader.line_num}): "
                                   f"{'Price' if plan == 'on-demand' else 'SpotPrice'} {value:g}"
                                   f" USD/h for {instance}, {place}"
                                   + (" (cheapest region in the file)" if cheapest else "")
                                   + note),
                        "as_of": file_as_of,
                    }
    rows = list(best.values())
    for r in rows:
        out.clouds[r["provider"]]["rows"] += 1
    out.rows = pd.DataFrame(rows, columns=CLOUD_COLUMNS)
    return out
