"""Seeded hostile inputs: small valid files with one thing wrong.

Each :class:`HostileInput` is a valid phantom (NIfTI scan and mask, a
4-slice DICOM series, or a tiny model file) with one defect, its *kind*: a
truncated or corrupt header, absurd declared sizes (1x1x1, 4000^3, negative),
zero, negative or non-finite spacing, a broken affine, a wrong or unknown
data type, NaN or Inf voxels, non-integer labels, 2D and 4D images, a mask
off its scan's grid; DICOM slices cut short, damaged or with broken tags;
checkpoints cut short, damaged, with wrong contents or a pickle payload.
:func:`hostile_inputs` gives the ``index``-th input of a seed's sequence,
the targets (``nifti``, ``segment``, ``prepare``, ``dicom``,
``checkpoint``) in turn; :mod:`medfss.reliability.fuzz` runs them.
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

TARGETS = ("nifti", "segment", "prepare", "dicom", "checkpoint")
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
        else:
            yield _nifti_input(rng, target)
