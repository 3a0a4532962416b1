"""Reading many pictures: worker processes, results in input order as soon as they are ready, and an
output file that a stopped run continues.

    >>> from digitrec.batch import ReadOptions, read_in_order, tasks_from
    >>> for result in read_in_order(tasks_from(["scans/"]), ReadOptions(), jobs=4):
    ...     print(result.line)                 # the `digitrec predict --json` object of each picture

Only a bounded window of pictures is in flight, so memory stays flat on a folder of any size: the
main process holds names and results on their way out, never the pictures.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

from digitrec.errors import UsageError
from digitrec.images import IMAGE_SUFFIXES, ImageError

CHUNK = 8  # pictures a worker reads per task: amortises the hand-over, keeps the output streaming
WINDOW_PER_JOB = 4  # chunks in flight per worker: enough to keep it busy, few enough to keep memory flat
MIN_PER_WORKER = 16  # a worker process is started for every this many pictures (its start-up reads ~16)
ANNOTATED_STEM = 220  # characters of a picture's name kept in its annotated copy's, within the 255 a name may have
PROGRESS_MIN = 20  # a progress bar is shown (on a terminal) for more pictures than this


@dataclass(frozen=True)
class Task:
    name: str  # the file as the user named it: the "file" of the output
    path: Path | None  # None where there is nothing to read
    problem: str | None = None  # found before reading: reported as the picture's error
    annotate: Path | None = None  # where to write a copy with boxes and labels drawn


@dataclass(frozen=True)
class ReadOptions:
    model: str | None = None  # run directory; None: the bundled model
    backend: str = "auto"  # onnx, torch or auto
    top_k: int = 3  # alternatives per digit


@dataclass
class Result:
    name: str
    record: dict  # the JSON Lines object: a reading, or {"file", "error"}
    describe: str = ""  # the one-line reading for people ("" for an error)
    notes: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return self.record.get("error")

    @property
    def line(self) -> str:
        return json.dumps(self.record)


def default_jobs() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def tasks_from(inputs: Iterable[str], annotate: Path | None = None, one_file: bool = False) -> list[Task]:
    """One task per picture: files as given, folders as the pictures in them (by name, hidden ones left out).

    Only names are listed; the pictures are opened by the workers. Annotated copies get names
    that do not collide: photo-annotated.png, photo-annotated-2.png, ...
    """
    tasks = []
    for arg in inputs:
        if os.path.isdir(arg):
            with os.scandir(arg) as entries:
                names = sorted(e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
                               and not e.name.startswith(".") and e.is_file())
            if not names:
                tasks.append(Task(arg, None, f"no images ({' '.join(IMAGE_SUFFIXES)}) in this folder"))
            tasks += [Task(str(Path(arg) / n), Path(arg) / n) for n in names]
        else:
            tasks.append(Task(arg, Path(arg)))
    if annotate is not None:
        inputs_read = {t.path.resolve() for t in tasks if t.path is not None and t.path.exists()}
        used = set()
        for i, t in enumerate(tasks):
            if t.path is None:
                continue
            stem = t.path.stem[:ANNOTATED_STEM]
            target = annotate if one_file else annotate / f"{stem}-annotated.png"
            for n in range(2, len(used) + 3):
                if target not in used:
                    break
                target = annotate / f"{stem}-annotated-{n}.png"
            if target.resolve() in inputs_read:  # never over a picture given to read
                target = target.with_name(f"{target.stem}-{len(used) + 2}{target.suffix}")
            used.add(target)
            tasks[i] = replace(t, annotate=target)
    return tasks


_reader = None  # (Recognizer, ReadOptions) of this worker process
_start_error: UsageError | None = None  # why this worker could not load the model, told with its first chunk


def _start_worker(options: ReadOptions, worker: bool) -> None:
    """Load the model of this process; `worker`: one of a pool, which leaves Ctrl-C to the main process."""
    global _reader, _start_error
    import warnings

    from PIL import Image

    from digitrec.recognize import load

    if worker:  # Ctrl-C is the main process's to handle; it stops the workers
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own pixel limit applies
    # A few 28x28 digits per picture gain nothing from parallel kernels: one thread per process.
    try:
        _reader = (load(options.model, backend=options.backend, threads=1), options)
    except UsageError as e:
        if not worker:
            raise
        _start_error = e  # raised here it would only show as a broken pool


def _read_chunk(tasks: list[Task]) -> list[Result]:
    if _start_error is not None:
        raise _start_error
    return [read_picture(t) for t in tasks]


def read_picture(task: Task) -> Result:
    """Read one picture with this process's recognizer (see _start_worker); errors become results."""
    from io import BytesIO

    from PIL import Image

    from digitrec.data import atomic_write_bytes
    from digitrec.images import load_image
    from digitrec.recognize import draw_reading

    rec, options = _reader
    try:
        if task.problem:
            raise ImageError(task.problem)
        picture = load_image(task.path)
        reading = rec.read(picture, top_k=options.top_k)
        if task.annotate is not None:
            buf = BytesIO()
            fmt = Image.registered_extensions().get(task.annotate.suffix.lower(), "PNG")
            Image.fromarray(draw_reading(picture, reading)).save(buf, format=fmt)
            try:
                atomic_write_bytes(task.annotate, buf.getvalue())
            except OSError as e:
                raise ImageError(f"read, but the annotated copy could not be written to {task.annotate} "
                                 f"({e.strerror})") from None
    except (ImageError, MemoryError) as e:
        message = str(e) if isinstance(e, ImageError) else "not enough memory to read it"
        return Result(task.name, {"file": task.name, "error": message})
    return Result(task.name, reading.to_dict(file=task.name), reading.describe(), list(reading.notes))


