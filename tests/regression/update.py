"""Regenerate the stored study results (level-3 regression baselines).

Run after an intended change of figures, review the diff, and commit it:

    python -m tests.regression.update
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from planner.config import load_scenario
from planner.engines.breakeven import payback
from planner.engines.deterministic import evaluate

ROOT = Path(__file__).resolve().parents[2]
STORE = Path(__file__).resolve().parent / "studies"
TABLES = ("summary", "pretraining", "inference_flops", "unit_economics", "token_economics",
          "finetune")


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
    return out


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
