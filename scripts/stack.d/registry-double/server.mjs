// A TEST DOUBLE of the Confluent Schema Registry REST API (Avro only), for
// firstmile's local stack and tests. It exists because no real registry can be
// assembled from the package registries these machines reach (see the project's
// STACK notes in README.md). In production, point firstmile at Confluent Schema
// Registry, Apicurio Registry (/apis/ccompat/v7) or Karapace.
//
// What it implements, with Confluent's status and error codes:
//   GET    /subjects                              GET /schemas/ids/{id}
//   GET    /subjects/{s}/versions                 GET /schemas/ids/{id}/versions
//   POST   /subjects/{s}/versions   (register)    GET /subjects/{s}/versions/{v|latest}
//   POST   /subjects/{s}            (look up)     DELETE /subjects/{s}
//   GET|PUT /config, /config/{s}                  POST /compatibility/subjects/{s}/versions/{v|latest}
// Compatibility (BACKWARD, FORWARD, FULL, their _TRANSITIVE forms, NONE) follows
// the Avro schema-resolution rules. State is kept in a JSON file.
//
// Usage: node server.mjs --data FILE --port 58081 [--host 127.0.0.1]
import http from "node:http";
import fs from "node:fs";
import path from "node:path";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const dataFile = args.data;
const port = Number(args.port ?? 58081);
const host = args.host ?? "127.0.0.1";
if (!dataFile) {
  console.error("usage: node server.mjs --data FILE [--port N] [--host ADDR]");
  process.exit(2);
}

// ---- state -------------------------------------------------------------------
// schemas: [{id, schema, canonical}], subjects: {name: [{version, id, deleted}]}
let state = { nextId: 1, schemas: [], subjects: {}, config: { "": "BACKWARD" } };
if (fs.existsSync(dataFile)) state = JSON.parse(fs.readFileSync(dataFile, "utf8"));

function persist() {
  fs.mkdirSync(path.dirname(dataFile), { recursive: true });
  const tmp = `${dataFile}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(state));
  fs.renameSync(tmp, dataFile);
}

// ---- Avro schema parsing and resolution ---------------------------------------
const PRIMITIVES = new Set(["null", "boolean", "int", "long", "float", "double", "bytes", "string"]);

class SchemaError extends Error {}

// Parses a schema into a normalized tree with named types resolved.
function parseSchema(text) {
  let json;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SchemaError(`schema is not valid JSON: ${e.message}`);
  }
  const named = new Map();
  const walk = (node, namespace) => {
    if (typeof node === "string") {
      if (PRIMITIVES.has(node)) return { type: node };
      const full = node.includes(".") || !namespace ? node : `${namespace}.${node}`;
      const found = named.get(full) ?? named.get(node);
      if (!found) throw new SchemaError(`unknown type '${node}'`);
      return found;
    }
    if (Array.isArray(node)) return { type: "union", branches: node.map((b) => walk(b, namespace)) };
    if (node === null || typeof node !== "object") throw new SchemaError(`invalid schema node ${JSON.stringify(node)}`);
    const t = node.type;
    if (PRIMITIVES.has(t)) return { type: t, logicalType: node.logicalType };
    if (t === "record" || t === "error" || t === "enum" || t === "fixed") {
      if (typeof node.name !== "string") throw new SchemaError(`${t} without a name`);
      const ns = node.namespace ?? namespace;
      const full = node.name.includes(".") || !ns ? node.name : `${ns}.${node.name}`;
      const out = { type: t === "error" ? "record" : t, name: full, aliases: node.aliases ?? [] };
      named.set(full, out);
      if (t === "enum") {
        if (!Array.isArray(node.symbols)) throw new SchemaError(`enum ${full} without symbols`);
        out.symbols = node.symbols;
        out.default = node.default;
      } else if (t === "fixed") {
        if (!Number.isInteger(node.size)) throw new SchemaError(`fixed ${full} without a size`);
        out.size = node.size;
      } else {
        if (!Array.isArray(node.fields)) throw new SchemaError(`record ${full} without fields`);
        const childNs = full.includes(".") ? full.slice(0, full.lastIndexOf(".")) : ns;
        out.fields = node.fields.map((f) => {
          if (typeof f.name !== "string") throw new SchemaError(`a field of ${full} has no name`);
          return { name: f.name, aliases: f.aliases ?? [], hasDefault: "default" in f, type: walk(f.type, childNs) };
        });
      }
      return out;
    }
    if (t === "array") return { type: "array", items: walk(node.items, namespace) };
    if (t === "map") return { type: "map", values: walk(node.values, namespace) };
    if (typeof t === "string" || typeof t === "object") return walk(t, namespace);
    throw new SchemaError(`invalid type ${JSON.stringify(t)}`);
  };
  walk(json, undefined);
  return { tree: walk(json, undefined), canonical: JSON.stringify(json) };
}

const PROMOTIONS = {
  int: ["long", "float", "double"],
  long: ["float", "double"],
  float: ["double"],
  string: ["bytes"],
  bytes: ["string"],
};

const unqualified = (n) => n.slice(n.lastIndexOf(".") + 1);
const namesMatch = (writer, reader) =>
  unqualified(writer.name) === unqualified(reader.name) ||
  reader.aliases.some((a) => unqualified(a) === unqualified(writer.name));

// Can data written with `writer` be read with `reader`? Returns null or the reason.
function canRead(writer, reader, seen = new Set()) {
  if (writer.type === "union") {
    for (const branch of writer.branches) {
      const why = canRead(branch, reader, seen);
      if (why) return why;
    }
    return null;
  }
  if (reader.type === "union") {
    return reader.branches.some((b) => !canRead(writer, b, seen))
      ? null
      : `no branch of the reader's union reads writer type ${writer.name ?? writer.type}`;
  }
  if (writer.type !== reader.type) {
    return (PROMOTIONS[writer.type] ?? []).includes(reader.type)
      ? null
      : `writer type ${writer.type} cannot be read as ${reader.type}`;
  }
  switch (reader.type) {
    case "array":
      return canRead(writer.items, reader.items, seen);
    case "map":
      return canRead(writer.values, reader.values, seen);
    case "fixed":
      if (!namesMatch(writer, reader)) return `fixed ${writer.name} is not ${reader.name}`;
      return writer.size === reader.size ? null : `fixed ${reader.name} changed size`;
    case "enum": {
      if (!namesMatch(writer, reader)) return `enum ${writer.name} is not ${reader.name}`;
      const missing = writer.symbols.filter((s) => !reader.symbols.includes(s));
      return missing.length && reader.default === undefined
        ? `enum ${reader.name} lacks symbols ${missing.join(", ")}`
        : null;
    }
    case "record": {
      if (!namesMatch(writer, reader)) return `record ${writer.name} is not ${reader.name}`;
      const key = `${writer.name}->${reader.name}`;
      if (seen.has(key)) return null; // recursive types: assume the cycle holds
      seen.add(key);
      for (const field of reader.fields) {
        const source = writer.fields.find(
          (w) => w.name === field.name || field.aliases.includes(w.name),
        );
        if (!source) {
          if (!field.hasDefault) return `reader field '${field.name}' of ${reader.name} has no default and is missing from the writer`;
          continue;
        }
        const why = canRead(source.type, field.type, seen);
        if (why) return `field '${field.name}': ${why}`;
      }
      return null;
    }
    default:
      return null;
  }
}

