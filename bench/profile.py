"""``python -m bench --perfil``: where a handler's time goes under load, sampled by py-spy.

A real server (fork) on a generated ledger, N independent ATMs depositing in a closed loop, and
``py-spy record --subprocesses`` on the server: wall-clock samples first (``--idle``: blocked in
``flock``, ``fdatasync``, ``select``, ``recv`` counts), then CPU samples. Each sample goes in one
bucket, chosen by the deepest frame a rule below recognises (or, in the handler loop, by its
source line), so the buckets add up to 100 % of the handlers' time. The rules name the server's
functions by file and name; renamed code would empty a bucket silently, so the run first says
which rules no longer match a ``def``. Writes ``profile.md``, ``profile.json`` and the collapsed
stacks ``profile-wall.txt``/``profile-cpu.txt`` (git ignores those). Needs py-spy and ptrace
permission (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import functools
import json
import linecache
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench.bank import BenchBank
from bench.machine import ROOT, code_info, machine_info

OTHER = "otro (fuera del código del servidor)"
LOGGING = "logging: una línea por petición (consola + banco.log)"
CATCH_UP = "diario: ponerse al día (leer + decodificar registros ajenos)"
REQUEST_JSON = "JSON: decodificar y validar la petición"
# (file, function or "*", bucket): the deepest frame with a rule decides; a named function beats "*".
RULES: list[tuple[str, str, str]] = [
    ("bank_server/handler.py", "handler_main", "arranque/cierre del manejador"),
    ("bank_server/handler.py", "serve_connection", "bucle del manejador (resto)"),
    ("common/connection.py", "receive_data", "canal: verificar HMAC + descifrar AES (petición)"),
    ("common/connection.py", "send_message", "canal: cifrar AES + HMAC (respuesta)"),
    ("common/connection.py", "data_to_send", "canal: armar tramas"),
    ("common/connection.py", "_on_hello", "saludo: HKDF + prueba"),
    ("bank_server/conversation.py", "handle", "sesión: resto de handle()"),
    ("bank_server/conversation.py", "_log", LOGGING),
    ("bank_server/conversation.py", "_movement", "transacción: resto de _movement()"),
    ("bank_server/conversation.py", "_identify", "IDENTIFICAR (scrypt)"),
    ("common/messages.py", "decode_object", REQUEST_JSON),
    ("common/messages.py", "request_op", REQUEST_JSON),
    ("common/messages.py", "parse_request", REQUEST_JSON),
    ("common/messages.py", "encode", "JSON: codificar la respuesta"),
    ("common/messages.py", "ok_response", "sesión: resto de handle()"),
    ("bank_server/clock.py", "now_iso", "transacción: fecha (now_iso)"),
    ("bank_server/pins.py", "*", "IDENTIFICAR (scrypt)"),
    ("bank_server/store.py", "locked", "transacción: resto de locked()"),
    ("bank_server/store.py", "_own_journal", "transacción: resto de locked()"),
    ("bank_server/store.py", "__enter__", "candado del libro: esperar y tomar flock"),
    ("bank_server/store.py", "__exit__", "candado del libro: soltar"),
    ("bank_server/store.py", "_catch_up", CATCH_UP),
    ("bank_server/store.py", "refresh", CATCH_UP),
    ("bank_server/store.py", "commit", "transacción: resto de commit()"),
    ("bank_server/journal.py", "same_file_on_disk", "diario: stat (¿mismo archivo?)"),
    ("bank_server/journal.py", "read_new", CATCH_UP),
    ("bank_server/journal.py", "decode_record", CATCH_UP),
    ("bank_server/journal.py", "encode", "diario: codificar registro (JSON + CRC)"),
    ("bank_server/journal.py", "write", "diario: os.write del registro"),
    ("bank_server/journal.py", "sync_fd", "fdatasync propio (como líder del commit en grupo)"),
    ("bank_server/rules.py", "*", "transacción: reglas (decidir)"),
    ("bank_server/state.py", "*", "transacción: aplicar al estado en memoria"),
    ("bank_server/group_commit.py", "make_durable", "commit en grupo: esperar la sincronización del líder"),
    ("logging/__init__.py", "*", LOGGING),
    ("concurrent_log_handler", "*", LOGGING),
]
# For a leaf frame in the handler loop, the source line says what it was blocked in.
LINE_RULES = [
    ("select.select", "esperando la siguiente petición del cajero (select)"),
    (".recv(", "red: recv"),
    ("_send(", "red: sendall"),
    ("sendall", "red: sendall"),
]
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+):(?P<line>\d+)\)$")
Frames = list[tuple[str, str, int]]  # (function, file, line), root first


def stale_rules() -> list[str]:
    """``file:function`` rules that no ``def`` in the server's code matches any more (their bucket would stay empty)."""
    stale = []
    for suffix, name, _what in RULES:
        if suffix.startswith(("bank_server/", "common/")):  # not the standard library or third-party packages
            path = ROOT / suffix
            text = path.read_text(encoding="utf-8") if path.is_file() else ""
            if not text or (name != "*" and f"def {name}(" not in text):
                stale.append(f"{suffix}:{name}")
    return stale


