'use strict';
// The official Azure IoT Node.js provisioning SDK (azure-iot-provisioning-device + azure-iot-provisioning-device-mqtt
// + azure-iot-security-symmetric-key), unchanged, against hubsim's DPS over two hubs: it registers with an
// individual enrollment's key and with a key derived from a group key, and the device then connects to its
// assigned hub with azure-iot-device-mqtt and sends.
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Hubsim, withDeadline } = require('./hubsim');

const stepMs = 20000;

// register runs provision_child.js with hubsim's CA trusted and resolves with the SDK's registration result; over
// MqttWs the SDK dials port 443 of host.
function register(hub, registrationId, key, transport = 'mqtt', host = hub.dps.mqtts) {
  const child = path.join(__dirname, 'provision_child.js');
  const env = { ...process.env, NODE_EXTRA_CA_CERTS: hub.caFile };
  return withDeadline(new Promise((resolve, reject) => {
    execFile(process.execPath, [child, host, hub.dps.idscope, registrationId, key, transport], { env, timeout: stepMs },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout))));
  }), stepMs + 1000, `register ${registrationId}`);
}

// The key a group member derives from the group key, as Microsoft documents it.
function derive(groupKey, registrationId) {
  return crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId, 'utf8').digest('base64');
}

describe('azure-iot-provisioning-device (Node, MQTT) against hubsim DPS', { timeout: 120000 }, () => {
  let hub;
  let hubControl = {}; // assigned hub host name -> its control URL

  before(async () => {
    hub = await Hubsim.start({
      args: ['--hub', '127.0.0.1:0', '--dps-mqtt', '127.0.0.1:0', '--dps-retry-after', '1s',
        '--enrollment', 'node-solo', '--enrollment-group', 'node-fleet'],
    });
    const hubs = await hub.dpsControl('GET', '/hubs');
    assert.equal(hubs.status, 200);
    assert.equal(hubs.body.length, 2);
    for (const h of hubs.body) hubControl[h.hostName] = h.controlUrl;
  });

  after(async () => {
    if (hub) await hub.stop();
  });

  // sendFromAssignedHub connects as the registered device to its hub and sends one message.
  async function sendFromAssignedHub(result, key, text) {
    assert.ok(hubControl[result.assignedHub], `assigned hub ${result.assignedHub} is not one of ${Object.keys(hubControl)}`);
    const cs = `HostName=${result.assignedHub};DeviceId=${result.deviceId};SharedAccessKey=${key}`;
    const client = Client.fromConnectionString(cs, Mqtt);
    try {
      await client.setOptions({ ca: fs.readFileSync(hub.caFile, 'utf8') });
      await withDeadline(client.open(), stepMs, 'client.open');
      await withDeadline(client.sendEvent(new Message(text)), stepMs, 'sendEvent');
    } finally {
      await withDeadline(client.close(), stepMs, 'client.close').catch(() => {});
    }
    const msgs = await hub.controlAt(hubControl[result.assignedHub], 'GET', `/devices/${result.deviceId}/messages`);
    assert.equal(msgs.status, 200);
    assert.deepEqual(msgs.body.map((m) => Buffer.from(m.payload, 'base64').toString()), [text]);
  }

  test('registers with an individual enrollment key and sends through the assigned hub', async () => {
    const key = hub.dps.enrollments['node-solo'];
    assert.ok(key, 'hubsim printed no enrollment line');
    const result = await register(hub, 'node-solo', key);
    assert.equal(result.deviceId, 'node-solo');
    assert.equal(result.status, 'assigned');
    await sendFromAssignedHub(result, key, 'hello from node-solo');
    const reg = await hub.dpsControl('GET', '/registrations/node-solo');
    assert.equal(reg.body.registrations, 1);
  });

  test('registers two members of a group with derived keys and each sends through its hub', async () => {
    const groupKey = hub.dps.groups['node-fleet'];
    assert.ok(groupKey, 'hubsim printed no group line');
    for (const id of ['node-member-1', 'node-member-2']) {
      const key = derive(groupKey, id);
      const result = await register(hub, id, key);
      assert.equal(result.deviceId, id);
      await sendFromAssignedHub(result, key, `hello from ${id}`);
    }
  });

  test('a wrong key is refused', async () => {
    await assert.rejects(register(hub, 'node-solo', crypto.randomBytes(32).toString('base64')), /register failed/);
  });
});

// MqttWs always dials wss://HOST:443, so DPS's HTTPS listener (which serves MQTT over WebSocket too) takes port 443
// of a loopback address of its own; skipped where port 443 cannot be bound (not root, or taken).
describe('azure-iot-provisioning-device (Node, MqttWs) against hubsim DPS on port 443', { timeout: 60000 }, () => {
  const ip = `127.77.${1 + crypto.randomInt(250)}.${1 + crypto.randomInt(250)}`;
  let hub;
  let startError;

  before(async () => {
    try {
      hub = await Hubsim.start({
        args: ['--dps-https', `${ip}:443`, '--dps-retry-after', '1s', '--enrollment', 'node-ws'],
      });
    } catch (err) {
      startError = err;
    }
  });

  after(async () => {
    if (hub) await hub.stop();
  });

  test('registers over WebSocket and sends through the assigned hub', async (t) => {
    if (!hub) {
      t.skip(`cannot listen on ${ip}:443: ${startError.message.split('\n')[0]}`);
      return;
    }
    const key = hub.dps.enrollments['node-ws'];
    const result = await register(hub, 'node-ws', key, 'mqttws', ip);
    assert.equal(result.deviceId, 'node-ws');
    const client = Client.fromConnectionString(`HostName=${result.assignedHub};DeviceId=node-ws;SharedAccessKey=${key}`, Mqtt);
    try {
      await client.setOptions({ ca: fs.readFileSync(hub.caFile, 'utf8') });
      await withDeadline(client.open(), stepMs, 'client.open');
      await withDeadline(client.sendEvent(new Message('over websocket')), stepMs, 'sendEvent');
    } finally {
      await withDeadline(client.close(), stepMs, 'client.close').catch(() => {});
    }
    const msgs = await hub.control('GET', '/devices/node-ws/messages');
    assert.equal(msgs.body.length, 1);
  });
});
