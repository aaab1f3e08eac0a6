"""What every backend's `_wsgi.py` shares: logging set-up, finding the model class, and the command
line of `python _wsgi.py`.

`_wsgi.py` stays a few lines: it builds `app = init_app(ModelClass)` for gunicorn and calls
`run_model_server(ModelClass)` when run as a script, which serves with gunicorn too (Flask's
development server only with `--debug`).
"""

import argparse
import importlib
import inspect
import logging
import os
import sys
from typing import Callable, List, Optional, Type, Union

from .parsing import parse_scalar
from .settings import Settings, SettingsError, default_settings

LOG_FORMAT = "[%(asctime)s] [%(levelname)s] [%(name)s::%(funcName)s::%(lineno)d] %(message)s"
BASE_CLASS_NAME = "LabelStudioMLBase"

logger = logging.getLogger(__name__)


class ModelClassError(Exception):
    """The model module does not tell which class to serve; the message says what to change."""


def configure_logging(level: Optional[str] = None) -> None:
    """Root logging at `level`, else `LOG_LEVEL` (default INFO)."""
    level = (level or default_settings().log_level).upper()
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)


def model_classes_of(module) -> List[Type]:
    """The `LabelStudioMLBase` subclasses defined in `module` itself (not imported into it), in file order."""
    from .model import LabelStudioMLBase

    return [obj for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, LabelStudioMLBase) and obj is not LabelStudioMLBase
            and obj.__module__ == module.__name__]


def find_model_class(reference: str) -> Type:
    """The class a backend serves, from `"module:Class"` as `label-studio-ml create` wrote it.

    `Class` when the module still defines it; otherwise the module's one `LabelStudioMLBase`
    subclass, so renaming the class (or replacing `model.py` with another model) needs no edit of
    `_wsgi.py`. None or several: a `ModelClassError` naming them and what to do.
    """
    module_name, _, preferred = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # a dependency of the model module is missing: its own traceback says which
        raise ModelClassError(f"no {module_name}.py next to _wsgi.py: it holds the model class") from None
    named = getattr(module, preferred, None) if preferred else None
    candidates = model_classes_of(module)
    if named in candidates:
        return named
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelClassError(f"{module_name}.py defines no subclass of {BASE_CLASS_NAME}: "
                              f"write one, e.g. class MyModel({BASE_CLASS_NAME})")
    names = ", ".join(cls.__name__ for cls in candidates)
    raise ModelClassError(f"{module_name}.py defines several subclasses of {BASE_CLASS_NAME} ({names}): "
                          f"keep one, or name the one to serve in _wsgi.py (MODEL = \"{module_name}:ClassName\")")


def app_for_gunicorn(make_app: Callable):
    """`make_app()`, in a gunicorn worker: a setting the app cannot use (`SettingsError`, e.g. a
    backend's own variable read when its app is built) stops gunicorn with that message alone
    ("App failed to load"), instead of a traceback of the worker and "Worker failed to boot"."""
    try:
        return make_app()
    except SettingsError as exc:
        from gunicorn.errors import AppImportError

        raise AppImportError(str(exc)) from None


def parse_kwargs(pairs: List[str]) -> dict:
    """`["a=1", "b=true", "c=x"]` -> `{"a": 1, "b": True, "c": "x"}`."""
    kwargs = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--kwargs expects KEY=VALUE, got {pair!r}")
        kwargs[key] = parse_scalar(value)
    return kwargs


