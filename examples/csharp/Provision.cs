// A device that finds its hub through the Device Provisioning Service (the C# twin of examples/c/provision.c and
// examples/python/provision.py): registers with a symmetric key (or reuses the assignment cached in QUEUE_DIR),
// sends COUNT messages, and prints the status changes, where it was assigned and how many registrations it made.
// If the hub refuses it later (moved, deleted) it registers again by itself; a hub that is down is retried without
// calling DPS. A one-off registration without a client: ProvisioningDeviceClient.Create(...).RegisterAsync().
//
//     mono Provision.exe DPS_HOST ID_SCOPE REGISTRATION_ID KEY [CA_FILE] [QUEUE_DIR] [COUNT]
using System;
using System.Text;
using Iotconn;

internal static class Provision
{
    private static int Main(string[] args)
    {
        if (args.Length < 4)
        {
            Console.Error.WriteLine("usage: Provision.exe DPS_HOST ID_SCOPE REGISTRATION_ID KEY [CA_FILE] " +
                "[QUEUE_DIR] [COUNT]");
            return 2;
        }
        var options = new ClientOptions
        {
            CaFile = args.Length > 4 && args[4] != "-" ? args[4] : null,
            QueueDirectory = args.Length > 5 ? args[5] : null,
        };
        int count = args.Length > 6 ? int.Parse(args[6]) : 5;
        var security = new SecurityProviderSymmetricKey(args[2], args[3], null);
        try
        {
            using (DeviceClient client = DeviceClient.CreateFromProvisioning(args[0], args[1], security,
                TransportType.Mqtt, options))
            {
                client.SetConnectionStatusChangesHandler((status, reason) =>
                    Console.WriteLine("status: " + status + " / " + reason));
                client.OpenAsync().Wait();
                Console.WriteLine("assigned: hub=" + client.AssignedHub + " device=" + client.AssignedDeviceId +
                    " registrations=" + client.ProvisioningRegistrations);
                for (int i = 0; i < count; i++)
                {
                    client.SendEventAsync(new Message(Encoding.UTF8.GetBytes("{\"n\":" + i + "}"))).Wait();
                }
                Console.WriteLine("sent " + count + "; registrations=" + client.ProvisioningRegistrations);
                client.CloseAsync().Wait();
            }
            return 0;
        }
        catch (AggregateException e)
        {
            Console.Error.WriteLine("failed: " + e.InnerException.Message);
            return 1;
        }
        catch (IotconnException e)
        {
            Console.Error.WriteLine("failed: " + e.Message);
            return 1;
        }
    }
}
