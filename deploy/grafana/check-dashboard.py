#!/usr/bin/env python3
"""Checks deploy/grafana/drfm-dashboard.json: valid JSON, a well-formed dashboard (uid, title,
unique panel ids, panels inside the 24-column grid, a query on every panel), every query valid
PromQL (with Grafana's variables substituted, checked by `promtool check rules` when promtool is
installed), and every metric API.md promises shown on some panel.

  python3 deploy/grafana/check-dashboard.py [DASHBOARD.json]
Exit status 1 with the problems listed when any check fails.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# API.md "Prometheus": the metrics the dashboard must show.
REQUIRED_METRICS = [
    "drfm_build_info", "drfm_jobs_submitted_total", "drfm_jobs_finished_total", "drfm_jobs",
    "drfm_job_queue_depth", "drfm_job_duration_seconds", "drfm_layer_phase_seconds",
    "drfm_predict_requests_total", "drfm_predict_latency_seconds", "drfm_predict_rows_total",
    "drfm_models_stored", "drfm_store_bytes", "grpc_server_handled_total",
    "grpc_server_handling_seconds",
]
# Grafana's variables, replaced by values of the right type before PromQL parsing.
VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": "drfm",
             "$instance": ".+", "${datasource}": "prometheus"}


def metric_names(expr):
    """Metric names in a PromQL expression, histogram suffixes stripped."""
    names = set()
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{|\[)", expr):
        names.add(re.sub(r"_(bucket|sum|count)$", "", m.group(1)))
    return names


def main(path):
    problems = []
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print(f"INVALID {path}: {e}")
        return 1
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in dash:
            problems.append(f"dashboard has no {key}")
    exprs = []
    ids = set()
    for p in dash.get("panels", []):
        pid = p.get("id")
        if pid in ids:
            problems.append(f"panel id {pid} used twice")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "xywh") or g["x"] < 0 or g["x"] + g["w"] > 24:
            problems.append(f"panel {pid} ({p.get('title')}): gridPos {g} outside the 24-column grid")
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        if not targets or not all(t.get("expr") for t in targets):
            problems.append(f"panel {pid} ({p.get('title')}): a query without expr")
        if not p.get("title"):
            problems.append(f"panel {pid}: no title")
        exprs += [(p.get("title"), t["expr"]) for t in targets if t.get("expr")]
    shown = set().union(*(metric_names(e) for _, e in exprs)) if exprs else set()
    for m in REQUIRED_METRICS:
        if re.sub(r"_(bucket|sum|count)$", "", m) not in shown:
            problems.append(f"no panel shows {m}")

    promtool = shutil.which("promtool")
    if promtool and exprs:
        rules = {"groups": [{"name": "dashboard", "rules": []}]}
        for i, (_, e) in enumerate(exprs):
            for var, value in VARIABLES.items():
                e = e.replace(var, value)
            rules["groups"][0]["rules"].append({"record": f"dashboard:query_{i}", "expr": e})
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            json.dump(rules, f)  # JSON is YAML
        try:
            r = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True,
                               timeout=60)
            if r.returncode != 0:
                problems.append("a query is not valid PromQL:\n" + r.stdout + r.stderr)
        finally:
            os.unlink(f.name)
    elif not promtool:
        print("check-dashboard: promtool not installed: PromQL syntax not checked")

    for p in problems:
        print(f"INVALID {path}: {p}")
    if not problems:
        print(f"ok      {path}: {len(dash['panels'])} panels, {len(exprs)} queries, "
              f"all {len(REQUIRED_METRICS)} API metrics shown")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "drfm-dashboard.json")))
