#!/usr/bin/env python3
"""Run the top-level Dockerfile's steps on this machine (no Docker engine needed) and check that
the image's CMD serves /health.

    python scripts/docker_steps_on_host.py [--dockerfile Dockerfile] [--root DIR] [--port N] [--keep]

Every container path (`/app`, `/sdk`, `/data`, `/tmp`, ...) becomes a folder under a temporary root;
the image's Python is a virtualenv made from this interpreter with `--system-site-packages`, so the
heavy model stack already installed here (torch, ultralytics) is reused and not downloaded again,
while the RUN steps still install the SDK copied by COPY. Then:

- ENV, WORKDIR, COPY and RUN run in order, with the ENV of the image and the venv first on PATH;
- `apt-get` steps are not run (this is not the image's OS): their packages are checked with dpkg;
- CMD runs with the image's ENV (PORT set to a free port, like `docker run -e PORT=...`) and must
  answer GET /health with status UP within a minute; then it is stopped.

Exit status 0 when all of that works. Only what the Dockerfile uses is supported (FROM, ENV,
WORKDIR, COPY, RUN, EXPOSE, CMD); anything else is a clear error, so a new instruction in the
Dockerfile makes this check fail instead of silently skipping it.
"""

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Optional

logger = logging.getLogger("docker_steps_on_host")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPPORTED = {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "EXPOSE", "CMD"}
# An absolute path written in a Dockerfile starts with "/" not preceded by a name or a URL character.
NOT_AFTER = r"(?<![\w.:/-])"
ABSOLUTE_PATH = re.compile(NOT_AFTER + r"/([\w.-]+)")  # group: its top-level folder
# Host variables the build steps may need to reach the package index (proxies, pip config, CAs).
PASSED_THROUGH = re.compile(r"^(HOME|LANG|LC_ALL|TERM|(HTTPS?|NO|ALL)_PROXY|(https?|no|all)_proxy|PIP_.*|"
                            r"SSL_CERT_(FILE|DIR)|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE)$")


class DockerfileError(Exception):
    """The Dockerfile uses something this script does not emulate, or a step failed."""


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Image:
    """The emulated image: its root on the host, its ENV, its current WORKDIR."""

    root: str
    venv: str
    tops: List[str]  # top-level container folders, e.g. ["app", "data", "sdk", "tmp"]
    env: Dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    exposed: List[str] = field(default_factory=list)
    cmd: Optional[List[str]] = None

    def host_path(self, container_path: str) -> str:
        path = container_path if container_path.startswith("/") else os.path.join(self.workdir, container_path)
        return os.path.join(self.root, os.path.normpath(path).lstrip("/"))

    def rewrite(self, text: str) -> str:
        """Container absolute paths in a command or value -> host paths under the image root."""
        pattern = NOT_AFTER + "/(" + "|".join(map(re.escape, self.tops)) + r")(?![\w.-])"
        return re.sub(pattern, lambda m: os.path.join(self.root, m.group(1)), text)

    def process_env(self, **extra) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if PASSED_THROUGH.match(k)}
        env.setdefault("LANG", "C.UTF-8")
        env.update({k: self.rewrite(v) for k, v in self.env.items()})
        env["PATH"] = os.path.join(self.venv, "bin") + os.pathsep + env.get("PATH", os.environ.get("PATH", ""))
        env.update(extra)
        return env


def parse_dockerfile(path: str) -> List[Instruction]:
    """Instructions with their continuation lines joined and comments dropped."""
    instructions, pending, start = [], "", 0
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if line.strip().startswith("#") or (not line.strip() and not pending):
                continue
            if not pending:
                start = number
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            keyword, _, args = text.partition(" ")
            instructions.append(Instruction(start, keyword.upper(), args.strip()))
    if pending:
        raise DockerfileError(f"{path}:{start}: the last instruction ends with a line continuation")
    return instructions


def parse_env(args: str) -> Dict[str, str]:
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:  # legacy form: ENV KEY value with spaces
        return {tokens[0]: " ".join(tokens[1:])}
    pairs = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep:
            raise DockerfileError(f"ENV {args!r}: mix of KEY=value and KEY value forms")
        pairs[key] = value
    return pairs


