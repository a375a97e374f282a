"""Fault injection: training processes killed at chosen points (SIGKILL between steps, inside a checkpoint write,
between its renames, while pruning; SIGTERM), each resumed by rerunning its command, end with the weights and
metrics of an uninterrupted run, bit for bit; a corrupted newest checkpoint falls back to the one before it."""

import importlib
import json
import os
import signal
import sys
import tempfile
import warnings

import torch
from safetensors.torch import load_file

from mta.cli import main
from mta.train import checkpoint_state as ckpt
from train.test_lm import TINY, records, without_timing, write_dataset


def run(argv: list[str], *faults: tuple[str, str, int, str]) -> tuple[int, str]:
    """Run `mta *argv` in a forked process (no interpreter start-up to pay) on one thread; return its exit code
    (-9 when killed) and what it wrote to stderr. Each fault (module[:attribute], function, count, signal name)
    makes the process send itself that signal on the count-th call of that function, before the call."""
    fd, path = tempfile.mkstemp(suffix=".stderr")
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            sys.stdout, sys.stderr = open(os.devnull, "w"), open(fd, "w", buffering=1)
            warnings.showwarning = _print_warning  # as outside pytest, which records them
            torch.set_num_threads(1)
            for owner, name, count, sig in faults:
                _inject(owner, name, count, getattr(signal, sig))
            code = main(argv)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    with open(path) as f:
        stderr = f.read()
    os.unlink(path)
    return os.waitstatus_to_exitcode(status), stderr


def _print_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _inject(owner: str, name: str, count: int, sig: int) -> None:
    module, _, attribute = owner.partition(":")
    target = importlib.import_module(module)
    target = getattr(target, attribute) if attribute else target
    real, calls = getattr(target, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == count:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    setattr(target, name, wrapped)


def same_weights(a, b):
    a, b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_lm_training_killed_anywhere_resumes_to_the_same_weights(tmp_path):
    data = write_dataset(tmp_path / "data")
    settings = [*TINY, "steps=14", "checkpoint_every=3", "keep_checkpoints=2", "eval_every=7"]
    command = ["train", "--preset", "tiny-mta", "--data", str(data), "--no-progress",
               *[arg for item in settings for arg in ("--set", item)]]
    reference, faulty = tmp_path / "reference", tmp_path / "faulty"
    assert run([*command, "--out", str(reference)])[0] == 0
    resume = [*command, "--out", str(faulty), "--resume-or-start"]

    def killed(*fault) -> list[str]:
        code, stderr = run(resume, (*fault, "SIGKILL"))
        assert code == -signal.SIGKILL, stderr
        return sorted(path.name for path in (faulty / "checkpoints").iterdir())

    assert killed("mta.train.lm:_LMRun", "_train_step", 5) == ["step-00000003"]  # between checkpoints
    leftover = ".step-00000006.tmp-"  # a hidden temporary with its files half written, then complete
    assert killed("torch", "save", 1)[0].startswith(leftover)  # writing optimizer.pt
    assert killed("os", "replace", 1)[0].startswith(leftover)  # all written, not yet renamed into place
    assert killed("mta.train.checkpoint_state", "prune_checkpoints", 2) == [  # complete, not yet pruned
        "step-00000003", "step-00000006", "step-00000009"]
    assert killed("shutil", "rmtree", 3) == [  # pruning: step 3 renamed to a hidden name, not yet removed
        ".step-00000003.removing", "step-00000006", "step-00000009", "step-00000012"]
    code, stderr = run(resume, ("mta.train.lm:_LMRun", "_train_step", 1, "SIGTERM"))  # a clean stop
    assert code == 130 and "interrupted at step 13: checkpoint" in stderr and "--resume goes on" in stderr
    assert [path.name for path in ckpt.list_checkpoints(faulty)] == ["step-00000012", "step-00000013"]

    newest = ckpt.latest_checkpoint(faulty)
    corrupted = bytearray((newest / "model.safetensors").read_bytes())
    corrupted[-1] ^= 1
    (newest / "model.safetensors").write_bytes(bytes(corrupted))
    code, stderr = run([*command, "--out", str(faulty), "--resume"])
    assert code == 0, stderr
    assert f"{newest.name}: model.safetensors does not match the SHA-256" in stderr
    assert "resuming from the checkpoint before it" in stderr
    assert same_weights(ckpt.checkpoint_dir(reference, 14), ckpt.checkpoint_dir(faulty, 14))
    assert without_timing(records(faulty)) == without_timing(records(reference))


def test_toy_training_stopped_and_killed_resumes_to_the_same_weights(tmp_path):
    command = ["toy", "train", "--n-block", "3", "--num-blocks", "3", "--steps", "9", "--batch-size", "4",
               "--warmup", "2", "--eval-every", "4", "--eval-samples", "4", "--dim", "16", "--layers", "1",
               "--log-every", "2", "--no-progress"]
    reference, faulty = tmp_path / "reference", tmp_path / "faulty"
    assert run([*command, "--out", str(reference)])[0] == 0
    code, stderr = run([*command, "--out", str(faulty)], ("mta.train.toy:ToyRun", "train_step", 3, "SIGTERM"))
    assert code == 130 and "step-00000003, and --resume goes on from there" in stderr
    # Resumed, stopped again by SIGTERM in its third step (step 6), and killed while writing that state:
    code, stderr = run([*command, "--out", str(faulty), "--resume"],
                       ("mta.train.toy:ToyRun", "train_step", 3, "SIGTERM"), ("torch", "save", 1, "SIGKILL"))
    assert code == -signal.SIGKILL
    assert [path.name for path in ckpt.list_checkpoints(faulty)] == ["step-00000003"]  # the older state is intact
    assert run([*command, "--out", str(faulty), "--resume"])[0] == 0
    assert same_weights(reference, faulty)
    result = json.loads((faulty / "result.json").read_text())
    assert result["resumed_at"] == [3] and result["steps"] == 9  # the killed call left nothing
    assert without_timing(records(faulty)) == without_timing(records(reference))
