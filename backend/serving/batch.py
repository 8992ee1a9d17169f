"""The batch job of ``python -m backend batch``: one alpha PNG per person per image of a folder.

Both ways of running it share everything here: the plan (which images, which output names), the per-image work
(`ImageWorker`: one loaded engine that mattes one image and writes its masks), the index (``OUT/index.json``: what
is finished, so a rerun resumes), the progress bar and the summary. ``run_local`` drives one `ImageWorker` in this
process; `backend.serving.batch_ray` drives one per Ray actor. Because the same function writes the same files
and returns the same index entry, both modes give the same results (docs/batch.md).

Nothing is lost or written twice: a mask is written to a temporary file in OUT and renamed into place, so a
reader never sees half a PNG, and writing an image's masks again (a retry after a worker died) replaces them
with the same bytes. An image counts as finished only once the driver has its index entry; a rerun skips the
images whose entry matches the source file (size and sha256), the job's settings and the mask files on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
INDEX_NAME = "index.json"
# The index is rewritten whole, so rewriting it after every image would cost O(images²) over a long job. It is
# rewritten at most every INDEX_EVERY_S, and never more often than INDEX_SAVE_SHARE of the driver's time allows
# (100 000 entries take ~5 s to write on the 2-core team machine); an image finished but not yet recorded is only
# done again on a rerun.
INDEX_EVERY_S = 2.0
INDEX_SAVE_SHARE = 0.05
# Temporary files are hidden and carry a random tag, so a leftover from a killed run can never be taken for a mask.
PART_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.part$")

Detector = Callable[[Any], list[list[float]]]


class BatchError(Exception):
    """The job cannot start (no folder, no images, no model); the message is the one line the user sees."""


@dataclass(frozen=True)
class BatchOptions:
    """What the user asked for; identical whichever way the job runs."""

    directory: Path
    output: Path
    text: str = "person"
    weights: str | None = None
    device: str | None = None


def mask_name(stem: str, k: int) -> str:
    return f"{stem}_person{k:02d}.png"


# ---------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """The images of the job in name order; ``clashes`` maps an image to the earlier one whose mask names it
    shares (``a.png`` and ``a.jpg`` both write ``a_person00.png``): those are reported, not matted."""

    names: list[str]
    clashes: dict[str, str] = field(default_factory=dict)


def plan_job(options: BatchOptions) -> Plan:
    if not options.directory.is_dir():
        raise BatchError(f"{options.directory} is not a folder")
    names = sorted(p.name for p in options.directory.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not names:
        raise BatchError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {options.directory}")
    first: dict[str, str] = {}
    clashes: dict[str, str] = {}
    for name in names:
        stem = Path(name).stem
        if stem in first:
            clashes[name] = first[stem]
        else:
            first[stem] = name
    return Plan(names, clashes)


# ---------------------------------------------------------------------------- per-image work


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, so ``path`` holds
    either its old content or all of the new one, also when the process dies half-way."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_leftover_parts(output: Path) -> None:
    """Temporary files of a run that was killed before it could rename or remove them."""
    for p in output.iterdir():
        if PART_RE.match(p.name):
            p.unlink(missing_ok=True)


def encode_png(alpha: Any) -> bytes:
    import cv2

    from backend.serving.server import alpha_to_uint8

    ok, buf = cv2.imencode(".png", alpha_to_uint8(alpha))
    if not ok:
        raise OSError("cannot encode the mask as PNG")
    return buf.tobytes()


def decode_rgb(data: bytes) -> Any | None:
    """H×W×3 uint8 RGB, or None when the bytes are no image OpenCV can read (EXIF orientation applied, as
    ``cv2.imread`` does)."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def matte_image(engine: Any, source: Path, output: Path, text: str, job: str,
                detector: Detector | None = None) -> dict[str, Any]:
    """Matte every person in ``source`` and write their masks into ``output``; returns the image's index entry.

    Never raises for a problem with this image (unreadable, corrupt, a failure inside the model): the entry
    then carries ``error`` and the job goes on. The masks are written before the entry exists, so an entry
    always describes files that are complete on disk.
    """
    from backend.runtime.people import matte_people

    entry: dict[str, Any] = {"image": source.name}
    try:
        data = source.read_bytes()
    except OSError as exc:
        return {**entry, "masks": [], "error": f"cannot read {source.name}: {exc.strerror or exc}"}
    entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest(), job=job, masks=[])
    image = decode_rgb(data)
    if image is None:
        return {**entry, "error": f"cannot read image {source.name}: not an image or damaged"}
    try:
        # An empty --text means the finder's boxes alone (the engine refuses an empty string as a prompt).
        mattes = matte_people(engine, image, {"text": text or None}, every_person=True, detector=detector)
        stem = source.stem
        for k, (box, alpha) in enumerate(mattes):
            png = encode_png(alpha)
            atomic_write(output / mask_name(stem, k), png)
            entry["masks"].append({"file": mask_name(stem, k), "box": box, "size": len(png)})
    except Exception as exc:  # one bad image must not end a job of thousands; it is reported instead
        remove_masks(output, source.stem, 0)  # an entry without masks: none of this image's may stay on disk
        return {**entry, "masks": [], "error": f"{type(exc).__name__}: {exc}"}
    # Masks a previous run wrote for more people than were found now would otherwise stay beside these.
    remove_masks(output, source.stem, len(entry["masks"]))
    return entry


