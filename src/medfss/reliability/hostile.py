"""Seeded hostile inputs: small valid files with one thing wrong.

Each :class:`HostileInput` is a valid phantom (NIfTI scan and mask, a
4-slice DICOM series, a tiny model file, or an HDF5 case of the
semi-supervised data sets with its list file) with one defect, its *kind*: a
truncated or corrupt header, absurd declared sizes (1x1x1, 4000^3, negative),
zero, negative or non-finite spacing, a broken affine, a wrong or unknown
data type, NaN or Inf voxels, non-integer labels, 2D and 4D images, a mask
off its scan's grid; DICOM slices cut short, damaged or with broken tags;
checkpoints cut short, damaged, with wrong contents or a pickle payload;
HDF5 files cut short, damaged or not HDF5, without 'image' or 'label',
with string, complex or compound values, the wrong dimensionality, image and
label of different shapes, NaN or Inf voxels, labels off the classes,
datasets declaring 4000^3 voxels the file does not store; list files empty,
binary, or naming missing cases or paths.
:func:`hostile_inputs` gives the ``index``-th input of a seed's sequence,
the targets (``nifti``, ``segment``, ``prepare``, ``dicom``,
``checkpoint``, ``hdf5``) in turn; :mod:`medfss.reliability.fuzz` runs them.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGETS = ("nifti", "segment", "prepare", "dicom", "checkpoint", "hdf5")
SHAPE = (24, 20, 8)  # [X, Y, Z] of the phantoms
PAYLOAD_MARKER = "payload-ran"  # the file (relative to the working folder) a pickle payload creates


@dataclass(frozen=True)
class HostileInput:
    """Files to write into an empty folder, and what to call on them."""

    target: str  # one of TARGETS
    kind: str  # the family of the defect: a row of the outcome table
    detail: str  # the exact defect, for reproduction
    files: dict[str, bytes]  # relative path -> content


# --- valid material ------------------------------------------------------------------------------


def phantom(rng: np.random.Generator, shape: tuple[int, ...] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A float32 image holding a bright box and its uint8 mask (label 1)."""
    image = rng.normal(100, 10, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    x, y = shape[0] // 3, shape[1] // 3
    mask[x:2 * x, y:2 * y, 1:max(2, shape[2] - 1)] = 1
    image[mask == 1] += 200
    return image, mask


def nifti_bytes(array: np.ndarray, affine: np.ndarray | None = None, gz: bool = True) -> bytes:
    """A single-file NIfTI-1 image (``.nii.gz`` when ``gz``), in memory."""
    import nibabel as nib

    array = array.astype(np.uint8) if array.dtype == bool else array  # NIfTI has no boolean type
    img = nib.Nifti1Image(array, np.diag([1.5, 1.5, 4.0, 1.0]) if affine is None else affine, dtype=array.dtype)
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=1, mtime=0) if gz else raw


# NIfTI-1 header fields: (byte offset, struct format); little-endian as nibabel writes on x86
FIELDS = {"sizeof_hdr": (0, "<i"), "dim": (40, "<8h"), "datatype": (70, "<h"), "bitpix": (72, "<h"),
          "pixdim": (76, "<8f"), "vox_offset": (108, "<f"), "scl_slope": (112, "<f"), "scl_inter": (116, "<f"),
          "qform_code": (252, "<h"), "sform_code": (254, "<h"), "quatern": (256, "<6f"),
          "srow": (280, "<12f"), "magic": (344, "4s")}


def set_field(raw: bytes, name: str, value) -> bytes:
    """``raw`` (an uncompressed .nii) with one header field overwritten (a tuple for array fields)."""
    offset, fmt = FIELDS[name]
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, *(value if isinstance(value, tuple) else (value,)))
    return bytes(out)


def get_field(raw: bytes, name: str) -> tuple:
    offset, fmt = FIELDS[name]
    return struct.unpack_from(fmt, raw, offset)


# --- NIfTI defects: each returns (kind, detail, bytes of the hostile file) ----------------------

HUGE = (3, 4000, 4000, 4000, 1, 1, 1, 1)


def _truncated(rng, image, mask, gz):
    data = nifti_bytes(image, gz=gz)
    cut = int(rng.integers(0, len(data)))
    return "truncated", f"first {cut} of {len(data)} bytes", data[:cut]


def _header_bytes(rng, image, mask, gz):
    raw = bytearray(nifti_bytes(image, gz=False))
    where = rng.integers(0, 348, int(rng.integers(1, 9)))
    for i in where:
        raw[i] = int(rng.integers(0, 256))
    return "header-bytes", f"random bytes at {sorted(where.tolist())}", _pack(bytes(raw), gz)


