"""Registration of a support volume onto a query volume with ANTsPy.

Both volumes are arrays in the same voxel order (the query's slicing layout,
[H, W, D]) with their voxel spacings in mm; ANTs sees them with origin 0 and
an identity direction, so the transform found is the one between the two
grids in physical units. The default schedule is ANTsPy's: an affine
transform (mutual information, ``aff_iterations``), then for ``"syn"`` a
symmetric diffeomorphic SyN (Avants et al., MedIA 2008) on mutual
information (or ``syn_metric``) with ``syn_iterations`` per resolution level
(ANTsPy's default (40, 20, 0) skips the full-resolution level).

ITK's thread count follows ``threads`` (default: torch's), so that a run's
thread count is the one recorded in its provenance. ITK reads it from
``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once, at its first use in a
process, so the variable is set once (:func:`itk_threads`): a process runs
ITK at one count (a command-line run, at its own), and a later call that
asks for another count is warned that it does not get it. At one thread a
registration is reproducible bit for bit: the affine stage samples the
metric at random, from ``seed`` (ANTs takes a seed of 0 as "seed from the
clock", so 0 gives another transform on every run, off by millimetres on
real pairs); at several threads ITK's parallel sums leave differences of a
tenth of a millimetre. A volume of more than
``max_voxels`` voxels is registered on a coarser copy (every axis scaled by
one factor), which bounds registration's memory and time on large CTs; the
transform, in physical units, then warps onto the full query grid, a slab of
``max_voxels`` at a time (:class:`Registration`). Organ-level alignment does
not need sub-millimetre voxels, and no volume of CHAOST2 or CMR is large
enough to be coarsened.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medfss.errors import ConfigError
from medfss.validation import check_choice, require

TRANSFORMS = {"affine": "Affine", "syn": "SyN"}  # ours -> ANTsPy's type_of_transform
METRICS = ("mattes", "CC", "meansquares", "GC")
# Seconds per million query voxels for one registration on one thread at the default schedule, the
# range of the per-pair wall times of results/floors (CHAOST2 and CMR, 80-140 pairs each, 2-core CPU).
SECONDS_PER_MILLION_VOXELS = {"affine": (6.0, 10.0), "syn": (20.0, 40.0)}


@dataclass(frozen=True)
class RegistrationConfig:
    """The registration of every support onto the query (ANTsPy's defaults but ``transform``)."""

    transform: str = "syn"  # "affine", or "syn": affine then SyN
    metric: str = "mattes"  # similarity of the affine and the SyN stage (mattes: mutual information)
    syn_metric: str | None = None  # the SyN stage's own similarity instead (CC: ANTs' SyNCC); None: ``metric``
    aff_iterations: tuple[int, ...] = (2100, 1200, 1200, 10)  # per level, coarse to fine (shrink 6, 4, 2, 1)
    syn_iterations: tuple[int, ...] = (40, 20, 0)  # per level, coarse to fine (0: the level is skipped)
    threads: int = 0  # ITK threads; 0: torch.get_num_threads(), or the process's count once ITK has one
    seed: int = 1  # ANTs' random sampling of the affine metric; 0: ANTs seeds it from the clock (not reproducible)
    max_voxels: int = 2 ** 22  # larger volumes are registered on a coarser copy (module docstring)

    def __post_init__(self):
        for name in ("aff_iterations", "syn_iterations"):  # lists from the command line -> tuples
            object.__setattr__(self, name, tuple(getattr(self, name)))
        check_choice(self, "transform", TRANSFORMS)
        check_choice(self, "metric", METRICS)
        if self.syn_metric is not None:
            check_choice(self, "syn_metric", METRICS)
        for name in ("aff_iterations", "syn_iterations"):
            values = getattr(self, name)
            require(bool(values) and all(isinstance(v, int) and v >= 0 for v in values), name,
                    f"must be iteration counts >= 0, one per resolution level, got {list(values)}")
        require(isinstance(self.threads, int) and self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")
        require(isinstance(self.seed, int) and self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        require(isinstance(self.max_voxels, int) and self.max_voxels >= 4096, "max_voxels",
                f"must be an integer >= 4096, got {self.max_voxels!r}")


Radius = int | tuple[int, int, int]  # voxels, the same along every axis or one per axis [H, W, D]


@dataclass(frozen=True)
class JointLabelFusionConfig:
    """ANTs' joint label fusion (:func:`joint_label_fusion`), at ANTs' defaults.

    A radius may be given per axis (H, W, D), to search less across thick
    slices at a fraction of the time: CHAOST2's are 7.7 mm apart, so the
    default search radius of 3 voxels reaches 23 mm across them.
    """

    patch_radius: Radius = 2  # voxels around a voxel whose intensities are compared (ANTs' rad)
    search_radius: Radius = 3  # voxels an atlas's best-matching patch is searched within (r_search)
    beta: float = 4  # the exponent on the patch differences in the atlases' joint error
    margin_voxels: int = 3  # the warped masks' union is dilated by this (the search radius): fused there only

    def __post_init__(self):
        for name in ("patch_radius", "search_radius"):
            if isinstance(getattr(self, name), list):  # from JSON (a results.json's record)
                object.__setattr__(self, name, tuple(getattr(self, name)))
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,) * 3  # [H, W, D]
            require(len(values) == 3 and all(isinstance(v, int) and v >= 0 for v in values), name,
                    f"must be an integer >= 0 or three of them (one per axis), got {value!r}")
        require(isinstance(self.margin_voxels, int) and self.margin_voxels >= 0, "margin_voxels",
                f"must be an integer >= 0, got {self.margin_voxels!r}")
        require(self.beta > 0, "beta", f"must be > 0, got {self.beta}")


def ants_available() -> bool:
    """Whether ANTsPy is installed (without importing it: the import takes seconds)."""
    import importlib.util

    return importlib.util.find_spec("ants") is not None


def _ants(threads: int = 0):
    """ANTsPy, with ITK's thread count fixed first (:func:`itk_threads`): every use of ANTs comes through here."""
    itk_threads(threads)
    try:
        import ants
    except ImportError:
        raise ConfigError("registration needs ANTsPy: pip install antspyx (or medfss[registration])") from None
    return ants


def expected_seconds(query_shape: tuple[int, ...], config: RegistrationConfig = RegistrationConfig()
                     ) -> tuple[float, float]:
    """A rough (low, high) wall time in seconds of registering one support onto a query of ``query_shape``.

    Scaled from :data:`SECONDS_PER_MILLION_VOXELS` by the voxels registered
    (``max_voxels`` at most) and by the square root of the thread count
    (ITK's SyN parallelises only part of each iteration). Only for telling a
    user how long to wait; iteration counts other than the default are not
    accounted for.
    """
    voxels = min(float(np.prod(query_shape)), float(config.max_voxels)) / 1e6
    low, high = SECONDS_PER_MILLION_VOXELS[config.transform]
    speedup = _threads(config.threads) ** 0.5
    return low * voxels / speedup, high * voxels / speedup


def time_estimate(query_shape: tuple[int, ...], supports: int, config: RegistrationConfig = RegistrationConfig()
                  ) -> str:
    """``expected_seconds`` for ``supports`` registrations, in words: "about 40-80 s with 2 threads"."""
    low, high = (supports * s for s in expected_seconds(query_shape, config))
    threads = _threads(config.threads)
    return f"about {low:.0f}-{high:.0f} s with {threads} thread{'s' if threads > 1 else ''}"


def registration_notice(query: str | os.PathLike, supports: int, config: RegistrationConfig = RegistrationConfig()
                        ) -> str:
    """The line a command prints before registering ``supports`` scans onto the ``query`` NIfTI file.

    The estimate needs the query's shape, read from its header; an unreadable
    query gets the line without it (``segment`` then reports the file itself).
    """
    line = f"registering {supports} support scan{'s' if supports > 1 else ''} onto the query with ANTsPy " \
           f"({config.transform}"
    try:
        import nibabel

        shape = tuple(nibabel.load(query).shape[:3])
    except Exception:  # noqa: BLE001 - any unreadable file: the segmentation reports it with its own message
        return line + ")"
    return f"{line}; {time_estimate(shape, supports, config)})"


ITK_THREADS = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


def _threads(requested: int = 0) -> int:
    """The thread count ITK runs at: the process's once fixed, else ``requested`` (0: torch's)."""
    fixed = os.environ.get(ITK_THREADS, "")
    if fixed.isdigit() and int(fixed) > 0:
        return int(fixed)
    if requested:
        return requested
    import torch

    return torch.get_num_threads()


def itk_threads(requested: int = 0) -> int:
    """The thread count ITK runs at in this process, fixed now at ``requested`` (0: torch's) if not yet fixed.

    ITK reads :data:`ITK_THREADS` at its first use in a process and never
    again, so setting it per call would claim a count that a later call does
    not get. Once set (here or by the user), it stands; a call that asks for
    another count explicitly is warned.
    """
    threads = _threads(requested)
    os.environ[ITK_THREADS] = str(threads)
    if requested and requested != threads:
        warnings.warn(f"ITK runs at {threads} threads in this process ({ITK_THREADS}), not the {requested} "
                      f"asked for: ITK fixes its thread count at its first use in a process", stacklevel=3)
    return threads


@dataclass
class Registration:
    """A transform from a moving (support) grid to a fixed (query) grid; warps arrays of the moving grid.

    The fixed grid is kept as its shape and spacing (origin 0, identity
    direction), not as an image: :meth:`warp` fills it a slab of at most
    ``config.max_voxels`` at a time, so that ANTs' working copies (several of
    the output's size) are a slab's, not a large CT's. A grid that fits in one
    slab, every CHAOST2 and CMR volume, is warped whole. ``config`` is the
    registration's own: its ``threads`` fix ITK's count for a warp too.
    """

    fixed_shape: tuple[int, int, int]  # [H, W, D] of the query
    fixed_spacing: tuple[float, float, float]
    transforms: list[str]  # ANTs forward transform files (in ``workdir``, or in a cache folder)
    config: RegistrationConfig = RegistrationConfig()
    workdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)  # removed with this object

    def warp(self, array: np.ndarray, spacing: tuple[float, float, float], interpolator: str = "linear"
             ) -> np.ndarray:
        """``array`` [h, w, d] of the moving grid, resampled on the fixed grid: [H, W, D] float32."""
        ants = _ants(self.config.threads)
        moving = ants.from_numpy(np.ascontiguousarray(array, dtype=np.float32), spacing=tuple(map(float, spacing)))
        height, rest = self.fixed_shape[0], self.fixed_shape[1:]
        rows = max(1, self.config.max_voxels // int(np.prod(rest)))  # at least one row along H
        warped = np.empty(self.fixed_shape, dtype=np.float32)  # [H, W, D]
        for top in range(0, height, rows):
            bottom = min(top + rows, height)
            slab = ants.from_numpy(np.zeros((bottom - top, *rest), dtype=np.float32),  # only its grid is used
                                   origin=(top * float(self.fixed_spacing[0]), 0.0, 0.0),
                                   spacing=tuple(map(float, self.fixed_spacing)))
            warped[top:bottom] = ants.apply_transforms(slab, moving, self.transforms, interpolator=interpolator,
                                                       singleprecision=True).numpy()  # double: twice the memory
        return warped


def _non_negative_image(array: np.ndarray, spacing: tuple[float, ...], minimum: float | None = None):
    """The image shifted by its minimum (or ``minimum``) to a minimum of 0, as an ANTs image.

    ANTsPy starts from the transform that aligns the two intensity centres
    of mass, which a z-scored image (negative values) throws far off; mutual
    information does not change under the shift.
    """
    ants = _ants()
    minimum = np.min(array) if minimum is None else minimum
    shifted = np.asarray(array, dtype=np.float32) - np.float32(minimum)
    return ants.from_numpy(np.ascontiguousarray(shifted), spacing=tuple(map(float, spacing)))


def coarsening_factor(shape: tuple[int, ...], max_voxels: int) -> float:
    """The factor (>= 1) every axis's voxel size is multiplied by so that ``shape`` holds at most ``max_voxels``."""
    voxels = float(np.prod(shape))
    return 1.0 if voxels <= max_voxels else (voxels / max_voxels) ** (1 / len(shape))


def _registration_image(array: np.ndarray, spacing: tuple[float, ...], max_voxels: int):
    """``array`` as ANTs registers it: non-negative, and first coarsened when larger than ``max_voxels``.

    The coarse copy interpolates ``array`` linearly on a grid of ``m`` points per
    axis spanning the same first and last voxel centres (scipy's ``zoom``), so
    its spacing is ``spacing * (n - 1) / (m - 1)``. It is made before ANTs
    sees the volume: ANTs' own resampling copies the full volume four times
    (2.4 GiB for a 512 x 512 x 600 CT).
    """
    factor = coarsening_factor(array.shape, max_voxels)
    if factor == 1.0:
        return _non_negative_image(array, spacing)
    shape = tuple(min(n, max(2, int(n / factor))) for n in array.shape)
    coarse = np.empty(shape, dtype=np.float32)
    ndimage.zoom(np.asarray(array, dtype=np.float32), [m / n for m, n in zip(shape, array.shape)], output=coarse,
                 order=1, mode="nearest")  # linear; grid_mode=False: first and last voxel centres kept
    coarse_spacing = tuple(float(s) * ((n - 1) / (m - 1) if m > 1 else 1.0)
                           for s, n, m in zip(spacing, array.shape, shape))
    return _non_negative_image(coarse, coarse_spacing, minimum=np.min(array))


def register(fixed: np.ndarray, fixed_spacing: tuple[float, float, float], moving: np.ndarray,
             moving_spacing: tuple[float, float, float], config: RegistrationConfig = RegistrationConfig()
             ) -> Registration:
    """Register ``moving`` [h, w, d] onto ``fixed`` [H, W, D] (both normalised images, same voxel order)."""
    ants = _ants(config.threads)
    fixed_image = _registration_image(fixed, fixed_spacing, config.max_voxels)
    moving_image = _registration_image(moving, moving_spacing, config.max_voxels)
    workdir = tempfile.TemporaryDirectory(prefix="medfss-registration-")
    ants.config._random_seed = config.seed  # ANTsPy's only handle on the metric sampling seed
    result = ants.registration(
        fixed_image, moving_image, type_of_transform=TRANSFORMS[config.transform],
        outprefix=os.path.join(workdir.name, "t"), aff_metric=config.metric,
        syn_metric=config.syn_metric or config.metric, aff_iterations=config.aff_iterations,
        reg_iterations=config.syn_iterations)
    return Registration(tuple(fixed.shape), tuple(map(float, fixed_spacing)), list(result["fwdtransforms"]),
                        config, workdir)  # warps land on the full query grid


def joint_label_fusion(query: np.ndarray, query_spacing: tuple[float, float, float], warped_images: list[np.ndarray],
                       warped_masks: list[np.ndarray], config: RegistrationConfig = RegistrationConfig(),
                       fusion: JointLabelFusionConfig = JointLabelFusionConfig()) -> np.ndarray:
    """Joint label fusion (Wang et al., TPAMI 2013) of supports warped onto ``query``: P(foreground) [H, W, D].

    Each atlas votes with a weight per voxel, from how well its image patch
    around the voxel predicts the query's patch jointly with the other
    atlases' (correlated atlases share their weight), instead of one vote
    each; and each atlas's vote at a voxel comes from its best-matching
    patch within the search radius, which corrects a residual
    misregistration of a few voxels. ANTs' implementation with the patch and
    search radii and beta of ``fusion``, run within the union of the warped
    masks dilated by ``fusion.margin_voxels`` (the search radius): no atlas
    labels a voxel outside it. ANTsPy needs two atlases: one is passed twice,
    which splits its weight in two equal halves and keeps the patch search.
    ``warped_images`` [H, W, D] float and ``warped_masks`` [H, W, D] bool
    are on the query's grid.
    """
    ants = _ants(config.threads)
    union = np.any(warped_masks, axis=0)  # [H, W, D]
    if not union.any():
        return np.zeros(query.shape, dtype=np.float32)
    # iterations=0 would dilate until nothing changes, not at all
    region = ndimage.binary_dilation(union, iterations=fusion.margin_voxels) if fusion.margin_voxels else union

    def image(array: np.ndarray):
        return ants.from_numpy(np.ascontiguousarray(array, dtype=np.float32), spacing=tuple(map(float, query_spacing)))

    atlases = 2 if len(warped_images) == 1 else 1  # copies of each
    patch, search = fusion.patch_radius, fusion.search_radius  # per axis, ANTsPy takes [2, 2, 1] and "3x3x1"
    fused = ants.joint_label_fusion(image(query), image(region), [image(a) for a in warped_images] * atlases,
                                    label_list=[image(m) for m in warped_masks] * atlases, beta=fusion.beta,
                                    rad=list(patch) if isinstance(patch, tuple) else patch,
                                    r_search="x".join(map(str, search)) if isinstance(search, tuple) else search)
    probability = fused["probabilityimages"][fused["segmentation_numbers"].index(1)].numpy()  # [H, W, D]
    return np.where(region, probability, 0.0).astype(np.float32)


def transforms_from(fixed_shape: tuple[int, int, int], fixed_spacing: tuple[float, float, float], files: list[str],
                    config: RegistrationConfig = RegistrationConfig()) -> Registration:
    """A :class:`Registration` onto the grid ``fixed_shape`` from transform files written earlier (a cache)."""
    return Registration(tuple(fixed_shape), tuple(map(float, fixed_spacing)), files, config)
