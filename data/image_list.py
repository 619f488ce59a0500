"""Image-list datasets: iNaturalist 2018 (official JSON or text lists), ImageNet-LT, Places-LT,
and any user list of ``relative/path label`` lines. Decoded with torchvision in DataLoader
workers; augmented with torchvision transforms v2.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# torchvision is imported where images are decoded or transformed, not here: its import pulls in
# torch._dynamo (~1.5 s), and every sweep driver and trial process imports this module.
from hybridlt.data.dataset import DATASETS
from hybridlt.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageListError(InputError):
    """A bad image list: the message names the file, the line and what is wrong."""


def _safe_path(root: Path, rel: str, where: str) -> Path:
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise ImageListError(f"{where}: path {rel!r} points outside data.root {root}")
    return path


MAX_LIST_BYTES = 1 << 30


def _read_list_text(list_path: Path) -> str:
    """The list's text: UTF-8 (a byte-order mark dropped); a bad byte is named by line."""
    size = list_path.stat().st_size
    if size > MAX_LIST_BYTES:
        raise ImageListError(f"{list_path}: {size} bytes; allowed: at most {MAX_LIST_BYTES} bytes")
    data = list_path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImageListError(f"{list_path}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8 ({exc.reason}); "
                             f"allowed: UTF-8 text") from None


def read_text_list(list_path: Path, root: Path) -> tuple[list[Path], list[int]]:
    """Lines ``relative/path label`` (blank lines and ``#`` comments skipped)."""
    paths, labels = [], []
    for n, line in enumerate(_read_list_text(list_path).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rel, _, label = line.rpartition(" ")
        if not rel or not re.fullmatch(r"-?[0-9]+", label):
            raise ImageListError(f"{list_path}:{n}: expected 'relative/path label', got {line!r}")
        if int(label) < 0:
            raise ImageListError(f"{list_path}:{n}: label {label} is negative; labels are 0 .. C-1")
        paths.append(_safe_path(root, rel.strip(), f"{list_path}:{n}"))
        labels.append(int(label))
    return paths, labels


def read_inat_json(json_path: Path, root: Path) -> tuple[list[Path], list[int], dict[int, str]]:
    """iNaturalist's official format: ``images`` (id, file_name), ``annotations`` (image_id,
    category_id), ``categories`` (id, name)."""
    try:
        doc = json.loads(_read_list_text(json_path))
        files = {img["id"]: img["file_name"] for img in doc["images"]}
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in doc.get("categories", [])}
        pairs = [(files[a["image_id"]], int(a["category_id"])) for a in doc["annotations"]]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:  # ValueError: bad JSON
        raise ImageListError(f"{json_path}: not an iNaturalist annotation file ({type(exc).__name__}: {exc})") from exc
    negative = [c for _, c in pairs if c < 0]
    if negative:
        raise ImageListError(f"{json_path}: category_id {negative[0]} is negative; labels are 0 .. C-1")
    paths = [_safe_path(root, f, str(json_path)) for f, _ in pairs]
    return paths, [c for _, c in pairs], names


def read_image_list(list_path: str | Path, root: str | Path):
    """Paths and labels from a ``.json`` (iNaturalist) or text list; names by class id if known."""
    list_path, root = Path(list_path).expanduser(), Path(root).expanduser().resolve()
    if not list_path.is_file():
        raise ImageListError(f"data.train_list/val_list: {list_path}: file not found{_against(list_path)}")
    if list_path.suffix == ".json":
        return read_inat_json(list_path, root)
    paths, labels = read_text_list(list_path, root)
    return paths, labels, {}


