"""FeatherFace V1 and V2 assembled from the layers, plus their legacy key mapping."""

from __future__ import annotations

import torch
from torch import nn

from featherface.models.attention import PerLevelCBAM, SharedCBAM
from featherface.models.backbone import MobileNetV1
from featherface.models.bifpn import BiFPNCell, LightSeparableConv, SeparableConv
from featherface.models.context import deformable_ssh, grouped_ssh, light_shuffle_block, shuffle_block
from featherface.models.deform import DeformConv2d
from featherface.models.fuse import fuse_model
from featherface.models.heads import SharedHead, flatten_level
from featherface.models.padding import install_padding_hooks
from featherface.models.registry import ModelCfg, WeightsCfg, register_model

NUM_LEVELS = 3
ANCHORS_PER_LOCATION = 2

ModelOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class PerLevel(nn.ModuleList):
    """One module per pyramid level: ``forward(features)`` applies each to its level's features."""

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [module(x) for module, x in zip(self, features)]


class SeparateHeads(nn.Module):
    """Per-level 1×1 conv heads for class (2), box (4) and landmarks (10) per anchor (V1)."""

    def __init__(self, in_channels: int, num_anchors: int = ANCHORS_PER_LOCATION) -> None:
        super().__init__()
        self.class_head = nn.ModuleList(nn.Conv2d(in_channels, num_anchors * 2, 1) for _ in range(NUM_LEVELS))
        self.box_head = nn.ModuleList(nn.Conv2d(in_channels, num_anchors * 4, 1) for _ in range(NUM_LEVELS))
        self.landmark_head = nn.ModuleList(
            nn.Conv2d(in_channels, num_anchors * 10, 1) for _ in range(NUM_LEVELS)
        )

    def forward(self, features: list[torch.Tensor]) -> ModelOutput:
        loc = torch.cat([flatten_level(h(x), 4) for h, x in zip(self.box_head, features)], dim=1)
        conf = torch.cat([flatten_level(h(x), 2) for h, x in zip(self.class_head, features)], dim=1)
        landms = torch.cat([flatten_level(h(x), 10) for h, x in zip(self.landmark_head, features)], dim=1)
        return loc, conf, landms


class SharedHeads(nn.Module):
    """One :class:`SharedHead` per level, outputs concatenated over levels (V2)."""

    def __init__(self, in_channels: int, trunk_channels: int, groups: int = 1) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            SharedHead(in_channels, trunk_channels, ANCHORS_PER_LOCATION, groups) for _ in range(NUM_LEVELS)
        )

    def forward(self, features: list[torch.Tensor]) -> ModelOutput:
        outputs = [head(x) for head, x in zip(self.levels, features)]
        loc, conf, landms = (torch.cat(parts, dim=1) for parts in zip(*outputs))
        return loc, conf, landms


