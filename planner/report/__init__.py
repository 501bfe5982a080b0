"""Reports for architecture reviews: one self-contained HTML page with charts and tables.

``build_report(scenario, out_dir=...)`` runs the engines that exist, writes
``report.html`` (Vega/Vega-Lite/Vega-Embed inlined: works offline), ``charts/NAME.png|svg``
and ``tables/NAME.csv``. Sections of engines that are not available are omitted with a note.
"""

from planner.report.build import ReportResult, build_report, section_keys
from planner.report.providers import SectionUnavailable

__all__ = ["ReportResult", "SectionUnavailable", "build_report", "section_keys"]