def default_loader_workers() -> int:
    """The CPUs this process may use (affinity, capped by torch's threads, which Ray sets to a trial's
    CPUs): ``data.loader_workers``' default."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, torch.get_num_threads()))


def _against(path: Path) -> str:
    """For a relative path: what it was resolved against (config paths are absolute by then)."""
    return "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"


def read_class_names(path: str | Path, num_classes: int) -> list[str]:
    """A class-names file: one name a line, line i = class i (blank lines and ``#`` comments skipped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ImageListError(f"data.class_names: {path}: file not found{_against(path)}")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if len(names) < num_classes:
        raise ImageListError(f"data.class_names: {path}: {len(names)} names for {num_classes} classes "
                             "(one name a line, line i = class i)")
    return names[:num_classes]


JPEG_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")


MAX_IMAGE_PIXELS = 40_000_000


def check_image_size(path: Path, max_pixels: int) -> None:
    """Refuse an image whose header claims more than ``max_pixels`` (read from the header, not decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise ImageListError(f"{path}: {exc}; allowed: data.max_image_pixels {max_pixels}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageListError(f"{path}: cannot decode image ({exc})") from None
    if width * height > max_pixels:
        raise ImageListError(f"{path}: {width} x {height} = {width * height} pixels; allowed: at most "
                             f"data.max_image_pixels = {max_pixels}")


PIL_SUFFIXES = (".bmp", ".tif", ".tiff")  # formats torchvision.io does not decode: read with Pillow


def _pil_rgb(path: Path, min_side: int | None = None) -> torch.Tensor:
    """uint8 ``[3, H, W]`` read with Pillow; a 16-bit grey image (TIFF, PNG) keeps its top 8 bits."""
    from PIL import Image

    with Image.open(path) as img:
        if min_side:
            img.draft("RGB", (min_side, min_side))  # JPEG only: decode at a DCT scale
        if img.mode.startswith("I;16"):
            grey = torch.from_numpy((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))
            return grey.expand(3, *grey.shape).contiguous()
        if img.mode in ("I", "F"):
            raise ValueError(f"{img.mode!r} (32-bit) pixels; allowed: 8- or 16-bit images")
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()  # a writable copy


def decode_rgb(path: Path, min_side: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """uint8 ``[3, H, W]`` (a 16-bit image scaled to 8 bits). With ``min_side``, a JPEG is decoded at
    the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides >= ``min_side``: decoding sized to
    the crop, not to the file. BMP and TIFF are read with Pillow, the rest with torchvision.io."""
    check_image_size(path, max_pixels)
    try:
        if (min_side and path.suffix in JPEG_SUFFIXES) or path.suffix.lower() in PIL_SUFFIXES:
            return _pil_rgb(path, min_side)
        from torchvision.io import ImageReadMode, decode_image

        image = decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ImageListError(f"{path}: cannot decode image ({exc})") from exc
    if image.dtype == torch.uint16:  # a 16-bit PNG: the top 8 bits, as ToDtype(uint8, scale=True)
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


class ImageListDataset(torch.utils.data.Dataset):
    """``(image, label)`` pairs; ``transform`` maps a uint8 ``[3, H, W]`` tensor to the sample.

    ``decode_size``: decode JPEGs no larger than needed for crops of that size (see ``decode_rgb``).
    """

    def __init__(self, paths: list[Path], labels: list[int], transform=None, decode_size: int | None = None,
                 max_pixels: int = MAX_IMAGE_PIXELS):
        self.paths, self.labels, self.transform, self.decode_size = paths, labels, transform, decode_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = decode_rgb(self.paths[i], self.decode_size, self.max_pixels)
        return (self.transform(image) if self.transform else image), self.labels[i]


class TwoViews:
    """The contrastive sample: ``[2, 3, H, W]``, one view with colour jitter, one without."""

    def __init__(self, with_jitter, without_jitter):
        self.with_jitter, self.without_jitter = with_jitter, without_jitter

    def __call__(self, image):
        return torch.stack([self.with_jitter(image), self.without_jitter(image)])


def train_transform(size: int, jitter: tuple[float, float, float, float] | None, jitter_p: float = 0.8,
                    grayscale_p: float = 0.2, flip: bool = True):
    from torchvision.transforms import v2

    ops = [v2.RandomResizedCrop(size, antialias=True)]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    if jitter:
        ops.append(v2.RandomApply([v2.ColorJitter(*jitter)], p=jitter_p))
    ops += [v2.RandomGrayscale(grayscale_p), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(ops)


def eval_transform(size: int):
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(int(round(size / 0.875)), antialias=True), v2.CenterCrop(size),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@dataclass
class ImageListData:
    train: ImageListDataset
    test: ImageListDataset
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_labels(self) -> torch.Tensor:
        return torch.as_tensor(self.train.labels, dtype=torch.long)

    @property
    def test_labels(self) -> torch.Tensor:
        return torch.as_tensor(self.test.labels, dtype=torch.long)

    in_channels = 3
    max_pixels: int = MAX_IMAGE_PIXELS  # data.max_image_pixels, checked per image before decoding

    def train_streams(self, con_sampler, ce_sampler, *, device, batch_size: int, world_size: int, augment: dict,
                      image_size: int, loader_workers: int | None, **_):
        """Both streams through DataLoader workers that decode and augment with torchvision."""
        from hybridlt.data.streams import LoaderStreams

        loader_workers = default_loader_workers() if loader_workers is None else loader_workers
        a = augment
        plain = train_transform(image_size, None, grayscale_p=a["grayscale_p"], flip=a["flip"])
        jittered = train_transform(image_size, tuple(a["jitter"]), a["jitter_p"], a["grayscale_p"], a["flip"])
        con_ds = ImageListDataset(self.train.paths, self.train.labels, TwoViews(jittered, plain), image_size,
                                  self.max_pixels)
        ce_ds = ImageListDataset(self.train.paths, self.train.labels, plain, image_size, self.max_pixels)
        loader = dict(batch_size=batch_size // world_size, num_workers=loader_workers,
                      pin_memory=torch.device(device).type == "cuda", persistent_workers=loader_workers > 0,
                      drop_last=False)
        return LoaderStreams(torch.utils.data.DataLoader(con_ds, sampler=con_sampler, **loader),
                             torch.utils.data.DataLoader(ce_ds, sampler=ce_sampler, **loader), device)

    def eval_batches(self, *, rank: int, world_size: int, batch_size: int, device, image_size: int,
                     loader_workers: int | None, **_):
        """This rank's share of the validation list, resized and centre-cropped in DataLoader workers."""
        loader_workers = default_loader_workers() if loader_workers is None else loader_workers
        test = ImageListDataset(self.test.paths, self.test.labels, eval_transform(image_size),
                                int(round(image_size / 0.875)), self.max_pixels)
        subset = torch.utils.data.Subset(test, range(rank, len(test), world_size))
        loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=loader_workers,
                                             pin_memory=torch.device(device).type == "cuda")
        return lambda: iter(loader)


