"""One thread policy for torch and faiss (vadkit.threads) and ``--threads`` on every command."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from vadkit.cli import main
from vadkit.threads import available_cpus, get_threads, pinned_threads, set_threads


def test_a_count_set_before_the_libraries_load_holds_in_both():
    code = ("from vadkit.threads import set_threads; set_threads(1)\n"
            "import torch, faiss; print(torch.get_num_threads(), faiss.omp_get_max_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1"]


def test_a_count_set_after_they_load_holds_too_and_pinning_restores_it():
    import faiss
    import torch

    before = get_threads()
    try:
        assert set_threads(1) == 1 and get_threads() == {"torch": 1, "faiss": 1}
        with pinned_threads(2) as n:
            assert n == 2 and torch.get_num_threads() == faiss.omp_get_max_threads() == 2
        assert get_threads() == {"torch": 1, "faiss": 1}
    finally:
        set_threads(before["torch"])
    assert set_threads() == available_cpus()
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        set_threads(0)


def test_every_command_takes_threads_and_applies_it(mvtec_folder, tmp_path):
    import faiss
    import torch

    import click

    def leaves(group, prefix=""):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from leaves(command, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", command

    computes_nothing = {"bench plan"}  # reads the config and the cell folders only
    for name, command in leaves(main):
        if name not in computes_nothing:
            assert "threads" in {param.name for param in command.params}, name
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, ["train", "--data", str(mvtec_folder), "--param", "image_size=64",
                                           "--out", str(tmp_path), "--threads", "1", "--quiet", "--val-ratio", "0.25"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == faiss.omp_get_max_threads() == 1
    finally:
        set_threads(before)


def test_idle_threads_sleep_unless_the_user_chose_otherwise():
    code = "import os, vadkit, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"}).stdout
    assert out.strip() == "ACTIVE"
