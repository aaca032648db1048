#!/usr/bin/env node
/*
 * A node-rtpmidi 1.0.0 session on loopback that reports in JSON lines.
 *
 * Usage: node node_peer.js --port P [--host 127.0.0.1|::1] [--name NAME] [-v] listen
 *        node node_peer.js --port P [--host 127.0.0.1|::1] [--name NAME] [-v] connect HOST:PORT
 *
 * HOST may be written [::1]; an IPv6 --host makes a udp6 session.
 *
 * P must be even (node-rtpmidi picks its sending socket by the parity of the
 * remote port); the data port is P+1. mDNS publishing is off.
 *
 * stdout, one JSON object a line:
 *   {"event":"ready","port":P,"ssrc":S}
 *   {"event":"connected","name":N,"ssrc":S,"addr":"h:p"}    stream added
 *   {"event":"send-ready","name":N,"latency":L}             latency known: sendMessage works
 *   {"event":"midi","name":N,"bytes":"90 3c 64"}            one per received command
 *   {"event":"disconnected","name":N,"local":bool}          BY received (local: we sent it)
 *   {"event":"rejected","name":N}                           NO received
 *   {"event":"dropped","reason":"unknown-ssrc","ssrc":S}    MIDI (or, with "command", a
 *                                                           session message) no stream owns
 *   {"event":"ignored","command":"end","ssrc":S}            a BY for no stream (harmless)
 *   {"event":"malformed","error":E}                         node-rtpmidi threw on a datagram
 *   {"event":"sent","bytes":B,"peers":K}                    after a `send` line
 * stdin lines: `send 90 3c 64 ...` (sent to every stream whose latency is known,
 * one packet, delta time 0 between commands), `quit`; EOF, SIGINT and SIGTERM
 * also send BY to every stream and exit 0.
 */
'use strict';

const readline = require('readline');
const { transports } = require('winston');
// node-rtpmidi logs through winston to stdout, even while loading (its mDNS
// module complains that the native 'mdns' is missing): move it to stderr first.
const logger = require('rtpmidi/src/logger');

let verbose = false;
const argv = process.argv.slice(2);
const opts = { host: '127.0.0.1', name: 'node-rtpmidi', port: null };
const rest = [];
for (let i = 0; i < argv.length; i += 1) {
  const a = argv[i];
  if (a === '--port') { opts.port = Number(argv[i += 1]); }
  else if (a === '--host') { opts.host = argv[i += 1]; }
  else if (a === '--name') { opts.name = argv[i += 1]; }
  else if (a === '-v') { verbose = true; }
  else { rest.push(a); }
}
const mode = rest[0];
if (!Number.isInteger(opts.port) || opts.port % 2 !== 0
    || !(mode === 'listen' || (mode === 'connect' && /^.+:\d+$/.test(rest[1] || '')))) {
  process.stderr.write('usage: node_peer.js --port EVEN_PORT [--host H] [--name N] [-v] '
    + 'listen | connect HOST:PORT\n');
  process.exit(2);
}

logger.clear();
logger.add(new transports.Console({ stderrLevels: Object.keys(logger.levels) }));
logger.level = verbose ? 'verbose' : 'warn';

// Session directly, not rtpmidi.manager: the manager would bind 0.0.0.0,
// publish over mDNS and install its own SIGINT handler.
const Session = require('rtpmidi/src/Session');