def _stacks(raw: Path) -> list[tuple[int, Frames, int]]:
    """(pid, frames, samples) of each line of py-spy's raw (collapsed) output."""
    out = []
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        pid, frames = -1, []
        for part in stack.split(";"):
            if part.startswith("process "):  # the innermost one: a handler sits below the acceptor
                found = re.search(r"process (\d+)", part)
                pid = int(found.group(1)) if found else -1
            elif match := FRAME.match(part.strip()):
                frames.append((match["func"], match["file"], int(match["line"])))
        out.append((pid, frames, int(count)))
    return out


@functools.cache
def _rule(func: str, file: str) -> str | None:
    name = func.rsplit(".", 1)[-1]
    found = [(n, what) for suffix, n, what in RULES if file.endswith(suffix) or ("/" not in suffix and suffix in file)]
    return next((what for n, what in found if n == name), None) or next((w for n, w in found if n == "*"), None)


def bucket(frames: Frames) -> str:
    label = OTHER
    for func, file, _line in frames:  # root to leaf: the deepest frame a rule knows wins
        label = _rule(func, file) or label
    if frames and frames[-1][1].endswith("bank_server/handler.py"):
        _func, file, line = frames[-1]
        path = Path(file) if Path(file).is_absolute() else ROOT / file
        text = linecache.getline(str(path), line)
        for needle, what in LINE_RULES:
            if needle in text:
                return what
    return label


def _in_lock(frames: Frames) -> str | None:
    """What a stack does if it is inside the ledger lock (the serial section), else None.

    In-lock stacks: ``Store.locked`` past the lock's ``__enter__`` (the catch-up, the journal
    check) and, while that generator is suspended at ``yield``, ``_movement`` deciding, dating
    and committing.
    """
    names = {(func.rsplit(".", 1)[-1], Path(file).name) for func, file, _line in frames}
    if ("locked", "store.py") in names:
        if names & {("__enter__", "store.py"), ("__exit__", "store.py"), ("make_durable", "group_commit.py")}:
            return None
        if ("_catch_up", "store.py") in names:
            return "ponerse al día: leer, decodificar y aplicar registros ajenos"
        return "locked(): stat del diario y resto"
    if any(name == "_movement" for name, _ in names):
        called = {name for name, _ in names}
        steps = {"decide_movement": "decidir (reglas)", "commit": "commit: codificar + os.write + aplicar"}
        return next((what for name, what in (*steps.items(), ("now_iso", "fecha (now_iso)")) if name in called), None)
    return None


def _table(counter: Counter[str], total: int, busy: int | None = None) -> list[dict[str, Any]]:
    rows = []
    for name, count in counter.most_common():
        row: dict[str, Any] = {"bucket": name, "samples": count, "pct_total": round(100 * count / (total or 1), 1)}
        if busy:
            row["pct_busy"] = None if name.startswith("esperando") else round(100 * count / busy, 1)
        rows.append(row)
    return rows


def analyse(raw: Path, server_pid: int) -> dict[str, Any]:
    handlers: Counter[str] = Counter()
    acceptor: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    held: Counter[str] = Counter()
    pids: set[int] = set()
    for pid, frames, count in _stacks(raw):
        what = bucket(frames)
        leaf_name = f"{frames[-1][0]} ({'/'.join(Path(frames[-1][1]).parts[-2:])}:{frames[-1][2]})" if frames else "?"
        if pid == server_pid:
            acceptor[what if what != OTHER else leaf_name] += count
            continue
        pids.add(pid)
        handlers[what] += count
        leaf[leaf_name] += count
        inside = _in_lock(frames)
        if inside:
            held[inside] += count
    total = sum(handlers.values())
    busy = total - sum(c for b, c in handlers.items() if b.startswith("esperando"))
    held_total = sum(held.values())
    return {
        "handler_processes": len(pids),
        "handler_samples": total,
        "handler_busy_samples": busy,
        "handlers": _table(handlers, total, busy),
        "acceptor": _table(acceptor, sum(acceptor.values())),
        "top_leaf_functions": _table(Counter(dict(leaf.most_common(25))), total),
        "inside_ledger_lock": {
            "samples": held_total,
            "pct": {k: round(100 * v / held_total, 1) for k, v in held.most_common()} if held_total else {},
        },
    }


