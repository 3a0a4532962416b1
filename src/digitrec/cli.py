"""The `digitrec` command. Each sub-command parses its options and calls the library.

Heavy modules (torch and friends) are imported inside the handlers, so `digitrec --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from datetime import datetime

from digitrec import __version__
from digitrec.errors import UsageError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_CLOSED_PIPE = 141  # what a shell reports for `cat` stopped by a closed pipe (128 + SIGPIPE)
LIST_SOURCES = 5  # sources named by `learn list`, the commonest first
DEFAULT_MODEL = "accurate"  # what `train` trains without --model or --init


class Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def share(text: str) -> float:
    """A share between 0 and 1, for the command line."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def cmd_train(args) -> int:
    if args.nproc:
        return launch_train(args)
    from digitrec.distributed import PROCESSES
    from digitrec.train import TrainConfig, run

    if args.resume:
        run(TrainConfig(data_dir=args.data_dir, threads=args.threads, device=args.device), args.resume, resume=True)
    else:
        cfg = TrainConfig.for_model(
            train_model(args), epochs=args.epochs or (1 if args.dry_run else None), batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, val_split=args.val_split, augment=args.augment,
            label_smoothing=args.label_smoothing, bf16=args.bf16, threads=args.threads,
            dry_run=args.dry_run or None, data_dir=args.data_dir, device=args.device,
            styles=args.styles or None, init=args.init, init_member=args.member, extra=args.extra,
            extra_share=args.extra_share)
        args.out = args.out or f"runs/{cfg.model}-{datetime.now():%Y%m%d-%H%M%S}"
        run(cfg, args.out, overwrite=args.overwrite)
    if args.report and PROCESSES.master:
        from digitrec.report import write_report

        write_report(args.resume or args.out)
    return 0


def train_model(args) -> str:
    """`--model`, or where it is left out the architecture of the --init model (member), else accurate."""
    if args.model is not None or args.init is None:
        return args.model or DEFAULT_MODEL
    from digitrec.home import read_meta, resolve_model

    try:
        meta = read_meta(resolve_model(args.init) / "model.json")
    except UsageError as e:
        raise UsageError(f"--init: {e}") from None
    members = meta.get("members")
    if isinstance(members, list) and args.member is not None and 0 <= args.member < len(members):
        return members[args.member].get("architecture", DEFAULT_MODEL)
    # Otherwise the run's own architecture; a wrong --member is then explained by the training's own check.
    return meta["architecture"] if not isinstance(members, list) else DEFAULT_MODEL


def launch_train(args) -> int:
    """`--nproc N`: the same command in N processes on this machine, through torch's launcher."""
    import os

    from digitrec.distributed import PROCESSES, launch

    if PROCESSES.world_size > 1:
        raise UsageError("--nproc starts the processes itself: leave it out under torchrun")
    argv, skip = [], False
    for a in args.argv:  # the command as given, less --nproc
        if skip or a == "--nproc" or a.startswith("--nproc="):
            skip = a == "--nproc"
            continue
        argv.append(a)
    out = args.resume or args.out
    if not out:  # every process must be told the folder the master names
        out = f"runs/{train_model(args)}-{datetime.now():%Y%m%d-%H%M%S}"
        argv += ["--out", out]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # the master's lines appear as they are printed
    return launch(args.nproc, argv, args.threads, out)


def to_device(model, name: str | None):
    """`model` moved to `--device NAME` (default: the CPU, where evaluation is fast enough)."""
    from digitrec.train import resolve_device

    return model.to(resolve_device(name or "cpu"))


