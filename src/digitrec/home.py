"""The user's data folder, and the model names `bundled` and `personal` that stand for run directories.

    >>> home()                                   # $DIGITREC_HOME, else the platform's user data folder
    PosixPath('/home/ada/.local/share/digitrec')
    >>> resolve_model(None)                      # the personal model once `digitrec learn fit` made one
    PosixPath('/home/ada/.local/share/digitrec/personal')
    >>> resolve_model("bundled")
    PosixPath('.../site-packages/digitrec/weights')

No torch here: the ONNX path of `digitrec predict` resolves names too, and must start fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from digitrec.errors import UsageError

HOME_ENV = "DIGITREC_HOME"  # overrides the data folder (tests, portable installs)
BUNDLED = "bundled"  # the pretrained model shipped in the package
PERSONAL = "personal"  # the model fine-tuned on the user's own samples, a run directory in home()
BUNDLED_DIR = Path(__file__).parent / "weights"
META = "model.json"


def home() -> Path:
    """Where samples and the personal model live: $DIGITREC_HOME, else the platform's user data folder."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    from platformdirs import user_data_path

    return user_data_path("digitrec", appauthor=False)


def personal_dir() -> Path:
    return home() / PERSONAL


def has_personal() -> bool:
    return (personal_dir() / META).is_file()


def resolve_model(run_dir: str | os.PathLike | None) -> Path:
    """The run folder a model name or path stands for.

    None: the personal model where one exists, else the bundled one; "bundled" and "personal" name
    them (write ./personal for a folder of that name); anything else is a run directory.
    """
    if run_dir is None:
        run_dir = PERSONAL if has_personal() else BUNDLED
    if str(run_dir) == BUNDLED:
        if not (BUNDLED_DIR / META).is_file():
            raise UsageError("this installation has no bundled model; give a run directory")
        return BUNDLED_DIR
    if str(run_dir) == PERSONAL:
        if not has_personal():
            raise UsageError(f"no personal model yet in {home()}; correct some readings "
                             "(digitrec learn add) and run: digitrec learn fit")
        return personal_dir()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    if not (run_dir / META).is_file():
        raise UsageError(f"{run_dir}: no checkpoint here (no {META}); is it a run directory?")
    return run_dir


def model_name(run_dir: Path, meta: dict) -> str:
    """How a loaded model is named to users: 'personal, 40 samples', 'bundled', or its folder."""
    run_dir = Path(run_dir)
    if run_dir.resolve() == BUNDLED_DIR.resolve():
        return BUNDLED
    personal = meta.get(PERSONAL)
    if isinstance(personal, dict) and run_dir.resolve() == personal_dir().resolve():
        return f"{PERSONAL}, {personal.get('samples', '?')} samples"
    return str(run_dir)


def read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a readable JSON checkpoint description ({e})") from None
    if not isinstance(meta, dict) or "architecture" not in meta:
        raise UsageError(f"{path}: not a digitrec checkpoint description")
    return meta
