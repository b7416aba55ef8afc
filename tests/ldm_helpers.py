"""Tiny LDM sizes shared by the model and weight-loading tests; the short training config."""

from pathlib import Path

from dancegen.config import DancegenConfig, load_config
from dancegen.models.guidance_encoder import GuidanceEncoderConfig
from dancegen.models.motion_module import MotionModuleConfig

TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                 layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                 attention_head_dim=4, norm_num_groups=8)
TINY_MOTION = MotionModuleConfig(num_attention_heads=4, norm_num_groups=8)
TINY_GUIDANCE = GuidanceEncoderConfig(guidance_embedding_channels=32,
                                      block_out_channels=(8, 16, 16, 32), attention_num_heads=4)

REPO = Path(__file__).resolve().parents[1]
# LDM stages short enough for tests, fixed seeds (the main job runs the full tiny schedule)
SHORT = ["edge.synthesis.music=null", "training.stage1.steps=30", "training.stage2.steps=24",
         "training.stage3.steps=4", "training.stage1.batch_size=2", "training.checkpoint_every=10",
         "training.log_every=2", "ldm.stand_in.vae_steps=20"]
# a short sampler so that generation runs in seconds: 3 DDIM steps, 24-frame segments
FAST = ["generation.ddim_steps=3", "generation.segment_frames=24", "generation.overlap_frames=6",
        "generation.window_frames=12", "generation.window_overlap=4"]


def short_config(*extra: str) -> DancegenConfig:
    """configs/local-cpu.yaml with :data:`SHORT` and ``extra`` overrides."""
    return load_config(REPO / "configs/local-cpu.yaml", [*SHORT, *extra])