def _dims(rng, image, mask, gz):
    dims = [(3, 1, 1, 1, 1, 1, 1, 1), HUGE, (3, 0, 20, 8, 1, 1, 1, 1), (3, -24, 20, 8, 1, 1, 1, 1),
            (3, 24, 20, 32767, 1, 1, 1, 1), (0, 24, 20, 8, 1, 1, 1, 1), (8, 24, 20, 8, 2, 2, 2, 2),
            (9, 24, 20, 8, 1, 1, 1, 1), (-1, 24, 20, 8, 1, 1, 1, 1), (4, 24, 20, 8, 32767, 1, 1, 1),
            (3, 32767, 32767, 32767, 1, 1, 1, 1), (3, 24, 20, 8, 0, 0, 0, 0)]
    dim = dims[int(rng.integers(len(dims)))]
    return "declared-size", f"dim={dim}", _pack(set_field(nifti_bytes(image, gz=False), "dim", dim), gz)


def _spacing(rng, image, mask, gz):
    value = float(rng.choice([0.0, -1.5, np.nan, np.inf, -np.inf, 1e-30, 1e30, 1e6]))
    axis = int(rng.integers(1, 4))
    raw = nifti_bytes(image, gz=False)
    if rng.random() < 0.5:  # through the qform's pixdim (sform off)
        pixdim = list(get_field(raw, "pixdim"))
        pixdim[axis] = value
        raw = set_field(set_field(raw, "pixdim", tuple(pixdim)), "sform_code", 0)
        where = "pixdim"
    else:  # through the sform's diagonal
        srow = list(get_field(raw, "srow"))
        srow[5 * (axis - 1)] = value
        raw = set_field(raw, "srow", tuple(srow))
        where = "srow"
    return "spacing", f"{where}[{axis}]={value}", _pack(raw, gz)


def _affine(rng, image, mask, gz):
    raw = nifti_bytes(image, gz=False)
    choice = int(rng.integers(4))
    if choice == 0:
        raw, detail = set_field(raw, "srow", (0.0,) * 12), "sform all zeros"
    elif choice == 1:
        srow = list(get_field(raw, "srow"))
        srow[int(rng.integers(12))] = float(rng.choice([np.nan, np.inf]))
        raw, detail = set_field(raw, "srow", tuple(srow)), f"sform {srow}"
    elif choice == 2:
        raw = set_field(set_field(raw, "sform_code", 0), "qform_code", 1)
        raw, detail = set_field(raw, "quatern", (np.nan, 2.0, 0.0, 0.0, 0.0, 0.0)), "qform quaternion NaN, 2"
    else:
        raw, detail = set_field(set_field(raw, "sform_code", 0), "qform_code", 0), "no qform, no sform"
    return "affine", detail, _pack(raw, gz)


DATATYPES = {"complex64": 32, "complex128": 1792, "rgb24": 128, "rgba32": 2304, "int8": 256, "uint64": 1280,
             "float128": 1536, "unknown-0": 0, "unknown-9999": 9999, "binary": 1}


def _datatype(rng, image, mask, gz):
    name = list(DATATYPES)[int(rng.integers(len(DATATYPES)))]
    raw = set_field(nifti_bytes(image, gz=False), "datatype", DATATYPES[name])
    if rng.random() < 0.5:
        raw = set_field(raw, "bitpix", int(rng.choice([0, 1, 8, 64, 128, 999])))
    return "datatype", f"datatype code of {name} on float32 data", _pack(raw, gz)


def _real_dtype(rng, image, mask, gz):
    dtype = np.dtype(str(rng.choice(["int8", "uint8", "int16", "uint16", "int32", "int64", "float64",
                                     "complex64", "bool"])))
    array = (image / 4).astype(dtype) if dtype != bool else image > 150
    return "dtype", f"image stored as {dtype}", nifti_bytes(array, gz=gz)


def _vox_offset(rng, image, mask, gz):
    value = float(rng.choice([0.0, -352.0, 1e9, np.nan, 353.0, 3e38]))
    return "vox-offset", f"vox_offset={value}", _pack(set_field(nifti_bytes(image, gz=False), "vox_offset", value),
                                                       gz)


def _scaling(rng, image, mask, gz):
    slope, inter = (float(v) for v in rng.choice([np.nan, np.inf, 0.0, 1e38, -1.0, 1.0], 2))
    raw = set_field(set_field(nifti_bytes(image, gz=False), "scl_slope", slope), "scl_inter", inter)
    return "scaling", f"scl_slope={slope} scl_inter={inter}", _pack(raw, gz)


