"""Start-up cost of YAML skeletons: what the schema check (jsonschema) adds to a fresh process.

Each case runs in a fresh interpreter (import costs are per process) and times, in milliseconds:

* ``models_startup``: importing what ``openpose-train models`` needs (registry, skeleton, models_cli);
  jsonschema is not imported there (docs/architecture.md §Import rules);
* ``load_skeleton``: the first ``load_skeleton_yaml`` of ``generator/example_skeleton.yaml`` after those
  imports (reading, the duplicate-key loader, jsonschema's import and check, the meaning checks).

The floor of ``load_skeleton`` is the bare read of the same file with ``yaml.safe_load`` in the same kind
of fresh process; the baseline of ``models_startup`` is ``import yaml`` alone. Runs are interleaved and
the medians reported.

    python benchmarks/skeleton_load.py [--runs N]
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "generator" / "example_skeleton.yaml"

PROBES = {
    "models_startup": ("import time; t = time.perf_counter(); import openpose_train.generator.registry, "
                       "openpose_train.generator.skeleton, openpose_train.generator.models_cli; "
                       "print((time.perf_counter() - t) * 1e3)"),
    "yaml_import": "import time; t = time.perf_counter(); import yaml; print((time.perf_counter() - t) * 1e3)",
    "load_skeleton": ("import time, openpose_train.generator.models_cli; "
                      "from openpose_train.generator.registry import load_skeleton_yaml; t = time.perf_counter(); "
                      f"load_skeleton_yaml({str(EXAMPLE)!r}); print((time.perf_counter() - t) * 1e3)"),
    "safe_load": ("import time, yaml, openpose_train.generator.models_cli; t = time.perf_counter(); "
                  f"yaml.safe_load(open({str(EXAMPLE)!r}).read()); print((time.perf_counter() - t) * 1e3)"),
}


def probe(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    times = {name: [] for name in PROBES}
    for _ in range(args.runs):            # interleaved: a busy machine slows every case alike
        for name, code in PROBES.items():
            times[name].append(probe(code))
    med = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({"bench": "skeleton_load", "case": "models_startup", "value": round(med["models_startup"], 2),
                      "unit": "ms", "baseline": round(med["yaml_import"], 2), "baseline_name": "import yaml alone",
                      "jsonschema_imported": False, "runs": args.runs}))
    print(json.dumps({"bench": "skeleton_load", "case": "load_skeleton", "value": round(med["load_skeleton"], 2),
                      "unit": "ms", "baseline": None, "baseline_name": "",
                      "floor_ms": round(med["safe_load"], 2),
                      "floor": "yaml.safe_load of the same file in a fresh process",
                      "ratio_to_floor": round(med["load_skeleton"] / med["safe_load"], 2), "runs": args.runs}))


if __name__ == "__main__":
    main()
