"""The entry points' convention (``common.cli``): ``--help`` works, user errors are one line and exit 2, Ctrl-C says
how to resume, ``--out`` never clobbers another run, and TensorFlow's start-up says nothing."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import common.cli as cli
from BNN import diagnostics as bnn_diagnostics
from BNN import train as bnn_train
from common.config import build_parser, option, parse_config, with_preset
from common.errors import UserError
from common.runs import RUN_FILE, make_run_dir
from common.training import RunState, TrainingInterrupted, fit_with_early_stopping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("BNN.train", "VAE.train", "VAEAC.train", "CLUE.generate", "CLUE.evaluate", "CLUE.demo", "weights.download",
           "weights.manifest")
NOISE = re.compile(r"cuInit|oneDNN|absl::InitializeLog|cudart_stub|cpu_feature_guard|Sharding callback")


def _env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no TF_CPP_MIN_LOG_LEVEL (the scripts must quiet TensorFlow themselves)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", cli.DEBUG_ENV)}
    return {**env, **extra}


def _python(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
                          env=_env(**env))


def _cli(main, config_cls, presets, argv, capsys, prog="python -m BNN.train") -> tuple[int, str]:
    """Runs a script's command line in this process: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exited:
        cli.run_script(main, config_cls, presets, prog=prog, argv=argv, resumable=True)
    return exited.value.code, capsys.readouterr().err


def _bnn(argv, capsys) -> tuple[int, str]:
    return _cli(bnn_train.main, bnn_train.Config, bnn_train.PRESETS, argv, capsys)


# ------------------------------------------------------------------------------------------------- subprocesses
# One interpreter runs every script's --help as `python -m` would (runpy), so TensorFlow is imported once.
HELP_ALL = """
import contextlib, io, json, runpy, sys, warnings
warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported already by an earlier script
results = {}
for module in sys.argv[1:]:
    sys.argv = [module, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = None
        except SystemExit as exit:
            code = exit.code
    results[module] = [code, out.getvalue()]
print(json.dumps(results))
"""


def test_every_script_has_a_working_help():
    result = _python("-c", HELP_ALL, *SCRIPTS, COLUMNS="100")
    assert result.returncode == 0, result.stderr[-3000:]
    helps = json.loads(result.stdout.strip().splitlines()[-1])
    for module in SCRIPTS:
        code, text = helps[module]
        assert code in (0, None), (module, code)
        assert text.startswith(f"usage: python -m {module} "), (module, text[:200])
    # Each preset is described on its own line; a literal % in a help text does not break argparse.
    assert re.search(r"^\s+tiny: seconds, for tests: digits", helps["BNN.train"][1], re.M)
    assert re.search(r"^\s+expvae_tiny: ", helps["VAE.train"][1], re.M)
    assert "--overwrite" in helps["BNN.train"][1] and "--debug" in helps["CLUE.generate"][1]


def test_a_failed_start_leaves_nothing_and_the_corrected_command_runs_quietly(tmp_path):
    out = tmp_path / "run"
    bad = _python("-m", "BNN.train", "--dataset", "foo", "--preset", "tiny", "--out", str(out))
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("error: unknown dataset 'foo'; choose one of"), bad.stderr
    assert "Traceback" not in bad.stderr
    assert not out.exists()  # nothing was written: the corrected command is not refused
    good = _python("-m", "BNN.train", "--preset", "tiny", "--out", str(out))
    assert good.returncode == 0, good.stderr[-3000:]
    assert (out / "metrics.json").exists() and json.loads((out / RUN_FILE).read_text())["kind"] == "BNN.train"
    noise = [line for line in good.stderr.splitlines() if NOISE.search(line)]
    assert not noise, noise  # TensorFlow's start-up (absl, CUDA, CPU features) and absl INFO lines are filtered