def _magic(rng, image, mask, gz):
    raw = nifti_bytes(image, gz=False)
    if rng.random() < 0.5:
        magic = bytes(rng.choice([b"ni1\0", b"n+2\0", b"XXXX", b"\0\0\0\0"]))
        return "magic", f"magic={magic!r}", _pack(set_field(raw, "magic", magic), gz)
    size = int(rng.choice([0, 540, 347, -348, 2**31 - 1]))
    return "magic", f"sizeof_hdr={size}", _pack(set_field(raw, "sizeof_hdr", size), gz)


def _voxels(rng, image, mask, gz):
    bad = image.astype(np.float32)
    value = float(rng.choice([np.nan, np.inf, -np.inf, 3e38, -3e38]))
    n = int(rng.integers(1, bad.size + 1))
    bad.reshape(-1)[rng.choice(bad.size, n, replace=False)] = value
    if rng.random() < 0.2:
        bad[:] = float(rng.choice([0.0, 7.0]))
        return "voxels", f"constant image {bad.flat[0]}", nifti_bytes(bad, gz=gz)
    return "voxels", f"{n} voxels = {value}", nifti_bytes(bad, gz=gz)


def _dimensionality(rng, image, mask, gz):
    shapes = [(24, 20), (24, 20, 8, 3), (24, 20, 8, 1, 2), (24,), (1, 1, 1), (2, 2, 2), (24, 20, 1), (1, 20, 8)]
    shape = shapes[int(rng.integers(len(shapes)))]
    array = rng.normal(100, 10, shape).astype(np.float32)
    return "dimensionality", f"shape {shape}", nifti_bytes(array, gz=gz)


NIFTI_DEFECTS: tuple[Callable, ...] = (_truncated, _header_bytes, _dims, _spacing, _affine, _datatype, _real_dtype,
                                       _vox_offset, _scaling, _magic, _voxels, _dimensionality)


def _mask_defect(rng, image, mask, gz):
    """Defects only a label map can have (the hostile file is a support or prepare label)."""
    choice = int(rng.integers(6))
    bad = mask.astype(np.float32)
    if choice == 0:
        bad[bad == 1] = 0.5
        detail = "label 0.5"
    elif choice == 1:
        bad[bad == 1] = -1
        detail = "label -1"
    elif choice == 2:
        bad[bad == 1] = 300
        detail = "label 300"
    elif choice == 3:
        bad[:] = 0
        detail = "empty mask"
    elif choice == 4:
        bad = rng.normal(0, 1, bad.shape).astype(np.float32)
        detail = "continuous values"
    else:
        bad[0, 0, 0] = np.nan
        detail = "a NaN label"
    return "labels", detail, nifti_bytes(bad, gz=gz)


def _grid_defect(rng, image, mask, gz):
    """A label map off its image's grid."""
    choice = int(rng.integers(4))
    if choice == 0:
        return "grid", "mask one slice short", nifti_bytes(mask[..., :-1], gz=gz)
    if choice == 1:
        return "grid", "mask transposed", nifti_bytes(np.ascontiguousarray(mask.transpose(1, 0, 2)), gz=gz)
    if choice == 2:
        return "grid", "mask flipped orientation", nifti_bytes(mask, np.diag([-1.5, 1.5, 4.0, 1.0]), gz=gz)
    return "grid", "mask spacing 3 mm", nifti_bytes(mask, np.diag([3.0, 3.0, 4.0, 1.0]), gz=gz)


def _pack(raw: bytes, gz: bool) -> bytes:
    return gzip.compress(raw, compresslevel=1, mtime=0) if gz else raw


def _nifti_input(rng, target: str) -> HostileInput:
    image, mask = phantom(rng)
    gz = bool(rng.random() < 0.6)
    ext = ".nii.gz" if gz else ".nii"
    if target == "nifti":
        kind, detail, data = NIFTI_DEFECTS[int(rng.integers(len(NIFTI_DEFECTS)))](rng, image, mask, gz)
        return HostileInput("nifti", kind, detail, {f"image{ext}": data})
    valid = {"image": nifti_bytes(image), "mask": nifti_bytes(mask)}
    roles = ("query", "support", "mask") if target == "segment" else ("image", "label")
    role = roles[int(rng.integers(len(roles)))]
    label_like = role in ("mask", "label")
    defects = NIFTI_DEFECTS + ((_mask_defect, _mask_defect, _grid_defect, _grid_defect) if label_like else ())
    kind, detail, data = defects[int(rng.integers(len(defects)))](rng, mask if label_like else image, mask, gz)
    if target == "segment":
        files = {"query.nii.gz": valid["image"], "support.nii.gz": valid["image"], "mask.nii.gz": valid["mask"]}
        files.pop(f"{role}.nii.gz")
        files[f"{role}{ext}"] = data
    else:
        files = {"in/img/case1.nii.gz": valid["image"], "in/lab/case1.nii.gz": valid["mask"]}
        folder = "img" if role == "image" else "lab"
        files.pop(f"in/{folder}/case1.nii.gz")
        files[f"in/{folder}/case1{ext}"] = data
    return HostileInput(target, kind, f"{role}: {detail}", files)


