"""Training runs on a tiny synthetic dataset: outputs, exact resume, SIGKILL + resume, NaN guard,
distillation, DDP with gloo on two processes, configuration and the train/eval commands."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from console_scripts import console_script
from mobilekit.checkpoint import load_weights
from mobilekit.errors import MobilekitError
from mobilekit.models import create_model
from mobilekit.training import TrainConfig, TrainingDiverged, load_config, train
from mobilekit.training.distill import DistillationLoss
from mobilekit.training.loop import Trainer, _lr_factor

MODEL = "retinaface_mnet025"  # the fastest RetinaFace-style model
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
MOBILEKIT = console_script("mobilekit")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from mobilekit.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("tiny") / "synth", 14, seed=3, imgsz=128, val_fraction=0.25)


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model=MODEL, data=str(data), out=str(out), epochs=2, batch=4, imgsz=64, device="cpu", progress=False, tensorboard=False, lr=2e-3)
    base.update(kw)
    return TrainConfig(**base)


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train(tiny_config(tiny_data, out, tensorboard=True)), out


def test_training_writes_checkpoints_logs_and_plots(trained) -> None:
    result, out = trained
    assert result.best_weights == out / "best_weights.pth"
    for name in ("last.pt", "best.pt", "best_weights.pth", "results.csv", "curves.png", "metrics.json"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    rows = read_csv(out / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "loss_box", "loss_cls", "loss_landmarks", "lr", "images_per_s", "val_ap50"} <= set(rows[0])
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)  # plain types only
    assert ckpt["epoch"] == 2 and ckpt["config"]["model"] == MODEL and isinstance(ckpt["rng"]["torch"], torch.Tensor)
    assert {"model", "ema", "optimizer", "scheduler", "scaler"} <= set(ckpt)
    model = create_model(MODEL)
    assert load_weights(model, out / "best_weights.pth").ok
    assert 0.0 <= result.metrics["best_val_ap50"] <= 1.0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_resume_continues_exactly(tiny_data, tmp_path) -> None:
    straight = train(tiny_config(tiny_data, tmp_path / "straight", epochs=2))
    interrupted = Trainer(tiny_config(tiny_data, tmp_path / "split", epochs=2))
    one_epoch = interrupted.train_one_epoch

    def stop_in_epoch_2(epoch: int) -> dict:
        if epoch == 1:
            raise KeyboardInterrupt
        return one_epoch(epoch)

    interrupted.train_one_epoch = stop_in_epoch_2
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    interrupted.close()
    resumed = train(tiny_config(tiny_data, tmp_path / "split", epochs=2, resume=str(tmp_path / "split" / "last.pt")))
    a = torch.load(straight.last_checkpoint, weights_only=True)
    b = torch.load(resumed.last_checkpoint, weights_only=True)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_loses_at_most_that_epoch(tmp_path) -> None:
    from mobilekit.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", 44, seed=5, imgsz=96, val_fraction=0.1)
    out = tmp_path / "run"
    cmd = [MOBILEKIT, "train", "--model", MODEL, "--data", str(data), "--out", str(out),
           "--epochs", "3", "--batch", "2", "--imgsz", "64", "--device", "cpu", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while not ((out / "results.csv").is_file() and len(read_csv(out / "results.csv")) >= 1):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "epoch 1 never finished"
            time.sleep(0.05)
        time.sleep(0.05)  # inside epoch 2 (20 steps; last.pt of epoch 1 is saved before its CSV row)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1  # killed during epoch 2
    resumed = subprocess.run([MOBILEKIT, "train", "--resume", str(out / "last.pt")],
                             env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "epoch 2 of 3" in resumed.stdout
    assert [int(r["epoch"]) for r in read_csv(out / "results.csv")] == [1, 2, 3]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(trained, tiny_data, tmp_path) -> None:
    _, good_run = trained
    shutil.copy(good_run / "last.pt", tmp_path / "last.pt")
    cfg = tiny_config(tiny_data, tmp_path, epochs=3, resume=str(tmp_path / "last.pt"))
    trainer = Trainer(cfg)
    real = trainer.criterion
    trainer.criterion = lambda raw, targets: (real(raw, targets)[0] * float("nan"), real(raw, targets)[1])
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 3, step 1.*last\.pt"):
        trainer.fit()
    trainer.close()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2


def test_distillation_loss_terms() -> None:
    gen = torch.Generator().manual_seed(0)
    teacher = (torch.randn(2, 50, 4, generator=gen), torch.randn(2, 50, 2, generator=gen) * 3, torch.randn(2, 50, 10, generator=gen))
    kd = DistillationLoss(temperature=2.0, weight=1.0, score_threshold=0.5)
    total, parts = kd(teacher, teacher)
    assert float(total) == pytest.approx(0.0, abs=1e-6)
    student = tuple((t + 0.3 * torch.randn(t.shape, generator=gen)).requires_grad_() for t in teacher)
    total, parts = kd(student, teacher)
    assert all(float(v) > 0 for v in parts.values())
    total.backward()
    confident = torch.softmax(teacher[1], -1)[..., 1] > 0.5
    assert (student[0].grad[~confident] == 0).all() and (student[0].grad[confident] != 0).any()


def test_distillation_run(trained, tiny_data, tmp_path) -> None:
    _, teacher_run = trained
    result = train(tiny_config(tiny_data, tmp_path, epochs=1, teacher=str(teacher_run / "best_weights.pth")))
    row = result.metrics["history"][0]
    assert {"loss_kd_cls", "loss_kd_box", "loss_kd_landmarks"} <= set(row)
    with pytest.raises(MobilekitError, match="does not fit"):
        Trainer(tiny_config(tiny_data, tmp_path, teacher=str(teacher_run / "best_weights.pth"), teacher_model="featherface_v2"))


@pytest.mark.slow
def test_ddp_gloo_two_processes(tiny_data, tmp_path) -> None:
    torchrun = console_script("torchrun")
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", MOBILEKIT, "train", "--model", MODEL, "--data", str(tiny_data),
         "--out", str(out), "--epochs", "1", "--batch", "2", "--imgsz", "64", "--device", "cpu", "--no-progress"],
        env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(2 process(es))" in proc.stdout and "batch 2, 2 steps/epoch" in proc.stdout
    assert [int(r["epoch"]) for r in read_csv(out / "results.csv")] == [1]
    assert load_weights(create_model(MODEL), out / "best_weights.pth").ok


def test_small_datasets_never_give_one_image_batches(tiny_data, tmp_path) -> None:
    trainer = Trainer(tiny_config(tiny_data, tmp_path, batch=3))  # 10 train images: 3 + 3 + 3, the last one dropped
    assert len(trainer.train_set) == 10 and trainer.steps_per_epoch == 3
    assert [images.shape[0] for images, _, _ in trainer._loader(0)] == [3, 3, 3]
    trainer.close()
    trainer = Trainer(tiny_config(tiny_data, tmp_path, batch=64))
    assert trainer.batch == 10 and trainer.steps_per_epoch == 1
    trainer.close()
    trainer = Trainer(tiny_config(tiny_data, tmp_path, batch="auto"))
    assert trainer.batch == 10  # CPU: the default (16), capped by the dataset
    trainer.close()


def test_learning_rate_schedule() -> None:
    cfg = TrainConfig(data="x", epochs=10, warmup_epochs=1, final_lr_ratio=0.02)
    factors = [_lr_factor(cfg, s, 10) for s in range(100)]
    assert factors[0] == pytest.approx(0.01) and factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(0.02, abs=2e-3)
    step = TrainConfig(data="x", epochs=10, warmup_epochs=0, schedule="step", step_milestones=(0.5,))
    assert _lr_factor(step, 49, 10) == 1.0 and _lr_factor(step, 50, 10) == pytest.approx(0.1)


def test_config_yaml_with_overrides_and_errors(tmp_path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"model": MODEL, "data": "d", "epochs": 7, "lr": 0.01, "batch": "auto"}))
    cfg = load_config(path, {"epochs": 3, "lr": None})
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.batch) == (MODEL, 3, 0.01, "auto")
    path.write_text("epochz: 3\n")
    with pytest.raises(MobilekitError, match="epochz"):
        load_config(path)
    with pytest.raises(MobilekitError, match="multiple of 32"):
        TrainConfig(data="d", imgsz=100).validate()
    with pytest.raises(MobilekitError, match="--data"):
        TrainConfig().validate()


@pytest.mark.slow
def test_eval_command_and_user_errors(trained, tiny_data, tmp_path, capsys) -> None:
    from mobilekit.cli import main

    _, out = trained
    main(["eval", "--model", MODEL, "--weights", str(out / "best_weights.pth"), "--data", str(tiny_data), "--imgsz", "64", "--device", "cpu", "--json", str(tmp_path / "m.json")])
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["images"] == 4 and metrics["faces"] > 0 and 0.0 <= metrics["ap50"] <= 1.0
    assert "AP50" in capsys.readouterr().out
    for argv, message in (
        (["eval", "--model", MODEL], "--weights"),
        (["train", "--model", MODEL], "--data"),
        (["train", "--model", MODEL, "--data", str(tiny_data), "--batch", "1", "--device", "cpu"], "batch"),
        (["train", "--resume", str(tmp_path / "m.json")], "m.json"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_batchnorm_recalibration_gives_the_exact_statistics_of_the_batches() -> None:
    from mobilekit.training.batchnorm import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=0.01)).eval()
    batches = [torch.randn(4, 3, 5, 5) * 3 + 1 for _ in range(3)]
    assert recalibrate_batchnorm(model, batches, max_images=8) == 8
    with torch.no_grad():
        features = torch.cat([model[0](b) for b in batches[:2]])
    bn = model[1]
    assert torch.allclose(bn.running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.01 and not model.training


def test_init_weights_start_the_model_from_a_checkpoint(trained, tiny_data, tmp_path) -> None:
    _, run = trained
    trainer = Trainer(tiny_config(tiny_data, tmp_path, init_weights=str(run / "best_weights.pth")))
    expected = torch.load(run / "best_weights.pth", weights_only=True)
    assert all(torch.equal(v, expected[k]) for k, v in trainer.model.state_dict().items())
    trainer.close()


def test_batches_cross_to_the_device_as_uint8_and_train_in_float32(tiny_data, tmp_path) -> None:
    """A quarter of the host-to-device bytes of float32, and the exact same float values for the step."""
    trainer = Trainer(tiny_config(tiny_data, tmp_path / "run"))
    try:
        images, targets, _ = next(iter(trainer._loader(0)))
        assert images.dtype == torch.uint8 and targets[0].dtype == torch.float32
        on_device = trainer._to_device(images)
        assert on_device.dtype == torch.float32 and torch.equal(on_device, images.float())
    finally:
        trainer.close()


def _first_step_losses(config: TrainConfig, steps: int = 2) -> list[float]:
    trainer = Trainer(config)
    try:
        batches = [batch for batch, _ in zip(trainer._loader(0), range(steps))]
        return [trainer._step(images, targets, 0, i)["total"] for i, (images, targets, _) in enumerate(batches)]
    finally:
        trainer.close()


def test_the_same_seed_gives_the_same_losses(tiny_data, tmp_path) -> None:
    """Augmentation, shuffling and initialisation all follow the seed: training results replay exactly."""
    first = _first_step_losses(tiny_config(tiny_data, tmp_path / "a"))
    assert _first_step_losses(tiny_config(tiny_data, tmp_path / "b")) == first
    assert _first_step_losses(tiny_config(tiny_data, tmp_path / "c", seed=1)) != first


def test_force_ddp_without_torchrun_is_a_clear_error(tiny_data, tmp_path, monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MobilekitError, match="--force-ddp needs torchrun: RANK, WORLD_SIZE, MASTER_ADDR not set"):
        Trainer(tiny_config(tiny_data, tmp_path, force_ddp=True))


def test_ddp_kept_on_at_world_size_one_trains_like_the_plain_run(tiny_data, tmp_path, monkeypatch) -> None:
    """What torchrun --nproc_per_node 1 sets; DDP (gloo here, NCCL on a GPU) must not change the losses."""
    import socket

    from mobilekit.benchmarks.ddp_check import compare

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    result = compare(tiny_config(tiny_data, tmp_path), steps=2)
    assert result["backend"] == "gloo" and result["world_size"] == 1
    assert len(result["ddp_losses"]) == 2 and result["ddp_losses"] == result["plain_losses"]
    assert not torch.distributed.is_initialized()  # closed with the trainer


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses(tiny_data, tmp_path) -> None:
    eager = _first_step_losses(tiny_config(tiny_data, tmp_path / "eager", ema=False))
    compiled = _first_step_losses(tiny_config(tiny_data, tmp_path / "compiled", ema=False, compile=True))
    assert compiled == pytest.approx(eager, rel=1e-4)


def test_data_loader_workers_start_after_the_parent_used_opencv(tmp_path) -> None:
    """A forked worker must not touch OpenCV's thread pool (cv2.setNumThreads there deadlocked once the
    parent had used the pool): the parent resizes first, then a one-worker loader delivers its batches."""
    script = f"""
import cv2, numpy as np
from pathlib import Path
from mobilekit.benchmarks.data_pipeline import loader_rate
from mobilekit.data.dataset import FaceDataset, detection_collate
from mobilekit.data.synth import make_synthetic_dataset
cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1500, 1500))
data = make_synthetic_dataset(Path({str(tmp_path / "synth")!r}), 8, seed=0, imgsz=128)
print(loader_rate(FaceDataset(data, "train", 128, augment=True), detection_collate, 1, 2, 2)["images"])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "4", proc.stderr[-2000:]
