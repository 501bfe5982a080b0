"""``planner catalog import-skypilot``: SkyPilot vms.csv rows -> cloud_prices.csv rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from planner.catalog import load_catalog
from planner.catalog_import import CLOUD_COLUMNS, import_skypilot, skypilot_mapping
from planner.cli import main
from planner.errors import PlannerError

DATA = Path(__file__).parent / "data" / "skypilot"
CLOUDS = {"aws", "gcp", "lambda", "runpod", "nebius", "cudo", "vast", "fluidstack"}


@pytest.fixture(scope="module")
def res():
    return import_skypilot(DATA, as_of="2024-12")


def _row(df: pd.DataFrame, rid: str) -> dict:
    hit = df[df["id"] == rid]
    assert len(hit) == 1, (rid, df["id"].tolist())
    return hit.iloc[0].to_dict()


def test_every_cloud_gives_rows_in_catalog_layout(res):
    assert list(res.rows.columns) == CLOUD_COLUMNS
    assert set(res.clouds) == CLOUDS
    assert set(res.rows["provider"]) == CLOUDS
    assert res.rows["id"].is_unique
    assert (res.rows["id"] == res.rows["id"].str.lower()).all()
    assert (res.rows["as_of"] == "2024-12").all()
    assert res.rows["source"].str.contains("skypilot-org/skypilot-catalog").all()
    cat = load_catalog()
    assert set(res.rows["accelerator"]) <= set(cat.ids("accelerators"))
    assert set(res.rows["plan"]) <= {"on-demand", "spot"}


def test_per_instance_and_per_gpu_hour(res):
    r = _row(res.rows, "aws/g6e.xlarge/us-east-1/on-demand")
    assert (r["accelerator"], r["gpus_per_instance"]) == ("l40s", 1)
    assert r["usd_per_instance_hour"] == pytest.approx(1.861)
    spot = _row(res.rows, "aws/g6e.xlarge/us-east-1/spot")  # cheaper of the two zones
    assert spot["usd_per_instance_hour"] == pytest.approx(0.787)
    r = _row(res.rows, "lambda/gpu_8x_h100_sxm5/europe-central-1/on-demand")
    assert (r["accelerator"], r["gpus_per_instance"]) == ("h100-sxm", 8)
    assert r["usd_per_gpu_hour"] * 8 == pytest.approx(r["usd_per_instance_hour"])
    r = _row(res.rows, "nebius/gpu-b200-sxm_8gpu-160vcpu-1792gb/us-central1/on-demand")
    assert (r["accelerator"], r["usd_per_gpu_hour"]) == ("b200", pytest.approx(5.5))


def test_accelerator_names_mapped_per_cloud(res):
    acc = dict(zip(res.rows["id"], res.rows["accelerator"], strict=True))
    assert acc["lambda/gpu_1x_h100_pcie/asia-south-1/on-demand"] == "h100-pcie"
    assert acc["fluidstack/h100_pcie_80gb-1/utah_usa/on-demand"] == "h100-pcie"
    assert acc["runpod/1x_mi300x_secure/us/on-demand"] == "mi300x"
    assert acc["vast/1x-h200-32-65536/hungary-hu-eu/on-demand"] == "h200"
    # unmapped names are reported, with the variant named, never guessed
    un = res.unmapped
    assert ("lambda", "A100") in un and un[("lambda", "A100")]["instances"] == {"gpu_1x_a100"}
    for key in [("aws", "V100"), ("runpod", "H100-NVL"), ("cudo", "H100"), ("vast", "H100"),
                ("fluidstack", "L40"), ("gcp", "tpu-v6e-1")]:
        assert key in un, key
    text = res.report()
    assert "unmapped accelerator names" in text and "'H100-NVL'" in text
    assert set(res.unmapped_table()["cloud"]) == CLOUDS - {"nebius"}


def test_quirks(res):
    ids = set(res.rows["id"])
    # runpod L40S: SpotPrice 0.86 above Price 0.43 -> on-demand kept, spot dropped and counted
    assert "runpod/1x_l40s_secure/us/on-demand" in ids
    assert "runpod/1x_l40s_secure/us/spot" not in ids
    assert res.clouds["runpod"]["spot_above_on_demand"] == 2
    # vast: SpotPrice 0.00 is no spot offer; regions with commas become one id part
    assert not any(i.startswith("vast/") and i.endswith("/spot") for i in ids)
    assert "vast/2x-l40s-32-65536/oregon-us-na/on-demand" in ids  # Region "Oregon, US, NA"
    # aws p5e: empty Price -> spot row only (where a spot price is listed)
    p5e = res.rows[res.rows["instance_type"] == "p5e.48xlarge"]
    assert set(p5e["plan"]) <= {"spot"}
    # gcp: accelerator-only price, the host VM is not included, and it says so
    g = _row(res.rows, "gcp/1x-h100-accelerators-only/us-central1/on-demand")
    assert g["usd_per_gpu_hour"] == pytest.approx(4.20076)
    assert "NOT included" in g["source"]
    assert res.clouds["gcp"]["accelerator_only"] == 6


def test_cheapest_and_clouds_filter():
    res = import_skypilot(DATA, clouds=["vast", "nebius"], cheapest=True, as_of="2024-12")
    assert set(res.rows["provider"]) == {"vast", "nebius"}
    r = _row(res.rows, "vast/2x-l40s-32-65536/on-demand")
    assert "cheapest region" in r["source"]
    with pytest.raises(PlannerError, match="--clouds"):
        import_skypilot(DATA, clouds=["azure"])


def test_mapping_table_is_data():
    m = skypilot_mapping()
    cat = load_catalog()
    assert {r["accelerator"] for r in m} <= set(cat.ids("accelerators"))
    assert {"L40S", "L4", "MI300X", "H200", "B200"} <= {r["accelerator_name"] for r in m}


@pytest.mark.parametrize("bad, message", [
    ("g6e.xlarge,L40S,one,4,32,1.861,,us-east-1\n", "AcceleratorCount 'one' is not a number"),
    ("g6e.xlarge,L40S,1,4,32,cheap,,us-east-1\n", "Price 'cheap' is not a number"),
    ("g6e.xlarge,L40S,1,4,32,-1,,us-east-1\n", "Price '-1' must be a non-negative number"),
    ("g6e.xlarge,L40S,0,4,32,1.861,,us-east-1\n", "must be a positive number"),
    ("g6e.xlarge,L40S,1,4,32,1.861,,Florida, US\n", "9 cells, the header has 8"),
])
def test_malformed_rows_name_file_and_line(tmp_path, capsys, bad, message):
    f = tmp_path / "aws" / "vms.csv"
    f.parent.mkdir()
    f.write_text("InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,"
                 "SpotPrice,Region\ng6.xlarge,L4,1,4,16,0.8048,0.3,us-east-1\n" + bad)
    with pytest.raises(PlannerError, match=rf"vms.csv:3: .*{message}"):
        import_skypilot(f)
    assert main(["catalog", "import-skypilot", str(f)]) == 2
    err = capsys.readouterr().err
    assert "vms.csv:3:" in err and "Traceback" not in err


def test_bad_header_and_missing_path(tmp_path):
    f = tmp_path / "x_vms.csv"
    f.write_text("name,price\na,1\n")
    with pytest.raises(PlannerError, match=r"x_vms.csv:1: .*missing column"):
        import_skypilot(f)
    with pytest.raises(PlannerError, match="not found"):
        import_skypilot(tmp_path / "nope")


def test_cli_writes_catalog_rows(tmp_path, capsys):
    out = tmp_path / "clouds.csv"
    assert main(["catalog", "import-skypilot", str(DATA), "--clouds", "aws,runpod",
                 "--as-of", "2024-12", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "aws: 10 accelerator rows" in err and "unmapped" in err and "wrote" in err
    df = pd.read_csv(out)
    assert list(df.columns) == CLOUD_COLUMNS and set(df["provider"]) == {"aws", "runpod"}
    # the written file is a valid catalog cloud table
    cat_dir = tmp_path / "cat"
    shutil.copytree(Path(load_catalog().directory), cat_dir)
    df.to_csv(cat_dir / "cloud_prices.csv", index=False)
    cat = load_catalog(cat_dir)
    assert cat.cheapest_cloud("l40s", "on-demand")["usd_per_gpu_hour"] == pytest.approx(0.43)


def test_catalog_has_skypilot_prices_for_the_former_gaps():
    cat = load_catalog()
    for acc in ("l40s", "l4", "mi300x", "h200", "b200"):
        row = cat.cheapest_cloud(acc, "on-demand")
        assert row is not None and row["usd_per_gpu_hour"] > 0, acc
    rows = cat.clouds[cat.clouds["source"].str.contains("import-skypilot", na=False)]
    assert set(rows["accelerator"]) == {"l40s", "l4", "mi300x", "h200", "b200"}
    assert rows["source"].str.startswith("skypilot-org/skypilot-catalog catalogs/v7/").all()
    assert not rows["source"].str.contains("shared/").any()
    # no GCP accelerator-only rows (they leave out the host VM) and no RunPod L40S (its
    # SpotPrice above Price suggests swapped columns)
    assert not (rows["provider"] == "gcp").any()
    assert not ((rows["provider"] == "runpod") & (rows["accelerator"] == "l40s")).any()


def test_perf_search_includes_l40s_with_a_price(capsys):
    from planner.perf.report import perf_search

    df = perf_search(load_catalog(), "llama-3.1-8b", isl=2000, osl=200, ttft_slo_s=1.0)
    l40s = df[df["accelerator"] == "l40s"]
    assert not l40s.empty
    assert (l40s["usd_per_hour"] > 0).all()
    assert main(["perf", "--search", "--model", "llama-3.1-8b", "--isl", "2000", "--osl", "200",
                 "--ttft-slo", "1", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert ",l40s," in out
