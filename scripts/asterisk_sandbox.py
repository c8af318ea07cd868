#!/usr/bin/env python3
"""A real Asterisk 22 and baresip SIP phones in a Debian sid chroot, for tests, demo and benchmarks.

Debian bookworm has no Asterisk package; sid has 22.x. ``build`` debootstraps a small sid root once
(cached outside the work tree, rebuilt only when the recipe changes); ``up`` renders
``asterisk-config/`` into a per-instance directory inside that root, starts Asterisk and N baresip
phones through ``chroot`` as child processes, and waits until AMI says ``FullyBooted`` and every phone
is registered. Everything it started is recorded in a JSON state file so ``down`` stops exactly that.

Standard library only and nothing from the project, so tests, the demo and benchmarks can import it
after putting ``scripts/`` on ``sys.path``::

    from asterisk_sandbox import Sandbox

    async def call(sb: Sandbox) -> None:
        ami = await sb.ami()                          # AmiClient, logged in as the filtered CTI user
        cust = await sb.phone("cust1").connect()      # BaresipPhone, over baresip's ctrl_tcp
        await cust.dial("4008001234")
        await ami.wait_for_event("QueueCallerJoin", Queue="member-service")

    with Sandbox.up(agents=2, customers=2) as sb:    # blocking; works inside a running loop too
        asyncio.run(call(sb))

Command line (``scripts/asterisk-sandbox``): ``build | up | down | status | cli``.
Needs root (debootstrap, chroot), as these machines provide.
"""

# The test clients take ``timeout=`` arguments on purpose: every wait in a test needs a bound, and one
# keyword reads better in test code than an ``async with asyncio.timeout()`` block around each call.
# ruff: noqa: ASYNC109

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

# ------------------------------------------------------------------------------------------ recipe
REPO_DIR = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_DIR / "asterisk-config"
SUITE = "sid"
MIRROR = "http://deb.debian.org/debian"
# asterisk-modules carries codec_opus_open_source (WebRTC) and is listed although asterisk pulls it in,
# so a change in Debian's dependencies cannot silently drop it.
PACKAGES = ("asterisk", "asterisk-modules", "asterisk-core-sounds-en-wav", "baresip-core", "sox")
# Bump when anything that changes the built root changes (packages, post-install steps).
RECIPE_VERSION = 1
STAMP_FILE = ".member-cti-recipe"
STATE_VERSION = 1

INSTANCE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
PLACEHOLDER_RE = re.compile(r"\{\{([A-Za-z0-9_]+)\}\}")
DIDS = {"4008001234": "member-service", "4008001235": "vip"}
QUEUES = ("member-service", "vip")
AST_RTP_PORTS = 200  # Asterisk uses 2 per call leg (RTP + RTCP)
PHONE_RTP_PORTS = 10  # baresip: call_max_calls 4 -> 8 ports

T = TypeVar("T")


class SandboxError(RuntimeError):
    """Anything that keeps the sandbox from being built, started or stopped."""


