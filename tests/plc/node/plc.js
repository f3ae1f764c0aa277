// A PLC's OPC UA client on an independent stack (node-opcua), driven by tests/plc/test_conformance.py.
// Usage: node plc.js SCENARIO.json OUT.json. SCENARIO names a "scenario" (below) and its options; what the
// client saw is written to OUT.json for the Python test to judge. A refusal is an observation, not a crash.
"use strict";

const fs = require("fs");
const net = require("net");
const path = require("path");
const ua = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

const NAMESPACE_URI = "urn:inspector:vision";
const SERVER_OBJECT = "i=2253";
const EVENT_FIELDS = ["EventType", "SourceName", "Message", "Camera", "PartId", "Verdict", "ResultId", "Seq",
    "Product", "AcceptPart"];
const POLL_MS = 50;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// OPC UA Error messages (ERR) the server sent, read off the wire: node-opcua 2.181 reports a channel the
// server refused with an ERR as a dropped socket, without the status code the ERR carried.
const wireErrors = [];
const socketEmit = net.Socket.prototype.emit;
net.Socket.prototype.emit = function tap(event, ...args) {
    const data = args[0];
    if (event === "data" && Buffer.isBuffer(data) && data.length >= 16 && data.toString("latin1", 0, 4) === "ERRF") {
        const code = data.readUInt32LE(8);
        const length = data.readInt32LE(12);
        const reason = length > 0 ? data.toString("utf-8", 16, 16 + length) : "";
        wireErrors.push({ status: statusOf(code), reason });
    }
    return socketEmit.call(this, event, ...args);
};

function statusOf(code) {
    for (const name of Object.keys(ua.StatusCodes)) {
        const known = ua.StatusCodes[name];
        if (known && typeof known === "object" && known.value === code) return name;
    }
    return `0x${code.toString(16)}`;
}

function statusName(error) {
    const text = String(error && error.message ? error.message : error);
    const found = text.match(/Bad[A-Za-z]+/);
    return found ? found[0] : text.slice(0, 300);
}

async function makeClient(o) {
    const manager = new OPCUACertificateManager({
        rootFolder: path.join(o.work, "client-pki"),
        automaticallyAcceptUnknownCertificate: true,
    });
    await manager.initialize();
    return ua.OPCUAClient.create({
        applicationName: "conformance-plc",
        applicationUri: o.applicationUri,
        clientCertificateManager: manager,
        certificateFile: o.certificate,
        privateKeyFile: o.privateKey,
        securityMode: ua.MessageSecurityMode[o.securityMode || "None"],
        securityPolicy: ua.SecurityPolicy[o.securityPolicy || "None"],
        endpointMustExist: false,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
        requestedSessionTimeout: 60000,
    });
}

function identity(o) {
    return o.user ? { type: ua.UserTokenType.UserName, userName: o.user, password: o.password } : undefined;
}

// Connect and log in; returns {client, session} or throws.
async function open(o) {
    const client = await makeClient(o);
    await client.connect(o.url);
    try {
        const session = await client.createSession(identity(o));
        return { client, session };
    } catch (error) {
        await client.disconnect();
        throw error;
    }
}

async function close(link) {
    try {
        await link.session.close();
    } finally {
        await link.client.disconnect();
    }
}

async function namespaceIndex(session) {
    const array = await session.readNamespaceArray();
    const index = array.indexOf(NAMESPACE_URI);
    if (index < 0) throw new Error(`namespace ${NAMESPACE_URI} not in ${array}`);
    return index;
}

// The node id at a browse path below Objects ("Inspector/Cameras/line/Ready"), by TranslateBrowsePath.
async function resolve(session, ns, relative) {
    const bnf = "/" + relative.split("/").map((name) => `${ns}:${name}`).join("/");
    const result = await session.translateBrowsePath(ua.makeBrowsePath("ObjectsFolder", bnf));
    if (!result.statusCode.isGood() || result.targets.length !== 1) {
        throw new Error(`browse path ${relative}: ${result.statusCode.name}`);
    }
    return result.targets[0].targetId.toString();
}

