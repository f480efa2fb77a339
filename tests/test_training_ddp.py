"""Two processes over gloo on the CPU, set up exactly as ``torchrun`` would: ranks stay in sync."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from featherface import featherface_v2
from featherface.training import LabeledFaceDataset, TrainAugment, make_loader, train
from featherface.training.labels import read_retinaface_labels
from featherface.training.logs import read_log

from .conftest import shared_path

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, label_file: str, output: str) -> None:
    """One rank: the environment torchrun sets, then the ordinary training call."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
    )
    torch.set_num_threads(1)
    torch.manual_seed(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = featherface_v2()
    labels = read_retinaface_labels(label_file)[:4]
    loader = make_loader(LabeledFaceDataset(labels, TrainAugment(96)), batch_size=1)
    train(model, loader, epochs=1, device="cpu", output_dir=output, progress=False, dropblock=0.1)
    torch.save(model.state_dict(), Path(output) / f"rank{rank}.pt")


def test_two_gloo_ranks_hold_identical_parameters(tmp_path):
    label_file = shared_path("data", "widerface_train1000", "label.txt")
    context = mp.start_processes(
        _worker,
        args=(_free_port(), str(label_file), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 240
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail("the two-process run did not finish in 240 s")
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    torch.manual_seed(100)
    reference = featherface_v2()  # rank 0's initial weights
    initial = reference.state_dict()
    changed = 0
    for name, _ in reference.named_parameters():
        assert torch.equal(states[0][name], states[1][name]), f"{name} differs between ranks"
        changed += not torch.equal(states[0][name], initial[name])
    assert changed > 100
    # rank 0 alone wrote the log: 2 steps of its shard, and an epoch summary over both ranks' 4 images
    log = read_log(tmp_path / "log.jsonl")
    assert [r["kind"] for r in log] == ["step", "step", "epoch"]
    assert log[-1]["images"] == 4
    assert (tmp_path / "model.safetensors").is_file()
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["world_size"] == WORLD_SIZE and len(checkpoint["rng"]) == WORLD_SIZE
