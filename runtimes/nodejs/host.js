// Node.js side of the Lambda Microservice worker protocol.
//
// One JSON frame per line: requests on stdin, responses on fd 1. Usage:
//   node host.js <max_log_lines> <max_log_bytes> <max_result_bytes>
// Frames: {"op":"prepare","script":".."} -> {"ok":true} | {"ok":false,"error":{..}}
//         {"op":"check","script":".."} -> {"ok":true,"load":bool} | {"ok":false,"error":{..}}
// Every request carries a "seq" number and its answer repeats it.
//         {"op":"invoke","params":..,"context":..,"request_id":".."}
//           -> {"ok":true,"result":..,"logs":[..]} | {"ok":false,"error":{..},"logs":[..]}
// On start the host writes {"ok":true,"ready":true}. stdin is read with blocking
// fs.readSync (cheaper than a stream) and frames are written with fs.writeSync,
// because user code must never reach the protocol channel through console/process.stdout.
// Requests may be pipelined: they run one after another, each answer written
// before the next request starts.
'use strict';

const fs = require('fs');
const util = require('util');
const vm = require('vm');
const { Writable } = require('stream');

const readSync = fs.readSync;
const writeSync = fs.writeSync;
const MAX_LOG_LINES = Number(process.argv[2]) || 1000;
const MAX_LOG_BYTES = Number(process.argv[3]) || 65536;
const MAX_RESULT_BYTES = Number(process.argv[4]) || 8 * 1024 * 1024;
const FILENAME = 'script.js';
const TRUNCATED = '[output truncated]';

// ---- output capture -------------------------------------------------------
let logs = [];
let logBytes = 0;
let partial = '';
let truncated = false;

function pushLine(line) {
  if (truncated) return;
  const size = Buffer.byteLength(line) + 1;
  if (logs.length >= MAX_LOG_LINES || logBytes + size > MAX_LOG_BYTES) {
    truncated = true;
    logs.push(TRUNCATED);
    return;
  }
  logs.push(line);
  logBytes += size;
}

function capture(text) {
  if (truncated) return;
  const parts = (partial + text).split('\n');
  partial = parts.pop();
  for (const p of parts) pushLine(p);
  if (partial.length > MAX_LOG_BYTES) { pushLine(partial); partial = ''; }
}

function takeLogs() {
  if (partial !== '') { pushLine(partial); partial = ''; }
  const out = logs;
  logs = [];
  logBytes = 0;
  truncated = false;
  return out;
}

function fakeStream(fd) {
  const s = new Writable({ write(chunk, _enc, cb) { capture(String(chunk)); cb(); } });
  s.write = (chunk, enc, cb) => {
    capture(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString());
    if (typeof enc === 'function') enc(); else if (typeof cb === 'function') cb();
    return true;
  };
  s.fd = fd;
  s.isTTY = false;
  return s;
}

// Replace the lazy getters before anything touches them, so fd 1 is never wrapped in a stream.
for (const [name, fd] of [['stdout', 1], ['stderr', 2]]) {
  Object.defineProperty(process, name, { value: fakeStream(fd), configurable: true, writable: true });
}
for (const m of ['log', 'info', 'warn', 'error', 'debug', 'trace']) {
  console[m] = (...args) => capture(util.format(...args) + '\n');
}

// ---- framing --------------------------------------------------------------
const chunk = Buffer.allocUnsafe(65536);
let carry = null;
let scanned = 0;

function readFrame() {
  for (;;) {
    if (carry) {
      const i = carry.indexOf(10, scanned);
      if (i >= 0) {
        const line = carry.toString('utf8', 0, i);
        carry = i + 1 < carry.length ? carry.subarray(i + 1) : null;
        scanned = 0;
        return line;
      }
      scanned = carry.length;
    }
    let n;
    try {
      n = readSync(0, chunk, 0, chunk.length, null);
    } catch (e) {
      if (e.code === 'EAGAIN') { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1); continue; }
      if (e.code === 'EOF') return null;
      throw e;
    }
    if (n === 0) return null;
    const data = Buffer.from(chunk.subarray(0, n));
    carry = carry ? Buffer.concat([carry, data]) : data;
  }
}

