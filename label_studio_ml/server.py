"""`label-studio-ml`: the command line that creates, starts and deploys ML backends.

- `create NAME [--script FILE[:Class]]` writes a backend directory from `default_configs/`;
- `start NAME ...` runs `NAME/_wsgi.py` (the backend's own command line, see `wsgi.build_parser`),
  which serves with gunicorn, or Flask's development server with `--debug`;
- `deploy gcp NAME ...` deploys a backend to Google Cloud Run with `gcloud run deploy --source`.

Messages for the user are printed here (green success, yellow warnings, red errors on stderr,
exit code 1 on errors); everything else in the SDK logs.
"""

import argparse
import ast
import keyword
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from colorama import Fore, Style, just_fix_windows_console

TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_configs")
BASE_CLASS = "LabelStudioMLBase"
DEFAULT_CLASS = "NewModel"
# Files of a backend directory that a user's model module must not replace.
RESERVED_MODULES = {"_wsgi", "test_api", "label_studio_ml"}
GCLOUD_INSTALL_URL = "https://cloud.google.com/sdk/docs/install"
SECRET_MASK = "****"


class CLIError(Exception):
    """A problem to report to the user in one line, without a traceback."""


def _say(message: str, color: str, stream=None) -> None:
    stream = stream or sys.stdout
    if stream.isatty():
        message = f"{color}{message}{Style.RESET_ALL}"
    print(message, file=stream, flush=True)


def success(message: str) -> None:
    _say(message, Fore.GREEN)


def warn(message: str) -> None:
    _say(message, Fore.YELLOW, sys.stderr)


def error(message: str) -> None:
    _say(message, Fore.RED, sys.stderr)


# ----- create ------------------------------------------------------------------------------------
def split_script_spec(spec: str) -> Tuple[str, Optional[str]]:
    """`"path/model.py:MyModel"` -> `("path/model.py", "MyModel")`; a bare path gives no class.

    Only a suffix that is an identifier counts as a class, so `C:\\dir\\model.py` stays a path.
    """
    path, sep, class_name = spec.rpartition(":")
    if sep and path and class_name.isidentifier():
        return path, class_name
    return spec, None


def find_model_classes(module: ast.Module) -> List[str]:
    """Top-level classes of a parsed script deriving from `LabelStudioMLBase`, directly or
    through another class of the same file, in file order (the user's code is never imported)."""
    found: List[str] = []
    for node in module.body:
        if not isinstance(node, ast.ClassDef):
            continue
        base_names = {b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                      if isinstance(b, (ast.Name, ast.Attribute))}
        if BASE_CLASS in base_names or base_names & set(found):
            found.append(node.name)
    return found


def resolve_script(spec: str) -> Tuple[str, str]:
    """`(script path, model class)` for `--script FILE[:Class]`, or a `CLIError` saying what is wrong."""
    path, class_name = split_script_spec(spec)
    if not os.path.isfile(path):
        raise CLIError(f"Script not found: {path}")
    module = os.path.splitext(os.path.basename(path))[0]
    if not path.endswith(".py") or not module.isidentifier() or keyword.iskeyword(module):
        raise CLIError(f"{path} must be a .py file whose name is a Python module name (e.g. my_model.py)")
    if module in RESERVED_MODULES:
        raise CLIError(f"Rename {path}: {module}.py is a file of the generated backend")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise CLIError(f"Cannot parse {path}: {exc}") from exc
    candidates = find_model_classes(tree)
    if class_name:
        if not any(isinstance(n, ast.ClassDef) and n.name == class_name for n in tree.body):
            raise CLIError(f"{path} defines no class {class_name}")
        return path, class_name
    if len(candidates) == 1:
        return path, candidates[0]
    if not candidates:
        raise CLIError(f"{path} defines no subclass of {BASE_CLASS}; name the class with {path}:ClassName")
    raise CLIError(f"{path} defines several subclasses of {BASE_CLASS} ({', '.join(candidates)}): "
                   f"pick one with {path}:ClassName")


