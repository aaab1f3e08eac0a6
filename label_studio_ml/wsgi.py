"""What every backend's `_wsgi.py` shares: logging set-up and the command line of `python _wsgi.py`.

`_wsgi.py` stays a few lines: it builds `app = init_app(ModelClass)` for gunicorn and calls
`run_model_server(ModelClass)` when run as a script.
"""

import argparse
import logging
import os
import sys
from typing import List, Optional, Type

from .utils import parse_scalar

LOG_FORMAT = "[%(asctime)s] [%(levelname)s] [%(name)s::%(funcName)s::%(lineno)d] %(message)s"


def configure_logging(level: Optional[str] = None) -> None:
    """Root logging at `level`, else `LOG_LEVEL` (default INFO)."""
    level = (level or os.getenv("LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)


def parse_kwargs(pairs: List[str]) -> dict:
    """`["a=1", "b=true", "c=x"]` -> `{"a": 1, "b": True, "c": "x"}`."""
    kwargs = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--kwargs expects KEY=VALUE, got {pair!r}")
        kwargs[key] = parse_scalar(value)
    return kwargs


def build_parser(model_name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=f"Serve the {model_name} ML backend for Label Studio")
    parser.add_argument("-p", "--port", type=int, default=int(os.getenv("PORT", 9090)), help="port (default: PORT or 9090)")
    parser.add_argument("--host", default=os.getenv("HOST", "0.0.0.0"), help="interface to bind (default 0.0.0.0)")
    parser.add_argument("--kwargs", "--with", dest="kwargs", metavar="KEY=VAL", nargs="+", default=[],
                        help="keyword arguments for the model class (ints, floats and bools are parsed)")
    parser.add_argument("-d", "--debug", action="store_true", help="Flask debug mode, tracebacks in 500 answers")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None,
                        help="logging level (default: LOG_LEVEL or INFO)")
    parser.add_argument("--model-dir", default=None, help="directory of cache.db and the media cache (MODEL_DIR)")
    parser.add_argument("--check", action="store_true", help="instantiate the model class once, report and exit")
    parser.add_argument("--basic-auth-user", default=os.getenv("ML_SERVER_BASIC_AUTH_USER") or os.getenv("BASIC_AUTH_USER"))
    parser.add_argument("--basic-auth-pass", default=os.getenv("ML_SERVER_BASIC_AUTH_PASS") or os.getenv("BASIC_AUTH_PASS"))
    return parser


def run_model_server(model_class: Type, argv: Optional[List[str]] = None) -> None:
    """Entry point of `python _wsgi.py ...`: parse the command line and serve with Flask's threaded server."""
    from .api import init_app

    parser = build_parser(model_class.__name__)
    args = parser.parse_args(argv)
    try:
        kwargs = parse_kwargs(args.kwargs)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    configure_logging(args.log_level)
    if args.model_dir:
        os.environ["MODEL_DIR"] = args.model_dir
    if args.check:
        model_class(project_id="", label_config=None, **kwargs)
        logging.getLogger(__name__).info("%s instance created: check passed", model_class.__name__)
        return
    app = init_app(model_class, basic_auth_user=args.basic_auth_user, basic_auth_pass=args.basic_auth_pass,
                   model_kwargs=kwargs)
    app.extensions["ml_server"].debug = args.debug
    app.run(host=args.host, port=args.port, debug=args.debug, threaded=True, use_reloader=False)
