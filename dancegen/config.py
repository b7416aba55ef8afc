"""Pipeline configuration: pydantic models loaded from YAML, overridable from the CLI.

Every value that changes what a stage computes lives here, so that a shard's completion
record can hash the part of the config its stage depends on (see ``storage/records.py``).
Unknown keys are errors: a typo in a YAML file must not silently fall back to a default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dancegen.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    """Segmentation of motion + music into fixed windows (the unit the whole pipeline indexes)."""

    version: str = Field("v1", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                         description="a folder name in the store (no '..': see storage/paths)")
    fps: int = Field(30, gt=0, description="dataset frame rate for motion, features, maps, frames")
    segment_seconds: float = Field(5.0, gt=0)
    stride_seconds: float = Field(5.0, gt=0, description="window hop; < segment_seconds overlaps")
    max_segments_per_sequence: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check_version(self) -> DatasetConfig:
        if ".." in self.version:
            raise ValueError(f"dataset.version {self.version!r} must not contain '..'")
        return self

    @property
    def segment_frames(self) -> int:
        """Frames per segment at the dataset frame rate (150 for 5 s at 30 fps)."""
        return round(self.segment_seconds * self.fps)


class JukeboxSettings(_Strict):
    """Jukebox features (EDGE's conditioning): 5B top-prior activations, per frame.

    Weights are OpenAI's released files; sizes are read from them, except what their tensors do
    not show (head count, attention blocks), which is 5B's unless set here.
    """

    vqvae: str = Field("jukebox/5b/vqvae.pth.tar",
                       description="VQ-VAE checkpoint: path or s3://; relative = under inputs")
    prior: str = Field("jukebox/5b/prior_level_2.pth.tar",
                       description="top-prior checkpoint: path or s3://; relative = under inputs")
    layer: int = Field(66, gt=0, description="transformer block whose output is the feature "
                                             "(1-based, as jukemirlib; EDGE: 66)")
    heads: int = Field(8, gt=0)
    blocks: int = Field(128, gt=0, description="n_ctx // blocks = attention block length")
    chunk_seconds: float = Field(
        5.0, gt=0, description="audio is cut on a fixed grid of chunks this long from the track "
                               "start, each its own context (EDGE: its 5-s slices)")
    batch_chunks: int = Field(8, gt=0, description="chunks per forward pass")
    activation_dtype: Literal["float32", "float16"] = Field(
        "float32", description="the prior's activations: float32 as jukemirlib computed the "
                               "features EDGE's checkpoint was trained on; float16 is an "
                               "opt-in GPU speed mode whose features differ (docs/jukebox.md)")


class MusicConfig(_Strict):
    """Music features. ``baseline`` is EDGE's 35-d librosa feature set (offline default);
    ``jukebox`` adds 4800-d Jukebox features (stage ``jukebox``) as the conditioning."""

    backend: Literal["baseline", "jukebox"] = "baseline"
    audio_sample_rate: int = Field(22050, gt=0, description="rate of the stored audio array")
    hop_length: int = Field(512, gt=0, description="feature hop; feature rate = fps * hop")
    tightness: float = Field(100.0, gt=0, description="librosa beat_track tightness (EDGE: 100)")


class FallbackCamera(_Strict):
    """Camera used when the inputs have no AIST++ camera settings (metres, dancer at origin)."""

    distance_m: float = Field(4.5, gt=0)
    height_m: float = Field(1.3, description="camera height above the floor (y = 0)")
    look_at_height_m: float = Field(1.0)
    focal_px: float = Field(1600.0, gt=0, description="at the sensor size below")
    sensor_width: int = Field(1920, gt=0)
    sensor_height: int = Field(1080, gt=0)


class RenderConfig(_Strict):
    """Rendered guidance: geometry (fixed in the data contract) and the rendering set-up."""

    width: int = Field(640, gt=0, multiple_of=64)
    height: int = Field(640, gt=0, multiple_of=64)
    heatmap_size: int = Field(64, gt=0, description="M2PEnc output resolution")
    heatmap_sigma: float = Field(1.5, gt=0, description="Gaussian sigma in heatmap pixels")
    camera: str = Field("c09", description="AIST++ camera name (the paper uses C09)")
    fallback_camera: FallbackCamera = FallbackCamera()
    body_model: str = Field(
        "smpl/SMPL_NEUTRAL.pkl",
        description="SMPL .pkl/.npz: path or s3:// URL; relative paths are under the inputs root",
    )
    platform: Literal["auto", "osmesa", "egl"] = Field(
        "auto", description="GL platform: auto = EGL when CUDA is visible, else OSMesa")
    occlusion_margin_m: float = Field(0.12, ge=0, description="joint hidden if this far behind")
    background_rgb: tuple[int, int, int] = (52, 56, 64)


class StorageConfig(_Strict):
    """Zarr layout knobs: a shard is ``shard_segments`` segments and the unit of atomic write;
    the chunk inside it, the unit of reading, is ``chunk_frames`` frames of one segment."""

    shard_segments: int = Field(8, gt=0)
    chunk_frames: int = Field(
        5, gt=0, description="frames per inner chunk of per-frame arrays: reading one frame "
                             "decodes this many; must divide the segment's frame count")
    compression_level: int = Field(1, ge=0, le=9, description="blosc-zstd level")
    lease_ttl_seconds: float = Field(
        120.0, gt=0, description="a build lease without a heartbeat for this long is stale")
    lease_wait_seconds: float = Field(
        3600.0, ge=0, description="how long a build waits for another build of the same store")


class StageResources(_Strict):
    """Ray resources of one worker of a stage, and how the stage's units run on Ray.

    Dataset stages with a set-up or GPUs (``render``) run on long-lived actors, each set up
    once (body model, GL context) and then fed shard after shard; the others (``motion``,
    ``music``, ...) and any stage with ``actors: 0`` run as one Ray task per shard.
    Per-track stages (``synthesis``, ``jukebox_extract``, ``evaluate``) and training run as
    Prefect tasks on Ray workers with these resources.
    """

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_mb: int | None = Field(
        None, gt=0, description="peak memory of one worker (Ray schedules by it; pods cap it)")
    actors: int | None = Field(
        None, ge=0, description="dataset stages: long-lived actors; null = as many as the "
                                "cluster fits for a stage with a set-up (render) or GPUs, "
                                "else one Ray task per shard; 0 = always one Ray task per shard")
    timeout_s: float = Field(
        3600.0, gt=0, description="a unit running longer fails with a timeout and its worker "
                                  "is stopped (a hung GL call or S3 read cannot be interrupted)")

    def ray_options(self) -> dict[str, Any]:
        """The ``ray.remote(**options)`` mapping for this stage."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_mb is not None:
            options["memory"] = self.memory_mb * 1024 * 1024
        if self.num_gpus > 0:
            # Ray's default for a GPU task is max_calls=1: a fresh process per task, which
            # reloads every per-process model cache (Jukebox prior, EDGE, the LDM) each time
            options["max_calls"] = 0
        return options


class RayConfig(_Strict):
    """Where tasks run. ``address: null`` starts a local Ray for the run; ``auto`` joins one."""

    address: str | None = None
    num_cpus: int | None = Field(None, gt=0, description="local Ray only")
    num_gpus: int | None = Field(
        None, ge=0, description="local Ray only: GPUs Ray schedules by (fake ones on a machine "
                                "without GPUs, to exercise the GPU path; code still runs on CPU)")
    include_dashboard: bool = False
    max_in_flight: int = Field(64, gt=0, description="bound on submitted, unfinished units")
    retries: int = Field(1, ge=0, description="retries of a unit after a non-input error")
    stages: dict[str, StageResources] = Field(default_factory=dict)

    def resources(self, stage: str) -> StageResources:
        """Resources for ``stage``; stages absent from the config take one CPU."""
        return self.stages.get(stage, StageResources())


class TrainStageConfig(_Strict):
    """One of the paper's three training stages."""

    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    frames: int = Field(gt=0, description="frames per training sample")
    resolution: int = Field(gt=0, multiple_of=64)
    learning_rate: float | None = Field(None, gt=0, description="this stage's AdamW rate; "
                                                                "null = training.learning_rate")


class LoaderConfig(_Strict):
    """The training data loader: worker processes that read batches ahead of the loop."""

    workers: int = Field(2, ge=0, description="DataLoader worker processes per rank; 0 reads "
                                              "in the training process")
    prefetch: int = Field(2, gt=0, description="batches each worker reads ahead")
    start_method: Literal["forkserver", "spawn", "fork"] = Field(
        "forkserver", description="how workers start: not fork in a Ray worker, whose gRPC "
                                  "threads do not survive a fork")


class TrainingConfig(_Strict):
    """The paper's training schedule (AdamW, lr 1e-5 for all three stages)."""

    optimizer: Literal["adamw"] = "adamw"
    learning_rate: float = Field(1e-5, gt=0)
    weight_decay: float = Field(1e-2, ge=0, description="CHAMP's AdamW weight decay")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "no", description="autocast dtype on CUDA workers; CPU workers always train in float32")
    workers: int = Field(1, gt=0, description="Ray Train workers (DDP ranks), one GPU each")
    gradient_checkpointing: bool = Field(
        False, description="recompute the denoising U-Net's activations in backward")
    checkpoint_every: int = Field(100, gt=0)
    log_every: int = Field(10, gt=0)
    seed: int = 0
    loader: LoaderConfig = LoaderConfig()
    stage1: TrainStageConfig
    stage2: TrainStageConfig
    stage3: TrainStageConfig

    def stage(self, number: int) -> TrainStageConfig:
        """The settings of stage 1, 2 or 3."""
        return {1: self.stage1, 2: self.stage2, 3: self.stage3}[number]

    @model_validator(mode="after")
    def _check_batches(self) -> TrainingConfig:
        for number in (1, 2, 3):
            if self.stage(number).batch_size % self.workers:
                raise ValueError(f"training.stage{number}.batch_size must be a multiple of "
                                 f"training.workers ({self.workers}): it is the global batch")
        if self.stage2.frames != 1:
            raise ValueError("training.stage2.frames must be 1: the image stage is per frame")
        return self