def workers_for(n_tasks: int, jobs: int) -> int:
    """Processes worth starting for `n_tasks` pictures with `--jobs jobs`: 1 means read in this process."""
    return max(1, min(jobs, n_tasks // MIN_PER_WORKER))


def read_in_order(tasks: Iterable[Task], options: ReadOptions, jobs: int) -> Iterator[Result]:
    """The result of every task, in the order of `tasks`, each as soon as it and those before it are read.

    jobs=1 reads in this process; more start that many worker processes, each with its own model.
    """
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1 (got {jobs})")
    if jobs == 1:
        _start_worker(options, worker=False)
        yield from map(read_picture, tasks)
        return
    import multiprocessing

    # Spawned, not forked: a fork copies whatever threads and runtimes this process holds.
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(options, True))
    pending: deque = deque()
    chunks = _chunks(iter(tasks), CHUNK)
    try:
        for chunk in chunks:
            pending.append(pool.submit(_read_chunk, chunk))
            if len(pending) >= jobs * WINDOW_PER_JOB:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    except BrokenProcessPool:
        raise UsageError("a reading process stopped unexpectedly (out of memory, or killed); "
                         "the results before it are kept") from None
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _chunks(it: Iterator[Task], size: int) -> Iterator[list[Task]]:
    while chunk := [t for _, t in zip(range(size), it)]:
        yield chunk


class OutputFile:
    """`--output FILE`: JSON Lines appended as they come; the pictures already in FILE are not read again.

    A line cut short by a stop (no newline at its end) is dropped, and its picture read again.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.done: set[str] = set()
        self.errors = 0
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as e:
            raise UsageError(f"--output {self.path}: cannot read it ({e.strerror})") from None
        complete = data[:data.rfind(b"\n") + 1]
        for number, line in enumerate(complete.splitlines(), 1):
            try:
                record = json.loads(line)
                self.done.add(record["file"])
            except (ValueError, KeyError, TypeError):
                raise UsageError(f"--output {self.path}: line {number} is not a digitrec predict JSON line; "
                                 "give a new file, or one that an earlier run of predict wrote") from None
            self.errors += "error" in record
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "ab")
            if len(complete) < len(data):
                self.file.truncate(len(complete))
        except OSError as e:
            raise UsageError(f"--output {self.path}: cannot write it ({e.strerror})") from None

    def write(self, result: Result) -> None:
        self.file.write(result.line.encode() + b"\n")
        self.file.flush()  # a stop loses at most the line being written

    def close(self) -> None:
        self.file.close()


def progress_bar(total: int, show: bool | None = None):
    """A tqdm bar on stderr for more than PROGRESS_MIN pictures on a terminal (`show` forces it on or off)."""
    from tqdm import tqdm

    if show is None:
        show = total > PROGRESS_MIN and sys.stderr.isatty()
    return tqdm(total=total, unit="picture", disable=not show, dynamic_ncols=True, file=sys.stderr)