def service_name(name: str) -> str:
    """A Cloud Run / compose service name from a backend directory: lowercase letters, digits
    and dashes, starting with a letter, at most 63 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", os.path.basename(os.path.normpath(name)).lower()).strip("-")
    if not slug[:1].isalpha():
        slug = f"ml-{slug}".rstrip("-")
    return slug[:63].rstrip("-")


def _render(template: str, values: Dict[str, str]) -> str:
    with open(os.path.join(TEMPLATES_DIR, template), encoding="utf-8") as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace("{{%s}}" % key, value)
    return text


def check_target(target: str, force: bool) -> None:
    if os.path.exists(target) and not os.path.isdir(target):
        raise CLIError(f"{target} exists and is not a directory")
    if os.path.isdir(target) and os.listdir(target) and not force:
        raise CLIError(f"{target} already exists: use --force to overwrite its generated files")


def create_backend(target: str, script: Optional[str] = None, force: bool = False) -> Tuple[str, str]:
    """Write the backend directory `target`; returns `(module, class)` of its model.

    An existing non-empty directory is refused unless `force`, which rewrites the generated
    files and leaves any other file (data, weights) alone.
    """
    script_path, class_name = resolve_script(script) if script else (None, DEFAULT_CLASS)
    check_target(target, force)
    os.makedirs(target, exist_ok=True)

    module = os.path.splitext(os.path.basename(script_path))[0] if script_path else "model"
    values = {"name": os.path.basename(os.path.normpath(target)), "module": module,
              "class_name": class_name, "service": service_name(target)}
    for template in sorted(os.listdir(TEMPLATES_DIR)):
        output = template[:-len(".tmpl")]
        if output == "model.py" and script_path:
            continue
        with open(os.path.join(target, output), "w", encoding="utf-8") as f:
            f.write(_render(template, values))
    if script_path:
        destination = os.path.join(target, module + ".py")
        # `--force` given the backend's own copy of the script: nothing to copy
        if not (os.path.exists(destination) and os.path.samefile(script_path, destination)):
            shutil.copyfile(script_path, destination)
    return module, class_name


def cmd_create(args) -> int:
    target = os.path.join(args.root_dir, args.name)
    module, class_name = create_backend(target, args.script, args.force)
    success(f"Created ML backend {class_name} ({module}.py) in {os.path.abspath(target)}\n"
            f"Start it with: label-studio-ml start {target}")
    return 0


# ----- start -------------------------------------------------------------------------------------
def env_first(*names: str) -> Optional[str]:
    """The value of the first of `names` set in the environment."""
    return next((os.environ[name] for name in names if os.getenv(name)), None)


def wsgi_arguments(args) -> List[str]:
    """The `_wsgi.py` command line for the options of `start`: port and host always, the rest when given."""
    argv = ["--port", str(args.port), "--host", args.host]
    if args.basic_auth_user:
        argv += ["--basic-auth-user", args.basic_auth_user, "--basic-auth-pass", args.basic_auth_pass]
    if args.debug:
        argv.append("--debug")
    if args.log_level:
        argv += ["--log-level", args.log_level]
    if args.model_dir:
        argv += ["--model-dir", os.path.abspath(args.model_dir)]
    if args.kwargs:
        argv += ["--kwargs", *args.kwargs]
    if args.check:
        argv.append("--check")
    return argv


def cmd_start(args) -> int:
    """Run `NAME/_wsgi.py` from the backend directory (the working directory the Dockerfile uses,
    so relative paths in the model and the default store location behave the same)."""
    backend_dir = os.path.abspath(args.name)
    wsgi = os.path.join(backend_dir, "_wsgi.py")
    if not os.path.isdir(backend_dir):
        raise CLIError(f"No ML backend directory {backend_dir}: create one with `label-studio-ml create {args.name}`")
    if not os.path.isfile(wsgi):
        raise CLIError(f"{backend_dir} has no _wsgi.py: is it an ML backend directory?")
    if bool(args.basic_auth_user) != bool(args.basic_auth_pass):
        raise CLIError("--basic-auth-user and --basic-auth-pass go together")
    bad = [pair for pair in args.kwargs if not re.match(r"[^=]+=", pair)]
    if bad:
        raise CLIError(f"--kwargs expects KEY=VALUE, got: {' '.join(bad)}")

    argv = [sys.executable, wsgi, *wsgi_arguments(args)]
    if not args.check:
        success(f"Starting {args.name} on http://{args.host}:{args.port} (Ctrl-C to stop)")
    os.chdir(backend_dir)
    if os.name == "posix":
        # The server replaces this process: signals (Ctrl-C, SIGTERM) and the exit code are its own.
        os.execv(sys.executable, argv)
    try:  # Windows: os.execv would detach the server from the console
        return subprocess.call(argv)
    except KeyboardInterrupt:
        return 130


# ----- deploy ------------------------------------------------------------------------------------
def gcp_deploy_command(source_dir: str, project_id: str, region: str, label_studio_host: str,
                       label_studio_api_key: str, basic_auth: Optional[Tuple[str, str]] = None,
                       gcloud: str = "gcloud") -> List[str]:
    """The `gcloud run deploy` command that builds `source_dir` (its Dockerfile) on Cloud Build
    and serves it on Cloud Run; secrets are in clear here, mask them before printing."""
    env = {"LABEL_STUDIO_URL": label_studio_host, "LABEL_STUDIO_API_KEY": label_studio_api_key}
    if basic_auth:
        env["BASIC_AUTH_USER"], env["BASIC_AUTH_PASS"] = basic_auth
    for key, value in env.items():
        if "," in value:
            raise CLIError(f"{key} must not contain a comma")
    return [
        gcloud, "run", "deploy", service_name(source_dir),
        "--source", source_dir,
        "--region", region,
        "--project", project_id,
        "--platform", "managed",
        "--set-env-vars", ",".join(f"{key}={value}" for key, value in env.items()),
        "--allow-unauthenticated",
        "--port", "9090",
    ]


def masked(command: Sequence[str], secrets: Sequence[Optional[str]]) -> str:
    """`command` as a shell line with every secret replaced by `****` (before quoting, which
    could otherwise split a secret and let it through)."""
    args = list(command)
    for secret in filter(None, secrets):
        args = [arg.replace(secret, SECRET_MASK) for arg in args]
    return shlex.join(args)


def cmd_deploy_gcp(args) -> int:
    """Deploy `NAME`, created first from `--from` when given, to Cloud Run."""
    source_dir = os.path.abspath(args.name)
    if args.script:  # fail early, before anything is written
        resolve_script(args.script)
        check_target(source_dir, args.force)
    elif not os.path.isfile(os.path.join(source_dir, "Dockerfile")):
        raise CLIError(f"{source_dir} is not an ML backend directory with a Dockerfile: "
                       f"give the model script with --from")
    if bool(args.basic_auth_user) != bool(args.basic_auth_pass):
        raise CLIError("--basic-auth-user and --basic-auth-pass go together")
    gcloud = "gcloud" if args.dry_run else shutil.which("gcloud")
    if gcloud is None:
        raise CLIError(f"gcloud is not installed or not on PATH: install the Google Cloud CLI from {GCLOUD_INSTALL_URL}")

    basic_auth = (args.basic_auth_user, args.basic_auth_pass) if args.basic_auth_user else None
    command = gcp_deploy_command(source_dir, args.gcp_project_id, args.gcp_region, args.label_studio_host,
                                 args.label_studio_api_key, basic_auth, gcloud)
    shown = masked(command, [args.label_studio_api_key, args.basic_auth_pass])
    if not basic_auth:
        warn("The service will be public (--allow-unauthenticated): anyone with its URL can call it. "
             "Consider --basic-auth-user/--basic-auth-pass.")
    if args.dry_run:
        print(shown)
        return 0
    if args.script:
        create_backend(source_dir, args.script, args.force)
    print(f"Running: {shown}", flush=True)
    returncode = subprocess.call(command)
    if returncode:
        raise CLIError(f"gcloud run deploy failed (exit code {returncode})")
    success(f"Deployed {service_name(source_dir)}: its URL is shown above, connect it in Label Studio")
    return 0


# ----- command line ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="label-studio-ml", description="Create, run and deploy Label Studio ML backends")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    create = commands.add_parser("create", aliases=["init"], help="create an ML backend directory")
    create.add_argument("name", help="directory of the new backend")
    create.add_argument("--script", help="your model module, as path/to/model.py[:ClassName]; default: a template")
    create.add_argument("--force", action="store_true", help="overwrite the generated files of an existing directory")
    create.add_argument("--root-dir", default=".", help="where to create NAME (default: current directory)")
    create.set_defaults(handler=cmd_create)

    start = commands.add_parser(
        "start", help="serve an ML backend with its _wsgi.py (gunicorn; in the foreground until Ctrl-C)",
        description="Serve the backend NAME with gunicorn (WORKERS processes, 1 by default; threads and the "
                    "rest as in label_studio_ml/gunicorn_config.py) by running NAME/_wsgi.py; it stays in the "
                    "foreground until Ctrl-C. --debug serves with Flask's development server instead.")
    start.add_argument("name", help="the backend directory")
    start.add_argument("-p", "--port", type=int, default=int(os.getenv("PORT", 9090)), help="port (default: PORT or 9090)")
    start.add_argument("--host", default=os.getenv("HOST", "0.0.0.0"), help="interface to bind (default: HOST or 0.0.0.0)")
    start.add_argument("--basic-auth-user", default=env_first("ML_SERVER_BASIC_AUTH_USER", "BASIC_AUTH_USER"),
                       help="require Basic auth (default: ML_SERVER_BASIC_AUTH_USER, else BASIC_AUTH_USER)")
    start.add_argument("--basic-auth-pass", default=env_first("ML_SERVER_BASIC_AUTH_PASS", "BASIC_AUTH_PASS"),
                       help="(default: ML_SERVER_BASIC_AUTH_PASS, else BASIC_AUTH_PASS)")
    start.add_argument("-d", "--debug", action="store_true",
                       help="Flask's development server in debug mode, tracebacks in 500 answers")
    start.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: LOG_LEVEL or INFO")
    start.add_argument("--kwargs", "--with", dest="kwargs", metavar="KEY=VAL", nargs="+", default=[],
                       help="keyword arguments for the model class (ints, floats and bools are parsed)")
    start.add_argument("--check", action="store_true", help="instantiate the model class once and exit")
    start.add_argument("--model-dir", help="directory of the store and the media cache (MODEL_DIR)")
    start.set_defaults(handler=cmd_start)

    deploy = commands.add_parser("deploy", help="deploy an ML backend to a cloud")
    clouds = deploy.add_subparsers(dest="cloud", metavar="CLOUD", required=True)
    gcp = clouds.add_parser("gcp", help="Google Cloud Run, built from the backend's Dockerfile")
    gcp.add_argument("name", help="the backend directory (created from --from when given)")
    gcp.add_argument("--from", dest="script", help="model script, path/to/model.py[:ClassName], to create NAME from")
    gcp.add_argument("--force", action="store_true", help="with --from: overwrite the generated files of NAME")
    gcp.add_argument("--gcp-project-id", required=True)
    gcp.add_argument("--gcp-region", default=os.getenv("GCP_REGION") or "us-central1",
                     help="default: GCP_REGION or us-central1")
    gcp.add_argument("--label-studio-host", required=True, help="Label Studio URL the backend downloads media from")
    gcp.add_argument("--label-studio-api-key", required=True)
    gcp.add_argument("--basic-auth-user", help="require Basic auth from callers")
    gcp.add_argument("--basic-auth-pass")
    gcp.add_argument("--dry-run", action="store_true", help="print the gcloud command (secrets masked) and stop")
    gcp.set_defaults(handler=cmd_deploy_gcp)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    just_fix_windows_console()
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CLIError as exc:
        error(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