def _markdown_section(analysis: dict[str, Any], title: str, busy_note: str) -> list[str]:
    lines = [
        f"### {title}",
        "",
        f"Manejadores muestreados: {analysis['handler_processes']}; muestras {analysis['handler_samples']:,}, "
        f"de ellas sin contar la espera de la siguiente petición: {analysis['handler_busy_samples']:,}.",
        "",
        f"| manejadores | % del total | {busy_note} |",
        "|---|---:|---:|",
    ]
    lines += [f"| {r['bucket']} | {r['pct_total']} | {'-' if r.get('pct_busy') is None else r['pct_busy']} |"
              for r in analysis["handlers"]]  # fmt: skip
    held = analysis["inside_ledger_lock"]
    if held["samples"]:
        lines += ["", f"Con el candado del libro tomado (la sección en serie; {held['samples']:,} muestras):", ""]
        lines += ["| dentro del candado | % |", "|---|---:|", *(f"| {k} | {v} |" for k, v in held["pct"].items())]
    lines += ["", "Funciones hoja más frecuentes:", "", "| función | % del total |", "|---|---:|"]
    lines += [f"| `{r['bucket']}` | {r['pct_total']} |" for r in analysis["top_leaf_functions"][:12]]
    lines += ["", "Aceptador:", "", "| | % |", "|---|---:|"]
    lines += [f"| {r['bucket']} | {r['pct_total']} |" for r in analysis["acceptor"][:6]]
    return [*lines, ""]


def write_markdown(result: dict[str, Any], path: Path) -> None:
    load, seconds = result["load"], result["seconds"]
    lines = [
        f"# Perfil de los manejadores: {result['atms']} cajeros, {result['accounts']:,} cuentas",
        "",
        f"py-spy {seconds} s de tiempo de reloj (`--idle`) y luego {seconds} s de CPU (sin `--idle`), "
        f"{result['rate']} muestras/s, `--subprocesses --nonblocking`, sobre el servidor en marcha.",
        f"Carga durante el perfil: {load['tx_per_s']} tx/s, p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, "
        f"{load['server_cpu_ms_per_tx']} ms de CPU del servidor por tx (py-spy le quita CPU al servidor).",
        f"Commit {result['commit'][:12]}; {result['machine']}.",
        "",
    ]
    if result["stale_rules"]:
        lines += [f"Aviso: reglas que ya no corresponden a ninguna función: {', '.join(result['stale_rules'])}.", ""]
    sections = {"wall": ("Tiempo de reloj (incluye esperas: candado, fsync, red)", "% ocupado"),
                "cpu": ("Tiempo de CPU (solo muestras en CPU)", "% de la CPU")}  # fmt: skip
    for kind, (title, note) in sections.items():
        if kind in result:
            lines += _markdown_section(result[kind], title, note)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _record(pyspy: str, pid: int, seconds: int, rate: int, raws: dict[str, Path], errors: list[str]) -> None:
    """py-spy on the server and all its processes: wall clock first, then CPU."""
    for kind, raw in raws.items():
        options = ["--subprocesses", "--nonblocking", "--rate", str(rate), "--duration", str(seconds)]
        command = [pyspy, "record", "--pid", str(pid), *options, "--format", "raw", "-o", str(raw)]
        command += ["--idle"] if kind == "wall" else []
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
        if done.returncode != 0:
            errors.append(f"py-spy ({kind}) falló: {done.stderr[-800:]}")


def main(args: Any) -> int:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy no está instalado: pip install py-spy==0.4.3")
        return 2
    accounts, atms, seconds, rate = (args.sizes or [10_000])[0], (args.atms or [16])[0], int(args.seconds), 100
    stale = stale_rules()
    if stale:
        print(f"aviso: reglas del perfil que ya no corresponden a ninguna función: {', '.join(stale)}")
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    raws = {"wall": out_dir / "profile-wall.txt", "cpu": out_dir / "profile-cpu.txt"}
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, BenchBank(Path(tmp) / "banco", accounts, terminals=atms) as bank:
        bank.start()
        assert bank.bank is not None and bank.bank.process is not None
        pid = bank.bank.process.pid
        print(f"Servidor con {accounts:,} cuentas (pid {pid}); {atms} cajeros; py-spy 2 × {seconds} s")
        recorder = threading.Thread(target=_record, args=(pyspy, pid, seconds, rate, raws, errors), daemon=True)
        load = bank.measure(atms, 2.0, 2 * seconds + 4.0, on_start=recorder.start)
        if recorder.ident is not None:
            recorder.join(seconds + 150)
        bank.stop()
    for error in errors:
        print(error)
    machine = machine_info(Path(tempfile.gettempdir()))
    result: dict[str, Any] = {
        "atms": atms, "accounts": accounts, "seconds": seconds, "rate": rate, "commit": code_info()["commit"],
        "machine": f"{machine['cpus']} núcleos {machine['cpu_model']}", "stale_rules": stale,
        "load": {k: load[k] for k in ("tx_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_tx", "errors")},
        **{kind: analyse(raw, pid) for kind, raw in raws.items() if raw.exists()},
    }  # fmt: skip
    (out_dir / "profile.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_markdown(result, out_dir / "profile.md")
    print((out_dir / "profile.md").read_text(encoding="utf-8"))
    print(f"Pilas completas: {', '.join(map(str, raws.values()))} (speedscope.app o flamegraph.pl)")
    return 0 if not errors else 1
