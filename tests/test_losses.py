"""The vectorised MultiBox loss equals Pytorch_Retinaface's published definition (written here as
its per-image loop) on random inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mobilekit.families import build_criterion
from mobilekit.families.retinaface.loss import MultiBoxLoss
from mobilekit.families.retinaface.matching import match_targets
from mobilekit.families.retinaface.priors import PriorConfig, prior_boxes_torch
from mobilekit.models import create_model

VARIANCES = (0.1, 0.2)


# -- reference: Pytorch_Retinaface utils/box_utils.py + layers/modules/multibox_loss.py ---------------
def ref_point_form(boxes):
    return torch.cat((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), 1)


def ref_jaccard(box_a, box_b):
    a, b = box_a.size(0), box_b.size(0)
    max_xy = torch.min(box_a[:, 2:].unsqueeze(1).expand(a, b, 2), box_b[:, 2:].unsqueeze(0).expand(a, b, 2))
    min_xy = torch.max(box_a[:, :2].unsqueeze(1).expand(a, b, 2), box_b[:, :2].unsqueeze(0).expand(a, b, 2))
    inter = torch.clamp(max_xy - min_xy, min=0)
    inter = inter[:, :, 0] * inter[:, :, 1]
    area_a = ((box_a[:, 2] - box_a[:, 0]) * (box_a[:, 3] - box_a[:, 1])).unsqueeze(1).expand_as(inter)
    area_b = ((box_b[:, 2] - box_b[:, 0]) * (box_b[:, 3] - box_b[:, 1])).unsqueeze(0).expand_as(inter)
    return inter / (area_a + area_b - inter)


def ref_encode(matched, priors, variances):
    g_cxcy = (matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]
    g_cxcy /= variances[0] * priors[:, 2:]
    g_wh = (matched[:, 2:] - matched[:, :2]) / priors[:, 2:]
    g_wh = torch.log(g_wh) / variances[1]
    return torch.cat([g_cxcy, g_wh], 1)


def ref_encode_landm(matched, priors, variances):
    matched = matched.reshape(matched.size(0), 5, 2)
    p = priors[:, None, :].expand(priors.size(0), 5, 4)
    g = (matched - p[:, :, :2]) / (variances[0] * p[:, :, 2:])
    return g.reshape(g.size(0), -1)


def ref_match(threshold, truths, priors, variances, labels, landms, loc_t, conf_t, landm_t, idx):
    overlaps = ref_jaccard(truths, ref_point_form(priors))
    best_prior_overlap, best_prior_idx = overlaps.max(1, keepdim=True)
    valid_gt_idx = best_prior_overlap[:, 0] >= 0.2
    best_prior_idx_filter = best_prior_idx[valid_gt_idx, :]
    if best_prior_idx_filter.shape[0] <= 0:
        loc_t[idx] = 0
        conf_t[idx] = 0
        return
    best_truth_overlap, best_truth_idx = overlaps.max(0, keepdim=True)
    best_truth_idx.squeeze_(0)
    best_truth_overlap.squeeze_(0)
    best_prior_idx.squeeze_(1)
    best_prior_idx_filter.squeeze_(1)
    best_truth_overlap.index_fill_(0, best_prior_idx_filter, 2)
    for j in range(best_prior_idx.size(0)):
        best_truth_idx[best_prior_idx[j]] = j
    matches = truths[best_truth_idx]
    conf = labels[best_truth_idx]
    conf[best_truth_overlap < threshold] = 0
    loc_t[idx] = ref_encode(matches, priors, variances)
    conf_t[idx] = conf
    landm_t[idx] = ref_encode_landm(landms[best_truth_idx], priors, variances)


def ref_log_sum_exp(x):
    x_max = x.data.max()
    return torch.log(torch.sum(torch.exp(x - x_max), 1, keepdim=True)) + x_max


def ref_multibox_loss(predictions, priors, targets, threshold=0.35, negpos_ratio=7):
    loc_data, conf_data, landm_data = predictions
    num, num_priors = loc_data.size(0), priors.size(0)
    loc_t = torch.zeros(num, num_priors, 4)
    landm_t = torch.zeros(num, num_priors, 10)
    conf_t = torch.zeros(num, num_priors, dtype=torch.long)
    for idx in range(num):
        ref_match(threshold, targets[idx][:, :4], priors, VARIANCES, targets[idx][:, -1], targets[idx][:, 4:14], loc_t, conf_t, landm_t, idx)
    pos1 = conf_t > 0
    n1 = max(pos1.long().sum().float(), 1)
    pos_idx1 = pos1.unsqueeze(pos1.dim()).expand_as(landm_data)
    loss_landm = F.smooth_l1_loss(landm_data[pos_idx1].view(-1, 10), landm_t[pos_idx1].view(-1, 10), reduction="sum")
    pos = conf_t != 0
    conf_t[pos] = 1
    pos_idx = pos.unsqueeze(pos.dim()).expand_as(loc_data)
    loss_l = F.smooth_l1_loss(loc_data[pos_idx].view(-1, 4), loc_t[pos_idx].view(-1, 4), reduction="sum")
    batch_conf = conf_data.view(-1, 2)
    loss_c = ref_log_sum_exp(batch_conf) - batch_conf.gather(1, conf_t.view(-1, 1))
    loss_c[pos.view(-1, 1)] = 0
    loss_c = loss_c.view(num, -1)
    _, loss_idx = loss_c.sort(1, descending=True)
    _, idx_rank = loss_idx.sort(1)
    num_pos = pos.long().sum(1, keepdim=True)
    num_neg = torch.clamp(negpos_ratio * num_pos, max=pos.size(1) - 1)
    neg = idx_rank < num_neg.expand_as(idx_rank)
    pos_idx = pos.unsqueeze(2).expand_as(conf_data)
    neg_idx = neg.unsqueeze(2).expand_as(conf_data)
    conf_p = conf_data[(pos_idx + neg_idx).gt(0)].view(-1, 2)
    loss_c = F.cross_entropy(conf_p, conf_t[(pos + neg).gt(0)], reduction="sum")
    n = max(num_pos.data.sum().float(), 1)
    return loss_l / n, loss_c / n, loss_landm / n1


# -- random inputs ---------------------------------------------------------------------------------
def random_targets(gen: torch.Generator, n_faces: int) -> torch.Tensor:
    """Faces of 0.02-0.5 of the image, landmarks inside, about a third without landmarks."""
    if n_faces == 0:
        return torch.zeros(0, 15)
    size = 0.02 + 0.48 * torch.rand(n_faces, 2, generator=gen)
    top_left = torch.rand(n_faces, 2, generator=gen) * (1 - size)
    boxes = torch.cat([top_left, top_left + size], 1)
    points = top_left.repeat(1, 5) + torch.rand(n_faces, 10, generator=gen) * size.repeat(1, 5)
    labels = torch.where(torch.rand(n_faces, generator=gen) < 0.33, -1.0, 1.0)
    return torch.cat([boxes, points, labels[:, None]], 1)


def random_batch(seed: int, face_counts: list[int], num_priors: int):
    gen = torch.Generator().manual_seed(seed)
    targets = [random_targets(gen, k) for k in face_counts]
    b = len(face_counts)
    raw = (torch.randn(b, num_priors, 4, generator=gen), torch.randn(b, num_priors, 2, generator=gen) * 2, torch.randn(b, num_priors, 10, generator=gen))
    return raw, targets


PRIOR_CFG = PriorConfig()
IMAGE_SIZE = (160, 192)


@pytest.mark.parametrize("seed,face_counts", [(0, [3, 1, 7]), (1, [12, 2]), (2, [1]), (3, [25, 4, 9, 1]), (4, [40])])
def test_multibox_loss_equals_reference(seed: int, face_counts: list[int]) -> None:
    priors = prior_boxes_torch(PRIOR_CFG, IMAGE_SIZE)
    raw, targets = random_batch(seed, face_counts, priors.shape[0])
    ref = ref_multibox_loss(raw, priors, targets)
    criterion = MultiBoxLoss(PRIOR_CFG, IMAGE_SIZE)
    total, parts = criterion(raw, targets)
    ours = (parts["box"], parts["cls"], parts["landmarks"])
    for name, a, b in zip(("box", "cls", "landmarks"), ours, ref):
        assert float(b) > 0, name
        assert torch.allclose(a, b.float(), rtol=1e-5, atol=1e-5), (name, float(a), float(b))
    assert torch.allclose(total, 2 * ref[0] + ref[1] + ref[2], rtol=1e-5, atol=1e-5)


def test_matching_equals_reference_including_tiny_and_shared_prior_faces() -> None:
    """Faces too small for any prior (IoU < 0.2) and several faces sharing their best prior."""
    priors = prior_boxes_torch(PRIOR_CFG, IMAGE_SIZE)
    face = [0.30, 0.30, 0.40, 0.40] + [0.35] * 10
    near = [0.302, 0.301, 0.401, 0.399] + [0.35] * 10
    tiny = [0.70, 0.70, 0.705, 0.706] + [0.7] * 10
    images = [
        torch.tensor([face + [1.0], near + [-1.0], tiny + [1.0]]),
        torch.tensor([tiny + [1.0]]),  # no face reaches 0.2: the whole image is background
        torch.tensor([near + [1.0], face + [1.0]]),
    ]
    n = priors.shape[0]
    loc_t, landm_t, conf_t = torch.zeros(3, n, 4), torch.zeros(3, n, 10), torch.zeros(3, n, dtype=torch.long)
    for idx, t in enumerate(images):
        ref_match(0.35, t[:, :4], priors, VARIANCES, t[:, -1], t[:, 4:14], loc_t, conf_t, landm_t, idx)
    matched = match_targets(images, priors, VARIANCES)
    assert torch.equal(matched.labels, conf_t)
    assert (matched.labels[1] == 0).all() and (matched.labels[0] != 0).any()
    pos = conf_t != 0
    assert torch.allclose(matched.loc[pos], loc_t[pos], atol=1e-5)
    assert torch.allclose(matched.landmarks[pos], landm_t[pos], atol=1e-5)


def test_loss_with_images_without_faces_and_gradients() -> None:
    priors = prior_boxes_torch(PRIOR_CFG, IMAGE_SIZE)
    raw, targets = random_batch(7, [0, 3, 0], priors.shape[0])
    raw = tuple(r.requires_grad_() for r in raw)
    ref = ref_multibox_loss(tuple(r.detach() for r in raw), priors, targets)
    total, parts = MultiBoxLoss(PRIOR_CFG, IMAGE_SIZE)(raw, targets)
    assert torch.allclose(parts["cls"], ref[1], rtol=1e-5)
    total.backward()
    assert all(torch.isfinite(r.grad).all() for r in raw)
    # As in the reference, negatives are mined per image (7 x its positives): a face-less image adds nothing.
    assert raw[1].grad[0].abs().sum() == 0 and raw[1].grad[1].abs().sum() > 0


def test_build_criterion_for_a_real_model_trains_down() -> None:
    torch.manual_seed(0)
    model = create_model("retinaface_mnet025")
    criterion = build_criterion(model, (128, 128))
    images = torch.rand(2, 3, 128, 128) * 255
    targets = [torch.tensor([[0.2, 0.2, 0.6, 0.7] + [0.4] * 10 + [1.0]]), torch.tensor([[0.5, 0.1, 0.9, 0.5] + [0.7, 0.3] * 5 + [-1.0]])]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        total, _ = criterion(model(images), targets)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="priors"):
        criterion(model(torch.rand(1, 3, 96, 96)), targets[:1])