class FeatherFace(nn.Module):
    """FeatherFace detector: body → attention → BiFPN → attention → SSH → shuffle → heads.

    ``forward(images)`` takes ``(B, 3, H, W)`` float images (BGR, mean-subtracted) and returns
    ``loc (B, P, 4)``, class logits ``conf (B, P, 2)`` and ``landms (B, P, 10)``, one row per prior
    in :func:`featherface.priors.prior_boxes` order, in train and eval mode alike.
    :meth:`fuse` gives an inference-only copy with the same outputs, faster.
    """

    fused: bool = False

    def __init__(
        self,
        body_attention: nn.Module,
        neck: nn.Sequential,
        neck_attention: nn.Module,
        context: nn.Module,
        shuffle: nn.ModuleList,
        heads: nn.Module,
    ) -> None:
        super().__init__()
        self.body = MobileNetV1()
        self.body_attention = body_attention
        self.neck = neck
        self.neck_attention = neck_attention
        self.context = context
        self.shuffle = shuffle
        self.heads = heads
        install_padding_hooks(self, spatial_modules=(DeformConv2d,))

    def forward_neck(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Pyramid features after the neck attention: three ``(B, C, H/s, W/s)`` maps."""
        features = self.body(images)
        return self.neck_attention(self.neck(self.body_attention(features)))

    def forward_head(self, neck_features: list[torch.Tensor]) -> ModelOutput:
        """Context, shuffle and heads on the neck features."""
        features = [shuffle(x) for shuffle, x in zip(self.shuffle, self.context(neck_features))]
        return self.heads(features)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        return self.forward_head(self.forward_neck(images))

    def fuse(self, channels_last: bool = True) -> FeatherFace:
        """An inference-only copy with batch norms, shuffles and shared-input convs folded.

        See :func:`featherface.models.fuse.fuse_model`; this model is left unchanged.
        """
        return fuse_model(self, channels_last=channels_last)

    def train(self, mode: bool = True) -> FeatherFace:
        if mode and self.fused:
            raise RuntimeError(
                "this model was fused for inference (batch norms folded) and cannot be trained; "
                "train the unfused model and call .fuse() afterwards"
            )
        return super().train(mode)


def build_featherface_v1() -> FeatherFace:
    """The published FeatherFace V1 (592,371 parameters)."""
    channels = 64
    body_channels = MobileNetV1.out_channels
    neck = nn.Sequential(
        *[
            BiFPNCell(
                channels,
                in_channels=body_channels if i == 0 else None,
                conv_block=SeparableConv,
                bottom_up_laterals=True,
                p5_weight_slots=3,
            )
            for i in range(3)
        ]
    )
    return FeatherFace(
        body_attention=PerLevelCBAM(body_channels),
        neck=neck,
        neck_attention=PerLevelCBAM((channels,) * NUM_LEVELS),
        context=PerLevel(deformable_ssh(channels, channels) for _ in range(NUM_LEVELS)),
        shuffle=nn.ModuleList(shuffle_block(channels) for _ in range(NUM_LEVELS)),
        heads=SeparateHeads(channels),
    )


def build_featherface_v2() -> FeatherFace:
    """The FeatherFace V2 student (~0.25M parameters, no deformable convs)."""
    channels = 32
    body_channels = MobileNetV1.out_channels
    neck = nn.Sequential(
        *[
            BiFPNCell(
                channels,
                in_channels=body_channels if i == 0 else None,
                conv_block=LightSeparableConv,
                bottom_up_laterals=False,
                lateral_bias=False,
            )
            for i in range(2)
        ]
    )
    return FeatherFace(
        body_attention=SharedCBAM(body_channels, reduction=32),
        neck=neck,
        neck_attention=SharedCBAM((channels,) * NUM_LEVELS, reduction=32),
        context=PerLevel(grouped_ssh(channels, channels, groups=4) for _ in range(NUM_LEVELS)),
        shuffle=nn.ModuleList(light_shuffle_block(channels, groups=4) for _ in range(NUM_LEVELS)),
        heads=SharedHeads(channels, trunk_channels=16, groups=2),
    )


#: Rules (regex, replacement), applied in order, that rename the original FeatherFace V1
#: implementation's state-dict keys to this package's names.
FEATHERFACE_V1_LEGACY_KEYS: tuple[tuple[str, str], ...] = (
    (r"^bacbkbone_(\d)_cbam\.", r"body_attention.levels.\1."),
    (r"^bif_cbam_(\d)\.", r"neck_attention.levels.\1."),
    (r"\.ChannelGate\.mlp\.1\.", ".channel_gate.fc1."),
    (r"\.ChannelGate\.mlp\.3\.", ".channel_gate.fc2."),
    (r"\.SpatialGate\.spatial\.", ".spatial_gate."),
    (r"^bifpn\.", "neck."),
    (r"\.depthwise_conv\.conv\.", ".depthwise."),
    (r"\.pointwise_conv\.conv\.", ".pointwise."),
    (r"\.p([345])_down_channel\.0\.conv\.", r".lateral_p\1.0."),
    (r"\.p([345])_down_channel\.1\.", r".lateral_p\1.1."),
    (r"\.p([45])_down_channel_2\.0\.conv\.", r".lateral_p\1_bottom_up.0."),
    (r"\.p([45])_down_channel_2\.1\.", r".lateral_p\1_bottom_up.1."),
    (r"^ssh1\.", "context.0."),
    (r"^ssh2\.", "context.1."),
    (r"^ssh3\.", "context.2."),
    (r"\.conv3X3\.", ".conv3x3."),
    (r"\.conv5X5_1\.", ".conv5x5_1."),
    (r"\.conv5X5_2\.", ".conv5x5_2."),
    (r"\.conv7X7_2\.", ".conv7x7_2."),
    (r"\.modulator_conv\.", ".mask_conv."),
    (r"\.regular_conv\.weight$", ".weight"),
    (r"^ssh1_cs\.", "shuffle.0."),
    (r"^ssh2_cs\.", "shuffle.1."),
    (r"^ssh3_cs\.", "shuffle.2."),
    (r"^ClassHead\.(\d)\.conv1x1\.", r"heads.class_head.\1."),
    (r"^BboxHead\.(\d)\.conv1x1\.", r"heads.box_head.\1."),
    (r"^LandmarkHead\.(\d)\.conv1x1\.", r"heads.landmark_head.\1."),
)


WIDERFACE_DEV_PROTOCOL = (
    "668 WIDER FACE val images (every 5th image of each event) at original size, official "
    "protocol; FaceDetector with score 0.02, NMS 0.4, top 750; measured with featherface"
)

FEATHERFACE_V1_WIDERFACE = WeightsCfg(
    tag="widerface",
    num_params=592_371,
    license="MIT",
    source="FeatherFace (Electronics 2025, 14(3), 517) public training repository; converted to "
    "safetensors by `featherface weights convert` (profiler keys dropped, keys renamed)",
    hf_hub_id="featherface/featherface-v1-widerface",
    revision="v0.1.0",
    sha256="fb5c283c552f3cdf3f09081752e9c198c4a6727d405e1ab320c5798417cdf3cd",
    metrics={
        "widerface_val": {
            "easy": 0.9265,
            "medium": 0.9024,
            "hard": 0.7808,
            "protocol": "WIDER FACE val (3,226 images) at original size, as reported by the authors",
        },
        "widerface_val_dev": {
            "easy": 0.9321,
            "medium": 0.9092,
            "hard": 0.7930,
            "protocol": WIDERFACE_DEV_PROTOCOL,
        },
    },
    description="Trained on WIDER FACE train by the FeatherFace authors.",
)

register_model(
    ModelCfg(
        arch="featherface_v1",
        builder=build_featherface_v1,
        num_params=592_371,
        description="MobileNetV1-0.25 + CBAM + BiFPN (3 cells, 64 ch) + deformable SSH + channel shuffle",
        weights={"widerface": FEATHERFACE_V1_WIDERFACE},
        default_tag="widerface",
        legacy_key_rules=FEATHERFACE_V1_LEGACY_KEYS,
    )
)

FEATHERFACE_V2_WIDERFACE_KD = WeightsCfg(
    tag="widerface_kd",
    num_params=261_626,
    license="MIT",
    source="featherface: distilled from featherface_v1.widerface on 999 WIDER FACE train images "
    "(recipes/featherface_v2_widerface_kd.sh, stages 1 to 8; see docs/training.md)",
    hf_hub_id="featherface/featherface-v2-widerface-kd",
    revision="v0.1.0",
    sha256="2489c41a7ad45e58ae19b112b0095b3f21cbe434b58afa1280febbd7471477a6",
    package_file="pretrained/featherface_v2_widerface_kd.safetensors",
    metrics={
        "widerface_val_dev": {
            "easy": 0.8703,
            "medium": 0.8476,
            "hard": 0.6634,
            "protocol": WIDERFACE_DEV_PROTOCOL,
        },
    },
    description="Knowledge-distilled student of FeatherFace V1; shipped inside the package.",
)

register_model(
    ModelCfg(
        arch="featherface_v2",
        builder=build_featherface_v2,
        num_params=261_626,
        description="MobileNetV1-0.25 + shared CBAM + BiFPN (2 cells, 32 ch) + grouped SSH + shared heads",
        weights={"widerface_kd": FEATHERFACE_V2_WIDERFACE_KD},
        default_tag="widerface_kd",
    )
)