function writeFrame(text) {
  const buf = Buffer.from(text + '\n');
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(1, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

// ---- errors ---------------------------------------------------------------
function describe(e) {
  if (e instanceof Error || (e && typeof e === 'object' && 'message' in e)) {
    return { name: String(e.name || 'Error'), message: String(e.message), stack: typeof e.stack === 'string' ? e.stack : null };
  }
  return { name: 'Error', message: 'Uncaught ' + util.inspect(e), stack: null };
}

// The user's frames only: drop host and node-internal lines from a stack.
function userStack(stack) {
  if (!stack) return null;
  return stack.split('\n').filter((l) => !/^\s+at /.test(l) || l.includes(FILENAME)).join('\n');
}

function syntaxError(e) {
  const d = describe(e);
  const err = { kind: 'compile', message: `${d.name}: ${d.message}` };
  const lines = (d.stack || '').split('\n');
  const head = /^script\.js:(\d+)$/.exec(lines[0] || '');
  if (head) {
    err.line = Number(head[1]);
    const caret = (lines[2] || '').indexOf('^');
    if (caret >= 0) err.column = caret + 1;
  } else {
    locate(err, d.stack);
  }
  return err;
}

function locate(err, stack) {
  const m = /script\.js:(\d+):(\d+)/.exec(stack || '');
  if (m) { err.line = Number(m[1]); err.column = Number(m[2]); }
}

function runtimeError(e) {
  const d = describe(e);
  const err = { kind: 'runtime', message: `${d.name}: ${d.message}`, stack: userStack(d.stack) };
  locate(err, d.stack);
  return err;
}

// ---- prepare / invoke -----------------------------------------------------
let handler = null;
const MODULE_FORM = /\bmodule\.exports\b|\bexports\.handler\b/;

function compile(wrapper, source) {
  return new vm.Script(wrapper + '\n' + source + '\n})', { filename: FILENAME, lineOffset: -1 }).runInThisContext();
}

// Compiles without running anything: the checker worker, shared by every
// owner, answers initialize with it. `load` says the script runs code when it
// loads (the module form), which only a worker of its own may do.
function check(source) {
  const load = MODULE_FORM.test(source);
  const wrapper = load ? '(function (exports, require, module, __filename, __dirname) {' : '(async function (event, require) {';
  try {
    new vm.Script(wrapper + '\n' + source + '\n})', { filename: FILENAME, lineOffset: -1 });
  } catch (e) {
    return { ok: false, error: syntaxError(e) };
  }
  return { ok: true, load };
}

function prepare(source) {
  let fn;
  try {
    fn = MODULE_FORM.test(source)
      ? compile('(function (exports, require, module, __filename, __dirname) {', source)
      : compile('(async function (event, require) {', source);
  } catch (e) {
    return { ok: false, error: syntaxError(e) };
  }
  if (!MODULE_FORM.test(source)) {
    handler = (event) => fn(event, require);
    return { ok: true };
  }
  const mod = { exports: {} };
  try {
    fn.call(mod.exports, mod.exports, require, mod, FILENAME, process.cwd());
  } catch (e) {
    const err = runtimeError(e);
    return { ok: false, error: { kind: 'compile', message: `script failed to load: ${err.message}`, line: err.line, column: err.column } };
  }
  const exported = typeof mod.exports === 'function' ? mod.exports : mod.exports && mod.exports.handler;
  if (typeof exported !== 'function') {
    return { ok: false, error: { kind: 'compile', message: 'module.exports (or exports.handler) must be a function' } };
  }
  handler = exported;
  return { ok: true };
}

// An exception thrown outside the awaited chain (a timer callback, an unhandled
// rejection) fails the running invocation instead of crashing the worker.
let failCurrent = null;
function uncaught(e) {
  if (failCurrent) failCurrent(e);
  else capture(`uncaught: ${describe(e).message}\n`);
}
process.on('uncaughtException', uncaught);
process.on('unhandledRejection', uncaught);

async function run(req) {
  const failed = new Promise((_, reject) => { failCurrent = reject; });
  try {
    return await Promise.race([handler({ params: req.params, context: req.context, request_id: req.request_id }), failed]);
  } finally {
    failCurrent = null;
  }
}

function failure(error) {
  return JSON.stringify({ ok: false, error, logs: takeLogs() });
}

async function invoke(req) {
  if (!handler) return failure({ kind: 'protocol', message: 'invoke before prepare' });
  let result;
  try {
    result = await run(req);
  } catch (e) {
    return failure(runtimeError(e));
  }
  let json;
  try {
    json = JSON.stringify(result === undefined ? null : result);
  } catch (e) {
    return failure({ kind: 'runtime', message: `result is not JSON-serialisable: ${describe(e).message}` });
  }
  if (json === undefined) {
    return failure({ kind: 'runtime', message: `result is not JSON-serialisable: a ${typeof result}` });
  }
  const size = json.length > MAX_RESULT_BYTES / 3 ? Buffer.byteLength(json) : json.length;
  if (size > MAX_RESULT_BYTES) {
    return failure({ kind: 'limit', limit: 'result', message: `result is ${size} bytes, over the limit of ${MAX_RESULT_BYTES}` });
  }
  return '{"ok":true,"result":' + json + ',"logs":' + JSON.stringify(takeLogs()) + '}';
}

async function main() {
  writeFrame('{"ok":true,"ready":true}');
  for (;;) {
    const line = readFrame();
    if (line === null) return;
    let req;
    try {
      req = JSON.parse(line);
    } catch (e) {
      writeFrame(JSON.stringify({ ok: false, error: { kind: 'protocol', message: 'bad frame' } }));
      continue;
    }
    // Every answer names its request: a frame a script forges is told apart.
    const seq = Number(req.seq) || 0;
    if (req.op === 'invoke') {
      const cpu = process.cpuUsage();
      const answer = await invoke(req);
      const used = process.cpuUsage(cpu);
      writeFrame(answer.slice(0, -1) + ',"cpu_us":' + (used.user + used.system) + ',"seq":' + seq + '}');
    }
    else if (req.op === 'prepare') writeFrame(JSON.stringify({ ...prepare(String(req.script)), seq }));
    else if (req.op === 'check') writeFrame(JSON.stringify({ ...check(String(req.script)), seq }));
    else writeFrame(JSON.stringify({ ok: false, error: { kind: 'protocol', message: 'unknown op' }, seq }));
  }
}

main().then(() => process.exit(0), (e) => {
  fs.writeSync(2, `host failure: ${e && e.stack}\n`);
  process.exit(70);
});