// A 64-bit integer as node-opcua gives it ([high, low] 32-bit words), as a number (negative: two's complement).
function int64(words) {
    const [high, low] = words;
    return high >= 0x80000000 ? -((0xffffffff - high) * 2 ** 32 + (0xffffffff - low) + 1) : high * 2 ** 32 + low;
}

function plain(value) {
    if (value === null || value === undefined) return null;
    if (typeof value === "bigint") return Number(value);
    if (Array.isArray(value)) {
        if (value.length === 2 && value.every((v) => Number.isInteger(v) && v >= 0)) return int64(value);
        return value.map(plain);
    }
    if (value instanceof Date) return value.toISOString();
    if (Buffer.isBuffer(value)) return value.toString("base64");
    if (typeof value === "number" && !Number.isFinite(value)) return String(value);
    if (typeof value === "object") {
        if (typeof value.toJSON === "function" && !(value.schema)) return plain(value.toJSON());
        const out = {};
        for (const key of Object.keys(value)) {
            // node-opcua names structure fields in camelCase; the server's names are PascalCase
            if (!key.startsWith("_") && key !== "schema") out[key[0].toUpperCase() + key.slice(1)] = plain(value[key]);
        }
        return out;
    }
    return value;
}

function variantOut(variant) {
    return { type: ua.DataType[variant.dataType], value: plain(variant.value) };
}

// ---------------------------------------------------------------------------------------------- scenarios

async function endpoints(o) {
    const client = await makeClient(o);
    await client.connect(o.url);
    try {
        const found = await client.getEndpoints();
        return {
            endpoints: found.map((e) => ({
                securityMode: ua.MessageSecurityMode[e.securityMode],
                securityPolicyUri: e.securityPolicyUri,
                applicationUri: e.server.applicationUri,
                certificate: e.serverCertificate ? Buffer.from(e.serverCertificate).toString("base64") : null,
                tokens: e.userIdentityTokens.map((t) => ua.UserTokenType[t.tokenType]),
            })),
        };
    } finally {
        await client.disconnect();
    }
}

async function session(o) {
    let link;
    try {
        link = await open(o);
    } catch (error) {
        return { ok: false, status: wireErrors.length ? wireErrors[0].status : statusName(error) };
    }
    try {
        const ns = await namespaceIndex(link.session);
        const state = await link.session.read({ nodeId: await resolve(link.session, ns, `Inspector/Cameras/${o.camera}/State`) });
        return { ok: true, state: state.value.value };
    } finally {
        await close(link);
    }
}

async function readAll(s, ns, base, names) {
    const out = {};
    for (const name of names) {
        const dataValue = await s.read({ nodeId: await resolve(s, ns, `${base}/${name}`) });
        out[name] = { status: dataValue.statusCode.name, ...variantOut(dataValue.value) };
    }
    return out;
}