def test_debug_shows_the_traceback():
    missing = "/nonexistent/manifest.json"
    plain = _python("-m", "weights.manifest", "--manifest", missing)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [f"error: cannot read the manifest {missing}: No such file or "
                                                 f"directory; pass --manifest FILE"]
    debug = _python("-m", "weights.manifest", "--manifest", missing, **{cli.DEBUG_ENV: "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "UserError" in debug.stderr


# ------------------------------------------------------------------------------------------------- in-process
def test_user_errors_print_one_line_and_debug_reraises(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    code, err = _bnn(["--dataset", "foo", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and err.startswith("error: unknown dataset 'foo'") and err.count("\n") == 1
    with pytest.raises(UserError, match="unknown dataset 'foo'"):
        cli.run_script(bnn_train.main, bnn_train.Config, bnn_train.PRESETS, prog="p",
                       argv=["--dataset", "foo", "--out", str(tmp_path / "x"), "--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(UserError, match="unknown --strategy"):
        cli.run_script(bnn_train.main, bnn_train.Config, bnn_train.PRESETS, prog="p", argv=["--strategy", "x"])
    with pytest.raises(SystemExit) as exited:  # a bad flag stays argparse's business: usage, status 2
        cli.run_script(bnn_train.main, bnn_train.Config, bnn_train.PRESETS, prog="python -m BNN.train",
                       argv=["--no-such-flag"])
    assert exited.value.code == 2 and "usage: python -m BNN.train" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_out_is_refused_when_it_holds_another_kind_of_run_or_unrelated_files(tmp_path, capsys, caplog):
    other = tmp_path / "vae_run"
    make_run_dir(other, {"dataset": "digits", "seed": 0, "out": str(other)}, kind="VAE.train")
    (other / "metrics.csv").write_text("epoch\n0\n")
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    code, err = _bnn(["--preset", "tiny", "--out", str(other)], capsys)
    assert code == 2 and "holds a VAE.train run" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before  # left as it was

    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "todo.txt").write_text("keep me")
    code, err = _bnn(["--preset", "tiny", "--out", str(unrelated)], capsys)
    assert code == 2 and "holds no run of this project" in err
    assert [p.name for p in unrelated.iterdir()] == ["todo.txt"]

    # --overwrite: the other kind's run is deleted and replaced by a fresh one
    code, err = _bnn(["--preset", "tiny", "--n-epochs", "3", "--out", str(other), "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((other / RUN_FILE).read_text())["kind"] == "BNN.train"
    assert len((other / "metrics.csv").read_text().strip().splitlines()) == 1 + 3
    # the same kind with other settings is refused; --overwrite starts afresh; resume-safe settings may differ
    code, err = _bnn(["--preset", "tiny", "--n-epochs", "3", "--lr", "0.02", "--out", str(other)], capsys)
    assert code == 2 and "other settings (lr: 0.01 -> 0.02)" in err
    with caplog.at_level(logging.INFO, logger="BNN.chains"):
        code, err = _bnn(["--preset", "tiny", "--n-epochs", "4", "--out", str(other)], capsys)
    assert code == 0, err
    assert any("resumed from" in r.getMessage() and "at epoch 3" in r.getMessage() for r in caplog.records)


def test_generate_never_overwrites_another_run_without_overwrite(tmp_path, capsys):
    from CLUE import generate
    from VAE import train as vae_train

    bnn, vae, clue = tmp_path / "bnn", tmp_path / "vae", tmp_path / "clue"
    bnn_train.main(with_preset(bnn_train.Config, bnn_train.PRESETS, "tiny", n_epochs=4, out=str(bnn)))
    vae_train.main(with_preset(vae_train.Config, vae_train.PRESETS, "tiny", dataset="digits", max_epochs=2,
                               xla=False, progress=False, out=str(vae)))

    def run_generate(*argv):
        return _cli(generate.main, generate.Config, generate.PRESETS,
                    ["--preset", "tiny", "--dataset", "digits", "--bnn", str(bnn), "--vae", str(vae),
                     "--n-explain", "2", "--max-steps", "4", *argv], capsys, prog="python -m CLUE.generate")

    before = {p.name: p.read_bytes() for p in bnn.iterdir() if p.is_file()}
    code, err = run_generate("--out", str(bnn))
    assert code == 2 and "holds a BNN.train run" in err
    code, err = run_generate("--out", str(bnn), "--overwrite")  # would delete its own input
    assert code == 2 and "holds the input" in err
    assert {p.name: p.read_bytes() for p in bnn.iterdir() if p.is_file()} == before
    # An earlier CLUE run with other settings is kept unless --overwrite; the batch size may differ.
    assert run_generate("--out", str(clue))[0] == 0
    code, err = run_generate("--out", str(clue), "--lam", "3")
    assert code == 2 and "other settings (lam: 2.0 -> 3.0)" in err and "--overwrite" in err
    code, err = run_generate("--out", str(clue), "--lam", "3", "--overwrite")
    assert code == 0, err
    assert json.loads((clue / "config.json").read_text())["lam"] == 3.0 and (clue / "summary.json").exists()
    code, err = run_generate("--out", str(clue), "--lam", "3", "--batch-size", "1")
    assert code == 0, err


def test_make_run_dir_replaces_a_failed_start_and_reads_unmarked_runs(tmp_path):
    out = tmp_path / "run"
    config = {"dataset": "digits", "seed": 0, "out": str(out), "lr": 0.1}
    make_run_dir(out, config, resume_safe=(), kind="BNN.train")
    # only config.json so far (the run failed before producing anything): other settings replace it
    make_run_dir(out, {**config, "lr": 0.2}, resume_safe=(), kind="BNN.train")
    assert json.loads((out / "config.json").read_text())["lr"] == 0.2
    (out / "metrics.csv").write_text("epoch\n")
    with pytest.raises(UserError, match=r"other settings \(lr: 0.2 -> 0.3\)"):
        make_run_dir(out, {**config, "lr": 0.3}, resume_safe=(), kind="BNN.train")
    with pytest.raises(UserError, match="holds a BNN.train run"):
        make_run_dir(out, config, kind="CLUE.generate")
    # A run folder written before run.json existed: told apart by its settings' names.
    (out / RUN_FILE).unlink()
    make_run_dir(out, {**config, "lr": 0.2, "new_flag": 1}, resume_safe=(), kind="BNN.train")
    (out / RUN_FILE).unlink()
    with pytest.raises(UserError, match="a run of another script"):
        make_run_dir(out, {"dataset": "digits", "seed": 0, "out": str(out), "bnn": "a", "vae": "b", "lam": 1.0,
                           "n_explain": 3}, kind="CLUE.generate")
    # Unrelated files: --overwrite writes beside them and deletes nothing, but never replaces another config.json.
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    make_run_dir(notes, config, kind="BNN.train", overwrite=True)
    assert sorted(p.name for p in notes.iterdir()) == ["argv.txt", "config.json", RUN_FILE, "todo.txt"]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"colour": "blue"}')
    for overwrite in (False, True):
        with pytest.raises(UserError, match="holds no run of this project"):
            make_run_dir(theirs, config, kind="BNN.train", overwrite=overwrite)
    assert (theirs / "config.json").read_text() == '{"colour": "blue"}'
    with pytest.raises(UserError, match="is a file"):
        make_run_dir(theirs / "config.json", config)


def test_ctrl_c_says_where_training_stopped_and_the_same_command_resumes(tmp_path, capsys, caplog, monkeypatch):
    out = tmp_path / "run"
    append = bnn_train.MetricsCSV.append

    def interrupt_at_epoch_3(self, row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt
        append(self, row)

    monkeypatch.setattr(bnn_train.MetricsCSV, "append", interrupt_at_epoch_3)
    code, err = _bnn(["--preset", "tiny", "--out", str(out)], capsys)
    assert code == 130
    assert err.strip().splitlines()[-1] == (f"interrupted at epoch 3 (2 epochs checkpointed in {out}); run the same "
                                            "command again to resume")
    monkeypatch.setattr(bnn_train.MetricsCSV, "append", append)
    with caplog.at_level(logging.INFO, logger="BNN.chains"):
        code, err = _bnn(["--preset", "tiny", "--out", str(out)], capsys)
    assert code == 0, err
    assert any("resumed from" in r.getMessage() and "at epoch 2" in r.getMessage() for r in caplog.records)
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 6


def test_the_shared_epoch_loop_reports_interrupts_and_logs_quietly_under_a_bar(tmp_path, caplog):
    def run(stop_at=None, progress=False):
        def train_epoch(epoch):
            if epoch == stop_at:
                raise KeyboardInterrupt
            return {"train/elbo": float(epoch)}

        return fit_with_early_stopping(RunState(tmp_path), max_epochs=5, early_stop=None, train_epoch=train_epoch,
                                       evaluate=lambda: {"dev/elbo": 0.0}, monitor="dev/elbo",
                                       export_best=lambda epoch: None, csv_path=tmp_path / "metrics.csv",
                                       progress=progress)

    with pytest.raises(TrainingInterrupted) as info:
        run(stop_at=2)
    assert (info.value.epoch, info.value.checkpointed) == (2, 2) and isinstance(info.value, KeyboardInterrupt)
    assert "run the same command again to resume" in str(info.value)
    with caplog.at_level(logging.INFO, logger="common.training"):
        assert run(progress=True)["epochs_run"] == 5
    assert not [r for r in caplog.records if r.getMessage().startswith("epoch ")]  # the bar shows them


def test_a_single_chain_reports_split_rhat_as_its_two_halves(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(bnn_diagnostics, "convergence", lambda traces: {"diagnostics/rhat/test_loglik": 1.4,
                                                                        "diagnostics/ess/test_loglik": 3.0})
    config = with_preset(bnn_train.Config, bnn_train.PRESETS, "tiny", out=str(tmp_path / "run"), n_saves=4)
    with caplog.at_level(logging.WARNING, logger="BNN.diagnostics"):
        metrics = bnn_train.main(config)
    assert metrics["diagnostics/rhat/test_loglik"] == 1.4  # the value stays in the metrics
    warning = next(r.getMessage() for r in caplog.records if "R-hat" in r.getMessage())
    assert "halves of the single chain" in warning and "chains disagree" not in warning


@dataclasses.dataclass(frozen=True)
class _Percent:
    share: float = option(0.1, "fraction of the rows (reference: 10%)")
    name: str = option("50%", "a default with a percent sign")


def test_help_texts_may_hold_percent_signs_and_presets_are_described():
    parser = build_parser(_Percent, {"paper": {}, "half": {"share": 0.5}}, "doc", prog="python -m x",
                          preset_descriptions={"paper": "the defaults"})
    text = parser.format_help()
    assert "usage: python -m x" in text and "(reference: 10%)" in text and "'50%'" in text
    assert re.search(r"^\s+half: sets share=0.5$", text, re.M) and re.search(r"^\s+paper: the defaults$", text, re.M)
    assert parse_config(_Percent, {"half": {"share": 0.5}}, ["--preset", "half"]).share == 0.5
    with pytest.raises(UserError, match="unknown preset 'x'"):
        with_preset(_Percent, {"half": {}}, "x")


def test_command_line_round_trips_through_the_parser():
    """The command recorded for published stages parses back into the same settings."""
    import dataclasses
    import shlex

    from CLUE import evaluate
    from common.config import command_line, parse_config, with_preset

    config = with_preset(evaluate.Config, evaluate.PRESETS, "tiny", dataset="credit", seed=2, out="runs/x y",
                         threshold_quantile=0.8, ufido_mnist_norm=True, gt_lr=None)
    command = command_line("python -m CLUE.evaluate", config)
    assert command.startswith("python -m CLUE.evaluate --dataset credit --seed 2 --out 'runs/x y'")
    assert "--ufido-mnist-norm true" in command and "--max-explained 24" in command
    parsed = parse_config(evaluate.Config, evaluate.PRESETS, shlex.split(command)[3:])
    assert dataclasses.asdict(parsed) == dataclasses.asdict(config)
    assert command_line("python -m CLUE.evaluate", evaluate.Config()) == "python -m CLUE.evaluate"


def test_kill_stops_a_run_as_ctrl_c_does_and_its_stage_time_is_kept(tmp_path):
    """SIGTERM (``kill``, a scheduler, a timeout) raises KeyboardInterrupt inside ``cli.run``: the interrupted stage's
    ``finally`` still adds its seconds to ``timings.json``, and the exit is Ctrl-C's one line and status."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "import common.cli as cli\n"
        "from CLUE.evaluation.pipeline import _timed\n"
        "def body():\n"
        "    with _timed(Path(sys.argv[1]), 'stage'):\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(120)\n"
        "cli.run(body, resumable=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, env=_env())
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1] == "interrupted; run the same command again to resume"
    assert json.loads((tmp_path / "timings.json").read_text())["stage"] >= 0.5
