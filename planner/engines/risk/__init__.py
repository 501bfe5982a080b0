"""Monte Carlo risk engine: the one model (:mod:`planner.model`) at N samples of the inputs.

Any numeric field of a scenario may hold a distribution (:mod:`planner.distributions`). This
engine collects them all by dotted key path (``workload.chat.requests_per_day``,
``api.gpt-4o.input_usd_per_mtok`` ...; :mod:`planner.uncertain`), draws them together
(optionally rank-correlated through a Gaussian copula) and prices every option per sample with
one numpy expression per formula. The deterministic engine is the same model at N=1.

One job per module (import each from its module; this package's ``__init__`` imports nothing):

==================  ===========================================================================
``sampling``        the :class:`~planner.engines.risk.sampling.Sampler` of the inputs, the
                    correlations (copula groups) and the seeding of chunks (``CHUNK_SIZE``,
                    ``root_seed``, ``chunk_generator``, ``chunk_sizes``)
``compiled``        ``CompiledScenario``: the model built with the uncertain inputs, plus their
                    sampler; ``compile_scenario``
``run``             ``run_montecarlo`` (chunks on threads, convergence check) and its
                    ``RiskResults``
``stats``           ``tail_stats`` (P5/P50/P95, standard errors, CVaR95 via
                    :func:`planner.stats.cvar`), ``summarise``, ``win_probability``,
                    ``convergence_rows``; ``CostColumns``, what a run keeps of its samples
``tornado``         which input drives the answer: ``tornado``, rank correlations, break-even
                    volumes
``multiyear``       ``run_multiyear``: year-by-year cash and net present cost under sampled
                    price and traffic trends
``replications``    ``simulation_replications``: SimPy runs over a subset of the samples
``report``          ``report_tables``: the HTML report's risk section (both engines)
==================  ===========================================================================

Imports flow one way: ``sampling -> compiled -> stats, tornado -> run -> replications``;
``multiyear`` uses ``sampling``, ``compiled`` and ``stats``; ``report`` uses ``run`` and
``multiyear``. :mod:`planner.sweep` runs the same chunks on Dask from ``sampling``,
``compiled`` and ``stats``.
"""
