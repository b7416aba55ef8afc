"""Tiny LDM sizes shared by the model and weight-loading tests."""

from dancegen.models.guidance_encoder import GuidanceEncoderConfig
from dancegen.models.motion_module import MotionModuleConfig

TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                 layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                 attention_head_dim=4, norm_num_groups=8)
TINY_MOTION = MotionModuleConfig(num_attention_heads=4, norm_num_groups=8)
TINY_GUIDANCE = GuidanceEncoderConfig(guidance_embedding_channels=32,
                                      block_out_channels=(8, 16, 16, 32), attention_num_heads=4)