function emit(event, fields = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

function hex(buf) {
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join(' ');
}

// Same rules as midiwire.split_midi: whole commands, running status expanded.
function dataLen(status) {
  const high = status & 0xf0;
  if (high === 0xc0 || high === 0xd0) return 1;
  if (high < 0xf0) return 2;
  return { 0xf0: null, 0xf1: 1, 0xf2: 2, 0xf3: 1 }[status] ?? 0;
}

function splitMidi(bytes) {
  const out = [];
  let running = null;
  let i = 0;
  while (i < bytes.length) {
    let status = bytes[i];
    if (status & 0x80) { i += 1; } else if (running !== null) { status = running; } else {
      throw new Error(`data byte ${status.toString(16)} without a status byte`);
    }
    if (status === 0xf0) {
      const end = bytes.indexOf(0xf7, i);
      if (end < 0) throw new Error('SysEx without F7');
      out.push(Buffer.from([status, ...bytes.slice(i, end + 1)]));
      i = end + 1;
      running = null;
    } else {
      const n = dataLen(status);
      const body = bytes.slice(i, i + n);
      if (body.length !== n || body.some((b) => b & 0x80)) {
        throw new Error(`truncated command ${status.toString(16)}`);
      }
      out.push(Buffer.from([status, ...body]));
      i += n;
      if (status < 0xf0) running = status; else if (status < 0xf8) running = null;
    }
  }
  return out;
}

const ssrc = Math.floor(Math.random() * 0xffffffff); // its own default can be 2**32
const ipVersion = opts.host.includes(':') ? 6 : 4;
const session = new Session(opts.port, opts.name, opts.name, ssrc, false, ipVersion);
let closing = false;

// node-rtpmidi throws from its dgram handler on short or odd datagrams, which
// would kill the process: report those instead.
for (const channel of [session.controlChannel, session.messageChannel]) {
  channel.removeAllListeners('message');
  channel.on('message', (msg, rinfo) => {
    try {
      session.handleMessage(msg, rinfo);
    } catch (err) {
      emit('malformed', { error: String(err), from: addrStr(rinfo.address, rinfo.port) });
    }
  });
}

// Session.removeStream in 1.0.0 does streams.splice(index) without a count,
// which also drops every stream added after the one that ended (and the last
// one when the stream is unknown). Patched, so that one peer leaving does not
// silently cut off the others; everything else is node-rtpmidi as published.
const originalRemoveStream = session.removeStream;
session.removeStream = function removeStream(stream) {
  const index = this.streams.indexOf(stream);
  if (index < 0) return;
  const later = this.streams.slice(index + 1);
  originalRemoveStream.call(this, stream); // unhooks it, splices from index on
  this.streams.push(...later);
};

session.on('error', (err) => {
  emit('error', { error: String(err) });
  process.exit(1);
});

session.on('ready', () => emit('ready', { port: opts.port, ssrc: session.ssrc }));

// A session message that matches no stream is ignored by node-rtpmidi; say so.
session.on('controlMessage', (msg) => {
  const known = session.streams.some((s) => s.ssrc === msg.ssrc || s.token === msg.token);
  if (known || msg.command === 'invitation') return;
  if (msg.command === 'end') {
    emit('ignored', { command: msg.command, ssrc: msg.ssrc });
  } else {
    emit('dropped', { reason: 'unknown-ssrc', command: msg.command, ssrc: msg.ssrc });
  }
});

session.on('midi', (msg) => {
  if (msg && !session.streams.some((s) => s.ssrc === msg.ssrc)) {
    emit('dropped', { reason: 'unknown-ssrc', ssrc: msg.ssrc });
  }
});

function addrStr(address, port) {
  return address && address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

// node-rtpmidi keeps the NUL that ends the name in IN/OK: report it without.
function peerName(stream) {
  return (stream.name || '').replace(/\0+$/, '');
}

function watchStream(stream) {
  if (stream.watched) return;
  stream.watched = true;
  stream.on('message', (_time, data) => emit('midi', { name: peerName(stream), bytes: hex(data) }));
  stream.on('control-message', (message) => {
    if (!stream.sendReadyEmitted && stream.latency !== null && stream.timeDifference !== null) {
      stream.sendReadyEmitted = true;
      emit('send-ready', { name: peerName(stream), latency: stream.latency });
    }
    if (message.command === 'invitation_rejected') {
      emit('rejected', { name: message.name });
    }
  });
}

session.on('streamAdded', ({ stream }) => {
  watchStream(stream);
  const r = stream.rinfo1 || {};
  emit('connected', { name: peerName(stream), ssrc: stream.ssrc, addr: addrStr(r.address, r.port) });
});

session.on('streamRemoved', ({ stream }) => {
  emit('disconnected', { name: peerName(stream), local: closing });
});

function send(bytes) {
  const commands = splitMidi(bytes).map((data) => ({ deltaTime: 0, data }));
  // Session.sendMessage throws in 1.0.0: go through each stream.
  const ready = session.getStreams().filter((s) => s.latency !== null && s.timeDifference !== null);
  for (const stream of ready) {
    stream.sendMessage({ timestamp: session.now(), commands });
  }
  emit('sent', { bytes: hex(bytes), peers: ready.length });
}

function shutdown() {
  if (closing) return;
  closing = true;
  // Session.end walks its streams by index while each ending stream removes
  // itself, so it skips some: send BY to each stream ourselves.
  const streams = session.streams.slice();
  let left = streams.length + 1;
  const done = () => {
    left -= 1;
    if (left === 0) {
      session.controlChannel.close();
      session.messageChannel.close();
      process.exit(0);
    }
  };
  for (const stream of streams) stream.end(done);
  done();
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (raw) => {
  const line = raw.trim();
  if (!line) return;
  if (line === 'quit') { shutdown(); return; }
  const m = /^send\s+(.*)$/.exec(line);
  if (!m) { emit('error', { error: `unknown command ${JSON.stringify(line)}` }); return; }
  const digits = m[1].replace(/[\s,]/g, '');
  if (!/^([0-9a-fA-F]{2})+$/.test(digits)) {
    emit('error', { error: `bad hex in ${JSON.stringify(line)}` });
    return;
  }
  try {
    send(Array.from(Buffer.from(digits, 'hex')));
  } catch (err) {
    emit('error', { error: `bad send line ${JSON.stringify(line)}: ${err.message}` });
  }
});
rl.on('close', shutdown);

session.controlChannel.bind(opts.port, opts.host);
session.messageChannel.bind(opts.port + 1, opts.host);

if (mode === 'connect') {
  const idx = rest[1].lastIndexOf(':');
  const address = rest[1].slice(0, idx).replace(/^\[(.*)\]$/, '$1');
  const port = Number(rest[1].slice(idx + 1));
  session.once('ready', () => {
    session.connect({ address, port });
    watchStream(session.streams[session.streams.length - 1]);
  });
}