// The PLC's cycle: browse, read every documented variable, subscribe (data change and events at the camera
// and at the Server), wait for Ready, Trigger, wait for the result and both events, acknowledge.
async function cycle(o) {
    const link = await open(o);
    const s = link.session;
    try {
        const ns = await namespaceIndex(s);
        const cam = `Inspector/Cameras/${o.camera}`;
        const variables = await readAll(s, ns, cam, o.variables);
        const result = await readAll(s, ns, `${cam}/LastResult`, o.resultFields);
        const sub = ua.ClientSubscription.create(s, {
            requestedPublishingInterval: 50, requestedMaxKeepAliveCount: 20, requestedLifetimeCount: 600,
            maxNotificationsPerPublish: 1000, publishingEnabled: true, priority: 10,
        });
        const changes = [];
        const events = { camera: [], server: [] };
        const record = ua.ClientMonitoredItem.create(sub,
            { nodeId: await resolve(s, ns, `${cam}/LastResult/Result`), attributeId: ua.AttributeIds.Value },
            { samplingInterval: 0, queueSize: 100, discardOldest: false }, ua.TimestampsToReturn.Both);
        record.on("changed", (dv) => changes.push(plain(dv.value.value)));
        const filter = ua.constructEventFilter(EVENT_FIELDS.map((f, i) => (i < 3 ? f : `${ns}:${f}`)));
        const camNode = await resolve(s, ns, cam);
        for (const [where, nodeId] of [["camera", camNode], ["server", SERVER_OBJECT]]) {
            const item = ua.ClientMonitoredItem.create(sub, { nodeId, attributeId: ua.AttributeIds.EventNotifier },
                { queueSize: 100, filter, discardOldest: false }, ua.TimestampsToReturn.Neither);
            item.on("changed", (fields) => {
                const event = {};
                EVENT_FIELDS.forEach((name, i) => { event[name] = plain(fields[i].value); });
                event.Message = event.Message ? event.Message.Text : null;
                event.EventType = fields[0].value ? fields[0].value.toString() : null;
                events[where].push(event);
            });
        }
        await sleep(300); // the monitored items are created before the trigger
        const readyNode = await resolve(s, ns, `${cam}/Ready`);
        const deadline = Date.now() + o.timeoutMs;
        while (!(await s.read({ nodeId: readyNode })).value.value) {
            if (Date.now() > deadline) throw new Error("Ready never became true");
            await sleep(POLL_MS);
        }
        const call = await s.call({
            objectId: camNode, methodId: await resolve(s, ns, `${cam}/Trigger`),
            inputArguments: [{ dataType: ua.DataType.String, value: o.partId }, { dataType: ua.DataType.String, value: "" }],
        });
        const outputs = call.outputArguments.map(variantOut);
        const mine = (list) => list.filter((x) => x && x.PartId === o.partId);
        while (!(mine(changes).length && mine(events.camera).length && mine(events.server).length)) {
            if (Date.now() > deadline) break;
            await sleep(POLL_MS);
        }
        const got = mine(changes)[0];
        const acks = [];
        if (got) {
            const ackNode = await resolve(s, ns, `${cam}/AcknowledgeResult`);
            for (let i = 0; i < 2; i++) {
                const ack = await s.call({ objectId: camNode, methodId: ackNode,
                    inputArguments: [{ dataType: ua.DataType.UInt64, arrayType: ua.VariantArrayType.Scalar,
                        value: [0, got.ResultId] }] });
                acks.push({ status: ack.statusCode.name, outputs: ack.outputArguments.map(variantOut) });
            }
        }
        const pending = (await s.read({ nodeId: await resolve(s, ns, `${cam}/PendingResults`) })).value.value;
        await sub.terminate();
        return { variables, result, trigger: { status: call.statusCode.name, outputs }, changes: mine(changes),
            events: { camera: mine(events.camera), server: mine(events.server) }, acks, pending };
    } finally {
        await close(link);
    }
}

