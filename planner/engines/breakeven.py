"""Break-even solvers (scipy root finding on the engine's own cost functions).

- API vs self-hosted: the request volume (a multiple of the scenario's) at which a self-hosted
  option's monthly cost equals an API option's. Self-hosted cost is a step function of whole
  replicas, so the root is bracketed on a log grid and refined with Brent's method
  (``scipy.optimize.brentq``), which converges to the crossing or to the step where the sign
  changes.
- Fine-tune: cumulative tokens at which a one-off fine-tune plus cheaper tokens beats the
  un-tuned option: T* = C_ft / (c_base - c_ft) (article 000's cost-vs-tokens chart).
- Provider payback (article 001, 7.2-7.3): monthly cost = training / retrain_every +
  T x inference cost per token; revenue = T x price, or users x subscription; solved for T
  and for users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from planner.catalog import Catalog, load_catalog
from planner.config import Scenario, med
from planner.engines.deterministic import Results, evaluate
from planner.model.evaluate import Model


def brentq(*args, **kwargs):
    """:func:`scipy.optimize.brentq` (imported on first use: scipy.optimize is slow to load)."""
    from scipy.optimize import brentq as _brentq

    return _brentq(*args, **kwargs)


@dataclass(frozen=True)
class BreakevenResults:
    volume: pd.DataFrame
    finetune: pd.DataFrame
    payback: pd.DataFrame
    curve: pd.DataFrame


class VolumeCosts:
    """Monthly cost, LLM requests per day and tokens per month of every option at volume
    multiples, from one :class:`~planner.model.evaluate.Model` built once (its structure,
    capacity and pool sizes are decided at the scenario's own volume, as
    :func:`~planner.engines.deterministic.evaluate` decides them) and evaluated for a whole
    grid of multiples as one array evaluation (the multiples are the N values of
    ``volume_scale``), instead of one deterministic engine run per point.

    The figures equal the deterministic engine's ``summary`` (``usd_per_month``,
    ``tokens_per_month``) and ``classes`` (``requests_per_day`` summed over the option's
    classes) at ``volume_scale = x``.
    """

    def __init__(self, sc: Scenario, catalog: Catalog | None = None, *,
                 model: Model | None = None):
        self.cat = catalog or load_catalog()
        self.model = model if model is not None else Model(sc, self.cat)
        self.names = [o.name for o in self.model.options]
        self._points: dict[float, dict[str, tuple[float, float, float]]] = {}

    def grid(self, scales: Sequence[float]) -> dict[str, np.ndarray]:
        """``{option: array (len(scales), 3)}`` of (usd/month, LLM requests/day,
        tokens/month) at each multiple, in one evaluation; also fills the point cache."""
        x = np.asarray(scales, dtype=float).reshape(-1)
        m = self.model
        ctx = m.ctx(n=x.size, volume_scale=x)
        raw = m.evaluate_raw(ctx)
        out = {}
        for o in m.options:
            r = raw[o.name]
            req: Any = 0.0
            for cname in o.served:
                req = req + m.klass(ctx, cname, o.tokenizer)[0]
            out[o.name] = np.stack([np.broadcast_to(np.asarray(v, dtype=float), x.shape)
                                    for v in (r["monthly"], req, r["tokens"])], axis=1)
        for i, xi in enumerate(x.tolist()):
            self._points.setdefault(xi, {k: tuple(float(v) for v in a[i])
                                         for k, a in out.items()})
        return out

    def at(self, x: float) -> dict[str, tuple[float, float, float]]:
        """``{option: (usd/month, LLM requests/day, tokens/month)}`` at one multiple."""
        x = float(x)
        if x not in self._points:
            self.grid([x])
        return self._points[x]


def cost_curve(sc: Scenario, scales, catalog: Catalog | None = None, *,
               volumes: VolumeCosts | None = None) -> pd.DataFrame:
    """Monthly cost of every option at volume multiples ``scales`` (tidy; one array
    evaluation of the model for the whole grid)."""
    vc = volumes if volumes is not None else VolumeCosts(sc, catalog)
    kinds = {o.name: o.kind for o in vc.model.options}
    scales = [float(s) for s in scales]
    grid = vc.grid(scales) if scales else {}
    rows = []
    for i, s in enumerate(scales):
        for name in vc.names:
            usd, req, tok = (float(v) for v in grid[name][i])
            rows.append({
                "volume_scale": s, "deployment": name, "kind": kinds[name],
                "requests_per_day": req, "tokens_per_month": tok, "usd_per_month": usd,
            })
    return pd.DataFrame(rows)  # (no columns when the scenario has no options, as before)


def volume_breakeven(
    sc: Scenario, catalog: Catalog | None = None, *, lo: float = 1e-4, hi: float = 1e4,
    points: int = 41, volumes: VolumeCosts | None = None, base: Results | None = None,
) -> pd.DataFrame:
    """For each (API option, self-hosted option) pair serving the same classes, the volume
    at which self-hosting becomes cheaper.

    The ``points`` grid multiples are priced in one array evaluation; Brent's method then
    refines each bracketed crossing with single-point evaluations of the same model.
    """
    vc = volumes if volumes is not None else VolumeCosts(sc, catalog)
    base = base if base is not None else evaluate(sc, vc.cat, model=vc.model)
    s = base.summary
    apis = s[s["kind"] == "api"]
    selfs = s[s["kind"] != "api"]
    grid = np.geomspace(lo, hi, points)
    pairs = [(a, h) for a in apis.itertuples() for h in selfs.itertuples()
             if a.classes_served == h.classes_served and a.classes_served]
    costs = vc.grid(grid) if pairs else {}
    at = vc.at

    rows = []
    for a, h in pairs:

        def diff(x, a=a.deployment, h=h.deployment):
            m = at(x)
            return m[h][0] - m[a][0]

        vals = costs[h.deployment][:, 0] - costs[a.deployment][:, 0]
        idx = np.nonzero((vals[:-1] > 0) & (vals[1:] <= 0))[0]
        row = {"api": a.deployment, "selfhosted": h.deployment,
               "classes": a.classes_served}
        if idx.size == 0:
            cheaper = "selfhosted" if vals[0] <= 0 else "api"
            row.update({"volume_scale": np.nan, "requests_per_day": np.nan,
                        "tokens_per_month": np.nan, "usd_per_month": np.nan,
                        "note": f"no crossing in x{lo:g}..x{hi:g} of the scenario volume; "
                                f"{cheaper} is cheaper throughout"})
        else:
            i = int(idx[0])
            x = brentq(diff, grid[i], grid[i + 1], xtol=1e-10, rtol=1e-10)
            m = at(x)
            row.update({"volume_scale": x, "requests_per_day": m[a.deployment][1],
                        "tokens_per_month": m[a.deployment][2],
                        "usd_per_month": m[a.deployment][0],
                        "note": "self-hosting is cheaper above this volume"})
        rows.append(row)
    return pd.DataFrame(rows, columns=["api", "selfhosted", "classes", "volume_scale",
                                       "requests_per_day", "tokens_per_month",
                                       "usd_per_month", "note"])


def finetune_breakeven(sc: Scenario, catalog: Catalog | None = None,
                       res: Results | None = None) -> pd.DataFrame:
    """Fine-tuned option vs each other option serving the same classes.

    The fine-tune's one-off cost is its training runs x retries plus ``one_off_usd``
    (engineering, data preparation, evaluation): :func:`planner.costs.training.
    finetune_one_off_usd`, as the cost engine counts it. T* (cumulative tokens) = one-off cost /
    (cost per token without - cost per token with); months to pay back = one-off cost /
    monthly saving (:func:`planner.costs.training.finetune_payback`). The columns
    ``training_usd`` and ``one_off_usd`` split ``finetune_usd`` into its two parts.
    """
    from planner.costs.training import finetune_payback

    cat = catalog or load_catalog()
    res = res or evaluate(sc, cat)
    s = res.summary
    ft = res.finetune.set_index("finetune") if not res.finetune.empty else None
    deps = sc.deployments()
    rows = []
    for r in s.itertuples():
        ft_name = getattr(deps[r.deployment][1], "fine_tune", None)
        if not ft_name:
            continue
        once = float(ft.loc[ft_name, "usd"])
        extra = float(ft.loc[ft_name, "one_off_usd"])
        recurring_ft = r.usd_per_month - once / res.horizon_months
        for o in s.itertuples():
            if o.deployment == r.deployment or o.classes_served != r.classes_served:
                continue
            if getattr(deps[o.deployment][1], "fine_tune", None):
                continue
            per_tok_ft = recurring_ft / r.tokens_per_month if r.tokens_per_month else np.nan
            per_tok_o = o.usd_per_month / o.tokens_per_month if o.tokens_per_month else np.nan
            saving = o.usd_per_month - recurring_ft
            tstar, months = finetune_payback(once, per_tok_ft, per_tok_o, saving)
            rows.append({
                "finetuned": r.deployment, "finetune": ft_name, "versus": o.deployment,
                "finetune_usd": once, "training_usd": once - extra, "one_off_usd": extra,
                "usd_per_mtok_finetuned": per_tok_ft * 1e6,
                "usd_per_mtok_versus": per_tok_o * 1e6, "breakeven_tokens": tstar,
                "monthly_saving_usd": saving, "payback_months": months,
            })
    return pd.DataFrame(rows, columns=["finetuned", "finetune", "versus", "finetune_usd",
                                       "training_usd", "one_off_usd",
                                       "usd_per_mtok_finetuned", "usd_per_mtok_versus",
                                       "breakeven_tokens", "monthly_saving_usd",
                                       "payback_months"])


def payback(sc: Scenario, catalog: Catalog | None = None, res: Results | None = None
            ) -> pd.DataFrame:
    """Provider payback: tokens/month and subscribers that recover training + inference."""
    cat = catalog or load_catalog()
    res = res or evaluate(sc, cat)
    rows = []
    pt = res.pretraining.set_index("job") if not res.pretraining.empty else None
    inf = res.inference_flops.set_index("estimate") if not res.inference_flops.empty else None
    for name, p in sc.payback.items():
        training = med(p.training_usd) if p.training_usd is not None else float(
            pt.loc[p.pretraining, "usd"])
        inf_k = med(p.inference_usd_per_ktok) if p.inference_usd_per_ktok is not None else float(
            inf.loc[p.inference_flops, "usd_per_ktok"])
        fixed = training / med(p.retrain_every_months)
        base = {"payback": name, "training_usd": training,
                "fixed_usd_per_month": fixed, "inference_usd_per_ktok": inf_k}
        if p.price_usd_per_ktok is not None:
            price = med(p.price_usd_per_ktok)

            def margin(t_k, price=price, fixed=fixed, inf_k=inf_k):
                return t_k * price - (fixed + t_k * inf_k)

            t = _root(margin, fixed / max(price, 1e-300))
            rows.append({**base, "revenue": f"{price:g} usd per 1K tokens",
                         "basis_tokens_per_user_month": np.nan,
                         "breakeven_tokens_per_month": t * 1000.0 if t == t else np.nan,
                         "breakeven_users": np.nan})
        if p.subscription_usd_per_month is not None:
            sub = med(p.subscription_usd_per_month)
            per_user = [med(x) for x in p.tokens_per_user_month]
            per_user += [med(x) * med(p.days_per_month) for x in p.tokens_per_user_day]
            for tpu in per_user:
                def margin_u(u, tpu=tpu, sub=sub, fixed=fixed, inf_k=inf_k):
                    return u * sub - (fixed + u * tpu / 1000.0 * inf_k)

                u = _root(margin_u, fixed / max(sub, 1e-300))
                rows.append({**base, "revenue": f"{sub:g} usd per user-month",
                             "basis_tokens_per_user_month": tpu,
                             "breakeven_tokens_per_month": u * tpu if u == u else np.nan,
                             "breakeven_users": u})
    return pd.DataFrame(rows, columns=["payback", "training_usd", "fixed_usd_per_month",
                                       "inference_usd_per_ktok", "revenue",
                                       "basis_tokens_per_user_month",
                                       "breakeven_tokens_per_month", "breakeven_users"])


def _root(f, guess: float) -> float:
    """Root of an increasing margin function on (0, inf); NaN when it never turns positive."""
    hi = max(guess, 1.0)
    for _ in range(200):
        if f(hi) > 0:
            return brentq(f, 0.0, hi, xtol=1e-12, rtol=1e-14)
        hi *= 4.0
    return float("nan")


def breakeven(sc: Scenario, catalog: Catalog | None = None,
              scales=(0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100)) -> BreakevenResults:
    """All break-even analyses of a scenario."""
    cat = catalog or load_catalog()
    vc = VolumeCosts(sc, cat)  # one model for every analysis
    base = evaluate(sc, cat, model=vc.model)
    return BreakevenResults(
        volume=volume_breakeven(sc, cat, volumes=vc, base=base),
        finetune=finetune_breakeven(sc, cat, res=base),
        payback=payback(sc, cat, res=base),
        curve=cost_curve(sc, scales, cat, volumes=vc),
    )
