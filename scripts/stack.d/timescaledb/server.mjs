// Serves PGlite (PostgreSQL 17 in WebAssembly, with TimescaleDB) over the
// PostgreSQL wire protocol, so firstmile's real clients (tokio-postgres, psql)
// can test TimescaleDB behaviour on a machine without native TimescaleDB.
//
// PGlite has exactly one backend. Clients are queued onto it: a client holds the
// backend from its first message until the backend reports ReadyForQuery with
// status idle (so a transaction keeps it), then the next client goes. Each
// client's prepared-statement and portal names are prefixed so that two clients
// both using "s0" do not collide in the shared backend.
//
// COPY FROM STDIN: PGlite's single-user backend reads the copy data from the
// same input buffer as the COPY command, so a COPY is held back until the client
// sends CopyDone/CopyFail and then handed to PGlite in one call together with its
// data (the client meanwhile gets the CopyInResponse from us). The same for a
// COPY in the extended protocol (tokio-postgres' copy_in: Parse, then Bind +
// Execute + Sync, CopyData..., CopyDone + Sync): held from the Bind of a
// statement whose text is a COPY FROM STDIN until the Sync after CopyDone; the
// client gets BindComplete and CopyInResponse from us, and the Sync it sends
// before the data (which PostgreSQL ignores in copy-in mode) is left out.
//
// Usage: node server.mjs --data DIR --port 55434 [--host 127.0.0.1]
import net from "node:net";
import fs from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import { timescaledb } from "@electric-sql/pglite/timescaledb";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const dataDir = args.data;
const port = Number(args.port ?? 55434);
const host = args.host ?? "127.0.0.1";
if (!dataDir) {
  console.error("usage: node server.mjs --data DIR [--port N] [--host ADDR]");
  process.exit(2);
}
fs.mkdirSync(dataDir, { recursive: true });

const log = (...parts) => console.log(new Date().toISOString(), ...parts);

const db = await PGlite.create({ dataDir, extensions: { timescaledb } });
// Without this, a reopened data directory hides compressed chunks (STACK.md).
await db.exec("LOAD 'timescaledb'");
// The WASM build logs at DEBUG by default; clients should only see notices.
await db.exec("SET client_min_messages = notice");
const serverVersion = (await db.query("SHOW server_version")).rows[0].server_version;
log(`pglite ${serverVersion} with timescaledb ready, data in ${dataDir}`);

// ---- the one backend, handed to one client at a time ----------------------
let holder = null; // the client currently holding the backend
const waiting = []; // resolvers of clients waiting for it

function acquire(client) {
  if (holder === client) return Promise.resolve();
  if (holder === null) {
    holder = client;
    return Promise.resolve();
  }
  return new Promise((resolve) => waiting.push({ client, resolve }));
}

function release(client) {
  if (holder !== client) return;
  holder = null;
  const next = waiting.shift();
  if (next) {
    holder = next.client;
    next.resolve();
  }
}

// PGlite must never see two calls at once; this chain serialises them even when
// a cleanup of a vanished client races a holder's request.
let backendQueue = Promise.resolve();
function runOnBackend(bytes) {
  const run = backendQueue.then(() => db.execProtocolRaw(bytes, { syncToFs: true }));
  backendQueue = run.catch(() => undefined);
  return run;
}

// ---- wire-protocol helpers ---------------------------------------------------
function message(type, body) {
  const out = Buffer.alloc(5 + body.length);
  out.write(type, 0, "latin1");
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}
const cstr = (s) => Buffer.concat([Buffer.from(s, "utf8"), Buffer.from([0])]);
const int32 = (n) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};

function errorResponse(code, text) {
  return message(
    "E",
    Buffer.concat([
      Buffer.from("S"), cstr("ERROR"), Buffer.from("V"), cstr("ERROR"),
      Buffer.from("C"), cstr(code), Buffer.from("M"), cstr(text), Buffer.from([0]),
    ]),
  );
}

// Reads a NUL-terminated string at `at`; returns [string, offset after NUL].
function readCstr(buf, at) {
  const end = buf.indexOf(0, at);
  return [buf.toString("utf8", at, end), end + 1];
}

// Status byte of the last ReadyForQuery in a backend response, or null.
function lastReadyStatus(reply) {
  let status = null;
  for (let at = 0; at + 5 <= reply.length; ) {
    const len = reply.readInt32BE(at + 1);
    if (reply[at] === 0x5a /* Z */) status = String.fromCharCode(reply[at + 5]);
    at += 1 + len;
  }
  return status;
}