// Method calls as written in the scenario: object (camera, other camera, Cameras folder or Server), method
// and typed arguments; each call's status, input argument results and outputs.
async function calls(o) {
    const link = await open(o);
    const s = link.session;
    try {
        const ns = await namespaceIndex(s);
        const watched = [];
        let sub = null;
        if (o.watch) {
            sub = ua.ClientSubscription.create(s, {
                requestedPublishingInterval: 50, requestedMaxKeepAliveCount: 20, requestedLifetimeCount: 600,
                maxNotificationsPerPublish: 1000, publishingEnabled: true, priority: 10,
            });
            const item = ua.ClientMonitoredItem.create(sub,
                { nodeId: await resolve(s, ns, o.watch), attributeId: ua.AttributeIds.Value },
                { samplingInterval: 0, queueSize: 1000, discardOldest: false }, ua.TimestampsToReturn.Both);
            item.on("changed", (dv) => watched.push(plain(dv.value.value)));
            await sleep(300);
        }
        const out = [];
        for (const c of o.calls) {
            const objectId = c.object === "Server" ? SERVER_OBJECT : await resolve(s, ns, c.object);
            const methodId = await resolve(s, ns, c.method);
            const inputArguments = c.args.map((a) => new ua.Variant({ dataType: ua.DataType[a.type],
                arrayType: ua.VariantArrayType.Scalar,
                value: a.type === "UInt64" || a.type === "Int64" ? [0, a.value] : a.value }));
            const r = await s.call({ objectId, methodId, inputArguments });
            const read = {};
            for (const name of c.read || []) read[name] = plain((await s.read({ nodeId: await resolve(s, ns, name) })).value.value);
            out.push({ status: r.statusCode.name, inputArgumentResults: (r.inputArgumentResults || []).map((x) => x.name),
                outputs: (r.outputArguments || []).map(variantOut), read });
        }
        const deadline = Date.now() + (o.timeoutMs || 0);
        while (o.waitPartId && !watched.some((v) => v && v.PartId === o.waitPartId) && Date.now() < deadline) {
            await sleep(POLL_MS);
        }
        if (sub) {
            await sleep(300); // the last notifications of the calls
            await sub.terminate();
        }
        return { calls: out, watched };
    } finally {
        await close(link);
    }
}

// Reads of one variable until it equals a value (or the deadline): what a PLC's HMI shows.
async function readUntil(o) {
    const link = await open(o);
    try {
        const ns = await namespaceIndex(link.session);
        const nodeId = await resolve(link.session, ns, o.node);
        const deadline = Date.now() + o.timeoutMs;
        const seen = [];
        for (;;) {
            const value = plain((await link.session.read({ nodeId })).value.value);
            if (seen[seen.length - 1] !== value) seen.push(value);
            if (value === o.until || Date.now() > deadline) return { seen };
            await sleep(POLL_MS);
        }
    } finally {
        await close(link);
    }
}

// Failed logins while a logged-in session keeps reading: each attempt is an ActivateSession alone (a
// session of the PLC's user changing its identity, so no handshake is counted), its status, and how many
// reads the other session completed while it was pending. A password check on the server's loop stalls
// them all; one off the loop, that costs the same for an unknown user, lets many through.
async function logins(o) {
    const link = await open(o);
    try {
        const ns = await namespaceIndex(link.session);
        const nodeId = await resolve(link.session, ns, `Inspector/Cameras/${o.camera}/State`);
        const attempts = [];
        const others = []; // logged in before the first failure: a success forgives the address its failures
        for (let i = 0; i < o.attempts.length; i++) others.push(await open({ ...o, work: path.join(o.work, `attempt-${i}`) }));
        for (const attempt of o.attempts) {
            const other = others[attempts.length];
            let pending = true;
            let reads = 0;
            const reader = (async () => {
                while (pending) {
                    await link.session.read({ nodeId });
                    if (pending) reads += 1;
                }
            })();
            let status;
            try {
                const identity = { type: ua.UserTokenType.UserName, userName: attempt.user, password: attempt.password };
                status = (await other.client.changeSessionIdentity(other.session, identity)).name;
            } catch (error) {
                status = statusName(error);
            }
            pending = false;
            await reader;
            attempts.push({ user: attempt.user, status, readsWhilePending: reads });
            await close(other).catch(() => undefined);
        }
        return { attempts };
    } finally {
        await close(link);
    }
}

const SCENARIOS = { endpoints, session, cycle, calls, readUntil, logins };

async function main() {
    const [scenarioFile, outFile] = process.argv.slice(2);
    const o = JSON.parse(fs.readFileSync(scenarioFile, "utf-8"));
    let out;
    try {
        out = await SCENARIOS[o.scenario](o);
    } catch (error) {
        out = { crashed: String(error && error.stack ? error.stack : error) };
    }
    fs.writeFileSync(outFile, JSON.stringify(out, null, 1));
}

main().then(() => process.exit(0), (error) => {
    console.error(error);
    process.exit(2);
});
