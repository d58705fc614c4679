"""Build an asset bank (:mod:`pointmap.train.realistic.bank`) from installed distribution packages.

Sources (Debian package names; everything installs offline from the distribution's archive):

* photographs: the photographic wallpapers of ``plasma-workspace-wallpapers`` (GPL-2+),
  ``mate-backgrounds`` (GPL-2+) and ``lomiri-wallpapers-16.04``/``-20.04`` (CC0 / CC-BY /
  CC-BY-SA), listed by name in :data:`DEBIAN_PHOTOS` (the abstract and drawn wallpapers of those
  packages are left out), plus the sample photographs Python packages ship (matplotlib's
  public-domain ``grace_hopper.jpg``); each is cut into many square crops at random positions and
  scales;
* 3D models: the five ``.sh3f`` furniture libraries of ``sweethome3d-furniture`` (OBJ models with
  textures; CC0 and CC-BY 3.0), scaled to the real size their catalogue gives, decimated to at
  most ``max_faces`` triangles.

Licences are read from each package's machine-readable ``copyright`` file and every asset's
licence is recorded in the manifest; assets under other licences than
:data:`~pointmap.train.realistic.bank.FREE_LICENSES` are skipped.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import install_hint
from ...io_utils import atomic_write
from .bank import FREE_LICENSES, MANIFEST, BankError, save_model
from .meshes import Material, Mesh

__all__ = ["DEBIAN_PACKAGES", "DEBIAN_PHOTOS", "ModelSource", "PhotoSource", "build_bank", "debian_sources"]

#: Photographic wallpapers by package (file or folder names; the largest image of each is used).
DEBIAN_PHOTOS: dict[str, tuple[str, ...]] = {
    "plasma-workspace-wallpapers": ("BytheWater", "ColdRipple", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                                    "Kite", "OneStandsOut", "Path", "Volna", "summer_1am"),
    "mate-backgrounds": ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
                         "Storm", "TwoWings", "Wood", "YellowFlower"),
    "lomiri-wallpapers-16.04": ("Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
                                "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
                                "analogpattern_by_Peter_Nerlich", "free_by_Peter_Nerlich",
                                "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
                                "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
                                "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi"),
    "lomiri-wallpapers-20.04": ("Kleiber_by_Lukas_Baubkus",),
}

#: Every package the Debian build reads.
DEBIAN_PACKAGES: tuple[str, ...] = (*DEBIAN_PHOTOS, "sweethome3d-furniture")

_IMAGE = re.compile(r"\.(jpe?g|png|webp)$", re.I)


@dataclass
class PhotoSource:
    """A photograph to crop: ``path`` on disk, its ``package``, ``license`` and a short ``id``."""

    path: Path
    package: str
    license: str
    id: str


@dataclass
class ModelSource:
    """A 3D model file trimesh reads (OBJ with its MTL and textures, glTF, ...).

    Attributes:
        path: the file on disk. record: where it comes from, as written to the manifest.
        package, license, name, category, creator: provenance (creator: attribution for CC-BY).
        size: ``(width, depth, height)`` metres to scale the model to (``None``: keep its units).
        rotation: ``(3, 3)`` applied to the model's vertices first (``None``: identity).
        y_up: the file's up axis is ``y`` (OBJ convention) rather than ``z``.
    """

    path: Path
    record: str
    package: str
    license: str
    name: str
    category: str = ""
    creator: str = ""
    size: tuple[float, float, float] | None = None
    rotation: np.ndarray | None = None
    y_up: bool = True
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ Debian


def _installed(pkg: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def _package_files(pkg: str) -> list[str]:
    r = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True)
    return [f for f in r.stdout.splitlines() if os.path.isfile(f)]


def _dep5(pkg: str) -> list[tuple[list[str], str]]:
    """``(patterns, licence)`` paragraphs of ``pkg``'s machine-readable copyright file."""
    path = Path("/usr/share/doc") / pkg / "copyright"
    if not path.is_file():
        gz = path.with_suffix(".gz")
        text = gzip.open(gz, "rt").read() if gz.is_file() else ""
    else:
        text = path.read_text(errors="replace")
    return _dep5_text(text)