def cmd_evaluate(args) -> int:
    from digitrec.checkpoint import load_checkpoint, resolve_run_dir
    from digitrec.data import load_mnist
    from digitrec.evaluate import evaluate_model, format_report

    run_dir = resolve_run_dir(args.run_dir)
    model, meta = load_checkpoint(run_dir)
    if not args.json:  # at once: the evaluation itself takes a while (a bar shows it on a terminal)
        what = (f"ensemble of {len(meta['members'])} models" if "members" in meta
                else f"{meta['architecture']}, epoch {meta.get('epoch', '?')}")
        if meta.get("temperature"):
            what += f"; probabilities and loss after temperature scaling, T={meta['temperature']}"
        print(f"model {run_dir} ({what})", flush=True)
    model = to_device(model, args.device)
    mnist = load_mnist(args.data_dir)
    m = evaluate_model(model, mnist.test_images, mnist.test_labels, progress=None)
    if args.json:
        print(json.dumps(m))
    else:
        print(format_report(m))
    return 0


def cmd_report(args) -> int:
    from digitrec.report import write_report

    write_report(args.run_dir, out=args.out, data_dir=args.data_dir, device=args.device)
    return 0


def cmd_ensemble(args) -> int:
    from pathlib import Path

    from digitrec.checkpoint import FORMAT, META, combine_checkpoints, load_checkpoint, write_json
    from digitrec.data import load_mnist
    from digitrec.evaluate import evaluate_model
    from digitrec.train import validation_temperature

    def calibrate(model, member):  # on the validation images the members were trained beside
        return validation_temperature(to_device(model, args.device), member["config"]["val_split"], args.data_dir)

    if args.device:  # a device that is not there is found before anything is written
        from digitrec.train import resolve_device

        resolve_device(args.device)
    meta = combine_checkpoints(args.run_dirs, args.out, temperature=calibrate)
    model, _ = load_checkpoint(args.out)
    model = to_device(model, args.device)
    mnist = load_mnist(args.data_dir)
    m = evaluate_model(model, mnist.test_images, mnist.test_labels, progress=None)
    meta["metrics"] = {"test_accuracy": m["accuracy"], "test_loss": m["loss"], "test_ece": m["ece"]}
    write_json(Path(args.out) / META, {"format": FORMAT, **meta})
    print(f"ensemble of {len(meta['members'])} models written to {args.out}: test accuracy {m['accuracy']:.2%}, "
          f"loss {m['loss']:.4f}, probability temperature {meta['temperature']}")
    return 0


def cmd_predict(args) -> int:
    from pathlib import Path

    from digitrec.batch import (OutputFile, ReadOptions, default_jobs, progress_bar, read_in_order, tasks_from,
                                workers_for)
    from digitrec.images import IMAGE_SUFFIXES

    if args.top_k > 10:
        raise UsageError(f"--top-k: there are only 10 digits, got {args.top_k}")
    if args.cluster:
        if args.annotate or args.output:
            raise UsageError("--cluster prints JSON Lines to stdout; it does not take --annotate or --output")
        return predict_on_cluster(args)
    out = Path(args.annotate) if args.annotate else None
    one_file = out is not None and out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir()
    tasks = tasks_from(args.inputs, out, one_file)
    if one_file and len(tasks) > 1:
        raise UsageError(f"--annotate {out}: give a folder when reading several images")
    if out is not None and not one_file and out.suffix and not out.is_dir():
        raise UsageError(f"--annotate {out}: give a picture file ({', '.join(IMAGE_SUFFIXES)}) or a folder; "
                         "a folder with a dot in its name must exist already")
    if out is not None and out.exists() and not out.is_dir() and not one_file:
        raise UsageError(f"--annotate {out}: it is a file, not a folder")
    inputs = {t.path.resolve() for t in tasks if t.path is not None and t.path.exists()}
    if one_file and out.resolve() in inputs:
        raise UsageError(f"--annotate {out}: that is the picture being read; give another name")
    if out is not None:
        try:
            (out.parent if one_file else out).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--annotate {out}: cannot create the folder ({e.strerror})") from None
    output = OutputFile(args.output) if args.output else None
    skipped = 0
    if output is not None:
        todo = [t for t in tasks if t.name not in output.done]
        skipped, tasks = len(tasks) - len(todo), todo
    from digitrec.home import META, model_name, read_meta, resolve_model

    where = resolve_model(args.model)  # once: every worker reads with the same model
    name = model_name(where, read_meta(where / META))
    if args.model is None and name.startswith("personal"):
        print(f"digitrec predict: model: {name} (--model bundled reads without it)", file=sys.stderr)
    options = ReadOptions(model=str(where), backend=args.backend, top_k=args.top_k)
    failed = output is not None and output.errors > 0
    bar = progress_bar(len(tasks))

    def say(text, stream):  # above the progress bar, at once
        bar.write(text, file=stream)
        stream.flush()

    try:
        for result in read_in_order(tasks, options, workers_for(len(tasks), args.jobs or default_jobs())):
            bar.update()
            failed |= result.error is not None
            if output is not None:
                output.write(result)
            elif result.error is not None and not args.json:
                say(f"{result.name}: error: {result.error}", sys.stderr)
            else:
                for note in result.notes:
                    say(f"{result.name}: note: {note}", sys.stderr)
                say(result.line if args.json else f"{result.name}: {result.describe}", sys.stdout)
    finally:
        bar.close()
        if output is not None:
            output.close()
    if output is not None:
        print(f"digitrec predict: {len(tasks)} read into {output.path}"
              + (f"; {skipped} already there" if skipped else ""), file=sys.stderr)
    return 1 if failed else 0