// Checks `candidate` against existing versions (oldest first) under `level`.
function compatibility(level, candidate, existing) {
  if (level === "NONE" || existing.length === 0) return null;
  const transitive = level.endsWith("_TRANSITIVE");
  const base = level.replace("_TRANSITIVE", "");
  const against = transitive ? existing : existing.slice(-1);
  for (const old of against) {
    if (base === "BACKWARD" || base === "FULL") {
      const why = canRead(old, candidate);
      if (why) return `BACKWARD: new schema cannot read data written with version: ${why}`;
    }
    if (base === "FORWARD" || base === "FULL") {
      const why = canRead(candidate, old);
      if (why) return `FORWARD: old schema cannot read data written with new: ${why}`;
    }
  }
  return null;
}

// ---- HTTP --------------------------------------------------------------------
const LEVELS = new Set(["NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"]);

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const liveVersions = (subject) => (state.subjects[subject] ?? []).filter((v) => !v.deleted);
const schemaById = (id) => state.schemas.find((s) => s.id === id);
const levelFor = (subject) => state.config[subject] ?? state.config[""];

function requireSubject(subject) {
  const versions = liveVersions(subject);
  if (versions.length === 0) throw new ApiError(404, 40401, `Subject '${subject}' not found.`);
  return versions;
}

function findVersion(subject, which) {
  const versions = requireSubject(subject);
  const v = which === "latest" || which === "-1"
    ? versions[versions.length - 1]
    : versions.find((x) => String(x.version) === which);
  if (!v) throw new ApiError(404, 40402, `Version ${which} not found.`);
  return v;
}

function parseBodySchema(body) {
  if (typeof body?.schema !== "string") throw new ApiError(422, 42201, "Request needs a 'schema' string.");
  if (body.schemaType && body.schemaType !== "AVRO") {
    throw new ApiError(422, 42201, `schemaType ${body.schemaType} is not supported by this test double (AVRO only).`);
  }
  if (Array.isArray(body.references) && body.references.length) {
    throw new ApiError(422, 42201, "schema references are not supported by this test double.");
  }
  try {
    return parseSchema(body.schema);
  } catch (e) {
    if (e instanceof SchemaError) throw new ApiError(422, 42201, `Invalid schema: ${e.message}`);
    throw e;
  }
}

