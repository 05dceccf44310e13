"""The ``hjtranslate`` command: train, evaluate, plugins, env, push, translate, app."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import __version__
from .stopping import stop_signals_interrupt


def _cmd_train(args: argparse.Namespace) -> int:
    from .tasks import load_task

    if not getattr(args, "print_metrics", False):
        load_task(args.task).run(args)
        return 0
    import contextlib

    # stdout carries the metrics' JSON alone (`... --print-metrics > metrics.json`): what the
    # task says as it goes ("Wrote ...") goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        metrics = load_task(args.task).run(args)
    if metrics is not None and _rank_zero():  # once for several processes
        print(json.dumps(metrics, indent=2, default=str))
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    import warnings

    from . import registry

    with warnings.catch_warnings():  # the table lists the skipped plugins: no note above it too
        warnings.filterwarnings("ignore", message="Skipping ", category=RuntimeWarning)
        for kind in registry.GROUPS:
            registry.plugins(kind)
    for kind in registry.GROUPS:
        print(f"{kind}s ({registry.GROUPS[kind]}):")
        for name, plugin in sorted(registry.plugins(kind).items()):
            print(f"  {name:<12} {plugin.target:<50} [{plugin.package}]")
        for name, message in sorted(registry.clashes(kind).items()):
            print(f"  {name:<12} unusable: {message}")
        for name, why in sorted(registry.skipped(kind).items()):
            print(f"  {name:<12} skipped: {why}")
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    import importlib.metadata as md
    import platform
    import warnings

    import torch

    from . import registry

    print(f"hjtranslate {__version__}")
    print(f"python {platform.python_version()} on {platform.platform()}")
    for pkg in ("torch", "torchvision", "accelerate", "diffusers", "huggingface_hub", "timm",
                "gradio", "pot", "geomloss", "torchmetrics", "safetensors", "numpy"):
        try:
            print(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            print(f"{pkg} not installed")
    print(f"cuda available: {torch.cuda.is_available()}; threads: {torch.get_num_threads()}")
    with warnings.catch_warnings():  # `hjtranslate plugins` names the skipped ones
        warnings.simplefilter("ignore")
        others: dict[str, list[str]] = {}
        for kind in registry.GROUPS:
            for name, plugin in sorted(registry.plugins(kind).items()):
                if not plugin.builtin:
                    others.setdefault(plugin.package, []).append(f"{kind} {name}")
    print("plugins from other packages: " + ("; ".join(
        f"{package} ({', '.join(names)})" for package, names in others.items()) or "none"))
    from .shipped import is_checkout, models_dir

    found = [p.name for p in sorted(models_dir().glob("*")) if p.is_dir()]
    print(f"shipped models: {models_dir()} ({', '.join(found) if found else 'missing'}; "
          f"{'a checkout' if is_checkout() else 'installed from a wheel'})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .tasks.common import evaluate_folder

    print(json.dumps(evaluate_folder(args), indent=2, default=str))
    return 0


def _lazy(module: str, func: str):
    def run(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(module).__dict__[func](args) or 0

    return run


class _DefaultsHelp(argparse.HelpFormatter):
    """Each option's help ends with its default, unless the help names it already or there is
    none to name (None, False: the task decides, or the flag is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False
                or default is argparse.SUPPRESS or not action.option_strings):
            return text
        is_int = isinstance(default, int) and not isinstance(default, bool)
        shown = f"{default:,}" if is_int else "%(default)s"
        return f"{text} (default {shown})".strip()


LAUNCH_HELP = """\
Several processes: accelerate launch --multi_gpu --num_processes N [--main_process_port 0] \
-m hjtranslate train TASK ... (two gloo processes on a CPU machine too; a bare --num_processes N, \
--cpu or a MULTI_CPU config starts one). --batch-size is per process. accelerate's \
--mixed_precision bf16 is recorded in the metrics; gradient accumulation is refused \
(use --batch-size)."""


