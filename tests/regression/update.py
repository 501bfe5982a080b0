"""Regenerate the stored study results (level-3 regression baselines).

Run after an intended change of figures, review the diff, and commit it:

    python -m tests.regression.update
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd

from planner.config import load_scenario
from planner.engines.breakeven import payback
from planner.engines.deterministic import evaluate

ROOT = Path(__file__).resolve().parents[2]
STORE = Path(__file__).resolve().parent / "studies"
TABLES = ("summary", "pretraining", "inference_flops", "unit_economics", "token_economics",
          "finetune")
#: Studies whose optimised plan is stored too (besides any scenario with an [optimize] table).
OPTIMISER_STUDIES = ("hybrid-support-bot", "gpu-mix")


def scenario_files() -> list[Path]:
    files = sorted((ROOT / "studies").glob("*/*.toml"))
    files.append(ROOT / "planner" / "templates" / "quickstart.toml")
    return files


def key(path: Path) -> str:
    return f"{path.parent.name}__{path.stem}"


def results(path: Path) -> dict[str, pd.DataFrame]:
    sc = load_scenario(path)
    res = evaluate(sc)
    out = {}
    for t in TABLES:
        df = getattr(res, t)
        if not df.empty:
            out[t] = df.drop(columns=[c for c in df.columns if c == "basis"])
    if sc.payback:
        out["payback"] = payback(sc, res=res)
    if path.parent.parent == ROOT / "studies" and (
            path.parent.name in OPTIMISER_STUDIES or "optimize" in tomllib.loads(
                path.read_text(encoding="utf-8"))):
        out["optimise_plan"] = optimise_plan(sc)
    return out


def optimise_plan(sc) -> pd.DataFrame:
    """The optimiser's plan at gap 0 (the exact optimum, so the figures are stable): one row
    per candidate, then the total (the objective, fine-tunes included)."""
    from planner.engines.optimize import optimize

    res = optimize(sc, gap=0.0)
    if res.solution is None:
        return pd.DataFrame({"deployment": ["(total)"], "chosen": [False],
                             "requests_share": [float("nan")],
                             "usd_per_month": [float("nan")], "status": [res.status]})
    df = res.plan[["deployment", "chosen", "requests_share", "usd_per_month"]].copy()
    df.loc[len(df)] = ["(total)", True, 1.0, res.objective_usd_per_month]
    df["requests_share"] = df["requests_share"].round(6)
    df["usd_per_month"] = df["usd_per_month"].round(2)
    return df.assign(status=res.status)


def main() -> None:
    STORE.mkdir(parents=True, exist_ok=True)
    for old in STORE.glob("*.csv"):
        old.unlink()
    for f in scenario_files():
        for name, df in results(f).items():
            df.to_csv(STORE / f"{key(f)}__{name}.csv", index=False)
    print(f"stored {len(list(STORE.glob('*.csv')))} tables in {STORE}")


if __name__ == "__main__":
    main()