def remove_masks(output: Path, stem: str, first: int) -> None:
    """Delete ``stem``'s masks numbered ``first`` and up (they are numbered without gaps)."""
    k = first
    while (output / mask_name(stem, k)).exists():
        (output / mask_name(stem, k)).unlink()
        k += 1


def resolve_weights(weights: str | None) -> Path:
    """The checkpoint the engine will load for ``weights`` (the CLI's rule: given, else the install config's,
    else the engine's default)."""
    from backend.runtime.engine import default_weights
    from backend.serving.cli import installed_weights

    chosen = weights or installed_weights()
    return Path(chosen) if chosen else default_weights()


def job_key(text: str, weights_sha256: str, engine: Any) -> str:
    """What decides the masks besides the image: the prompt, the weights, the run-time and the engine's rules.
    A rerun with another key does the images again instead of resuming them."""
    options = getattr(engine, "options", None)
    described = {"text": text, "weights": weights_sha256, "runtime": getattr(engine, "runtime", None),
                 "options": asdict(options) if options is not None else None}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


class ImageWorker:
    """One loaded engine working through images of one job; the local batch has one, each Ray actor one.

    Raises `BatchError` when the model cannot be loaded.
    """

    def __init__(self, options: BatchOptions, detector: Detector | None = None) -> None:
        from backend.serving.cli import load_engine

        self.options = options
        self.detector = detector
        weights = resolve_weights(options.weights)
        try:
            # Libraries print while loading (efficientnet's "Loaded pretrained weights"); stdout is the summary's.
            with contextlib.redirect_stdout(sys.stderr):
                self.engine = load_engine(str(weights), options.device)
            weights_sha = hashlib.sha256(weights.read_bytes()).hexdigest()
        except Exception as exc:  # torch's loading errors have many types; their first line names the problem
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BatchError(f"cannot load the model: {first}") from None
        self.job = job_key(options.text, weights_sha, self.engine)

    def process(self, name: str) -> dict[str, Any]:
        return matte_image(self.engine, self.options.directory / name, self.options.output, self.options.text,
                           self.job, self.detector)


# ---------------------------------------------------------------------------- index


def load_index(output: Path) -> dict[str, dict[str, Any]]:
    """The previous run's entries by image name ({} when there is none or it cannot be read)."""
    try:
        entries = json.loads((output / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(entries, list):
        return {}
    return {e["image"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("image"), str)}


def is_finished(entry: dict[str, Any] | None, source: Path, output: Path, job: str) -> bool:
    """Whether a previous run's entry still stands: no error, the same job settings, the same source file (size,
    then sha256) and every mask file present at its recorded size."""
    if not entry or "error" in entry or entry.get("job") != job or "sha256" not in entry:
        return False
    try:
        if source.stat().st_size != entry.get("size"):
            return False
        for m in entry.get("masks", []):
            if (output / m["file"]).stat().st_size != m.get("size"):
                return False
        return hashlib.sha256(source.read_bytes()).hexdigest() == entry["sha256"]
    except (OSError, KeyError, TypeError):
        return False


# ---------------------------------------------------------------------------- progress


def people(n: int) -> str:
    return f"{n} person" if n == 1 else f"{n} people"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class ProgressBar:
    """One line on stderr: images done / total, people found, rate and ETA; redrawn in place on a terminal, one
    line per image otherwise (logs, CI)."""

    def __init__(self, total: int, done: int = 0, people: int = 0, width: int = 30) -> None:
        self.total, self.done, self.people, self.width = total, done, people, width
        self.start_done = done  # images resumed from an earlier run do not count towards the rate
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()

    def rate(self) -> float:
        return (self.done - self.start_done) / max(1e-9, time.monotonic() - self.start)

    def step(self, found: int = 0, note: str = "") -> None:
        self.done += 1
        self.people += found
        filled = round(self.width * self.done / max(1, self.total))
        rate = self.rate()
        # A rate over the first second is mostly noise (a corrupt file fails in microseconds).
        settled = time.monotonic() - self.start >= 1.0 and rate > 0
        speed, eta = (f"{rate:.2f}", _clock((self.total - self.done) / rate)) if settled else ("-", "?")
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} images, "
                f"{people(self.people)}, {speed} img/s, ETA {eta} {note}")
        if self.tty:
            sys.stderr.write("\r" + line[:120].ljust(120))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ---------------------------------------------------------------------------- the job


