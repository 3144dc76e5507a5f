"""Per-sample fractions of records in ambient JSON files: python bench/_ambient_show.py FILE... [--grep S]"""
import json
import sys

files = [a for a in sys.argv[1:] if not a.startswith("--")]
pattern = sys.argv[sys.argv.index("--grep") + 1] if "--grep" in sys.argv else ""
for f in files:
    if f == pattern:
        continue
    for r in json.load(open(f))["records"]:
        if pattern not in r["method"] + r["design"]:
            continue
        est = " ".join(f"{x:.3f}" for x in r.get("fraction_est", []))
        true = " ".join(f"{x:.3f}" for x in r.get("fraction_true", []))
        print(f"{r['design']:10s} {r['seed']} {r['method']:36s} err {r.get('count_error', float('nan')):.3f} "
              f"leak {r.get('leakage', float('nan')):.3f} mae {r.get('fraction_mae', float('nan')):.3f} "
              f"mix {r.get('sample_mixing', float('nan')):.3f} | est {est} | true {true}")
