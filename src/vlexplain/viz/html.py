"""The shared look of the self-contained HTML reports (no torch: the evaluation report's module and
the command line's listing of benchmark kinds read it). Explanations' HTML is ``viz.save.explanation_html``."""

from __future__ import annotations

__all__ = ["REPORT_CSS"]

#: the shared look of the self-contained HTML reports (evaluation runs, DEAL before / after)
REPORT_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.sub{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f6}td.l,th.l{text-align:left}
pre{background:#f6f8fa;padding:10px;font-size:12px;overflow-x:auto;border-radius:4px}
"""