def predict_on_cluster(args) -> int:
    """`--cluster ADDRESS`: the pictures read by the workers of a Dask cluster, in input order."""
    from digitrec.cluster import read_on_cluster

    failed = False
    for record in read_on_cluster(args.cluster, args.inputs, model=args.model, backend=args.backend,
                                  top_k=args.top_k):
        failed |= "error" in record
        print(json.dumps(record), flush=True)
    return 1 if failed else 0


def cmd_learn(args) -> int:
    from digitrec.learn import Store

    store = Store()
    if args.action == "add":
        return learn_add(store, args)
    if args.action == "list":
        counts, sources = store.counts(), store.sources()
        total = sum(counts.values())
        print(f"{total} sample{'s' if total != 1 else ''} in {store.path}")
        if total:
            print("digit:   " + " ".join(f"{d:>4}" for d in range(10)))
            print("samples: " + " ".join(f"{counts.get(d, 0):>4}" for d in range(10)))
            shown = list(sources.items())[:LIST_SOURCES]
            more = len(sources) - len(shown)
            print("from: " + ", ".join(f"{src} ({n})" for src, n in shown)
                  + (f" and {more} more (learn list --all)" if more else ""))
            if args.all:
                for s in store.samples():
                    read = "" if s.predicted is None or s.predicted == s.label else f" (read as {s.predicted})"
                    print(f"#{s.id}  {s.label}{read}  {s.source}  {s.created}")
        return 0
    if args.action == "remove":
        n = store.remove(args.ids)
        print(f"removed {n} sample{'s' if n != 1 else ''}; {len(store)} left")
        return 0
    if args.action == "reset":
        n = store.reset()
        print(f"removed all {n} samples from {store.path}")
        return 0
    from digitrec.learn import FitConfig, fit

    fit(store, FitConfig(base=args.base, epochs=args.epochs, threads=args.threads, data_dir=args.data_dir,
                         seed=args.seed, holdout=args.holdout))
    return 0


def learn_add(store, args) -> int:
    from digitrec.images import load_image
    from digitrec.learn import parse_text, samples_from_reading
    from digitrec.recognize import load

    labels = parse_text(args.text)
    rec = load(args.model, threads=1)
    samples = []
    for name in args.images:  # every picture is checked before anything is stored
        try:
            picture = load_image(name)
        except UsageError as e:
            raise UsageError(f"{name}: {e}; nothing stored") from None
        samples += samples_from_reading(picture, rec.read(picture), labels, name)
    store.add(samples)
    fixed = sum(s.predicted != s.label for s in samples)
    print(f"stored {len(samples)} sample{'s' if len(samples) != 1 else ''} ({fixed} corrected, "
          f"{len(samples) - fixed} confirmed); {len(store)} in all")
    return 0


