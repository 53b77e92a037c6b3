"""iga.evaluation: the reproducibility protocol, its one sweep runner, metrics, failure detectors and reports.

    from iga.evaluation import load_spec, parse_spec, run_experiment
    spec = parse_spec({"vary": {"sampler": ["euler", "heun"]}, "prompts": "demo:all:4", "seeds": 2})
    result = run_experiment(spec, Path("runs/samplers"))

Every sweep in iga (eval, the headline experiment, calibration) runs on ``runner.run_points``.
"""

from .axes import AXES, PROTOCOL_AXES, SpecError
from .experiment import RunResult, run_experiment
from .spec import ExperimentSpec, load_spec, parse_spec

__all__ = ["AXES", "PROTOCOL_AXES", "ExperimentSpec", "RunResult", "SpecError", "load_spec", "parse_spec",
           "run_experiment"]