def build_parser() -> argparse.ArgumentParser:
    from .data import DATA_DIR_HELP
    from .tasks import TASKS, load_task

    parser = argparse.ArgumentParser(
        prog="hjtranslate",
        description="Optimal transport maps with Hamilton-Jacobi characteristic flows.",
    )
    parser.add_argument("--version", action="version", version=f"hjtranslate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    train = sub.add_parser("train", help="train a task (see `hjtranslate train -h`)",
                           epilog=LAUNCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = train.add_subparsers(dest="task", metavar="TASK")
    tsub.required = True
    for name, (_, help_text) in TASKS.items():
        p = tsub.add_parser(name, help=help_text, description=help_text, epilog=LAUNCH_HELP,
                            formatter_class=_DefaultsHelp)
        p.add_argument("--print-metrics", action="store_true", help="print the metrics JSON")
        # Each task's options come from its own module; a task whose optional dependency is
        # missing still lists itself and explains at run time.
        try:
            load_task(name).add_arguments(p)
        except ImportError as exc:
            p.set_defaults(_import_error=str(exc))
        p.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a trained map folder on a task's data")
    ev.add_argument("folder", help="output folder of `hjtranslate train` (or the map folder inside it)")
    ev.add_argument("--n", type=int, default=None,
                    help="samples per side to evaluate on (default: as many as the run evaluated on "
                    "when it trained, --eval-n; for a pipeline folder the full 10,000 test images)")
    ev.add_argument("--vae", default=None,
                    help="digits-to-fashion: decode through this VAE instead of the run's (the "
                    "same latent space, e.g. a `train vae --decoder-only` fine-tune)")
    ev.add_argument("--data-dir", default=None,
                    help="digits-to-fashion: " + DATA_DIR_HELP.replace("(default: ", "(default: "
                                                                       "the run's, else "))
    ev.set_defaults(func=_cmd_evaluate)

    sub.add_parser("plugins", help="list costs, encoders and heads with their packages").set_defaults(
        func=_cmd_plugins
    )
    sub.add_parser("env", help="versions, for bug reports").set_defaults(func=_cmd_env)

    push = sub.add_parser("push", help="publish a saved map or pipeline folder to the Hub")
    push.add_argument("folder", help="a map folder (a run's map/) or a translation pipeline folder")
    push.add_argument("--repo-id", required=True, help="user/name")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", default=None, help="branch to push to")
    push.add_argument("--commit-message", default=None, metavar="TEXT",
                      help="the commit's message (default: Upload hjtranslate map/pipeline ...)")
    push.set_defaults(func=_lazy("hjtranslate.hub", "cmd_push"))

    tr = sub.add_parser("translate", help="translate images with a pipeline folder or Hub id")
    tr.add_argument("--model", default=None, help="folder or Hub id (default: shipped model)")
    _hub_options(tr)
    tr.add_argument("--input", required=True, nargs="+", metavar="PATH",
                    help="image files and/or folders of images (e.g. a shell glob: digits/*.png)")
    tr.add_argument("--class", dest="klass", type=int, default=None,
                    help="source class (default: detected by the judge)")
    tr.add_argument("--direction", choices=["forward", "backward"], default="forward")
    tr.add_argument("--morph-steps", type=int, default=0,
                    help="also write a strip of N frames along the characteristic (0: none; "
                         "2 to 256)")
    tr.add_argument("--no-frame", dest="frame", action="store_false",
                    help="do not frame pictures that are not 28x28 as their dataset does (crop "
                         "to the ink, scale into MNIST's 20x20 box centred by mass)")
    tr.add_argument("--out", required=True,
                    help="output folder (PNGs and translations.json; a folder used before keeps "
                         "its earlier translations, listed as earlier_items)")
    tr.set_defaults(func=_lazy("hjtranslate.translate", "cmd_translate"))

    app = sub.add_parser("app", help="start the Gradio translation app")
    app.add_argument("--model", default=None, help="folder or Hub id (default: shipped model)")
    _hub_options(app)
    app.add_argument("--host", default="127.0.0.1",
                     help="address to serve on (default 127.0.0.1: this machine only)")
    app.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    app.add_argument("--share", action="store_true", help="ask Gradio for a public share link")
    app.set_defaults(func=_lazy("hjtranslate.app_launcher", "cmd_app"))
    return parser


def _hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", default=None,
                        help="branch, tag or commit of a Hub --model (default: main)")
    parser.add_argument("--force-download", action="store_true",
                        help="download a Hub --model again (a damaged cached copy)")


