using System;
using System.Collections.Generic;
using System.Linq;

namespace Iotconn.Tests
{
    /// <summary>
    /// The C# binding's test runner (Mono's base install has no test framework): runs every test, prints PASS or
    /// FAIL per test and a total, and exits 0 only when all passed. Arguments filter tests by name. The same
    /// executable is the child process of the tests that need one (LibraryTests).
    /// </summary>
    internal static class Program
    {
        private static int Main(string[] args)
        {
            int? child = LibraryTests.RunChild(args);
            if (child.HasValue)
            {
                return child.Value;
            }
            IEnumerable<TestCase> tests = LibraryTests.All.Concat(MisuseTests.All).Concat(ClientTests.All)
                .Concat(QueueTests.All).Concat(DispatcherTests.All).Concat(AdmissionTests.All).Concat(TwinTests.All)
                .Concat(AmqpTests.All)
                .Concat(ProvisioningTests.All).Concat(PackageTests.All);
            if (args.Length > 0)
            {
                tests = tests.Where(t => args.Any(filter => t.Name.Contains(filter)));
            }
            int passed = 0, failed = 0;
            foreach (TestCase test in tests)
            {
                DateTime start = DateTime.UtcNow;
                try
                {
                    test.Body();
                    passed++;
                    Console.WriteLine("PASS " + test.Name + " (" + Seconds(start) + ")");
                }
                catch (Exception e)
                {
                    failed++;
                    Console.WriteLine("FAIL " + test.Name + " (" + Seconds(start) + "): " + e);
                }
            }
            Console.WriteLine(passed + " passed, " + failed + " failed");
            return failed == 0 && passed > 0 ? 0 : 1;
        }

        private static string Seconds(DateTime start)
        {
            return (DateTime.UtcNow - start).TotalSeconds.ToString("0.0") + " s";
        }
    }
}
