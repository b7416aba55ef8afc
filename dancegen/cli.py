"""``dancegen`` command line: fixtures, dataset build/info, and the end-to-end demo."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dancegen import watchdog
from dancegen.errors import ConfigError, DancegenError, InputError

if TYPE_CHECKING:
    from dancegen.config import RayConfig

app = typer.Typer(help="dancegen: music-driven dance video generation pipeline.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
dataset_app = typer.Typer(help="Build and inspect datasets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
edge_app = typer.Typer(help="EDGE, the music-to-motion model behind pseudo-motions.",
                       no_args_is_help=True)
app.add_typer(edge_app, name="edge")
motion_app = typer.Typer(help="Motion quality.", no_args_is_help=True)
app.add_typer(motion_app, name="motion")
ldm_app = typer.Typer(help="M2PEnc and the CHAMP-style video LDM.", no_args_is_help=True)
app.add_typer(ldm_app, name="ldm")

DEFAULT_CONFIG = "configs/local-cpu.yaml"
PREFECT_HOME = Path(".dancegen/prefect")

ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config value, e.g. --set storage.shard_segments=2 (repeatable).")]


def _fail(error: DancegenError) -> None:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2 if isinstance(error, ConfigError) else 1)


@app.command()
def fixtures(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic AIST++ layout to.")],
    seed: Annotated[int, typer.Option(help="Random seed of music and choreography.")] = 0,
    sequences: Annotated[int | None, typer.Option(
        help="Write this many sequences (AIST++ names, 60 shared musics) instead of the "
             "seven default ones: inputs of any size, e.g. 1000 x 56 s for a paper-size "
             "dry run.", min=1)] = None,
    seconds: Annotated[float, typer.Option(
        help="Length of each of --sequences (11 five-second segments at 56 s).",
        min=5.0)] = 56.0,
) -> None:
    """Write a procedural, SYNTHETIC stand-in for AIST++ (motions, splits, cameras, music)."""
    from dancegen.fixtures import write_fixtures
    from dancegen.fixtures.layout import scaled_sequences

    chosen = None if sequences is None else scaled_sequences(sequences, seconds)
    path = write_fixtures(out, chosen, seed=seed)
    typer.echo(f"wrote synthetic AIST++-layout fixtures to {path} (see {path}/SYNTHETIC.md)")


def run_flows(runs: list[tuple[str, dict]], config_file: str,
              overrides: list[str] | None, titles: list[str] | None = None) -> bool:
    """Run dancegen flows in order against one Prefect API (a local server for the whole
    sequence unless PREFECT_API_URL names one) and one Ray (the config's: local, or a cluster);
    print each final state and stop at the first that does not complete.
    ``runs``: (flow name, arguments); ``titles``: a progress line to print before each."""
    from dancegen.config import load_config
    from dancegen.flows.build_dataset import build_dataset, ray_task_runner
    from dancegen.flows.evaluate import evaluate
    from dancegen.flows.train_edge import train_edge
    from dancegen.flows.train_ldm import train_ldm
    from dancegen.local_prefect import prefect_api

    flows = {"build-dataset": build_dataset, "train-edge": train_edge, "train-ldm": train_ldm,
             "evaluate": evaluate}
    config = load_config(config_file, overrides)
    # Ray after the API is up: its workers inherit PREFECT_API_URL and PREFECT_API_AUTH_STRING
    with prefect_api(PREFECT_HOME.resolve()) as api, _ray(config.ray):
        for index, (flow_name, arguments) in enumerate(runs):
            if titles:
                typer.secho(titles[index], bold=True)
            shown = " ".join(f"{k}={v}" for k, v in arguments.items())
            typer.echo(f"Prefect API {api}; {flow_name} {shown} with config {config.name}")
            state = flows[flow_name].with_options(task_runner=ray_task_runner(config.ray))(
                config=config, return_state=True, **arguments)
            color = typer.colors.GREEN if state.is_completed() else typer.colors.RED
            typer.secho(f"{state.name}: {state.message}", fg=color)
            if not state.is_completed():
                return False
    return True


@contextmanager
def _ray(settings: RayConfig) -> Iterator[None]:
    """The config's Ray for the block. A local one (``ray.address`` null) is registered with
    the watchdog: its processes die with this command even on SIGKILL; a cluster's never."""
    import ray

    from dancegen.flows.build_dataset import ray_init_kwargs

    context = ray.init(**ray_init_kwargs(settings))
    session = context.address_info["session_dir"] if settings.address is None else None
    if session:
        watchdog.guard("ray", session)
    try:
        yield
    finally:
        ray.shutdown()
        if session:
            watchdog.release("ray", session)


def run_flow(flow_name: str, config_file: str, overrides: list[str] | None, inputs: str,
             out: str) -> bool:
    """Run ``build-dataset`` or ``train-edge`` on ``inputs`` into ``out`` (see run_flows)."""
    return run_flows([(flow_name, {"inputs": inputs, "out": out})], config_file, overrides)


def _run_flow_command(flow_name: str, config: str, overrides: list[str] | None, inputs: str,
                      out: str) -> None:
    try:
        ok = run_flow(flow_name, config, overrides, inputs, out)
    except DancegenError as error:
        _fail(error)
    raise typer.Exit(0 if ok else 1)


@dataset_app.command("build")
def dataset_build(
    inputs: Annotated[str, typer.Option(help="Inputs root in the AIST++ layout (path or s3://).")],
    out: Annotated[str, typer.Option(help="Store root (path or s3://).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Build or update a dataset: only missing or stale shards are computed."""
    _run_flow_command("build-dataset", config, set_, inputs, out)


@edge_app.command("train")
def edge_train(
    inputs: Annotated[str, typer.Option(help="Inputs root in the AIST++ layout (path or s3://).")],
    out: Annotated[str, typer.Option(help="Store root: checkpoints go to models/edge/<run>/.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Train (or resume training) EDGE on the train split of the inputs."""
    _run_flow_command("train-edge", config, set_, inputs, out)


@ldm_app.command("train")
def ldm_train(
    out: Annotated[str, typer.Option(help="Store root with the dataset; checkpoints go to "
                                          "models/ldm/<run>/stage<N>/.")],
    stage: Annotated[str, typer.Option(help="1, 2, 3 or all (1 then 2 then 3).")] = "all",
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Train (or resume) the LDM's stages: 1 M2PEnc, 2 image stage, 3 temporal + M2PEnc."""
    if stage not in ("1", "2", "3", "all"):
        _fail(DancegenError(f"--stage must be 1, 2, 3 or all, not {stage!r}"))
    stages = [1, 2, 3] if stage == "all" else [int(stage)]
    try:
        ok = run_flows([("train-ldm", {"stage": s, "out": out}) for s in stages], config, set_)
    except DancegenError as error:
        _fail(error)
    raise typer.Exit(0 if ok else 1)


def check_output_file(out: str, option: str) -> None:
    """Refuse at once a local output path that cannot be written: a folder, or a file whose
    folder is missing or not writable (an ``s3://`` URL is checked when it is written)."""
    if "://" in out:
        return
    path = Path(out)
    if path.is_dir():
        raise InputError(f"{option} {out}: a folder; expected the path of a file to write")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"{option} {out}: {folder} is not an existing folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists()
                                                     and not os.access(path, os.W_OK)):
        raise InputError(f"{option} {out}: not writable (permissions of {folder} or the file)")


@app.command()
def generate(
    music: Annotated[str, typer.Option(help="Music file (wav, flac, mp3, ...; path or s3://).")],
    image: Annotated[str, typer.Option(help="Reference photo of the person (path or s3://).")],
    out: Annotated[str, typer.Option(help="MP4 to write (path or s3://).")] = "video.mp4",
    store: Annotated[str, typer.Option(help="Store holding the trained LDM run.")] = (
        "runs/demo/store.zarr"),
    seconds: Annotated[float | None, typer.Option(help="Only the first SECONDS of the music.")] = (
        None),
    seed: Annotated[int | None, typer.Option(help="Sampling seed (default generation.seed).")] = (
        None),
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Generate a video of the person in IMAGE dancing to MUSIC, with the music muxed."""
    import time

    from dancegen.config import load_config
    from dancegen.storage.media import read_image, read_music, write_mp4
    from dancegen.tasks.generation import generate_for_music, load_pipeline, prepare_reference

    try:
        check_output_file(out, "--out")  # before minutes of loading and sampling
        cfg = load_config(config, set_)
        audio, rate = read_music(music)
        photo = read_image(image)
        typer.echo(f"loading the LDM run {cfg.ldm.run_name!r} from {store}")
        pipeline = load_pipeline(store, cfg)
        reference = prepare_reference(photo, pipeline.resolution, image)
        frames = round(seconds * cfg.dataset.fps) if seconds else None
        music_id = Path(music).stem
        started = time.perf_counter()
        with typer.progressbar(length=1, label="denoising") as bar:
            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(1)

            video = generate_for_music(pipeline, audio, rate, reference, music_id, frames, seed,
                                       progress)
        elapsed = time.perf_counter() - started
        write_mp4(out, video.frames, video.fps, audio, rate)
    except DancegenError as error:
        _fail(error)
    length = len(video.frames) / video.fps
    typer.secho(f"wrote {out}: {len(video.frames)} frames ({length:.1f} s at {video.fps} fps, "
                f"{pipeline.resolution}x{pipeline.resolution}) with music; {elapsed:.0f} s, "
                f"{elapsed / length:.1f} s of compute per generated second", fg=typer.colors.GREEN)


@app.command("evaluate")
def evaluate_command(
    out: Annotated[str, typer.Option(help="Store with the dataset and the trained LDM run.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """Evaluate the trained LDM on the test split: FVD, LPIPS, PSNR, SSIM, 2D-BeatAlign,
    AV-Align, and a Markdown/HTML report beside the checkpoint."""
    try:
        ok = run_flows([("evaluate", {"out": out})], config, set_)
    except DancegenError as error:
        _fail(error)
    raise typer.Exit(0 if ok else 1)


@motion_app.command("eval")
def motion_eval(
    inputs: Annotated[str, typer.Option(help="Inputs root in the AIST++ layout (reference).")],
    store: Annotated[str, typer.Option(help="Store root holding pseudo-motions/.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
    variant: Annotated[str, typer.Option(help="Beat align: bailando (default) or fact.")] = (
        "bailando"),
) -> None:
    """BeatAlign, PFC and foot skating of the pseudo-motions and of the training motions."""
    from dancegen.config import load_config
    from dancegen.storage.pseudo_motions import PseudoMotionRoot
    from dancegen.tasks.motion_eval import motion_quality_table

    try:
        fps = load_config(config, set_).dataset.fps
        table = motion_quality_table(inputs, PseudoMotionRoot(store).url, fps, variant)
    except DancegenError as error:
        _fail(error)
    except ValueError as error:
        _fail(DancegenError(str(error)))
    typer.echo(table)


@dataset_app.command("plan")
def dataset_plan(
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
    measure: Annotated[bool, typer.Option(
        help="Measure the Jukebox cost on this machine (a few seconds).")] = True,
    gpus: Annotated[int | None, typer.Option(
        help="Also estimate the wall time of a full regeneration, and of one after 10 % new "
             "music, on this many GPUs, from per-segment costs measured here.", min=1)] = None,
    cpus: Annotated[int | None, typer.Option(
        help="CPUs for the CPU stages with --gpus (default: 10 per GPU, the KubeRay GPU "
             "pod's).", min=1)] = None,
) -> None:
    """Estimate a config's dataset: segments, bytes per stage, Jukebox compute hours, and
    with --gpus the wall time of regenerating it."""
    from dancegen.config import load_config
    from dancegen.tasks.dataset_plan import plan_report
    from dancegen.tasks.jukebox_cost import measure as measure_cost

    try:
        cfg = load_config(config, set_)
    except DancegenError as error:
        _fail(error)
    measured = measure_cost(cfg.jukebox) if measure else None
    typer.echo(plan_report(cfg, measured))
    if gpus is not None:
        from dancegen.tasks.stage_cost import measure_stage_costs, regeneration_report

        jukebox = cfg.planning.jukebox_seconds_per_music_second or (
            measured.estimate_5b if measured else None)
        if "jukebox" not in cfg.stages:
            jukebox = None
        lines = regeneration_report(cfg, measure_stage_costs(cfg), gpus, cpus or 10 * gpus,
                                    jukebox)
        typer.echo("\n".join(lines))


@dataset_app.command("info")
def dataset_info(
    store: Annotated[str, typer.Argument(help="Store root (path or s3://).")],
    version: Annotated[str | None, typer.Option(help="Only this dataset version.")] = None,
    snapshot: Annotated[str | None, typer.Option(
        help="Describe this snapshot (default: each version's current one).")] = None,
) -> None:
    """Describe the dataset versions in a store: their current (or one) snapshot, rows,
    arrays, shard completion and failures."""
    from dancegen.storage.dataset import DatasetStore
    from dancegen.storage.info import describe_version

    try:
        versions = [version] if version else DatasetStore.versions(store)
        if not versions:
            raise DancegenError(f"no dancegen dataset in {store}")
        for name in versions:
            typer.echo(describe_version(DatasetStore(store, name), snapshot))
    except DancegenError as error:
        _fail(error)


@dataset_app.command("verify")
def dataset_verify(
    store: Annotated[str, typer.Argument(help="Store root (path or s3://).")],
    version: Annotated[str, typer.Option(help="Dataset version.")] = "v1",
    repair: Annotated[bool, typer.Option(
        help="Mark damaged shards incomplete, so that the next build recomputes them.")] = False,
    full: Annotated[bool, typer.Option(
        help="Read back every shard, also those found intact by an earlier check (bit rot); "
             "by default only shards written since the last check are read.")] = False,
) -> None:
    """Check every shard is complete, and that the shards written since the last check are
    decodable and equal to their recorded checksums (``--full``: every shard)."""
    from dancegen.storage.dataset import DatasetStore
    from dancegen.storage.verify import verify_dataset

    try:
        dataset = DatasetStore(store, version)
        report = verify_dataset(dataset, full=full)
        repaired = report.repair(dataset) if repair else []
    except DancegenError as error:
        _fail(error)
    for unit in report.incomplete:
        typer.echo(f"incomplete {unit}")
    for unit, reason in report.damaged.items():
        typer.secho(f"damaged {unit}: {reason}", fg=typer.colors.RED)
    if repaired:
        typer.echo(f"marked {len(repaired)} damaged shards incomplete: the next `dataset build` "
                   "recomputes them")
    typer.secho(report.summary(), fg=typer.colors.GREEN if report.ok else typer.colors.RED)
    raise typer.Exit(0 if report.ok else 1)


@dataset_app.command("preview")
def dataset_preview(
    store: Annotated[str, typer.Argument(help="Store root (path or s3://).")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")],
    segment: Annotated[int, typer.Option(help="Segment row.")] = 0,
    frame: Annotated[int, typer.Option(help="Frame within the segment.")] = 0,
    version: Annotated[str, typer.Option(help="Dataset version.")] = "v1",
) -> None:
    """Write one frame's rendered guidance side by side (frame, depth, normal, ...) as a PNG."""
    import imageio.v3 as iio

    from dancegen.storage.dataset import DatasetStore
    from dancegen.tasks.preview import preview_frame

    try:
        image = preview_frame(DatasetStore(store, version), segment, frame)
    except DancegenError as error:
        _fail(error)
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, image)
    typer.echo(f"wrote {out} ({image.shape[1]}x{image.shape[0]})")


DEMO_VIDEO_SECONDS = 6.0  # past one 5-s segment: shows the long-video merge, fast on CPU


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where fixtures and the store go.")] = Path(
        "runs/demo"),
    config: ConfigOpt = DEFAULT_CONFIG,
    set_: SetOpt = None,
) -> None:
    """The main job on the embedded default: fixtures -> EDGE training -> dataset build with
    pseudo-motions -> dataset info and preview -> motion quality -> the LDM's three training
    stages -> evaluation report -> a generated MP4 from new music and a reference photo."""
    inputs, store = workdir / "inputs", workdir / "store.zarr"
    typer.secho("[1/10] fixtures", bold=True)
    fixtures(inputs)
    paths = {"inputs": str(inputs), "out": str(store)}
    # one run_flows: one local Prefect server and one Ray for every flow (each start ~15 s)
    flows = [
        ("[2/10] train EDGE (music-to-motion)", "train-edge", paths),
        ("[3/10] build the dataset (AIST++-layout motion + EDGE pseudo-motions, rendered)",
         "build-dataset", paths),
        *((f"[{3 + stage}/10] train the LDM, stage {stage} ({what})", "train-ldm",
           {"stage": stage, "out": str(store)})
          for stage, what in ((1, "M2PEnc"), (2, "the image stage"), (3, "temporal layers"))),
        ("[7/10] evaluate on the test split", "evaluate", {"out": str(store)}),
    ]
    try:
        ok = run_flows([(name, args) for _, name, args in flows], config, set_,
                       titles=[title for title, _, _ in flows])
    except DancegenError as error:
        _fail(error)
    typer.secho("[8/10] dataset info and preview", bold=True)
    dataset_info(str(store))
    if not ok:
        raise typer.Exit(1)
    dataset_preview(str(store), out=workdir / "preview.png", segment=0, frame=45)
    typer.secho("[9/10] motion quality of the pseudo-motions", bold=True)
    motion_eval(str(inputs), str(store), config, set_)
    typer.secho("[10/10] generate: new music + a reference photo -> MP4", bold=True)
    video = workdir / "dance.mp4"
    if video.exists():  # as every step above: a re-run keeps what is done
        typer.echo(f"kept {video} (delete it to generate again)")
    else:
        photo = _demo_reference_photo(store, workdir / "reference.png", config, set_)
        generate(music=str(inputs / "new_music" / "new_track_a.wav"), image=str(photo),
                 out=str(video), store=str(store), seconds=DEMO_VIDEO_SECONDS, seed=None,
                 config=config, set_=set_)
    report = _evaluation_report(store, config, set_)
    typer.secho(f"done: video {video}  report {report}", bold=True, fg=typer.colors.GREEN)


def _demo_reference_photo(store: Path, out: Path, config: str,
                          overrides: list[str] | None) -> Path:
    """The first frame of the first test clip, as the photo a user would bring."""
    import imageio.v3 as iio

    from dancegen.config import load_config
    from dancegen.storage.snapshot import DatasetSnapshot

    cfg = load_config(config, overrides)
    snapshot = DatasetSnapshot.open(str(store), cfg.dataset.version)
    row = snapshot.segments("test")[0][0]
    iio.imwrite(out, snapshot.read("video/frames", row, 0))
    return out


def _evaluation_report(store: Path, config: str, overrides: list[str] | None) -> str:
    from dancegen.config import load_config
    from dancegen.storage.dataset import DatasetStore
    from dancegen.storage.evaluation import EvaluationRun
    from dancegen.storage.ldm_checkpoint import LdmRun
    from dancegen.storage.snapshot import current_snapshot_id

    cfg = load_config(config, overrides)
    checkpoint = LdmRun(str(store.resolve()), cfg.ldm.run_name).require_done(3)["checkpoint"]
    snapshot = current_snapshot_id(DatasetStore(str(store.resolve()), cfg.dataset.version))
    return f"{EvaluationRun(str(store.resolve()), cfg, checkpoint, snapshot).url}/report.html"


def main() -> None:
    """Entry point for ``python -m dancegen``."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    sys.exit(app())