def build_parser(model_name: str, settings: Settings) -> argparse.ArgumentParser:
    """The command line of `python _wsgi.py`; what it does not give comes from `settings`."""
    parser = argparse.ArgumentParser(description=f"Serve the {model_name} ML backend for Label Studio with gunicorn "
                                                 "(WORKERS processes, 1 by default, and the THREADS of "
                                                 "label_studio_ml/gunicorn_config.py)")
    parser.add_argument("-p", "--port", type=int, default=settings.port, help="port (default: PORT or 9090)")
    parser.add_argument("--host", default=settings.host, help="interface to bind (default: HOST or 0.0.0.0)")
    parser.add_argument("--kwargs", "--with", dest="kwargs", metavar="KEY=VAL", nargs="+", default=[],
                        help="keyword arguments for the model class (ints, floats and bools are parsed)")
    parser.add_argument("-d", "--debug", action="store_true",
                        help="serve with Flask's development server in debug mode, tracebacks in 500 answers")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=settings.log_level.upper(),
                        help="logging level (default: LOG_LEVEL or INFO)")
    parser.add_argument("--model-dir", default=settings.model_dir,
                        help="directory of cache.db and the media cache (MODEL_DIR; default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="instantiate the model class once, report and exit")
    parser.add_argument("--basic-auth-user", default=settings.basic_auth_user,
                        help="require Basic auth (default: ML_SERVER_BASIC_AUTH_USER, else BASIC_AUTH_USER)")
    parser.add_argument("--basic-auth-pass", default=settings.basic_auth_pass,
                        help="(default: ML_SERVER_BASIC_AUTH_PASS, else BASIC_AUTH_PASS)")
    return parser


def serve_with_gunicorn(make_app: Callable, host: str, port: int, log_level: str) -> None:
    """Serve the app `make_app()` builds in each gunicorn worker (so that threads it starts, such as
    the Label Studio check, run in the worker and not in the master that forks it), with the
    settings of `gunicorn_config.py`, as `gunicorn -c python:label_studio_ml.gunicorn_config` does."""
    from gunicorn.app.base import Application

    class ModelServer(Application):
        def init(self, parser, opts, args):
            return None  # no gunicorn command line: ours is parsed already

        def load_config(self):
            self.load_config_from_module_name_or_filename(f"python:{__package__}.gunicorn_config")
            for key, value in {"bind": f"{host}:{port}", "loglevel": log_level.lower(),
                               "control_socket_disable": True}.items():
                self.cfg.set(key, value)

        def load(self):
            return app_for_gunicorn(make_app)

    ModelServer().run()


def run_model_server(model: Union[str, Type], argv: Optional[List[str]] = None,
                     on_start: Optional[Callable] = None) -> None:
    """Entry point of `python _wsgi.py ...`: parse the command line and serve with gunicorn, or with
    Flask's development server for `--debug` (and on Windows, where gunicorn does not run).

    `model` is the model class or its `"module:Class"` reference (see `find_model_class`). A model
    module that names no class, or a setting that cannot be used (`SettingsError`), ends the process
    with one "error:" line. `on_start(settings)` runs in each serving process once its app exists
    (with the settings the app serves with), e.g. to start loading weights in the background.
    """
    try:
        _serve(model, argv, on_start)
    except (ModelClassError, SettingsError) as exc:
        sys.exit(f"error: {exc}")


def _serve(model: Union[str, Type], argv: Optional[List[str]], on_start: Optional[Callable]) -> None:
    from .api import init_app

    if isinstance(model, str):
        model = find_model_class(model)
    settings = model.default_settings()
    parser = build_parser(model.__name__, settings)
    args = parser.parse_args(argv)
    try:
        kwargs = parse_kwargs(args.kwargs)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    settings = settings.replace(host=args.host, port=args.port, debug=args.debug or settings.debug,
                                log_level=args.log_level, model_dir=args.model_dir,
                                basic_auth_user=args.basic_auth_user, basic_auth_pass=args.basic_auth_pass)
    configure_logging(settings.log_level)
    if args.check:
        model(project_id="", label_config=None, settings=settings, **kwargs)
        logger.info("%s instance created: check passed", model.__name__)
        return

    def make_app():
        app = init_app(model, model_kwargs=kwargs, settings=settings)
        if on_start:
            on_start(settings)
        return app

    if args.debug or os.name != "posix":
        make_app().run(host=settings.host, port=settings.port, debug=settings.debug, threaded=True, use_reloader=False)
    else:
        serve_with_gunicorn(make_app, settings.host, settings.port, settings.log_level)
