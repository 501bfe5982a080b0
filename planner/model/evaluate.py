"""The one model: a scenario's options priced for N values of its inputs (N=1: the medians).

:class:`Model` is built once per scenario (structure, catalog rows, capacity per option and
class) and :meth:`Model.evaluate` prices every option for arrays of input values: one numpy
expression per formula, never a Python loop per sample. The deterministic engine is this model
at N=1 with ``trace=True`` (each cost line with its formula), the Monte Carlo engine the model
at N samples, and the simulator and optimiser take sizing and prices from it.

Where each figure is computed
-----------------------------
* volumes: :func:`planner.workload.class_volumes` per class and tokenizer (:meth:`Model.klass`);
  hourly load, the flatness rule and the peak: :mod:`planner.model.volumes`;
* capacity of a replica: :mod:`planner.model.capacity` (perf model at the class's SLO and
  prefix-cache hit share, or a grid of length quantiles when lengths are uncertain);
* replicas: peak load / utilisation target + HA reserve
  (:func:`planner.costs.selfhosted.replicas_needed`), bounded by a fixed fleet (``replicas``,
  on-prem ``servers``) or by ``max_replicas`` / ``max_servers``; a fleet that cannot carry the
  peak load does not serve its classes (``serves`` is False);
* API bills: :func:`planner.costs.api.api_cost_per_request` plus request fees;
* cloud rental: the price chain of :func:`planner.model.structure.cloud_price_source`, the
  spot factor and the billing mode (:meth:`Model.cloud`);
* on-prem: :func:`planner.costs.selfhosted.onprem_costs_usd_per_month` (capex, maintenance,
  energy, facilities, staff, implementation) with power from
  :func:`planner.costs.selfhosted.server_power_w` (:meth:`Model.onprem`);
* fine-tune one-offs: :mod:`planner.costs.training`, spread over the horizon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from planner.costs import selfhosted as sh
from planner.costs import training as tr
from planner.costs.api import (
    API_PRICE_FIELDS,
    api_cost_per_request,
    request_fee_usd,
    resolve_api_prices,
)
from planner.distributions import median_of, sample_many
from planner.errors import PlannerError
from planner.model.capacity import CapacityCache, CapacityGrid, class_traffic, grid_nodes
from planner.model.inputs import Inputs
from planner.model.structure import (
    DEFAULT_LIFE_YEARS,
    OptionSpec,
    api_eligible,
    api_latency_note,
    cloud_price_source,
    eligible,
    tier,
)
from planner.model.volumes import peak_load, profile_periods, tile_profile
from planner.workload import class_volumes, diurnal_weights, hourly_rates

#: Draws of the fixed pilot sample that places the capacity grid's nodes.
PILOT_SAMPLES = 2_048
_PILOT_SEED = 20_240_917

#: Perf-model fields copied into the capacity table.
CAPACITY_PERF = [
    "requests_per_s", "output_tokens_per_s", "batch", "max_batch", "ttft_s", "tpot_s", "e2e_s",
    "kv_capacity_tokens", "weights_gb_per_gpu", "fits", "limited_by",
]


class Model:
    """A scenario prepared for vectorised evaluation.

    Parameters
    ----------
    sc : Scenario
    catalog : Catalog
    inputs : mapping of key path to an uncertain input (``.dist``), optional
        The scenario's uncertain inputs. With them, medians come from their distributions and
        a class with uncertain lengths gets a capacity grid; without them every input is held
        at its median (the deterministic view).
    caps : CapacityCache, optional
        Performance-model results shared with other models of the same catalog. Default: the
        catalog's own (``catalog.shared("capacity", ...)``), so every model priced against
        one catalog computes a replica's capacity once.
    """

    def __init__(self, sc: Any, catalog: Any, inputs: Mapping[str, Any] | None = None, *,
                 caps: CapacityCache | None = None):
        self.sc = sc
        self.cat = catalog
        self.hpm = float(sc.planning.hours_per_month)
        self.horizon = int(sc.scenario.horizon_months)
        self.all_inputs = dict(inputs or {})
        self.medians: dict[str, float] = {
            k: u.dist.median() for k, u in self.all_inputs.items()}
        self.warnings: list[str] = []
        self._ratio_cache: dict[tuple, float] = {}
        self._cheapest_cache: dict[tuple, float] = {}
        # the catalog's shared cache, when it keeps one: the engines of one report price the
        # same replicas (planner.catalog.Catalog.shared)
        shared = getattr(catalog, "shared", None)
        self.caps = caps if caps is not None else (
            shared("capacity", CapacityCache) if callable(shared) else CapacityCache())
        self._grid_cache: dict[tuple, CapacityGrid] = {}
        self._profiles: dict[tuple, tuple] = {}  # (class, hours) -> profile (_profile)
        self.periods = profile_periods(sc)
        pilot = self._pilot()
        self.options: list[OptionSpec] = []
        for name, (kind, dep) in sc.deployments().items():
            self.options.append(self._compile_option(name, kind, dep, pilot))
        self.by_name = {o.name: o for o in self.options}

    # -- structure -------------------------------------------------------------------------
    def _pilot(self) -> dict[str, np.ndarray]:
        if not self.all_inputs:
            return {}
        rng = np.random.default_rng(np.random.SeedSequence(_PILOT_SEED))
        return sample_many(rng, {k: u.dist for k, u in self.all_inputs.items()}, PILOT_SAMPLES)

    def ctx(self, values: Mapping[str, Any] | None = None, n: int = 1, *,
            volume_scale: Any = 1.0, record: set | None = None, trace: bool = False,
            lean: bool = False) -> Inputs:
        """An :class:`Inputs` accessor over this model's medians."""
        return Inputs(self.medians, values or {}, n, volume_scale, record, trace, lean)

    def _compile_option(self, name: str, kind: str, dep: Any, pilot) -> OptionSpec:
        sc, cat = self.sc, self.cat
        ft = sc.finetune.get(dep.fine_tune) if dep.fine_tune else None
        if kind == "api":
            row = cat.api(dep.offering)
            elig = api_eligible(sc, cat, name)
            note = api_latency_note(name, row, sc.simulation)
            if note and any(wc.slo is not None for wc in sc.workload.values()):
                self.warnings.append(note)
            return OptionSpec(
                name, kind, dep, dep.offering, tuple(c for c, w in elig.items() if not w),
                {c: w for c, w in elig.items() if w}, dep.tokenizer or row.get("tokenizer"),
                row=row, ft=ft,
            )
        llm_row = cat.llm(dep.model)
        offer = cat.cloud(dep.offering) if kind == "cloud" and dep.offering is not None else None
        server = cat.server(dep.server) if kind == "onprem" and dep.server is not None else None
        acc_id = dep.accelerator or (offer or server or {}).get("accelerator")
        acc_row = cat.accelerator(acc_id)
        elig = eligible(sc, dep, tier(dep, llm_row), ft)
        tokenizer = dep.tokenizer or llm_row.get("tokenizer")
        spec = OptionSpec(
            name, kind, dep, (dep.offering if kind == "cloud" else dep.server) or f"{acc_id}",
            (), {}, tokenizer, ft=ft, acc_id=acc_id, acc_row=acc_row, llm_row=llm_row,
            offer=offer, server=server, periods=self.periods, model=dep.model,
        )
        if kind == "cloud":
            spec.price = cloud_price_source(dep, offer, acc_id, cat)
            spec.gpus_per_unit = spec.price.gpus_per_instance
        else:
            spec.gpus_per_unit = dep.gpus_per_server or int(
                (server or {}).get("gpus_per_server") or 8)
        self._fleet(spec)
        med_ctx = self.ctx()
        pil_ctx = self.ctx(pilot, PILOT_SAMPLES)
        servers = self._pool_size(spec, elig, med_ctx)
        for cname, why in list(elig.items()):
            if why:
                continue
            wc = sc.workload[cname]
            slo = wc.slo
            isl, osl, ttft, tpot, hit, traffic = self._capacity_inputs(med_ctx, spec, cname)
            if traffic is not None:
                traffic = replace(traffic, servers=servers)
            spec.traffic[cname] = traffic
            row = {"deployment": name, "class": cname, "model": dep.model,
                   "accelerator": acc_id, "gpus_per_replica": dep.gpus_per_replica,
                   "precision": dep.precision, "prefix_cache_hit_share": hit}
            if dep.capacity_requests_per_s is not None:
                key = f"{kind}.{name}.capacity_requests_per_s"
                spec.capacity[cname] = ("key", key)
                rps = float(median_of(dep.capacity_requests_per_s))
                spec.capacity_rows.append({
                    **row, **{k: np.nan for k in CAPACITY_PERF}, "fits": True,
                    "limited_by": "stated", "requests_per_s_per_replica": rps,
                    "capacity_basis": "scenario capacity_requests_per_s (performance model "
                                      "not used)"})
                continue
            cap = self.caps.full(llm_row, acc_row, dep, isl, osl, ttft, tpot, hit, strict=True,
                                 traffic=traffic)
            capd = cap.to_dict()
            rps = float(cap.requests_per_s)
            spec.capacity_rows.append({
                **row, **{k: capd.get(k, np.nan) for k in CAPACITY_PERF},
                "requests_per_s_per_replica": rps,
                "capacity_basis": capd.get("method", "perf model")})
            if not capd.get("fits", True) or rps <= 0:
                why = capd.get("limited_by", "no capacity")
                if capd.get("meets_slo") is False:
                    why = "the latency SLO cannot be met even one request at a time"
                elig[cname] = f"cannot be served: {why}"
                continue
            slo_e2e = median_of(slo.e2e_s) if slo and slo.e2e_s is not None else None
            if slo_e2e is not None and capd.get("e2e_s") and capd["e2e_s"] > slo_e2e:
                self.warnings.append(
                    f"{name}/{cname}: modelled end-to-end latency {capd['e2e_s']:.3g} s exceeds "
                    f"the SLO {slo_e2e:g} s"
                )
            _, p_isl, p_osl = self.klass(pil_ctx, cname, tokenizer)[:3]
            p_isl = np.broadcast_to(np.asarray(p_isl, dtype=float), (PILOT_SAMPLES,))
            p_osl = np.broadcast_to(np.asarray(p_osl, dtype=float), (PILOT_SAMPLES,))
            if not pilot or (np.ptp(p_isl) == 0 and np.ptp(p_osl) == 0):
                spec.capacity[cname] = ("value", rps)
                continue
            gkey = (llm_row["id"], acc_row["id"], dep.gpus_per_replica, dep.precision,
                    tuple(sorted(dep.perf.items())), ttft, tpot, hit, traffic, cname, tokenizer)
            if gkey not in self._grid_cache:
                gi = grid_nodes(p_isl, isl) if np.ptp(p_isl) > 0 else np.array([isl])
                go = grid_nodes(p_osl, osl) if np.ptp(p_osl) > 0 else np.array([osl])
                table = self.caps.table(llm_row, acc_row, dep, gi, go, ttft, tpot, hit,
                                        traffic)
                table[(gi == isl)[:, None] & (go == osl)[None, :]] = rps  # the median node
                self._grid_cache[gkey] = CapacityGrid(gi, go, table)
            spec.capacity[cname] = ("grid", self._grid_cache[gkey])
        spec.served = tuple(c for c, w in elig.items() if not w)
        spec.unserved = {c: w for c, w in elig.items() if w}
        if servers > 1 and spec.served:
            spec.pool_size = servers
            spec.pool_peak = float(np.max(self.peak(self.ctx(), spec)))
        return spec

    def _capacity_inputs(self, ctx: Inputs, o: OptionSpec, cname: str) -> tuple:
        """What a replica's capacity for a class depends on, at the medians: (prompt tokens,
        output tokens, TTFT SLO, TPOT SLO, prefix-cache hit share, :class:`Traffic` or
        ``None`` with the closed-loop capacity)."""
        wc = self.sc.workload[cname]
        slo = wc.slo
        _, isl, osl = self.klass(ctx, cname, o.tokenizer)[:3]
        isl, osl = float(isl), float(osl)
        traffic = None
        if self.sc.planning.capacity == "open-loop":
            inp = float(self.length(ctx, wc.input, f"workload.{cname}.input", o.tokenizer))
            traffic = class_traffic(self.sc, wc, inp, isl)
        return (isl, osl,
                median_of(slo.ttft_s) if slo and slo.ttft_s is not None else None,
                median_of(slo.tpot_s) if slo and slo.tpot_s is not None else None,
                float(median_of(wc.prefix_cache_hit_share)), traffic)

    def _pool_size(self, o: OptionSpec, elig: dict[str, str], ctx: Inputs) -> float:
        """Replicas the option's arrivals are shared over, for the open-loop capacity (whose
        prefill wait pools over the replicas): the fixed ``replicas``, else the smallest pool
        ``R`` whose capacity at ``R`` replicas carries the peak hour's load (a bisection: the
        capacity per replica grows with ``R``, the load per replica falls), at the medians
        (structure is decided once)."""
        dep = o.dep
        if self.sc.planning.capacity != "open-loop":
            return 1.0
        if dep.replicas is not None:
            return float(max(dep.replicas, 1))
        terms = []
        for cname, why in elig.items():
            wc = self.sc.workload[cname]
            if why or dep.capacity_requests_per_s is not None or wc.slo is None:
                continue
            req, _, _, _, batch = self.klass(ctx, cname, o.tokenizer)[:5]
            if float(req) <= 0:
                continue
            peak = float(np.max(hourly_rates(float(req), diurnal_weights(wc.diurnal),
                                             float(batch)))) / 3600.0
            terms.append((self._capacity_inputs(ctx, o, cname), peak))
        if not terms:
            return 1.0

        def load(r: float) -> float:
            out = 0.0
            for (isl, osl, ttft, tpot, hit, traffic), peak in terms:
                cap = self.caps.full(o.llm_row, o.acc_row, dep, isl, osl, ttft, tpot, hit,
                                     strict=False, traffic=replace(traffic, servers=r))
                if cap is None or cap.requests_per_s <= 0:
                    return np.inf
                out += peak / cap.requests_per_s
            return out

        u = float(self.sc.planning.utilisation_target)
        lo = 1
        first = load(1.0) / u
        while not np.isfinite(first) and lo < 4096:
            # one replica meets the SLO at no rate (e.g. a cluster of bursty arrivals waits
            # behind itself): a larger pool spreads it; find the smallest that has capacity
            lo *= 2
            first = load(float(lo)) / u
        if not np.isfinite(first):
            return 1.0
        if first <= lo:
            if lo == 1:
                return 1.0
            hi, lo = lo, lo // 2
        else:
            hi = int(np.ceil(max(first, lo + 1)))  # load(lo) / u <= hi: enough replicas
        # lo < R* <= hi (R* the smallest R with load(R) <= u R). The load per replica-capacity
        # changes slowly with R, so its own bounds close the bracket in a few evaluations:
        # R* >= load(hi) / u (load falls with R), and ceil(load(m) / u) is enough replicas for
        # any m below R*; bisection when that stalls.
        for _ in range(6):
            if hi - lo <= 1:
                break
            lo = max(lo, int(np.ceil(load(float(hi)) / u - 1e-12)) - 1)
            m = lo + 1
            if m >= hi:
                break
            lm = load(float(m))
            if lm <= u * m:
                hi = m
                break
            lo = m
            hi = min(hi, max(int(np.ceil(lm / u - 1e-12)), lo + 1))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if load(float(mid)) <= u * mid:
                hi = mid
            else:
                lo = mid
        return float(hi)

    def _fleet(self, o: OptionSpec) -> None:
        """Replicas a fixed fleet (``replicas``, on-prem ``servers``) or a limit
        (``max_replicas``, ``max_servers``) holds; ``None`` when unbounded."""
        dep, gpr, gpu = o.dep, o.dep.gpus_per_replica, o.gpus_per_unit
        caps: list[tuple[float, str]] = []
        if dep.replicas is not None:
            caps.append((float(dep.replicas), f"{dep.replicas} fixed replica(s)"))
        if getattr(dep, "max_replicas", None) is not None:
            caps.append((float(dep.max_replicas), f"max_replicas = {dep.max_replicas}"))
        if o.kind == "onprem":
            for field_, what in (("servers", "server(s)"), ("max_servers", "server(s) at most")):
                n = getattr(dep, field_, None)
                if n is not None:
                    reps = _replicas_in_units(n, gpr, gpu)
                    caps.append((reps, f"{n} {what} x {gpu} GPUs = {reps:g} replica(s) of "
                                       f"{gpr} GPU(s)"))
        if caps:
            o.fleet_replicas, o.fleet_basis = min(caps, key=lambda t: t[0])

    # -- volumes ---------------------------------------------------------------------------
    def _ratio(self, length, tokenizer, unit) -> float:
        key = (length.tokenizer or tokenizer or "", length.lang, unit)
        if key not in self._ratio_cache:
            row = self.cat.tokens_per_unit(*key)
            self._ratio_cache[key] = float(row["tokens_per_unit"])
        return self._ratio_cache[key]

    def length(self, ctx: Inputs, length, key: str, tokenizer) -> Any:
        """Tokens of a Length (as :func:`planner.workload.resolve_length`)."""
        if length is None:
            return 0.0
        if length.tokens is not None:
            return ctx.v(f"{key}.tokens", length.tokens)
        unit, field_ = ("word", "words") if length.words is not None else ("char", "chars")
        count = ctx.v(f"{key}.{field_}", getattr(length, field_))
        if length.tokens_per_unit is not None:
            ratio = ctx.v(f"{key}.tokens_per_unit", length.tokens_per_unit)
        else:
            ratio = self._ratio(length, tokenizer, unit)
        return count * ratio

    def klass(self, ctx: Inputs, cname: str, tokenizer) -> tuple:
        """(LLM requests/day, input tokens, output tokens, cached share, batch share, calls,
        user requests/day) of one class in one tokenizer."""
        ck = ("class", cname, tokenizer)
        if ck in ctx.cache:
            return ctx.cache[ck]
        sc = self.sc
        wc = sc.workload[cname]
        b = f"workload.{cname}"
        if wc.retry_share is not None:
            retry = ctx.v(f"{b}.retry_share", wc.retry_share)
        else:
            retry = ctx.v("planning.retry_share", sc.planning.retry_share)
        calls = ctx.v(f"{b}.calls_per_request", wc.calls_per_request)
        user = ctx.v(f"{b}.requests_per_day", wc.requests_per_day)
        req, isl, osl = class_volumes(
            user,
            self.length(ctx, wc.input, f"{b}.input", tokenizer),
            self.length(ctx, wc.output, f"{b}.output", tokenizer),
            context_tokens=self.length(ctx, wc.context, f"{b}.context", tokenizer),
            calls_per_request=calls,
            samples_per_call=ctx.v(f"{b}.samples_per_call", wc.samples_per_call),
            response_cache_hit_share=ctx.v(f"{b}.response_cache_hit_share",
                                           wc.response_cache_hit_share),
            retry_share=retry,
        )
        if not (np.ndim(ctx.scale) == 0 and ctx.scale == 1.0):
            req = req * ctx.scale
            user = user * ctx.scale
        out = (req, isl, osl, ctx.v(f"{b}.cached_share", wc.cached_share),
               ctx.v(f"{b}.batch_share", wc.batch_share), calls, user)
        ctx.cache[ck] = out
        return out

    # -- shared pieces ---------------------------------------------------------------------
    def fees(self, ctx: Inputs, dep, prefix: str, rpm) -> list[tuple[str, Any, str]]:
        """(component, usd per month, basis) of each request fee."""
        out = []
        for i, f in enumerate(dep.request_fees):
            k = f"{prefix}.request_fees.{i}"
            per_m = ctx.v(f"{k}.usd_per_million_requests", f.usd_per_million_requests)
            gb, secs = ctx.v(f"{k}.gb", f.gb), ctx.v(f"{k}.seconds", f.seconds)
            gbs = ctx.v(f"{k}.usd_per_gb_s", f.usd_per_gb_s)
            usd = request_fee_usd(per_m, gb, secs, gbs)
            basis = ""
            if ctx.trace:
                basis = (f"{per_m:g} usd per 1M requests" if f.usd_per_million_requests
                         is not None else f"{gb:g} GB x {secs:g} s x {gbs:g} usd/GB-s")
            out.append((f"fee:{f.name}", usd * rpm, basis))
        return out

    def finetune(self, ctx: Inputs, ft_name: str | None) -> Any:
        """One-off fine-tune cost (retries included); with tracing, ``(usd, details)``."""
        if ft_name is None:
            return 0.0
        ck = ("ft", ft_name)
        if ck in ctx.cache:
            return ctx.cache[ck]
        ft = self.sc.finetune[ft_name]
        b = f"finetune.{ft_name}"
        tokens = ctx.v(f"{b}.training_tokens", ft.training_tokens) * ctx.v(f"{b}.epochs",
                                                                           ft.epochs)
        retry = ctx.v(f"{b}.retry_multiplier", ft.retry_multiplier)
        if ft.method == "api":
            row = self.cat.api(ft.base_model)
            price = ctx.v(f"{b}.ft_train_usd_per_mtok", ft.ft_train_usd_per_mtok,
                          row.get("ft_train_usd_per_mtok"))
            if price is None:
                raise PlannerError(
                    f"fine-tune: API offering {ft.base_model!r} has no fine-tuning price in the "
                    "catalog; set ft_train_usd_per_mtok"
                )
            once = tr.finetune_api_run_usd(price, tokens)
            info = {"method": "api", "tokens_trained": tokens, "gpu_hours": 0.0, "gpus": 0,
                    "mem_gb": np.nan}
            if ctx.trace:  # the formula text needs numbers (sampled inputs are arrays)
                info["basis"] = (f"{price:g} usd/Mtok x {tokens:g} tokens x {retry:g} "
                                 "retries")
        else:
            llm = self.cat.llm(ft.base_model)
            if ft.accelerator is None:
                raise PlannerError(
                    f"fine-tune {ft.base_model!r}: method {ft.method} needs accelerator"
                )
            acc = self.cat.accelerator(ft.accelerator)
            factor = 1.0
            if ft.method == "lora":
                factor = ctx.v(f"{b}.lora_flops_factor", ft.lora_flops_factor,
                               tr.LORA_FLOPS_FACTOR)
            params_b = float(llm["params_b"])
            mem = float(tr.full_finetune_memory_gb(params_b) if ft.method == "full"
                        else tr.lora_memory_gb(params_b))
            gpus = ft.gpus or int(np.ceil(mem / (0.9 * float(acc["mem_gb"]))))
            mfu = ctx.v(f"{b}.mfu", ft.mfu, 0.35)
            price = ctx.v(f"{b}.usd_per_gpu_hour", ft.usd_per_gpu_hour)
            if price is None:
                price = self.cheapest_gpu_hour(ft.accelerator, "on-demand")
            peak = float(acc["bf16_tflops"])
            once, hours = tr.finetune_gpu_run_usd(params_b, tokens, factor, gpus, peak, mfu,
                                                  price)
            flops = tr.training_flops(params_b, tokens, factor)
            info = {"method": ft.method, "tokens_trained": tokens,
                    "gpu_hours": hours * gpus * retry, "gpus": gpus, "mem_gb": mem}
            if ctx.trace:
                info["basis"] = (
                    f"{6 * factor:g} N D = {float(flops):.3g} FLOPs on {gpus} x "
                    f"{ft.accelerator} ({peak:g} TFLOPS, MFU {mfu:g}) = {float(hours):.3g} h x "
                    f"{price:g} usd/GPU-h x {retry:g}")
        extra = ctx.v(f"{b}.one_off_usd", ft.one_off_usd)
        usd = tr.finetune_one_off_usd(once, retry, extra)
        if ctx.trace and extra:
            info["basis"] += f" + {extra:g} usd one-off (engineering, data, evaluation)"
        out = (usd, {**info, "usd_single_run": once, "retry_multiplier": retry,
                     "one_off_usd": extra, "usd": usd}) if ctx.trace else usd
        ctx.cache[ck] = out
        return out

    def cheapest_gpu_hour(self, accelerator: str, plan: str) -> float:
        """USD per GPU-hour of the cheapest catalog row of an accelerator and plan."""
        key = (accelerator, plan)
        if key not in self._cheapest_cache:
            best = self.cat.cheapest_cloud(accelerator, plan, required=True)
            self._cheapest_cache[key] = float(best["usd_per_gpu_hour"])
        return self._cheapest_cache[key]

    def _once(self, ctx: Inputs, o: OptionSpec, lines: list | None) -> Any:
        got = self.finetune(ctx, o.dep.fine_tune)
        if not ctx.trace:
            return got
        if o.dep.fine_tune is None:
            return 0.0
        usd, info = got
        lines.append(("", f"fine-tune {o.dep.fine_tune} (one-off / horizon)",
                      usd / self.horizon, info["basis"]))
        return usd

    # -- options ---------------------------------------------------------------------------
    def api_prices(self, ctx: Inputs, o: OptionSpec):
        """The API option's resolved prices (:func:`planner.costs.api.resolve_api_prices`)."""
        ck = ("api_prices", o.name)
        if ck not in ctx.cache:
            b = f"api.{o.name}"
            ctx.cache[ck] = resolve_api_prices(
                o.row, {k: ctx.v(f"{b}.{k}", getattr(o.dep, k)) for k in API_PRICE_FIELDS},
                fine_tuned=o.ft is not None, offering=o.dep.offering,
            )
        return ctx.cache[ck]

    def api_request_usd(self, ctx: Inputs, o: OptionSpec, cname: str) -> dict[str, Any]:
        """USD per LLM request of class ``cname`` on API option ``o``, by token component
        (:func:`planner.costs.api.api_cost_per_request`: cached input, batch share, calls,
        discount, gross margin). Request fees are apart: :meth:`fees` with ``rpm = 1``."""
        dep = o.dep
        b = f"api.{o.name}"
        prices = self.api_prices(ctx, o)
        discount = ctx.v(f"{b}.discount", dep.discount)
        margin = ctx.v(f"{b}.gross_margin", dep.gross_margin)
        _, isl, osl, cached, batch, calls = self.klass(ctx, cname, o.tokenizer)[:6]
        parts = api_cost_per_request(
            prices, isl, osl, cached_share=cached, batch_share=batch,
            calls_per_request=calls, discount=discount,
            gross_margin=margin if np.ndim(margin) == 0 else None,
        )
        if np.ndim(margin):  # sampled margin: applied element-wise (same formula)
            parts = {k: v * (1.0 - margin) for k, v in parts.items()}
        return parts

    def api(self, ctx: Inputs, o: OptionSpec) -> dict[str, Any]:
        """Monthly bill of an API option for the classes it serves."""
        dep = o.dep
        b = f"api.{o.name}"
        prices = self.api_prices(ctx, o)
        if ctx.record is not None:  # read even when the option serves no class
            ctx.v(f"{b}.discount", dep.discount)
            ctx.v(f"{b}.gross_margin", dep.gross_margin)
        lines: list | None = [] if ctx.trace else None
        monthly = tokens_usd = fees_usd = 0.0
        tokens = out_tokens = rpm_total = user_total = 0.0
        for cname in o.served:
            req, isl, osl, cached, batch, calls, user = self.klass(ctx, cname, o.tokenizer)
            parts = self.api_request_usd(ctx, o, cname)
            rpm, user_m = self._per_month(ctx, cname, req, user)
            if lines is None:
                # arrays of samples: the components' sum per request, then per month (two
                # passes where one product per component would take three each)
                per_req = 0.0
                for usd in parts.values():
                    per_req = _plus(per_req, usd)
                usd_m = per_req * rpm
                monthly = _plus(monthly, usd_m)
                tokens_usd = _plus(tokens_usd, usd_m)
            for comp, usd in (parts.items() if lines is not None else ()):
                usd_m = float(np.asarray(usd)) * rpm
                if usd_m == 0.0:
                    continue
                lines.append((cname, comp, usd_m,
                              _api_basis(comp, prices, cached, batch, isl, osl, rpm)))
                monthly = _plus(monthly, usd_m)
                tokens_usd = _plus(tokens_usd, usd_m)
            for comp, usd_m, basis in self.fees(ctx, dep, b, rpm):
                if lines is not None:
                    lines.append((cname, comp, usd_m, basis))
                monthly = _plus(monthly, usd_m)
                fees_usd = _plus(fees_usd, usd_m)
            tokens = _plus(tokens, rpm * (isl + osl))
            rpm_total = _plus(rpm_total, rpm)
            if not ctx.lean:
                out_tokens = _plus(out_tokens, rpm * osl)
                user_total = _plus(user_total, user_m)
        if ctx.lean:
            out_tokens = user_total = None
        once = self._once(ctx, o, lines)
        monthly = _plus(monthly, once / self.horizon)
        return {"monthly": monthly, "once": once, "tokens": tokens, "out_tokens": out_tokens,
                "rpm": rpm_total, "user_rpm": user_total, "api_tokens_usd": tokens_usd,
                "fees_usd": fees_usd, "serves": True, "lines": lines}

    def load(self, ctx: Inputs, o: OptionSpec):
        """Per-class load terms (replica-equivalents); shared by options with the same classes,
        tokenizer and capacity (e.g. the same model rented and bought)."""
        ck = ("load", o.tokenizer, o.served, o.periods,
              tuple((o.capacity[c][0], id(o.capacity[c][1])) for c in o.served),
              o.dep.capacity_requests_per_s is None)
        if ck not in ctx.cache or any(o.capacity[c][0] == "key" for c in o.served):
            ctx.cache[ck] = self._load_terms(ctx, o)
        return ctx.cache[ck]

    def rps(self, ctx: Inputs, o: OptionSpec, cname: str) -> Any:
        """Requests/s one replica of ``o`` sustains for class ``cname``."""
        how, cap = o.capacity[cname]
        if how == "value":
            return cap
        if how == "key":
            return ctx.v(cap, o.dep.capacity_requests_per_s)
        ck = ("rps", id(cap), cname, o.tokenizer)
        if ck not in ctx.cache:  # one interpolation per grid and class per evaluation
            # grids on the same nodes (one model rented and bought, other pool sizes) share
            # the cells the samples fall in
            lk = ("cells", cap.nodes_key, cname, o.tokenizer)
            if lk not in ctx.cache:
                _, isl, osl = self.klass(ctx, cname, o.tokenizer)[:3]
                ctx.cache[lk] = cap.locate(isl, osl)
            ctx.cache[ck] = cap.interpolate(ctx.cache[lk])
        return ctx.cache[ck]

    def _per_month(self, ctx: Inputs, cname: str, req: Any, user: Any) -> tuple[Any, Any]:
        """(LLM requests, user requests) per month of class ``cname``: the same for every
        tokenizer (``req`` and ``user`` of :meth:`klass` do not depend on it), so worked out
        once per evaluation for the API and the self-hosted options."""
        ck = ("per month", cname)
        got = ctx.cache.get(ck)
        if got is None:
            got = ctx.cache[ck] = (req * self.hpm / 24.0,
                                   None if ctx.lean else user * self.hpm / 24.0)
        return got

    def _profile(self, cname: str, periods: int) -> tuple[float, np.ndarray, Any]:
        """(days in the class's profile, its hourly weights over ``periods`` hours, their
        mean): fixed by the scenario, so worked out once per model."""
        key = (cname, periods)
        got = self._profiles.get(key)
        if got is None:
            w = diurnal_weights(self.sc.workload[cname].diurnal)
            wt = np.array(tile_profile(w, periods), dtype=float)
            wt.setflags(write=False)  # shared by every evaluation
            got = self._profiles[key] = (w.size / 24, wt, wt.mean())
        return got

    def _load_terms(self, ctx: Inputs, o: OptionSpec):
        coefs, consts, weights, classes = [], 0.0, [], []
        mean_load = 0.0
        for cname in o.served:
            req, isl, osl, _, batch = self.klass(ctx, cname, o.tokenizer)[:5]
            rps = self.rps(ctx, o, cname)
            days, wt, wt_mean = self._profile(cname, o.periods)
            # requests in one profile period / 24 h ... per the profile (x 1 for a day)
            rate_day = _times(days, req)
            a = _times(1.0 - batch, rate_day) / 3600.0 / rps
            flat = rate_day * wt_mean / 3600.0
            consts = _plus(consts, batch * flat / rps)
            coefs.append(a)
            weights.append(wt)
            classes.append((req, rate_day, wt, batch, rps))
            mean_load = _plus(mean_load, req / 86400.0 / rps)
        return coefs, consts, np.array(weights), mean_load, classes

    def peak(self, ctx: Inputs, o: OptionSpec) -> Any:
        """Peak-hour load of ``o`` in replica-equivalents (:func:`volumes.peak_load`)."""
        coefs, const, weights, mean_load, _ = self.load(ctx, o)
        ck = ("peak", id(coefs))
        if ck in ctx.cache and ctx.cache[ck][0] is coefs:
            return ctx.cache[ck][1]
        peak = peak_load(coefs, const, weights, mean_load, self.sc.planning.peak_to_average)
        ctx.cache[ck] = (coefs, peak)
        return peak

    def replicas(self, ctx: Inputs, o: OptionSpec) -> tuple[Any, Any, Any]:
        """(replicas, serves, peak load): sized from the peak, bounded by the fleet; ``serves``
        is False where the fleet cannot carry the peak load."""
        plan = self.sc.planning
        peak = self.peak(ctx, o)
        dep = o.dep
        if dep.replicas is not None:
            reps = float(dep.replicas)
        else:
            reps = sh.replicas_needed(peak, plan.utilisation_target, plan.ha_reserve_replicas)
            if o.pool_size > 1 and o.pool_peak > 0:
                # the capacity pools the prefill wait over ``pool_size`` replicas (the size
                # the medians' peak needs): a load needs that pool, scaled with the load
                pooled = np.ceil(o.pool_size * np.asarray(peak) / o.pool_peak - 1e-9)
                reps = np.maximum(reps, pooled + plan.ha_reserve_replicas)
            if o.fleet_replicas is not None:
                reps = np.minimum(reps, o.fleet_replicas)
        if o.fleet_replicas is None:
            serves = True
        else:
            serves = np.asarray(peak) <= o.fleet_replicas * (1.0 + 1e-9)
            if np.ndim(serves) == 0:
                serves = bool(serves)
        return reps, serves, peak

    def _served_volumes(self, ctx: Inputs, o: OptionSpec) -> tuple[Any, Any, Any, Any]:
        """(LLM requests, user requests, tokens, output tokens) per month of the classes a
        self-hosted option serves; the same arrays for options serving the same classes in
        one tokenizer (one model rented and bought), worked out once per evaluation."""
        ck = ("served volumes", o.served, o.tokenizer)
        got = ctx.cache.get(ck)
        if got is not None:
            return got
        rpm_total = tokens = out_tokens = user_total = 0.0
        for cname in o.served:
            req, isl, osl = self.klass(ctx, cname, o.tokenizer)[:3]
            user = self.klass(ctx, cname, o.tokenizer)[6]
            rpm, user_m = self._per_month(ctx, cname, req, user)
            rpm_total = _plus(rpm_total, rpm)
            tokens = _plus(tokens, rpm * (isl + osl))
            if not ctx.lean:
                user_total = _plus(user_total, user_m)
                out_tokens = _plus(out_tokens, rpm * osl)
        if ctx.lean:
            user_total = out_tokens = None
        got = ctx.cache[ck] = (rpm_total, user_total, tokens, out_tokens)
        return got

    def selfhosted(self, ctx: Inputs, o: OptionSpec) -> dict[str, Any]:
        """Monthly cost of a self-hosted option (cloud or on-prem) for the classes it serves."""
        dep = o.dep
        b = f"{o.kind}.{o.name}"
        coefs, const, weights, mean_load, classes = self.load(ctx, o)
        replicas, serves, peak = self.replicas(ctx, o)
        rpm_total, user_total, tokens, out_tokens = self._served_volumes(ctx, o)
        lines: list | None = [] if ctx.trace else None
        if o.kind == "cloud":
            units, gpus_paid, monthly, parts = self.cloud(ctx, o, replicas, classes, lines)
        else:
            units, gpus_paid, monthly, parts = self.onprem(ctx, o, replicas, mean_load, lines)
        fees_usd = 0.0
        for comp, usd_m, basis in self.fees(ctx, dep, b, rpm_total):
            if lines is not None:
                lines.append(("", comp, usd_m, basis))
            monthly = _plus(monthly, usd_m)
            fees_usd = _plus(fees_usd, usd_m)
        once = self._once(ctx, o, lines)
        monthly = _plus(monthly, once / self.horizon)
        util = parts.get("utilisation")  # on-prem: worked out for its power draw
        if util is None and not ctx.lean:
            safe = np.where(np.asarray(gpus_paid) > 0, gpus_paid, 1.0)
            util = np.where(np.asarray(gpus_paid) > 0, mean_load * dep.gpus_per_replica / safe,
                            0.0)
        return {"monthly": monthly, "once": once, "tokens": tokens, "out_tokens": out_tokens,
                "rpm": rpm_total, "user_rpm": user_total, "replicas": replicas,
                "units": units, "gpus": gpus_paid, "utilisation": util, "fees_usd": fees_usd,
                "serves": serves, "peak_load": peak, "mean_load": mean_load, "lines": lines,
                **parts}

    def cloud_instance_usd_per_hour(self, ctx: Inputs, o: OptionSpec) -> tuple[Any, Any]:
        """(USD per instance-hour before the spot factor, spot factor) of a cloud option."""
        dep, p = o.dep, o.price
        b = f"cloud.{o.name}"
        if p.how == "instance":
            price = ctx.v(f"{b}.usd_per_instance_hour", dep.usd_per_instance_hour)
        elif p.how == "gpu":
            price = ctx.v(f"{b}.usd_per_gpu_hour", dep.usd_per_gpu_hour) * p.gpus_per_instance
        else:
            price = p.catalog_usd
        factor = 1.0
        if p.plan == "spot":
            ov = ctx.v(f"{b}.interruption_overhead", dep.interruption_overhead,
                       (o.offer or {}).get("interruption_overhead") or 0.0)
            factor = sh.spot_factor(ov)
        return price, factor

    def cloud(self, ctx: Inputs, o: OptionSpec, replicas, classes, lines):
        """Rental of a cloud option by its billing mode."""
        dep, offer, p = o.dep, o.offer, o.price
        b = f"cloud.{o.name}"
        price_inst, factor = self.cloud_instance_usd_per_hour(ctx, o)
        gpi = p.gpus_per_instance
        units, gpus_paid = sh.pack(replicas, dep.gpus_per_replica, gpi)
        days = self.hpm / 24.0
        if dep.billing == "always-on":
            hours = units * self.hpm
            basis = "" if lines is None else f"{units:g} instances x {self.hpm:g} h/month"
        elif dep.billing == "active-window":
            hours = units * dep.active_hours_per_day * days
            basis = "" if lines is None else (
                f"{units:g} instances x {dep.active_hours_per_day:g} h/day x {days:.4g} days")
        else:
            startup = ctx.v(f"{b}.startup_s", dep.startup_s, (offer or {}).get("startup_s") or 0.0)
            minb = ctx.v(f"{b}.min_billing_s", dep.min_billing_s,
                         (offer or {}).get("min_billing_s") or 0.0)
            idle = ctx.v(f"{b}.idle_timeout_s", dep.idle_timeout_s)
            hourly_load = 0.0
            hourly_rps = 0.0
            for _req, rate_day, wt, batch, rps in classes:
                raw = _col(rate_day) * wt / 3600.0
                mix = (1.0 - _col(batch)) * raw + _col(batch) * raw.mean(axis=-1, keepdims=True)
                hourly_load = hourly_load + mix / _col(rps)
                hourly_rps = hourly_rps + mix
            hourly_load = np.atleast_2d(np.broadcast_to(hourly_load, (1, o.periods))
                                        if np.ndim(hourly_load) == 0 else hourly_load)
            hourly_rps = np.atleast_2d(np.broadcast_to(hourly_rps, (1, o.periods))
                                       if np.ndim(hourly_rps) == 0 else hourly_rps)
            per_period = sh.scale_to_zero_hours_rows(
                hourly_load, hourly_rps, replicas_cap=np.maximum(replicas, 1.0),
                idle_timeout_s=idle, startup_s=startup, min_billing_s=minb,
            )
            rep = np.asarray(replicas, dtype=float)
            inst = np.where(rep > 0, units / np.where(rep > 0, rep, 1.0), 1.0)
            hours = per_period * inst * days * 24.0 / o.periods
            if np.ndim(hours) == 1 and hours.size == 1:
                hours = hours[0]
            basis = "" if lines is None else (
                f"scale-to-zero: busy time + idle gaps > {idle:g} s "
                f"(start-up {startup:g} s, min billing {minb:g} s) = {float(hours):.4g} "
                "instance-h/month")
        usd = hours * price_inst * factor
        if dep.committed and self.sc.planning.lens == "marginal":
            usd = np.zeros(np.shape(usd)) if np.ndim(usd) else 0.0
            if lines is not None:
                lines.append(("", "gpu rental (committed, excluded: marginal lens)", 0.0, basis))
        elif lines is not None:
            src = p.basis
            if p.plan == "spot":
                ov = ctx.v(f"{b}.interruption_overhead", dep.interruption_overhead,
                           (offer or {}).get("interruption_overhead") or 0.0)
                src += f", spot x 1/(1 - {ov:g} interruption overhead)"
            lines.append(("", "gpu rental", float(usd),
                          f"{basis} x {price_inst:.4g} usd/instance-h ({src})"))
        return units, gpus_paid, usd, {"rental_usd": usd, "usd_per_instance_hour": price_inst,
                                       "spot_factor": factor}

    def onprem_inputs(self, ctx: Inputs, o: OptionSpec) -> dict[str, Any]:
        """An on-prem option's cost inputs, scenario values over catalog fall-backs: the one
        place server price, life, maintenance, power (TDP, base and idle W), PUE, electricity,
        facilities, staff and implementation are assembled (every engine prices on-prem from
        these)."""
        dep, server, acc_row = o.dep, o.server, o.acc_row
        b = f"onprem.{o.name}"
        price = ctx.v(f"{b}.server_price_usd", dep.server_price_usd,
                      (server or {}).get("server_price_usd"))
        if price is None:
            raise PlannerError(
                f"onprem.{o.name}: no server price; set server (a servers.csv id) or "
                "server_price_usd"
            )
        tdp = ctx.v(f"{b}.gpu_tdp_w", dep.gpu_tdp_w, acc_row.get("tdp_w"))
        base_w = ctx.v(f"{b}.server_base_w", dep.server_base_w,
                       (server or {}).get("server_base_w"))
        if tdp is None or base_w is None:
            missing = "gpu_tdp_w" if tdp is None else "server_base_w"
            raise PlannerError(
                f"onprem.{o.name}: the catalog has no {missing.replace('_', ' ')} for this "
                f"hardware; set {missing} in the scenario"
            )
        return {
            "gps": o.gpus_per_unit, "price": price,
            "price_source": ("scenario server_price_usd" if dep.server_price_usd is not None
                             else f"servers.csv {(server or {}).get('id')}"),
            "years": ctx.v(f"{b}.amortisation_years", dep.amortisation_years,
                           (server or {}).get("life_years") or DEFAULT_LIFE_YEARS),
            "maint": ctx.v(f"{b}.maintenance_share_per_year", dep.maintenance_share_per_year,
                           (server or {}).get("maintenance_share_per_year") or 0.0),
            "tdp": tdp, "base_w": base_w,
            "idle": ctx.v(f"{b}.gpu_idle_power_share", dep.gpu_idle_power_share),
            "pue": ctx.v(f"{b}.pue", dep.pue),
            "kwh": ctx.v(f"{b}.electricity_usd_per_kwh", dep.electricity_usd_per_kwh),
            "residual": ctx.v(f"{b}.residual_share", dep.residual_share),
            "coc": ctx.v(f"{b}.cost_of_capital", dep.cost_of_capital),
            "facilities": ctx.v(f"{b}.facilities_usd_per_server_year",
                                dep.facilities_usd_per_server_year),
            "ops": ctx.v(f"{b}.ops_usd_per_year", dep.ops_usd_per_year),
            "impl": ctx.v(f"{b}.implementation_usd", dep.implementation_usd),
            # the marginal lens leaves out capex and implementation of committed hardware
            "capex": not (self.sc.planning.lens == "marginal" and dep.committed),
        }

    def onprem(self, ctx: Inputs, o: OptionSpec, replicas, mean_load, lines, *, units=None):
        """Ownership cost of an on-prem option (capex, maintenance, energy, staff ...).

        ``units`` overrides the servers (default: the fixed ``servers``, else the replicas
        packed into whole servers)."""
        dep = o.dep
        p = self.onprem_inputs(ctx, o)
        gps = p["gps"]
        if units is not None:
            gpus_paid = units * gps
        elif dep.servers is not None:
            units = float(dep.servers)
            gpus_paid = units * gps
        else:
            units, gpus_paid = sh.pack(replicas, dep.gpus_per_replica, gps)
        gp = np.asarray(gpus_paid, dtype=float)
        util = np.where(gp > 0, mean_load * dep.gpus_per_replica / np.where(gp > 0, gp, 1.0),
                        0.0)
        power = sh.server_power_w(p["base_w"], gps, p["tdp"], util, p["idle"])
        parts = sh.onprem_costs_usd_per_month(
            units, p["price"], p["years"], residual_share=p["residual"],
            cost_of_capital_per_year=p["coc"], maintenance_share_per_year=p["maint"],
            power_w=power, pue=p["pue"], usd_per_kwh=p["kwh"], hours_per_month=self.hpm,
            facilities_usd_per_server_year=p["facilities"], ops_usd_per_year=p["ops"],
            implementation_usd=p["impl"], horizon_months=self.horizon,
            include_capex=p["capex"],
        )
        total = 0.0
        for v in parts.values():
            total = _plus(total, v)
        if lines is not None:
            _onprem_lines(lines, parts, units=float(units), price=p["price"], years=p["years"],
                          coc=p["coc"], residual=p["residual"], marginal=not p["capex"],
                          horizon=self.horizon, maint_share=p["maint"], power=float(power),
                          base_w=p["base_w"], gps=gps, tdp=p["tdp"], util=float(util),
                          pue=p["pue"], kwh=p["kwh"], impl=p["impl"], psrc=p["price_source"])
        extra = {f"onprem_{k}_usd": v for k, v in parts.items()}
        extra["utilisation"] = util
        idle_w = sh.server_power_w(p["base_w"], gps, p["tdp"], 0.0, p["idle"])
        extra.update({
            "server_price_usd": p["price"], "life_years": p["years"],
            "residual_share": p["residual"], "maintenance_share_per_year": p["maint"],
            "facilities_usd_per_server_year": p["facilities"],
            "idle_server_energy_usd": None if ctx.lean else sh.energy_usd_per_month(
                idle_w, 1.0, p["pue"], p["kwh"], self.hpm),
            "implementation_once_usd": p["impl"], "include_capex": p["capex"],
        })
        return units, gpus_paid, total, extra

    # -- evaluation ------------------------------------------------------------------------
    def evaluate_raw(self, ctx: Inputs, options: Sequence[str] | None = None
                     ) -> dict[str, dict[str, Any]]:
        """Price every option (or ``options``) for the values in ``ctx``."""
        out = {}
        # a sample whose lengths leave a replica no capacity costs inf (p_infeasible)
        with np.errstate(divide="ignore", invalid="ignore"):
            for o in self.options:
                if options is not None and o.name not in options:
                    continue
                out[o.name] = self.api(ctx, o) if o.kind == "api" else self.selfhosted(ctx, o)
        return out

    def comparable(self) -> list[str]:
        """Options that serve every workload class (those compared for 'cheapest')."""
        allc = tuple(self.sc.workload)
        full = [o.name for o in self.options if set(o.served) == set(allc) and o.served]
        if full:
            return full
        sets: dict[tuple, list[str]] = {}
        for o in self.options:
            if o.served:
                sets.setdefault(tuple(sorted(o.served)), []).append(o.name)
        return max(sets.values(), key=len) if sets else []


