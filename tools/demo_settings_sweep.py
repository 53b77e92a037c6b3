"""Sweep sampler / schedule / steps / CFG on the demo model and let the judge score each setting.

    python tools/demo_settings_sweep.py [--model PATH] [--judge PATH] [--n 22] [--json OUT] [--setting JSON ...]

This is how the demo recipe's defaults, ranges and forbidden lists were chosen (a first, small calibration; the
evaluation protocol will do it properly). Settings run in permissive mode so every deviation is allowed and
recorded; accuracy is "all three attributes read correctly", per prompt group.
"""

from __future__ import annotations

import argparse
import json
import time

SETTINGS = [
    {},
    {"cfg": 1.0}, {"cfg": 1.5}, {"cfg": 2.0}, {"cfg": 4.0}, {"cfg": 5.0}, {"cfg": 7.0},
    {"steps": 6}, {"steps": 10}, {"steps": 30}, {"steps": 40},
    {"sampler": "euler"}, {"sampler": "euler_ancestral"}, {"sampler": "heun"}, {"sampler": "dpmpp_2m_sde"},
    {"sampler": "ddim", "schedule": "ddim_uniform"}, {"sampler": "uni_pc"}, {"sampler": "lcm"},
    {"schedule": "normal"}, {"schedule": "exponential"}, {"schedule": "simple"}, {"schedule": "beta"},
    {"schedule": "turbo", "steps": 4},
]


def main() -> None:
    """Run every setting and print a table (and JSON when asked)."""
    import iga
    from iga.demo.judge import load_judge
    from iga.guard import GuardRefused
    from iga.demo.score import score

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--judge", default=None)
    ap.add_argument("--n", type=int, default=22, help="images per prompt group")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--setting", action="append", default=None, metavar="JSON",
                    help='run only these settings, e.g. --setting \'{"steps": 15}\' (repeatable)')
    args = ap.parse_args()
    try:
        settings = [json.loads(s) for s in args.setting] if args.setting else SETTINGS
    except json.JSONDecodeError as e:
        ap.error(f"--setting must be a JSON object of request fields: {e}")
    if not all(isinstance(s, dict) for s in settings):
        ap.error('--setting must be a JSON object of request fields, e.g. {"cfg": 3}')
    model, judge = iga.load(args.model), load_judge(args.judge)
    rows = []
    for fields in settings:
        t = time.perf_counter()
        try:
            rep = score(model, judge, n_per_group=args.n, request=fields, mode="permissive")
        except GuardRefused as e:  # hard findings are refused even in permissive mode
            print(f"{json.dumps(fields):45} refused: {e.findings[0].reason[:90]}", flush=True)
            rows.append({"setting": fields, "refused": [f.reason for f in e.findings if f.outcome == "refused"]})
            continue
        g = rep["groups"]
        row = {"setting": fields or "recipe default", **{k: rep["settings"][k] for k in ("sampler", "schedule",
                                                                                         "steps", "cfg", "nfe")},
               "train_all": g["train"]["accuracy"]["all"], "held_out_all": g["held_out"]["accuracy"]["all"],
               "train": g["train"]["accuracy"], "held_out": g["held_out"]["accuracy"],
               "frechet_train": g["train"]["frechet"], "seconds": round(time.perf_counter() - t, 1)}
        rows.append(row)
        print(f"{json.dumps(row['setting']):45} {row['sampler']:>16} {row['schedule']:>12} {row['steps']:>3} "
              f"cfg {row['cfg']:<4g} all-3 train {row['train_all']:.2f} held-out {row['held_out_all']:.2f} "
              f"(shape {row['train']['shape']:.2f}/{row['held_out']['shape']:.2f}) "
              f"FD {row['frechet_train']:.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
