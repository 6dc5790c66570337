"""Python side of the Lambda Microservice worker protocol.

One JSON frame per line: requests on a private dup of fd 0, responses on a
private dup of fd 1. Requests may be pipelined: they are read in chunks and run
one after another; each answer is written before the next request runs, so
a script that kills its worker never takes an earlier answer with it.
Usage: python3 -I -S host.py <max_log_lines> <max_log_bytes> <max_result_bytes>
  {"op":"prepare","script":".."} -> {"ok":true} | {"ok":false,"error":{..}}
  {"op":"check","script":".."} -> {"ok":true,"load":bool} | {"ok":false,"error":{..}}
Every request carries a "seq" number and its answer repeats it.
  {"op":"invoke","params":..,"context":..,"request_id":".."}
    -> {"ok":true,"result":..,"logs":[..]} | {"ok":false,"error":{..},"logs":[..]}
On start the host writes {"ok":true,"ready":true}. fd 1 itself is pointed at
stderr so that nothing the script prints, even from C code, reaches the channel.
"""

import ast
import builtins
import json
import os
import sys
from time import process_time_ns

PROTO = os.dup(1)
os.dup2(2, 1)
PROTO_IN = os.dup(0)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
MAX_LOG_LINES = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
MAX_LOG_BYTES = int(sys.argv[2]) if len(sys.argv) > 2 else 65536
MAX_RESULT_BYTES = int(sys.argv[3]) if len(sys.argv) > 3 else 8 * 1024 * 1024
FILENAME = "<script>"
TRUNCATED = "[output truncated]"
dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
# Built once: json.dumps/json.loads with arguments build a new coder per call.
_encode_frame = json.JSONEncoder(ensure_ascii=False).encode
_decode_frame = json.JSONDecoder().decode


class Capture:
    """sys.stdout/sys.stderr for the script: bounded lines of this invocation."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.lines, self.size, self.partial, self.truncated = [], 0, "", False

    def _push(self, line):
        size = len(line.encode("utf-8", "replace")) + 1
        if len(self.lines) >= MAX_LOG_LINES or self.size + size > MAX_LOG_BYTES:
            self.truncated = True
            self.lines.append(TRUNCATED)
        else:
            self.lines.append(line)
            self.size += size

    def write(self, text):
        if self.truncated:
            return len(text)
        if not isinstance(text, str):
            text = str(text)
        parts = (self.partial + text).split("\n")
        self.partial = parts.pop()
        for p in parts:
            if self.truncated:
                break
            self._push(p)
        if len(self.partial) > MAX_LOG_BYTES and not self.truncated:
            self._push(self.partial)
            self.partial = ""
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    def take(self):
        if self.partial and not self.truncated:
            self._push(self.partial)
        out = self.lines
        self.reset()
        return out


CAPTURE = Capture()
sys.stdout = sys.stderr = CAPTURE


IN = bytearray()


def write_frame(data):
    view = memoryview(data + b"\n")
    while view:
        view = view[os.write(PROTO, view):]


def read_frame():
    """The next request line, or None at EOF."""
    while True:
        end = IN.find(b"\n")
        if end >= 0:
            line = bytes(IN[:end])
            del IN[: end + 1]
            return line
        chunk = os.read(PROTO_IN, 1 << 16)
        if not chunk:
            return None
        IN.extend(chunk)


def frame(obj):
    return _encode_frame(obj).encode("utf-8", "replace")


def script_position(tb):
    """Line and column (1-based; None where unknown) of the innermost
    traceback frame that is in the user's script."""
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == FILENAME:
            found = tb
        tb = tb.tb_next
    if found is None:
        return None, None
    column = None
    # Python 3.11+: each 2-byte code unit has its source position.
    positions = getattr(found.tb_frame.f_code, "co_positions", None)
    if positions is not None and found.tb_lasti >= 0:
        for i, position in enumerate(positions()):
            if i == found.tb_lasti // 2:
                if position[2] is not None:
                    column = position[2] + 1
                break
    return found.tb_lineno, column


def runtime_error(exc):
    import traceback

    error = {"kind": "runtime", "message": f"{type(exc).__name__}: {exc}"}
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != FILENAME:
        tb = tb.tb_next  # hide the host's own frames
    error["stack"] = "".join(traceback.format_exception(type(exc), exc, tb))
    line, column = script_position(tb)
    if line is not None:
        error["line"] = line
    if column is not None:
        error["column"] = column
    return error


class Prepared:
    """The loaded script: compiled code (script form) or a handle function."""

    code = None
    handle = None
    with_context = False
    is_async = False


PREPARED = None