def copy(image: Image, args: str, context: str) -> None:
    tokens = shlex.split(args)
    flags = [t for t in tokens if t.startswith("--")]
    if flags:
        raise DockerfileError(f"COPY {' '.join(flags)} is not emulated")
    *sources, dest = tokens
    target = image.host_path(dest)
    into_dir = dest.endswith("/") or len(sources) > 1 or os.path.isdir(target)
    for source in sources:
        src = os.path.normpath(os.path.join(context, source))
        if not src.startswith(context) or not os.path.exists(src):
            raise DockerfileError(f"COPY {source}: not in the build context {context}")
        if os.path.isdir(src):  # a directory's contents are copied
            shutil.copytree(src, target, dirs_exist_ok=True, symlinks=True)
        else:
            os.makedirs(target if into_dir else os.path.dirname(target), exist_ok=True)
            shutil.copy2(src, os.path.join(target, os.path.basename(src)) if into_dir else target)


def check_apt_packages(command: str) -> None:
    """The packages an apt-get step installs must already be on this machine."""
    packages = []
    for segment in re.split(r"&&|;|\|\|", command):
        words = segment.split()
        if "apt-get" in words and "install" in words:
            packages += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    if not shutil.which("dpkg-query"):
        logger.warning("apt-get step not run and dpkg-query missing: cannot check %s", " ".join(packages))
        return
    missing = [p for p in packages if subprocess.run(["dpkg-query", "-W", p], stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL).returncode != 0]
    if missing:
        logger.warning("apt-get step not run; these packages are missing here: %s", " ".join(missing))
    else:
        logger.info("apt-get step not run; its packages are installed here: %s", " ".join(packages))


def make_venv(venv: str) -> None:
    """A venv seeing this interpreter's packages, with console scripts of its own for them: the
    image's commands (gunicorn, ...) must run with the venv's Python, which imports the SDK the
    RUN steps install, not this machine's."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    subprocess.run([python, "-c", """
import os, sys
from importlib.metadata import distributions
bin_dir = os.path.dirname(sys.executable)
for dist in distributions():
    for ep in dist.entry_points.select(group="console_scripts"):
        path = os.path.join(bin_dir, ep.name)
        if os.path.exists(path):
            continue
        module, _, attr = ep.value.partition(":")
        call = attr.split("[")[0].strip()
        if not call:
            continue
        with open(path, "w") as f:
            f.write(f"#!{sys.executable}\\nimport sys\\nfrom {module} import {call.split('.')[0]}\\n"
                    f"sys.exit({call}())\\n")
        os.chmod(path, 0o755)