# --- DICOM ---------------------------------------------------------------------------------------


def dicom_bytes(pixels: np.ndarray, z: float, **tags) -> bytes:
    """One single-frame MR slice (uint16 pixels [rows, columns]) at height ``z``, explicit VR little endian."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(z)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.5, 1.5]
    ds.SliceThickness = 4.0
    ds.InstanceNumber = int(z // 4) + 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"  # stated, so that the file can be written without BitsAllocated
    for name, value in tags.items():
        if value is None:
            delattr(ds, name)
        elif isinstance(value, (str, list)):  # text tags as LO: past the checks of their VR
            text = "\\".join(map(str, value)) if isinstance(value, list) else value
            ds[tag_for_keyword(name)] = DataElement(tag_for_keyword(name), "LO", text)
        else:
            setattr(ds, name, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


DICOM_TAG_DEFECTS = {
    "PixelSpacing": [[0.0, 0.0], [-1.5, 1.5], ["nan", "1.5"], [1.5], ["abc", "1"], [1e30, 1e30]],
    "ImagePositionPatient": [[0.0, 0.0], ["nan", "0", "0"], ["x", "y", "z"], [0.0, 0.0, 0.0, 0.0]],
    "ImageOrientationPatient": [[0.0] * 6, [1.0, 0.0, 0.0], ["nan"] * 6, [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]],
    "Rows": [0, 1, 65535], "Columns": [0, 7, 65535], "BitsAllocated": [0, 7, 32, 64], "SamplesPerPixel": [0, 3],
    "PixelRepresentation": [1, 7], "RescaleSlope": ["nan", "inf", "0", "abc"], "RescaleIntercept": ["inf", "abc"],
    "SliceThickness": ["abc", "-4", "0", "nan"], "InstanceNumber": ["abc", "-1"],
    "NumberOfFrames": [0, 2, 1000], "PhotometricInterpretation": ["RGB", "PALETTE COLOR", "XYZ"],
}


def _dicom_input(rng) -> HostileInput:
    image, _ = phantom(rng, (16, 12, 4))
    pixels = [np.clip(image[..., k], 0, 65535).astype(np.uint16) for k in range(4)]
    files = {f"series/{k:03d}.dcm": dicom_bytes(pixels[k], 4.0 * k) for k in range(4)}
    k = int(rng.integers(4))
    name = f"series/{k:03d}.dcm"
    choice = int(rng.integers(4))
    if choice == 0:
        data = files[name]
        cut = int(rng.integers(0, len(data)))
        kind, detail, files[name] = "dicom-truncated", f"slice {k}: first {cut} of {len(data)} bytes", data[:cut]
    elif choice == 1:
        data = bytearray(files[name])
        where = rng.integers(0, len(data), int(rng.integers(1, 17)))
        for i in where:
            data[i] = int(rng.integers(0, 256))
        kind, detail, files[name] = "dicom-bytes", f"slice {k}: random bytes at {sorted(where.tolist())}", bytes(data)
    elif choice == 2:
        tag = str(rng.choice(["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "PixelData",
                              "Rows", "BitsAllocated"]))
        kind, detail, files[name] = "dicom-missing-tag", f"slice {k}: no {tag}", dicom_bytes(pixels[k], 4.0 * k,
                                                                                              **{tag: None})
    else:
        tag = list(DICOM_TAG_DEFECTS)[int(rng.integers(len(DICOM_TAG_DEFECTS)))]
        values = DICOM_TAG_DEFECTS[tag]
        value = values[int(rng.integers(len(values)))]
        ks = range(4) if rng.random() < 0.5 else [k]
        for i in ks:
            files[f"series/{i:03d}.dcm"] = dicom_bytes(pixels[i], 4.0 * i, **{tag: value})
        kind, detail = "dicom-tag", f"slices {list(ks)}: {tag}={value!r}"
    return HostileInput("dicom", kind, detail, files)


# --- checkpoints ---------------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates the file at ``path``: code running from a checkpoint."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def payload_checkpoint(path: str | os.PathLike, marker: str | os.PathLike) -> Path:
    """A checkpoint-looking file whose unpickling (without ``weights_only``) creates ``marker``."""
    import torch

    from medfss.checkpoints import checkpoint_metadata
    from medfss.reliability.toy import TinySegmenter, tiny_config

    data = {"state_dict": TinySegmenter().state_dict(), **checkpoint_metadata(tiny_config()),
            "hook": _Payload(str(marker))}
    torch.save(data, path)
    return Path(path)


def _tiny_checkpoint() -> bytes:
    import torch

    from medfss.checkpoints import checkpoint_metadata
    from medfss.reliability.toy import TinySegmenter, tiny_config

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save({"state_dict": TinySegmenter().state_dict(), **checkpoint_metadata(tiny_config())}, buffer)
    return buffer.getvalue()


def _rezip(data: bytes, edit: Callable[[str, bytes], bytes]) -> bytes:
    """A torch zip file with every member passed through ``edit(name, content)``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, edit(info.filename, src.read(info)))
    return out.getvalue()


