"""The CPU quota read from cgroup v2 and v1 files, and torch's threads capped at it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ragraph_serving.cpu import cpu_quota, fit_threads_to_quota


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_quota_from_cgroup_v2_and_v1(tmp_path: Path) -> None:
    assert cpu_quota(_write(tmp_path / "v2", {"cpu.max": "150000 100000\n"})) == 1.5
    assert cpu_quota(_write(tmp_path / "v2max", {"cpu.max": "max 100000\n"})) is None
    v1 = {"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}
    assert cpu_quota(_write(tmp_path / "v1", v1)) == 2.0
    unlimited = {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}
    assert cpu_quota(_write(tmp_path / "v1max", unlimited)) is None
    assert cpu_quota(tmp_path / "nothing") is None
    assert cpu_quota(_write(tmp_path / "garbage", {"cpu.max": "lots\n"})) is None


def test_threads_are_capped_at_the_quota_rounded_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert fit_threads_to_quota(_write(tmp_path / "a", {"cpu.max": "150000 100000"})) == 2
        assert torch.get_num_threads() == 2
        assert fit_threads_to_quota(_write(tmp_path / "b", {"cpu.max": "800000 100000"})) is None  # never raised
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert fit_threads_to_quota(_write(tmp_path / "c", {"cpu.max": "50000 100000"})) is None  # the user's choice
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
