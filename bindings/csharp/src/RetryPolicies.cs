using System;

namespace Iotconn
{
    /// <summary>
    /// Decides whether to try again after a failure and how long to wait first (as in
    /// Microsoft.Azure.Devices.Client). currentRetryCount counts from 0 for the first failure, as in the .NET SDK.
    /// A policy set with DeviceClient.SetRetryPolicy runs on the client's dispatcher thread, like the handlers;
    /// a reconnect waits for its answer, so it must return quickly.
    /// </summary>
    public interface IRetryPolicy
    {
        bool ShouldRetry(int currentRetryCount, Exception lastException, out TimeSpan retryInterval);
    }

    /// <summary>
    /// Randomised exponential back-off, the .NET SDK's and the library's default policy: the delay before retry n
    /// (n = currentRetryCount) is min(minBackoff + (2^n - 1) * d, maxBackoff), d drawn from 0.8-1.2 x deltaBackoff;
    /// retryCount retries at most. Set on a client, the library itself runs this schedule (no managed call per
    /// attempt); ShouldRetry computes the same schedule for policies that wrap this one.
    /// </summary>
    public sealed class ExponentialBackoff : IRetryPolicy
    {
        private readonly Random random = new Random();

        public ExponentialBackoff(int retryCount, TimeSpan minBackoff, TimeSpan maxBackoff, TimeSpan deltaBackoff)
        {
            if (retryCount < 0)
            {
                throw IotconnException.InvalidArgument("retryCount", "must not be negative, not " + retryCount);
            }
            MinBackoffMs = Milliseconds("minBackoff", minBackoff);
            MaxBackoffMs = Milliseconds("maxBackoff", maxBackoff);
            DeltaBackoffMs = Milliseconds("deltaBackoff", deltaBackoff);
            if (MinBackoffMs > MaxBackoffMs)
            {
                throw IotconnException.InvalidArgument("minBackoff", minBackoff + " is greater than maxBackoff (" +
                    maxBackoff + ")");
            }
            RetryCount = retryCount;
        }

        public int RetryCount { get; private set; }

        internal uint MinBackoffMs { get; private set; }
        internal uint MaxBackoffMs { get; private set; }
        internal uint DeltaBackoffMs { get; private set; }

        public bool ShouldRetry(int currentRetryCount, Exception lastException, out TimeSpan retryInterval)
        {
            if (currentRetryCount < 0 || currentRetryCount >= RetryCount)
            {
                retryInterval = TimeSpan.Zero;
                return false;
            }
            double delta;
            lock (random)
            {
                delta = DeltaBackoffMs * (0.8 + 0.4 * random.NextDouble());
            }
            // 2^n overflows to infinity for large n, and Math.Min then gives maxBackoff.
            double ms = MinBackoffMs + (Math.Pow(2, currentRetryCount) - 1) * delta;
            retryInterval = TimeSpan.FromMilliseconds(Math.Min(ms, MaxBackoffMs));
            return true;
        }

        internal static uint Milliseconds(string what, TimeSpan value)
        {
            double ms = Math.Round(value.TotalMilliseconds);
            if (ms < 0 || ms > uint.MaxValue)
            {
                throw IotconnException.InvalidArgument(what, "must be between 0 and " + uint.MaxValue + " ms, not " +
                    value);
            }
            return (uint)ms;
        }
    }

    /// <summary>Never retry: the first failure is final (the client ends Disconnected / Retry_Expired).</summary>
    public sealed class NoRetry : IRetryPolicy
    {
        public bool ShouldRetry(int currentRetryCount, Exception lastException, out TimeSpan retryInterval)
        {
            retryInterval = TimeSpan.Zero;
            return false;
        }
    }
}