class LdmWeights(_Strict):
    """Published pretrained weights: local folders or s3:// URLs (docs/ldm.md has the layouts)."""

    stable_diffusion: str = Field(description="SD 1.5 folder with unet/ (diffusers layout)")
    vae: str = Field(description="VAE folder (diffusers AutoencoderKL, e.g. sd-vae-ft-mse)")
    image_encoder: str = Field(description="CLIP image encoder folder (transformers)")
    champ: str | None = Field(None, description="CHAMP's champ/ folder with *.pth; null = "
                                                "start from SD 1.5 alone")
    motion_module: str | None = Field(
        None, description="AnimateDiff's mm_sd_v15_v2.ckpt: the motion modules' start when "
                          "CHAMP's files are not given (CHAMP's stage 2 starts from it)")

    @model_validator(mode="after")
    def _one_motion_source(self) -> LdmWeights:
        if self.champ is not None and self.motion_module is not None:
            raise ValueError("ldm.weights: set champ (its motion_module.pth) or "
                             "motion_module (AnimateDiff's), not both")
        return self


class LdmStandIn(_Strict):
    """Offline stand-ins for the pretrained SD 1.5 / VAE / CLIP when no weights are configured.

    Built from these diffusers / transformers config dicts, written to the store in the
    published folder layouts and loaded from there like real weights. The VAE is trained on
    the dataset's frames first (a random frozen VAE would make the latents meaningless); the
    CLIP encoder stays random (it is frozen in every stage, a fixed random embedding).
    """

    unet: dict[str, Any]
    vae: dict[str, Any]
    image_encoder: dict[str, Any]
    vae_steps: int = Field(200, gt=0)
    vae_batch_size: int = Field(8, gt=0)
    vae_learning_rate: float = Field(1e-3, gt=0)
    vae_foreground_weight: float = Field(
        20.0, ge=0, description="extra L1 weight on pixels unlike the frame's background "
                                "(the dancer is ~5% of an AIST++ frame)")