function route(method, parts, body) {
  const [head, a, b, c, d] = parts;
  if (head === "subjects" && parts.length === 1 && method === "GET") {
    return Object.keys(state.subjects).filter((s) => liveVersions(s).length);
  }
  if (head === "subjects" && a !== undefined) {
    const subject = a;
    if (parts.length === 2 && method === "DELETE") {
      const versions = requireSubject(subject);
      versions.forEach((v) => (v.deleted = true));
      persist();
      return versions.map((v) => v.version);
    }
    if (parts.length === 2 && method === "POST") {
      const { canonical } = parseBodySchema(body);
      const versions = requireSubject(subject);
      const hit = versions.find((v) => schemaById(v.id).canonical === canonical);
      if (!hit) throw new ApiError(404, 40403, "Schema not found");
      return { subject, id: hit.id, version: hit.version, schema: schemaById(hit.id).schema };
    }
    if (b === "versions" && parts.length === 3 && method === "GET") {
      return requireSubject(subject).map((v) => v.version);
    }
    if (b === "versions" && parts.length === 3 && method === "POST") {
      const { tree, canonical } = parseBodySchema(body);
      const versions = liveVersions(subject);
      const same = versions.find((v) => schemaById(v.id).canonical === canonical);
      if (same) return { id: same.id };
      const why = compatibility(
        levelFor(subject),
        tree,
        versions.map((v) => parseSchema(schemaById(v.id).schema).tree),
      );
      if (why) throw new ApiError(409, 409, `Schema being registered is incompatible with an earlier schema for subject "${subject}": ${why}`);
      let stored = state.schemas.find((s) => s.canonical === canonical);
      if (!stored) {
        stored = { id: state.nextId++, schema: body.schema, canonical };
        state.schemas.push(stored);
      }
      const all = state.subjects[subject] ?? (state.subjects[subject] = []);
      const version = (all.length ? all[all.length - 1].version : 0) + 1;
      all.push({ version, id: stored.id, deleted: false });
      persist();
      return { id: stored.id };
    }
    if (b === "versions" && c !== undefined && parts.length === 4 && method === "GET") {
      const v = findVersion(subject, c);
      return { subject, version: v.version, id: v.id, schema: schemaById(v.id).schema };
    }
    if (b === "versions" && d === "schema" && method === "GET") {
      return JSON.parse(schemaById(findVersion(subject, c).id).schema);
    }
  }
  if (head === "schemas" && a === "ids" && b !== undefined && method === "GET") {
    const stored = schemaById(Number(b));
    if (!stored) throw new ApiError(404, 40403, "Schema not found");
    if (c === "versions") {
      return Object.entries(state.subjects).flatMap(([subject, vs]) =>
        vs.filter((v) => v.id === stored.id && !v.deleted).map((v) => ({ subject, version: v.version })),
      );
    }
    return { schema: stored.schema };
  }
  if (head === "config") {
    const key = a ?? "";
    if (method === "GET") {
      if (key && state.config[key] === undefined) throw new ApiError(404, 40408, `Subject '${key}' does not have subject-level compatibility configured`);
      return { compatibilityLevel: state.config[key] };
    }
    if (method === "PUT") {
      const level = body?.compatibility;
      if (!LEVELS.has(level)) throw new ApiError(422, 42203, `Invalid compatibility level ${level}`);
      state.config[key] = level;
      persist();
      return { compatibility: level };
    }
  }
  if (head === "compatibility" && a === "subjects" && c === "versions" && method === "POST") {
    const { tree } = parseBodySchema(body);
    const versions = liveVersions(b);
    const level = levelFor(b);
    const against = d === undefined || level.endsWith("_TRANSITIVE")
      ? versions
      : [findVersion(b, d)];
    const why = compatibility(level, tree, against.map((v) => parseSchema(schemaById(v.id).schema).tree));
    return why ? { is_compatible: false, messages: [why] } : { is_compatible: true };
  }
  if (parts.length === 0 && method === "GET") return {};
  throw new ApiError(404, 404, `HTTP 404 Not Found: ${method} /${parts.join("/")}`);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let status = 200;
    let payload;
    try {
      const raw = Buffer.concat(chunks).toString("utf8");
      let body;
      if (raw.length) {
        try {
          body = JSON.parse(raw);
        } catch {
          throw new ApiError(400, 400, "request body is not JSON");
        }
      }
      const url = new URL(req.url, "http://registry");
      const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
      payload = route(req.method, parts, body);
    } catch (e) {
      if (!(e instanceof ApiError)) console.error(e);
      status = e instanceof ApiError ? e.status : 500;
      payload = { error_code: e instanceof ApiError ? e.code : 50001, message: e.message };
    }
    res.writeHead(status, { "content-type": "application/vnd.schemaregistry.v1+json" });
    res.end(JSON.stringify(payload));
  });
});
server.listen(port, host, () => console.log(`schema registry test double on ${host}:${port}, state in ${dataFile}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
process.on("SIGINT", () => server.close(() => process.exit(0)));