class Job:
    """The driver's side of one batch run: which images are left, their entries as they come in, the index on
    disk, the progress bar and the summary. Only the driver writes the index."""

    def __init__(self, options: BatchOptions, plan: Plan) -> None:
        self.options, self.plan = options, plan
        self.entries: dict[str, dict[str, Any]] = {}
        self.resumed = 0
        self.started = time.monotonic()
        self.saved_at = 0.0
        self.save_cost = 0.0
        self.bar: ProgressBar | None = None

    def start(self, job: str) -> list[str]:
        """Carry over the previous run's finished images (for this ``job`` key) and return the names left to do,
        in order. Images that clash with an earlier name are recorded as errors here."""
        out = self.options.output
        out.mkdir(parents=True, exist_ok=True)
        remove_leftover_parts(out)
        previous = load_index(out)
        todo: list[str] = []
        for name in self.plan.names:
            if name in self.plan.clashes:
                other = self.plan.clashes[name]
                self.entries[name] = {"image": name, "masks": [],
                                      "error": f"not matted: its masks would overwrite those of {other} "
                                               f"(same name before the suffix)"}
            elif is_finished(previous.get(name), self.options.directory / name, out, job):
                self.entries[name] = previous[name]
                self.resumed += 1
            else:
                todo.append(name)
        people = sum(len(e["masks"]) for e in self.entries.values())
        self.bar = ProgressBar(len(self.plan.names), done=len(self.entries), people=people)
        self.save()
        self.started = time.monotonic()
        return todo

    def record(self, entry: dict[str, Any]) -> None:
        name = entry["image"]
        self.entries[name] = entry
        n = len(entry["masks"])
        assert self.bar is not None
        note = f"{name}: {entry['error']}" if "error" in entry else f"{name}: {people(n)}"
        self.bar.step(n, note)
        if time.monotonic() - self.saved_at >= max(INDEX_EVERY_S, self.save_cost / INDEX_SAVE_SHARE):
            self.save()

    def save(self) -> None:
        """index.json: the entries finished so far, in the plan's order (complete once the job is)."""
        start = time.monotonic()
        ordered = [self.entries[n] for n in self.plan.names if n in self.entries]
        atomic_write(self.options.output / INDEX_NAME, (json.dumps(ordered, indent=1) + "\n").encode())
        self.saved_at = time.monotonic()
        self.save_cost = self.saved_at - start

    def finish(self, interrupted: bool = False) -> int:
        """Write the index, print the summary line and return the exit code (130 after Ctrl-C, 1 when every
        image failed, else 0)."""
        self.save()
        if self.bar is not None:
            self.bar.finish()
        total = len(self.plan.names)
        done = [e for e in self.entries.values() if "error" not in e]
        failed = sorted(n for n, e in self.entries.items() if "error" in e)
        masks = sum(len(e["masks"]) for e in done)
        elapsed = time.monotonic() - self.started
        processed = len(self.entries) - self.resumed
        details = [f"{self.resumed} resumed"] if self.resumed else []
        if failed:
            shown = ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
            details.append(f"{len(failed)} failed: {shown}, see {INDEX_NAME}")
        else:
            details.append("0 failed")
        details.append(f"{elapsed:.1f} s" + (f", {processed / elapsed:.2f} img/s" if elapsed >= 1.0 else ""))
        if interrupted:
            print(f"interrupted: {len(self.entries)} of {total} images finished, {masks} mattes in "
                  f"{self.options.output}; run the same command again to resume", file=sys.stderr)
            return 130
        print(f"wrote {masks} mattes for {total} images to {self.options.output} ({'; '.join(details)})")
        return 1 if len(failed) == total else 0


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within the block SIGTERM (a scheduler or ``kill`` ending the job) stops the batch the way Ctrl-C does, so
    what is finished gets recorded. Only the main thread may set handlers; elsewhere nothing changes."""
    import signal
    import threading

    def _raise(*_: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_local(options: BatchOptions, detector: Detector | None = None) -> int:
    """The batch in this process with one engine; returns the exit code. Ctrl-C stops after recording what is
    finished (a rerun resumes)."""
    try:
        plan = plan_job(options)
        worker = ImageWorker(options, detector)
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    job = Job(options, plan)
    with interrupt_on_sigterm():
        return drive(job, job.start(worker.job), lambda names: map(worker.process, names))


def drive(job: Job, todo: list[str], results: Callable[[list[str]], Iterable[dict[str, Any]]]) -> int:
    """Record every entry ``results`` yields for ``todo``; on Ctrl-C record what is finished and stop."""
    try:
        for entry in results(todo):
            job.record(entry)
    except KeyboardInterrupt:
        return job.finish(interrupted=True)
    return job.finish()