def _dep5_text(text: str) -> list[tuple[list[str], str]]:
    """``(patterns, licence)`` paragraphs of a machine-readable (DEP-5) copyright text."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*(?:\n[ \t].*)*)", para, re.M)
        lic = re.search(r"^License:\s*(\S+)", para, re.M)
        if files and lic:
            out.append((files.group(1).split(), lic.group(1)))
    return out


def _license_of(paras: list[tuple[list[str], str]], name: str) -> str | None:
    """Licence of the file ``name`` (a relative path or base name): the last matching paragraph."""
    found = None
    for pats, lic in paras:
        for p in pats:
            base = os.path.basename(p)
            if fnmatch.fnmatch(name, p) or ("/" in p and base != "*" and fnmatch.fnmatch(os.path.basename(name), base)):
                found = lic
    return found


def _ensure_packages(install: bool, packages: Sequence[str]) -> None:
    missing = [p for p in packages if not _installed(p)]
    if not missing:
        return
    line = "apt-get install -y --no-install-recommends " + " ".join(missing)
    if not install:
        raise BankError(f"the asset bank needs the packages {', '.join(missing)}; install them with `{line}` "
                        "(as root) or pass --install")
    r = subprocess.run(line.split(), env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if r.returncode != 0:
        raise BankError(f"`{line}` failed (exit {r.returncode}); run it as root, then build again")


def _parse_catalog(text: str) -> dict[int, dict[str, str]]:
    items: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)#(\d+)=(.*)$", line)
        if m:
            items.setdefault(int(m.group(2)), {})[m.group(1)] = m.group(3).strip()
    return items


def debian_sources(workdir: Path, install: bool = False) -> tuple[list[PhotoSource], list[ModelSource]]:
    """Locate (or with ``install``, install) the Debian packages and list their assets.

    ``.sh3f`` archives are unpacked into ``workdir``. Raises :class:`BankError` with the
    ``apt-get`` line when packages are missing and ``install`` is false.
    """
    _ensure_packages(install, DEBIAN_PACKAGES)
    photos: list[PhotoSource] = []
    for pkg, names in DEBIAN_PHOTOS.items():
        paras = _dep5(pkg)
        files = [f for f in _package_files(pkg) if _IMAGE.search(f) and "screenshot" not in f]
        for name in names:
            cand = [f for f in files if f"/{name}/" in f or re.sub(r"(_\d+x\d+)?\.\w+$", "", os.path.basename(f)) == name]
            if not cand:
                continue
            best = max(cand, key=os.path.getsize)
            lic = _license_of(paras, best) or ""
            if lic not in FREE_LICENSES:
                continue
            photos.append(PhotoSource(Path(best), pkg, lic, name))
    try:
        import matplotlib

        sample = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if sample.is_file():
            photos.append(PhotoSource(sample, "matplotlib (Python)", "public-domain", "grace_hopper"))
    except ImportError:
        pass

    models: list[ModelSource] = []
    pkg = "sweethome3d-furniture"
    paras = _dep5(pkg)
    for arc in sorted(f for f in _package_files(pkg) if f.endswith(".sh3f")):
        stem = Path(arc).stem
        lic = _license_of(paras, f"{stem}/x.obj") or ""
        if lic not in FREE_LICENSES:
            continue
        dest = workdir / stem
        with zipfile.ZipFile(arc) as z:
            z.extractall(dest)
            catalog = _parse_catalog(z.read("PluginFurnitureCatalog.properties").decode("latin-1"))
        for item in catalog.values():
            if "model" not in item:
                continue
            rot = None
            if "modelRotation" in item:
                rot = np.array([float(x) for x in item["modelRotation"].split()]).reshape(3, 3)
            size = tuple(float(item[k]) / 100 for k in ("width", "depth", "height"))
            models.append(ModelSource(
                path=dest / item["model"].lstrip("/"), record=f"{arc}:{item['model']}", package=pkg, license=lic,
                name=item.get("name", ""), category=item.get("category", ""), creator=item.get("creator", ""),
                size=size, rotation=rot, y_up=True,
                extra={"door_or_window": item.get("doorOrWindow") == "true"}))
    return photos, models


# ------------------------------------------------------------------------------ models


def _material_of(visual, cache: dict) -> tuple[Image.Image | None, tuple[float, float, float]]:
    """The texture image and diffuse colour of a trimesh visual."""
    if getattr(visual, "kind", None) == "texture":
        mat = visual.material
        img = getattr(mat, "image", None)
        if img is None:
            img = getattr(mat, "baseColorTexture", None)
        col = getattr(mat, "diffuse", None)
        if col is None:
            col = getattr(mat, "baseColorFactor", None)
        col = (255, 255, 255, 255) if col is None else col
        rgb = tuple(float(c) / 255 for c in np.asarray(col)[:3])
        if img is not None:
            return img, (1.0, 1.0, 1.0)
        return None, rgb
    try:
        fc = np.asarray(visual.face_colors)[:, :3].mean(0) / 255
        return None, tuple(float(c) for c in fc)
    except (AttributeError, ValueError):
        return None, (0.7, 0.7, 0.7)


def _decimate(v: np.ndarray, f: np.ndarray, uv: np.ndarray, fm: np.ndarray, target: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Quadric decimation of each material part to about ``target`` faces in total (texture
    coordinates follow the nearest original vertex of the same part)."""
    import fast_simplification
    from scipy.spatial import cKDTree

    ratio = 1.0 - target / len(f)
    vs, fs, uvs, fms, nv = [], [], [], [], 0
    for m in np.unique(fm):
        ff = f[fm == m]
        used, inv = np.unique(ff, return_inverse=True)
        pv, pf, puv = v[used], inv.reshape(-1, 3), uv[used]
        if len(pf) > 8:
            dv, df = fast_simplification.simplify(pv.astype(np.float32), pf.astype(np.int32), target_reduction=ratio)
            if len(df):
                _, nn = cKDTree(pv).query(dv)
                pv, pf, puv = dv, df, puv[nn]
        vs.append(pv)
        fs.append(pf + nv)
        uvs.append(puv)
        fms.append(np.full(len(pf), m))
        nv += len(pv)
    return np.concatenate(vs), np.concatenate(fs), np.concatenate(uvs), np.concatenate(fms)