def cmd_explain(args) -> int:
    from pathlib import Path

    from digitrec.explain import write_figure
    from digitrec.images import load_image
    from digitrec.recognize import Recognizer

    out = Path(args.out) if args.out else None
    if len(args.images) > 1 and out is not None and out.suffix.lower() == ".png":
        raise UsageError(f"--out {out}: give a folder when explaining several pictures")
    rec = Recognizer.from_checkpoint(args.model)  # torch: gradients and feature maps need the module
    for name in args.images:
        try:
            picture = load_image(name)
        except UsageError as e:
            raise UsageError(f"{name}: {e}") from None
        reading = rec.read(picture)
        if out is None:
            target = Path("explain.png") if len(args.images) == 1 else Path(f"{Path(name).stem}-explain.png")
        elif out.suffix.lower() == ".png":
            target = out
        else:
            out.mkdir(parents=True, exist_ok=True)
            target = out / f"{Path(name).stem}-explain.png"
        try:
            write_figure(target, picture, reading, rec)
        except UsageError as e:
            raise UsageError(f"{name}: {e}") from None
        print(f"{name}: {reading.describe()}; figure written to {target}")
    return 0


def cmd_demo(args) -> int:
    from digitrec.demo import make_demo

    make_demo(args.out, model=args.model, gif=args.gif, data_dir=args.data_dir)
    return 0


def cmd_serve(args) -> int:
    import ipaddress
    import warnings

    import uvicorn
    from PIL import Image

    from digitrec.recognize import load
    from digitrec.web.app import create_app, listen, server_config

    try:
        sock = listen(args.host, args.port)
    except UnicodeError:  # a name the IDNA codec cannot encode, e.g. with an empty label
        raise UsageError(f"--host {args.host}: not a valid host name or address") from None
    with sock:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the server's own pixel limit applies
        # Each request reads a few 28x28 digits: one thread apiece, and the requests run side by side.
        rec = load(args.model, backend=args.backend, threads=1)
        limits = {key: round(value * 1e6) for key, value in (("max_upload_bytes", args.max_upload_mb),
                                                              ("max_pixels", args.max_megapixels)) if value}
        store = None
        if args.learn:
            from digitrec.learn import Store

            store = Store()
            store.counts()  # a corrupt or locked store is refused now, not at the first correction
        app = create_app(rec, workers=args.workers, **limits, learn=store)
        host, port = sock.getsockname()[:2]
        accuracy = rec.meta.get("metrics", {}).get("test_accuracy")
        about = f"model {rec.name or rec.meta.get('architecture', '?')}" + (f", {accuracy:.2%} on MNIST's test set" if accuracy else "")
        about += f"; storing corrections in {store.path}" if store is not None else ""
        print(f"digitrec serve: {about}; open http://{f'[{host}]' if ':' in host else host}:{port}/ "
              "(API docs at /docs); Ctrl-C stops", flush=True)
        if not ipaddress.ip_address(host).is_loopback:
            print("digitrec serve: note: listening beyond this machine; anyone who can reach it can use the page",
                  flush=True)
        uvicorn.Server(server_config(app, request_timeout=args.request_timeout,
                                     max_connections=args.max_connections)).run(sockets=[sock])
    return 0


def cmd_draw(args) -> int:
    from digitrec.gui import run

    run(args.model, backend=args.backend)
    return 0