class M2PEncSizes(_Strict):
    """M2PEnc widths (at 64, 32, 16 ... pixels) and its 3D attention blocks."""

    channels: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    attention_blocks: int = Field(2, ge=0)
    attention_heads: int = Field(8, gt=0)


class NoiseSchedule(_Strict):
    """One DDPM schedule for training and sampling (CHAMP's configs disagree; SD 1.5's here).

    The parameterisation must be the one the starting weights were trained with: SD 1.5 is
    epsilon with SD's betas and "leading" steps; CHAMP (and UniAnimate) v-prediction with
    zero terminal SNR and "trailing" steps (its ``enable_zero_snr``). Every LDM checkpoint
    records it, and resuming or sampling under another one is refused.
    """

    num_train_timesteps: int = Field(1000, gt=1)
    beta_start: float = Field(0.00085, gt=0)
    beta_end: float = Field(0.012, gt=0)
    beta_schedule: Literal["scaled_linear", "linear"] = "scaled_linear"
    prediction_type: Literal["epsilon", "v_prediction"] = Field(
        "epsilon", description="what the U-Net predicts: the noise, or v = a*noise - s*x0")
    zero_terminal_snr: bool = Field(
        False, description="rescale the betas so the last step is pure noise (Lin et al. 2024)")
    timestep_spacing: Literal["leading", "trailing", "linspace"] = Field(
        "leading", description="which training steps DDIM samples at (trailing starts at T)")

    @model_validator(mode="after")
    def _check_parameterisation(self) -> NoiseSchedule:
        if self.zero_terminal_snr and self.prediction_type == "epsilon":
            # at zero SNR the last step's input holds no signal: an epsilon model cannot
            # recover x0 from it (the x0 estimate divides by alpha_bar = 0)
            raise ValueError("ldm.schedule.zero_terminal_snr needs prediction_type "
                             "v_prediction")
        return self

    def scheduler_kwargs(self) -> dict[str, Any]:
        """The schedule as diffusers' DDPM/DDIM scheduler arguments."""
        return {"num_train_timesteps": self.num_train_timesteps, "beta_start": self.beta_start,
                "beta_end": self.beta_end, "beta_schedule": self.beta_schedule,
                "prediction_type": self.prediction_type,
                "rescale_betas_zero_snr": self.zero_terminal_snr,
                "timestep_spacing": self.timestep_spacing}