def _command_parser(parser: argparse.ArgumentParser,
                    args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser that ``args`` came from (``train TASK``, ``translate``, ...)."""
    p = parser
    while sub := next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None):
        p = sub.choices[getattr(args, sub.dest)]
    return p


def _command_actions(parser: argparse.ArgumentParser,
                     args: argparse.Namespace) -> dict[str, argparse.Action]:
    """The options of the (sub)command parser that ``args`` came from, by dest."""
    return {a.dest: a for a in _command_parser(parser, args)._actions}


#: what torch and numpy say of an integer beyond 64 bits
_OVERFLOW = ("Overflow when unpacking long", "too large to convert to C", "int too big to convert",
             "Python int too large")

#: what torch.distributed (gloo, NCCL) says when a peer process is gone
_PEER_LOST = ("Connection reset by peer", "Connection closed by peer",
              "NCCL communicator was aborted")


def _name_options(text: str, actions: dict[str, argparse.Action]) -> str:
    """The API's checks name Python arguments (``lr must be ...``); on the command line the same
    value came from an option (``--lr must be ...``)."""
    for dest, action in actions.items():
        if action.option_strings and dest != "help":
            flag = max(action.option_strings, key=len)
            for name in {dest, flag.lstrip("-").replace("-", "_")}:  # --lambda: lambda_mmd
                # "match_pool needs": only a name with "_" is surely code ("every class needs")
                verbs = r" must\b| needs\b" if "_" in name else r" must\b"
                text = re.sub(rf"(?<![\w-]){re.escape(name)}(?={verbs}| [<>]=? )", flag, text)
                # "monotone_directions='power' needs ..." -> "--monotone-directions power needs"
                text = re.sub(rf"(?<![\w-]){re.escape(name)}=(['\"]?)([\w.+-]+)\1(?={verbs})",
                              rf"{flag} \2", text)
                # advice: "set match_pool=0 or choose mmd='energy'" -> --match-pool 0, --mmd energy
                # (not a record's entry: "records lr=null", "--cost-options p=3")
                text = re.sub(rf"\b(set|choose|pass|use) {re.escape(name)}=(['\"]?)([\w.+-]+)\2",
                              rf"\1 {flag} \3", text)
    return text


def _refuse_empty_values(args: argparse.Namespace, actions: dict[str, argparse.Action]) -> None:
    """``--output-dir ""`` and the like: an empty path or name would silently mean the default
    or the current folder."""
    for dest, action in actions.items():
        value = getattr(args, dest, None)
        if isinstance(value, str) and not value.strip() and dest != "help":
            # a positional too: `evaluate ""` read the current folder's config.json
            flag = (max(action.option_strings, key=len) if action.option_strings
                    else str(action.metavar or dest.upper()))
            hint = "" if action.required or not action.option_strings else \
                ", or leave the option out for its default"
            raise ValueError(f"{flag} is empty: give it a value{hint}.")


#: the options that name a file or folder (or a Hub id, which never starts with "~")
PATH_DESTS = ("data_dir", "export", "folder", "init_from", "input", "model", "out", "output_dir",
              "output_root", "source", "target", "vae")


def _expand_home(args: argparse.Namespace) -> None:
    """``--output-dir=~/runs`` and quoted paths reach us with the ``~`` the shell left: read as
    the home folder, as the shell does (a folder named "~" in the current one would be made)."""
    for dest in PATH_DESTS:
        value = getattr(args, dest, None)
        if isinstance(value, str) and value.startswith("~"):
            setattr(args, dest, os.path.expanduser(value))
        elif isinstance(value, list):
            setattr(args, dest, [os.path.expanduser(v) if isinstance(v, str) and v.startswith("~")
                                 else v for v in value])


def _explicit_options(argv: Sequence[str] | None) -> set[str]:
    """The options the command line itself sets: argv parsed again by a parser whose every
    default is suppressed, so that only what was typed lands in the namespace."""
    parser = build_parser()
    stack = [parser]
    while stack:
        p = stack.pop()
        p._defaults.clear()  # set_defaults(...) values, e.g. a task's own defaults
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.dest != argparse.SUPPRESS:
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        with stop_signals_interrupt():  # SIGTERM anywhere (evaluation too): a message, not silence
            code = _main(argv)
    except KeyboardInterrupt as exc:  # while torch and the task load (later ones _main says itself)
        signum = getattr(exc, "signum", 2)
        # torchrun ends the other processes when one fails: that one's error is the news
        by_launcher = int(os.environ.get("WORLD_SIZE") or 1) > 1 and signum == signal.SIGTERM
        code = _fail("stopped by the launcher: another process of this run ended first (its "
                     "error is above, or in the launcher's failure table)." if by_launcher else
                     "interrupted while starting: nothing was written.", 128 + signum,
                     show=_rank_zero())
    if argv is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A gloo rank whose work is done (outputs written, process group destroyed by
        # finish_run) can still abort in its C++ teardown at interpreter exit with "terminate
        # called without an active exception" (seen in CI and in a fresh-clone test run), which
        # accelerate then reports as a failed launch. Skip that teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _disk_full(exc: BaseException) -> str | None:
    """The one-line error for a write that failed for want of space, else None: an OSError
    (ENOSPC, EDQUOT), or the same error as safetensors (SafetensorError) or torch.save's writer
    (a RuntimeError "unexpected pos" or "failed writing file") report it."""
    import errno

    text = str(exc)
    if isinstance(exc, OSError):
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    else:
        full = ("No space left on device" in text or "os error 28" in text
                or (isinstance(exc, RuntimeError) and ("unexpected pos" in text
                                                       or "failed writing file" in text)))
    if not full:
        return None
    return (f"error: the disk is full ({text.splitlines()[0][:200] if text else type(exc).__name__})."
            " Free some space and run it again (a training run: with --resume; the checkpoints "
            "written before the disk filled are kept).")


def _launched_as() -> str:
    """How this command was launched, for the model card: ``accelerate launch`` with the flags
    that shaped the run (its processes, its mixed precision) when it came so, from the
    environment accelerate's launcher sets; else ``hjtranslate``."""
    world = int(os.environ.get("WORLD_SIZE") or 1)
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION") or "no"
    flags = []
    if world > 1:
        flags += ["--multi_gpu", "--num_processes", str(world)]
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE") or world)
        if per_machine != world:
            flags += ["--num_machines", str(world // per_machine)]
    if precision != "no":
        flags += ["--mixed_precision", precision]
    return f"accelerate launch {shlex.join(flags)} hjtranslate" if flags else "hjtranslate"


def _rank_zero() -> bool:
    """Whether this process prints what every process of a launch would print alike (a RANK
    left in the environment without a multi-process launch does not silence it)."""
    return os.environ.get("RANK", "0") == "0" or int(os.environ.get("WORLD_SIZE") or 1) <= 1


@contextlib.contextmanager
def _parsing() -> Iterator[None]:
    """argparse prints its error and exits. Every process of a multi-process launch parses the
    same command line, so only rank 0 prints the error (a two-process launch printed it twice);
    every rank leaves its last line in torchrun's error file (see _fail)."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            yield
    except SystemExit as exc:
        lines = said.getvalue().strip().splitlines()
        if exc.code not in (0, None) and lines:
            _fail(lines[-1], show=False)
        if _rank_zero():
            sys.stderr.write(said.getvalue())
        raise
    except BaseException:
        sys.stderr.write(said.getvalue())
        raise
    sys.stderr.write(said.getvalue())


def _fail(message: str, code: int = 2, show: bool = True) -> int:
    """Print a one-line failure (``show``) and, under torchrun (``accelerate launch
    --multi_gpu``), leave it in the launcher's error file as well, so that the failure table the
    launcher prints names it as the root cause instead of "To enable traceback see: ..."."""
    if show:
        print(message, file=sys.stderr)
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        try:
            with open(path, "w") as f:
                json.dump({"message": {"message": message,
                                       "extraInfo": {"timestamp": str(int(time.time()))}}}, f)
        except OSError:
            pass
        if code and not _rank_zero():
            # Rank 0 prints what every rank meets alike; when this rank gets there first,
            # torchrun would end rank 0 before it prints: give it the time to.
            try:
                time.sleep(FIRST_RANK_GRACE_SECONDS)
            except KeyboardInterrupt:  # rank 0 has reported and ended: torchrun ends this one
                pass
    return code


#: how long a failing rank other than 0 waits before it exits (see _fail)
FIRST_RANK_GRACE_SECONDS = 5.0


def _plain_warnings() -> None:
    """Warnings raised by hjtranslate's own code (its package and plugins) read as notes on the
    command line, without the file name and source line Python shows for a developer."""
    import importlib.util
    import warnings

    if getattr(warnings.formatwarning, "hjtranslate_notes", False):
        return  # set by an earlier main() in this process
    roots = tuple(str(Path(spec.origin).parent) for name in ("hjtranslate", "hjtranslate_plugins")
                  if (spec := importlib.util.find_spec(name)) is not None and spec.origin)
    default = warnings.formatwarning

    # hjtranslate's warnings name their caller, outside the package: from the command line that
    # is Python's own runner (<frozen runpy>) or the console script
    script = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else None

    def note(message, category, filename, lineno, line=None) -> str:
        if str(filename).startswith((*roots, "<")) or (
                script and os.path.realpath(str(filename)) == script):
            return f"note: {message}\n"
        return default(message, category, filename, lineno, line)

    note.hjtranslate_notes = True  # type: ignore[attr-defined]
    warnings.formatwarning = note


def _main(argv: Sequence[str] | None) -> int:
    from .hjmap import CheckpointError
    from .registry import PluginError
    from .training import TrainingError

    _plain_warnings()
    parser = build_parser()
    with _parsing():
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # argparse would show the top-level usage; the command's own is the useful one
            _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "_import_error", None):
        return _fail(f"error: task {args.task!r} needs a missing package: {args._import_error}")
    actions: dict[str, argparse.Action] = {}
    try:
        actions = _command_actions(parser, args)
        _refuse_empty_values(args, actions)
        _expand_home(args)
        if args.command == "train":
            args._typed = _explicit_options(argv)  # a task's defaults give way to --head-options
            # this launch's command line, for the model card (tests pass argv, not sys.argv)
            args._command = _launched_as() + " " + shlex.join(sys.argv[1:] if argv is None else argv)
        if args.command == "train" and getattr(args, "resume", False):
            from .tasks.common import restore_recorded_options

            restore_recorded_options(args, args._typed, actions)
        if args.command == "train":
            from .tasks.common import check_inert_options

            check_inert_options(args, args._typed)  # before any data is read or encoded
            if isinstance(getattr(args, "seed", None), int):  # before a task seeds anything
                from .checks import whole_number

                whole_number("--seed", args.seed, 0, 2**32 - 1)  # numpy's seed range
            if hasattr(args, "report_to"):
                from .training import check_tracker

                check_tracker(args.report_to)
        try:
            return int(args.func(args) or 0)
        finally:
            training = sys.modules.get("hjtranslate.training")  # not imported: nothing held
            if training is not None:
                training.release_all()  # the run folders this command held: outputs written
    except (ValueError, PluginError, TrainingError, CheckpointError, FileNotFoundError,
            NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        # Bad options and inputs, alike on every rank of a launch: printed once (the other ranks
        # name it in torchrun's error file, which the launcher's failure table reads; without
        # one, each prints its own: it may be its own, a data folder missing on one machine).
        return _fail(f"error: {_name_options(str(exc), actions)}",
                     show=_rank_zero() or not os.environ.get("TORCHELASTIC_ERROR_FILE"))
    except (TypeError, OverflowError) as exc:
        # torch and numpy take 64-bit sizes: a larger --n or --dim overflows deep inside them
        # (--steps or --pixels that large are fine: they are caps). Anything else is a bug.
        if not any(t in str(exc) for t in _OVERFLOW):
            raise
        return _fail(f"error: a size or count given is beyond what torch can take (a 64-bit "
                     f"integer; {str(exc).splitlines()[0][:120]}): lower the sizes given (--n, "
                     "--eval-n, --batch-size, --dim, --width, ...).")
    except (MemoryError, RuntimeError) as exc:
        # numpy raises MemoryError; torch a RuntimeError ("can't allocate memory", CUDA "out of
        # memory"). Anything else is a bug and keeps its traceback.
        text = str(exc)
        full = _disk_full(exc)
        if full:
            return _fail(full)
        if isinstance(exc, RuntimeError) and text.startswith("Symlink loop from "):
            # Path.resolve() on a link loop (Python < 3.13) wherever a path was not checked first
            return _fail(f"error: {text.removeprefix('Symlink loop from ')} is a loop of symbolic "
                         "links (a link that leads back to itself): point the option at a real "
                         "file or folder.")
        if isinstance(exc, RuntimeError) and any(t in text for t in _PEER_LOST):
            # a multi-process run whose other process died (killed, out of memory)
            return _fail(f"error: another process of this run ended ({text.splitlines()[0][:200]}). "
                         "The checkpoints written so far, if any, are kept: continue with "
                         "--resume.")
        if not (isinstance(exc, MemoryError) or "can't allocate memory" in text
                or "out of memory" in text.lower()):
            raise
        return _fail(
            f"error: out of memory ({type(exc).__name__}: {text.splitlines()[0] if text else ''}). "
            "An option asks for more than this machine holds: lower the sizes given "
            "(--n, --eval-n, --batch-size, --dim, --width, --bins, --morph-steps, the images').")
    except KeyboardInterrupt as exc:
        return _fail("interrupted: the checkpoints written so far, if any, are kept; continue "
                     "with --resume." if args.command == "train" else "interrupted.",
                     128 + getattr(exc, "signum", 2),  # as a shell reports it: 130 for Ctrl-C
                     show=_rank_zero())  # once for a multi-process launch
    except BrokenPipeError:  # `hjtranslate plugins | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a full disk, whatever library was writing; else a bug's traceback
        full = _disk_full(exc)
        if not full:
            raise
        return _fail(full)