def cmd_export(args) -> int:
    from digitrec.export import export_onnx

    from pathlib import Path

    from digitrec.checkpoint import resolve_run_dir
    from digitrec.export import ONNX

    run_dir = resolve_run_dir(args.run_dir)
    out = export_onnx(args.run_dir, args.out)
    if out.resolve() == (run_dir / ONNX).resolve():
        use = (f"`digitrec predict --model {args.run_dir}` and the other commands use it from there" if args.run_dir
               else "the commands use it for the bundled model")
    else:
        use = ('for onnxruntime: input "pixels" float32 (N, 1, 28, 28) in [0, 1], output "logits" (N, 10); '
               f"digitrec's own commands use a run's ONNX file only as {ONNX} in the run directory ({run_dir / ONNX})")
    print(f"wrote {out}: ONNX, any batch size; {use}")
    return 0


def cmd_models(args) -> int:
    from digitrec.models import get_recipe, list_models

    for name in list_models():
        r = get_recipe(name)
        print(f"{name:<10} {r.description}\n{'':<10} recipe: {r.epochs} epoch{'s' if r.epochs > 1 else ''}, batch {r.batch_size}, "
              f"lr {r.lr:g} {r.schedule}, augment {'on' if r.augment else 'off'}")
    print(bundled_recipe())
    return 0


def bundled_recipe() -> str:
    """What the bundled model is made of and was trained on, from its model.json (the README's model card has the rest)."""
    from digitrec.home import BUNDLED_DIR

    meta = json.loads((BUNDLED_DIR / "model.json").read_text())
    members = meta.get("members") or [meta]
    kinds = ", ".join(m["architecture"] for m in members)
    last = [m.get("config") or {} for m in members]
    options = sorted({f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                      for c in last for k, v in c.items() if k in ("styles", "extra") and v})
    extra = {c["extra"] for c in last if c.get("extra")}
    data = "MNIST's 55,000 training digits" + "".join(
        f" and the first two thirds of {'UCI optdigits (20 of its 30 writers)' if e == 'optdigits' else e}" for e in sorted(extra))
    accuracy = (meta.get("metrics") or {}).get("test_accuracy")
    return (f"{'bundled':<10} what predict, draw and serve read with: {len(members)} models ({kinds}) voting"
            + (f", MNIST test {accuracy:.2%}" if accuracy else "") + "\n"
            f"{'':<10} trained on {data}" + (f"; last fine-tuned with {' '.join(options)}" if options else ""))


def add_backend_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto",
                   help="model runtime: onnx (onnxruntime, starts fast), torch, or auto: onnx where the run has "
                        "an up-to-date model.onnx (default)")


def add_device_option(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--device", default=default, metavar="auto|cpu|cuda|cuda:N|mps",
                   help="where the model runs: auto takes CUDA, then MPS, then the CPU "
                        f"(default: {default or 'cpu'})")