class LdmConfig(_Strict):
    """M2PEnc and the CHAMP-style LDM: sizes, weights, and what the losses need."""

    run_name: str = Field("ldm", pattern=r"^[A-Za-z0-9._-]+$")
    weights: LdmWeights | None = None
    stand_in: LdmStandIn | None = None
    m2penc: M2PEncSizes = M2PEncSizes()
    guidance_channels: list[int] = Field(default_factory=lambda: [16, 32, 96, 256],
                                         description="CHAMP's guidance encoder widths")
    guidance_heads: int = Field(8, gt=0)
    motion_heads: int = Field(8, gt=0)
    motion_max_frames: int = Field(32, gt=0, description="temporal position encoding length")
    schedule: NoiseSchedule = NoiseSchedule()
    noise_offset: float = Field(0.05, ge=0, description="CHAMP's offset noise")
    snr_gamma: float | None = Field(
        None, gt=0, description="min-SNR loss weighting (CHAMP: 5); null = plain MSE")
    uncond_ratio: float = Field(0.1, ge=0, lt=1, description="reference dropped (for CFG)")
    target_shift: int = Field(
        0, ge=0, description="stage 2: move each target frame and its guidance (not the "
                             "reference) by a random offset of up to this many pixels, so the "
                             "body's place must come from the guidance (0 = CHAMP: none)")
    heatmap_loss_weight: float = Field(1.0, ge=0, description="stage 1: L1 + w * heatmap MSE")
    stage3_pixel_weight: float = Field(0.5, ge=0, description="stage 3: 0.5 Lpix + 0.5 Lguid")
    stage3_guidance_weight: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _check_weights(self) -> LdmConfig:
        if (self.weights is None) == (self.stand_in is None):
            raise ValueError("set exactly one of ldm.weights (pretrained) and ldm.stand_in")
        return self