def load_model(src: ModelSource, max_faces: int) -> tuple[Mesh, list[Image.Image]]:
    """Read ``src`` with trimesh into one :class:`Mesh` in metres, z up, centred on x/y with its
    base on z = 0 (materials' textures are indices into the returned images, as strings)."""
    import trimesh

    scene = trimesh.load(str(src.path), force="scene", process=False)
    parts = scene.dump() if hasattr(scene, "dump") else [scene]
    verts, faces, uvs, fmat, mats, images = [], [], [], [], [], []
    img_index: dict[int, int] = {}
    nv = 0
    for g in parts:
        if not hasattr(g, "faces") or len(g.faces) == 0:
            continue
        img, color = _material_of(g.visual, img_index)
        uv = getattr(g.visual, "uv", None)
        if img is not None and uv is not None and len(uv) == len(g.vertices):
            key = id(img)
            if key not in img_index:
                img_index[key] = len(images)
                images.append(img)
            mat = Material(str(img_index[key]), color)
            uv = np.asarray(uv, np.float64).copy()
            uv[:, 1] = 1.0 - uv[:, 1]  # OBJ v points up, image rows down
        else:
            mat = Material(None, color)
            uv = np.zeros((len(g.vertices), 2))
        verts.append(np.asarray(g.vertices, np.float64))
        faces.append(np.asarray(g.faces, np.int64) + nv)
        uvs.append(uv)
        fmat.append(np.full(len(g.faces), len(mats)))
        mats.append(mat)
        nv += len(g.vertices)
    if not faces:
        raise ValueError("no triangles")
    v, f, uv, fm = np.concatenate(verts), np.concatenate(faces), np.concatenate(uvs), np.concatenate(fmat)
    if src.rotation is not None:
        v = v @ np.asarray(src.rotation).T
    if src.y_up:
        v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], -1)  # (x, y up, z toward viewer) -> (x, -z, y)
    lo, hi = v.min(0), v.max(0)
    if src.size is not None:
        ext = np.maximum(hi - lo, 1e-9)
        v = (v - lo) / ext * np.asarray(src.size)
    else:
        v = v - lo
    lo, hi = v.min(0), v.max(0)
    v = v - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    if len(f) > max_faces:
        v, f, uv, fm = _decimate(v, f, uv, fm, max_faces)
    tm = trimesh.Trimesh(v, f, process=False)
    normals = np.asarray(tm.vertex_normals, np.float32)
    return Mesh(v.astype(np.float32), f, uv.astype(np.float32), fm, mats, normals, name=src.name), images


# ------------------------------------------------------------------------------ build


