"""The language-model trainer on CPU at tiny size: batches, the run directory, checkpoints, exact resume (also
after SIGKILL), a 2-process DDP run under torchrun (docs/spec.md §3) and fine-tuning from another run's
weights (init_from: context extension with RoPE θ and the context length raised)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mta.cli import main
from mta.eval.ppl import load_split
from mta.models.checkpoint import CheckpointError, load_checkpoint
from mta.train import LMTrainConfig, lr_factor, train_lm
from mta.train import checkpoint_state as ckpt
from mta.train import lm
from mta.train.distributed import init_ranks
from mta.train.lm_data import MixtureSampler
from mta.train.lm_log import RunLog

VOCAB, EOS = 64, 63
# Domain "a" uses ids [0, 30), domain "b" ids [30, 60), so a window shows where it came from.
MODEL = ["model.dim=32", "model.n_layers=2", "model.max_seq_len=32", "model.qk_conv_layers=[1]", "model.dropout=0.1"]
TINY = [*MODEL, "seq_len=16", "batch_size=2", "warmup=2", "eval_windows=3", "log_every=2"]


def write_dataset(path, sizes={"a": (1200, 200), "b": (600, 200)}):
    """A mta-tokens-v1 directory (mta.data.corpus) with (train, val) token counts per domain; 20-token documents."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.json").write_text("{}")  # only its presence is checked
    rng = np.random.default_rng(0)
    domains = {}
    for offset, (name, counts) in zip((0, 30), sizes.items()):
        domain = domains[name] = {"source": "test", "documents": {}, "tokens": {}, "files": {}, "sha256": {}}
        for split, count in zip(("train", "val"), counts):
            tokens = (offset + rng.integers(0, 30, count)).astype("<u2")
            tokens[19::20] = EOS
            tokens.tofile(path / f"{name}.{split}.bin")
            domain["documents"][split], domain["tokens"][split] = count // 20, count
            domain["files"][split], domain["sha256"][split] = f"{name}.{split}.bin", "not checked"
    manifest = {"format": "mta-tokens-v1", "tokenizer": "tokenizer.json", "vocab_size": VOCAB, "eos_id": EOS,
                "dtype": "uint16", "domains": domains, "created": "2025-01-01T00:00:00+00:00", "mta_version": "0.1.0"}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """In-process runs on one thread, as the subprocess runs (ENV): faster at this size on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"))


def config(data, *assignments):
    return LMTrainConfig.from_overrides("tiny-mta", str(data), [*TINY, *assignments])


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in ("elapsed_s", "tokens_per_s")} for row in rows]


def weights(directory):
    return load_file(directory / "model.safetensors")


def assert_same_weights(a, b):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_sampler_is_a_function_of_seed_step_micro_rank(data):
    split = load_split(data, "train")
    sampler = MixtureSampler(split, seq_len=16, batch_size=64, seed=3)
    batch = sampler.batch(step=5, micro=1, rank=0)
    assert batch.shape == (64, 17) and batch.dtype == torch.int64
    assert torch.equal(batch, MixtureSampler(split, 16, 64, seed=3).batch(5, 1, 0))
    for other in (sampler.batch(6, 1, 0), sampler.batch(5, 0, 0), sampler.batch(5, 1, 1),
                  MixtureSampler(split, 16, 64, seed=4).batch(5, 1, 0)):
        assert not torch.equal(batch, other)
    from_a = ((batch < 30) | (batch == EOS)).all(dim=1)
    from_b = (batch >= 30).all(dim=1)
    assert bool((from_a | from_b).all())  # a window never straddles two domains
    share_a = np.mean([((b < 30) | (b == EOS)).all(dim=1).float().mean() for b in map(sampler.batch, range(20))])
    assert share_a == pytest.approx(2 / 3, abs=0.05)  # weights by token count: 1200 vs 600
    only_b = MixtureSampler(split, 16, 64, seed=3, mixture={"b": 1.0}).batch(0)
    assert bool((only_b >= 30).all())


def test_sampler_errors_name_the_problem(data, tmp_path):
    split = load_split(data, "train")
    with pytest.raises(ValueError, match=r"mixture: domains \['c'\]"):
        MixtureSampler(split, 16, 2, seed=0, mixture={"c": 1.0})
    short = load_split(write_dataset(tmp_path / "short", {"a": (1200, 200), "b": (10, 200)}), "train")
    with pytest.raises(ValueError, match="domain 'b' has 10 tokens"):
        MixtureSampler(short, 16, 2, seed=0)
    MixtureSampler(short, 16, 2, seed=0, mixture={"a": 1.0})  # a domain left out may be short


def test_run_directory(data, tmp_path, capsys):
    run = tmp_path / "run"
    summary = train_lm(config(data, "steps=6", "eval_every=3", "checkpoint_every=2", "keep_checkpoints=2"), run,
                       progress=False)
    assert summary["step"] == 6 and summary["checkpoint"] == str(ckpt.checkpoint_dir(run, 6))
    assert [path.name for path in ckpt.list_checkpoints(run)] == ["step-00000004", "step-00000006"]

    rows = records(run)
    train_rows = [row for row in rows if "loss" in row]
    assert [row["step"] for row in train_rows] == [2, 4, 6]
    assert [row["lr"] for row in train_rows] == pytest.approx([1.5e-4 * lr_factor(s - 1, 2, 6) for s in (2, 4, 6)])
    assert [row["tokens"] for row in train_rows] == [64, 128, 192]  # 2 sequences of 16 tokens per step
    val_rows = [row for row in rows if "val" in row]
    assert [row["step"] for row in val_rows] == [3, 6] and set(val_rows[0]["val"]) == {"a", "b"}
    assert summary["val_mean_ppl"] == val_rows[-1]["val_mean_ppl"]

    resolved = json.loads((run / "train_config.json").read_text())
    assert resolved["train"]["model"]["dim"] == 32 and resolved["model"]["vocab_size"] == VOCAB
    assert resolved["world_size"] == 1 and resolved["parallel"] == "none"

    # `mta eval ppl` on the run directory: its newest checkpoint, at the training seq_len, on the same windows.
    assert main(["eval", "ppl", "--checkpoint", str(run), "--data", str(data), "--windows", "3", "--device", "cpu",
                 "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"] == str(ckpt.checkpoint_dir(run, 6)) and report["seq_len"] == 16
    assert report["mean_ppl"] == pytest.approx(val_rows[-1]["val_mean_ppl"], rel=1e-6)


def test_grad_accum_matches_a_larger_batch_in_tokens(data, tmp_path):
    train_lm(config(data, "steps=2", "grad_accum=3", "eval_every=100"), tmp_path, progress=False)
    assert records(tmp_path)[0]["tokens"] == 2 * 2 * 3 * 16


def test_resume_is_exact(data, tmp_path):
    settings = config(data, "steps=8", "eval_every=4", "checkpoint_every=3", "keep_checkpoints=10")
    full, cut = tmp_path / "full", tmp_path / "cut"
    train_lm(settings, full, progress=False)
    shutil.copytree(full, cut)
    for step in (6, 8):  # as if killed after the step-3 checkpoint: later checkpoints gone, later metrics kept
        shutil.rmtree(ckpt.checkpoint_dir(cut, step))
    summary = train_lm(settings, cut, resume=True, progress=False)
    assert summary["step"] == 8
    assert_same_weights(ckpt.checkpoint_dir(full, 8), ckpt.checkpoint_dir(cut, 8))
    assert without_timing(records(cut)) == without_timing(records(full))  # cut back to step 3, then continued


def test_checkpoint_problems_are_clear_errors(data, tmp_path):
    settings = config(data, "steps=4", "eval_every=100", "checkpoint_every=2")
    train_lm(settings, tmp_path, progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints.*--resume"):
        train_lm(settings, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=r"training config differs.*lr: 0.00015 -> 0.0003"):
        train_lm(config(data, "steps=4", "lr=3e-4"), tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match=r"model config differs.*\['n_layers'\]"):
        train_lm(config(data, "steps=4", "model.n_layers=3"), tmp_path, resume=True, progress=False)

    latest = ckpt.latest_checkpoint(tmp_path)
    checkpoint = ckpt.read_checkpoint(latest)
    with pytest.raises(CheckpointError, match="written by 1 ranks, this run has 2"):
        ckpt.check_resumable(checkpoint, latest, checkpoint.model_config, checkpoint.trainer["config"], 2)
    weights_at_4 = weights(latest)
    optimizer = bytearray((latest / "optimizer.pt").read_bytes())
    optimizer[-30] ^= 1
    (latest / "optimizer.pt").write_bytes(bytes(optimizer))
    with pytest.warns(UserWarning, match=r"step-00000004: optimizer.pt is missing or corrupt.*resuming from the "
                                         r"checkpoint before it \(this one is renamed step-00000004.corrupt\)"):
        summary = train_lm(settings, tmp_path, resume=True, progress=False)
    assert summary["step"] == 4 and (tmp_path / "checkpoints" / "step-00000004.corrupt").is_dir()
    assert all(torch.equal(weights_at_4[name], tensor) for name, tensor in weights(latest).items())  # redone

    only = tmp_path / "only"
    train_lm(config(data, "steps=2", "eval_every=100"), only, progress=False)
    (ckpt.latest_checkpoint(only) / "rng.pt").write_bytes(b"torn")
    with pytest.raises(CheckpointError, match="rng.pt is missing or corrupt.*no older checkpoint"):
        train_lm(config(data, "steps=2", "eval_every=100"), only, resume=True, progress=False)
    (latest / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model.safetensors does not match the SHA-256"):
        ckpt.read_checkpoint(latest)
    (latest / "trainer.json").unlink()
    with pytest.raises(CheckpointError, match="trainer.json not found"):
        ckpt.read_checkpoint(latest)


def test_a_failed_write_leaves_no_checkpoint(data, tmp_path, monkeypatch):
    train_lm(config(data, "steps=2", "eval_every=100"), tmp_path, progress=False)
    checkpoint = ckpt.read_checkpoint(ckpt.latest_checkpoint(tmp_path))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.write_checkpoint(ckpt.checkpoint_dir(tmp_path, 3), checkpoint)
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["step-00000002"]
    (tmp_path / "checkpoints" / ".step-00000004.tmp-123").mkdir()  # left by a killed process
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000002"


def test_run_log_cuts_back_to_the_resumed_step_and_feeds_tensorboard(tmp_path, monkeypatch):
    events = []

    class SummaryWriter:
        def __init__(self, log_dir, purge_step):
            events.append(("open", purge_step))

        def add_scalar(self, name, value, step):
            events.append((name, value, step))

        def close(self):
            events.append("close")

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    (tmp_path / "metrics.jsonl").write_text('{"step": 2, "loss": 1.5}\n{"step": 4, "loss": 1.25}\n{"step": 6, "lo')
    log = RunLog(tmp_path, step=4)  # the line of step 6 was torn by a kill
    log.write({"step": 5, "val": {"a": {"ppl": 3.0, "tokens": 8}}, "val_mean_ppl": 3.0})
    log.close()
    assert records(tmp_path) == [{"step": 2, "loss": 1.5}, {"step": 4, "loss": 1.25},
                                 {"step": 5, "val": {"a": {"ppl": 3.0, "tokens": 8}}, "val_mean_ppl": 3.0}]
    assert events == [("open", 5), ("val/a/ppl", 3.0, 5), ("val/a/tokens", 8, 5), ("val_mean_ppl", 3.0, 5), "close"]


def _train_command(data, out, *extra):
    return [sys.executable, "-m", "mta.train", "--preset", "tiny-mta", "--data", str(data), "--out", str(out),
            "--no-progress", *[arg for item in TINY for arg in ("--set", item)], *extra]


# One thread per process: tiny models gain nothing from more, and a busy 2-core machine slows them down badly.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# A training process that hangs (e.g. at a process group's teardown) fails its test instead of stalling the suite.
SUBPROCESS_TIMEOUT_S = 300
KILL_RUN = ["--set", "steps=48", "--set", "checkpoint_every=4", "--set", "keep_checkpoints=100",
            "--set", "eval_every=24"]


def test_sigkill_then_resume_equals_an_uninterrupted_run(data, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(_train_command(data, reference, *KILL_RUN), check=True, capture_output=True, env=ENV,
                   timeout=SUBPROCESS_TIMEOUT_S)

    process = subprocess.Popen(_train_command(data, killed, *KILL_RUN), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + 60
    while not ckpt.checkpoint_dir(killed, 8).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    reached = ckpt.latest_checkpoint(killed)
    assert reached is not None and reached.name < "step-00000048", "the run was not killed mid-way"

    subprocess.run(_train_command(data, killed, *KILL_RUN, "--resume"), check=True, capture_output=True, env=ENV,
                   timeout=SUBPROCESS_TIMEOUT_S)
    assert_same_weights(ckpt.checkpoint_dir(reference, 48), ckpt.checkpoint_dir(killed, 48))
    assert without_timing(records(killed)) == without_timing(records(reference))


def test_torchrun_two_cpu_processes_with_ddp(data, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               *_train_command(data, tmp_path, "--set", "steps=4", "--set", "eval_every=4",
                               "--set", "checkpoint_every=2")[1:]]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=ENV, timeout=SUBPROCESS_TIMEOUT_S)
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["step"] == 4  # rank 0 prints
    resolved = json.loads((tmp_path / "train_config.json").read_text())
    assert resolved["world_size"] == 2 and resolved["parallel"] == "ddp"
    assert [row["tokens"] for row in records(tmp_path) if "loss" in row] == [128, 256]  # both ranks' batches
    checkpoint = ckpt.read_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert checkpoint.trainer["world_size"] == 2 and len(checkpoint.rng) == 2
    assert not torch.equal(checkpoint.rng[0]["cpu"], checkpoint.rng[1]["cpu"])  # dropout differs per rank
    load_checkpoint(ckpt.latest_checkpoint(tmp_path))


def test_torchrun_fsdp2_matches_ddp_on_two_cpu_processes(data, tmp_path):
    # FSDP2 (fully_shard per block, gloo) shards the parameters but computes the same steps as DDP.
    runs = {}
    for mode in ("ddp", "fsdp"):
        out = tmp_path / mode
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   *_train_command(data, out, "--set", "steps=4", "--set", "eval_every=4", "--set",
                                   "checkpoint_every=4", "--parallel", mode)[1:]]
        subprocess.run(command, check=True, capture_output=True, env=ENV, timeout=SUBPROCESS_TIMEOUT_S)
        assert json.loads((out / "train_config.json").read_text())["parallel"] == mode
        runs[mode] = out
    ddp, fsdp = (without_timing(records(runs[mode])) for mode in ("ddp", "fsdp"))
    assert [r["step"] for r in fsdp] == [r["step"] for r in ddp]
    for a, b in zip(ddp, fsdp):
        if "loss" in a:
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    a, b = (weights(ckpt.latest_checkpoint(runs[mode])) for mode in ("ddp", "fsdp"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


def test_init_from_starts_from_the_weights_with_a_longer_context_and_new_rope(data, tmp_path):
    base = tmp_path / "base"
    train_lm(config(data, "steps=2", "eval_every=100"), base, progress=False)
    saved, base_model = weights(ckpt.latest_checkpoint(base)), load_checkpoint(ckpt.latest_checkpoint(base))
    init = f"init_from={json.dumps(str(base))}"
    same = lm._LMRun(config(data, init), tmp_path / "same", init_ranks("cpu"), resume=False).module.eval()
    longer = lm._LMRun(config(data, init, "model.rope_theta=4e5", "model.max_seq_len=64", "seq_len=48"),
                       tmp_path / "longer", init_ranks("cpu"), resume=False).module.eval()
    for module in (same, longer):
        state = module.state_dict()
        assert state.keys() == saved.keys() and all(torch.equal(state[name], saved[name]) for name in saved)
    assert {layer.attention.config.rope_theta for layer in longer.layers} == {4e5}
    tokens = torch.randint(0, VOCAB, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(same(tokens[:, :32]), base_model(tokens[:, :32]))
        assert not torch.allclose(longer(tokens[:, :32]), base_model(tokens[:, :32]), atol=1e-3)  # θ alone differs
        assert longer(tokens).shape == (2, 48, VOCAB)  # past the base model's max_seq_len of 32


def test_init_from_on_the_command_line(data, tmp_path, capsys):
    base, out = tmp_path / "base", tmp_path / "longer"
    train_lm(config(data, "steps=2", "eval_every=100"), base, progress=False)
    argv = ["train", "--preset", "tiny-mta", "--data", str(data), "--out", str(out), "--init-from", str(base),
            "--no-progress", *[arg for item in TINY for arg in ("--set", item)], "--set", "model.max_seq_len=64",
            "--set", "seq_len=48", "--set", "model.rope_theta=4e5", "--set", "steps=2", "--set", "eval_every=100"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    resolved = json.loads((out / "train_config.json").read_text())
    assert resolved["init_checkpoint"] == str(ckpt.latest_checkpoint(base)) and resolved["train"]["seq_len"] == 48
    model = load_checkpoint(ckpt.latest_checkpoint(out))
    assert (model.config.rope_theta, model.config.max_seq_len) == (4e5, 64)
    assert records(out)[0]["step"] == 2  # a fresh schedule: step 0 of 2, not the base run's step count


def test_init_from_refuses_a_different_model(data, tmp_path):
    base = tmp_path / "base"
    train_lm(config(data, "steps=2", "eval_every=100"), base, progress=False)
    init = f"init_from={json.dumps(str(base))}"
    with pytest.raises(CheckpointError, match=r"model config differs.*n_layers: 2 -> 3.*only \['backend'"):
        train_lm(config(data, init, "model.n_layers=3"), tmp_path / "other", progress=False)
    with pytest.raises(CheckpointError, match="is neither a checkpoint"):
        train_lm(config(data, f"init_from={json.dumps(str(tmp_path / 'nothing'))}"), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="^init_from: got 3"):
        config(data, "init_from=3")