def syntax_error(e):
    error = {"kind": "compile", "message": f"SyntaxError: {e.msg}"}
    if e.lineno is not None:
        error["line"] = e.lineno
    if e.offset is not None:
        error["column"] = e.offset
    return {"ok": False, "error": error}


def check(source):
    """Compiles without running anything: the checker worker, shared by every
    owner, answers initialize with it. `load` says the script runs code when it
    loads (the handler form), which only a worker of its own may do."""
    try:
        tree = compile(source, FILENAME, "exec", ast.PyCF_ONLY_AST)
        compile(tree, FILENAME, "exec")
    except SyntaxError as e:
        return syntax_error(e)
    except (RecursionError, MemoryError, ValueError) as e:
        return {"ok": False, "error": {"kind": "compile", "message": f"{type(e).__name__}: {e}"}}
    load = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "handle" for n in tree.body)
    return {"ok": True, "load": load}


def prepare(source):
    global PREPARED
    import linecache

    linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
    try:
        tree = compile(source, FILENAME, "exec", ast.PyCF_ONLY_AST)
        code = compile(tree, FILENAME, "exec")
    except SyntaxError as e:
        return syntax_error(e)
    prepared = Prepared()
    if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "handle" for n in tree.body):
        scope = {"__name__": "__script__", "__builtins__": builtins}
        try:
            exec(code, scope)
        except BaseException as e:  # noqa: B036 - a script may raise anything, even SystemExit
            error = runtime_error(e)
            error.update(kind="compile", message=f"script failed to load: {error['message']}")
            return {"ok": False, "error": error}
        finally:
            CAPTURE.take()
        prepared.handle = scope["handle"]
        code = getattr(prepared.handle, "__code__", None)
        prepared.with_context = getattr(code, "co_argcount", 1) >= 2
        prepared.is_async = bool(getattr(code, "co_flags", 0) & CO_COROUTINE)
    else:
        prepared.code = code
    PREPARED = prepared
    return {"ok": True}


CO_COROUTINE = 0x80
LOOP = None


def run(req):
    global LOOP
    params, context = req.get("params"), req.get("context")
    if PREPARED.handle is not None:
        if PREPARED.with_context:
            result = PREPARED.handle(params, context)
        else:
            result = PREPARED.handle(params)
        if PREPARED.is_async:
            # `async def handle`: awaited on one loop kept for the worker's life.
            if LOOP is None:
                import asyncio

                LOOP = asyncio.new_event_loop()
            result = LOOP.run_until_complete(result)
        return result
    scope = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "params": params,
        "context": context,
        "request_id": req.get("request_id"),
    }
    exec(PREPARED.code, scope)
    return scope.get("result")


def failure(error):
    return frame({"ok": False, "error": error, "logs": CAPTURE.take()})


def invoke(req):
    if PREPARED is None:
        return failure({"kind": "protocol", "message": "invoke before prepare"})
    try:
        result = run(req)
    except BaseException as e:  # noqa: B036 - SystemExit from a script fails only its invocation
        return failure(runtime_error(e))
    try:
        body = dumps(result).encode("utf-8", "replace")
    except (TypeError, ValueError, RecursionError) as e:
        return failure({"kind": "runtime", "message": f"result is not JSON-serialisable: {e}"})
    if len(body) > MAX_RESULT_BYTES:
        message = f"result is {len(body)} bytes, over the limit of {MAX_RESULT_BYTES}"
        return failure({"kind": "limit", "limit": "result", "message": message})
    logs = CAPTURE.take()
    return b'{"ok":true,"result":' + body + b',"logs":' + (frame(logs) if logs else b"[]") + b"}"


def main():
    write_frame(b'{"ok":true,"ready":true}')
    while True:
        line = read_frame()
        if line is None:
            return
        try:
            req = _decode_frame(line.decode())
            op = req.get("op")
        except (ValueError, AttributeError):
            write_frame(frame({"ok": False, "error": {"kind": "protocol", "message": "bad frame"}}))
            continue
        # Every answer names its request: a frame a script forges is told apart.
        seq = req.get("seq") if isinstance(req.get("seq"), int) else 0
        if op == "invoke":
            cpu = process_time_ns()
            answer = invoke(req)
            write_frame(answer[:-1] + b',"cpu_us":%d,"seq":%d}' % ((process_time_ns() - cpu) // 1000, seq))
        elif op == "prepare":
            write_frame(frame({**prepare(str(req.get("script", ""))), "seq": seq}))
        elif op == "check":
            write_frame(frame({**check(str(req.get("script", ""))), "seq": seq}))
        else:
            write_frame(frame({"ok": False, "error": {"kind": "protocol", "message": "unknown op"}, "seq": seq}))


main()