class GenerationConfig(_Strict):
    """Sampling a long video: DDIM with classifier-free guidance, in segments merged
    UniAnimate-style (each segment's first ``overlap_frames`` are conditioned on the previous
    segment's last ones, released for the last ``overlap_release`` of the steps, then
    cross-faded), and inside a segment CHAMP's overlapping temporal windows (the motion
    modules' attention spans ``window_frames``)."""

    ddim_steps: int = Field(20, gt=0, description="CHAMP's inference uses 20")
    guidance_scale: float = Field(3.5, ge=1.0, description="CFG scale; 1 = no guidance")
    eta: float = Field(0.0, ge=0, description="DDIM eta (0: deterministic)")
    segment_frames: int | None = Field(
        None, gt=1, description="frames per segment; null = the dataset's (5 s)")
    overlap_frames: int = Field(8, ge=1, description="frames each segment shares with the last")
    overlap_release: float = Field(
        0.2, ge=0, lt=1, description="share of the last steps in which the overlap is free "
                                     "(then cross-faded); 0 = exactly the previous frames")
    window_frames: int = Field(24, gt=1, description="denoiser window (CHAMP: 24)")
    window_overlap: int = Field(4, ge=0, description="overlap of the windows (CHAMP: 4)")
    seed: int = 0

    @model_validator(mode="after")
    def _check_overlaps(self) -> GenerationConfig:
        if self.window_overlap >= self.window_frames:
            raise ValueError("generation.window_overlap must be smaller than window_frames")
        return self


class EvaluationWeights(_Strict):
    """Pretrained files of the metrics (local paths or s3://); a metric whose file is not
    configured is reported as not computed, the others still run."""

    i3d: str | None = Field(None, description="FVD: StyleGAN-V i3d_torchscript.pt or a "
                                              "pytorch-i3d Kinetics-400 state dict")
    i3d_protocol: Literal["auto", "videogpt", "piergiaj"] = Field(
        "auto", description="a state dict's BatchNorm eps: VideoGPT's copy (1e-5, its "
                            "i3d_pretrained_400.pt) or piergiaj's (1e-3); auto: by file name")
    lpips_backbone: str | None = Field(None, description="torchvision ImageNet AlexNet/VGG16 "
                                                         "state dict")
    lpips_net: Literal["alex", "vgg"] = "alex"
    dwpose: str | None = Field(None, description="DWPose whole-body ONNX (dw-ll_ucoco_384)")
    blazepose: str | None = Field(
        None, description="folder with BlazePose's pose_detection.tflite and "
                          "pose_landmark_full.tflite, the 2D-BeatAlign detector when DWPose is "
                          "not configured; null = the copy scripts/setup.sh takes out of the "
                          "mediapipe wheel (<venv>/share/dancegen/blazepose)")


class EvaluationConfig(_Strict):
    """The evaluation flow: generate each test clip from its first frame and its music, then
    compare with the ground truth (FVD, LPIPS, PSNR, SSIM, 2D-BeatAlign, AV-Align)."""

    split: Literal["train", "val", "test"] = "test"
    max_clips: int | None = Field(None, gt=0, description="null = every clip of the split")
    clip_frames: int | None = Field(None, gt=1, description="null = whole segments")
    fvd_frames: int = Field(16, gt=1, description="frames per FVD clip (FVD16)")
    beat_align: Literal["bailando", "fact"] = "bailando"
    sample_frames: int = Field(4, ge=1, description="frames per clip shown in the report")
    weights: EvaluationWeights = EvaluationWeights()