def recipe_id() -> str:
    """Short hash of everything that defines the built root; stored in the stamp file."""
    recipe = json.dumps([RECIPE_VERSION, SUITE, MIRROR, sorted(PACKAGES)])
    return f"v{RECIPE_VERSION}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def default_root() -> Path:
    """``$CTI_SANDBOX_ROOT`` or ``~/.cache/member-cti/asterisk-root`` (outside the work tree)."""
    env = os.environ.get("CTI_SANDBOX_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "member-cti" / "asterisk-root"


def _log(msg: str) -> None:
    print(f"asterisk-sandbox: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- build
def is_built(root: Path | None = None) -> bool:
    """True if ``root`` holds a finished build of the current recipe."""
    root = root or default_root()
    stamp = root / STAMP_FILE
    try:
        return stamp.read_text().strip() == recipe_id() and (root / "usr/sbin/asterisk").exists()
    except OSError:
        return False


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive flock so two test sessions starting at once do not both debootstrap."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _require_root_user() -> None:
    if os.geteuid() != 0:
        raise SandboxError("the Asterisk sandbox needs root (debootstrap and chroot)")


def ensure_debootstrap() -> None:
    """Install Debian's debootstrap on the host if it is missing (same as scripts/install-system-deps)."""
    if shutil.which("debootstrap"):
        return
    _log("installing debootstrap with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, env=env)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``: never delete a tree something is mounted into."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            mnt = line.split()[1].replace("\\040", " ")
            if mnt == prefix or mnt.startswith(prefix + "/"):
                found.append(mnt)
    return found


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    mounts = _mounts_under(path)
    if mounts:
        raise SandboxError(f"refusing to delete {path}: mounted inside: {mounts}")
    shutil.rmtree(path)


def _running_instances(root: Path) -> list[str]:
    """Instances in ``root`` whose recorded processes are still alive."""
    alive = []
    for state_path in sorted(root.glob("opt/ast-*/state.json")):
        state = _read_state(state_path.parent)
        with contextlib.suppress(KeyError, TypeError):
            if state and any(_proc_alive(p) for p in _state_procs(state)):
                alive.append(state["instance"])
    return alive


def _clean_stale_builds(root: Path) -> None:
    """Remove temp trees of builds that were killed (their pid is gone)."""
    for tmp in root.parent.glob(f".{root.name}.*-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _log(f"removing leftover {tmp}")
            _remove_tree(tmp)


def build(root: Path | None = None, *, force: bool = False) -> Path:
    """Debootstrap the sid root once; idempotent, atomic, stamped with :func:`recipe_id`.

    The new root is built in a temporary directory beside the final one and renamed into place
    only after debootstrap succeeded and the stamp is written, so a killed build never leaves a
    tree that looks finished. A root with running sandboxes is never replaced.
    """
    root = (root or default_root()).resolve()
    with _file_lock(root.parent / f".{root.name}.lock"):
        if is_built(root) and not force:
            _warm_media_cache(root)  # a no-op once the files exist
            return root
        _require_root_user()
        ensure_debootstrap()
        _clean_stale_builds(root)
        if root.exists() and (running := _running_instances(root)):
            raise SandboxError(f"{root} needs a rebuild but sandboxes are running: {running}")
        tmp = root.parent / f".{root.name}.building-{os.getpid()}"
        _remove_tree(tmp)
        _debootstrap(tmp)
        (tmp / "opt").mkdir(exist_ok=True)
        (tmp / STAMP_FILE).write_text(recipe_id() + "\n")
        if root.exists():
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            root.rename(old)
            tmp.rename(root)
            _remove_tree(old)
        else:
            tmp.rename(root)
        _log(f"built {root} ({recipe_id()}); making test tones")
        _warm_media_cache(root)
        return root


def _debootstrap(target: Path) -> None:
    log_path = target.parent / f"{target.name}.log"
    _log(f"debootstrap {SUITE} into {target} (about a minute, log {log_path})")
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(target), MIRROR]
    with log_path.open("w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise SandboxError(f"debootstrap failed ({rc}):\n" + "\n".join(tail))
    log_path.unlink()


# ------------------------------------------------------------------------------------- processes
def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces and ')'
    return fields[0], int(fields[19])


def _proc_alive(proc: dict[str, Any]) -> bool:
    """The recorded process still runs: same pid AND same start time (pids get reused), not a zombie."""
    stat = _proc_stat(int(proc["pid"]))
    return stat is not None and stat[1] == int(proc["starttime"]) and stat[0] != "Z"


def _state_procs(state: dict[str, Any]) -> list[dict[str, Any]]:
    procs = [state["asterisk"]] if state.get("asterisk") else []
    return procs + [p for p in state.get("phones", {}).values() if p.get("pid")]


def _spawn(cmd: list[str], log_path: Path, *, die_with_parent: bool, pdeathsig: str) -> subprocess.Popen[bytes]:
    """Start a detached child (own session, output to a log file).

    With ``die_with_parent`` the child gets a parent-death signal (``setpriv --pdeathsig``), so a test
    run killed with SIGKILL cannot leak Asterisk or phones. chroot and setpriv exec, so the pid
    recorded is the pid of Asterisk/baresip itself. The signal is tied to the calling *thread*.
    """
    if die_with_parent:
        cmd = ["setpriv", f"--pdeathsig={pdeathsig}", *cmd]
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _proc_record(popen: subprocess.Popen[bytes], role: str) -> dict[str, Any]:
    stat = None
    for _ in range(50):  # the exec chain (setpriv -> chroot -> program) keeps the pid
        stat = _proc_stat(popen.pid)
        if stat:
            break
        time.sleep(0.01)
    if stat is None:
        raise SandboxError(f"{role} exited at once (pid {popen.pid})")
    return {"pid": popen.pid, "starttime": stat[1], "role": role}


# ----------------------------------------------------------------------------------------- ports
class _PortPicker:
    """Finds free ports by binding them, and holds them until :meth:`release` so one picker never
    hands out a port twice. Ports of other live sandboxes in the same root are avoided too."""

    def __init__(self, host: str, avoid: Iterable[int] = ()) -> None:
        self.host = host
        self.avoid = set(avoid)
        self._held: list[socket.socket] = []

    def _try(self, kind: int, port: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            return None
        return sock

    def port(self, *, tcp: bool = True, udp: bool = False, tcp_next: bool = False) -> int:
        """A port P free for TCP and/or UDP; with ``tcp_next`` also P+1 for TCP.

        baresip 1.1.0's ``sip_listen P`` binds UDP P, TCP P *and* TLS on TCP P+1 (its TLS transport is
        always on and cannot be configured away); a taken P+1 makes it exit with "SIP/TLS transport
        failed: Address already in use" (seen in about one test run in ten before P+1 was reserved).
        """
        for _ in range(200):
            first = self._try(socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM, 0)
            if first is None:
                continue
            port: int = first.getsockname()[1]
            extra = [(socket.SOCK_DGRAM, port)] if tcp and udp else []
            if tcp_next:
                extra.append((socket.SOCK_STREAM, port + 1))
            socks = [first, *(self._try(kind, p) for kind, p in extra)]
            held = [sock for sock in socks if sock is not None]
            taken = {port, port + 1} if tcp_next else {port}
            if len(held) < len(socks) or taken & self.avoid:
                for sock in held:
                    sock.close()
                continue
            self._held.extend(held)
            self.avoid |= taken
            return port
        raise SandboxError("no free port found")

    def udp_block(self, size: int, low: int = 20000, high: int = 32000) -> int:
        """First port of ``size`` consecutive free UDP ports below the kernel's ephemeral range."""
        rng = random.Random()
        for _ in range(100):
            base = rng.randrange(low, high - size) & ~1  # RTP wants an even start
            if any(p in self.avoid for p in range(base, base + size)):
                continue
            socks = [self._try(socket.SOCK_DGRAM, p) for p in range(base, base + size)]
            held = [s for s in socks if s]
            if len(held) == size:
                self._held.extend(held)
                self.avoid.update(range(base, base + size))
                return base
            for s in held:
                s.close()
        raise SandboxError(f"no block of {size} free UDP ports")

    def release(self) -> None:
        for s in self._held:
            s.close()
        self._held.clear()


def _ports_of(state: dict[str, Any]) -> set[int]:
    ports = {state["ami"]["port"], state["sip"]["port"], state["http"]["port"]}
    ports.update(range(state["rtp"]["start"], state["rtp"]["end"] + 1))
    for phone in state["phones"].values():
        ports.update((phone["sip_port"], phone["sip_port"] + 1, phone["ctrl_port"]))
        ports.update(range(phone["rtp_start"], phone["rtp_end"] + 1))
    return ports


# -------------------------------------------------------------------------------------- rendering
def render_config(src: Path, dst: Path, values: dict[str, str]) -> dict[str, str]:
    """Copy every ``*.conf`` of ``src`` to ``dst`` replacing ``{{NAME}}`` placeholders.

    ``SECRET_<endpoint>`` placeholders without a value get a fresh random secret; any other unknown
    placeholder is an error (a typo must not reach Asterisk as literal text). Returns all values used.
    """
    values = dict(values)
    files = sorted(src.glob("*.conf"))
    if not files:
        raise SandboxError(f"no *.conf in {src}")
    texts = {f.name: f.read_text() for f in files}
    names = {m for text in texts.values() for m in PLACEHOLDER_RE.findall(text)}
    for name in sorted(names):
        if name not in values and name.startswith("SECRET_"):
            values[name] = secrets.token_hex(12)
    missing = sorted(names - values.keys())
    if missing:
        raise SandboxError(f"no value for placeholders {missing} in {src}")
    dst.mkdir(parents=True, exist_ok=True)
    for fname, text in texts.items():
        (dst / fname).write_text(PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], text))
    return values


@dataclass
class _Section:
    name: str
    templates: list[str]
    is_template: bool
    options: dict[str, str]


def _parse_pjsip_sections(text: str) -> list[_Section]:
    """Sections of a pjsip.conf. Names repeat (endpoint, auth, aor share one), so a list, not a dict."""
    sections: list[_Section] = []
    header = re.compile(r"^\[([^\]]+)\](?:\(([^)]*)\))?")
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if m := header.match(line):
            opts = [o.strip() for o in (m.group(2) or "").split(",") if o.strip()]
            sections.append(_Section(m.group(1), [o for o in opts if o != "!"], "!" in opts, {}))
        elif "=" in line and sections:
            key, _, value = line.partition("=")
            sections[-1].options[key.strip().rstrip(">").strip()] = value.strip()
    return sections


def parse_pjsip_endpoints(text: str) -> dict[str, dict[str, str]]:
    """Endpoints of a rendered pjsip.conf with inherited options resolved (templates may nest)."""
    sections = _parse_pjsip_sections(text)
    templates = {s.name: s for s in sections if s.is_template}

    def resolved(sec: _Section) -> dict[str, str]:
        merged: dict[str, str] = {}
        for tname in sec.templates:
            merged.update(resolved(templates[tname]))
        merged.update(sec.options)
        return merged

    endpoints = {}
    for sec in sections:
        if not sec.is_template and (opts := resolved(sec)).get("type") == "endpoint":
            endpoints[sec.name] = opts
    return endpoints


def _endpoint_info(name: str, opts: dict[str, str], secret: str | None) -> dict[str, Any]:
    if opts.get("webrtc") == "yes":
        kind = "webrtc"
    elif opts.get("context") == "from-customers":
        kind = "customer"
    else:
        kind = "agent"
    number = re.search(r"<([^>]*)>", opts.get("callerid", ""))
    return {
        "kind": kind,
        "context": opts.get("context", ""),
        "callerid": opts.get("callerid", ""),
        "number": number.group(1) if number else "",
        "username": name,
        "secret": secret,
    }


# ----------------------------------------------------------------------------------------- media
MEDIA_SECONDS = 600  # baresip's aufile source stops at the end of the file: outlast any demo call
MOH_SYNTH = "synth 30 sine 392 sine 523 remix 1,2 tremolo 2 40 vol 0.4"
MEDIA_CACHE = "opt/media-cache"


def _tone_synth(index: int, kind: str, seconds: int) -> str:
    """sox effect chain for a distinct 8 kHz mono test signal per phone (agents sweep, customers play
    a chord), so a recording shows whose audio it holds. ``index`` comes from the endpoint's number
    (agent1003 -> 3), so a phone sounds the same, and hits the cache, however many phones run."""
    if kind == "agent":
        f1, f2, trem = 300 + 40 * index, 450 + 60 * index, 3 + index
        synth = f"synth {seconds} sine {f1}-{f1 + 600} sine {f2}"
    else:
        f1, f2, trem = 700 + 50 * index, 1100 + 70 * index, 5 + index
        synth = f"synth {seconds} sine {f1} sine {f2}"
    return f"{synth} remix 1,2 tremolo {trem} 50 vol 0.5"


def _warm_media_cache(root: Path) -> None:
    """Make the tones of the first four agents and customers and the hold music at build time, so the
    first ``up`` after a build does not spend ~10 s in sox."""
    synths = {MOH_SYNTH}
    synths |= {_tone_synth(i, kind, MEDIA_SECONDS) for i in range(1, 5) for kind in ("agent", "customer")}
    _ensure_media_cache(root, synths)


def _ensure_media_cache(root: Path, synths: set[str]) -> dict[str, Path]:
    """Host paths of cached WAVs for each sox effect chain, making the missing ones in parallel."""
    cache_dir = root / MEDIA_CACHE
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {synth: cache_dir / f"{hashlib.sha256(synth.encode()).hexdigest()[:16]}.wav" for synth in synths}
    jobs: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    for synth, path in paths.items():
        if path.exists():
            continue
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.wav")
        inner = "/" + str(tmp.relative_to(root))
        cmd = ["chroot", str(root), "sox", "-n", "-r", "8000", "-c", "1", "-b", "16", inner, *synth.split()]
        jobs.append((subprocess.Popen(cmd, stderr=subprocess.PIPE), tmp, path))
    for popen, tmp, path in jobs:
        _, err = popen.communicate()
        if popen.returncode != 0:
            raise SandboxError(f"sox failed making {path.name}: {err.decode(errors='replace').strip()}")
        tmp.replace(path)
    return paths


BARESIP_CONFIG = """\
# baresip 1.1.0 config for {name} (generated by asterisk_sandbox.py)
poll_method\t\tepoll
sip_listen\t\t{bind}:{sip_port}
call_local_timeout\t120
call_max_calls\t\t4
call_hold_other_calls\tno
# An empty sound dir: no ring.wav, so no ring-tone player. With it, accepting a call while the
# ring tone starts crashed baresip 1.1.0 about one call in three ("auframe: init: unsupported
# sample format", then the process is gone); without it 0 crashes in 80 calls.
audio_path\t\t{ua_dir}/no-sounds
audio_player\t\taufile,{ua_dir}/rx.wav
audio_source\t\taufile,{media}
audio_alert\t\taufile,{ua_dir}/alert.wav
ausrc_srate\t\t8000
auplay_srate\t\t8000
ausrc_channels\t\t1
auplay_channels\t\t1
audio_level\t\tno
ausrc_format\t\ts16
auplay_format\t\ts16
auenc_format\t\ts16
audec_format\t\ts16
audio_buffer\t\t20-160
rtp_ports\t\t{rtp_start}-{rtp_end}
rtp_timeout\t\t0
jitter_buffer_type\tfixed
jitter_buffer_delay\t5-10
# "net_interface lo" fails inside the chroot (no /sys view of interfaces): use the address
net_interface\t\t{bind}
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\taufile.so
module_tmp\t\tuuid.so
module_tmp\t\taccount.so
# without menu.so, ctrl_tcp accepts connections but knows no commands (baresip 1.1.0)
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
ctrl_tcp_listen\t\t{bind}:{ctrl_port}
"""

BARESIP_ACCOUNT = (
    "<sip:{user}@{sip_host}:{sip_port};transport=udp>;auth_pass={secret};answermode={answermode};"
    "regint=300;audio_codecs=pcmu\n"
)


# --------------------------------------------------------------------------------------- sandbox
def _instance_paths(root: Path, instance: str) -> tuple[str, Path]:
    if not INSTANCE_RE.match(instance):
        raise SandboxError(f"bad instance name {instance!r} (use a-z, 0-9, - and _)")
    ast_dir = f"/opt/ast-{instance}"
    return ast_dir, root / ast_dir.lstrip("/")


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


_instance_counter = itertools.count(1)


class Sandbox:
    """One running Asterisk + phones. Create with :meth:`up` or :meth:`attach`; stop with :meth:`down`.

    ``state`` is the JSON written to ``state_path`` (see :meth:`up` for the keys).
    """

    def __init__(self, state: dict[str, Any], *, ephemeral: bool = False) -> None:
        self.state = state
        self.ephemeral = ephemeral  # auto-named by up(): the context manager deletes its files at exit
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def up(
        cls,
        *,
        agents: int = 2,
        customers: int = 2,
        instance: str | None = None,
        bind: str = "127.0.0.1",
        root: Path | str | None = None,
        config_dir: Path | str | None = None,
        wrapup_seconds: int = 5,
        queue_ring_timeout: int = 15,
        queue_max_wait: int = 60,
        open_hours: str = "00:00-23:59",
        open_days: str = "mon-sun",
        agent_answermode: str = "manual",
        customer_answermode: str = "manual",
        auto_build: bool = True,
        die_with_parent: bool = True,
        timeout: float = 60.0,
    ) -> Sandbox:
        """Render the config, start Asterisk and phones, wait until booted and registered.

        ``agents``/``customers``: how many baresip phones to start for the agentNNNN / custN endpoints
        (the first ones by name). ``bind``: address every listener uses (a veth address when run inside
        a network namespace). ``die_with_parent``: children die with the calling thread (tests); the CLI
        passes False so the sandbox outlives it.

        State keys: version, instance, root, ast_dir (chroot path), host_dir, state_path, bind,
        started_at, ami{host, port, user, secret, raw_user, raw_secret}, sip{host, port, transport},
        http{host, port, ws_url}, rtp{start, end}, endpoints{name: {kind, context, callerid, number,
        username, secret}}, phones{name: {endpoint, kind, answermode, sip_port, ctrl_host, ctrl_port,
        rtp_start, rtp_end, uri, media, rx_wav, log, pid, starttime}}, queues, dids{did: queue},
        recordings_dir (host path), recordings_dir_chroot, asterisk{pid, starttime, log, full_log},
        settings{wrapup_seconds, queue_ring_timeout, queue_max_wait, open_hours, open_days}.
        """
        root_path = Path(root).resolve() if root else default_root()
        if auto_build:
            build(root_path)
        elif not is_built(root_path):
            raise SandboxError(f"{root_path} is not built (run: scripts/asterisk-sandbox build)")
        _require_root_user()
        ephemeral = instance is None
        instance = instance or f"py{os.getpid()}-{next(_instance_counter)}"
        _, host_dir = _instance_paths(root_path, instance)
        if (previous := _read_state(host_dir)) and any(_proc_alive(p) for p in _state_procs(previous)):
            raise SandboxError(f"sandbox {instance!r} is already running (down it first)")
        _prepare_instance_dir(host_dir)
        settings = {
            "wrapup_seconds": wrapup_seconds,
            "queue_ring_timeout": queue_ring_timeout,
            "queue_max_wait": queue_max_wait,
            "open_hours": open_hours,
            "open_days": open_days,
        }
        state = _plan_instance(
            root_path,
            instance,
            bind,
            agents,
            customers,
            settings,
            answermodes={"agent": agent_answermode, "customer": customer_answermode},
            config_dir=Path(config_dir) if config_dir else CONFIG_DIR,
        )
        sandbox = cls(state, ephemeral=ephemeral)
        try:
            sandbox._start(die_with_parent=die_with_parent, timeout=timeout)
        except BaseException:
            sandbox.down()
            raise
        return sandbox

    @classmethod
    def attach(cls, instance: str = "dev", root: Path | str | None = None) -> Sandbox:
        """A handle on a sandbox started elsewhere (e.g. by the CLI), from its state file."""
        root_path = Path(root).resolve() if root else default_root()
        _, host_dir = _instance_paths(root_path, instance)
        state = _read_state(host_dir)
        if state is None:
            raise SandboxError(f"no sandbox {instance!r} in {root_path} (no {host_dir}/state.json)")
        return cls(state)

    # ------------------------------------------------------------------ properties and helpers
    @property
    def instance(self) -> str:
        return str(self.state["instance"])

    @property
    def root(self) -> Path:
        return Path(self.state["root"])

    @property
    def host_dir(self) -> Path:
        return Path(self.state["host_dir"])

    @property
    def state_path(self) -> Path:
        return Path(self.state["state_path"])

    @property
    def recordings_dir(self) -> Path:
        return Path(self.state["recordings_dir"])

    def host_path(self, chroot_path: str) -> Path:
        """Host path of a path inside the chroot (e.g. a MixMonitor file name from AMI)."""
        return self.root / chroot_path.lstrip("/")

    def sip_uri(self, user: str) -> str:
        """``sip:<user>@<asterisk>`` for a number or endpoint, as a phone dials it."""
        return f"sip:{user}@{self.state['sip']['host']}:{self.state['sip']['port']}"

    def chroot_run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a program inside the chroot (sox, asterisk -rx, ...)."""
        return subprocess.run(
            ["chroot", str(self.root), *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def cli(self, command: str, timeout: float = 15.0) -> str:
        """``asterisk -rx COMMAND`` against this instance (its own control socket); returns the output."""
        conf = f"{self.state['ast_dir']}/etc/asterisk.conf"
        res = self.chroot_run("asterisk", "-C", conf, "-rx", command, timeout=timeout)
        if res.returncode != 0:
            raise SandboxError(f"asterisk -rx {command!r} failed: {res.stderr.strip() or res.stdout.strip()}")
        # The server colours its output even for -rx into a pipe ("-n" has no effect remotely).
        return ANSI_RE.sub("", res.stdout)

    def sox_stat(self, path: Path | str) -> dict[str, float]:
        """``sox FILE -n stat`` of a host path inside the root (sox is in the chroot, not the host)."""
        host = Path(path)
        inner = "/" + str(host.resolve().relative_to(self.root)) if host.is_absolute() else str(path)
        res = self.chroot_run("sox", inner, "-n", "stat")
        if res.returncode != 0:
            raise SandboxError(f"sox stat {inner} failed: {res.stderr.strip()}")
        stats: dict[str, float] = {}
        for line in res.stderr.splitlines():
            key, sep, value = line.partition(":")
            with contextlib.suppress(ValueError):
                if sep:
                    stats[" ".join(key.split())] = float(value.strip())
        return stats

    def phone(self, name: str) -> BaresipPhone:
        """An (unconnected) ctrl_tcp client for phone ``name``; ``await phone.connect()``."""
        ph = self.state["phones"][name]
        return BaresipPhone(name, ph["ctrl_host"], ph["ctrl_port"], sip_domain=self._sip_domain())

    def phones(self, kind: str | None = None) -> list[str]:
        """Names of the started phones, optionally only ``agent`` or ``customer`` ones."""
        return [n for n, p in self.state["phones"].items() if kind is None or p["kind"] == kind]

    async def ami(self, *, raw: bool = False, events: str = "on", timeout: float = 10.0) -> AmiClient:
        """A logged-in AMI connection: the filtered CTI user, or with ``raw`` the unfiltered one."""
        a = self.state["ami"]
        user, secret = (a["raw_user"], a["raw_secret"]) if raw else (a["user"], a["secret"])
        return await AmiClient.connect(a["host"], a["port"], user, secret, events=events, timeout=timeout)

    def _sip_domain(self) -> str:
        return f"{self.state['sip']['host']}:{self.state['sip']['port']}"

    # ------------------------------------------------------------------ start
    def _start(self, *, die_with_parent: bool, timeout: float) -> None:
        # Processes are spawned from this (the caller's) thread only: the parent-death signal fires
        # when the spawning *thread* ends, and the waits below run in a short-lived helper thread.
        deadline = time.monotonic() + timeout
        self._make_media()
        self._write_state()
        self._start_asterisk(die_with_parent)
        _run_coroutine_sync(self._wait_booted(deadline))
        for name in self.state["phones"]:
            self._start_phone(name, die_with_parent)
        self._write_state()
        _run_coroutine_sync(self._wait_phones_ready(deadline))

    def _make_media(self) -> None:
        """Music on hold and one distinct tone file per phone. sox needs ~2 s per 5 minutes of audio, so
        the files are made once into a cache in the root (keyed by the synth arguments, made in
        parallel, renamed into place when complete) and hard-linked into the instance."""
        ast_dir = self.state["ast_dir"]
        wanted = {f"{ast_dir}/moh/moh-01.wav": MOH_SYNTH}
        for name, ph in self.state["phones"].items():
            wanted[ph["media_chroot"]] = _tone_synth(_natural_key(name)[1] % 10, ph["kind"], MEDIA_SECONDS)
        cache = _ensure_media_cache(self.root, set(wanted.values()))
        for target, synth in wanted.items():
            host_target = self.host_path(target)
            host_target.unlink(missing_ok=True)
            os.link(cache[synth], host_target)

    def _start_asterisk(self, die_with_parent: bool) -> None:
        ast_dir = self.state["ast_dir"]
        log = self.host_dir / "log/asterisk.out"
        cmd = ["chroot", str(self.root), "asterisk", "-f", "-C", f"{ast_dir}/etc/asterisk.conf"]
        popen = _spawn(cmd, log, die_with_parent=die_with_parent, pdeathsig="TERM")
        self._children[popen.pid] = popen
        self.state["asterisk"] = {
            **_proc_record(popen, "asterisk"),
            "log": str(log),
            "full_log": str(self.host_dir / "log/full.log"),
        }
        self._write_state()

    def _start_phone(self, name: str, die_with_parent: bool) -> None:
        ph = self.state["phones"][name]
        cmd = ["chroot", str(self.root), "baresip", "-4", "-f", ph["ua_dir_chroot"]]
        # SIGKILL: a baresip that loses its parent has nobody left to wait for its un-REGISTER.
        popen = _spawn(cmd, Path(ph["log"]), die_with_parent=die_with_parent, pdeathsig="KILL")
        self._children[popen.pid] = popen
        ph.update(_proc_record(popen, f"baresip {name}"))

    async def _wait_booted(self, deadline: float) -> None:
        """Until AMI logs in and says FullyBooted. Asterisk sends FullyBooted to every session that logs
        in after boot completed, and to open sessions when it completes: either way after Login."""
        ami = await self._connect_ami_when_up(deadline)
        try:
            await ami.wait_for_event("FullyBooted", timeout=max(0.1, deadline - time.monotonic()))
        finally:
            await ami.close()

    async def _wait_phones_ready(self, deadline: float) -> None:
        ami = await self._connect_ami_when_up(deadline)
        try:
            await self._wait_registered(ami, deadline)
            await self._wait_ctrl_ports(deadline)
        finally:
            await ami.close()

    async def _wait_registered(self, ami: AmiClient, deadline: float) -> None:
        """Poll PJSIPShowContacts, woken early by ContactStatus events, until every phone has a contact."""
        wanted = {ph["endpoint"] for ph in self.state["phones"].values()}
        while True:
            contacts = await ami.action_list("PJSIPShowContacts", timeout=5)
            have = {c.get("Endpoint") or c.get("ObjectName", "").split("/")[0] for c in contacts}
            if wanted <= have:
                return
            self._check_children_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError(f"phones not registered in time: {sorted(wanted - have)}")
            mark = ami.mark()
            with contextlib.suppress(TimeoutError):
                await ami.wait_for_event("ContactStatus", since=mark, timeout=min(0.5, left))

    async def _wait_ctrl_ports(self, deadline: float) -> None:
        for name, ph in self.state["phones"].items():
            while True:
                try:
                    _, writer = await asyncio.open_connection(ph["ctrl_host"], ph["ctrl_port"])
                except OSError:
                    if time.monotonic() > deadline:
                        raise SandboxError(f"ctrl_tcp of {name} not listening") from None
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break

    async def _connect_ami_when_up(self, deadline: float) -> AmiClient:
        """Log in (unfiltered user) as soon as AMI accepts; a connection without banner is not up yet
        (a starting or dying Asterisk may accept and close at once)."""
        a = self.state["ami"]
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_children_alive()
            try:
                return await AmiClient.connect(a["host"], a["port"], a["raw_user"], a["raw_secret"], timeout=3.0)
            except (OSError, TimeoutError, SandboxError) as exc:
                last = exc
                await asyncio.sleep(0.1)
        raise SandboxError(f"AMI did not come up on {a['host']}:{a['port']}: {last}")

    def _check_children_alive(self) -> None:
        for proc in _state_procs(self.state):
            if not _proc_alive(proc):
                log = self.state["asterisk"]["log"] if proc["role"] == "asterisk" else self._phone_log(proc)
                raise SandboxError(f"{proc['role']} exited during start-up; see {log}:\n{_tail(log)}")

    def _phone_log(self, proc: dict[str, Any]) -> str:
        return next((str(p["log"]) for p in self.state["phones"].values() if p.get("pid") == proc["pid"]), "?")

    def _write_state(self) -> None:
        _write_json_atomic(self.state_path, self.state)

    # ------------------------------------------------------------------ status and stop
    def is_running(self) -> bool:
        """True while Asterisk (the recorded process) is alive."""
        ast = self.state.get("asterisk")
        return ast is not None and _proc_alive(ast)

    def status(self) -> dict[str, Any]:
        """Liveness of every recorded process plus the ports a client needs."""
        ast = self.state.get("asterisk")
        return {
            "instance": self.instance,
            "running": self.is_running(),
            "state_path": str(self.state_path),
            "asterisk": {"pid": ast["pid"] if ast else None, "alive": self.is_running()},
            "phones": {
                n: {"pid": p.get("pid"), "alive": bool(p.get("pid")) and _proc_alive(p)}
                for n, p in self.state["phones"].items()
            },
            "ami": {k: self.state["ami"][k] for k in ("host", "port", "user")},
            "sip": self.state["sip"],
            "http": self.state["http"],
            "rtp": self.state["rtp"],
        }

    def crash_and_restart_asterisk(self, *, timeout: float = 30.0, wait_phones: bool = False) -> None:
        """SIGKILL Asterisk (no Hangup, no Shutdown: the AMI socket just closes, as in a crash) and start
        it again with the same config and ports; returns once it is FullyBooted (and, with
        `wait_phones`, once the phones registered again — baresip only does so at its next refresh).
        Call from the thread that started the sandbox (the parent-death signal is tied to the spawning
        thread)."""
        pid = int(self.state["asterisk"]["pid"])
        os.kill(pid, signal.SIGKILL)
        # Wait until the process is reaped, not merely a zombie: the main thread of a multi-threaded
        # Asterisk shows "Z" while its other threads still hold the control socket, and a new Asterisk
        # started then finds it answering ("Asterisk already running").
        child = self._children.get(pid)
        if child is not None:
            child.wait(timeout)
        else:
            deadline = time.monotonic() + timeout
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        self._reap()
        self._start_asterisk(die_with_parent=True)
        deadline = time.monotonic() + timeout
        _run_coroutine_sync(self._wait_booted(deadline))
        if wait_phones:
            _run_coroutine_sync(self._wait_phones_ready(deadline))

    def restart_phones(self, *, timeout: float = 30.0) -> None:
        """Kill and start every baresip phone again and wait for their registrations: after a PBX crash
        real phones re-register at their next refresh; this makes it happen now. Clients connected to
        the phones' ctrl ports must connect again."""
        for ph in self.state["phones"].values():
            if ph.get("pid") and _proc_alive(ph):
                os.kill(int(ph["pid"]), signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_proc_alive(ph) for ph in self.state["phones"].values() if ph.get("pid")):
            if time.monotonic() > deadline:
                raise SandboxError("phones did not die after SIGKILL")
            time.sleep(0.05)
        self._reap()
        for name in self.state["phones"]:
            self._start_phone(name, die_with_parent=True)
        self._write_state()
        _run_coroutine_sync(self._wait_phones_ready(time.monotonic() + timeout))

    def pids(self) -> list[int]:
        """Pids this sandbox started (as recorded)."""
        return [int(p["pid"]) for p in _state_procs(self.state)]

    def down(self, timeout: float = 10.0, *, purge: bool = False) -> None:
        """Stop only what :meth:`up` started: phones first (so their un-REGISTER gets answered and they
        exit at once; with Asterisk gone baresip ignores SIGTERM for >10 s while it retries), then
        Asterisk with ``core stop now``, SIGTERM, SIGKILL, each after a grace period.

        ``purge`` also deletes the instance directory (config, logs, recordings): for throw-away
        sandboxes of test runs and benchmarks, which would otherwise pile up in the root."""
        phones = [p for p in self.state["phones"].values() if p.get("pid")]
        self._stop_procs(phones, grace=2.0)
        ast = self.state.get("asterisk")
        if ast and _proc_alive(ast):
            with contextlib.suppress(SandboxError, subprocess.TimeoutExpired):
                self.cli("core stop now", timeout=min(5.0, timeout))
            self._stop_procs([ast], grace=timeout / 2, first_signal=None)
            self._stop_procs([ast], grace=timeout / 2)
        self._reap()
        self.state["stopped_at"] = time.time()
        left = [p for p in _state_procs(self.state) if _proc_alive(p)]
        if purge and not left:
            _remove_tree(self.host_dir)
        elif self.host_dir.exists():
            self._write_state()
        if left:
            raise SandboxError(f"processes survived down: {[p['pid'] for p in left]}")

    def _stop_procs(
        self, procs: list[dict[str, Any]], grace: float, first_signal: signal.Signals | None = signal.SIGTERM
    ) -> None:
        """Send ``first_signal`` (if any), wait ``grace``; SIGKILL what is left (only if signalled)."""
        live = [p for p in procs if _proc_alive(p)]
        if first_signal is not None:
            for p in live:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(p["pid"]), first_signal)
        end = time.monotonic() + grace
        while live and time.monotonic() < end:
            self._reap()
            live = [p for p in live if _proc_alive(p)]
            if live:
                time.sleep(0.05)
        if first_signal is None:
            return
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(p["pid"]), signal.SIGKILL)
        end = time.monotonic() + 5.0
        while live and time.monotonic() < end:
            self._reap()
            live = [p for p in live if _proc_alive(p)]
            if live:
                time.sleep(0.02)

    def _reap(self) -> None:
        """Collect exit statuses of our own children, so their pids do not linger as zombies."""
        for pid, popen in list(self._children.items()):
            if popen.poll() is not None:
                del self._children[pid]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down(purge=self.ephemeral)


def _read_state(host_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((host_dir / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def _live_ports(root: Path) -> set[int]:
    """Ports of the other sandboxes running from this root, so a new one does not pick them."""
    ports: set[int] = set()
    for state_path in root.glob("opt/ast-*/state.json"):
        state = _read_state(state_path.parent)
        with contextlib.suppress(KeyError, TypeError):
            if state and any(_proc_alive(p) for p in _state_procs(state)):
                ports |= _ports_of(state)
    return ports


def _plan_instance(
    root: Path,
    instance: str,
    bind: str,
    agents: int,
    customers: int,
    settings: dict[str, Any],
    *,
    answermodes: dict[str, str],
    config_dir: Path,
) -> dict[str, Any]:
    """Pick ports, generate secrets, render the config and the phones' config: the initial state."""
    ast_dir, host_dir = _instance_paths(root, instance)
    picker = _PortPicker(bind, _live_ports(root))
    try:
        ami_port, sip_port, http_port = picker.port(), picker.port(tcp=False, udp=True), picker.port()
        rtp_start = picker.udp_block(AST_RTP_PORTS + PHONE_RTP_PORTS * (agents + customers))
        rtp_end = rtp_start + AST_RTP_PORTS - 1
        values = render_config(
            config_dir,
            host_dir / "etc",
            {
                "AST_DIR": ast_dir,
                "AMI_BIND": bind,
                "SIP_BIND": bind,
                "HTTP_BIND": bind,
                "AMI_PORT": str(ami_port),
                "SIP_PORT": str(sip_port),
                "HTTP_PORT": str(http_port),
                "RTP_START": str(rtp_start),
                "RTP_END": str(rtp_end),
                "AMI_USER": "cti",
                "AMI_SECRET": secrets.token_hex(12),
                "AMI_RAW_USER": "cti-raw",
                "AMI_RAW_SECRET": secrets.token_hex(12),
                "WRAPUP_SECONDS": str(settings["wrapup_seconds"]),
                "QUEUE_RING_TIMEOUT": str(settings["queue_ring_timeout"]),
                "QUEUE_MAX_WAIT": str(settings["queue_max_wait"]),
                "OPEN_HOURS": settings["open_hours"],
                "OPEN_DAYS": settings["open_days"],
            },
        )
        endpoints = {
            name: _endpoint_info(name, opts, values.get(f"SECRET_{name}"))
            for name, opts in parse_pjsip_endpoints((host_dir / "etc/pjsip.conf").read_text()).items()
        }
        phones = _plan_phones(endpoints, agents, customers, picker, rtp_end + 1, ast_dir, bind, answermodes)
    finally:
        picker.release()
    _write_phone_dirs(root, phones, endpoints, bind, sip_port)
    return {
        "version": STATE_VERSION,
        "instance": instance,
        "root": str(root),
        "ast_dir": ast_dir,
        "host_dir": str(host_dir),
        "state_path": str(host_dir / "state.json"),
        "bind": bind,
        "started_at": time.time(),
        "ami": {
            "host": bind,
            "port": ami_port,
            "user": values["AMI_USER"],
            "secret": values["AMI_SECRET"],
            "raw_user": values["AMI_RAW_USER"],
            "raw_secret": values["AMI_RAW_SECRET"],
        },
        "sip": {"host": bind, "port": sip_port, "transport": "udp"},
        "http": {"host": bind, "port": http_port, "ws_url": f"ws://{bind}:{http_port}/ws"},
        "rtp": {"start": rtp_start, "end": rtp_end},
        "endpoints": endpoints,
        "phones": phones,
        "queues": list(QUEUES),
        "dids": dict(DIDS),
        "recordings_dir": str(host_dir / "spool/monitor"),
        "recordings_dir_chroot": f"{ast_dir}/spool/monitor",
        "asterisk": None,
        "settings": settings,
    }


def _prepare_instance_dir(host_dir: Path) -> None:
    """Fresh etc/run/log/phones for a new start; old recordings (spool) are kept."""
    for sub in ("etc", "run", "log", "ua", "media", "moh", "lib", "db", "cache", "agi"):
        _remove_tree(host_dir / sub)
    for sub in ("etc", "run", "log", "ua", "media", "moh", "lib/keys", "db", "cache", "agi", "spool/monitor"):
        (host_dir / sub).mkdir(parents=True, exist_ok=True)


def _plan_phones(
    endpoints: dict[str, dict[str, Any]],
    agents: int,
    customers: int,
    picker: _PortPicker,
    rtp_base: int,
    ast_dir: str,
    bind: str,
    answermodes: dict[str, str],
) -> dict[str, dict[str, Any]]:
    """Pick the endpoints that get a baresip phone, assign ports and write each phone's config dir."""
    chosen: list[str] = []
    for kind, count in (("agent", agents), ("customer", customers)):
        names = sorted((n for n, e in endpoints.items() if e["kind"] == kind), key=_natural_key)
        if count > len(names):
            raise SandboxError(f"{count} {kind} phones asked for, pjsip.conf has {len(names)}: {names}")
        chosen += names[:count]
    phones: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(chosen):
        kind = endpoints[name]["kind"]
        ua_dir = f"{ast_dir}/ua/{name}"
        sip_port = picker.port(tcp=True, udp=True, tcp_next=True)
        rtp_start = rtp_base + i * PHONE_RTP_PORTS
        phones[name] = {
            "endpoint": name,
            "kind": kind,
            "answermode": answermodes[kind],
            "sip_port": sip_port,
            "ctrl_host": bind,
            "ctrl_port": picker.port(),
            "rtp_start": rtp_start,
            "rtp_end": rtp_start + PHONE_RTP_PORTS - 1,
            "uri": f"sip:{name}@{bind}:{sip_port}",
            "ua_dir_chroot": ua_dir,
            "media_chroot": f"{ast_dir}/media/{name}.wav",
            "pid": None,
            "starttime": None,
        }
    return phones


def _write_phone_dirs(
    root: Path, phones: dict[str, dict[str, Any]], endpoints: dict[str, dict[str, Any]], sip_host: str, sip_port: int
) -> None:
    """baresip ``config`` and ``accounts`` per phone; records the host paths a test may want."""
    for name, ph in phones.items():
        ua_dir = root / ph["ua_dir_chroot"].lstrip("/")
        (ua_dir / "no-sounds").mkdir(parents=True, exist_ok=True)
        (ua_dir / "config").write_text(
            BARESIP_CONFIG.format(
                name=name,
                bind=ph["ctrl_host"],
                sip_port=ph["sip_port"],
                ua_dir=ph["ua_dir_chroot"],
                media=ph["media_chroot"],
                rtp_start=ph["rtp_start"],
                rtp_end=ph["rtp_end"],
                ctrl_port=ph["ctrl_port"],
            )
        )
        (ua_dir / "accounts").write_text(
            BARESIP_ACCOUNT.format(
                user=name,
                sip_host=sip_host,
                sip_port=sip_port,
                secret=endpoints[name]["secret"],
                answermode=ph["answermode"],
            )
        )
        ph["log"] = str(ua_dir / "baresip.log")
        ph["media"] = str(root / ph["media_chroot"].lstrip("/"))
        ph["rx_wav"] = str(ua_dir / "rx.wav")


def _natural_key(name: str) -> tuple[str, int]:
    m = re.match(r"(\D*)(\d*)", name)
    assert m is not None
    return m.group(1), int(m.group(2) or 0)


def _tail(path: str, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return ""


def _run_coroutine_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even if the caller already runs an event loop
    (a sync pytest fixture inside pytest-asyncio does): it gets its own loop in a helper thread."""
    result: list[T] = []
    error: list[BaseException] = []

    def runner() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=runner, name="asterisk-sandbox-wait")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# ------------------------------------------------------------------------------------ AMI client
class AmiClient:
    """Small asyncio AMI client for tests, benchmarks and the sandbox's own readiness checks.

    Not the product's client (that is ``cti/ami``): it keeps every message, so tests can wait for
    events that arrived before they started waiting (events may arrive before the Response of the
    action that caused them). Messages are decoded as UTF-8 one whole message at a time.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, banner: str) -> None:
        self.reader = reader
        self.writer = writer
        self.banner = banner
        self.events: list[dict[str, str]] = []
        self.event_bytes = 0
        self.closed = asyncio.Event()
        self._responses: dict[str, asyncio.Future[dict[str, str]]] = {}
        self._lists: dict[str, list[dict[str, str]]] = {}
        self._waiters: list[tuple[Callable[[dict[str, str]], bool], asyncio.Future[dict[str, str]]]] = []
        self._ids = itertools.count(1)
        self._prefix = f"sb{os.getpid()}-{id(self):x}"
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, host: str, port: int, user: str, secret: str, *, events: str = "on", timeout: float = 10.0
    ) -> AmiClient:
        """Open, read the banner, log in. Raises SandboxError on a missing banner or a failed login
        (a dying Asterisk may accept a connection and close it without a banner)."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            banner = (await asyncio.wait_for(reader.readline(), timeout)).decode("utf-8", "replace").strip()
        except (TimeoutError, OSError):
            banner = ""
        if not banner.startswith("Asterisk Call Manager"):
            writer.close()
            raise SandboxError(f"no AMI banner from {host}:{port}")
        client = cls(reader, writer, banner)
        client._task = asyncio.create_task(client._read_loop())
        resp = await client.action("Login", {"Username": user, "Secret": secret, "Events": events}, timeout=timeout)
        if resp.get("Response") != "Success":
            await client.close()
            raise SandboxError(f"AMI login as {user} failed: {resp.get('Message')}")
        return client

    async def _read_loop(self) -> None:
        buf = b""
        try:
            while chunk := await self.reader.read(65536):
                buf += chunk
                while (end := buf.find(b"\r\n\r\n")) >= 0:
                    raw, buf = buf[: end + 4], buf[end + 4 :]
                    self._dispatch(_parse_ami_message(raw), len(raw))
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for fut in [*self._responses.values(), *(f for _, f in self._waiters)]:
                if not fut.done():
                    fut.set_exception(ConnectionError("AMI connection closed"))

    def _dispatch(self, msg: dict[str, str], size: int) -> None:
        action_id = msg.get("ActionID", "")
        if "Response" in msg:
            fut = self._responses.pop(action_id, None)
            if fut and not fut.done():
                fut.set_result(msg)
            return
        if "Event" not in msg:
            return
        if action_id in self._lists:
            self._lists[action_id].append(msg)
        self.events.append(msg)
        self.event_bytes += size
        for pred, fut in self._waiters:
            if not fut.done() and pred(msg):
                fut.set_result(msg)

    def mark(self) -> int:
        """Index of the next event; pass as ``since`` to wait only for later events."""
        return len(self.events)

    async def action(
        self,
        name: str,
        fields: dict[str, str] | None = None,
        *,
        variables: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> dict[str, str]:
        """Send one action and return its Response message."""
        fields = {**(fields or {}), "ActionID": f"{self._prefix}-{next(self._ids)}"}
        return await self._send(name, fields, variables, timeout)

    async def action_list(
        self, name: str, fields: dict[str, str] | None = None, *, timeout: float = 10.0
    ) -> list[dict[str, str]]:
        """An action answered by an event list (PJSIPShowContacts, QueueStatus, CoreShowChannels...):
        returns the list's events, without the final ``EventList: Complete`` one."""
        action_id = f"{self._prefix}-{next(self._ids)}"
        collected: list[dict[str, str]] = []
        self._lists[action_id] = collected
        try:
            fields = {**(fields or {}), "ActionID": action_id}
            done = asyncio.ensure_future(
                self.wait_for_event(
                    predicate=lambda m: m.get("ActionID") == action_id and m.get("EventList") == "Complete",
                    since=self.mark(),
                    timeout=timeout,
                )
            )
            resp = await self._send(name, fields, None, timeout)
            if resp.get("Response") != "Success":
                done.cancel()
                if "found" in resp.get("Message", "").lower():  # e.g. "No Contacts found"
                    return []
                raise SandboxError(f"{name} failed: {resp.get('Message')}")
            await done
            return [m for m in collected if m.get("EventList") != "Complete"]
        finally:
            self._lists.pop(action_id, None)

    async def _send(
        self, name: str, fields: dict[str, str], variables: dict[str, str] | None, timeout: float
    ) -> dict[str, str]:
        action_id = fields["ActionID"]
        lines = [f"Action: {name}", *(f"{k}: {v}" for k, v in fields.items())]
        lines += [f"Variable: {k}={v}" for k, v in (variables or {}).items()]
        fut: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._responses[action_id] = fut
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._responses.pop(action_id, None)

    async def wait_for_event(
        self,
        name: str | None = None,
        *,
        timeout: float = 10.0,
        since: int = 0,
        predicate: Callable[[dict[str, str]], bool] | None = None,
        **match: str,
    ) -> dict[str, str]:
        """First event (index >= ``since``) named ``name`` whose headers equal ``match`` and that
        satisfies ``predicate``. Raises TimeoutError."""

        def pred(m: dict[str, str]) -> bool:
            return (
                (name is None or m.get("Event") == name)
                and all(m.get(k) == v for k, v in match.items())
                and (predicate is None or predicate(m))
            )

        for msg in self.events[since:]:
            if pred(msg):
                return msg
        fut: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        entry = (pred, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TimeoutError(f"no AMI event {name or ''} {match} within {timeout} s") from None
        finally:
            self._waiters.remove(entry)

    def find(self, name: str, *, since: int = 0, **match: str) -> list[dict[str, str]]:
        """Events already received named ``name`` with headers equal to ``match``."""
        return [
            m for m in self.events[since:] if m.get("Event") == name and all(m.get(k) == v for k, v in match.items())
        ]

    async def close(self) -> None:
        if not self.closed.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.action("Logoff"), 2)
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _parse_ami_message(raw: bytes) -> dict[str, str]:
    """``Key: value`` lines of one message; the first occurrence of a repeated key wins."""
    msg: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep and key not in msg:
            msg[key.strip()] = value.strip()
    return msg


# ------------------------------------------------------------------------------- baresip client
class BaresipPhone:
    """asyncio client for baresip's ctrl_tcp: netstring-framed JSON both ways.

    Command ``{"command": "dial", "params": "sip:...", "token": "t1"}``; reply
    ``{"response": true, "ok": true, "data": "...", "token": "t1"}``; events
    ``{"event": true, "type": "CALL_INCOMING", "class": "call", "peeruri": ..., "id": ...}``.
    With answermode=auto baresip 1.1.0 reports only CALL_ESTABLISHED (no CALL_INCOMING).
    """

    def __init__(self, name: str, host: str, port: int, *, sip_domain: str) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.sip_domain = sip_domain
        self.events: list[dict[str, Any]] = []
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        self._tokens = itertools.count(1)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self, timeout: float = 10.0) -> Self:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        self._task = asyncio.create_task(self._read_loop())
        return self

    async def _read_loop(self) -> None:
        assert self._reader is not None
        buf = b""
        try:
            while chunk := await self._reader.read(65536):
                buf += chunk
                while (colon := buf.find(b":")) >= 0:
                    size = int(buf[:colon])
                    if len(buf) < colon + 1 + size + 1:
                        break
                    payload, buf = buf[colon + 1 : colon + 1 + size], buf[colon + 2 + size :]
                    with contextlib.suppress(ValueError):
                        self._dispatch(json.loads(payload.decode("utf-8", "replace")))
        except (ConnectionError, OSError):
            pass
        finally:
            for fut in [*self._pending.values(), *(f for _, f in self._waiters)]:
                if not fut.done():
                    fut.set_exception(ConnectionError(f"ctrl_tcp of {self.name} closed"))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("response"):
            fut = self._pending.pop(str(msg.get("token")), None)
            if fut and not fut.done():
                fut.set_result(msg)
            return
        self.events.append(msg)
        for pred, fut in self._waiters:
            if not fut.done() and pred(msg):
                fut.set_result(msg)

    def mark(self) -> int:
        """Index of the next event; pass as ``since`` to wait only for later events."""
        return len(self.events)

    async def command(self, command: str, params: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Run a menu command (``help`` lists them); returns the reply, raises if it is not ok."""
        if self._writer is None:
            raise SandboxError(f"phone {self.name} not connected")
        token = f"{self.name}-{next(self._tokens)}"
        obj: dict[str, str] = {"command": command, "token": token}
        if params is not None:
            obj["params"] = params
        data = json.dumps(obj).encode()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[token] = fut
        self._writer.write(str(len(data)).encode() + b":" + data + b",")
        await self._writer.drain()
        try:
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(token, None)
        if not reply.get("ok", False):
            raise SandboxError(f"{self.name}: {command} {params or ''} failed: {reply.get('data')}")
        return reply

    async def dial(self, target: str) -> dict[str, Any]:
        """Dial a number (through this sandbox's Asterisk) or a full ``sip:`` URI."""
        uri = target if target.startswith("sip:") else f"sip:{target}@{self.sip_domain}"
        return await self.command("dial", uri)

    async def accept(self) -> dict[str, Any]:
        return await self.command("accept")

    async def hangup(self) -> dict[str, Any]:
        return await self.command("hangup")

    async def send_dtmf(self, digits: str) -> None:
        """RFC 4733 DTMF into the current call, one digit at a time. ``sndcode`` (like ``transfer``)
        belongs to baresip 1.1.0's in-call menu: it works during a call although ``help`` omits it."""
        for digit in digits:
            await self.command("sndcode", digit)
            await asyncio.sleep(0.15)

    async def wait_for_event(
        self,
        types: str | Iterable[str],
        *,
        timeout: float = 10.0,
        since: int = 0,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """First event (index >= ``since``) whose type is in ``types``. Raises TimeoutError."""
        wanted = {types} if isinstance(types, str) else set(types)

        def pred(m: dict[str, Any]) -> bool:
            return m.get("type") in wanted and (predicate is None or predicate(m))

        for msg in self.events[since:]:
            if pred(msg):
                return msg
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = (pred, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no {sorted(wanted)} within {timeout} s") from None
        finally:
            self._waiters.remove(entry)

    async def close(self) -> None:
        if self._writer:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def __aenter__(self) -> Self:
        return await self.connect() if self._writer is None else self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def gather_closing(*clients: AmiClient | BaresipPhone) -> None:
    """Close several clients, ignoring errors (for ``finally`` blocks)."""
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# ------------------------------------------------------------------------------------------- CLI
def _cli_root(args: argparse.Namespace) -> Path:
    return Path(args.root).resolve() if args.root else default_root()


def _cmd_build(args: argparse.Namespace) -> int:
    root = build(_cli_root(args), force=args.force)
    print(json.dumps({"root": str(root), "recipe": recipe_id()}))
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    sb = Sandbox.up(
        agents=args.agents,
        customers=args.customers,
        instance=args.instance,
        bind=args.bind,
        root=_cli_root(args),
        wrapup_seconds=args.wrapup,
        queue_max_wait=args.queue_max_wait,
        die_with_parent=False,
        timeout=args.timeout,
    )
    if args.state_out:
        _write_json_atomic(Path(args.state_out), sb.state)
    print(json.dumps(sb.state, indent=2))
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    sb = Sandbox.attach(args.instance, _cli_root(args))
    sb.down(timeout=args.timeout, purge=args.purge)
    print(json.dumps({"instance": sb.instance, "stopped": True, "purged": args.purge}))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        sb = Sandbox.attach(args.instance, _cli_root(args))
    except SandboxError:
        print(json.dumps({"instance": args.instance, "running": False, "built": is_built(_cli_root(args))}))
        return 1
    print(json.dumps({**sb.status(), "built": is_built(sb.root)}, indent=2))
    return 0 if sb.is_running() else 1


def _cmd_cli(args: argparse.Namespace) -> int:
    sb = Sandbox.attach(args.instance, _cli_root(args))
    sys.stdout.write(sb.cli(" ".join(args.command)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asterisk-sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="chroot location (default $CTI_SANDBOX_ROOT or ~/.cache/member-cti/...)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("build", help="debootstrap the sid root once (cached, stamped)")
    p.add_argument("--force", action="store_true", help="rebuild even if the stamp matches")
    p.set_defaults(func=_cmd_build)
    p = sub.add_parser("up", help="start Asterisk and phones; prints the state JSON")
    p.add_argument("--instance", default="dev")
    p.add_argument("--agents", type=int, default=2)
    p.add_argument("--customers", type=int, default=2)
    p.add_argument("--bind", default="127.0.0.1", help="listen address (a veth address inside a netns)")
    p.add_argument("--wrapup", type=int, default=5, help="queue wrapuptime in seconds")
    p.add_argument("--queue-max-wait", type=int, default=60)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--state-out", help="also write the state JSON to this path")
    p.set_defaults(func=_cmd_up)
    for name, func, hlp in (
        ("down", _cmd_down, "stop what up started"),
        ("status", _cmd_status, "print liveness and ports as JSON"),
    ):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("--instance", default="dev")
        p.add_argument("--timeout", type=float, default=10.0)
        if name == "down":
            p.add_argument("--purge", action="store_true", help="also delete the instance dir (logs, recordings)")
        p.set_defaults(func=func)
    p = sub.add_parser("cli", help="run an Asterisk CLI command (asterisk -rx)")
    p.add_argument("--instance", default="dev")
    p.add_argument("command", nargs="+")
    p.set_defaults(func=_cmd_cli)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SandboxError as exc:
        _log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
