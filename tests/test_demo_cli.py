"""`iga demo train`: judge-only and model-only runs write their files and print a summary."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

pytest.importorskip("torch")

from iga.commands.demo import register  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def app():
    a = typer.Typer()
    register(a)

    @a.command()
    def _noop() -> None:  # keeps typer from collapsing the single group into the root command
        pass

    return a


def test_judge_only_trains_and_exports_just_the_judge(app, tmp_path):
    res = CliRunner().invoke(app, ["demo", "train", "--judge-only", "--judge-steps", "3", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "judge accuracy" in res.output
    assert (tmp_path / "iga-demo-judge-v1.safetensors").is_file()
    assert not (tmp_path / "iga-demo-v1.safetensors").exists() and not (tmp_path / "ckpt").exists()


def test_model_only_trains_steps_exports_and_resumes(app, tmp_path):
    args = ["demo", "train", "--model-only", "--batch", "2", "--out", str(tmp_path)]
    res = CliRunner().invoke(app, [*args, "--steps", "1"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    assert summary["stages"][0]["steps"] == 1 and (tmp_path / "iga-demo-v1.safetensors").is_file()
    assert not (tmp_path / "iga-demo-judge-v1.safetensors").exists()
    res2 = CliRunner().invoke(app, [*args, "--steps", "2"])  # resumes by default
    assert json.loads(res2.output[res2.output.index("{"):])["stages"][0]["steps"] == 2


def test_judge_only_with_model_only_is_refused(app, tmp_path):
    res = CliRunner().invoke(app, ["demo", "train", "--judge-only", "--model-only", "--out", str(tmp_path)])
    assert res.exit_code == 2
