'use strict';
// Registers one device with the official provisioning SDK (azure-iot-provisioning-device over MQTT, symmetric
// key) and prints the registration result as JSON. It runs as its own process because the provisioning transport
// takes no CA option: hubsim's CA reaches it only through NODE_EXTRA_CA_CERTS, read at process start.
// Usage: node provision_child.js HOST ID_SCOPE REGISTRATION_ID KEY [mqtt|mqttws]
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt, MqttWs } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');

const [host, idScope, registrationId, key, transport = 'mqtt'] = process.argv.slice(2);
const Transport = transport === 'mqttws' ? MqttWs : Mqtt;
const client = ProvisioningDeviceClient.create(host, idScope, new Transport(), new SymmetricKeySecurityClient(registrationId, key));
client.register((err, result) => {
  if (err) {
    console.error(`register failed: ${err.name}: ${err.message}`);
    process.exit(1);
  }
  console.log(JSON.stringify(result));
  process.exit(0);
});