def _checkpoint_input(rng, valid: bytes) -> HostileInput:
    choice = int(rng.integers(6))
    if choice == 0:
        cut = int(rng.integers(0, len(valid)))
        return HostileInput("checkpoint", "ckpt-truncated", f"first {cut} of {len(valid)} bytes",
                            {"model.pt": valid[:cut]})
    if choice == 1:
        data = bytearray(valid)
        where = rng.integers(0, len(data), int(rng.integers(1, 33)))
        for i in where:
            data[i] = int(rng.integers(0, 256))
        return HostileInput("checkpoint", "ckpt-bytes", f"{len(where)} random bytes", {"model.pt": bytes(data)})
    if choice == 2:  # a pickle payload in place of the data, or as a plain pickle file
        payload = pickle.dumps({"state_dict": {}, "x": _Payload(PAYLOAD_MARKER)}, protocol=int(rng.integers(2, 6)))
        if rng.random() < 0.5:
            return HostileInput("checkpoint", "ckpt-pickle-payload", "plain pickle", {"model.pt": payload})
        data = _rezip(valid, lambda name, content: payload if name.endswith("data.pkl") else content)
        return HostileInput("checkpoint", "ckpt-pickle-payload", "data.pkl replaced", {"model.pt": data})
    if choice == 3:  # the pickle stream's bytes damaged inside an intact zip
        def damage(name: str, content: bytes) -> bytes:
            if not name.endswith("data.pkl"):
                return content
            out = bytearray(content)
            for i in rng.integers(0, len(out), int(rng.integers(1, 9))):
                out[i] = int(rng.integers(0, 256))
            return bytes(out)
        return HostileInput("checkpoint", "ckpt-pickle-bytes", "data.pkl bytes damaged",
                            {"model.pt": _rezip(valid, damage)})
    if choice == 4:  # a storage shorter than its tensors declare
        def shorten(name: str, content: bytes) -> bytes:
            return content[: len(content) // 2] if "/data/" in name else content
        return HostileInput("checkpoint", "ckpt-storage", "storages cut in half", {"model.pt": _rezip(valid, shorten)})
    return _checkpoint_fields(rng)


def _checkpoint_fields(rng) -> HostileInput:
    """A well-formed file whose contents are wrong: types, shapes, names, versions."""
    import torch

    from medfss.checkpoints import checkpoint_metadata
    from medfss.reliability.toy import TinySegmenter, tiny_config

    data = {"state_dict": TinySegmenter().state_dict(), **checkpoint_metadata(tiny_config())}
    edits = {
        "config=5": lambda d: d.update(config=5), "config=[]": lambda d: d.update(config=[]),
        "config.model=None": lambda d: d.update(config={**d["config"], "model": None}),
        "config.optim.lr='x'": lambda d: d.update(config={**d["config"], "optim": {"lr": "x"}}),
        "config.unknown": lambda d: d.update(config={**d["config"], "nope": {}}),
        "medfss_version=None": lambda d: d.update(medfss_version=None),
        "medfss_version=[1]": lambda d: d.update(medfss_version=[1]),
        "model_name=7": lambda d: d.update(model_name=7),
        "state_dict=[]": lambda d: d.update(state_dict=[]),
        "state_dict int values": lambda d: d.update(state_dict={k: 1 for k in d["state_dict"]}),
        "state_dict wrong shape": lambda d: d.update(state_dict={k: torch.zeros(3) for k in d["state_dict"]}),
        "state_dict NaN weights": lambda d: d.update(state_dict={k: torch.full_like(v, float("nan"))
                                                                for k, v in d["state_dict"].items()}),
        "state_dict int64 weights": lambda d: d.update(state_dict={k: v.long() for k, v in d["state_dict"].items()}),
        "list, not dict": lambda d: d.clear(),
    }
    name = list(edits)[int(rng.integers(len(edits)))]
    edits[name](data)
    buffer = io.BytesIO()
    torch.save(data if name != "list, not dict" else [1, 2], buffer)
    return HostileInput("checkpoint", "ckpt-fields", name, {"model.pt": buffer.getvalue()})


# --- HDF5: the semi-supervised data sets -------------------------------------------------------


@dataclass(frozen=True)
class H5Layout:
    """One file the semi-supervised readers read, and the list file that names it (relative paths)."""

    dataset: str  # ACDC or LA: a key of medfss.semisup.data.LAYOUTS
    list_file: str
    case: str
    h5_file: str
    shape: tuple[int, ...]

    @property
    def slices(self) -> bool:
        """ACDC's 2D training slices (read by load_slices), not 3D volumes (load_volumes)."""
        return len(self.shape) == 2

    @property
    def num_classes(self) -> int:
        from medfss.semisup.data import LAYOUTS

        return LAYOUTS[self.dataset].num_classes


H5_LAYOUTS = (
    H5Layout("ACDC", "ACDC/train_slices.list", "patient001_frame01_slice_0",
             "ACDC/data/slices/patient001_frame01_slice_0.h5", (24, 20)),
    H5Layout("ACDC", "ACDC/val.list", "patient001_frame01", "ACDC/data/patient001_frame01.h5", (3, 24, 20)),
    H5Layout("LA", "LA/test.list", "A1", "LA/2018LA_Seg_Training Set/A1/mri_norm2.h5", (20, 18, 17)),
)


def h5_bytes(write: Callable[..., object]) -> bytes:
    """An HDF5 file, in memory, holding what ``write(f)`` puts in it."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        write(f)
    return buffer.getvalue()


def h5_pair(image, label, **options) -> bytes:
    """A file with the datasets ``image`` and ``label`` (``options``: of h5py's create_dataset)."""
    def write(f):
        f.create_dataset("image", data=image, **options)
        f.create_dataset("label", data=label, **options)
    return h5_bytes(write)


def h5_phantom(rng: np.random.Generator, shape: tuple[int, ...], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """An image in [0, 1] (float32) holding a bright box labelled with the highest class (uint8)."""
    image = rng.uniform(0, 0.2, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[tuple(slice(n // 4, n - n // 4) for n in shape)] = num_classes - 1
    image[label > 0] += 0.6
    return image, label


# HDF5 defects: each returns (kind, detail, {relative path: bytes}) replacing files of the valid input


def _h5_storage(rng) -> dict:
    return {"chunks": True, "compression": "gzip"} if rng.random() < 0.5 else {}


def _h5_truncated(rng, image, label, layout):
    data = h5_pair(image, label, **_h5_storage(rng))
    cut = int(rng.integers(0, len(data)))
    return "truncated", f"first {cut} of {len(data)} bytes", {layout.h5_file: data[:cut]}


def _h5_damaged(rng, image, label, layout):
    data = bytearray(h5_pair(image, label, **_h5_storage(rng)))
    where = rng.integers(0, len(data), int(rng.integers(1, 17)))
    for i in where:
        data[i] = int(rng.integers(0, 256))
    return "bytes", f"random bytes at {sorted(where.tolist())}", {layout.h5_file: bytes(data)}


def _h5_not_hdf5(rng, image, label, layout):
    others = {"empty file": b"", "text": b"image,label\n0.5,1\n", "zeros": bytes(4096),
              "NIfTI": nifti_bytes(image.reshape(*image.shape, *(1,) * (3 - image.ndim))),
              "HDF5 signature, then noise": b"\x89HDF\r\n\x1a\n" + rng.integers(0, 256, 2000, np.uint8).tobytes(),
              "gzipped HDF5": gzip.compress(h5_pair(image, label), mtime=0)}
    name = list(others)[int(rng.integers(len(others)))]
    return "not-hdf5", name, {layout.h5_file: others[name]}


def _h5_missing(rng, image, label, layout):
    import h5py

    def nested(f):
        group = f.create_group("image")
        group.create_dataset("image", data=image)
        f.create_dataset("label", data=label)

    def dangling(f):
        f.create_dataset("image", data=image)
        f["label"] = h5py.SoftLink("/nowhere")

    def external(f):
        f["image"] = h5py.ExternalLink("elsewhere.h5", "/image")
        f.create_dataset("label", data=label)

    def attribute(f):
        f.attrs["image"] = image
        f.create_dataset("label", data=label)

    writers = {"no label": lambda f: f.create_dataset("image", data=image),
               "no image": lambda f: f.create_dataset("label", data=label),
               "named img/seg": lambda f: (f.create_dataset("img", data=image), f.create_dataset("seg", data=label)),
               "no datasets": lambda f: None, "image is a group": nested, "label a dangling link": dangling,
               "image an external link to a missing file": external, "image an attribute": attribute}
    name = list(writers)[int(rng.integers(len(writers)))]
    return "missing-array", name, {layout.h5_file: h5_bytes(writers[name])}


def _h5_dtype(rng, image, label, layout):
    import h5py

    role = "image" if rng.random() < 0.5 else "label"
    array = image if role == "image" else label
    casts = {
        "bytes S8": lambda a: a.astype("S8"),
        "variable-length strings": lambda a: np.array(a.astype(str).tolist(), dtype=h5py.string_dtype()),
        "complex64": lambda a: (a + 1j).astype(np.complex64), "complex128": lambda a: a.astype(np.complex128),
        "compound": lambda a: np.rec.fromarrays([a, a], names="re,im"),
        "opaque V4": lambda a: a.astype(np.float32).view("V4"),
        "enum": lambda a: a.astype(h5py.enum_dtype({f"c{i}": i for i in range(256)}, basetype="u1")),
        "bool": lambda a: a > 0.5 if role == "image" else a > 0,
        "int8": lambda a: (a * 100).astype(np.int8) if role == "image" else a.astype(np.int8),
        "uint64": lambda a: (a * 1000).astype(np.uint64) if role == "image" else a.astype(np.uint64),
        "float16": lambda a: a.astype(np.float16), "float64": lambda a: a.astype(np.float64),
        "big-endian float32": lambda a: a.astype(">f4"),
    }
    name = list(casts)[int(rng.integers(len(casts)))]
    data = {"image": image, "label": label, role: casts[name](array)}
    return "dtype", f"{role} as {name}", {layout.h5_file: h5_pair(data["image"], data["label"])}


def _h5_dimensionality(rng, image, label, layout):
    import h5py

    wrong = (3, 24, 20) if layout.slices else (24, 20)
    shapes = [(24,), (2, 3, 4, 5), (), wrong, (0, *layout.shape[1:]), (1,) * len(layout.shape), "null"]
    shape = shapes[int(rng.integers(len(shapes)))]
    if shape == "null":  # a dataset with no dataspace
        data = h5_bytes(lambda f: (f.create_dataset("image", data=h5py.Empty("f4")),
                                   f.create_dataset("label", data=h5py.Empty("u1"))))
    else:
        data = h5_pair(rng.uniform(0, 1, shape).astype(np.float32), np.zeros(shape, np.uint8))
    return "dimensionality", f"image and label of shape {shape}", {layout.h5_file: data}


def _h5_shape_mismatch(rng, image, label, layout):
    wrong = {"label one row short": label[:-1], "label transposed": np.ascontiguousarray(label.T),
             "label flattened": label.reshape(-1)}
    name = list(wrong)[int(rng.integers(len(wrong)))]
    return "shape-mismatch", name, {layout.h5_file: h5_pair(image, wrong[name])}


def _h5_voxels(rng, image, label, layout):
    bad = image.astype(np.float64)
    choice = int(rng.integers(4))
    if choice == 0:
        value = float(rng.choice([np.nan, np.inf, -np.inf]))
        n = int(rng.integers(1, bad.size + 1))
        bad.reshape(-1)[rng.choice(bad.size, n, replace=False)] = value
        detail = f"{n} voxels = {value}"
    elif choice == 1:
        bad.reshape(-1)[0] = 1e300
        detail = "a voxel of 1e300 (beyond float32)"
    else:
        bad[:] = float(choice == 3)
        detail = f"constant image {float(choice == 3)}"
    return "voxels", detail, {layout.h5_file: h5_pair(bad, label)}


def _h5_labels(rng, image, label, layout):
    num_classes = layout.num_classes
    wrong = {"label 0.5": np.where(label > 0, 0.5, 0.0), "label -1": np.where(label > 0, -1, 0).astype(np.int16),
             "label 300": np.where(label > 0, 300, 0).astype(np.uint16),
             f"label {num_classes} (one past the classes)": np.where(label > 0, num_classes, 0).astype(np.uint8),
             "a NaN label": np.where(label > 0, np.nan, 0.0), "label 2**40": np.where(label > 0, 2 ** 40, 0),
             "continuous values": rng.normal(0, 1, label.shape), "all background": np.zeros_like(label),
             "integers stored as float64": label.astype(np.float64)}
    name = list(wrong)[int(rng.integers(len(wrong)))]
    return "labels", name, {layout.h5_file: h5_pair(image, wrong[name])}


def _h5_declared_size(rng, image, label, layout):
    """Datasets declaring far more voxels than the file stores (chunks never written read as the fill value)."""
    from medfss.semisup.data import MAX_VOXELS

    rest = layout.shape[1:]
    sizes = {"4000 per axis": (4000,) * len(layout.shape), "2**40 voxels": (2 ** 40 // int(np.prod(rest)), *rest),
             "one more than MAX_VOXELS": (MAX_VOXELS // int(np.prod(rest)) + 1, *rest)}
    choice = int(rng.integers(5))
    if choice < 3:
        name, shape = list(sizes.items())[choice]
        which = ("image", "label") if rng.random() < 0.5 else ("label",)

        def write(f):
            for key, array in (("image", image), ("label", label)):
                if key in which:
                    f.create_dataset(key, shape=shape, dtype=array.dtype, chunks=(1,) * len(shape))
                else:
                    f.create_dataset(key, data=array)
        return "declared-size", f"{' and '.join(which)}: {name} {shape}, none stored", {layout.h5_file: h5_bytes(write)}
    if choice == 3:
        def write(f):
            f.create_dataset("image", shape=layout.shape, dtype="f4", chunks=True, fillvalue=np.nan)
            f.create_dataset("label", data=label)
        return "declared-size", "image never written, fill value NaN", {layout.h5_file: h5_bytes(write)}
    data = h5_pair(image, label, chunks=True, maxshape=(None,) * len(layout.shape))
    return "declared-size", "resizable datasets (unlimited maximum shape)", {layout.h5_file: data}


def _h5_list(rng, image, label, layout):
    case = layout.case
    texts = {"empty": b"", "blank lines": b"\n  \n\t\n", "a missing case": b"patient999_frame01\n",
             "the case and a missing one": f"{case}\nmissing_case\n".encode(),
             "a path out of the folder": f"../../{case}\n".encode(), "a sub-folder": f"sub/{case}\n".encode(),
             "a 5000-character name": b"a" * 5000 + b"\n", "a NUL byte": f"{case}\0x\n".encode(),
             "binary bytes": rng.integers(0, 256, 64, np.uint8).tobytes(),
             "byte-order mark": ("\ufeff" + case + "\n").encode(), "CRLF lines": f"{case}\r\n".encode(),
             "the case twice, padded": f"  {case}  \n{case}\n".encode()}
    name = list(texts)[int(rng.integers(len(texts)))]
    return "list-file", name, {layout.list_file: texts[name]}


H5_DEFECTS: dict[str, Callable] = {  # kind -> defect
    "truncated": _h5_truncated, "bytes": _h5_damaged, "not-hdf5": _h5_not_hdf5, "missing-array": _h5_missing,
    "dtype": _h5_dtype, "dimensionality": _h5_dimensionality, "shape-mismatch": _h5_shape_mismatch,
    "voxels": _h5_voxels, "labels": _h5_labels, "declared-size": _h5_declared_size, "list-file": _h5_list}


def hdf5_input(rng: np.random.Generator, layout: H5Layout, defect: Callable) -> HostileInput:
    """A valid case of ``layout`` and its list file, with ``defect`` (a value of :data:`H5_DEFECTS`) applied."""
    image, label = h5_phantom(rng, layout.shape, layout.num_classes)
    kind, detail, changed = defect(rng, image, label, layout)
    files = {layout.list_file: f"{layout.case}\n".encode(), layout.h5_file: h5_pair(image, label), **changed}
    return HostileInput("hdf5", kind, f"{Path(layout.list_file).name}: {detail}", files)


def _hdf5_input(rng) -> HostileInput:
    layout = H5_LAYOUTS[int(rng.integers(len(H5_LAYOUTS)))]
    return hdf5_input(rng, layout, list(H5_DEFECTS.values())[int(rng.integers(len(H5_DEFECTS)))])


# --- the generator -------------------------------------------------------------------------------


def hostile_inputs(count: int, seed: int = 0, start: int = 0) -> Iterator[HostileInput]:
    """Inputs ``start .. start+count-1`` of the seeded sequence (targets in turn, defects at random)."""
    valid_checkpoint = None
    for index in range(start, start + count):
        rng = np.random.default_rng([seed, index])
        target = TARGETS[index % len(TARGETS)]
        if target == "dicom":
            yield _dicom_input(rng)
        elif target == "checkpoint":
            valid_checkpoint = valid_checkpoint or _tiny_checkpoint()
            yield _checkpoint_input(rng, valid_checkpoint)
        elif target == "hdf5":
            yield _hdf5_input(rng)
        else:
            yield _nifti_input(rng, target)
