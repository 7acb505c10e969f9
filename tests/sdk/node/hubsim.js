'use strict';
// Starts an iotconn-hubsim process for one test file and talks to its control API.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { EventEmitter } = require('node:events');

const repoRoot = path.resolve(__dirname, '..', '..', '..');
const defaultBinary = path.join(repoRoot, 'build', 'bin', 'iotconn-hubsim');

// Resolves with a promise's value, or rejects once ms have passed.
function withDeadline(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

class Hubsim {
  constructor(child, dir, lines, lineEvents) {
    this.child = child;
    this.dir = dir;
    this.lines = lines; // every stdout line, for failure messages
    this.lineEvents = lineEvents; // emits 'line' for every stdout line
  }

  // waitLine resolves with the first stdout line from now on that matches re, or rejects after ms.
  waitLine(re, ms) {
    let listener;
    const found = new Promise((resolve) => {
      listener = (line) => {
        if (re.test(line)) resolve(line);
      };
      this.lineEvents.on('line', listener);
    });
    return withDeadline(found, ms, `hubsim line ${re}`).finally(() => this.lineEvents.off('line', listener));
  }

  // start runs the binary with its own state dir and waits for "hubsim: ready"; args are extra flags (listeners
  // such as --amqp, whose address lines become properties "amqps", "amqp-ws"; more hubs, DPS). The "hubsim: dps KEY
  // VALUE.." lines land in hub.dps[KEY] (enrollment and group lines in hub.dps.enrollments / hub.dps.groups, id -> key).
  static async start({ devices = [], args: extra = [], binary = process.env.HUBSIM_BIN || defaultBinary, readyMs = 20000 }) {
    if (!fs.existsSync(binary)) {
      throw new Error(`hubsim binary not found at ${binary}; run ./build.sh first`);
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubsim-node-'));
    const args = ['--dir', dir, '--mqtt', '127.0.0.1:0', '--control', '127.0.0.1:0', ...extra];
    for (const d of devices) args.push('--device', d);
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = [];
    const lineEvents = new EventEmitter();
    const stderr = [];
    child.stderr.on('data', (b) => stderr.push(b.toString()));
    const info = { devices: {}, dps: { enrollments: {}, groups: {} } };
    const ready = new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (code, signal) =>
        reject(new Error(`hubsim exited (code ${code}, signal ${signal}) before ready: ${stderr.join('')}`)));
      readline.createInterface({ input: child.stdout }).on('line', (line) => {
        lines.push(line);
        lineEvents.emit('line', line);
        const m = /^hubsim: (\S+) (.*)$/.exec(line);
        if (line === 'hubsim: ready') resolve();
        else if (!m) return;
        else if (['mqtts', 'control', 'ca', 'amqps', 'amqp-ws'].includes(m[1])) info[m[1]] = m[2];
        else if (m[1] === 'dps') {
          const [key, ...rest] = m[2].split(' ');
          if (key === 'enrollment') info.dps.enrollments[rest[0]] = rest[1];
          else if (key === 'group') info.dps.groups[rest[0]] = rest[1];
          else info.dps[key] = rest.join(' ');
        } else if (m[1] === 'device') {
          const sp = m[2].indexOf(' ');
          info.devices[m[2].slice(0, sp)] = m[2].slice(sp + 1);
        }
      });
    });
    const hub = new Hubsim(child, dir, lines, lineEvents);
    try {
      await withDeadline(ready, readyMs, 'hubsim start');
    } catch (err) {
      await hub.stop();
      throw err;
    }
    for (const key of ['mqtts', 'control', 'ca']) {
      if (!info[key]) {
        await hub.stop();
        throw new Error(`hubsim printed no "${key}" line before ready: ${lines.join('\n')}`);
      }
    }
    hub.mqtts = info.mqtts;
    hub.controlURL = info.control;
    hub.caFile = info.ca;
    hub.amqps = info.amqps;
    hub.amqpWs = info['amqp-ws'];
    hub.connectionStrings = info.devices;
    hub.dps = info.dps;
    return hub;
  }

  // stop sends SIGTERM to the PID, waits for the exit (SIGKILL after 5 s) and removes the state dir.
  async stop() {
    const child = this.child;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      process.kill(child.pid, 'SIGTERM');
      try {
        await withDeadline(exited, 5000, 'hubsim SIGTERM');
      } catch {
        process.kill(child.pid, 'SIGKILL');
        await withDeadline(exited, 5000, 'hubsim SIGKILL');
      }
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  // control calls the hub's HTTP control API and returns {status, body}; body is parsed JSON when there is one.
  async control(method, urlPath, body, timeoutMs = 15000) {
    return this.controlAt(this.controlURL, method, urlPath, body, timeoutMs);
  }

  // dpsControl calls the DPS's control API.
  async dpsControl(method, urlPath, body, timeoutMs = 15000) {
    return this.controlAt(this.dps.control, method, urlPath, body, timeoutMs);
  }

  // controlAt calls the control API at baseURL (a hub's or the DPS's).
  async controlAt(baseURL, method, urlPath, body, timeoutMs = 15000) {
    const res = await fetch(baseURL + urlPath, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }
}

module.exports = { Hubsim, withDeadline };