@DATASETS.register("inat2018")
@DATASETS.register("image_list")
def load_image_list_dataset(train_list: str, val_list: str, root: str,
                            class_names: str | None = None, max_image_pixels: int = MAX_IMAGE_PIXELS) -> ImageListData:
    """iNaturalist 2018 (official JSON) or ``path label`` text lists under ``data.root``; ``class_names``:
    a file of names, one a line; images above ``max_image_pixels`` are refused from their header."""
    data = load_image_lists(train_list, val_list, root, class_names=class_names)
    data.max_pixels = max_image_pixels
    return data


def load_image_lists(train_list: str | Path, val_list: str | Path, root: str | Path,
                     check_files: bool = True, class_names: str | Path | None = None) -> ImageListData:
    """Train and validation lists; labels must be 0 .. C-1 with every class in the train list."""
    train_paths, train_labels, names = read_image_list(train_list, root)
    test_paths, test_labels, _ = read_image_list(val_list, root)
    if not train_paths:
        raise ImageListError(f"data.train_list: {train_list}: no images listed")
    if not test_paths:
        raise ImageListError(f"data.val_list: {val_list}: no images listed; allowed: at least one "
                             f"(an empty validation set reports no accuracy)")
    present = sorted(set(train_labels))  # nothing is sized by a label before it is checked
    if present[-1] != len(present) - 1:
        gap = next(i for i, c in enumerate(present) if c != i)
        raise ImageListError(f"data.train_list: {train_list}: class {gap} has no training image "
                             f"({present[-1] + 1 - len(present)} empty classes up to label {present[-1]}); "
                             f"labels must be 0 .. C-1 without gaps")
    num_classes = len(present)
    unknown = sorted(set(test_labels) - set(range(num_classes)))
    if unknown:
        raise ImageListError(f"data.val_list: {val_list}: label {unknown[0]} is not a training class "
                             f"(allowed: 0 .. {num_classes - 1})")
    if check_files:
        for p in (*train_paths, *test_paths):
            if not p.is_file():
                raise ImageListError(f"image list: file not found: {p}")
    class_names = (read_class_names(class_names, num_classes) if class_names
                   else [names.get(c, str(c)) for c in range(num_classes)])
    return ImageListData(ImageListDataset(train_paths, train_labels), ImageListDataset(test_paths, test_labels),
                         class_names)
