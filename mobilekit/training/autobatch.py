"""``--batch auto``: the largest batch that fits the free GPU memory, measured with two trial steps."""

from __future__ import annotations

import copy

import torch

CPU_DEFAULT_BATCH = 16
MEMORY_FRACTION = 0.7
MAX_BATCH = 256


def _peak_bytes(model, criterion, batch: int, imgsz: int, device: torch.device, amp_dtype) -> int:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    images = torch.rand(batch, 3, imgsz, imgsz, device=device) * 255
    keypoints = 2 * model.deploy.num_landmarks  # the target row of the model's family (mobilekit.data.dataset)
    targets = [torch.tensor([[0.3, 0.3, 0.6, 0.6] + [0.45] * keypoints + [1.0]], device=device)] * batch
    with torch.autocast("cuda", dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None):
        raw = model(images)
    loss, _ = criterion(raw, targets)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return torch.cuda.max_memory_allocated(device) - base


def auto_batch_size(model, criterion, imgsz: int, device: torch.device, amp_dtype, log) -> int:
    """Batch size from free GPU memory; on CPU a clear message and :data:`CPU_DEFAULT_BATCH`."""
    if device.type != "cuda":
        log(f"--batch auto needs a CUDA device to measure memory; using batch {CPU_DEFAULT_BATCH} on {device.type}")
        return CPU_DEFAULT_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    state = copy.deepcopy(model.state_dict())  # the trial steps must not touch batch-norm statistics
    small, large = _peak_bytes(model, criterion, 2, imgsz, device, amp_dtype), _peak_bytes(model, criterion, 4, imgsz, device, amp_dtype)
    model.load_state_dict(state)
    per_image = max((large - small) / 2, 1.0)
    fixed = max(small - 2 * per_image, 0.0)
    batch = int((free * MEMORY_FRACTION - fixed) // per_image)
    batch = max(2, min(MAX_BATCH, batch - batch % 2))
    log(f"--batch auto: {free / 2**30:.1f} GiB free, ~{per_image / 2**20:.0f} MiB per image at {imgsz}px -> batch {batch}")
    return batch
