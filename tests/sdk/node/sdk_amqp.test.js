'use strict';
// The official Azure IoT Node.js device SDK's AMQP transports (azure-iot-device-amqp: Amqp over TLS, AmqpWs over
// WebSocket), unchanged, against hubsim.
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { Client, Message, SharedAccessKeyAuthenticationProvider } = require('azure-iot-device');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const { Hubsim, withDeadline } = require('./hubsim');

const deviceId = 'node-amqp-dev1';
const stepMs = 15000; // deadline for each single wait on the SDK or the hub
// Tokens live 20 s and are renewed 10 s before they expire, so a renewal happens during the suite.
const tokenValidSeconds = 20;
const tokenRenewalMarginSeconds = 10;

// The Node SDK dials amqps://{HostName} (any port) but wss://{HostName}:443, so over WebSocket hubsim listens on
// 127.0.0.1:443 (root or CAP_NET_BIND_SERVICE) and the connection string names 127.0.0.1, which the hub's
// certificate covers.
const variants = [
  {
    name: 'AMQP over TLS', transport: Amqp, args: ['--amqp', '127.0.0.1:0'],
    hostName: (hub) => 'localhost:' + hub.amqps.split(':').pop(),
  },
  {
    name: 'AMQP over WebSocket', transport: AmqpWs, args: ['--amqp-ws', '127.0.0.1:443'],
    hostName: () => '127.0.0.1',
  },
];

for (const v of variants) {
  describe(`azure-iot-device-amqp (Node) against hubsim, ${v.name}`, { timeout: 120000 }, () => {
    let hub;
    let client;
    let connected = false;
    let twin;

    const requireConnection = () => assert.ok(connected, 'the client did not connect (see the first test)');
    const linkAttached = (what) =>
      hub.waitLine(new RegExp(`^hubsim: amqp link attached: ${deviceId} ${what}, hub sends$`), stepMs);

    before(async () => {
      hub = await Hubsim.start({ devices: [deviceId], args: v.args });
    });

    after(async () => {
      if (client) await withDeadline(client.close(), stepMs, 'client.close').catch(() => {});
      if (hub) await hub.stop();
    });

    test('connects with a device key; CBS authorises it', async () => {
      const cs = hub.connectionStrings[deviceId].replace(/HostName=[^;]+/, 'HostName=' + v.hostName(hub));
      const auth = SharedAccessKeyAuthenticationProvider.fromConnectionString(cs, tokenValidSeconds,
        tokenRenewalMarginSeconds);
      client = Client.fromAuthenticationProvider(auth, v.transport);
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
      msg.messageId = 'node-amqp-msg-1';
      msg.correlationId = 'node-amqp-corr-1';
      msg.contentType = 'application/json';
      msg.contentEncoding = 'utf-8';
      msg.properties.add('alert', 'high temp');
      await withDeadline(client.sendEvent(msg), stepMs, 'sendEvent');
      const res = await hub.control('GET', `/devices/${deviceId}/messages`);
      const got = res.body.find((m) => m.messageId === 'node-amqp-msg-1');
      assert.ok(got, `message not recorded: ${JSON.stringify(res.body)}`);
      assert.equal(Buffer.from(got.payload, 'base64').toString(), '{"temperature":21.5}');
      assert.equal(got.correlationId, 'node-amqp-corr-1');
      assert.equal(got.contentType, 'application/json');
      assert.equal(got.contentEncoding, 'utf-8');
      assert.equal(got.properties.alert, 'high temp');
    });

    test('receives a cloud-to-device message and completes it', async () => {
      requireConnection();
      // 'on', not 'once': removing the last listener makes the client detach its C2D link, and complete needs it.
      const received = new Promise((resolve) => client.on('message', resolve));
      const post = await hub.control('POST', `/devices/${deviceId}/c2d`, {
        payload: 'reboot at noon', messageId: 'c2d-1', correlationId: 'c2d-corr-1', properties: { priority: 'high' },
      });
      assert.equal(post.status, 202, JSON.stringify(post.body));
      const msg = await withDeadline(received, stepMs, 'C2D message');
      await withDeadline(client.complete(msg), stepMs, 'complete');
      assert.equal(msg.data.toString(), 'reboot at noon');
      assert.equal(msg.messageId, 'c2d-1');
      assert.equal(msg.correlationId, 'c2d-corr-1');
      assert.equal(msg.properties.getValue('priority'), 'high');
      // complete resolves once the disposition is written; a twin round trip on the same connection follows it.
      await withDeadline(client.getTwin(), stepMs, 'getTwin');
      const dev = await hub.control('GET', `/devices/${deviceId}`);
      assert.equal(dev.body.pendingC2D, 0);
    });

    test('gets the twin and patches reported properties', async () => {
      requireConnection();
      await hub.control('PATCH', `/devices/${deviceId}/twin/desired`, { interval: 30 });
      twin = await withDeadline(client.getTwin(), stepMs, 'getTwin');
      assert.equal(twin.properties.desired.interval, 30);
      await withDeadline(
        new Promise((resolve, reject) =>
          twin.properties.reported.update({ firmware: '1.2.3' }, (err) => (err ? reject(err) : resolve()))),
        stepMs, 'reported update');
      const res = await hub.control('GET', `/devices/${deviceId}/twin`);
      assert.equal(res.body.reported.firmware, '1.2.3');
    });

    test('receives a desired-property update', async () => {
      requireConnection();
      const subscribed = hub.waitLine(new RegExp(`^hubsim: amqp twin desired-property pushes on: ${deviceId}$`), stepMs);
      const update = new Promise((resolve) => {
        twin.on('properties.desired', (delta) => {
          if (delta.fan !== undefined) resolve(delta);
        });
      });
      await subscribed;
      const res = await hub.control('PATCH', `/devices/${deviceId}/twin/desired`, { fan: { speed: 3 } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const delta = await withDeadline(update, stepMs, 'desired update');
      assert.deepEqual(delta.fan, { speed: 3 });
    });

    test('answers a direct method; the caller gets its status and payload', async () => {
      requireConnection();
      const attached = linkAttached('methods');
      client.onDeviceMethod('setInterval', (req, res) => {
        res.send(201, { accepted: req.payload.seconds }, () => {});
      });
      await attached;
      const res = await hub.control('POST', `/devices/${deviceId}/methods/setInterval?timeout=10`, { seconds: 42 });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body, { status: 201, payload: { accepted: 42 } });
    });

    test('renews its token on the live connection', async () => {
      requireConnection();
      await hub.waitLine(new RegExp(`^hubsim: renew ${deviceId} `), (tokenValidSeconds + 5) * 1000);
      await withDeadline(client.sendEvent(new Message('after renewal')), stepMs, 'sendEvent after renewal');
      const dev = await hub.control('GET', `/devices/${deviceId}`);
      assert.equal(dev.body.connected, true);
      assert.equal(dev.body.connections, 1, 'the renewal reconnected');
    });
  });
}