// Removes messages of the given type from a backend response.
function dropMessages(reply, type) {
  const kept = [];
  for (let at = 0; at + 5 <= reply.length; ) {
    const len = reply.readInt32BE(at + 1);
    if (reply[at] !== type.charCodeAt(0)) kept.push(reply.subarray(at, at + 1 + len));
    at += 1 + len;
  }
  return Buffer.concat(kept);
}

const COPY_FROM_STDIN = /^\s*copy\b[\s\S]*\bfrom\s+stdin\b/i;

// ---- one client connection ---------------------------------------------------
let nextClientId = 1;

class Client {
  constructor(socket) {
    this.id = nextClientId++;
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.started = false;
    this.statements = new Set(); // backend-side names this client created
    this.copy = null; // messages of a COPY FROM STDIN being collected
    this.copyExtended = false; // ... started by a Bind (extended protocol)
    this.copyDone = false; // ... and its CopyDone/CopyFail has arrived
    this.copyStatements = new Set(); // client-side names of COPY FROM STDIN statements
    this.inTransaction = false;
    this.work = Promise.resolve();
    socket.on("data", (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.work = this.work.then(() => this.drain()).catch((err) => this.fail(err));
    });
    socket.on("close", () => {
      this.work = this.work.then(() => this.cleanup());
    });
    socket.on("error", () => undefined);
  }

  fail(err) {
    log(`client ${this.id}: ${err?.stack ?? err}`);
    this.socket.destroy();
  }

  prefix(name) {
    return name === "" ? "" : `c${this.id}_${name}`;
  }

  async drain() {
    if (!this.started) {
      if (!this.handleStartup()) return;
    }
    const batch = [];
    while (this.buffer.length >= 5) {
      const len = this.buffer.readInt32BE(1);
      if (this.buffer.length < 1 + len) break;
      const msg = this.buffer.subarray(0, 1 + len);
      this.buffer = this.buffer.subarray(1 + len);
      const type = String.fromCharCode(msg[0]);
      if (type === "X") {
        this.socket.end();
        return;
      }
      if (this.copy && this.copyExtended) {
        if (type === "S" && !this.copyDone) continue; // ignored in copy-in mode
        this.copy.push(this.rewrite(msg));
        if (type === "c" || type === "f") this.copyDone = true;
        if (type === "S") {
          const whole = Buffer.concat(this.copy);
          this.copy = null;
          this.copyExtended = false;
          this.copyDone = false;
          await this.send(whole, { stripCopyIn: true });
        }
        continue;
      }
      if (this.copy) {
        this.copy.push(msg);
        if (type === "c" || type === "f") {
          const whole = Buffer.concat(this.copy);
          this.copy = null;
          batch.push(whole);
          await this.send(Buffer.concat(batch), { stripCopyIn: true });
          batch.length = 0;
        }
        continue;
      }
      if (type === "P") {
        const [name, at] = readCstr(msg, 5);
        const [sql] = readCstr(msg, at);
        if (COPY_FROM_STDIN.test(sql)) this.copyStatements.add(name);
        else this.copyStatements.delete(name);
      }
      if (type === "B") {
        const [, at] = readCstr(msg, 5);
        const [statement] = readCstr(msg, at);
        if (this.copyStatements.has(statement)) {
          if (batch.length) await this.send(Buffer.concat(batch));
          batch.length = 0;
          await acquire(this);
          this.copy = [this.rewrite(msg)];
          this.copyExtended = true;
          // BindComplete, then CopyInResponse (binary or text is the
          // statement's business; clients read the data format from their COPY).
          this.socket.write(Buffer.concat([message("2", Buffer.alloc(0)), message("G", Buffer.from([0, 0, 0]))]));
          continue;
        }
      }
      if (type === "Q") {
        const [sql] = readCstr(msg, 5);
        if (COPY_FROM_STDIN.test(sql)) {
          // Flush what came before, then answer CopyInResponse ourselves.
          if (batch.length) await this.send(Buffer.concat(batch));
          batch.length = 0;
          await acquire(this);
          this.copy = [msg];
          this.socket.write(message("G", Buffer.from([0, 0, 0])));
          continue;
        }
      }
      batch.push(this.rewrite(msg));
    }
    if (batch.length) await this.send(Buffer.concat(batch));
  }