def _save_jpeg(img: Image.Image, path: Path, max_side: int, quality: int) -> None:
    img = img.convert("RGB")
    if max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)
    img.save(path, "JPEG", quality=quality)


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def build_bank(out: Path, photos: Sequence[PhotoSource], models: Sequence[ModelSource], n_crops: int = 1200,
               crop_size: int = 256, max_faces: int = 2500, texture_px: int = 256, jpeg_quality: int = 85,
               seed: int = 0, progress: Callable[[str], None] | None = None) -> dict:
    """Write a bank to the new folder ``out`` from ``photos`` and ``models``.

    Args:
        n_crops: photo crops in total (spread evenly over the photos), each ``crop_size`` pixels.
        max_faces: models with more triangles are decimated to about this many.
        texture_px: largest side of a model texture in the bank.
    Returns:
        a summary: counts, bytes, licences, skipped models and seconds spent.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BankError(f"{str(out)!r} exists and is not empty; choose a new folder (pointmap never overwrites it)")
    if crop_size > 512 or texture_px > 512:
        raise BankError("bank textures are at most 512 px: lower crop_size / texture_px")
    (out / "photos").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    say = progress or (lambda s: None)
    skipped = [{"path": str(x.path), "reason": f"licence {x.license!r} is not in FREE_LICENSES"}
               for x in (*photos, *models) if x.license not in FREE_LICENSES]
    photos = [p for p in photos if p.license in FREE_LICENSES]
    models = [m for m in models if m.license in FREE_LICENSES]
    rng = np.random.default_rng(seed)
    sources, crops = [], []
    per = -(-n_crops // max(1, len(photos)))
    for si, ph in enumerate(photos):
        sources.append({"id": ph.id, "package": ph.package, "path": str(ph.path), "license": ph.license})
        with Image.open(ph.path) as im:
            im = im.convert("RGB")
            w, h = im.size
            seen = set()
            for _ in range(per):
                if len(crops) >= n_crops:
                    break
                side = int(min(w, h) * float(np.exp(rng.uniform(np.log(0.12), np.log(0.9)))))
                side = max(side, min(w, h, 64))
                x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
                if (x, y, side) in seen:
                    continue
                seen.add((x, y, side))
                name = f"photos/{len(crops):06d}.jpg"
                im.crop((x, y, x + side, y + side)).resize((crop_size, crop_size), Image.LANCZOS).save(
                    out / name, "JPEG", quality=jpeg_quality)
                crops.append({"file": name, "source": si, "crop": [x, y, side]})
        say(f"photo {si + 1}/{len(photos)} {ph.id}: {len(crops)} crops")
    entries = []
    for mi, src in enumerate(models):
        try:
            mesh, images = load_model(src, max_faces)
        except Exception as e:  # noqa: BLE001 - a model trimesh cannot read is skipped and reported
            skipped.append({"path": src.record, "reason": f"{type(e).__name__}: {e}"[:200]})
            continue
        k = len(entries)
        tex_files = []
        for ti, img in enumerate(images):
            name = f"models/{k:06d}_{ti}.jpg"
            _save_jpeg(img, out / name, texture_px, jpeg_quality)
            tex_files.append(name)
        save_model(out / f"models/{k:06d}.npz", mesh, tex_files)
        ext = (mesh.vertices.max(0) - mesh.vertices.min(0)).tolist()
        entries.append({"file": f"models/{k:06d}.npz", "name": src.name, "category": src.category,
                        "package": src.package, "path": src.record, "license": src.license, "creator": src.creator,
                        "size": [round(float(e), 4) for e in ext], "faces": int(len(mesh.faces)),
                        "textures": tex_files, **src.extra})
        if (mi + 1) % 50 == 0:
            say(f"model {mi + 1}/{len(models)}: {len(entries)} kept")
    manifest = {"format": 1, "sources": sources, "photos": crops, "models": entries, "skipped": skipped}
    with atomic_write(out / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
    licences: dict[str, int] = {}
    for e in entries:
        licences[e["license"]] = licences.get(e["license"], 0) + 1
    for c in crops:
        lic = sources[c["source"]]["license"]
        licences[lic] = licences.get(lic, 0) + 1
    return {"photos": len(crops), "photo_sources": len(sources), "models": len(entries), "skipped": len(skipped),
            "bytes": _folder_bytes(out), "licenses": licences, "seconds": round(time.perf_counter() - t0, 1)}


def build_debian_bank(out: Path, install: bool = False, **kw) -> dict:
    """:func:`build_bank` from :func:`debian_sources` (``.sh3f`` archives unpacked in a temporary
    folder removed afterwards)."""
    try:
        import fast_simplification  # noqa: F401
    except ImportError:
        raise BankError("building the asset bank decimates models with fast_simplification: install the "
                        f"'assets' extra ({install_hint('assets')})") from None
    tmp = Path(tempfile.mkdtemp(prefix="pointmap-bank-"))
    try:
        photos, models = debian_sources(tmp, install=install)
        if not photos or not models:
            raise BankError("no photographs or no models found in the installed packages")
        return build_bank(out, photos, models, **kw)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
