"""``python -m bench --perfil``: where a handler's time goes under load, sampled by py-spy.

A real server (fork) on a generated ledger, N real ATM processes
depositing in a closed loop, and ``py-spy record --subprocesses --idle``
on the server: wall-clock samples of the acceptor and every handler,
including time blocked in ``flock``, ``fdatasync``, ``select`` and
``recv``. Each sample is put in one bucket by the deepest frame that a
rule below recognises (a frame of the server's own code, or the source
line it was on), so the buckets add up to 100 % of the handlers' time.

Writes ``profile.txt`` (the collapsed stacks: open them in
https://www.speedscope.app or flamegraph.pl) and ``profile.json`` and
``profile.md`` (the buckets) beside the other results. Needs py-spy
(``pip install py-spy``) and permission to ptrace the server (root, or
``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

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

from bench import atm_load
from bench.atm_load import BenchServer

ROOT = Path(__file__).resolve().parents[1]

# (file suffix, function name or "*", bucket); the deepest matching frame of a stack decides.
RULES: list[tuple[str, str, str]] = [
    ("bank_server/handler.py", "handler_main", "arranque/cierre del manejador"),
    ("bank_server/handler.py", "serve_connection", "bucle del manejador (resto)"),
    ("common/connection.py", "receive_data", "canal: verificar HMAC + descifrar AES (petición)"),
    ("common/connection.py", "send_message", "canal: cifrar AES + HMAC (respuesta)"),
    ("common/connection.py", "data_to_send", "canal: armar tramas"),
    ("common/connection.py", "_on_hello", "saludo: HKDF + prueba"),
    ("bank_server/conversation.py", "handle", "sesión: resto de handle()"),
    ("common/messages.py", "decode_object", "JSON: decodificar y validar la petición"),
    ("common/messages.py", "request_op", "JSON: decodificar y validar la petición"),
    ("common/messages.py", "parse_request", "JSON: decodificar y validar la petición"),
    ("common/messages.py", "encode", "JSON: codificar la respuesta"),
    ("common/messages.py", "ok_response", "sesión: resto de handle()"),
    ("bank_server/conversation.py", "_log", "logging: una línea por petición (consola + banco.log)"),
    ("bank_server/conversation.py", "_movement", "transacción: resto de _movement()"),
    ("bank_server/conversation.py", "now_iso", "transacción: fecha (now_iso)"),
    ("bank_server/conversation.py", "_identificar", "IDENTIFICAR (scrypt)"),
    ("bank_server/pins.py", "*", "IDENTIFICAR (scrypt)"),
    ("bank_server/store.py", "locked", "transacción: resto de locked()"),
    ("bank_server/store.py", "__enter__", "candado del libro: esperar y tomar flock"),
    ("bank_server/store.py", "__exit__", "candado del libro: soltar"),
    ("bank_server/store.py", "_own_journal", "transacción: resto de locked()"),
    ("bank_server/journal.py", "same_file_on_disk", "diario: stat (¿mismo archivo?)"),
    ("bank_server/store.py", "_catch_up", "diario: ponerse al día (leer + decodificar registros ajenos)"),
    ("bank_server/store.py", "refresh", "diario: ponerse al día (leer + decodificar registros ajenos)"),
    ("bank_server/journal.py", "read_new", "diario: ponerse al día (leer + decodificar registros ajenos)"),
    ("bank_server/journal.py", "decode_record", "diario: ponerse al día (leer + decodificar registros ajenos)"),
    ("bank_server/rules.py", "*", "transacción: reglas (decidir)"),
    ("bank_server/store.py", "commit", "transacción: resto de commit()"),
    ("bank_server/journal.py", "append", "diario: os.write del registro"),
    ("bank_server/journal.py", "encode", "diario: codificar registro (JSON + CRC)"),
    ("bank_server/journal.py", "_sync", "diario: fdatasync"),
    ("bank_server/state.py", "*", "transacción: aplicar al estado en memoria"),
    ("logging/__init__.py", "*", "logging: una línea por petición (consola + banco.log)"),
    ("concurrent_log_handler", "*", "logging: una línea por petición (consola + banco.log)"),
    ("bank_server/journal.py", "write", "diario: os.write del registro"),
    ("bank_server/group_commit.py", "make_durable", "commit en grupo: esperar la sincronización del líder"),
    ("bank_server/journal.py", "sync_fd", "fdatasync propio (como líder del commit en grupo)"),
]
# For a leaf frame in the handler loop, the source line says what it was blocked in.
LINE_RULES: list[tuple[str, str]] = [
    ("select.select", "esperando la siguiente petición del cajero (select)"),
    (".recv(", "red: recv"),
    ("_send(", "red: sendall"),
    ("sendall", "red: sendall"),
]

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+):(?P<line>\d+)\)$")


def _frames(stack: str) -> tuple[str, list[tuple[str, str, int]]]:
    parts = stack.split(";")
    process = ""  # the innermost "process PID:..." frame: a handler sits below the acceptor's
    frames = []
    for part in parts:
        if part.startswith("process "):
            process = part
            continue
        match = FRAME.match(part.strip())
        if match:
            frames.append((match["func"], match["file"], int(match["line"])))
    return process, frames


def bucket(frames: list[tuple[str, str, int]]) -> str:
    label = "otro (fuera del código del servidor)"
    for func, file, _line in frames:  # root to leaf: the deepest frame that a rule knows wins
        named = wildcard = None
        for suffix, name, what in RULES:
            if not (file.endswith(suffix) or (suffix in file and "/" not in suffix)):
                continue
            if name == "*":
                wildcard = wildcard or what
            elif named is None and (func == name or func.endswith("." + name)):
                named = what  # a rule naming the function beats a rule for the whole file
        label = named or wildcard or label
    if frames:
        func, file, line = frames[-1]
        if file.endswith("bank_server/handler.py"):
            text = _source_line(file, line)
            for needle, what in LINE_RULES:
                if needle in text:
                    return what
    return label


def _source_line(file: str, line: int) -> str:
    path = Path(file) if Path(file).is_absolute() else ROOT / file
    return linecache.getline(str(path), line)


def inside_ledger_lock(raw: Path) -> dict[str, Any]:
    """What the lock holder does while it holds the ledger lock: the serial section of every transaction.

    In-lock stacks: ``Store.locked`` past ``LedgerLock.__enter__`` (the catch-up, the journal
    check) and, while the generator is suspended at ``yield``, ``Session._movement`` deciding,
    dating and committing.
    """
    buckets: Counter[str] = Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        if "Store.locked (" in stack:
            if any(x in stack for x in ("LedgerLock.__enter__", "LedgerLock.__exit__", "wait_durable")):
                continue
            what = (
                "ponerse al día: leer, decodificar y aplicar registros ajenos"
                if "_catch_up" in stack
                else ("locked(): stat del diario y resto")
            )
        elif "Session._movement" in stack and "decide_movement" in stack:
            what = "decidir (reglas)"
        elif "Session._movement" in stack and "Store.commit" in stack:
            what = "commit: codificar + os.write + aplicar"
        elif "Session._movement" in stack and "now_iso" in stack:
            what = "fecha (now_iso)"
        else:
            continue
        buckets[what] += int(count_text)
    total = sum(buckets.values())
    return {
        "samples": total,
        "pct": {k: round(100 * v / total, 1) for k, v in buckets.most_common()} if total else {},
    }


def analyse(raw: Path, server_pid: int) -> dict[str, Any]:
    handler_buckets: Counter[str] = Counter()
    acceptor_buckets: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    handler_processes: set[str] = set()
    total_handler = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        process, frames = _frames(stack)
        pid_match = re.search(r"process (\d+)", process)
        pid = int(pid_match.group(1)) if pid_match else -1
        what = bucket(frames)
        if pid == server_pid:
            acceptor_buckets[what if what != "otro (fuera del código del servidor)" else _leaf_name(frames)] += count
            continue
        handler_processes.add(str(pid))
        handler_buckets[what] += count
        total_handler += count
        if frames:
            leaf[_leaf_name(frames)] += count
    waiting = sum(c for b, c in handler_buckets.items() if b.startswith("esperando"))
    busy = total_handler - waiting

    def table(counter: Counter[str], total: int, busy_total: int | None = None) -> list[dict[str, Any]]:
        rows = []
        for name, count in counter.most_common():
            entry = {"bucket": name, "samples": count, "pct_total": round(100 * count / total, 1) if total else 0}
            if busy_total:
                entry["pct_busy"] = None if name.startswith("esperando") else round(100 * count / busy_total, 1)
            rows.append(entry)
        return rows

    return {
        "handler_processes": len(handler_processes),
        "handler_samples": total_handler,
        "handler_busy_samples": busy,
        "handlers": table(handler_buckets, total_handler, busy),
        "acceptor": table(acceptor_buckets, sum(acceptor_buckets.values())),
        "top_leaf_functions": table(Counter(dict(leaf.most_common(25))), total_handler),
        "inside_ledger_lock": inside_ledger_lock(raw),
    }


def _leaf_name(frames: list[tuple[str, str, int]]) -> str:
    if not frames:
        return "?"
    func, file, line = frames[-1]
    short = "/".join(Path(file).parts[-2:])
    return f"{func} ({short}:{line})"


def _markdown_table(analysis: dict[str, Any], title: str, busy_note: str) -> list[str]:
    lines = [
        f"### {title}",
        "",
        f"Manejadores muestreados: {analysis['handler_processes']}; muestras {analysis['handler_samples']:,}, "
        f"de ellas sin contar la espera de la siguiente petición: {analysis['handler_busy_samples']:,}.",
        "",
        f"| manejadores | % del total | {busy_note} |",
        "|---|---:|---:|",
    ]
    for row in analysis["handlers"]:
        busy = "-" if row.get("pct_busy") is None else f"{row['pct_busy']}"
        lines.append(f"| {row['bucket']} | {row['pct_total']} | {busy} |")
    held = analysis.get("inside_ledger_lock") or {}
    if held.get("samples"):
        lines += ["", f"Con el candado del libro tomado (la sección en serie; {held['samples']:,} muestras):", ""]
        lines += ["| dentro del candado | % |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in held["pct"].items()]
    lines += ["", "Funciones hoja más frecuentes:", "", "| función | % del total |", "|---|---:|"]
    for row in analysis["top_leaf_functions"][:12]:
        lines.append(f"| `{row['bucket']}` | {row['pct_total']} |")
    lines += ["", "Aceptador:", "", "| | % |", "|---|---:|"]
    for row in analysis["acceptor"][:6]:
        lines.append(f"| {row['bucket']} | {row['pct_total']} |")
    return [*lines, ""]


def write_markdown(result: dict[str, Any], path: Path) -> None:
    load = result["load"]
    lines = [
        f"# Perfil de los manejadores: {result['atms']} cajeros, {result['accounts']:,} cuentas",
        "",
        f"py-spy {result['seconds']} s de tiempo de reloj (`--idle`) y luego {result['seconds']} s de CPU (sin "
        f"`--idle`), {result['rate']} muestras/s, `--subprocesses --nonblocking`, sobre el servidor en marcha.",
        f"Carga durante el perfil: {load['tx_per_s']} tx/s, p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, "
        f"{load['server_cpu_ms_per_tx']} ms de CPU del servidor por tx (py-spy le quita CPU al servidor).",
        f"Commit {result['commit'][:12]}; {result['machine']}.",
        "",
    ]
    if "wall" in result:
        lines += _markdown_table(result["wall"], "Tiempo de reloj (incluye esperas: candado, fsync, red)", "% ocupado")
    if "cpu" in result:
        lines += _markdown_table(result["cpu"], "Tiempo de CPU (solo muestras en CPU)", "% de la CPU")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(args: Any) -> int:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy no está instalado: pip install py-spy")
        return 2
    accounts = (args.cuentas or [10_000])[0]
    atms = (args.cajeros or [16])[0]
    seconds = int(args.segundos)
    rate = 100
    out_dir: Path = args.salida
    out_dir.mkdir(parents=True, exist_ok=True)
    raws = {"wall": out_dir / "profile-wall.txt", "cpu": out_dir / "profile-cpu.txt"}
    tmp = Path(tempfile.mkdtemp(prefix="cajero-perfil-"))
    folder = tmp / "banco"
    folder.mkdir()
    server = BenchServer(folder)
    errors: list[str] = []
    worker: threading.Thread | None = None
    try:
        atm_load.write_bench_ledger(folder, accounts)
        server.start()
        server_pid = server.pid
        print(f"Servidor con {accounts:,} cuentas (pid {server_pid}); {atms} cajeros; py-spy 2 × {seconds} s")

        def record_both() -> None:
            for kind, raw in raws.items():
                command = [
                    pyspy, "record", "--pid", str(server_pid), "--subprocesses", "--nonblocking",
                    "--rate", str(rate), "--duration", str(seconds), "--format", "raw", "-o", str(raw),
                    *(["--idle"] if kind == "wall" else []),
                ]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
                if done.returncode != 0:
                    errors.append(f"py-spy ({kind}) falló: {done.stderr[-800:]}")

        def start() -> None:
            nonlocal worker
            worker = threading.Thread(target=record_both, daemon=True)
            worker.start()

        load = atm_load.run_load(
            server, atms, atm_load.cards_for(atms, accounts), 2.0, 2 * seconds + 4.0, on_window=start
        )
        load.pop("ok_by_card")
        if worker is not None:
            worker.join(seconds + 150)
        server.stop()
    finally:
        server.kill()
        atm_load.remove_tree(tmp)
    for error in errors:
        print(error)
    from bench.run import code_info, machine_info

    machine = machine_info(Path(tempfile.gettempdir()))
    result: dict[str, Any] = {
        "atms": atms,
        "accounts": accounts,
        "seconds": seconds,
        "rate": rate,
        "commit": code_info()["commit"],
        "machine": f"{machine['cpus']} núcleos {machine['cpu_model']}",
        "load": {k: load[k] for k in ("tx_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_tx", "errors")},
    }
    for kind, raw in raws.items():
        if raw.exists():
            result[kind] = analyse(raw, server_pid)
    (out_dir / "profile.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_markdown(result, out_dir / "profile.md")
    print((out_dir / "profile.md").read_text(encoding="utf-8"))
    print(f"Pilas completas: {', '.join(map(str, raws.values()))} (speedscope.app o flamegraph.pl)")
    return 0 if not errors else 1
