"""Base class shared by every mobilekit detector: the input contract and the deployment outputs."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilekit.config import DeployConfig
from mobilekit.families import with_family_anchors


class FaceDetector(nn.Module):
    """A face detector taking raw RGB pixels 0-255 (float, NCHW).

    Subclasses implement :meth:`forward_normalized` on the normalised tensor the network was
    trained on (``deploy.channel_order``, ``deploy.mean``, ``deploy.std``) and return raw head
    outputs; :meth:`deploy_outputs` turns them into what exported files return.
    """

    deploy: DeployConfig

    def __init__(self, deploy: DeployConfig) -> None:
        super().__init__()
        deploy = self.deploy = with_family_anchors(deploy)
        order = deploy.channel_order.upper()
        if sorted(order) != ["B", "G", "R"]:
            raise ValueError(f"channel_order must be a permutation of RGB, got {deploy.channel_order!r}")
        perm = ["RGB".index(c) for c in order]
        self.channel_permutation: list[int] | None = None if perm == [0, 1, 2] else perm
        # Non-persistent: checkpoints keep exactly the keys of the reference implementations.
        self.register_buffer("input_mean", torch.tensor(deploy.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(deploy.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.input_std_is_one = all(s == 1.0 for s in deploy.std)

    # -- input contract -------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """RGB 0-255 -> the network's own input (channel order, mean, std)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"input must be [N, 3, H, W] RGB, got shape {tuple(images.shape)}")
        if self.channel_permutation is not None:
            images = images[:, self.channel_permutation]
        images = images - self.input_mean
        if not self.input_std_is_one:
            images = images / self.input_std
        return images

    def first_conv(self) -> nn.Conv2d:
        """The convolution that sees the normalised image (used to fold preprocessing for export).

        Models built on the MobileNet backbone keep it as ``self.body``; others override this."""
        backbone = self.backbone_module()
        if backbone is None:
            raise NotImplementedError(f"{type(self).__name__} must say which convolution sees the image")
        return backbone.first_conv()

    @torch.no_grad()
    def fold_input_preprocessing(self) -> None:
        """Fold the channel permutation and the std division into the first convolution.

        Exact up to float rounding; afterwards :meth:`normalize` only subtracts the mean, in RGB
        order. Export uses this so that converters never see a channel gather on the input
        (onnx2tf mis-converts it) and apps feed plain RGB pixels.
        """
        conv = self.first_conv()
        weight = conv.weight
        if not self.input_std_is_one:
            weight.div_(self.input_std.view(1, 3, 1, 1))
            self.input_std.fill_(1.0)
            self.input_std_is_one = True
        if self.channel_permutation is not None:
            inverse = [self.channel_permutation.index(c) for c in range(3)]
            weight.copy_(weight[:, inverse].clone())
            self.input_mean.copy_(self.input_mean[:, inverse].clone())
            self.channel_permutation = None

    # -- outputs ------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor):
        return self.forward_normalized(self.normalize(images))

    def forward_normalized(self, x: torch.Tensor):
        raise NotImplementedError

    def deploy_outputs(self, raw):
        """Raw head outputs -> exported outputs, in ``deploy.output_names`` order."""
        loc, conf_logits, landmarks = raw
        return loc, F.softmax(conf_logits, dim=-1), landmarks

    def component_modules(self) -> dict[str, nn.Module]:
        """Named top-level parts for parameter/MAC breakdowns."""
        return dict(self.named_children())

    def backbone_module(self) -> nn.Module | None:
        """The MobileNet-0.25 backbone (``self.body``), where the model has one (for ImageNet pretraining)."""
        return getattr(self, "body", None)


class DeployModule(nn.Module):
    """What gets exported: RGB pixels in, ``deploy.output_names`` out."""

    def __init__(self, model: FaceDetector) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return self.model.deploy_outputs(self.model(images))