def build_parser() -> Parser:
    parser = Parser(prog="digitrec", description="Train digit recognisers on MNIST and read handwritten digits.")
    parser.add_argument("--version", action="version", version=f"digitrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("train", help="train a model on MNIST, then test it",
                       description="Train a model on MNIST. Options left out take the model's own recipe "
                                   "(see `digitrec models`).")
    p.add_argument("--model", help="architecture, see `digitrec models` (default: that of --init, else accurate)")
    p.add_argument("--init", metavar="RUN_DIR",
                   help="start from the weights of a trained run (a run directory, bundled or personal) instead of random ones")
    p.add_argument("--member", type=int, metavar="N", help="with an ensemble as --init: which of its models, from 0")
    p.add_argument("--epochs", type=positive_int, help="passes over the training images")
    p.add_argument("--batch-size", type=positive_int, help="images per optimiser step")
    p.add_argument("--lr", type=positive_float, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--val-split", type=int, default=5000, help="training images held out for validation (default 5000)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, help="random distortions of training digits")
    p.add_argument("--styles", action="store_true",
                   help="write half the 1s with a long up-stroke (some on a foot) and 30%% of the 7s crossed, "
                        "as much of the world writes them, before the distortions")
    p.add_argument("--extra", metavar="optdigits|FILE",
                   help="more training digits by other writers: optdigits (UCI's 30 writers, found in the data folder "
                        "or downloaded) or a file in its format; the last third of its writers is kept out, to measure on")
    p.add_argument("--extra-share", type=share, metavar="F",
                   help="with --extra: the share of every batch drawn from its digits (default 0.25)")
    p.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing, 0 to <1")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                   help="bfloat16 autocast (default: on where the processor does bf16 natively)")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores; with --nproc, shared out)")
    add_device_option(p, default="auto")
    p.add_argument("--nproc", type=positive_int, metavar="N",
                   help="train in N processes on this machine (DistributedDataParallel through torch's launcher, "
                        "as torchrun --nproc_per_node N would); --batch-size stays the batch of all of them")
    p.add_argument("--out", help="run directory (default: runs/MODEL-TIMESTAMP)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR with its own config")
    p.add_argument("--dry-run", action="store_true", help="a few steps per epoch on small evaluations: a smoke test")
    p.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA, else the user cache)")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write the figures and report.html into the run directory at the end (default: on)")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy, per-class figures and confusion matrix of a model")
    p.add_argument("run_dir", nargs="?", help="run directory, bundled or personal (default: personal once `learn fit` made it, else bundled)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA, else the user cache)")
    add_device_option(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("report", help="figures and an HTML report of a trained model",
                       description="Evaluate a model on the MNIST test set and write curves.png, confusion.png, "
                                   "samples.png, mistakes.png, per_class.png, calibration.png and report.html.")
    p.add_argument("run_dir", nargs="?", help="run directory (default: the bundled model, with --out)")
    p.add_argument("--out", help="folder for the figures and report.html (default: the run directory)")
    p.add_argument("--data-dir", help="MNIST folder (default: the run's own, else $DIGITREC_DATA, else the user cache)")
    add_device_option(p)
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("ensemble", help="combine trained runs into one model that averages their votes")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more run directories")
    p.add_argument("--out", required=True, help="folder for the ensemble checkpoint")
    p.add_argument("--data-dir", help="MNIST folder, for calibrating on the validation images")
    add_device_option(p)
    p.set_defaults(handler=cmd_ensemble)

    p = sub.add_parser("predict", help="read the handwritten digits in images",
                       description="Read the digits in photos, scans and drawings, in reading order. "
                                   "A folder stands for the images in it. Unreadable files are reported and "
                                   "skipped; the exit status is then 1.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                   help="PNG, JPEG, BMP, TIFF, WebP or GIF files, or folders of them")
    p.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    p.add_argument("--annotate", metavar="OUT",
                   help="write copies with boxes and labels drawn: into folder OUT, or to the file OUT for one image")
    p.add_argument("--top-k", type=positive_int, default=3, help="alternatives listed per digit in --json (default 3)")
    p.add_argument("--model", metavar="RUN_DIR", help="run directory, bundled or personal (default: personal once `learn fit` made it, else bundled)")
    p.add_argument("--jobs", type=positive_int, metavar="N",
                   help="reading processes (default: the cores; one for a few pictures); output stays in input order")
    p.add_argument("--output", metavar="FILE",
                   help="write the JSON Lines into FILE instead; pictures already in FILE are skipped, "
                        "so a stopped run continues where it was")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="read on the Dask cluster at ADDRESS (tcp://HOST:8786), JSON Lines in input order; "
                        "needs pip install 'digitrec[cluster]'")
    add_backend_option(p)
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("learn", help="learn your handwriting: store corrected digits, fine-tune a personal model",
                       description="Samples of your own digits (corrected or confirmed readings) are kept in "
                                   "$DIGITREC_HOME (default: your user data folder). `learn fit` fine-tunes a "
                                   "personal model on them, which predict, draw and serve then read with.")
    learn = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=Parser)
    q = learn.add_parser("add", help="read pictures and store their digits with the right labels")
    q.add_argument("images", nargs="+", metavar="IMAGE", help="pictures of digits, each holding the digits of --text")
    q.add_argument("--text", required=True, help="the right digits of each picture, in reading order, e.g. 3141")
    q.add_argument("--model", metavar="RUN_DIR", help="model that finds and reads the digits (default: personal, else bundled)")
    q = learn.add_parser("list", help="how many samples of each digit, and where they came from")
    q.add_argument("--all", action="store_true", help="also one line per sample, with its id")
    q = learn.add_parser("remove", help="delete samples by id (see learn list --all)")
    q.add_argument("ids", nargs="+", type=positive_int, metavar="ID")
    learn.add_parser("reset", help="delete every sample")
    q = learn.add_parser("fit", help="fine-tune a personal model on the samples, with MNIST replay",
                         description="Fine-tune the base model on your samples mixed with MNIST training digits "
                                     "(so it does not forget), calibrate it on MNIST validation digits, and write "
                                     "the run directory `personal` in the data folder.")
    q.add_argument("--base", metavar="RUN_DIR", default="bundled", help="model to start from (default: bundled)")
    q.add_argument("--epochs", type=positive_int, help="length of the fit, in units of 100 steps of 48 samples and 48 MNIST digits (default 1)")
    q.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    q.add_argument("--holdout", action=argparse.BooleanOptionalAction, default=True,
                   help="keep every 5th sample of each digit out of training, to show before/after on unseen ones (default: on)")
    q.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores)")
    q.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA, else the user cache)")
    p.set_defaults(handler=cmd_learn)

    p = sub.add_parser("explain", help="show what the network saw: inputs, saliency maps, feature maps",
                       description="Read a picture and draw one figure with, for each digit: the crop, the 28x28 "
                                   "input the model saw, saliency maps of the strokes that decided (occlusion and "
                                   "gradients), the top-3 probabilities and the feature maps of each convolution.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="pictures of digits")
    p.add_argument("--out", metavar="PNG_OR_DIR", help="the figure's file (default explain.png), or a folder for several pictures")
    p.add_argument("--model", metavar="RUN_DIR", help="run directory, bundled or personal (default: personal, else bundled)")
    p.set_defaults(handler=cmd_explain)

    p = sub.add_parser("demo", help="a short video of the model reading digits as they are written",
                       description="Render a video (about 17 s): a number written stroke by stroke and read live, "
                                   "then a sweep of MNIST test digits with what the model reads in each.")
    p.add_argument("--model", metavar="RUN_DIR", help="run directory, bundled or personal (default: personal once `learn fit` made it, else bundled)")
    p.add_argument("--out", default="demo.mp4", help="video file, .mp4 (H.264) or .gif (default: demo.mp4)")
    p.add_argument("--gif", action="store_true", help="also write a GIF beside the MP4")
    p.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA, else the user cache)")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("draw", help="a window to draw digits in and watch them read live",
                       description="Open a window with a canvas: draw digits with the mouse or a pen and see them "
                                   "read as you draw. Clear, undo, brush size, open an image, save a PNG.")
    p.add_argument("--model", metavar="RUN_DIR", help="run directory, bundled or personal (default: personal once `learn fit` made it, else bundled)")
    add_backend_option(p)
    p.set_defaults(handler=cmd_draw)

    p = sub.add_parser("serve", help="a web page to draw or upload digits, and an HTTP API",
                       description="Serve a page for drawing digits or uploading pictures, read live, and a JSON API "
                                   "(POST /api/read, /api/classify; docs at /docs). Binds to this machine only "
                                   "unless --host says otherwise.")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDR", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the network)")
    p.add_argument("--port", type=int, default=8000, metavar="N", help="port (default 8000; 0 picks a free one)")
    p.add_argument("--model", metavar="RUN_DIR", help="run directory, bundled or personal (default: personal once `learn fit` made it, else bundled)")
    p.add_argument("--learn", action="store_true",
                   help="store the corrections sent to POST /api/samples (the page's 'right digit' buttons), "
                        "for `digitrec learn fit`; off by default, as a shared server should not learn from everyone")
    p.add_argument("--max-upload-mb", type=positive_float, metavar="MB", help="largest picture accepted, in MB (default 10)")
    p.add_argument("--max-megapixels", type=positive_float, metavar="N", help="largest picture accepted, in megapixels (default 40)")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="pictures read at once; more requests wait their turn (default: one per processor core)")
    p.add_argument("--request-timeout", type=positive_float, default=60, metavar="S",
                   help="seconds a client has to send a whole request before its connection is closed (default 60)")
    p.add_argument("--max-connections", type=positive_int, default=1000, metavar="N",
                   help="open connections at most; more are closed at once (default 1000)")
    add_backend_option(p)
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("export", help="write a trained model as ONNX, for onnxruntime and fast starts",
                       description="Write the model of a run directory (ensemble and temperature included) as "
                                   "an ONNX graph with any batch size, checked against torch before it is written.")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="run directory, bundled or personal (default: personal once `learn fit` made it, else bundled)")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="file format (default: onnx)")
    p.add_argument("--out", metavar="FILE", help="where to write it (default: RUN_DIR/model.onnx)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("models", help="list the architectures and their training recipes")
    p.set_defaults(handler=cmd_models)
    return parser


def master_process() -> bool:
    """False in the processes of a distributed training other than rank 0, which stay silent."""
    return "digitrec.distributed" not in sys.modules or sys.modules["digitrec.distributed"].PROCESSES.master


def launched() -> bool:
    """True in the processes that `train --nproc` started."""
    return "digitrec.distributed" in sys.modules and sys.modules["digitrec.distributed"].LAUNCHED


def exit_program(status: int):
    """Leave the program with `status`.

    One of several training processes leaves without the interpreter's teardown: by now its process
    group is gone and the master has written every file, and that teardown can trip over torch's
    communication threads now and then (an abort after a finished training, which the launcher would
    report as a failure).
    """
    if "digitrec.distributed" in sys.modules and sys.modules["digitrec.distributed"].PROCESSES.world_size > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _drop_stdout() -> None:
    """Send what is left of stdout nowhere, so that exiting does not fail writing it once more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (captured, or closed): nothing to drop
        pass


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` and `timeout` stop as cleanly as Ctrl-C
    try:
        return _run(args)
    finally:
        if main_thread:
            # A stop that comes while the program is already on its way out (a launcher's workers being
            # stopped around it) changes nothing: its exit status is decided, and a traceback from the
            # interpreter's shutdown would only hide its one line.
            signal.signal(signal.SIGTERM, signal.SIG_IGN if as_program else previous)


def _run(args) -> int:
    try:
        status = args.handler(args)
        sys.stdout.flush()  # here, where a closed pipe or a full disk can still be told apart
        return status
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as `cat` does
        _drop_stdout()
        return EXIT_CLOSED_PIPE
    except UsageError as e:
        if not getattr(e, "quiet", False):  # one line from the master process, not one per process
            print(f"digitrec {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "status", EXIT_USAGE)
    except KeyboardInterrupt:
        if not master_process() or launched():  # the master's launcher says it, once
            return EXIT_INTERRUPTED
        hint = ""
        where = getattr(args, "out", None) or getattr(args, "resume", None)
        if args.command == "train" and where:
            from pathlib import Path

            hint = (f"; the last complete epoch is kept: digitrec train --resume {where}"
                    if (Path(where) / "model.json").is_file() else "; no epoch was complete, nothing was kept")
        print(f"\ndigitrec {args.command}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # the system refused: a full disk, an unwritable output, too many open files
        where = f" ({e.filename})" if e.filename else ""
        _drop_stdout()  # it may be what failed (`> /dev/full`); exiting must not try it again
        print(f"digitrec {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    exit_program(main())
