"""Provenance: the commit and host recorded in every results file."""

import torch

from mta.provenance import cpu_architecture, cpu_model, environment, git_commit


def test_mta_commit_overrides_the_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("MTA_COMMIT", "abc123")
    assert git_commit() == "abc123"
    monkeypatch.delenv("MTA_COMMIT")
    assert git_commit(tmp_path) == "unknown"  # not a git checkout
    assert git_commit() not in ("abc123", "unknown")


def test_environment_names_the_host_cpu():
    env = environment()
    assert isinstance(env["cpu_model"], str) and env["cpu_model"]
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu_threads"] == torch.get_num_threads()


def test_cpu_model_reads_cpuinfo_and_falls_back(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: Test\nmodel name\t: Test CPU 9000 @ 3.00GHz\nflags\t: fpu\n")
    assert cpu_model(cpuinfo) == "Test CPU 9000 @ 3.00GHz"
    assert cpu_model(tmp_path / "missing") == cpu_architecture()
