'use strict';
// The official Azure IoT Node.js device SDK (azure-iot-device + azure-iot-device-mqtt), unchanged, against hubsim.
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Hubsim, withDeadline } = require('./hubsim');

const deviceId = 'node-dev1';
const stepMs = 15000; // deadline for each single wait on the SDK or the hub

describe('azure-iot-device (Node) against hubsim over MQTT/TLS', { timeout: 90000 }, () => {
  let hub;
  let client;
  let connected = false;
  let twin;

  // Later steps need the open connection; without it they would make the SDK open one without the CA.
  const requireConnection = () => assert.ok(connected, 'the client did not connect (see the first test)');

  before(async () => {
    hub = await Hubsim.start({ devices: [deviceId] });
  });

  after(async () => {
    if (client) await withDeadline(client.close(), stepMs, 'client.close').catch(() => {});
    if (hub) await hub.stop();
  });

  test('connects with the connection string and the hub CA', async () => {
    const cs = hub.connectionStrings[deviceId];
    assert.ok(cs, `hubsim printed no connection string for ${deviceId}: ${hub.lines.join('\n')}`);
    // The Node SDK dials the port given in HostName, so hubsim runs on a free port.
    assert.match(cs, /HostName=localhost:\d+;/);
    client = Client.fromConnectionString(cs, Mqtt);
    await client.setOptions({ ca: fs.readFileSync(hub.caFile, 'utf8') });
    await withDeadline(client.open(), stepMs, 'client.open');
    const dev = await hub.control('GET', `/devices/${deviceId}`);
    assert.equal(dev.status, 200);
    assert.equal(dev.body.connected, true);
    assert.equal(dev.body.connections, 1);
    connected = true;
  });

  test('telemetry arrives with its system and application properties', async () => {
    requireConnection();
    const msg = new Message(JSON.stringify({ temperature: 21.5 }));
    msg.messageId = 'node-msg-1';
    msg.correlationId = 'node-corr-1';
    msg.contentType = 'application/json';
    msg.contentEncoding = 'utf-8';
    msg.properties.add('alert', 'high temp');
    msg.properties.add('unit', 'C/100&x=y');
    await withDeadline(client.sendEvent(msg), stepMs, 'sendEvent');
    // sendEvent resolves on PUBACK, and the hub records a message before acknowledging it.
    const res = await hub.control('GET', `/devices/${deviceId}/messages`);
    assert.equal(res.status, 200);
    const got = res.body.find((m) => m.messageId === 'node-msg-1');
    assert.ok(got, `message not recorded: ${JSON.stringify(res.body)}`);
    assert.equal(Buffer.from(got.payload, 'base64').toString(), '{"temperature":21.5}');
    assert.equal(got.correlationId, 'node-corr-1');
    assert.equal(got.contentType, 'application/json');
    assert.equal(got.contentEncoding, 'utf-8');
    assert.deepEqual(got.properties, { alert: 'high temp', unit: 'C/100&x=y' });
  });

  test('receives a cloud-to-device message posted through the control API', async () => {
    requireConnection();
    const received = new Promise((resolve) => client.once('message', resolve));
    const post = await hub.control('POST', `/devices/${deviceId}/c2d`, {
      payload: 'reboot at noon',
      messageId: 'c2d-1',
      correlationId: 'c2d-corr-1',
      properties: { priority: 'high', 'sp ace': 'a/b' },
    });
    assert.equal(post.status, 202, JSON.stringify(post.body));
    const msg = await withDeadline(received, stepMs, 'C2D message');
    await withDeadline(client.complete(msg), stepMs, 'complete');
    assert.equal(msg.data.toString(), 'reboot at noon');
    assert.equal(msg.messageId, 'c2d-1');
    assert.equal(msg.correlationId, 'c2d-corr-1');
    assert.equal(msg.properties.getValue('priority'), 'high');
    assert.equal(msg.properties.getValue('sp ace'), 'a/b');
  });

  test('gets the twin', async () => {
    requireConnection();
    await hub.control('PATCH', `/devices/${deviceId}/twin/desired`, { interval: 30 });
    twin = await withDeadline(client.getTwin(), stepMs, 'getTwin');
    assert.equal(twin.properties.desired.interval, 30);
    assert.equal(typeof twin.properties.desired.$version, 'number');
    assert.equal(typeof twin.properties.reported.$version, 'number');
  });

  test('patches reported properties, visible through the control API', async () => {
    requireConnection();
    const patch = { firmware: '1.2.3', battery: { level: 87 } };
    await withDeadline(
      new Promise((resolve, reject) => twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve()))),
      stepMs, 'reported update');
    const res = await hub.control('GET', `/devices/${deviceId}/twin`);
    assert.equal(res.status, 200);
    assert.equal(res.body.reported.firmware, '1.2.3');
    assert.deepEqual(res.body.reported.battery, { level: 87 });
    assert.ok(res.body.reported.$version >= 2, `reported $version: ${res.body.reported.$version}`);
  });

  test('receives a desired-property update', async () => {
    requireConnection();
    const update = new Promise((resolve) => {
      twin.on('properties.desired', (delta) => {
        if (delta.fan !== undefined) resolve(delta);
      });
    });
    // The listener subscribes asynchronously; a twin round trip on the same connection follows that SUBSCRIBE.
    await withDeadline(client.getTwin(), stepMs, 'getTwin');
    const res = await hub.control('PATCH', `/devices/${deviceId}/twin/desired`, { fan: { speed: 3 } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const delta = await withDeadline(update, stepMs, 'desired update');
    assert.deepEqual(delta.fan, { speed: 3 });
    assert.equal(delta.$version, res.body.desired.$version);
    assert.equal(twin.properties.desired.interval, 30);
  });

  test('answers a direct method; the caller gets its status and payload', async () => {
    requireConnection();
    let request;
    client.onDeviceMethod('setInterval', (req, res) => {
      request = req;
      res.send(201, { accepted: req.payload.seconds, by: 'node' }, () => {});
    });
    // As above: the method SUBSCRIBE precedes this round trip on the wire.
    await withDeadline(client.getTwin(), stepMs, 'getTwin');
    const res = await hub.control('POST', `/devices/${deviceId}/methods/setInterval?timeout=10`, { seconds: 42 });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, { status: 201, payload: { accepted: 42, by: 'node' } });
    assert.equal(request.methodName, 'setInterval');
    assert.deepEqual(request.payload, { seconds: 42 });
  });
});