def _plus(a: Any, b: Any) -> Any:
    """``a + b`` where one side is the float ``0.0`` (an empty sum, or a cost component that
    is exactly zero) and the other an array of float64: the array itself, the same bits as the
    sum (``0.0 + x == x``; only a ``-0.0`` element would come back unsigned) without a pass
    over the samples and a temporary. Accumulators of the array evaluation start at ``0.0``;
    nothing modifies the arrays they hold in place."""
    if type(a) is float and a == 0.0 and type(b) is np.ndarray and b.dtype == np.float64:
        return b
    if type(b) is float and b == 0.0 and type(a) is np.ndarray and a.dtype == np.float64:
        return a
    return a + b


def _times(a: Any, b: Any) -> Any:
    """``a * b``; ``b`` itself where ``a`` is the number 1 (the same bits, without a pass)."""
    if type(a) is float and a == 1.0:
        return b
    return a * b


def _replicas_in_units(units: float, gpus_per_replica: int, gpus_per_unit: int) -> float:
    """Whole replicas ``units`` instances/servers hold (a replica may span several units)."""
    if gpus_per_replica <= gpus_per_unit:
        return float(units * (gpus_per_unit // gpus_per_replica))
    per = -(-gpus_per_replica // gpus_per_unit)  # units per replica
    return float(units // per)


def _col(x: Any) -> Any:
    a = np.asarray(x, dtype=float)
    return a[:, None] if a.ndim == 1 else a


def _api_basis(comp: str, p, cached, batch, isl, osl, rpm: float) -> str:
    tok = {
        "input": f"(1 - {cached:g}) x {isl:.6g} input tok",
        "cached_input": f"{cached:g} x {isl:.6g} input tok (cached)",
        "output": f"{osl:.6g} output tok",
        "batch_input": f"{batch:g} batch share of {isl:.6g} input tok",
        "batch_output": f"{batch:g} batch share of {osl:.6g} output tok",
    }[comp]
    price = {
        "input": p.input_usd_per_mtok, "cached_input": p.cached_input_usd_per_mtok,
        "output": p.output_usd_per_mtok, "batch_input": p.batch_input_usd_per_mtok,
        "batch_output": p.batch_output_usd_per_mtok,
    }[comp]
    ptxt = f"{price:g} usd/Mtok" if price is not None else "list price"
    return f"{rpm:.6g} requests/month x {tok} x {ptxt}"


def _onprem_lines(lines: list, parts: Mapping[str, Any], *, units, price, years, coc,
                  residual, marginal, horizon, maint_share, power, base_w, gps, tdp, util,
                  pue, kwh, impl, psrc) -> None:
    how = f"annuity at {coc:g}/yr" if coc > 0 else "straight-line"
    if marginal:
        lines.append(("", "capex (committed, excluded: marginal lens)", 0.0, how))
    else:
        cycles = int(np.ceil(horizon / (12.0 * years) - 1e-9))
        lines.append(("", "capex", float(parts["capex"]),
                      f"{units:g} servers x {price:g} usd ({psrc}) over {years:g} years, {how}, "
                      f"residual {residual:g}; {cycles} purchase cycle(s) in the "
                      f"{horizon}-month horizon"))
    lines.append(("", "maintenance", float(parts["maintenance"]),
                  f"{maint_share:g} of capex per year"))
    lines.append(("", "energy", float(parts["energy"]),
                  f"{units:g} servers x {power:.0f} W (base {base_w:g} W + {gps} GPUs x "
                  f"{tdp:g} W at {util:.0%} utilisation) x PUE {pue:g} x {kwh:g} usd/kWh"))
    if parts["facilities"]:
        lines.append(("", "facilities", float(parts["facilities"]), "per server-year / 12"))
    if parts["operations"]:
        lines.append(("", "operations staff", float(parts["operations"]), "per year / 12"))
    if impl and not marginal:
        lines.append(("", "implementation (one-off / horizon)", float(parts["implementation"]),
                      f"{impl:g} usd over {horizon} months"))
