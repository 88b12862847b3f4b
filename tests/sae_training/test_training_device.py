"""`--device` of training: its validation, the GPU path of the TopK step (checked on the CPU and on "meta"), and a
run that is resumed under another device setting.

No test here needs or fakes a GPU: the dense backward that CUDA takes is run on the CPU against sae-lens, the
device plumbing of the step on the "meta" device (any tensor left on the CPU would fail there), and `--device cuda`
is refused where this torch has no CUDA.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput
from safetensors.torch import load_file

from activations.devices import resolve_device
from activations.distributed import World
from activations.errors import UserError
from sae_training.config import TrainConfig, TrainConfigError
from sae_training.run import load_member
from sae_training.topk_step import topk_forward
from tests.helpers.common import error_line, run_cli
from tests.helpers.training import planted_cache

torch.set_num_threads(1)

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
FAST = [
    "--width",
    "64",
    "--k",
    "3",
    "--tokens",
    "8192",
    "--batch-size",
    "256",
    "--seeds",
    "0,1",
    "--no-progress",
]


def _sae(dtype: str = "float64") -> TopKTrainingSAE:
    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=16, d_sae=64, k=4, dtype=dtype))
    with torch.no_grad():  # away from the symmetric init so every gradient term is exercised
        for p in sae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return sae


def _grads(sae: TopKTrainingSAE) -> dict[str, torch.Tensor]:
    return {n: getattr(sae, n).grad.clone() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}


@pytest.mark.parametrize("n_dead", [0, 5])
def test_dense_backward_matches_sae_lens(n_dead: int) -> None:
    ref, ours = _sae(), _sae()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 16, generator=gen, dtype=torch.float64) + 0.3
    dead = torch.zeros(64, dtype=torch.bool)
    dead[torch.randperm(64, generator=gen)[:n_dead]] = True
    step = TrainStepInput(
        sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0, is_logging_step=False
    )
    ref.training_forward_pass(step).loss.backward()
    out = topk_forward(ours, x, dead, dense_backward=True)
    out.loss.backward()
    for name, g in _grads(ours).items():
        g_ref = getattr(ref, name).grad
        assert g_ref.abs().max() > 0, name
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10, msg=name)


def test_dense_and_sparse_backward_agree_in_float32() -> None:
    a, b = _sae("float32"), _sae("float32")
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(2)) + 0.3
    dead = torch.arange(64) % 7 == 0
    topk_forward(a, x, dead, dense_backward=False).loss.backward()
    topk_forward(b, x, dead, dense_backward=True).loss.backward()
    for (name, ga), gb in zip(_grads(a).items(), _grads(b).values(), strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6, msg=name)


def test_topk_step_keeps_every_tensor_on_the_sae_device() -> None:
    # "meta" has no data: any tensor the step made on the CPU (an arange, a zeros) would fail to meet these
    sae = _sae("float32").to("meta")
    x = torch.empty(32, 16, device="meta")
    out = topk_forward(sae, x, None)  # on a device other than the CPU: the dense backward by default
    out.loss.backward()
    assert out.idx.device.type == "meta"
    for name, g in _grads(sae).items():
        assert g.device.type == "meta" and g.shape == getattr(sae, name).shape, name


@pytest.mark.parametrize("good", ["cpu", "cuda", "cuda:3", "auto"])
def test_config_accepts_device_forms(good: str) -> None:
    cfg = TrainConfig(device=good)
    assert cfg.to_dict()["device"] == good
    assert "device" not in cfg.identity()  # a resumed run may train elsewhere
    assert cfg.identity() == TrainConfig(device="cpu").identity()


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:-1", "CPU", "", "cuda:0,1", 3])
def test_config_refuses_other_device_strings(bad: object) -> None:
    with pytest.raises(
        TrainConfigError, match=r"^--device: \S+ must be (cpu, cuda, cuda:N or auto|a non-empty string)$"
    ):
        TrainConfig(device=bad)  # type: ignore[arg-type]


def test_resolve_device_on_this_machine() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match=r"^--device: \"tpu\" must be"):
        resolve_device("tpu", World())


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_resolve_device_refuses_cuda_without_cuda(device: str) -> None:
    with pytest.raises(UserError, match=r"^--device: .* CUDA is not available"):
        resolve_device(device, World(rank=1, world_size=2, local_rank=1))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("device") / "cache.h5"
    planted_cache(path, n_seq=48)
    return path


@NO_CUDA
def test_cli_cuda_without_cuda_is_one_line_and_writes_nothing(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = error_line(run_cli("train", "--cache", str(cache), "--out", str(out), *FAST, "--device", "cuda"))
    assert "--device" in line and "CUDA is not available" in line, line
    assert not out.exists()


def test_cli_unknown_device_is_one_line_and_writes_nothing(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = error_line(run_cli("train", "--cache", str(cache), "--out", str(out), *FAST, "--device", "npu:0"))
    assert line == 'xenofeat: error: --device: "npu:0" must be cpu, cuda, cuda:N or auto', line
    assert not out.exists()


def test_resume_under_another_device_setting(cache: Path, tmp_path: Path) -> None:
    """Killed after step 20 (checkpoint at step 16) with `--device cpu`, resumed with `--device auto`: the run
    completes and, where auto means the CPU, equals the uninterrupted run bit for bit; members load on the CPU."""
    args = ["--cache", str(cache), *FAST, "--checkpoint-every", "4096"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert run_cli("train", *args, "--out", str(ref), "--device", "cpu").returncode == 0
    killed = run_cli(
        "train", *args, "--out", str(run), "--device", "cpu", env={"XENOFEAT_FAULT": "train.after_step:20"}
    )
    assert killed.returncode != 0 and (run / "checkpoint" / "state.json").exists(), killed.stderr[-2000:]
    # the checkpoint holds CPU tensors whatever the device (safetensors reads them back to the CPU here)
    assert all(t.device.type == "cpu" for t in load_file(run / "checkpoint" / "seed-0.safetensors").values())
    done = run_cli("train", *args, "--out", str(run), "--device", "auto", "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["config"]["device"] == "auto"
    assert info["device"] == str(resolve_device("auto"))
    for seed in (0, 1):
        sae = load_member(run, seed, device="cpu")
        assert sae.W_dec.device.type == "cpu" and sae.cfg.device == "cpu"
        if info["device"] == "cpu":
            want = load_member(ref, seed, device="cpu")
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                assert torch.equal(getattr(sae, name), getattr(want, name)), (seed, name)
