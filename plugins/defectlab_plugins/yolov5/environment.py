"""Importing ultralytics offline and quietly: the environment it needs, set here and not in the user's shell.

ultralytics reads its settings when it is first imported: ``YOLO_OFFLINE`` (only then does it
never reach for the network: no DNS probe, no asset, font or weights download, no analytics),
``YOLO_CONFIG_DIR`` (a writable folder for its settings.json and fonts) and, if unset,
``OMP_NUM_THREADS``, which it sets to 1 for the whole process. :func:`ultralytics_module` sets
the first two before that import, unless the user set them, puts a font from matplotlib where
ultralytics looks for Arial (so its plots never download one), leaves ``OMP_NUM_THREADS`` as it
was, and puts Pillow's ``Image.open`` back (ultralytics' would pip-install a package on the first
image Pillow cannot read). ultralytics is AGPL-3.0 and an optional extra: without it the error
says how to install it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from defectlab import DefectlabError, WriteError, atomic_write

#: What the user runs to get ultralytics (AGPL-3.0, hence an optional extra).
INSTALL = 'pip install "defectlab[yolo]"'
#: The spellings of "true" that some ultralytics versions accept for YOLO_OFFLINE; only "true" works in all.
TRUE_WORDS = {"1", "true", "yes", "on", "y", "t"}
#: The fonts ultralytics' plots look for in its config folder (and download when missing).
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


def config_dir() -> Path:
    """A writable folder for ultralytics' settings and fonts: $XDG_CACHE_HOME (or ~/.cache)/defectlab/ultralytics,
    else a folder in the temporary directory."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    for folder in (cache / "defectlab" / "ultralytics",
                   Path(tempfile.gettempdir()) / f"defectlab-ultralytics-{os.getuid() if hasattr(os, 'getuid') else 0}"):
        try:
            (folder / "Ultralytics").mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder / "Ultralytics", os.W_OK):
            return folder
    raise DefectlabError(f"no writable folder for ultralytics' settings (tried {cache}/defectlab/ultralytics and the "
                         f"temporary directory); set YOLO_CONFIG_DIR to a writable folder")


def offline_environment() -> None:
    """Set YOLO_OFFLINE and YOLO_CONFIG_DIR for ultralytics, keeping what the user set.

    A YOLO_OFFLINE that the user set to another spelling of true ("1", "yes") becomes "true",
    which every ultralytics version reads as true; one set to anything else is left alone (the
    user wants ultralytics online).
    """
    offline = os.environ.get("YOLO_OFFLINE")
    if offline is None or offline.strip().lower() in TRUE_WORDS:
        os.environ["YOLO_OFFLINE"] = "true"
    if not os.environ.get("YOLO_CONFIG_DIR"):
        os.environ["YOLO_CONFIG_DIR"] = str(config_dir())


def install_font(folder: Path) -> None:
    """Copy matplotlib's DejaVu Sans to the names ultralytics' plots look for, where they are missing."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in FONT_NAMES:
        if (folder / name).is_file() or not source.is_file():
            continue
        try:
            with atomic_write(folder / name) as temporary:  # another process may copy at the same time
                shutil.copyfile(source, temporary)
        except WriteError:
            return  # a read-only config folder: ultralytics then draws without the font (offline, no download)


def restore_pillow_open() -> None:
    """Put Pillow's own ``Image.open`` back in place of the one ultralytics installs on import.

    ultralytics' version, on the first file Pillow cannot identify, pip-installs pi-heif and raises
    ModuleNotFoundError when it cannot: a broken image would then stop a defectlab run instead of
    being skipped as unreadable, and a run could install packages. ultralytics reads images with
    OpenCV; only HEIC/HEIF files need the plugin, which a user can register with pi-heif.
    """
    from PIL import Image

    patches = importlib.import_module("ultralytics.utils.patches")
    original = getattr(patches, "_image_open", None)
    if original is not None and Image.open is getattr(patches, "image_open", None):
        Image.open = original


_prepared = False  # set once ultralytics was imported here (or found imported) and its font is in place


def ultralytics_module(name: str = "ultralytics") -> Any:
    """Import ``name`` (ultralytics or one of its modules) in the environment above.

    torch is imported first, and OMP_NUM_THREADS is restored afterwards, so importing ultralytics
    changes neither torch's threads nor those of the processes this one starts. If the user
    imported ultralytics before, its settings are already fixed; its plots still get the font.
    """
    global _prepared
    try:
        if not _prepared:
            first = "ultralytics" not in sys.modules
            threads = os.environ.get("OMP_NUM_THREADS")
            if first:
                import torch  # noqa: F401  (before ultralytics, which would set OMP_NUM_THREADS=1 for it)

                offline_environment()
            try:
                utils = importlib.import_module("ultralytics.utils")
            finally:
                if first and threads is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                elif first:
                    os.environ["OMP_NUM_THREADS"] = threads
            install_font(Path(utils.USER_CONFIG_DIR))
            restore_pillow_open()
            _prepared = True
        return importlib.import_module(name)
    except ImportError as exc:
        raise DefectlabError(f"the yolov5 backbone needs ultralytics (AGPL-3.0), an optional extra of defectlab: "
                             f"{INSTALL}") from exc