  // Returns true once the startup exchange is complete.
  handleStartup() {
    while (!this.started && this.buffer.length >= 8) {
      const len = this.buffer.readInt32BE(0);
      if (this.buffer.length < len) return false;
      const code = this.buffer.readInt32BE(4);
      const body = this.buffer.subarray(8, len);
      this.buffer = this.buffer.subarray(len);
      if (code === 80877103 || code === 80877104) {
        this.socket.write("N"); // no TLS, no GSS encryption
        continue;
      }
      if (code === 80877102) {
        this.socket.end(); // cancel requests are not supported
        return false;
      }
      if (code !== 196608) {
        this.socket.end(errorResponse("08P01", `unsupported protocol ${code}`));
        return false;
      }
      const params = {};
      for (let at = 0; at < body.length && body[at] !== 0; ) {
        const [key, next] = readCstr(body, at);
        const [value, after] = readCstr(body, next);
        params[key] = value;
        at = after;
      }
      const status = (k, v) => message("S", Buffer.concat([cstr(k), cstr(v)]));
      this.socket.write(
        Buffer.concat([
          message("R", int32(0)),
          status("server_version", serverVersion),
          status("server_encoding", "UTF8"),
          status("client_encoding", "UTF8"),
          status("DateStyle", "ISO, MDY"),
          status("integer_datetimes", "on"),
          status("standard_conforming_strings", "on"),
          status("TimeZone", "UTC"),
          status("application_name", params.application_name ?? ""),
          message("K", Buffer.concat([int32(process.pid), int32(this.id)])),
          message("Z", Buffer.from("I")),
        ]),
      );
      this.started = true;
    }
    return this.started;
  }

  // Gives statement and portal names this client's prefix.
  rewrite(msg) {
    const type = String.fromCharCode(msg[0]);
    const body = msg.subarray(5);
    if (type === "P") {
      const [name, at] = readCstr(body, 0);
      if (name === "") return msg;
      const renamed = this.prefix(name);
      this.statements.add(renamed);
      return message("P", Buffer.concat([cstr(renamed), body.subarray(at)]));
    }
    if (type === "B") {
      const [portal, at1] = readCstr(body, 0);
      const [statement, at2] = readCstr(body, at1);
      return message(
        "B",
        Buffer.concat([cstr(this.prefix(portal)), cstr(this.prefix(statement)), body.subarray(at2)]),
      );
    }
    if (type === "D" || type === "C") {
      const kind = String.fromCharCode(body[0]);
      const [name, at] = readCstr(body, 1);
      if (type === "C" && kind === "S") this.statements.delete(this.prefix(name));
      return message(type, Buffer.concat([Buffer.from(kind), cstr(this.prefix(name)), body.subarray(at)]));
    }
    if (type === "E") {
      const [portal, at] = readCstr(body, 0);
      return message("E", Buffer.concat([cstr(this.prefix(portal)), body.subarray(at)]));
    }
    return msg;
  }

  async send(bytes, { stripCopyIn = false } = {}) {
    await acquire(this);
    let reply;
    try {
      reply = Buffer.from(await runOnBackend(bytes));
    } catch (err) {
      // PGlite threw instead of answering: report it to the client and make
      // sure the backend is not left inside this client's transaction.
      reply = Buffer.concat([
        errorResponse("XX000", `pglite: ${err?.message ?? err}`),
        message("Z", Buffer.from("I")),
      ]);
      await runOnBackend(message("Q", cstr("ROLLBACK"))).catch(() => undefined);
    }
    if (stripCopyIn) reply = dropMessages(dropMessages(reply, "G"), "2");
    const status = lastReadyStatus(reply);
    if (status !== null) this.inTransaction = status !== "I";
    if (!this.socket.destroyed) this.socket.write(reply);
    if (status === "I") release(this);
  }

  async cleanup() {
    if (this.started && (this.statements.size > 0 || this.inTransaction || holder === this)) {
      await acquire(this);
      const close = [...this.statements].map((name) =>
        message("C", Buffer.concat([Buffer.from("S"), cstr(name)])),
      );
      const parts = [message("S", Buffer.alloc(0)), ...close, message("S", Buffer.alloc(0))];
      if (this.inTransaction) parts.push(message("Q", cstr("ROLLBACK")));
      await runOnBackend(Buffer.concat(parts)).catch(() => undefined);
    }
    const idx = waiting.findIndex((w) => w.client === this);
    if (idx >= 0) waiting.splice(idx, 1);
    release(this);
  }
}

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  new Client(socket);
});
server.listen(port, host, () => log(`listening on ${host}:${port}`));

async function shutdown(signal) {
  log(`${signal}: closing`);
  server.close();
  await backendQueue;
  await db.close();
  process.exit(0);
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