class EdgeModelSizes(_Strict):
    """DanceDecoder sizes (EDGE's release: 512 wide, 1024 feed-forward, 8 layers, 8 heads)."""

    latent_dim: int = Field(512, gt=0)
    ff_size: int = Field(1024, gt=0)
    num_layers: int = Field(8, gt=0)
    num_heads: int = Field(8, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_heads(self) -> EdgeModelSizes:
        if self.latent_dim % self.num_heads or self.latent_dim % 2:
            raise ValueError("edge.model.latent_dim must be even and divisible by num_heads")
        return self


class EdgeDiffusionSettings(_Strict):
    """EDGE's diffusion: cosine schedule, x0 prediction, classifier-free guidance, DDIM."""

    timesteps: int = Field(1000, gt=1)
    cond_drop_prob: float = Field(0.25, ge=0, le=1, description="music dropout in training")
    guidance_weight: float = Field(2.0, ge=0)
    sampling_steps: int = Field(50, gt=0, description="DDIM steps")
    eta: float = Field(1.0, ge=0, description="DDIM eta (EDGE: 1)")


class EdgeTrainSettings(_Strict):
    """EDGE training. EDGE uses Adan (lr 4e-4, wd 0.02); dancegen trains with AdamW."""

    optimizer: Literal["adamw"] = "adamw"
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(4e-4, gt=0)
    weight_decay: float = Field(0.02, ge=0)
    ema_decay: float = Field(0.9999, ge=0, lt=1, description="EMA of the weights, every step")
    checkpoint_every: int = Field(100, gt=0, description="steps between resumable checkpoints")
    log_every: int = Field(10, gt=0)
    window_stride_seconds: float = Field(0.5, gt=0, description="EDGE slices 5-s windows at 0.5 s")
    seed: int = 0


class EdgeSynthesisSettings(_Strict):
    """Pseudo-motions: EDGE sampled on new music, rendered like AIST++ motion."""

    music: str | None = Field(
        None, description="folder of new music (path or s3://; relative = under the inputs "
                          "root); null = no pseudo-motions")
    checkpoint: str | None = Field(
        None, description="EDGE checkpoint.pt; null = the one train-edge wrote into the store")
    smpl_scaling: float | None = Field(
        None, gt=0, description="AIST++ body scale given to samples; null = the training "
                                "set's, as the checkpoint records it, else the inputs' median")
    seed: int = 0


class EdgeConfig(_Strict):
    """The EDGE music-to-motion model: sizes, diffusion, training and synthesis."""

    run_name: str = Field("edge", pattern=r"^[A-Za-z0-9._-]+$",
                          description="checkpoints go to <store>/models/edge/<run_name>/")
    features: Literal["baseline", "jukebox"] = Field(
        "baseline", description="music conditioning: EDGE baseline 35-d or Jukebox 4800-d")
    model: EdgeModelSizes = EdgeModelSizes()
    diffusion: EdgeDiffusionSettings = EdgeDiffusionSettings()
    train: EdgeTrainSettings
    synthesis: EdgeSynthesisSettings = EdgeSynthesisSettings()


class PlanningConfig(_Strict):
    """Scale figures for ``dancegen dataset plan`` (the paper's by default)."""

    aistpp_seconds: float = Field(18700.0, ge=0, description="AIST++ motion (paper: ~5.2 h)")
    pseudo_seconds: float = Field(36000.0, ge=0, description="EDGE pseudo-motions (300 x 2 min)")
    jukebox_seconds_per_music_second: float | None = Field(
        None, gt=0, description="measured 5B extraction cost on the target GPU "
                                "(benchmarks/jukebox.py there); null = measure on this machine")


class DancegenConfig(_Strict):
    """The whole pipeline configuration (one YAML file)."""

    name: str
    description: str = ""
    stages: list[Literal["motion", "music", "jukebox", "edge_repr", "render"]] = Field(
        default_factory=lambda: ["motion", "music", "edge_repr", "render"])
    dataset: DatasetConfig = DatasetConfig()
    music: MusicConfig = MusicConfig()
    jukebox: JukeboxSettings = JukeboxSettings()
    render: RenderConfig = RenderConfig()
    storage: StorageConfig = StorageConfig()
    ray: RayConfig = RayConfig()
    training: TrainingConfig
    edge: EdgeConfig
    ldm: LdmConfig
    generation: GenerationConfig = GenerationConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    planning: PlanningConfig = PlanningConfig()

    @model_validator(mode="after")
    def _check_windows(self) -> DancegenConfig:
        frames = self.dataset.segment_seconds * self.dataset.fps
        if abs(frames - round(frames)) > 1e-6:
            raise ValueError("dataset.segment_seconds * dataset.fps must be a whole frame count")
        if self.dataset.segment_frames % self.storage.chunk_frames:
            raise ValueError(f"storage.chunk_frames ({self.storage.chunk_frames}) must divide the "
                             f"segment's {self.dataset.segment_frames} frames")
        if self.training.stage3.frames > self.ldm.motion_max_frames:
            raise ValueError("training.stage3.frames exceeds ldm.motion_max_frames, the temporal "
                             "position encoding's length")
        segment = self.generation.segment_frames or self.dataset.segment_frames
        if self.generation.overlap_frames >= segment:
            raise ValueError("generation.overlap_frames must be smaller than the segments "
                             "(generation.segment_frames, default the dataset's)")
        if self.generation.window_frames > self.ldm.motion_max_frames:
            raise ValueError("generation.window_frames exceeds ldm.motion_max_frames, the "
                             "temporal position encoding's length")
        clip = self.evaluation.clip_frames or self.dataset.segment_frames
        if clip > self.dataset.segment_frames or clip < self.evaluation.fvd_frames:
            raise ValueError("evaluation.clip_frames must lie between evaluation.fvd_frames and "
                             "the dataset's segment frames")
        if self.music.backend == "jukebox" and "jukebox" not in self.stages:
            raise ValueError("music.backend=jukebox needs the jukebox stage in stages")
        chunk = self.jukebox.chunk_seconds * self.dataset.fps
        if abs(chunk - round(chunk)) > 1e-6:
            raise ValueError("jukebox.chunk_seconds * dataset.fps must be a whole frame count")
        return self

    def section_hash(self, *sections: str) -> str:
        """Stable hash of some top-level sections, e.g. ``("dataset", "music")``."""
        payload = {s: getattr(self, s).model_dump(mode="json") for s in sections}
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (``8``, ``null``, ``[a, b]``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. storage.shard_segments=4")
    return key.strip(), yaml.safe_load(raw)


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "<root>"
    more = len(error.errors()) - 1
    tail = f" (and {more} more)" if more else ""
    got = f" (got {first['input']!r})" if first["type"] != "missing" else ""
    return f"invalid config {source}: {field}: {first['msg']}{got}{tail}"


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> DancegenConfig:
    """Validate a config mapping; raises ConfigError naming the first bad field."""
    try:
        return DancegenConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


REPO = Path(__file__).resolve().parents[1]


def load_config(path: str | Path, overrides: list[str] | None = None) -> DancegenConfig:
    """Load a YAML config and apply ``KEY=VALUE`` overrides (dotted keys).

    A relative path that does not exist from the working directory is looked up in the
    repository, so ``configs/local-cpu.yaml`` works from anywhere (CLI, deployments).
    """
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = REPO / path
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    for text in overrides or []:
        _set_dotted(data, *parse_override(text))
    return config_from_dict(data, str(path))