"""], check=True)


def container_folders(instructions: List[Instruction]) -> List[str]:
    """Top-level folders the image defines: those of WORKDIR, COPY destinations, ENV values, CMD."""
    tops = {"tmp"}
    for i in instructions:
        if i.keyword in ("WORKDIR", "CMD"):
            tops.update(ABSOLUTE_PATH.findall(i.args))
        elif i.keyword == "COPY":
            tops.update(ABSOLUTE_PATH.findall(shlex.split(i.args)[-1]))
        elif i.keyword == "ENV":
            tops.update(top for value in parse_env(i.args).values() for top in ABSOLUTE_PATH.findall(value))
    return sorted(tops - {"venv"}, key=len, reverse=True)


def run_step(image: Image, instruction: Instruction) -> None:
    if re.search(r"\bapt-get\b", instruction.args):
        check_apt_packages(instruction.args)
        return
    outside = sorted(set(ABSOLUTE_PATH.findall(instruction.args)) - set(image.tops))
    if outside:  # never let a build step write to this machine's /etc, /usr, ...
        raise DockerfileError(f"line {instruction.line}: RUN uses /{', /'.join(outside)}, outside the folders the "
                              f"image defines (/{', /'.join(image.tops)}): not emulated")
    command = image.rewrite(instruction.args)
    cwd = image.host_path(image.workdir)
    os.makedirs(cwd, exist_ok=True)
    logger.info("RUN %s", instruction.args)
    done = subprocess.run(["/bin/sh", "-c", command], cwd=cwd, env=image.process_env())
    if done.returncode != 0:
        raise DockerfileError(f"line {instruction.line}: RUN failed with status {done.returncode}: {instruction.args}")


def build(dockerfile: str, root: str) -> Image:
    context = os.path.dirname(os.path.abspath(dockerfile))
    if os.path.exists(os.path.join(context, ".dockerignore")):
        raise DockerfileError(".dockerignore is not emulated: COPY would copy more here than in the image")
    instructions = parse_dockerfile(dockerfile)
    unknown = sorted({i.keyword for i in instructions} - SUPPORTED)
    if unknown:
        raise DockerfileError(f"{dockerfile}: instructions not emulated: {', '.join(unknown)}")
    image = Image(root=root, venv=os.path.join(root, "venv"), tops=container_folders(instructions))
    for top in image.tops:
        os.makedirs(os.path.join(root, top), exist_ok=True)
    logger.info("Image root %s; venv from %s (Python %d.%d)", root, sys.executable, *sys.version_info[:2])
    make_venv(image.venv)
    for instruction in instructions:
        keyword, args = instruction.keyword, instruction.args
        if "$" in args and keyword in ("ENV", "WORKDIR", "COPY"):
            raise DockerfileError(f"line {instruction.line}: variable substitution in {keyword} is not emulated")
        if keyword == "FROM":
            base = re.search(r"python:(\d+\.\d+)", args)
            if base and base.group(1) != "%d.%d" % sys.version_info[:2]:
                logger.warning("The image uses Python %s, this machine %d.%d", base.group(1), *sys.version_info[:2])
        elif keyword == "ENV":
            image.env.update(parse_env(args))
        elif keyword == "WORKDIR":
            image.workdir = os.path.join(image.workdir, args)
            os.makedirs(image.host_path(image.workdir), exist_ok=True)
        elif keyword == "COPY":
            copy(image, args, context)
        elif keyword == "RUN":
            run_step(image, instruction)
        elif keyword == "EXPOSE":
            image.exposed += args.split()
        elif keyword == "CMD":
            image.cmd = json.loads(args) if args.startswith("[") else ["/bin/sh", "-c", args]
    if not image.cmd:
        raise DockerfileError(f"{dockerfile} has no CMD")
    return image


def sdk_location(image: Image) -> str:
    done = subprocess.run([os.path.join(image.venv, "bin", "python"), "-c",
                           "import label_studio_ml; print(label_studio_ml.__file__)"],
                          cwd=image.host_path(image.workdir), env=image.process_env(), capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_check(image: Image, port: int, timeout: float = 60) -> dict:
    """Start the CMD as the container would, wait for /health, stop it; returns the /health body."""
    cmd = [image.rewrite(part) for part in image.cmd]
    cwd = image.host_path(image.workdir)
    logger.info("CMD %s (PORT=%d)", " ".join(image.cmd), port)
    process = subprocess.Popen(cmd, cwd=cwd, env=image.process_env(PORT=str(port)), start_new_session=True)
    url = f"http://127.0.0.1:{port}/health"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DockerfileError(f"CMD exited with status {process.returncode} before serving {url}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    body = json.loads(response.read())
                if body.get("status") != "UP":
                    raise DockerfileError(f"{url} answered {body}")
                return body
            except OSError:
                time.sleep(0.5)
        raise DockerfileError(f"{url} did not answer within {timeout:.0f} s")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dockerfile", default=os.path.join(REPO_ROOT, "Dockerfile"))
    parser.add_argument("--root", help="image root (default: a new temporary folder)")
    parser.add_argument("--port", type=int, help="port for the CMD (default: a free one)")
    parser.add_argument("--keep", action="store_true", help="keep the image root")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[docker-on-host] %(message)s")

    root = os.path.abspath(args.root) if args.root else tempfile.mkdtemp(prefix="docker-on-host-")
    try:
        image = build(args.dockerfile, root)
        sdk = sdk_location(image)
        if not sdk.startswith(root):
            raise DockerfileError(f"the image's Python imports label_studio_ml from {sdk}, not from its COPY")
        body = serve_and_check(image, args.port or free_port())
    except (DockerfileError, subprocess.CalledProcessError) as exc:
        logger.error("%s", exc)
        return 1
    finally:
        if args.keep:
            logger.info("Image root kept: %s", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    logger.info("OK: label_studio_ml from %s; /health: %s", os.path.relpath(sdk, root), json.dumps(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
